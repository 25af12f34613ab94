/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* PieceVerifier: verifies downloaded pieces against the piece layer and writes them to a
 * ContentStore on worker threads, and syncs the store's data there too, so that the loop thread
 * that receives the blocks never hashes, writes or waits for the disk. Results come back on the loop
 * (an eventfd on its sd-event), where the store marks the piece present (content_store_piece_written())
 * and the caller is told.
 *
 * SHA-256 of every piece is most of a fetcher's CPU (~0.8 s per GiB on one core) and the syncs
 * stall whoever calls them: on the loop they held back the receiving of every connection.
 *
 * The piece's bytes belong to the caller and must stay put until its callback (the picker keeps an
 * active piece until piece_picker_piece_done()). Jobs run in the order submitted on n_threads
 * threads; one sync at a time (a snapshot of the present pieces, fdatasync, then the state file
 * written on the loop: content_store_durable_begin()/_commit()), so that a crash loses only pieces
 * not yet named durable, as before. piece_verifier_free() waits for the jobs running (a sync may take
 * a while) and drops the others; no callback runs after it. */

#include <systemd/sd-event.h>

#include "content-store.h"

#define PIECE_VERIFIER_THREADS_DEFAULT 2U

typedef struct PieceVerifier PieceVerifier;

typedef struct PieceVerifierCallbacks {
        /* 0: the piece is written and present in the store; -EBADMSG: it does not hash to the piece
         * layer (nothing written); other errors of the disk. */
        void (*piece)(PieceVerifier *v, uint32_t index, int result, void *userdata);
        /* 0: the pieces present when the sync started are durable; or the error. */
        void (*synced)(PieceVerifier *v, int result, void *userdata);
} PieceVerifierCallbacks;

/* n_threads 0: PIECE_VERIFIER_THREADS_DEFAULT. The callbacks must not free the verifier. */
int piece_verifier_new(sd_event *e, ContentStore *store, unsigned n_threads, const PieceVerifierCallbacks *cb,
                       void *userdata, PieceVerifier **ret);
PieceVerifier *piece_verifier_free(PieceVerifier *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(PieceVerifier *, piece_verifier_free);

int piece_verifier_submit(PieceVerifier *v, uint32_t index, const void *data, size_t size);
/* Starts a sync; -EBUSY while one runs. */
int piece_verifier_sync(PieceVerifier *v);
bool piece_verifier_syncing(const PieceVerifier *v);
/* Pieces submitted and not yet reported. */
unsigned piece_verifier_pending(const PieceVerifier *v);
