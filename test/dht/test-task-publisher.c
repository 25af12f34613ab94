/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Test helper for test-task-record.py: a DHT node that publishes task state records the way the
 * control will (cluster key from the state directory, task_record_publish()), then stays up serving.
 *
 *   test-task-publisher -b HOST:PORT -d STATE_DIR ID:STATUS:ATTEMPT:TOKEN:NODE...
 *       publishes each record (NODE "-" for none; seq = update time = now in usec), then sends
 *       READY=1 with STATUS=<public key hex> and serves until SIGTERM.
 *   test-task-publisher -b HOST:PORT -d STATE_DIR --forge VICTIM_PUBKEY ID:STATUS:...
 *       a hostile node: puts, straight into its own storage (no checks), records under the victim's
 *       targets, half signed by its own key but carrying the victim's key, half carrying its own key,
 *       all with a seq far above any genuine one. A reader must reject them all. */

#include <getopt.h>
#include <signal.h>

#include "cluster-key.h"
#include "config.h"
#include "daemon-util.h"
#include "dht-internal.h"
#include "log.h"
#include "task-record.h"

static unsigned waiting;
static int failures;

static void on_published(Dht *d, const DhtResult *r, void *userdata) {
        if (r->error < 0 || r->n_stored == 0) {
                log_error("publishing %s failed: %s (%u queries, %u responses)", (const char *) userdata,
                          strerror(-r->error), r->queries, r->responses);
                failures++;
        }
        waiting--;
}

static int parse_record(char *spec, TaskRecord *t) {
        char *f[5];
        for (int i = 0; i < 5; i++) {
                f[i] = strsep(&spec, ":");
                if (!f[i])
                        return -EINVAL;
        }
        *t = (TaskRecord) {
                .id = f[0],
                .status = f[1],
                .attempt = atoll(f[2]),
                .lease_token = atoll(f[3]),
                .node = streq(f[4], "-") ? NULL : f[4],
                .updated_at_usec = (int64_t) realtime_usec(),
        };
        return 0;
}

static int forge(Dht *d, EVP_PKEY *own, const uint8_t victim[BEP44_KEY_SIZE], const TaskRecord *t, bool carry_victim_key) {
        uint8_t v[BEP44_VALUE_MAX];
        char salt[BEP44_SALT_MAX + 1];
        StoredItem it = { .is_mutable = true, .seq = INT64_MAX / 2 };
        size_t n, sl;
        int r;

        r = task_record_salt(t->id, salt, &sl);
        if (r < 0)
                return r;
        r = task_record_encode(t, v, sizeof(v), &n);
        if (r < 0)
                return r;
        memcpy(it.v, v, n);
        it.v_len = n;
        memcpy(it.salt, salt, sl);
        it.salt_len = sl;
        bep44_mutable_target(victim, salt, sl, it.target);
        r = bep44_sign(own, salt, sl, it.seq, v, n, it.sig);
        if (r < 0)
                return r;
        if (carry_victim_key)
                memcpy(it.k, victim, BEP44_KEY_SIZE);
        else
                r = bep44_key_public(own, it.k);
        if (r < 0)
                return r;
        return item_store_put(&d->items, &it, dht_now(d));
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "bootstrap", required_argument, NULL, 'b' },
                { "state-dir", required_argument, NULL, 'd' },
                { "forge", required_argument, NULL, 'f' },
                {}
        };
        _cleanup_strv_free_ char **boot = NULL;
        const char *state_dir = NULL, *victim_hex = NULL;
        _cleanup_pkey_ EVP_PKEY *key = NULL;
        uint8_t victim[BEP44_KEY_SIZE];
        char hex[CLUSTER_KEY_HEX_MAX];
        sd_event *e = NULL;
        Dht *d = NULL;
        int c, r;

        log_setup("test-task-publisher");
        while ((c = getopt_long(argc, argv, "b:d:f:", options, NULL)) >= 0)
                switch (c) {
                case 'b':
                        if (strv_extend(&boot, optarg) < 0)
                                return 1;
                        break;
                case 'd':
                        state_dir = optarg;
                        break;
                case 'f':
                        victim_hex = optarg;
                        break;
                default:
                        return 1;
                }
        if (!state_dir || optind >= argc)
                return 1;
        if (victim_hex && cluster_key_parse_public(victim_hex, victim) < 0)
                return 1;

        if (daemon_event_new(&e) < 0)
                return 1;
        if (cluster_key_load_or_generate(state_dir, &key) < 0 || cluster_key_public_hex(key, hex) < 0)
                return 1;
        r = dht_new(e, &(DhtConfig) { .bootstrap = boot, .bind_address = "127.0.0.1" }, &d);
        if (r < 0)
                return 1;

        for (int i = optind; i < argc; i++) {
                TaskRecord t;
                if (parse_record(argv[i], &t) < 0) {
                        log_error("bad record \"%s\"", argv[i]);
                        return 1;
                }
                if (victim_hex) {
                        if (forge(d, key, victim, &t, i % 2 == 0) < 0)
                                return 1;
                        continue;
                }
                r = task_record_publish(d, key, &t, t.updated_at_usec, DHT_REPUBLISH, on_published, argv[i]);
                if (r < 0) {
                        log_error_errno(r, "task_record_publish: %m");
                        return 1;
                }
                waiting++;
        }
        while (waiting > 0)
                if (sd_event_run(e, UINT64_MAX) < 0)
                        return 1;
        if (failures > 0)
                return 1;

        printf("%s\n", hex);
        fflush(stdout);
        daemon_notify_ready(hex);
        r = sd_event_loop(e);
        dht_free(d);
        sd_event_unref(e);
        return r < 0 ? 1 : 0;
}
