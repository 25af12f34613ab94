/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "lease-watch.h"

typedef struct LeaseEntry {
        char *task_id;
        int64_t lease_token;
        int64_t renewals;
        int64_t ttl_ms;
        uint64_t seen_usec;     /* CLOCK_BOOTTIME: when this token and count were first seen */
} LeaseEntry;

struct LeaseWatch {
        LeaseEntry *entries;    /* sorted by task_id (strcmp) */
        size_t n;
};

static int entry_cmp(const void *a, const void *b) {
        return strcmp(((const LeaseEntry *) a)->task_id, ((const LeaseEntry *) b)->task_id);
}

static void entries_free(LeaseEntry *e, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(e[i].task_id);
        free(e);
}

int lease_watch_new(LeaseWatch **ret) {
        LeaseWatch *w;

        assert(ret);
        w = calloc(1, sizeof(LeaseWatch));
        if (!w)
                return -ENOMEM;
        *ret = w;
        return 0;
}

LeaseWatch *lease_watch_free(LeaseWatch *w) {
        if (!w)
                return NULL;
        entries_free(w->entries, w->n);
        free(w);
        return NULL;
}

static LeaseEntry *find(LeaseWatch *w, const char *task_id) {
        LeaseEntry key = { .task_id = (char *) task_id };

        if (w->n == 0)
                return NULL;
        return bsearch(&key, w->entries, w->n, sizeof(LeaseEntry), entry_cmp);
}

int lease_watch_update(LeaseWatch *w, const LeaseSeen *seen, size_t n, uint64_t now_usec) {
        LeaseEntry *e;

        assert(w);
        assert(seen || n == 0);

        e = calloc(n + 1, sizeof(LeaseEntry));
        if (!e)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                e[i] = (LeaseEntry) {
                        .task_id = strdup(seen[i].task_id),
                        .lease_token = seen[i].lease_token,
                        .renewals = seen[i].renewals,
                        .ttl_ms = seen[i].ttl_ms,
                        .seen_usec = now_usec,
                };
                if (!e[i].task_id) {
                        entries_free(e, i);
                        return -ENOMEM;
                }
        }
        qsort(e, n, sizeof(LeaseEntry), entry_cmp);

        for (size_t i = 0; i < n; i++) {
                const LeaseEntry *old = find(w, e[i].task_id);

                /* Only the same lease with the same count keeps its instant: a new lease (token) or a
                 * count that moved starts anew. */
                if (old && old->lease_token == e[i].lease_token && old->renewals == e[i].renewals)
                        e[i].seen_usec = old->seen_usec;
        }

        entries_free(w->entries, w->n);
        w->entries = e;
        w->n = n;
        return 0;
}

int lease_watch_due(LeaseWatch *w, uint64_t now_usec, int64_t default_ttl_ms, int64_t grace_ms,
                    json_object **ret) {
        _cleanup_json_ json_object *a = json_object_new_array();

        assert(w);
        assert(default_ttl_ms > 0);
        assert(grace_ms >= 0);
        assert(ret);

        if (!a)
                return -ENOMEM;
        for (size_t i = 0; i < w->n; i++) {
                const LeaseEntry *e = w->entries + i;
                int64_t ttl_ms = e->ttl_ms > 0 ? e->ttl_ms : default_ttl_ms;
                uint64_t wait_usec = (uint64_t) (ttl_ms + grace_ms) * 1000;
                json_object *o;

                if (now_usec < e->seen_usec || now_usec - e->seen_usec < wait_usec)
                        continue;
                o = json_object_new_object();
                if (!o || json_object_array_add(a, o) < 0) {
                        json_object_put(o);
                        return -ENOMEM;
                }
                if (json_add_string(o, "task_id", e->task_id) < 0 ||
                    json_add_int64(o, "lease_token", e->lease_token) < 0 ||
                    json_add_int64(o, "renewals", e->renewals) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(a);
        return 0;
}

size_t lease_watch_size(LeaseWatch *w) {
        return w ? w->n : 0;
}
