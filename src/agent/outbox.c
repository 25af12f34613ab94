/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "id-util.h"
#include "file-util.h"
#include "json-util.h"
#include "log.h"
#include "outbox.h"

#define ENTRY_MAX_BYTES (64U * 1024U * 1024U)

int outbox_init(const char *dir) {
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create the outbox %s: %m", dir);
        return 0;
}

/* Task ids are [A-Za-z0-9][A-Za-z0-9._-]*: safe as a file name, and never starting with '.', which
 * temporary files do (write_file_atomic()). */
static char *entry_name(const char *task_id, int64_t lease_token) {
        char *p;

        if (asprintf(&p, "%s.%" PRIi64 ".json", task_id, lease_token) < 0)
                return NULL;
        return p;
}

static char *entry_path(const char *dir, const char *task_id, int64_t lease_token) {
        _cleanup_free_ char *name = entry_name(task_id, lease_token);
        char *p;

        if (!name || asprintf(&p, "%s/%s", dir, name) < 0)
                return NULL;
        return p;
}

int outbox_write(const char *dir, const char *task_id, int64_t lease_token, json_object *finish) {
        _cleanup_json_ json_object *o = json_object_new_object();
        _cleanup_free_ char *path = NULL;
        const char *text;
        int r;

        if (!o)
                return -ENOMEM;
        if (json_add_string(o, "task_id", task_id) < 0 || json_add_int64(o, "lease_token", lease_token) < 0 ||
            json_add(o, "finish", json_object_get(finish)) < 0)
                return -ENOMEM;
        text = json_to_string(o);
        path = entry_path(dir, task_id, lease_token);
        if (!path)
                return -ENOMEM;
        /* Durable before the task's lease is let go: this is the only copy of the result. */
        r = write_file_atomic(path, text, strlen(text), 0600, WRITE_FILE_SYNC);
        if (r < 0)
                return log_error_errno(r, "Cannot write %s: %m", path);
        return 0;
}

int outbox_remove(const char *dir, const char *task_id, int64_t lease_token) {
        _cleanup_free_ char *path = entry_path(dir, task_id, lease_token);

        if (!path)
                return -ENOMEM;
        if (unlink(path) < 0 && errno != ENOENT)
                return log_warning_errno(errno, "Cannot remove %s: %m", path);
        /* Not fsynced: an entry that comes back after a crash is sent again and gets 409. */
        return 0;
}

void outbox_entries_free(OutboxEntry *e, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(e[i].task_id);
                json_object_put(e[i].finish);
        }
        free(e);
}

int outbox_entry_parse(const char *text, size_t size, OutboxEntry *ret) {
        _cleanup_json_ json_object *o = NULL;
        json_object *finish;
        const char *id;
        int64_t token;

        if (json_parse_strict(text, size, &o, NULL) < 0 || json_get_string(o, "task_id", &id) < 0 ||
            json_get_int64(o, "lease_token", &token) < 0 || !json_object_object_get_ex(o, "finish", &finish) ||
            !json_object_is_type(finish, json_type_object) || !id_is_valid(id))
                return -EBADMSG;
        ret->task_id = strdup(id);
        if (!ret->task_id)
                return -ENOMEM;
        ret->lease_token = token;
        ret->finish = json_object_get(finish);
        return 0;
}

static int load_one(const char *path, OutboxEntry *ret) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;
        size_t got = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size <= 0 || (uint64_t) st.st_size > ENTRY_MAX_BYTES)
                return -EBADMSG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (got < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + got, (size_t) st.st_size - got);
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        return outbox_entry_parse(buf, got, ret);
}

int outbox_load(const char *dir, OutboxEntry **ret, size_t *ret_n) {
        OutboxEntry *e = NULL;
        size_t n = 0;
        struct dirent *de;
        DIR *d;

        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT)
                        return log_error_errno(errno, "Cannot open the outbox %s: %m", dir);
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        while ((de = readdir(d))) {
                _cleanup_free_ char *path = NULL;
                OutboxEntry *ne;
                int r;

                if (de->d_name[0] == '.' && (streq(de->d_name, ".") || streq(de->d_name, "..")))
                        continue;
                if (asprintf(&path, "%s/%s", dir, de->d_name) < 0)
                        goto oom;
                if (de->d_name[0] == '.') {
                        /* A write a crash interrupted: its result was never acknowledged anywhere. */
                        (void) unlink(path);
                        continue;
                }
                ne = realloc(e, sizeof(OutboxEntry) * (n + 1));
                if (!ne)
                        goto oom;
                e = ne;
                e[n] = (OutboxEntry) {};
                r = load_one(path, e + n);
                if (r == -ENOMEM)
                        goto oom;
                if (r < 0) {
                        log_warning_errno(r, "Ignoring unreadable outbox entry %s: %m", path);
                        continue;
                }
                {
                        /* Delivered entries are removed by the name their content gives: one whose
                         * name says otherwise (copied in by hand?) would be sent at every start. */
                        _cleanup_free_ char *expected = entry_path(dir, e[n].task_id, e[n].lease_token);
                        if (!expected) {
                                n++;
                                goto oom;
                        }
                        if (!streq(expected, path)) {
                                log_warning("Ignoring outbox entry %s: it holds the result of task %s lease %" PRIi64
                                            ", which belongs in %s.", path, e[n].task_id, e[n].lease_token, expected);
                                free(e[n].task_id);
                                json_object_put(e[n].finish);
                                e[n] = (OutboxEntry) {};
                                continue;
                        }
                }
                n++;
        }
        closedir(d);
        *ret = e;
        *ret_n = n;
        return 0;
oom:
        closedir(d);
        outbox_entries_free(e, n);
        return log_oom();
}
