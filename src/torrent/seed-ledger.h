/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* SeedLedger: a seed's view of which pieces its connected peers hold or are being sent, so that its
 * upload goes to pieces nobody has yet (the idea of BEP 16 "super-seeding", without hiding pieces).
 *
 * A seed's uplink is the one every piece must cross once; a piece it sends twice costs the swarm a
 * piece's worth of time when the second downloader could have taken it from the first. Fetchers pick
 * rarest first but cannot see which pieces the others are being sent: with many of them asking at
 * once, the same pieces are asked for twice (measured: 1.4 times the content sent by the seeder of
 * eight fetchers). The seed sees every request, so it decides:
 *
 *   a request for piece i from peer P is declined (a reject, fast extension only) when another
 *   connected peer holds i or is being sent i by us, while some piece is still held and sent by
 *   nobody, unless P was declined i on this connection between 1 and about 8 seconds ago.
 *
 * - "Held or being sent" is counted per piece over the connected peers: their bitfields and haves,
 *   and the pieces we served them. A peer that leaves takes its count with it.
 * - Once every piece is out there, nothing is declined: the seed's upload has no better use than
 *   helping with whatever is asked.
 * - Declines come in windows (SEED_LEDGER_WINDOW_USEC, up to 1 s): the blocks of one piece asked
 *   together are declined together; asked again after the window (and within the memory, 7-8 s), the
 *   piece is served. A peer that cannot reach the holder (not connected to it, or it never shares)
 *   waits and asks again, it never starves. Our fetcher waits 2-4 s before asking a decliner again
 *   (swarm.c), time for the holder to get the piece and announce it.
 * - One fetcher alone is never declined: nobody else holds anything.
 *
 * Pure bookkeeping (no I/O), so that it is tested on its own; SwarmServer keeps one per served
 * content and one SeedLedgerPeer per connection, and consults it only while the content is complete
 * (a partial content's holder serves what it has: its uplink is not the scarce one). */

#include "macro.h"

#define SEED_LEDGER_WINDOW_USEC USEC_PER_SEC
#define SEED_LEDGER_GENERATIONS 8

typedef struct SeedLedger SeedLedger;
typedef struct SeedLedgerPeer SeedLedgerPeer;

int seed_ledger_new(uint32_t n_pieces, SeedLedger **ret);
/* Every peer must have been freed before. */
SeedLedger *seed_ledger_free(SeedLedger *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(SeedLedger *, seed_ledger_free);

int seed_ledger_peer_new(SeedLedger *l, SeedLedgerPeer **ret);
/* Uncounts what the peer held. */
SeedLedgerPeer *seed_ledger_peer_free(SeedLedgerPeer *lp);
DEFINE_TRIVIAL_CLEANUP_FUNC(SeedLedgerPeer *, seed_ledger_peer_free);

/* The peer's bitfield (NULL: every piece), added to what it is known to hold; and one more piece. */
void seed_ledger_peer_bitfield(SeedLedgerPeer *lp, const uint8_t *bitfield);
void seed_ledger_peer_have(SeedLedgerPeer *lp, uint32_t index);

/* A request of lp for a block of piece index at now (CLOCK_MONOTONIC, usec): true to serve it (the
 * piece then counts as held by lp), false to decline it. */
bool seed_ledger_request(SeedLedgerPeer *lp, uint32_t index, uint64_t now);

/* Pieces held by no connected peer and being sent to none. */
uint32_t seed_ledger_uncovered(const SeedLedger *l);
/* Connected peers holding or being sent index. */
uint32_t seed_ledger_holders(const SeedLedger *l, uint32_t index);
uint64_t seed_ledger_declined(const SeedLedger *l);
