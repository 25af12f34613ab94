/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Shared by the src/torrent unit tests: a naive BEP 52 tree to check the library against (whole
 * levels in memory, straight from the definition), and deterministic test data. */

#include "merkle.h"
#include "tests.h"

/* Every level of the tree of data[0..size) with leaves padded to n_leaves (a power of two):
 * levels[l] has n_leaves >> l nodes. Returns the number of levels (height + 1). */
typedef struct NaiveTree {
        uint8_t *levels[MERKLE_LEVELS_MAX + 1];
        uint64_t counts[MERKLE_LEVELS_MAX + 1];
        unsigned n_levels;
} NaiveTree;

static inline void naive_tree_build(NaiveTree *t, const uint8_t *data, size_t size, uint64_t n_leaves) {
        memset(t, 0, sizeof(*t));
        t->counts[0] = n_leaves;
        t->levels[0] = calloc(n_leaves, SHA256_SIZE);
        for (size_t off = 0, i = 0; off < size; off += TORRENT_BLOCK_SIZE, i++)
                if (sha256(data + off, MIN((size_t) TORRENT_BLOCK_SIZE, size - off), t->levels[0] + i * SHA256_SIZE) < 0)
                        abort();
        t->n_levels = 1;
        while (t->counts[t->n_levels - 1] > 1) {
                unsigned l = t->n_levels;
                t->counts[l] = t->counts[l - 1] / 2;
                t->levels[l] = malloc(t->counts[l] * SHA256_SIZE);
                for (uint64_t i = 0; i < t->counts[l]; i++)
                        if (sha256_pair(t->levels[l - 1] + 2 * i * SHA256_SIZE, t->levels[l - 1] + (2 * i + 1) * SHA256_SIZE,
                                        t->levels[l] + i * SHA256_SIZE) < 0)
                                abort();
                t->n_levels++;
        }
}

static inline void naive_tree_free(NaiveTree *t) {
        for (unsigned i = 0; i < t->n_levels; i++)
                free(t->levels[i]);
}

static inline const uint8_t *naive_node(const NaiveTree *t, unsigned level, uint64_t index) {
        return t->levels[level] + index * SHA256_SIZE;
}

/* Deterministic bytes (xorshift), so that failures reproduce. */
static inline uint8_t *test_data(size_t size, uint64_t seed) {
        uint8_t *p = malloc(size ? size : 1);
        uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
        for (size_t i = 0; i < size; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                p[i] = (uint8_t) x;
        }
        return p;
}
