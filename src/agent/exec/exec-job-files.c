/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <sys/pidfd.h>
#include <sys/stat.h>

#include "config.h"
#include "exec-job-files.h"
#include "file-util.h"

/* The result holds two tails (TAIL_BYTES each, at most 64 KiB) and a short header. */
#define RESULT_MAX (4 * 1024 * 1024)

/* The whole file (up to max bytes), NUL-terminated. */
/* Durable: the agent decides from these files, after a crash, whether a command ran and how it ended. */
static int write_job_file(const char *dir, const char *name, const void *data, size_t size) {
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        return write_file_atomic(path, data, size, 0600, WRITE_FILE_SYNC);
}

static int read_file(const char *dir, const char *name, size_t max, char **ret, size_t *ret_size) {
        _cleanup_free_ char *path = NULL, *buf = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;
        size_t n = 0;

        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        /* Nobody writes to them any more when they are read. */
        if (fstat(fd, &st) < 0)
                return -errno;
        max = MIN(max, (size_t) st.st_size);
        buf = malloc(max + 1);
        if (!buf)
                return -ENOMEM;
        while (n < max) {
                ssize_t k = read(fd, buf + n, max - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = n;
        return 0;
}

/* "key=value" lines; returns the value of key (up to the line's end), NULL if absent. */
static char *get_value(const char *text, const char *key) {
        size_t kl = strlen(key);

        for (const char *l = text; l && *l;) {
                const char *end = strchr(l, '\n');
                size_t len = end ? (size_t) (end - l) : strlen(l);
                if (len == 0)
                        break;          /* the header ends at an empty line */
                if (len > kl && strncmp(l, key, kl) == 0 && l[kl] == '=')
                        return strndup(l + kl + 1, len - kl - 1);
                l = end ? end + 1 : NULL;
        }
        return NULL;
}

static int get_int64(const char *text, const char *key, int64_t *ret) {
        _cleanup_free_ char *v = get_value(text, key);

        if (!v)
                return -EBADMSG;
        return parse_int64(v, ret) < 0 ? -EBADMSG : 0;
}

int exec_job_record_write(const char *dir, const ExecJobRecord *r) {
        _cleanup_free_ char *s = NULL;
        int n;

        n = asprintf(&s, "task_id=%s\nlease_token=%" PRIi64 "\nattempt=%" PRIi64 "\ntimeout_sec=%" PRIi64
                     "\nsupervisor_pid=%d\nsupervisor_start=%" PRIu64 "\n",
                     r->task_id, r->lease_token, r->attempt, r->timeout_sec, (int) r->supervisor_pid,
                     r->supervisor_start);
        if (n < 0)
                return -ENOMEM;
        return write_job_file(dir, "job", s, (size_t) n);
}

int exec_job_record_read(const char *dir, ExecJobRecord *ret) {
        _cleanup_free_ char *s = NULL;
        ExecJobRecord r = {};
        int64_t pid, start;
        int k;

        k = read_file(dir, "job", 64 * 1024, &s, NULL);
        if (k < 0)
                return k;
        r.task_id = get_value(s, "task_id");
        if (!r.task_id || get_int64(s, "lease_token", &r.lease_token) < 0 ||
            get_int64(s, "attempt", &r.attempt) < 0 || get_int64(s, "timeout_sec", &r.timeout_sec) < 0 ||
            get_int64(s, "supervisor_pid", &pid) < 0 || get_int64(s, "supervisor_start", &start) < 0 ||
            pid <= 0 || pid > INT32_MAX || start < 0) {
                exec_job_record_done(&r);
                return -EBADMSG;
        }
        r.supervisor_pid = (pid_t) pid;
        r.supervisor_start = (uint64_t) start;
        *ret = r;
        return 0;
}

void exec_job_record_done(ExecJobRecord *r) {
        free(r->task_id);
        *r = (ExecJobRecord) {};
}

int exec_job_started_write(const char *dir, const ExecJobStarted *st) {
        _cleanup_free_ char *s = NULL;
        int n;

        n = asprintf(&s, "pid=%d\nrealtime_usec=%" PRIu64 "\n", (int) st->pid, st->realtime_usec);
        if (n < 0)
                return -ENOMEM;
        return write_job_file(dir, "started", s, (size_t) n);
}

int exec_job_started_read(const char *dir, ExecJobStarted *ret) {
        _cleanup_free_ char *s = NULL;
        int64_t pid, usec;
        int k;

        k = read_file(dir, "started", 4096, &s, NULL);
        if (k < 0)
                return k;
        if (get_int64(s, "pid", &pid) < 0 || get_int64(s, "realtime_usec", &usec) < 0 || pid <= 0 ||
            pid > INT32_MAX || usec < 0)
                return -EBADMSG;
        *ret = (ExecJobStarted) { .pid = (pid_t) pid, .realtime_usec = (uint64_t) usec };
        return 0;
}

/* A header of "key=value" lines, an empty line, then the two tails back to back. */
int exec_job_result_write(const char *dir, const ExecJobResult *r) {
        _cleanup_free_ char *header = NULL, *buf = NULL;
        _cleanup_free_ char *error = NULL;
        int n;

        if (r->error) {
                /* One line. */
                error = strdup(r->error);
                if (!error)
                        return -ENOMEM;
                for (char *c = error; *c; c++)
                        if (*c == '\n')
                                *c = ' ';
        }
        n = asprintf(&header, "%s%s%sexit_code=%" PRIi64 "\noom_killed=%d\nended_usec=%" PRIu64 "\ntotal=%" PRIu64
                     "\ntruncated=%d\nstdout_tail=%zu\nstderr_tail=%zu\n\n",
                     error ? "error=" : "", error ?: "", error ? "\n" : "", r->exit_code, r->oom_killed > 0 ? 1 : 0,
                     r->ended_usec, r->total, r->truncated ? 1 : 0, r->tail_sizes[0], r->tail_sizes[1]);
        if (n < 0)
                return -ENOMEM;
        buf = malloc((size_t) n + r->tail_sizes[0] + r->tail_sizes[1]);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, header, (size_t) n);
        if (r->tail_sizes[0] > 0)
                memcpy(buf + n, r->tails[0], r->tail_sizes[0]);
        if (r->tail_sizes[1] > 0)
                memcpy(buf + n + r->tail_sizes[0], r->tails[1], r->tail_sizes[1]);
        return write_job_file(dir, "result", buf, (size_t) n + r->tail_sizes[0] + r->tail_sizes[1]);
}

int exec_job_result_read(const char *dir, ExecJobResult *ret) {
        _cleanup_free_ char *s = NULL, *trunc = NULL, *oom = NULL;
        ExecJobResult r = {};
        int64_t total, sizes[2], ended;
        const char *body;
        size_t n;
        int k;

        k = read_file(dir, "result", RESULT_MAX, &s, &n);
        if (k < 0)
                return k;
        body = strstr(s, "\n\n");
        if (!body || get_int64(s, "exit_code", &r.exit_code) < 0 || get_int64(s, "total", &total) < 0 ||
            get_int64(s, "stdout_tail", &sizes[0]) < 0 || get_int64(s, "stderr_tail", &sizes[1]) < 0 ||
            !(trunc = get_value(s, "truncated")) || total < 0 || sizes[0] < 0 || sizes[1] < 0)
                return -EBADMSG;
        body += 2;
        if ((uint64_t) sizes[0] + (uint64_t) sizes[1] != (uint64_t) (n - (size_t) (body - s)))
                return -EBADMSG;
        r.error = get_value(s, "error");
        r.total = (uint64_t) total;
        r.truncated = streq(trunc, "1");
        oom = get_value(s, "oom_killed");
        r.oom_killed = oom ? streq(oom, "1") : -1;
        if (get_int64(s, "ended_usec", &ended) >= 0 && ended > 0)
                r.ended_usec = (uint64_t) ended;
        for (size_t i = 0; i < 2; i++) {
                r.tail_sizes[i] = (size_t) sizes[i];
                r.tails[i] = malloc(MAX(r.tail_sizes[i], (size_t) 1));
                if (!r.tails[i]) {
                        exec_job_result_done(&r);
                        return -ENOMEM;
                }
                memcpy(r.tails[i], body, r.tail_sizes[i]);
                body += r.tail_sizes[i];
        }
        *ret = r;
        return 0;
}

void exec_job_result_done(ExecJobResult *r) {
        free(r->error);
        free(r->tails[0]);
        free(r->tails[1]);
        *r = (ExecJobResult) {};
}

int exec_job_output_read(const char *dir, size_t max, char **ret, size_t *ret_size) {
        return read_file(dir, "output", max, ret, ret_size);
}

int pid_start_time(pid_t pid, uint64_t *ret) {
        _cleanup_free_ char *path = NULL, *s = NULL;
        unsigned long long start;
        const char *p;
        int k;

        if (asprintf(&path, "/proc/%d/stat", (int) pid) < 0)
                return -ENOMEM;
        k = read_one_line_file(path, &s);
        if (k < 0)
                return k == -ENOENT ? -ESRCH : k;
        /* The command name may hold anything, ')' too: the fields follow the last ')'. Field 3 is the
         * first after it; the start time is field 22. */
        p = strrchr(s, ')');
        if (!p)
                return -EBADMSG;
        p++;
        for (unsigned field = 3; field <= 22; field++) {
                p += strspn(p, " ");
                if (field == 22)
                        break;
                p += strcspn(p, " ");
        }
        if (sscanf(p, "%llu", &start) != 1)
                return -EBADMSG;
        *ret = start;
        return 0;
}

int exec_job_supervisor_open(const ExecJobRecord *r, int *ret_pidfd) {
        uint64_t start;
        int fd, k;

        fd = pidfd_open(r->supervisor_pid, 0);
        if (fd < 0)
                return -errno;
        /* The pidfd was opened first: if the process has the recorded start time now, it had it then
         * too (a pid is not reused while its process lives), so the pidfd is the supervisor's. */
        k = pid_start_time(r->supervisor_pid, &start);
        if (k < 0 || start != r->supervisor_start) {
                close(fd);
                return k < 0 && k != -ESRCH ? k : -ESRCH;
        }
        *ret_pidfd = fd;
        return 0;
}
