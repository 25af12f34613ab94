/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Live output: while a task runs, what it printed so far goes to the control in chunks
 * (POST /api/tasks/{id}/output), so that GET /api/tasks/{id}/logs shows it before the end. Bounded:
 * one chunk in flight per task, at most LIVE_CHUNKS_PER_FLUSH chunks of at most LIVE_CHUNK_RAW_BYTES
 * each per flush interval, and nothing more once the control says the lease has its share (413).
 * Best effort: a chunk that cannot be sent is sent again at the next flush; the result's output,
 * sent with finish, stays the authority. Chunks are whole characters of valid UTF-8 (invalid bytes
 * become U+FFFD); offset is where the chunk starts in the text sent so far, so that a chunk sent
 * again after a lost answer is stored once. */

#include "agent-internal.h"
#include "json-util.h"
#include "utf8.h"

#define LIVE_FLUSH_USEC (1 * USEC_PER_SEC)
/* Raw bytes read per chunk: at most three times as many once invalid bytes are replaced, within the
 * control's 64 KiB per chunk. */
#define LIVE_CHUNK_RAW_BYTES (16 * 1024)
#define LIVE_CHUNKS_PER_FLUSH 4

static void live_send(Task *t);

static void live_stop(Task *t) {
        t->live_stopped = true;
        t->live_timer = sd_event_source_disable_unref(t->live_timer);
        control_call_cancel(TAKE_PTR(t->live_call));
        free(t->live_pending);
        t->live_pending = NULL;
}

static void on_live_sent(const ControlReply *reply, void *userdata) {
        Task *t = userdata;
        int64_t stored;

        t->live_call = NULL;
        if (reply->error < 0 || reply->code >= 500)
                return;         /* again at the next flush */
        if (reply->code != 200) {
                /* 409: not our lease any more; 413: the lease's share is used up; 404: gone. */
                log_debug("Task %s: no more live output (%ld: %s).", t->id, reply->code, reply->message ?: "");
                live_stop(t);
                return;
        }
        if (json_get_int64(reply->json, "stored", &stored) < 0 ||
            stored != t->live_sent + (int64_t) strlen(t->live_pending)) {
                /* The control has another idea of this lease's output (an agent before us sent some):
                 * the result will tell. */
                live_stop(t);
                return;
        }
        t->live_sent = stored;
        t->live_raw_offset += t->live_pending_raw;
        free(t->live_pending);
        t->live_pending = NULL;
        if (t->live_pending_raw == LIVE_CHUNK_RAW_BYTES && ++t->live_chunks < LIVE_CHUNKS_PER_FLUSH)
                live_send(t);   /* more is waiting */
}

/* Reads the next chunk (unless one waits to be sent again) and sends it. */
static void live_send(Task *t) {
        Agent *a = t->agent;
        _cleanup_json_ json_object *body = NULL;
        char buf[LIVE_CHUNK_RAW_BYTES];
        size_t n = 0, keep;
        int r;

        if (t->live_call || t->live_stopped || !t->job || t->drop_result)
                return;
        if (!t->live_pending) {
                r = driver_job_output_read(t->job, t->live_raw_offset, buf, sizeof(buf), &n);
                if (r < 0) {
                        if (r != -EOPNOTSUPP)
                                log_debug_errno(r, "Task %s: cannot read its output: %m", t->id);
                        live_stop(t);
                        return;
                }
                if (n == 0)
                        return;
                /* A character cut by the end of what was read waits for its other bytes. */
                keep = n;
                for (size_t back = 1; back <= 3 && back <= n; back++) {
                        unsigned char c = (unsigned char) buf[n - back];
                        if ((c & 0xC0) == 0x80)
                                continue;       /* a continuation byte: look further back */
                        if (c >= 0xC0 && utf8_char_len(buf + n - back, back) == 0 &&
                            (size_t) ((c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : 2) > back)
                                keep = n - back;
                        break;
                }
                if (keep == 0)
                        return;
                t->live_pending = utf8_sanitize(buf, keep);
                if (!t->live_pending) {
                        log_oom();
                        return;
                }
                t->live_pending_raw = keep;
        }

        body = json_object_new_object();
        if (!body || json_add_string(body, "node_id", a->config.node_id) < 0 ||
            json_add_int64(body, "lease_token", t->lease_token) < 0 ||
            json_add_int64(body, "offset", t->live_sent) < 0 ||
            json_add_string(body, "data", t->live_pending) < 0) {
                log_oom();
                return;
        }
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/api/tasks/%s/output", t->id) < 0) {
                log_oom();
                return;
        }
        r = control_post(a->control, path, body, request_timeout(a), on_live_sent, t, &t->live_call);
        if (r < 0)
                log_debug_errno(r, "Task %s: cannot send its live output: %m", t->id);
}

static int on_live_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Task *t = userdata;

        t->live_chunks = 0;
        (void) sd_event_source_set_time_relative(s, LIVE_FLUSH_USEC);
        if (t->state != TASK_RUNNING) {
                /* Ended: the result carries the rest. */
                live_stop(t);
                return 0;
        }
        live_send(t);
        return 0;
}

void task_live_output_start(Task *t) {
        int r;

        /* A task taken over after a restart: what the previous agent sent is not known here. */
        if (t->live_timer || t->live_stopped || !t->record || !t->job)
                return;
        r = sd_event_add_time_relative(t->agent->event, &t->live_timer, CLOCK_MONOTONIC, LIVE_FLUSH_USEC / 4,
                                       50 * USEC_PER_MSEC, on_live_timer, t);
        if (r < 0) {
                log_debug_errno(r, "Task %s: no live output: %m", t->id);
                return;
        }
        (void) sd_event_source_set_enabled(t->live_timer, SD_EVENT_ON);
}

void task_live_output_stop(Task *t) {
        live_stop(t);
}
