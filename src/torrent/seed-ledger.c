/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "content-store.h"
#include "seed-ledger.h"

struct SeedLedger {
        uint32_t n_pieces;
        uint32_t *holders;              /* per piece: connected peers holding it or being sent it */
        uint32_t uncovered;             /* pieces with no holder */
        unsigned n_peers;
        uint64_t declined;
};

struct SeedLedgerPeer {
        SeedLedger *ledger;
        uint8_t *held;                  /* counted in holders[] */
        /* Pieces declined on this connection, one bitfield per window (SEED_LEDGER_WINDOW_USEC),
         * the current one at cur; allocated at the first decline. */
        uint8_t *declined;
        unsigned cur;
        uint64_t window_start;
};

int seed_ledger_new(uint32_t n_pieces, SeedLedger **ret) {
        SeedLedger *l;

        assert(ret);
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->holders = calloc(n_pieces ?: 1, sizeof(uint32_t));
        if (!l->holders) {
                free(l);
                return -ENOMEM;
        }
        l->n_pieces = l->uncovered = n_pieces;
        *ret = l;
        return 0;
}

SeedLedger *seed_ledger_free(SeedLedger *l) {
        if (!l)
                return NULL;
        assert(l->n_peers == 0);
        free(l->holders);
        free(l);
        return NULL;
}

int seed_ledger_peer_new(SeedLedger *l, SeedLedgerPeer **ret) {
        size_t size = bitfield_size(l->n_pieces) ?: 1;
        SeedLedgerPeer *lp;

        assert(l);
        assert(ret);
        lp = calloc(1, sizeof(*lp));
        if (!lp)
                return -ENOMEM;
        lp->held = calloc(1, size);
        if (!lp->held) {
                free(lp);
                return -ENOMEM;
        }
        lp->ledger = l;
        l->n_peers++;
        *ret = lp;
        return 0;
}

SeedLedgerPeer *seed_ledger_peer_free(SeedLedgerPeer *lp) {
        SeedLedger *l;

        if (!lp)
                return NULL;
        l = lp->ledger;
        for (uint32_t i = 0; i < l->n_pieces; i++)
                if (bitfield_get(lp->held, i)) {
                        assert(l->holders[i] > 0);
                        if (--l->holders[i] == 0)
                                l->uncovered++;
                }
        assert(l->n_peers > 0);
        l->n_peers--;
        free(lp->held);
        free(lp->declined);
        free(lp);
        return NULL;
}

static void hold(SeedLedgerPeer *lp, uint32_t index) {
        SeedLedger *l = lp->ledger;

        if (bitfield_get(lp->held, index))
                return;
        bitfield_set(lp->held, index);
        if (l->holders[index]++ == 0)
                l->uncovered--;
}

void seed_ledger_peer_bitfield(SeedLedgerPeer *lp, const uint8_t *bitfield) {
        assert(lp);
        for (uint32_t i = 0; i < lp->ledger->n_pieces; i++)
                if (!bitfield || bitfield_get(bitfield, i))
                        hold(lp, i);
}

void seed_ledger_peer_have(SeedLedgerPeer *lp, uint32_t index) {
        assert(lp);
        if (index < lp->ledger->n_pieces)
                hold(lp, index);
}

static uint8_t *declined_window(SeedLedgerPeer *lp, unsigned k) {
        return lp->declined + (size_t) k * bitfield_size(lp->ledger->n_pieces);
}

/* Moves the current window to now, forgetting the windows older than the memory. */
static void declined_advance(SeedLedgerPeer *lp, uint64_t now) {
        uint64_t steps;

        if (now < lp->window_start + SEED_LEDGER_WINDOW_USEC)
                return;
        steps = (now - lp->window_start) / SEED_LEDGER_WINDOW_USEC;
        for (uint64_t k = 0; k < MIN(steps, (uint64_t) SEED_LEDGER_GENERATIONS); k++) {
                lp->cur = (lp->cur + 1) % SEED_LEDGER_GENERATIONS;
                memset(declined_window(lp, lp->cur), 0, bitfield_size(lp->ledger->n_pieces));
        }
        lp->window_start += steps * SEED_LEDGER_WINDOW_USEC;
}

/* 1: declined in the current window; 2: in an older one still remembered; 0: not remembered. */
static int declined_when(SeedLedgerPeer *lp, uint32_t index) {
        if (!lp->declined)
                return 0;
        if (bitfield_get(declined_window(lp, lp->cur), index))
                return 1;
        for (unsigned k = 0; k < SEED_LEDGER_GENERATIONS; k++)
                if (k != lp->cur && bitfield_get(declined_window(lp, k), index))
                        return 2;
        return 0;
}

bool seed_ledger_request(SeedLedgerPeer *lp, uint32_t index, uint64_t now) {
        SeedLedger *l;
        uint32_t others;
        int when;

        assert(lp);
        l = lp->ledger;
        if (index >= l->n_pieces)
                return true;    /* not ours to judge: the connection rejects it on its own */
        if (lp->declined)
                declined_advance(lp, now);
        when = declined_when(lp, index);
        others = l->holders[index] - bitfield_get(lp->held, index);
        if (when == 1 || (when == 0 && others > 0 && l->uncovered > 0)) {
                if (!lp->declined) {
                        /* Declining is an optimisation: without memory for it, serve. */
                        lp->declined = calloc(SEED_LEDGER_GENERATIONS, bitfield_size(l->n_pieces) ?: 1);
                        if (!lp->declined)
                                goto serve;
                        lp->cur = 0;
                        lp->window_start = now;
                }
                bitfield_set(declined_window(lp, lp->cur), index);
                l->declined++;
                return false;
        }
serve:
        hold(lp, index);
        return true;
}

uint32_t seed_ledger_uncovered(const SeedLedger *l) {
        return l->uncovered;
}

uint32_t seed_ledger_holders(const SeedLedger *l, uint32_t index) {
        return index < l->n_pieces ? l->holders[index] : 0;
}

uint64_t seed_ledger_declined(const SeedLedger *l) {
        return l->declined;
}
