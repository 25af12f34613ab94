/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* PieceVerifier: pieces verified and written on worker threads, reported on the loop and present in
 * the store from then on; a bad piece reported -EBADMSG and not written; a sync making the written
 * pieces durable (a store reopened in the same directory resumes exactly those); freeing with jobs
 * queued drops them without a callback. */

#include <sys/stat.h>

#include "content-store.h"
#include "daemon-util.h"
#include "piece-verifier.h"
#include "torrent-test.h"

#define KIB 1024U
#define N_PIECES 64U

typedef struct Results {
        unsigned reported, synced;
        int result[N_PIECES];
        int sync_result;
} Results;

static void on_piece(PieceVerifier *v, uint32_t index, int result, void *userdata) {
        Results *r = userdata;
        ASSERT_TRUE(index < N_PIECES);
        r->result[index] = result;
        r->reported++;
}

static void on_synced(PieceVerifier *v, int result, void *userdata) {
        Results *r = userdata;
        r->sync_result = result;
        r->synced++;
}

static const PieceVerifierCallbacks callbacks = { .piece = on_piece, .synced = on_synced };

static void run_until(sd_event *e, const unsigned *counter, unsigned want) {
        uint64_t end = now_usec() + 60 * USEC_PER_SEC;
        while (*counter < want && now_usec() < end)
                ASSERT_TRUE(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
        ASSERT_UINT_EQ(*counter, want);
}

static void test_verify_write_sync(void) {
        char dir[] = "/tmp/test-piece-verifier-XXXXXX", cmd[64];
        size_t size = N_PIECES * 16 * KIB - 1000;     /* the last piece short */
        uint8_t *data = test_data(size, 7), *bad;
        sd_event *e = NULL;
        ContentStore *store = NULL, *again = NULL;
        PieceVerifier *v = NULL;
        Manifest *m = NULL;
        ContentHash ch;
        Results res = {};
        uint32_t plen;

        ASSERT_TRUE(mkdtemp(dir) != NULL);
        ASSERT_INT_EQ(content_hash_buffer(data, size, 0, &ch), 0);
        ASSERT_INT_EQ(manifest_from_content(&ch, &m), 0);
        content_hash_done(&ch);
        plen = m->geometry.piece_length;
        ASSERT_UINT_EQ(m->geometry.n_pieces, N_PIECES);
        ASSERT_INT_EQ(sd_event_new(&e), 0);
        ASSERT_INT_EQ(content_store_open_dir(dir, m, &store), 0);
        ASSERT_INT_EQ(piece_verifier_new(e, store, 3, &callbacks, &res, &v), 0);

        /* Every piece but 5, and piece 9 corrupted. */
        bad = malloc(plen);
        memcpy(bad, data + 9 * plen, plen);
        bad[100] ^= 1;
        for (uint32_t i = 0; i < N_PIECES; i++)
                if (i != 5)
                        ASSERT_INT_EQ(piece_verifier_submit(v, i, i == 9 ? bad : data + (size_t) i * plen,
                                                            torrent_piece_size(&m->geometry, i)), 0);
        ASSERT_UINT_EQ(piece_verifier_pending(v), N_PIECES - 1);
        run_until(e, &res.reported, N_PIECES - 1);
        ASSERT_UINT_EQ(piece_verifier_pending(v), 0);
        for (uint32_t i = 0; i < N_PIECES; i++) {
                if (i == 5)
                        continue;
                ASSERT_INT_EQ(res.result[i], i == 9 ? -EBADMSG : 0);
                ASSERT_TRUE(content_store_has_piece(store, i) == (i != 9));
        }
        ASSERT_UINT_EQ(content_store_n_have(store), N_PIECES - 2);
        ASSERT_UINT_EQ(content_store_n_durable(store), 0);

        /* A sync: one at a time, then what was present is durable. */
        ASSERT_INT_EQ(piece_verifier_sync(v), 0);
        ASSERT_TRUE(piece_verifier_syncing(v));
        ASSERT_INT_EQ(piece_verifier_sync(v), -EBUSY);
        ASSERT_UINT_EQ(content_store_unflushed(store), 0);
        run_until(e, &res.synced, 1);
        ASSERT_INT_EQ(res.sync_result, 0);
        ASSERT_TRUE(!piece_verifier_syncing(v));
        ASSERT_UINT_EQ(content_store_n_durable(store), N_PIECES - 2);

        /* Piece 9 again, good this time: present, not durable (no sync since). */
        ASSERT_INT_EQ(piece_verifier_submit(v, 9, data + 9 * plen, plen), 0);
        run_until(e, &res.reported, N_PIECES);
        ASSERT_INT_EQ(res.result[9], 0);
        ASSERT_UINT_EQ(content_store_n_have(store), N_PIECES - 1);
        ASSERT_UINT_EQ(content_store_n_durable(store), N_PIECES - 2);

        /* Reopened (as after a crash): exactly the durable pieces. */
        ASSERT_INT_EQ(content_store_open_dir(dir, m, &again), 0);
        ASSERT_UINT_EQ(content_store_n_have(again), N_PIECES - 2);
        ASSERT_TRUE(!content_store_has_piece(again, 9) && !content_store_has_piece(again, 5));
        again = content_store_unref(again);

        /* Jobs queued when freed: dropped, no callback, nothing leaks. */
        for (unsigned k = 0; k < 20; k++)
                ASSERT_INT_EQ(piece_verifier_submit(v, 5, data + 5 * plen, plen), 0);
        ASSERT_INT_EQ(piece_verifier_sync(v), 0);
        v = piece_verifier_free(v);
        ASSERT_UINT_EQ(res.reported, N_PIECES);

        content_store_unref(store);
        sd_event_unref(e);
        manifest_free(m);
        free(bad);
        free(data);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        ASSERT_INT_EQ(system(cmd), 0);
}

int main(void) {
        RUN_TEST(test_verify_write_sync);
        return TESTS_DONE();
}
