/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* PiecePicker: which blocks to ask which peer for, and the bytes of pieces being assembled. Pure
 * bookkeeping (no I/O), so that it can be tested on its own.
 *
 * Availability: the number of connected peers having each piece (peers are added with their
 * bitfield, NULL for one that has everything, and updated with `have`).
 *
 * Picking for a peer, in order:
 *  1. blocks not yet requested of the pieces this peer is already assembling (its own active
 *     pieces, so that one piece comes from one peer and a bad piece names its sender) and still
 *     offers (in the bitfield passed);
 *  2. a new piece, rarest first among those the peer has and we lack (ties broken at random so that
 *     peers starting together do not all fetch the same piece), if fewer than max_active pieces are
 *     being assembled (the memory bound: each active piece holds a buffer of its size);
 *  3. blocks not yet requested of other peers' active pieces (the active limit is reached, or the
 *     owner is gone);
 *  4. endgame, when nothing is left unrequested: blocks already requested from other peers and not
 *     yet received, each at most ENDGAME_DUPLICATES times in all. When such a block arrives the
 *     picker names the other peers that asked for it, to be sent a cancel.
 *
 * A peer is an opaque pointer (the caller's connection). Every request the caller makes must end in
 * exactly one of piece_picker_block_received() or piece_picker_block_abandon() (rejected, choked,
 * peer gone, stalled). When a piece's last block is received, the caller verifies and stores the
 * piece's bytes (piece_picker_piece_data()) and reports with piece_picker_piece_done(): a good piece
 * is ours, a bad one is emptied and fetched again; piece_picker_piece_senders() names the peers whose
 * blocks made it (to ban). */

#include "merkle.h"

#define ENDGAME_DUPLICATES 3
#define PICKER_SENDERS_MAX 4

typedef struct PiecePicker PiecePicker;

typedef struct PickedBlock {
        uint32_t piece, begin, length;
} PickedBlock;

/* have: our bitfield (NULL: nothing); max_active >= 1. */
int piece_picker_new(const TorrentGeometry *g, const uint8_t *have, unsigned max_active, PiecePicker **ret);
PiecePicker *piece_picker_free(PiecePicker *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(PiecePicker *, piece_picker_free);

/* bitfield NULL: the peer has every piece. Pass the same pointer contents to remove as were
 * counted (the caller's current view of the peer). */
void piece_picker_peer_add(PiecePicker *p, const uint8_t *bitfield);
void piece_picker_peer_remove(PiecePicker *p, const uint8_t *bitfield);
void piece_picker_peer_have(PiecePicker *p, uint32_t index);
uint32_t piece_picker_availability(const PiecePicker *p, uint32_t index);

/* Whether the peer (bitfield, NULL = all) has any piece we lack. */
bool piece_picker_interesting(const PiecePicker *p, const uint8_t *bitfield);

/* Up to max blocks for peer, in the order above. Each is recorded as requested by peer. */
size_t piece_picker_pick(PiecePicker *p, void *peer, const uint8_t *bitfield, PickedBlock *ret, size_t max);

/* A requested block arrived with size bytes. Returns 1 when it completed its piece, 0 when it was
 * stored, -EALREADY when the block was already there (an endgame duplicate: dropped), -ENOENT when the
 * piece is not being assembled or the block is not one we asked anyone for, -EBADMSG for a wrong size.
 * ret_others (room for ENDGAME_DUPLICATES) gets the other peers that asked for it. */
int piece_picker_block_received(PiecePicker *p, void *peer, uint32_t piece, uint32_t begin, const void *data,
                                size_t size, void **ret_others, size_t *ret_n_others);
/* The request of peer will not be answered. */
void piece_picker_block_abandon(PiecePicker *p, void *peer, uint32_t piece, uint32_t begin);
/* The peer declined the request (a reject while unchoked: a seed sharing its upload, seed-ledger.h):
 * abandoned, and the piece is no longer the peer's; a piece left with nothing received and nothing
 * requested stops being active (picked again later like any missing piece). The caller stops
 * offering the piece for this peer for a while (the bitfield it passes to piece_picker_pick()). */
void piece_picker_block_declined(PiecePicker *p, void *peer, uint32_t piece, uint32_t begin);
/* The bytes of a complete active piece (NULL otherwise). */
const uint8_t *piece_picker_piece_data(const PiecePicker *p, uint32_t piece);
/* The distinct peers whose blocks made up the piece (up to PICKER_SENDERS_MAX). */
size_t piece_picker_piece_senders(const PiecePicker *p, uint32_t piece, void **ret, size_t max);
/* ok: the piece is ours; !ok: its data is dropped and it is fetched again. */
void piece_picker_piece_done(PiecePicker *p, uint32_t piece, bool ok);
/* Forgets peer everywhere (its requests are abandoned, its pieces lose their owner); for a peer
 * that is gone. */
void piece_picker_forget_peer(PiecePicker *p, void *peer);

uint32_t piece_picker_missing(const PiecePicker *p);
bool piece_picker_endgame(const PiecePicker *p);
unsigned piece_picker_active(const PiecePicker *p);
