/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "content-store.h"
#include "list.h"
#include "piece-picker.h"
#include "random-util.h"

typedef struct BlockState {
        void *req[ENDGAME_DUPLICATES];  /* peers that asked for it and are still waiting */
        void *sender;
        bool received;
} BlockState;

typedef struct Active Active;
struct Active {
        LIST_FIELDS(Active);
        uint32_t index, size, n_blocks, n_received, n_unrequested;
        bool open;                      /* in the open list: has unrequested blocks */
        void *owner;
        uint8_t *data;
        BlockState blocks[];
};

struct PiecePicker {
        TorrentGeometry g;
        uint8_t *have;
        /* have, or active: the pieces a new pick passes over. The scans below go a byte (eight
         * pieces) at a time over it: a fetcher asks for a pick at most of its peers' haves, and a
         * scan of every piece took 8 % of the machine's CPU with 16 fetchers on it
         * (bench/p2p/README.md). */
        uint8_t *busy;
        uint32_t n_have;
        uint32_t *avail;
        uint32_t n_seeds;               /* peers with every piece, not in avail[] */
        Active **active_of;
        Active *open, *closed;
        unsigned n_active, max_active;
        uint64_t rng;
};

int piece_picker_new(const TorrentGeometry *g, const uint8_t *have, unsigned max_active, PiecePicker **ret) {
        PiecePicker *p;
        size_t n = g->n_pieces;

        assert(g);
        assert(max_active >= 1);
        assert(ret);
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->g = *g;
        p->max_active = max_active;
        p->have = calloc(1, bitfield_size(g->n_pieces) ?: 1);
        p->busy = calloc(1, bitfield_size(g->n_pieces) ?: 1);
        p->avail = calloc(n ?: 1, sizeof(uint32_t));
        p->active_of = calloc(n ?: 1, sizeof(Active *));
        if (!p->have || !p->busy || !p->avail || !p->active_of) {
                piece_picker_free(p);
                return -ENOMEM;
        }
        if (have)
                for (uint32_t i = 0; i < g->n_pieces; i++)
                        if (bitfield_get(have, i)) {
                                bitfield_set(p->have, i);
                                bitfield_set(p->busy, i);
                                p->n_have++;
                        }
        random_bytes(&p->rng, sizeof(p->rng));
        p->rng |= 1;
        *ret = p;
        return 0;
}

static void active_free(PiecePicker *p, Active *a) {
        if (a->open)
                LIST_REMOVE(p->open, a);
        else
                LIST_REMOVE(p->closed, a);
        p->active_of[a->index] = NULL;
        if (!bitfield_get(p->have, a->index))
                bitfield_clear(p->busy, a->index);
        p->n_active--;
        free(a->data);
        free(a);
}

PiecePicker *piece_picker_free(PiecePicker *p) {
        if (!p)
                return NULL;
        while (p->open)
                active_free(p, p->open);
        while (p->closed)
                active_free(p, p->closed);
        free(p->have);
        free(p->busy);
        free(p->avail);
        free(p->active_of);
        free(p);
        return NULL;
}

void piece_picker_peer_add(PiecePicker *p, const uint8_t *bitfield) {
        if (!bitfield) {
                p->n_seeds++;
                return;
        }
        for (uint32_t i = 0; i < p->g.n_pieces; i++)
                if (bitfield_get(bitfield, i))
                        p->avail[i]++;
}

void piece_picker_peer_remove(PiecePicker *p, const uint8_t *bitfield) {
        if (!bitfield) {
                assert(p->n_seeds > 0);
                p->n_seeds--;
                return;
        }
        for (uint32_t i = 0; i < p->g.n_pieces; i++)
                if (bitfield_get(bitfield, i)) {
                        assert(p->avail[i] > 0);
                        p->avail[i]--;
                }
}

void piece_picker_peer_have(PiecePicker *p, uint32_t index) {
        assert(index < p->g.n_pieces);
        p->avail[index]++;
}

uint32_t piece_picker_availability(const PiecePicker *p, uint32_t index) {
        return index < p->g.n_pieces ? p->avail[index] + p->n_seeds : 0;
}

static bool peer_has(const uint8_t *bitfield, uint32_t i) {
        return !bitfield || bitfield_get(bitfield, i);
}

/* The byte k of the peer's bitfield (NULL: every piece), without the padding bits past the last
 * piece. */
static uint8_t offered_byte(const PiecePicker *p, const uint8_t *bitfield, size_t k) {
        uint8_t b = bitfield ? bitfield[k] : 0xff;

        if (k == bitfield_size(p->g.n_pieces) - 1 && p->g.n_pieces % 8 != 0)
                b &= (uint8_t) (0xff << (8 - p->g.n_pieces % 8));
        return b;
}

bool piece_picker_interesting(const PiecePicker *p, const uint8_t *bitfield) {
        for (size_t k = 0; k < bitfield_size(p->g.n_pieces); k++)
                if (offered_byte(p, bitfield, k) & ~p->have[k])
                        return true;
        return false;
}

static void set_open(PiecePicker *p, Active *a, bool open) {
        if (a->open == open)
                return;
        if (a->open) {
                LIST_REMOVE(p->open, a);
                LIST_PREPEND(p->closed, a);
        } else {
                LIST_REMOVE(p->closed, a);
                LIST_PREPEND(p->open, a);
        }
        a->open = open;
}

static unsigned n_req(const BlockState *b) {
        unsigned n = 0;
        for (unsigned i = 0; i < ENDGAME_DUPLICATES; i++)
                n += b->req[i] != NULL;
        return n;
}

static bool req_has(const BlockState *b, void *peer) {
        for (unsigned i = 0; i < ENDGAME_DUPLICATES; i++)
                if (b->req[i] == peer)
                        return true;
        return false;
}

static void req_add(BlockState *b, void *peer) {
        for (unsigned i = 0; i < ENDGAME_DUPLICATES; i++)
                if (!b->req[i]) {
                        b->req[i] = peer;
                        return;
                }
        assert(false);
}

static bool req_remove(BlockState *b, void *peer) {
        for (unsigned i = 0; i < ENDGAME_DUPLICATES; i++)
                if (b->req[i] == peer) {
                        b->req[i] = NULL;
                        return true;
                }
        return false;
}

static PickedBlock block_of(const Active *a, uint32_t b) {
        uint32_t begin = b * TORRENT_BLOCK_SIZE;
        return (PickedBlock) { .piece = a->index, .begin = begin, .length = MIN(TORRENT_BLOCK_SIZE, a->size - begin) };
}

static size_t take_unrequested(PiecePicker *p, Active *a, void *peer, PickedBlock *ret, size_t max) {
        size_t n = 0;

        for (uint32_t b = 0; b < a->n_blocks && n < max && a->n_unrequested > 0; b++) {
                BlockState *s = &a->blocks[b];
                if (s->received || n_req(s) > 0)
                        continue;
                req_add(s, peer);
                a->n_unrequested--;
                ret[n++] = block_of(a, b);
        }
        if (a->n_unrequested == 0)
                set_open(p, a, false);
        return n;
}

static Active *activate(PiecePicker *p, uint32_t index, void *owner) {
        uint32_t size = torrent_piece_size(&p->g, index);
        uint32_t n_blocks = (size + TORRENT_BLOCK_SIZE - 1) / TORRENT_BLOCK_SIZE;
        Active *a;

        a = calloc(1, sizeof(*a) + n_blocks * sizeof(BlockState));
        if (!a)
                return NULL;
        a->data = malloc(size);
        if (!a->data) {
                free(a);
                return NULL;
        }
        a->index = index;
        a->size = size;
        a->n_blocks = a->n_unrequested = n_blocks;
        a->owner = owner;
        a->open = true;
        LIST_PREPEND(p->open, a);
        p->active_of[index] = a;
        bitfield_set(p->busy, index);
        p->n_active++;
        return a;
}

/* The rarest piece the peer has that we lack and nobody assembles; UINT32_MAX when none. Ties go to
 * the first after a random piece, in circular order, so that peers starting together do not all
 * fetch the same piece. */
static uint32_t rarest(PiecePicker *p, const uint8_t *bitfield) {
        uint32_t n = p->g.n_pieces, best = UINT32_MAX, best_avail = UINT32_MAX, start;
        size_t n_bytes = bitfield_size(n), k0;
        uint8_t head;

        if (n == 0)
                return UINT32_MAX;
        start = (uint32_t) (xorshift64(&p->rng) % n);
        k0 = start / 8;
        /* The start byte's pieces from start on come first; those before it, last. */
        head = (uint8_t) (0xff >> (start % 8));
        for (size_t step = 0; step <= n_bytes; step++) {
                size_t k = k0 + step < n_bytes ? k0 + step : k0 + step - n_bytes;
                uint8_t mask = step == 0 ? head : step == n_bytes ? (uint8_t) ~head : 0xff;
                uint8_t cand;

                /* Eight bytes at once where nothing is to be had, the usual case once most pieces
                 * are ours or being fetched (a padding bit counted here only means no skip). */
                if (step > 0 && step + 8 < n_bytes && k + 8 <= n_bytes) {
                        uint64_t off = UINT64_MAX, busy;

                        if (bitfield)
                                memcpy(&off, bitfield + k, sizeof(off));
                        memcpy(&busy, p->busy + k, sizeof(busy));
                        if ((off & ~busy) == 0) {
                                step += 7;
                                continue;
                        }
                }
                cand = offered_byte(p, bitfield, k) & ~p->busy[k] & mask;

                for (unsigned bit = 0; cand != 0; bit++, cand = (uint8_t) (cand << 1)) {
                        uint32_t i;

                        if (!(cand & 0x80))
                                continue;
                        i = (uint32_t) k * 8 + bit;
                        if (p->avail[i] < best_avail) {
                                best = i;
                                best_avail = p->avail[i];
                                if (best_avail == 0)
                                        return best;    /* only seeds have it: none rarer */
                        }
                }
        }
        return best;
}

size_t piece_picker_pick(PiecePicker *p, void *peer, const uint8_t *bitfield, PickedBlock *ret, size_t max) {
        size_t n = 0;

        assert(peer);
        /* 1. Its own pieces (that it still offers: see piece_picker_block_declined()). */
        for (Active *a = p->open, *next; a && n < max; a = next) {
                next = a->next;
                if (a->owner == peer && peer_has(bitfield, a->index))
                        n += take_unrequested(p, a, peer, ret + n, max - n);
        }
        /* 2. New pieces, rarest first. */
        while (n < max && p->n_active < p->max_active) {
                uint32_t i = rarest(p, bitfield);
                Active *a;

                if (i == UINT32_MAX)
                        break;
                a = activate(p, i, peer);
                if (!a)
                        break;  /* out of memory: what is active goes on */
                n += take_unrequested(p, a, peer, ret + n, max - n);
        }
        /* 3. Others' pieces. */
        for (Active *a = p->open, *next; a && n < max; a = next) {
                next = a->next;
                if (a->owner != peer && peer_has(bitfield, a->index))
                        n += take_unrequested(p, a, peer, ret + n, max - n);
        }
        if (n > 0 || !piece_picker_endgame(p))
                return n;
        /* 4. Endgame: duplicates of blocks still in flight elsewhere. */
        for (Active *a = p->closed; a && n < max; a = a->next) {
                if (!peer_has(bitfield, a->index))
                        continue;
                for (uint32_t b = 0; b < a->n_blocks && n < max; b++) {
                        BlockState *s = &a->blocks[b];
                        if (s->received || req_has(s, peer) || n_req(s) >= ENDGAME_DUPLICATES)
                                continue;
                        req_add(s, peer);
                        ret[n++] = block_of(a, b);
                }
        }
        return n;
}

int piece_picker_block_received(PiecePicker *p, void *peer, uint32_t piece, uint32_t begin, const void *data,
                                size_t size, void **ret_others, size_t *ret_n_others) {
        Active *a = piece < p->g.n_pieces ? p->active_of[piece] : NULL;
        BlockState *s;
        uint32_t b;
        size_t k = 0;

        if (ret_n_others)
                *ret_n_others = 0;
        if (!a || begin % TORRENT_BLOCK_SIZE != 0 || begin / TORRENT_BLOCK_SIZE >= a->n_blocks)
                return -ENOENT;
        b = begin / TORRENT_BLOCK_SIZE;
        s = &a->blocks[b];
        if (size != block_of(a, b).length)
                return -EBADMSG;
        if (s->received) {
                req_remove(s, peer);
                return -EALREADY;
        }
        if (!req_remove(s, peer))
                return -ENOENT;
        memcpy(a->data + begin, data, size);
        s->received = true;
        s->sender = peer;
        for (unsigned i = 0; i < ENDGAME_DUPLICATES; i++)
                if (s->req[i]) {
                        if (ret_others)
                                ret_others[k++] = s->req[i];
                        s->req[i] = NULL;
                }
        if (ret_n_others)
                *ret_n_others = k;
        a->n_received++;
        return a->n_received == a->n_blocks;
}

void piece_picker_block_abandon(PiecePicker *p, void *peer, uint32_t piece, uint32_t begin) {
        Active *a = piece < p->g.n_pieces ? p->active_of[piece] : NULL;
        BlockState *s;

        if (!a || begin % TORRENT_BLOCK_SIZE != 0 || begin / TORRENT_BLOCK_SIZE >= a->n_blocks)
                return;
        s = &a->blocks[begin / TORRENT_BLOCK_SIZE];
        if (!req_remove(s, peer) || s->received || n_req(s) > 0)
                return;
        a->n_unrequested++;
        set_open(p, a, true);
}

void piece_picker_block_declined(PiecePicker *p, void *peer, uint32_t piece, uint32_t begin) {
        Active *a = piece < p->g.n_pieces ? p->active_of[piece] : NULL;

        piece_picker_block_abandon(p, peer, piece, begin);
        if (!a)
                return;
        if (a->owner == peer)
                a->owner = NULL;
        /* Nothing received, nothing asked of anyone: not active any more, so that it is picked
         * again rarest first from whoever has it, and holds no memory meanwhile. */
        if (a->n_received == 0 && a->n_unrequested == a->n_blocks)
                active_free(p, a);
}

const uint8_t *piece_picker_piece_data(const PiecePicker *p, uint32_t piece) {
        Active *a = piece < p->g.n_pieces ? p->active_of[piece] : NULL;
        return a && a->n_received == a->n_blocks ? a->data : NULL;
}

size_t piece_picker_piece_senders(const PiecePicker *p, uint32_t piece, void **ret, size_t max) {
        Active *a = piece < p->g.n_pieces ? p->active_of[piece] : NULL;
        size_t n = 0;

        if (!a)
                return 0;
        for (uint32_t b = 0; b < a->n_blocks; b++) {
                void *s = a->blocks[b].sender;
                bool seen = false;
                if (!s)
                        continue;
                for (size_t i = 0; i < n; i++)
                        seen = seen || ret[i] == s;
                if (!seen && n < max)
                        ret[n++] = s;
        }
        return n;
}

void piece_picker_piece_done(PiecePicker *p, uint32_t piece, bool ok) {
        Active *a = piece < p->g.n_pieces ? p->active_of[piece] : NULL;

        if (!a)
                return;
        /* A bad piece is dropped whole and picked again later like any missing piece (its
         * outstanding duplicates, if any, will be answered with -ENOENT and ignored). */
        active_free(p, a);
        if (ok && !bitfield_get(p->have, piece)) {
                bitfield_set(p->have, piece);
                bitfield_set(p->busy, piece);
                p->n_have++;
        }
}

static void forget_in(PiecePicker *p, Active *list, void *peer) {
        for (Active *a = list, *next; a; a = next) {
                next = a->next;
                if (a->owner == peer)
                        a->owner = NULL;
                for (uint32_t b = 0; b < a->n_blocks; b++) {
                        BlockState *s = &a->blocks[b];
                        if (req_remove(s, peer) && !s->received && n_req(s) == 0) {
                                a->n_unrequested++;
                                set_open(p, a, true);
                        }
                }
        }
}

void piece_picker_forget_peer(PiecePicker *p, void *peer) {
        /* Pieces may move from closed to open while walking: walk closed first (moved ones get
         * walked again in open, harmlessly). */
        forget_in(p, p->closed, peer);
        forget_in(p, p->open, peer);
}

uint32_t piece_picker_missing(const PiecePicker *p) {
        return p->g.n_pieces - p->n_have;
}

bool piece_picker_endgame(const PiecePicker *p) {
        return !p->open && p->n_active > 0 && p->n_active == piece_picker_missing(p);
}

unsigned piece_picker_active(const PiecePicker *p) {
        return p->n_active;
}
