/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A content for the store and swarm tests: deterministic bytes, their manifest, and the bytes as a
 * file in a private directory under /tmp that fixture_done() removes with everything put in it. */

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "content.h"
#include "manifest.h"
#include "torrent-test.h"

#define KIB 1024U
#define MIB (1024U * KIB)

typedef struct Fixture {
        char dir[64];
        uint8_t *data;
        size_t size;
        Manifest *m;
        char file[128];
} Fixture;

/* prefix names the test in the directory's name, so that a leftover says whose it is. */
static inline void fixture_init_named(Fixture *f, const char *prefix, size_t size, uint64_t seed) {
        ContentHash ch;
        int fd;

        snprintf(f->dir, sizeof(f->dir), "/tmp/%s-XXXXXX", prefix);
        if (!mkdtemp(f->dir))
                abort();
        f->size = size;
        f->data = test_data(size, seed);
        if (content_hash_buffer(f->data, size, 0, &ch) < 0 || manifest_from_content(&ch, &f->m) < 0)
                abort();
        content_hash_done(&ch);
        snprintf(f->file, sizeof(f->file), "%s/source", f->dir);
        fd = open(f->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, f->data, size) != (ssize_t) size)
                abort();
        close(fd);
}

static inline void fixture_done(Fixture *f) {
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
        if (system(cmd) != 0)
                fprintf(stderr, "cannot remove %s\n", f->dir);
        manifest_free(f->m);
        free(f->data);
}
