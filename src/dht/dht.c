/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The node's transport: UDP sockets on the event loop, datagram dispatch, outgoing transactions with
 * an adaptive timeout and retries, and periodic maintenance (token rotation, expiry, bucket refresh,
 * checking questionable nodes, republishing, saving state). */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include "config.h"
#include "daemon-util.h"
#include "dht-internal.h"
#include "log.h"
#include "random-util.h"
#include "socket-util.h"

#define MAINTENANCE_USEC (5 * USEC_PER_SEC)

static const DhtTuning tuning_default = {
        .query_rate = 50,
        .query_burst = 200,
        .min_timeout_usec = 5 * USEC_PER_MSEC,
        .max_timeout_usec = 2 * USEC_PER_SEC,
        .max_items = 4096,
        .max_infohashes = 4096,
        .alpha = 3,
        .maintenance_usec = MAINTENANCE_USEC,
};

#define INITIAL_TIMEOUT_USEC (1 * USEC_PER_SEC)
#define REBOOTSTRAP_USEC (60 * USEC_PER_SEC)
#define CHECK_INTERVAL_USEC (60 * USEC_PER_SEC)

uint64_t dht_now(Dht *d) {
        uint64_t t;
        if (sd_event_now(d->event, CLOCK_MONOTONIC, &t) < 0)
                return now_usec();
        return t;
}

DhtSocket *dht_socket_for(Dht *d, int family) {
        for (unsigned i = 0; i < d->n_sock; i++)
                if (d->sock[i].family == family)
                        return &d->sock[i];
        return NULL;
}

static uint64_t current_timeout(Dht *d) {
        uint64_t t;

        if (!d->have_rtt)
                t = INITIAL_TIMEOUT_USEC;
        else
                t = d->srtt + 4 * d->rttvar;
        return MIN(MAX(t, d->t.min_timeout_usec), d->t.max_timeout_usec);
}

static void rtt_sample(Dht *d, uint64_t rtt) {
        /* RFC 6298 estimator, shared by all destinations of this node. */
        if (!d->have_rtt) {
                d->srtt = rtt;
                d->rttvar = rtt / 2;
                d->have_rtt = true;
                return;
        }
        uint64_t diff = rtt > d->srtt ? rtt - d->srtt : d->srtt - rtt;
        d->rttvar = (3 * d->rttvar + diff) / 4;
        d->srtt = (7 * d->srtt + rtt) / 8;
}

static void pending_free(Pending *p) {
        if (!p)
                return;
        sd_event_source_disable_unref(p->timer);
        free(p);
}

void pending_forget(Pending *p) {
        p->cb = NULL;
        p->userdata = NULL;
}

static int send_packet(Dht *d, DhtSocket *s, const DhtAddr *to, const void *buf, size_t len) {
        struct sockaddr_storage ss;
        socklen_t sl;

        if (d->killed || s->fd < 0)
                return -ESHUTDOWN;
        sl = dht_addr_to_sockaddr(to, &ss);
        if (sendto(s->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *) &ss, sl) < 0) {
                d->stats.send_errors++;
                return -errno;
        }
        d->stats.tx_packets++;
        d->stats.tx_bytes += len;
        return 0;
}

static void pending_callback(Dht *d, Pending *p, const KrpcMsg *reply, int error) {
        PendingCallback cb = p->cb;
        void *ud = p->userdata;

        if (error != -ETIME)
                pending_forget(p);
        if (cb)
                cb(d, p, reply, error, ud);
}

static void pending_complete(Dht *d, Pending *p, const KrpcMsg *reply, int error) {
        hashmap_remove(d->pending, p->tid);
        pending_callback(d, p, reply, error);
        pending_free(p);
}

static void socket_drain(DhtSocket *s);

static int on_pending_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        Pending *p = userdata;
        Dht *d = p->dht;

        if (!p->expired && !d->killed) {
                /* A process that was not scheduled for a while finds its timers and the answers
                 * waiting together: read the answers first, so that "timed out" means unanswered. */
                uint8_t tid[DHT_TID_SIZE];
                memcpy(tid, p->tid, sizeof(tid));
                socket_drain(p->sock);
                if (hashmap_get(d->pending, tid) != p)
                        return 0; /* answered (and freed) meanwhile */
        }
        if (p->expired) {
                pending_complete(d, p, NULL, -ETIMEDOUT); /* nothing came late either */
                return 0;
        }
        if (p->tries_left > 0 && !d->killed) {
                p->tries_left--;
                p->retried = true;
                p->timeout = MIN(p->timeout * 2, d->t.max_timeout_usec * 2);
                (void) send_packet(d, p->sock, &p->to, p->buf, p->len);
                d->stats.queries_sent++;
                (void) sd_event_source_set_time_relative(es, p->timeout);
                (void) sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
                return 0;
        }

        d->stats.timeouts++;
        if (log_get_max_level() >= LOG_DEBUG) {
                char a[DHT_ADDR_STR_MAX];
                log_debug("DHT: %s to %s timed out.", krpc_method_to_string(p->method), dht_addr_to_string(&p->to, a));
        }
        if (p->has_id)
                rt_failed(&p->sock->rt, p->id, &p->to);
        /* The transaction stays open a while longer (at least a second): on a loaded host or a slow
         * path, answers come late rather than never. A late answer completes it as usual, teaches the
         * timeout estimator, and clears the node's failure in the routing table, so a busy moment
         * does not evict live nodes. Only lookups hear about the first timeout (QUERY_STALL), to ask
         * someone else meanwhile; for the rest, the verdict comes at the end. */
        p->expired = true;
        (void) sd_event_source_set_time_relative(es, MAX(p->timeout, USEC_PER_SEC));
        (void) sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        if (p->stall)
                pending_callback(d, p, NULL, -ETIME);
        return 0;
}

int dht_send_query(Dht *d, DhtSocket *s, const DhtAddr *to, const uint8_t *expected_id, KrpcMsg *q,
                   unsigned flags, PendingCallback cb, void *userdata, Pending **ret) {
        unsigned tries = flags & 0xffU;
        uint8_t buf[KRPC_PACKET_MAX];
        Pending *p;
        int len, r;

        if (d->killed)
                return -ESHUTDOWN;
        if (hashmap_size(d->pending) >= DHT_MAX_PENDING)
                return -EBUSY;

        p = calloc(1, sizeof(Pending));
        if (!p)
                return -ENOMEM;
        do
                random_bytes(p->tid, sizeof(p->tid));
        while (hashmap_get(d->pending, p->tid));

        q->kind = KRPC_QUERY;
        q->tid = (KrpcBytes) { .p = p->tid, .n = sizeof(p->tid) };
        q->has_id = true;
        memcpy(q->id, d->id, DHT_ID_SIZE);
        q->read_only = d->read_only;
        if (s->family == AF_INET6 && q->method != KRPC_PING && q->method != KRPC_ANNOUNCE_PEER && q->method != KRPC_PUT)
                q->want_n6 = true;
        len = krpc_encode(q, buf, sizeof(buf));
        if (len < 0) {
                free(p);
                return len;
        }
        Pending *np = realloc(p, sizeof(Pending) + (size_t) len);
        if (!np) {
                free(p);
                return -ENOMEM;
        }
        p = np;
        memcpy(p->buf, buf, (size_t) len);
        p->len = (size_t) len;
        p->dht = d;
        p->sock = s;
        p->to = *to;
        p->method = q->method;
        if (expected_id) {
                p->has_id = true;
                memcpy(p->id, expected_id, DHT_ID_SIZE);
        }
        p->tries_left = tries > 0 ? tries - 1 : 0;
        p->stall = flags & QUERY_STALL;
        p->timeout = current_timeout(d);
        p->cb = cb;
        p->userdata = userdata;

        r = sd_event_add_time_relative(d->event, &p->timer, CLOCK_MONOTONIC, p->timeout, USEC_PER_MSEC,
                                       on_pending_timeout, p);
        if (r < 0) {
                free(p);
                return r;
        }
        r = hashmap_put(d->pending, p->tid, p);
        if (r < 0) {
                pending_free(p);
                return r;
        }
        p->sent_at = now_usec();
        (void) send_packet(d, s, to, p->buf, p->len); /* a failed send is retried or times out */
        d->stats.queries_sent++;
        if (ret)
                *ret = p;
        return 0;
}

int dht_send_reply(Dht *d, DhtSocket *s, const DhtAddr *to, const KrpcMsg *m) {
        uint8_t buf[DHT_RESPONSE_MAX];
        int len;

        len = krpc_encode(m, buf, sizeof(buf));
        if (len < 0) {
                log_debug_errno(len, "DHT: cannot encode a reply: %m");
                return len;
        }
        len = send_packet(d, s, to, buf, (size_t) len);
        if (len < 0)
                log_debug_errno(len, "DHT: cannot send a reply: %m");
        return len;
}

static void on_table_ping(Dht *d, Pending *p, const KrpcMsg *reply, int error, void *userdata) {
        if (d->table_pings > 0)
                d->table_pings--;
        if (!reply && p->has_id) {
                /* The node failed a check ping (after one retry): replace it if anyone waits. */
                RtNode *n = rt_find(&p->sock->rt, p->id);
                if (n && dht_addr_eq(&n->addr, &p->to)) {
                        n->fails = RT_BAD_FAILS - 1;
                        rt_failed(&p->sock->rt, p->id, &p->to);
                }
        }
}

void dht_ping_node(Dht *d, DhtSocket *s, const uint8_t *id, const DhtAddr *addr) {
        KrpcMsg q = { .method = KRPC_PING };

        if (d->table_pings >= DHT_MAX_TABLE_PINGS)
                return;
        if (dht_send_query(d, s, addr, id, &q, id ? 2 : 1, on_table_ping, NULL, NULL) >= 0)
                d->table_pings++;
}

static void handle_reply(Dht *d, DhtSocket *s, const KrpcMsg *m, const DhtAddr *from) {
        Pending *p = NULL;
        uint64_t rtt;

        if (m->tid.n == DHT_TID_SIZE)
                p = hashmap_get(d->pending, m->tid.p);
        if (!p || p->sock != s || !dht_addr_eq(&p->to, from)) {
                d->stats.dropped_unexpected++;
                if (log_get_max_level() >= LOG_DEBUG) {
                        char a[DHT_ADDR_STR_MAX];
                        log_debug("DHT: unexpected reply from %s.", dht_addr_to_string(from, a));
                }
                return;
        }
        if (m->kind == KRPC_ERROR && log_get_max_level() >= LOG_DEBUG) {
                char a[DHT_ADDR_STR_MAX];
                log_debug("DHT: %s to %s: error %" PRIi64 " %.*s", krpc_method_to_string(p->method),
                          dht_addr_to_string(from, a), m->error_code, (int) MIN(m->error_msg.n, 100), m->error_msg.p);
        }
        d->stats.responses_received++;
        if (p->expired)
                d->stats.late_replies++;
        rtt = now_usec() - p->sent_at;
        if (!p->retried)
                rtt_sample(d, rtt); /* Karn: a retried query's answer could be to either try */

        if (m->kind == KRPC_RESPONSE) {
                if (!m->read_only) {
                        RtNode ping;
                        bool has_ping;
                        if (rt_heard_from(&s->rt, m->id, from, dht_now(d), (uint32_t) MIN(rtt, UINT32_MAX), &ping, &has_ping) == RT_CACHED &&
                            has_ping)
                                dht_ping_node(d, s, ping.id, &ping.addr);
                }
                pending_complete(d, p, m, 0);
        } else
                pending_complete(d, p, m, -EREMOTEIO);
}

static void handle_packet(Dht *d, DhtSocket *s, const uint8_t *buf, size_t len, const DhtAddr *from) {
        KrpcMsg m;
        int r;

        if (from->port == 0) {
                d->stats.dropped_malformed++;
                return;
        }
        r = krpc_decode(buf, len, &m);
        if (r == -EPROTO) {
                d->stats.dropped_malformed++;
                if (!d->read_only && ratelimit_allow(d->rl, from, dht_now(d)))
                        dht_reply_error(d, s, from, m.tid, KRPC_ERR_PROTOCOL, "invalid arguments");
                return;
        }
        if (r < 0) {
                d->stats.dropped_malformed++;
                if (log_get_max_level() >= LOG_DEBUG) {
                        char a[DHT_ADDR_STR_MAX];
                        log_debug("DHT: malformed packet (%zu bytes) from %s dropped: %s", len, dht_addr_to_string(from, a), strerror(-r));
                }
                return;
        }

        if (m.kind != KRPC_QUERY) {
                handle_reply(d, s, &m, from);
                return;
        }

        d->stats.queries_received++;
        if (d->read_only)
                return;
        if (log_get_max_level() >= LOG_DEBUG) {
                char a[DHT_ADDR_STR_MAX];
                log_debug("DHT: %s from %s", krpc_method_to_string(m.method), dht_addr_to_string(from, a));
        }
        if (!ratelimit_allow(d->rl, from, dht_now(d))) {
                d->stats.dropped_ratelimited++;
                if (log_get_max_level() >= LOG_DEBUG) {
                        char a[DHT_ADDR_STR_MAX];
                        log_debug("DHT: %s from %s dropped: rate limit.", krpc_method_to_string(m.method), dht_addr_to_string(from, a));
                }
                return;
        }
        if (!m.read_only && rt_heard_query(&s->rt, m.id, from, dht_now(d)))
                dht_ping_node(d, s, NULL, from);
        dht_handle_query(d, s, &m, from);
}

static void socket_read(DhtSocket *s, unsigned max) {
        Dht *d = s->dht;
        int fd = s->fd;

        if (fd < 0)
                return;
        for (unsigned i = 0; i < max && !d->killed; i++) {
                uint8_t buf[KRPC_PACKET_MAX];
                struct sockaddr_storage ss;
                socklen_t sl = sizeof(ss);
                DhtAddr from;
                ssize_t n;

                n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *) &ss, &sl);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        /* ICMP errors surface here on some kernels; nothing to do but go on. */
                        continue;
                }
                d->stats.rx_packets++;
                d->stats.rx_bytes += (uint64_t) n;
                if ((size_t) n > sizeof(buf)) {
                        d->stats.dropped_oversize++;
                        continue;
                }
                if (dht_addr_from_sockaddr((struct sockaddr *) &ss, sl, &from) < 0 || from.family != s->family) {
                        d->stats.dropped_malformed++;
                        continue;
                }
                handle_packet(d, s, buf, (size_t) n, &from);
        }
}

static void socket_drain(DhtSocket *s) {
        socket_read(s, 256);
}

void dht_inject_packet(Dht *d, const void *buf, size_t len, const DhtAddr *from) {
        DhtSocket *s = dht_socket_for(d, from->family);
        if (s && len <= KRPC_PACKET_MAX)
                handle_packet(d, s, buf, len, from);
}

static int on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        /* Bounded per wakeup so that one busy socket cannot starve the rest of the loop. */
        socket_read(userdata, 64);
        return 0;
}

static int socket_adopt(Dht *d, DhtSocket *s, int fd);
static void socket_close(DhtSocket *s);

static int socket_open(Dht *d, DhtSocket *s, int family, const char *address, uint16_t port) {
        union sockaddr_union sa = {};
        socklen_t sl;
        int fd, one = 1, r;

        if (family == AF_INET) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons(port);
                if (address && inet_pton(AF_INET, address, &sa.in.sin_addr) != 1)
                        return -EINVAL;
                sl = sizeof(sa.in);
        } else {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons(port);
                if (address && inet_pton(AF_INET6, address, &sa.in6.sin6_addr) != 1)
                        return -EINVAL;
                sl = sizeof(sa.in6);
        }

        fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (family == AF_INET6)
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, &sa.sa, sl) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        return socket_adopt(d, s, fd);
}

/* Takes over fd, a bound UDP socket of ours or one systemd passed (closed on failure). */
static int socket_adopt(Dht *d, DhtSocket *s, int fd) {
        union sockaddr_union sa = {};
        socklen_t sl = sizeof(sa.storage);
        int bufsize = 1 << 20, family, r;

        (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
        if (getsockname(fd, &sa.sa, &sl) < 0 || dht_addr_from_sockaddr(&sa.sa, sl, &s->bound) < 0) {
                r = -errno;
                close(fd);
                return r ?: -EAFNOSUPPORT;
        }
        family = sa.sa.sa_family;
        if (family == AF_INET6) {
                int v6only = 0;
                socklen_t ol = sizeof(v6only);
                /* A dual-stack socket would file IPv4 nodes (v4-mapped) in the IPv6 table. */
                if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &ol) < 0 || !v6only) {
                        close(fd);
                        return -EPROTONOSUPPORT;
                }
        }
        s->dht = d;
        s->family = family;
        s->fd = fd;
        r = sd_event_add_io(d->event, &s->io, fd, EPOLLIN, on_io, s);
        if (r < 0) {
                close(fd);
                s->fd = -1;
                return r;
        }
        /* Answers before timeouts when both are pending in one loop iteration. */
        (void) sd_event_source_set_priority(s->io, SD_EVENT_PRIORITY_IMPORTANT);
        r = rt_init(&s->rt, d->id, dht_now(d));
        if (r < 0) {
                socket_close(s);
                return r;
        }
        return 0;
}

static void socket_close(DhtSocket *s) {
        s->io = sd_event_source_disable_unref(s->io);
        if (s->fd >= 0)
                close(s->fd);
        s->fd = -1;
}

static void refresh_done(Dht *d, const DhtResult *r, void *userdata) {
}

static int on_maintenance(sd_event_source *es, uint64_t usec, void *userdata) {
        Dht *d = userdata;
        uint64_t now = dht_now(d);

        if (d->killed)
                return 0;

        token_rotate_if_due(&d->tokens, now);
        if (now >= d->last_expire + 60 * USEC_PER_SEC) {
                peer_store_expire(&d->peers, now);
                item_store_expire(&d->items, now);
                d->last_expire = now;
        }

        for (unsigned i = 0; i < d->n_sock; i++) {
                DhtSocket *s = &d->sock[i];
                RtNode n;
                int b;

                if (rt_take_node_to_ping(&s->rt, now, CHECK_INTERVAL_USEC, &n))
                        dht_ping_node(d, s, n.id, &n.addr);
                if (d->ready) {
                        b = rt_take_stale_bucket(&s->rt, now, BUCKET_REFRESH_USEC);
                        if (b >= 0) {
                                Op *op = op_new(d, OP_FIND_NODE, refresh_done, NULL);
                                if (op)
                                        rt_random_id_in_bucket(&s->rt, (unsigned) b, op->target);
                        }
                }
        }

        /* Lost every node (the network or we were away): start over from the bootstrap nodes. */
        if (d->ready && !d->bootstrapping && d->n_boot_addrs > 0 && now >= d->last_bootstrap + REBOOTSTRAP_USEC) {
                size_t good = 0;
                for (unsigned i = 0; i < d->n_sock; i++) {
                        size_t g;
                        rt_count(&d->sock[i].rt, now, &g);
                        good += g;
                }
                if (good == 0)
                        dht_bootstrap_start(d);
        }

        dht_republish_due(d, now);

        if (d->state_dir && now >= d->last_save + SAVE_INTERVAL_USEC) {
                (void) dht_state_save(d);
                d->last_save = now;
        }

        /* A little jitter keeps thousands of nodes in one process from waking up together. */
        (void) sd_event_source_set_time_relative(es, d->t.maintenance_usec * 4 / 5 + (uint64_t) random() % (d->t.maintenance_usec * 2 / 5 + 1));
        (void) sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        return 0;
}

int dht_new(sd_event *e, const DhtConfig *c, Dht **ret) {
        Dht *d;
        int r, family = c->family;
        size_t adopted = 0;

        d = calloc(1, sizeof(Dht));
        if (!d) {
                for (size_t i = 0; i < c->n_fds; i++)
                        close(c->fds[i]);
                return -ENOMEM;
        }
        d->event = sd_event_ref(e);
        d->sock[0].fd = d->sock[1].fd = d->resolve_fd = d->resolve_template_fd = -1;
        d->t = c->tuning ? *c->tuning : tuning_default;
#define DEF(f) if (!d->t.f) d->t.f = tuning_default.f
        DEF(query_rate);
        DEF(query_burst);
        DEF(min_timeout_usec);
        DEF(max_timeout_usec);
        DEF(max_items);
        DEF(max_infohashes);
        DEF(alpha);
        DEF(maintenance_usec);
#undef DEF
        d->t.alpha = MIN(d->t.alpha, 16U);
        d->read_only = c->read_only;

        r = -ENOMEM;
        d->pending = hashmap_new(DHT_TID_SIZE);
        d->rl = malloc(sizeof(RateLimit));
        if (!d->pending || !d->rl)
                goto fail;
        ratelimit_init(d->rl, d->t.query_rate, d->t.query_burst);
        token_init(&d->tokens, dht_now(d));
        StorageLimits lim = storage_limits_default;
        lim.max_items = d->t.max_items;
        lim.max_infohashes = d->t.max_infohashes;
        r = peer_store_init(&d->peers, &lim);
        if (r < 0)
                goto fail;
        r = item_store_init(&d->items, &lim);
        if (r < 0)
                goto fail;
        if (c->state_dir) {
                d->state_dir = strdup(c->state_dir);
                if (!d->state_dir) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        for (char *const *b = c->bootstrap; b && *b; b++) {
                r = strv_extend(&d->bootstrap, *b);
                if (r < 0)
                        goto fail;
        }

        /* The id (and the saved nodes, added to boot_addrs) come from the state file if there is one;
         * an id in the configuration overrides its id. */
        random_bytes(d->id, DHT_ID_SIZE);
        if (d->state_dir)
                (void) dht_state_load(d);
        if (c->id)
                memcpy(d->id, c->id, DHT_ID_SIZE);

        if (c->bind_address) {
                struct in6_addr tmp;
                family = inet_pton(AF_INET6, c->bind_address, &tmp) == 1 ? AF_INET6 : AF_INET;
        }
        if (c->n_fds > 0) {
                /* The passed sockets instead of binding: one per family (no IPv6 one is fine). */
                for (; adopted < c->n_fds; adopted++) {
                        DhtSocket *s;

                        if (d->n_sock >= ELEMENTSOF(d->sock)) {
                                r = -E2BIG;
                                goto fail;
                        }
                        s = &d->sock[d->n_sock];
                        r = socket_adopt(d, s, c->fds[adopted]);
                        if (r < 0) {
                                s->fd = -1;
                                adopted++;      /* closed by socket_adopt() */
                                log_error_errno(r, "DHT: cannot use the UDP socket passed as fd %d: %m", c->fds[adopted - 1]);
                                goto fail;
                        }
                        d->n_sock++;
                        if (d->n_sock == 2 && d->sock[0].family == d->sock[1].family) {
                                adopted++;
                                r = -EEXIST;
                                log_error("DHT: two UDP sockets of one address family were passed.");
                                goto fail;
                        }
                }
        } else if (family == AF_UNSPEC || family == AF_INET) {
                r = socket_open(d, &d->sock[d->n_sock], AF_INET, c->bind_address, c->port);
                if (r < 0) {
                        log_error_errno(r, "DHT: cannot bind UDP port %u: %m", c->port);
                        goto fail;
                }
                d->n_sock++;
        }
        if (c->n_fds == 0 && (family == AF_UNSPEC || family == AF_INET6)) {
                /* Same port number as IPv4 when possible; no IPv6 on the host is fine with AF_UNSPEC. */
                uint16_t port = d->n_sock > 0 ? d->sock[0].bound.port : c->port;
                r = socket_open(d, &d->sock[d->n_sock], AF_INET6, family == AF_INET6 ? c->bind_address : NULL, port);
                if (r < 0 && family == AF_UNSPEC && c->port == 0)
                        r = socket_open(d, &d->sock[d->n_sock], AF_INET6, NULL, 0);
                if (r < 0) {
                        if (family == AF_INET6) {
                                log_error_errno(r, "DHT: cannot bind IPv6 UDP port %u: %m", c->port);
                                goto fail;
                        }
                        log_debug_errno(r, "DHT: no IPv6 socket: %m");
                        d->sock[d->n_sock].fd = -1;
                } else
                        d->n_sock++;
        }

        r = sd_event_add_time_relative(e, &d->maintenance, CLOCK_MONOTONIC, d->t.maintenance_usec, d->t.maintenance_usec / 20,
                                       on_maintenance, d);
        if (r < 0)
                goto fail;
        d->last_save = d->last_expire = dht_now(d);

        for (char **b = d->bootstrap; b && *b; b++) {
                _cleanup_free_ char *host = NULL;
                uint16_t port;
                DhtAddr a;

                if (dht_addr_from_string(*b, &a) >= 0) {
                        dht_add_boot_addr(d, &a);
                        continue;
                }
                r = dht_split_host_port(*b, &host, &port);
                if (r < 0) {
                        log_error("DHT: invalid bootstrap node \"%s\" (expected HOST:PORT).", *b);
                        goto fail;
                }
                r = dht_resolve_start(d, host, port);
                if (r < 0)
                        log_warning_errno(r, "DHT: cannot resolve \"%s\": %m", *b);
        }
        dht_bootstrap_start(d);

        *ret = d;
        return 0;
fail:
        /* The passed sockets not taken over yet are ours to close, too. */
        for (; adopted < c->n_fds; adopted++)
                close(c->fds[adopted]);
        dht_free(d);
        return r;
}

Dht *dht_free(Dht *d) {
        HashmapIter it = HASHMAP_ITER_INIT;
        void *v;

        if (!d)
                return NULL;
        if (d->state_dir && !d->killed)
                (void) dht_state_save(d);
        op_cancel_all(d);
        dht_resolve_stop(d);
        if (d->pending) {
                while (hashmap_iterate(d->pending, &it, &v, NULL))
                        pending_free(v);
                hashmap_free(d->pending);
        }
        for (unsigned i = 0; i < d->n_sock; i++) {
                socket_close(&d->sock[i]);
                rt_done(&d->sock[i].rt);
        }
        sd_event_source_disable_unref(d->maintenance);
        published_free_all(d);
        peer_store_done(&d->peers);
        item_store_done(&d->items);
        free(d->rl);
        free(d->boot_addrs);
        free(d->state_dir);
        strv_free(d->bootstrap);
        sd_event_unref(d->event);
        free(d);
        return NULL;
}

void dht_kill(Dht *d) {
        d->killed = true;
        for (unsigned i = 0; i < d->n_sock; i++)
                socket_close(&d->sock[i]);
        d->maintenance = sd_event_source_disable_unref(d->maintenance);
}

const uint8_t *dht_id(Dht *d) {
        return d->id;
}

uint16_t dht_port(Dht *d) {
        return d->n_sock > 0 ? d->sock[0].bound.port : 0;
}

size_t dht_nodes(Dht *d, DhtNodeInfo *ret, size_t max) {
        static const char *const states[] = { "good", "questionable", "bad" };
        uint64_t now = dht_now(d);
        size_t n = 0;

        for (unsigned i = 0; i < d->n_sock; i++) {
                RoutingTable *rt = &d->sock[i].rt;
                for (unsigned b = 0; b < rt->n_buckets; b++)
                        for (unsigned j = 0; j < rt->buckets[b].n; j++) {
                                const RtNode *x = &rt->buckets[b].nodes[j];
                                if (n >= max)
                                        return n;
                                memcpy(ret[n].id, x->id, DHT_ID_SIZE);
                                ret[n].addr = x->addr;
                                ret[n].state = states[rt_node_state(x, now)];
                                ret[n].rtt_usec = x->rtt_usec;
                                n++;
                        }
        }
        return n;
}

void dht_get_stats(Dht *d, DhtStats *ret) {
        uint64_t now = dht_now(d);

        *ret = d->stats;
        ret->nodes = ret->good_nodes = 0;
        for (unsigned i = 0; i < d->n_sock; i++) {
                size_t g;
                ret->nodes += rt_count(&d->sock[i].rt, now, &g);
                ret->good_nodes += g;
        }
        ret->peers_stored = d->peers.n_peers;
        ret->items_stored = hashmap_size(d->items.map);
        ret->pending = hashmap_size(d->pending);
}

void dht_add_boot_addr(Dht *d, const DhtAddr *a) {
        DhtAddr *n;

        for (size_t i = 0; i < d->n_boot_addrs; i++)
                if (dht_addr_eq(&d->boot_addrs[i], a))
                        return;
        if (d->n_boot_addrs >= 256)
                return;
        n = realloc(d->boot_addrs, (d->n_boot_addrs + 1) * sizeof(DhtAddr));
        if (!n)
                return;
        d->boot_addrs = n;
        d->boot_addrs[d->n_boot_addrs++] = *a;
}
