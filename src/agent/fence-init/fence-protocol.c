/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* No library beyond libc here: this is linked into the static mc-fence-init as well as the agent. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fence-protocol.h"

static const char *const state_table[_FENCE_LEASE_STATE_MAX] = {
        [FENCE_LEASE_CREATED] = "created",
        [FENCE_LEASE_RUNNING] = "running",
        [FENCE_LEASE_OFF] = "off",
};

const char *fence_lease_state_to_string(FenceLeaseState s) {
        return s >= 0 && s < _FENCE_LEASE_STATE_MAX ? state_table[s] : NULL;
}

FenceLeaseState fence_lease_state_from_string(const char *s, size_t n) {
        for (int i = 0; i < _FENCE_LEASE_STATE_MAX; i++)
                if (strlen(state_table[i]) == n && memcmp(state_table[i], s, n) == 0)
                        return (FenceLeaseState) i;
        return _FENCE_LEASE_STATE_INVALID;
}

/* A decimal number filling [s, s+n) exactly, without overflow. */
static int parse_u64(const char *s, size_t n, uint64_t *ret) {
        uint64_t v = 0;

        if (n == 0 || n > 20)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EBADMSG;
                if (v > (UINT64_MAX - (uint64_t) (s[i] - '0')) / 10)
                        return -EBADMSG;
                v = v * 10 + (uint64_t) (s[i] - '0');
        }
        *ret = v;
        return 0;
}

int fence_lease_parse(const char *text, size_t size, FenceLease *ret) {
        bool magic = false, seq = false, state = false, remaining = false;
        FenceLease l = { .state = _FENCE_LEASE_STATE_INVALID };
        const char *p = text, *end = text + size;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p)), *sp;
                size_t n, kn;

                if (!nl)
                        return -EBADMSG;        /* a file cut short: never half a write */
                n = (size_t) (nl - p);
                if (n == strlen(FENCE_PROTOCOL_MAGIC) && memcmp(p, FENCE_PROTOCOL_MAGIC, n) == 0) {
                        if (magic)
                                return -EBADMSG;
                        magic = true;
                        p = nl + 1;
                        continue;
                }
                sp = memchr(p, ' ', n);
                if (!sp) {
                        p = nl + 1;
                        continue;
                }
                kn = (size_t) (sp - p);
#define KEY(k) (kn == strlen(k) && memcmp(p, k, kn) == 0)
                if (KEY("seq")) {
                        if (seq || parse_u64(sp + 1, (size_t) (nl - sp - 1), &l.seq) < 0)
                                return -EBADMSG;
                        seq = true;
                } else if (KEY("state")) {
                        l.state = fence_lease_state_from_string(sp + 1, (size_t) (nl - sp - 1));
                        if (state || l.state < 0)
                                return -EBADMSG;
                        state = true;
                } else if (KEY("remaining_ms")) {
                        if (remaining || parse_u64(sp + 1, (size_t) (nl - sp - 1), &l.remaining_ms) < 0)
                                return -EBADMSG;
                        remaining = true;
                }
#undef KEY
                p = nl + 1;
        }
        if (!magic || !seq || !state || !remaining)
                return -EBADMSG;
        *ret = l;
        return 0;
}

int fence_lease_format(const FenceLease *l, char *buf, size_t size) {
        const char *s = fence_lease_state_to_string(l->state);
        int n;

        if (!s)
                return -EINVAL;
        n = snprintf(buf, size, FENCE_PROTOCOL_MAGIC "\nseq %" PRIu64 "\nstate %s\nremaining_ms %" PRIu64 "\n", l->seq,
                     s, l->remaining_ms);
        if (n < 0 || (size_t) n >= size)
                return -ENOBUFS;
        return n;
}

FenceVerdict fence_watch_step(FenceWatch *w, const FenceLease *l, uint64_t now_usec, uint64_t slack_usec) {
        if (l && (!w->have || l->seq != w->seq)) {
                /* A new write: it promises remaining_ms from when it was made, which is at most our
                 * poll interval before now. Counting from now, less that slack, is never later than the
                 * agent's own fence. */
                uint64_t budget = l->remaining_ms > UINT64_MAX / 1000 ? UINT64_MAX / 2 : l->remaining_ms * 1000;

                w->have = true;
                w->seq = l->seq;
                w->off = l->state == FENCE_LEASE_OFF;
                if (l->state == FENCE_LEASE_RUNNING)
                        w->started = true;
                w->deadline_usec = budget > slack_usec ? now_usec + budget - slack_usec : now_usec;
        }
        if (!w->have)
                return FENCE_KILL;
        if (!w->off && now_usec >= w->deadline_usec)
                return FENCE_KILL;
        return w->started ? FENCE_RUN : FENCE_WAIT;
}
