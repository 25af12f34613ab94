/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The node's id and a snapshot of its routing table, in STATE_DIR/dht-state, so that a restarted
 * daemon keeps its place in the id space (the nodes that store for it stay the same) and rejoins
 * through the nodes it knew rather than only the configured bootstrap nodes. Text, one line each:
 *
 *     id <40 hex digits>
 *     node <40 hex digits> <IP:PORT or [IPv6]:PORT>
 *
 * Written to a temporary file, flushed and renamed over the old one, so a crash leaves the old or the
 * new file, never half of one. */

#include <fcntl.h>
#include <sys/stat.h>

#include "dht-internal.h"
#include "file-util.h"
#include "hex.h"
#include "log.h"

#define STATE_FILE "dht-state"
#define STATE_MAX_NODES 200

int dht_state_load(Dht *d) {
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t n = 0;

        if (asprintf(&path, "%s/" STATE_FILE, d->state_dir) < 0)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f) {
                if (errno != ENOENT)
                        log_warning_errno(errno, "DHT: cannot read %s: %m", path);
                return -errno;
        }
        while (getline(&line, &n, f) > 0) {
                char hex[64], addr[64];
                uint8_t id[DHT_ID_SIZE];
                DhtAddr a;

                if (sscanf(line, "id %63s", hex) == 1 && hex_decode(hex, id, DHT_ID_SIZE) >= 0)
                        memcpy(d->id, id, DHT_ID_SIZE);
                else if (sscanf(line, "node %63s %63s", hex, addr) == 2 && dht_addr_from_string(addr, &a) >= 0)
                        dht_add_boot_addr(d, &a);
        }
        return 0;
}

int dht_state_save(Dht *d) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        char hex[DHT_ID_HEX_MAX], addr[DHT_ADDR_STR_MAX];
        uint64_t now = dht_now(d);
        size_t written = 0, size = 0;
        int r;

        if (asprintf(&path, "%s/" STATE_FILE, d->state_dir) < 0)
                return -ENOMEM;
        f = open_memstream(&text, &size);
        if (!f)
                return -ENOMEM;
        fprintf(f, "id %s\n", hex_encode(d->id, DHT_ID_SIZE, hex));
        /* Good nodes first, as they are the likeliest to be there after a restart. */
        for (int pass = 0; pass < 2; pass++)
                for (unsigned i = 0; i < d->n_sock; i++) {
                        RoutingTable *rt = &d->sock[i].rt;
                        for (unsigned b = 0; b < rt->n_buckets; b++)
                                for (unsigned j = 0; j < rt->buckets[b].n && written < STATE_MAX_NODES; j++) {
                                        const RtNode *x = &rt->buckets[b].nodes[j];
                                        RtNodeState st = rt_node_state(x, now);
                                        if ((pass == 0) != (st == RT_GOOD) || st == RT_BAD)
                                                continue;
                                        fprintf(f, "node %s %s\n", hex_encode(x->id, DHT_ID_SIZE, hex),
                                                dht_addr_to_string(&x->addr, addr));
                                        written++;
                                }
                }
        if (fclose(TAKE_PTR(f)) != 0)
                return -ENOMEM;
        (void) mkdir(d->state_dir, 0700);
        r = write_file_atomic(path, text, size, 0600, WRITE_FILE_SYNC);
        if (r < 0)
                return log_warning_errno(r, "DHT: cannot save state to %s: %m", path);
        return 0;
}
