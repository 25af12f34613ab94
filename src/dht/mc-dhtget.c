/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-dhtget: look into the DHT. Joins through --bootstrap nodes as a read-only node (BEP 43), runs one
 * command and prints the answer, as text or with --json as one JSON document. Exit status: 0 found,
 * 1 usage or local error, 2 nothing found (or no node answered) in time. */

#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <time.h>

#include "bencode.h"
#include "cluster-key.h"
#include "config.h"
#include "daemon-util.h"
#include "dht.h"
#include "hex.h"
#include "json-util.h"
#include "log.h"
#include "task-record.h"
#include "utf8.h"

#define EXIT_NOT_FOUND 2

typedef struct DhtgetConfig {
        char **bootstrap;
        bool json;
        int64_t timeout_sec;
        int64_t port;
        char *bind;
        bool ipv4, ipv6;
        char *salt;
        char *cluster_key;
        char *key_file;
        int64_t seq;
        char *state_dir;
} DhtgetConfig;

static const ConfigOption dhtget_options[] = {
        { "BOOTSTRAP", NULL, CONFIG_STRV, offsetof(DhtgetConfig, bootstrap), 0, 0, NULL,
          "HOST:PORT of a node to join through (repeatable)", 'b' },
        { "JSON", NULL, CONFIG_BOOL, offsetof(DhtgetConfig, json), 0, 0, "no", "Print JSON", 'j' },
        { "TIMEOUT", NULL, CONFIG_INT, offsetof(DhtgetConfig, timeout_sec), 1, 3600, "15",
          "Give up after this many seconds", 't' },
        { "PORT", NULL, CONFIG_INT, offsetof(DhtgetConfig, port), 0, 65535, "0", "Local UDP port (0: any)", 'p' },
        { "BIND", NULL, CONFIG_STRING, offsetof(DhtgetConfig, bind), 0, 0, NULL, "Local address" },
        { "IPV4", NULL, CONFIG_BOOL, offsetof(DhtgetConfig, ipv4), 0, 0, "no", "IPv4 only", '4' },
        { "IPV6", NULL, CONFIG_BOOL, offsetof(DhtgetConfig, ipv6), 0, 0, "no", "IPv6 only", '6' },
        { "SALT", NULL, CONFIG_STRING, offsetof(DhtgetConfig, salt), 0, 0, NULL, "Salt of a mutable item", 's' },
        { "CLUSTER_KEY", NULL, CONFIG_STRING, offsetof(DhtgetConfig, cluster_key), 0, 0, NULL,
          "Public cluster key (hex or base64), for task", 'k' },
        { "KEY", NULL, CONFIG_STRING, offsetof(DhtgetConfig, key_file), 0, 0, NULL,
          "Private key file (PEM) for put-mutable" },
        { "SEQ", NULL, CONFIG_INT, offsetof(DhtgetConfig, seq), -1, INT64_MAX, "-1",
          "Sequence number for put-mutable (-1: the time in microseconds)" },
        { "STATE_DIR", NULL, CONFIG_STRING, offsetof(DhtgetConfig, state_dir), 0, 0, NULL,
          "State directory for serve" },
};

static const ConfigSpec dhtget_config_spec = {
        .program = "mc-dhtget",
        .usage = "[OPTIONS...] COMMAND [ARGS...]",
        .summary = "Look up and store things in the mc DHT (BitTorrent Mainline DHT, BEP 5 and BEP 44).\n\n"
                   "Commands:\n"
                   "  ping HOST:PORT              Ping one node, print its id\n"
                   "  nodes                       Print the routing table after bootstrapping\n"
                   "  peers INFO-HASH             Print the peers announced under an info-hash (40 hex)\n"
                   "  announce INFO-HASH PORT     Announce PORT (0: the port we send from) under INFO-HASH\n"
                   "  get TARGET                  Print the immutable item stored under TARGET (40 hex)\n"
                   "  get-mutable PUBKEY          Print the mutable item of PUBKEY (and --salt)\n"
                   "  put VALUE                   Store VALUE (as a bencoded string), print its target\n"
                   "  put-mutable VALUE           Store VALUE signed with --key (and --salt, --seq)\n"
                   "  genkey FILE                 Write a new ed25519 key to FILE, print its public half\n"
                   "  task ID                     Print the verified state record of task ID (needs --cluster-key)\n"
                   "  serve                       Run a DHT node until stopped (prints its port)",
        .options = dhtget_options,
        .n_options = ELEMENTSOF(dhtget_options),
};

static DhtgetConfig arg = {};

typedef struct Ctx {
        sd_event *event;
        Dht *dht;
        int exit_status;
        char **words;           /* the command and its arguments */
        const char *command;
        char **args;
        uint8_t target[DHT_ID_SIZE];
        uint8_t pub[BEP44_KEY_SIZE];
        EVP_PKEY *key;
} Ctx;

static void finish(Ctx *c, int status) {
        c->exit_status = status;
        sd_event_exit(c->event, 0);
}

static int not_found(Ctx *c, int error, const char *what) {
        const char *why;

        if (error == -EHOSTUNREACH)
                why = "no DHT node answered (check --bootstrap)";
        else if (error == -ETIMEDOUT)
                why = "no answer in time";
        else if (error == -ENOENT)
                why = "not found";
        else
                why = strerror(-error);
        fprintf(stderr, "mc-dhtget: %s: %s.\n", what, why);
        finish(c, EXIT_NOT_FOUND);
        return 0;
}

static void print_json(json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static json_object *hex_json(const void *p, size_t n) {
        _cleanup_free_ char *h = malloc(2 * n + 1);
        return h ? json_object_new_string(hex_encode(p, n, h)) : NULL;
}

/* Bencode to JSON: strings that are not UTF-8 become {"hex": "..."}. */
static json_object *bencode_to_json(const BeNode *n) {
        json_object *o;

        switch (n->type) {
        case BE_INT:
                return json_object_new_int64(n->i);
        case BE_STR:
                if (utf8_is_valid(n->s, n->count) && !memchr(n->s, 0, n->count))
                        return json_object_new_string_len((const char *) n->s, (int) n->count);
                o = json_object_new_object();
                json_object_object_add(o, "hex", hex_json(n->s, n->count));
                return o;
        case BE_LIST: {
                const BeNode *c = n + 1;
                o = json_object_new_array();
                for (uint32_t i = 0; i < n->count; i++, c = be_next(c))
                        json_object_array_add(o, bencode_to_json(c));
                return o;
        }
        case BE_DICT: {
                const BeNode *k = n + 1;
                o = json_object_new_object();
                for (uint32_t i = 0; i < n->count; i++, k = be_next(k + 1)) {
                        _cleanup_free_ char *key = strndup((const char *) k->s, k->count);
                        if (key)
                                json_object_object_add(o, key, bencode_to_json(k + 1));
                }
                return o;
        }
        }
        return NULL;
}

static json_object *value_to_json(const void *v, size_t n) {
        BeNode nodes[1024];
        if (be_decode(v, n, NULL, nodes, ELEMENTSOF(nodes), NULL) < 0)
                return NULL;
        return bencode_to_json(&nodes[0]);
}

/* Text form of a value: a string prints as itself, anything else as its bencoding. */
static void print_value(const void *v, size_t n) {
        BeNode nodes[1024];

        if (be_decode(v, n, NULL, nodes, ELEMENTSOF(nodes), NULL) >= 0 && nodes[0].type == BE_STR)
                fwrite(nodes[0].s, 1, nodes[0].count, stdout);
        else
                fwrite(v, 1, n, stdout);
        putchar('\n');
}

static void on_ping(Dht *d, const DhtResult *r, void *userdata) {
        Ctx *c = userdata;
        char hex[DHT_ID_HEX_MAX];

        if (r->error < 0) {
                not_found(c, r->error, "ping");
                return;
        }
        hex_encode(r->id, DHT_ID_SIZE, hex);
        if (arg.json) {
                _cleanup_json_ json_object *o = json_object_new_object();
                json_add_string(o, "id", hex);
                json_add_string(o, "address", c->args[0]);
                print_json(o);
        } else
                printf("%s %s\n", c->args[0], hex);
        finish(c, 0);
}

static void on_nodes(Dht *d, const DhtResult *r, void *userdata) {
        _cleanup_free_ DhtNodeInfo *nodes = calloc(2 * 160 * 8, sizeof(DhtNodeInfo));
        _cleanup_json_ json_object *arr = json_object_new_array();
        Ctx *c = userdata;
        size_t n;

        if (!nodes) {
                finish(c, 1);
                return;
        }
        n = dht_nodes(d, nodes, 2 * 160 * 8);
        if (n == 0) {
                not_found(c, -EHOSTUNREACH, "nodes");
                return;
        }
        for (size_t i = 0; i < n; i++) {
                char hex[DHT_ID_HEX_MAX], addr[DHT_ADDR_STR_MAX];
                hex_encode(nodes[i].id, DHT_ID_SIZE, hex);
                dht_addr_to_string(&nodes[i].addr, addr);
                if (arg.json) {
                        json_object *o = json_object_new_object();
                        json_add_string(o, "id", hex);
                        json_add_string(o, "address", addr);
                        json_add_string(o, "state", nodes[i].state);
                        json_add_int64(o, "rtt_usec", nodes[i].rtt_usec);
                        json_object_array_add(arr, o);
                } else
                        printf("%s %-24s %s\n", hex, addr, nodes[i].state);
        }
        if (arg.json) {
                _cleanup_json_ json_object *o = json_object_new_object();
                char hex[DHT_ID_HEX_MAX];
                json_add_string(o, "id", hex_encode(dht_id(d), DHT_ID_SIZE, hex));
                json_add(o, "nodes", json_object_get(arr));
                print_json(o);
        }
        finish(c, 0);
}

static void on_peers(Dht *d, const DhtResult *r, void *userdata) {
        _cleanup_json_ json_object *arr = json_object_new_array();
        Ctx *c = userdata;

        if (r->error < 0) {
                not_found(c, r->error, "peers");
                return;
        }
        for (size_t i = 0; i < r->n_peers; i++) {
                char addr[DHT_ADDR_STR_MAX];
                dht_addr_to_string(&r->peers[i], addr);
                if (arg.json)
                        json_object_array_add(arr, json_object_new_string(addr));
                else
                        printf("%s\n", addr);
        }
        if (arg.json) {
                _cleanup_json_ json_object *o = json_object_new_object();
                json_add_string(o, "info_hash", c->args[0]);
                json_add(o, "peers", json_object_get(arr));
                json_add_int64(o, "rounds", r->rounds);
                json_add_int64(o, "queries", r->queries);
                print_json(o);
        }
        finish(c, 0);
}

static void on_stored(Dht *d, const DhtResult *r, void *userdata) {
        Ctx *c = userdata;
        char hex[DHT_ID_HEX_MAX];

        if (r->error < 0) {
                if (r->error == -ESTALE) {
                        fprintf(stderr, "mc-dhtget: %s: the nodes hold a newer sequence number; use a larger --seq.\n", c->command);
                        finish(c, EXIT_NOT_FOUND);
                } else
                        not_found(c, r->error, c->command);
                return;
        }
        hex_encode(c->target, DHT_ID_SIZE, hex);
        if (arg.json) {
                _cleanup_json_ json_object *o = json_object_new_object();
                json_add_string(o, streq(c->command, "announce") ? "info_hash" : "target", hex);
                json_add_int64(o, "stored", r->n_stored);
                print_json(o);
        } else if (streq(c->command, "announce"))
                printf("%s announced to %u nodes\n", hex, r->n_stored);
        else
                printf("%s\n", hex);
        finish(c, 0);
}

static void on_item(Dht *d, const DhtResult *r, void *userdata) {
        Ctx *c = userdata;
        const DhtItem *it = r->item;
        char hex[DHT_ID_HEX_MAX];

        if (r->error < 0 || !it) {
                if (r->rejected > 0)
                        fprintf(stderr, "mc-dhtget: %s: %u answers failed verification and were rejected.\n",
                                c->command, r->rejected);
                not_found(c, r->error < 0 ? r->error : -ENOENT, c->command);
                return;
        }
        if (arg.json) {
                _cleanup_json_ json_object *o = json_object_new_object();
                json_add_string(o, "target", hex_encode(it->target, DHT_ID_SIZE, hex));
                json_add(o, "value", value_to_json(it->v, it->v_len));
                json_add(o, "value_bencoded_hex", hex_json(it->v, it->v_len));
                if (it->is_mutable) {
                        json_add(o, "key", hex_json(it->k, sizeof(it->k)));
                        json_add(o, "signature", hex_json(it->sig, sizeof(it->sig)));
                        json_add_int64(o, "seq", it->seq);
                        json_add(o, "salt", json_object_new_string_len(it->salt, (int) it->salt_len));
                }
                print_json(o);
        } else {
                if (it->is_mutable)
                        fprintf(stderr, "seq %" PRIi64 "\n", it->seq);
                print_value(it->v, it->v_len);
        }
        finish(c, 0);
}

static void on_task(int error, const TaskRecordData *rec, unsigned rejected, void *userdata) {
        Ctx *c = userdata;

        if (error == -EBADMSG) {
                fprintf(stderr, "mc-dhtget: task %s: a record was found but it is not signed by the cluster key "
                        "(or is malformed); rejected.\n", c->args[0]);
                finish(c, EXIT_NOT_FOUND);
                return;
        }
        if (error < 0) {
                _cleanup_free_ char *what = NULL;
                if (asprintf(&what, "task %s", c->args[0]) < 0)
                        what = NULL;
                not_found(c, error, what ?: "task");
                return;
        }
        if (arg.json) {
                _cleanup_json_ json_object *o = json_object_new_object();
                json_add_string(o, "id", rec->id);
                json_add_string(o, "status", rec->status);
                json_add_int64(o, "attempt", rec->attempt);
                json_add_int64(o, "lease_token", rec->lease_token);
                json_object_object_add(o, "node", rec->node[0] ? json_object_new_string(rec->node) : NULL);
                json_add_int64(o, "updated_at_usec", rec->updated_at_usec);
                json_add_int64(o, "seq", rec->seq);
                json_add(o, "verified", json_object_new_boolean(true));
                print_json(o);
        } else {
                time_t t = (time_t) (rec->updated_at_usec / (int64_t) USEC_PER_SEC);
                struct tm tm;
                char when[64] = "?";
                if (gmtime_r(&t, &tm))
                        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
                printf("task %s: %s (attempt %" PRIi64 ", lease token %" PRIi64 ", node %s, updated %s)\n",
                       rec->id, rec->status, rec->attempt, rec->lease_token, rec->node[0] ? rec->node : "-", when);
        }
        finish(c, 0);
}

static void on_serve_ready(Dht *d, const DhtResult *r, void *userdata) {
        char hex[DHT_ID_HEX_MAX];

        printf("port %u id %s\n", dht_port(d), hex_encode(dht_id(d), DHT_ID_SIZE, hex));
        fflush(stdout);
        sd_notifyf(false, "READY=1\nSTATUS=DHT node on UDP port %u, id %s", dht_port(d), hex);
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Ctx *c = userdata;
        fprintf(stderr, "mc-dhtget: %s: nothing found within the timeout.\n", c->command);
        finish(c, EXIT_NOT_FOUND);
        return 0;
}

static int need_args(Ctx *c, size_t n) {
        if (strv_length(c->args) != n)
                return log_error_errno(EINVAL, "%s takes %zu argument%s; see --help.", c->command, n, n == 1 ? "" : "s");
        return 0;
}

static int parse_id_arg(const char *s, uint8_t ret[DHT_ID_SIZE], const char *what) {
        if (hex_decode(s, ret, DHT_ID_SIZE) < 0)
                return log_error_errno(EINVAL, "Invalid %s \"%s\": expected 40 hex digits.", what, s);
        return 0;
}

static int encode_string_value(const char *s, uint8_t *buf, size_t size, size_t *ret_len) {
        BeWriter w;
        be_writer_init(&w, buf, size);
        be_put_cstr(&w, s);
        return be_writer_finish(&w, ret_len);
}

static int start_command(Ctx *c) {
        const char *cmd = c->command;
        uint8_t v[BEP44_VALUE_MAX];
        size_t n;
        int r;

        if (streq(cmd, "ping")) {
                DhtAddr a;
                if ((r = need_args(c, 1)) < 0)
                        return r;
                if (dht_addr_from_string(c->args[0], &a) < 0)
                        return log_error_errno(EINVAL, "Invalid address \"%s\": expected IP:PORT.", c->args[0]);
                return dht_ping(c->dht, &a, on_ping, c);
        }
        if (streq(cmd, "nodes")) {
                if ((r = need_args(c, 0)) < 0)
                        return r;
                return dht_when_ready(c->dht, on_nodes, c);
        }
        if (streq(cmd, "peers")) {
                if ((r = need_args(c, 1)) < 0 || (r = parse_id_arg(c->args[0], c->target, "info-hash")) < 0)
                        return r;
                return dht_get_peers(c->dht, c->target, on_peers, c);
        }
        if (streq(cmd, "announce")) {
                int64_t port;
                if ((r = need_args(c, 2)) < 0 || (r = parse_id_arg(c->args[0], c->target, "info-hash")) < 0)
                        return r;
                if (parse_int64(c->args[1], &port) < 0 || port < 0 || port > 65535)
                        return log_error_errno(EINVAL, "Invalid port \"%s\".", c->args[1]);
                return dht_announce(c->dht, c->target, (uint16_t) port, 0, on_stored, c);
        }
        if (streq(cmd, "get")) {
                if ((r = need_args(c, 1)) < 0 || (r = parse_id_arg(c->args[0], c->target, "target")) < 0)
                        return r;
                return dht_get(c->dht, c->target, on_item, c);
        }
        if (streq(cmd, "get-mutable")) {
                if ((r = need_args(c, 1)) < 0)
                        return r;
                if (cluster_key_parse_public(c->args[0], c->pub) < 0)
                        return log_error_errno(EINVAL, "Invalid public key \"%s\": expected 64 hex digits or base64.", c->args[0]);
                return dht_get_mutable(c->dht, c->pub, arg.salt, arg.salt ? strlen(arg.salt) : 0, on_item, c);
        }
        if (streq(cmd, "put")) {
                if ((r = need_args(c, 1)) < 0)
                        return r;
                if (encode_string_value(c->args[0], v, sizeof(v), &n) < 0)
                        return log_error_errno(E2BIG, "The value is too long (at most %d bytes once bencoded).", BEP44_VALUE_MAX);
                return dht_put(c->dht, v, n, 0, c->target, on_stored, c);
        }
        if (streq(cmd, "put-mutable")) {
                int64_t seq = arg.seq >= 0 ? arg.seq : (int64_t) realtime_usec();
                if ((r = need_args(c, 1)) < 0)
                        return r;
                if (!arg.key_file)
                        return log_error_errno(EINVAL, "put-mutable needs --key=FILE (see genkey).");
                r = cluster_key_load_file(arg.key_file, &c->key);
                if (r < 0)
                        return log_error_errno(r, "Cannot load the ed25519 key %s: %m", arg.key_file);
                if (encode_string_value(c->args[0], v, sizeof(v), &n) < 0)
                        return log_error_errno(E2BIG, "The value is too long (at most %d bytes once bencoded).", BEP44_VALUE_MAX);
                r = bep44_key_public(c->key, c->pub);
                if (r < 0)
                        return r;
                bep44_mutable_target(c->pub, arg.salt, arg.salt ? strlen(arg.salt) : 0, c->target);
                return dht_put_mutable(c->dht, c->key, arg.salt, arg.salt ? strlen(arg.salt) : 0, v, n, seq, NULL, 0, on_stored, c);
        }
        if (streq(cmd, "task")) {
                if ((r = need_args(c, 1)) < 0)
                        return r;
                if (!arg.cluster_key)
                        return log_error_errno(EINVAL, "task needs --cluster-key=PUBKEY (the control's %s).", CLUSTER_PUB_FILE);
                if (cluster_key_parse_public(arg.cluster_key, c->pub) < 0)
                        return log_error_errno(EINVAL, "Invalid --cluster-key \"%s\": expected 64 hex digits or base64.", arg.cluster_key);
                r = task_record_fetch(c->dht, c->pub, c->args[0], on_task, c);
                if (r == -EINVAL)
                        return log_error_errno(r, "Invalid task id \"%s\".", c->args[0]);
                return r;
        }
        if (streq(cmd, "serve")) {
                /* A plain DHT node (a bootstrap node for a cluster, or a test peer). */
                if ((r = need_args(c, 0)) < 0)
                        return r;
                return dht_when_ready(c->dht, on_serve_ready, c);
        }
        return log_error_errno(EINVAL, "Unknown command \"%s\"; see --help.", cmd);
}

static void ctx_done(Ctx *c) {
        /* The node first, while its callbacks can still run against a live loop. */
        c->dht = dht_free(c->dht);
        c->event = sd_event_unref(c->event);
        EVP_PKEY_free(c->key);
        strv_free(c->words);
        config_free(&dhtget_config_spec, &arg);
}

static int genkey(Ctx *c) {
        _cleanup_pkey_ EVP_PKEY *k = NULL;
        char hex[CLUSTER_KEY_HEX_MAX];
        int r;

        r = need_args(c, 1);
        if (r < 0)
                return r;
        r = bep44_key_generate(&k);
        if (r >= 0)
                r = cluster_key_public_hex(k, hex);
        if (r < 0)
                return log_error_errno(r, "Cannot generate a key: %m");
        r = cluster_key_write_file(c->args[0], k, false);
        if (r < 0)
                return log_error_errno(r, "Cannot write %s: %m", c->args[0]);
        printf("%s\n", hex);
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_(ctx_done) Ctx c = { .exit_status = EXIT_FAILURE };
        _cleanup_(sd_event_source_unrefp) sd_event_source *timer = NULL;
        bool serve;
        sigset_t mask;
        int r;

        log_setup("mc-dhtget");
        r = config_load(&dhtget_config_spec, &arg, argc, argv, &c.words);
        if (r != 0)
                return r < 0 ? r : 0;
        if (strv_length(c.words) == 0)
                return log_error_errno(EINVAL, "No command given; see --help.");
        if (arg.ipv4 && arg.ipv6)
                return log_error_errno(EINVAL, "-4 and -6 exclude each other.");
        c.command = c.words[0];
        c.args = c.words + 1;
        serve = streq(c.command, "serve");
        if (streq(c.command, "genkey"))
                return genkey(&c);

        r = sd_event_new(&c.event);
        if (r < 0)
                return log_error_errno(r, "Cannot create an event loop: %m");
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(c.event, NULL, SIGTERM, NULL, NULL);
        (void) sd_event_add_signal(c.event, NULL, SIGINT, NULL, NULL);

        r = dht_new(c.event, &(DhtConfig) {
                        .port = (uint16_t) arg.port,
                        .bind_address = arg.bind,
                        .family = arg.ipv4 ? AF_INET : arg.ipv6 ? AF_INET6 : AF_UNSPEC,
                        .bootstrap = arg.bootstrap,
                        .read_only = !serve,
                        .state_dir = arg.state_dir,
                }, &c.dht);
        if (r < 0)
                return log_error_errno(r, "Cannot start a DHT node: %m");
        r = start_command(&c);
        if (r < 0)
                return r;
        if (serve)
                c.exit_status = 0;
        else {
                r = sd_event_add_time_relative(c.event, &timer, CLOCK_MONOTONIC,
                                               (uint64_t) arg.timeout_sec * USEC_PER_SEC, USEC_PER_MSEC, on_timeout, &c);
                if (r < 0)
                        return log_error_errno(r, "Cannot arm the timeout: %m");
        }

        r = sd_event_loop(c.event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return c.exit_status;
}

DEFINE_MAIN_FUNCTION(run);
