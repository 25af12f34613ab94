/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Joining: ask every bootstrap node (configured, resolved, or saved from the last run) for the nodes
 * closest to our own id; as soon as one answers, look up our own id through the table, which fills
 * the buckets near us. The node is ready when that lookup ends; operations queued until then start.
 * Then, in the background, one lookup per bucket that is not full fills the far buckets. */

#include "dht-internal.h"
#include "log.h"

static void refresh_next(Dht *d, const DhtResult *r, void *userdata);

static bool table_empty(Dht *d) {
        for (unsigned i = 0; i < d->n_sock; i++)
                if (rt_count(&d->sock[i].rt, dht_now(d), NULL) > 0)
                        return false;
        return true;
}

static void initial_refresh(Dht *d, unsigned from_bucket) {
        /* Buckets are refreshed one after the other so that a joining node costs the network little. */
        for (unsigned i = 0; i < d->n_sock; i++) {
                RoutingTable *rt = &d->sock[i].rt;
                for (unsigned b = from_bucket; b + 1 < rt->n_buckets; b++) {
                        Op *op;
                        if (rt->buckets[b].n >= RT_K)
                                continue;
                        op = op_new(d, OP_FIND_NODE, refresh_next, (void *) (uintptr_t) (b + 1));
                        if (op)
                                rt_random_id_in_bucket(rt, b, op->target);
                        return;
                }
        }
}

static void refresh_next(Dht *d, const DhtResult *r, void *userdata) {
        if (r->error == -ECANCELED)
                return;
        initial_refresh(d, (unsigned) (uintptr_t) userdata);
}

static void on_self_lookup(Dht *d, const DhtResult *r, void *userdata) {
        if (r->error == -ECANCELED)
                return;
        d->bootstrapping = false;
        if (!d->ready) {
                size_t n = 0;
                for (unsigned i = 0; i < d->n_sock; i++)
                        n += rt_count(&d->sock[i].rt, dht_now(d), NULL);
                log_debug("DHT: bootstrapped with %zu nodes.", n);
                d->ready = true;
                dht_op_became_ready(d);
        }
        if (!d->t.no_initial_refresh && !table_empty(d))
                initial_refresh(d, 0);
}

static void boot_check(Dht *d) {
        Op *op;

        if (!d->bootstrapping || d->self_lookup_started)
                return;
        /* Wait for a first answer, or for every bootstrap node to fail. */
        if (table_empty(d) && (d->boot_pending > 0 || d->resolving > 0))
                return;
        op = op_new(d, OP_FIND_NODE, on_self_lookup, NULL);
        if (!op)
                return;
        op->internal = true;
        memcpy(op->target, d->id, DHT_ID_SIZE);
        d->self_lookup_started = true;
}

static void on_boot_reply(Dht *d, Pending *p, const KrpcMsg *reply, int error, void *userdata) {
        if (d->boot_pending > 0)
                d->boot_pending--;
        boot_check(d);
}

static void boot_send(Dht *d, const DhtAddr *a) {
        DhtSocket *s = dht_socket_for(d, a->family);
        KrpcMsg q = { .method = KRPC_FIND_NODE, .has_target = true };

        if (!s)
                return;
        memcpy(q.target, d->id, DHT_ID_SIZE);
        if (dht_send_query(d, s, a, NULL, &q, 2, on_boot_reply, NULL, NULL) >= 0)
                d->boot_pending++;
}

void dht_bootstrap_start(Dht *d) {
        d->bootstrapping = true;
        d->self_lookup_started = false;
        d->last_bootstrap = dht_now(d);
        for (size_t i = 0; i < d->n_boot_addrs; i++)
                boot_send(d, &d->boot_addrs[i]);
        boot_check(d);
}

/* Called by the resolver for every address it found, and with a == NULL when it is done. */
void dht_bootstrap_resolved(Dht *d, const DhtAddr *a) {
        if (a) {
                dht_add_boot_addr(d, a);
                if (d->bootstrapping)
                        boot_send(d, a);
                return;
        }
        if (d->resolving > 0)
                d->resolving--;
        boot_check(d);
}
