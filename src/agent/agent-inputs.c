/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A task's inputs, from its claim to its end: each is pinned in the input cache at the claim (so that
 * nothing the task needs is evicted), fetched while the task is TASK_FETCHING (the lease is renewed
 * meanwhile as for any task), and handed to the driver as read-only files. When an input cannot be
 * had, the lease is given back (POST /api/tasks/{id}/release) with inputs_unavailable or disk_full,
 * and the control queues the task again. The parts themselves are in inputs/: the cache, the
 * downloads and the peer port. */

#include <netdb.h>

#include "agent-internal.h"
#include "daemon-util.h"
#include "input-cache.h"
#include "input-fetch.h"
#include "input-server.h"
#include "json-util.h"
#include "log.h"
#include "peer-sink.h"
#include "swarm.h"
#include "utf8.h"

struct TaskInput {
        Task *task;
        char *content, *path;
        uint64_t length;
        InputCacheEntry *entry;         /* pinned */
        InputWaiter waiter;
        bool ready;
};

#define RELEASE_REASON_MAX 1000U

/* ---------------------------------------------------------------------------------------------- */
/* Set-up */

/* SEEDERS: numeric addresses as they are; names are resolved here, once, when the agent starts (before
 * its loop runs, so that a slow resolver delays the start and never stalls the loop). A name that does
 * not resolve is skipped with a warning. */
static int resolve_seeders(char **list, InputSeeder **ret, size_t *ret_n) {
        _cleanup_free_ InputSeeder *s = NULL;
        size_t n = 0;

        for (char **l = list; l && *l; l++) {
                struct sockaddr_storage sa;
                socklen_t salen;
                _cleanup_free_ char *host = NULL;
                uint16_t port;
                struct addrinfo *res = NULL;
                char service[8];
                InputSeeder *t;
                int r;

                if (swarm_parse_address(*l, &sa, &salen) >= 0) {
                        t = reallocarray(s, n + 1, sizeof(InputSeeder));
                        if (!t)
                                return -ENOMEM;
                        s = t;
                        s[n++] = (InputSeeder) { .sa = sa, .salen = salen };
                        continue;
                }
                if (dht_split_host_port(*l, &host, &port) < 0)
                        return log_error_errno(EINVAL, "SEEDERS: \"%s\" is not HOST:PORT.", *l);
                snprintf(service, sizeof(service), "%u", port);
                r = getaddrinfo(host, service, &(struct addrinfo) { .ai_socktype = SOCK_STREAM }, &res);
                if (r != 0) {
                        log_warning("SEEDERS: cannot resolve %s: %s; skipping it.", host, gai_strerror(r));
                        continue;
                }
                for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || ai->ai_addrlen > sizeof(sa))
                                continue;
                        t = reallocarray(s, n + 1, sizeof(InputSeeder));
                        if (!t) {
                                freeaddrinfo(res);
                                return -ENOMEM;
                        }
                        s = t;
                        s[n] = (InputSeeder) { .salen = ai->ai_addrlen };
                        memcpy(&s[n].sa, ai->ai_addr, ai->ai_addrlen);
                        n++;
                }
                freeaddrinfo(res);
        }
        *ret = TAKE_PTR(s);
        *ret_n = n;
        return 0;
}

int inputs_init(Agent *a) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_free_ InputSeeder *seeders = NULL;
        size_t n_seeders = 0;
        int peer_fds[DAEMON_SOCKETS_PER_NAME], r;
        unsigned n;

        r = peer_sink_default_new(a->event, &a->peer_sink);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the peer connections: %m");
        /* A socket passed as "peer" wins over PEER_PORT (-1 included). */
        n = agent_socket_take(a, AGENT_SOCKET_PEER, peer_fds);
        agent_socket_check_config(a, AGENT_SOCKET_PEER, peer_fds, n, "PEER_PORT", a->config.peer_port, NULL, NULL);
        if (a->config.peer_port >= 0 || n > 0) {
                r = input_server_new(a->event, &(InputServerConfig) {
                                .port = a->config.peer_port,
                                .listen_fd = n > 0 ? &peer_fds[0] : NULL,
                                .sink = a->peer_sink,
                                .dht = a->dht,
                        }, &a->input_server);
                if (r < 0)
                        return r;
        }
        if (!isempty(a->config.input_cache_dir))
                dir = strdup(a->config.input_cache_dir);
        else if (asprintf(&dir, "%s/inputs", a->state_dir) < 0)
                dir = NULL;
        if (!dir)
                return log_oom();
        r = input_cache_new(&(InputCacheConfig) {
                        .dir = dir,
                        .max_bytes = (uint64_t) a->config.cache_max_bytes,
                        .server = a->input_server,
                }, &a->input_cache);
        if (r < 0)
                return r;
        r = resolve_seeders(a->config.seeders, &seeders, &n_seeders);
        if (r < 0)
                return r;
        r = input_fetcher_new(a->event, &(InputFetcherConfig) {
                        .control = a->control,
                        .cache = a->input_cache,
                        .server = a->input_server,
                        .sink = a->peer_sink,
                        .dht = a->dht,
                        .seeders = seeders,
                        .n_seeders = n_seeders,
                        .no_progress_usec = (uint64_t) a->config.input_fetch_timeout_sec * USEC_PER_SEC,
                        .request_timeout_usec = request_timeout(a),
                        .max_running = (unsigned) a->config.input_fetches,
                }, &a->input_fetcher);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the input downloads: %m");
        if (a->input_server)
                log_info("Serving the input cache to other agents on peer port %u%s; %zu seeders configured.",
                         input_server_port(a->input_server), a->dht ? ", announced in the DHT" : "", n_seeders);
        else
                log_info("Not serving the input cache (PEER_PORT=-1); %zu seeders configured.", n_seeders);
        return 0;
}

void inputs_done(Agent *a) {
        /* Downloads go before the cache whose entries they pin, the cache before the server it
         * registered its stores with, connections before their sink, and all of it before the DHT. */
        a->input_fetcher = input_fetcher_free(a->input_fetcher);
        a->input_cache = input_cache_free(a->input_cache);
        a->input_server = input_server_free(a->input_server);
        a->peer_sink = peer_sink_free(a->peer_sink);
}

/* ---------------------------------------------------------------------------------------------- */
/* Giving the lease back */

static void on_release_reply(const ControlReply *reply, void *userdata) {
        Task *t = userdata;
        Agent *a = t->agent;

        t->release_call = NULL;
        if (reply->error < 0 || (reply->code != 200 && reply->code != 404 && reply->code != 409))
                /* Nothing more to do: the lease expires, and the control queues the task again then. */
                log_task(LOG_WARNING, t, MC_EVENT_NONE, "cannot give its lease back (%s); it will expire.",
                         strna(reply->message));
        else
                log_task(LOG_DEBUG, t, MC_EVENT_NONE, "lease given back (%ld).", reply->code);
        task_free(t);
        schedule_claim(a, 0);
        maybe_finish_stop(a);
}

void task_release(Task *t, const char *code, const char *reason) {
        Agent *a = t->agent;
        _cleanup_json_ json_object *o = json_object_new_object();
        _cleanup_free_ char *path = NULL, *why = NULL;
        int r;

        if (t->drop_result)
                return;
        task_inputs_free(t);
        t->drop_result = true;
        agent_bus_fetching_changed(a);
        save_leases(a);
        update_fence_timer(a);
        log_task(LOG_NOTICE, t, MC_EVENT_NONE, "giving its lease back: %s: %s", code, reason);

        why = utf8_sanitize(reason, strlen(reason));
        if (why && strlen(why) > RELEASE_REASON_MAX)
                why[utf8_prefix_len(why, strlen(why), RELEASE_REASON_MAX)] = 0;
        if (!o || !why || json_add_string(o, "node_id", a->config.node_id) < 0 ||
            json_add_int64(o, "lease_token", t->lease_token) < 0 || json_add_string(o, "code", code) < 0 ||
            json_add_string(o, "reason", why) < 0 || asprintf(&path, "/api/tasks/%s/release", t->id) < 0) {
                log_oom();
                path = NULL;
        }
        r = path ? control_post(a->control, path, o, request_timeout(a), on_release_reply, t, &t->release_call) : -ENOMEM;
        if (r < 0) {
                /* The task stays (abandoned, not renewed) until the next look at it frees it; the
                 * lease expires meanwhile. A call that cannot even be made is rare (memory). */
                log_task(LOG_WARNING, t, MC_EVENT_NONE, "cannot give its lease back: %s", strerror(-r));
                t->state = TASK_REPORTING;      /* holds no capacity, renewed by nobody */
        }
}

/* ---------------------------------------------------------------------------------------------- */
/* The inputs of a task */

static const char *code_of(int error) {
        return error == -ENOSPC || error == -EFBIG ? "disk_full" : "inputs_unavailable";
}

static void log_input_failed(Task *t, TaskInput *in, int error, const char *reason) {
        char token[32], attempt[32];

        snprintf(token, sizeof(token), "%" PRIi64, t->lease_token);
        snprintf(attempt, sizeof(attempt), "%" PRIi64, t->attempt);
        log_event(LOG_WARNING, MC_EVENT_INPUTS_FAILED,
                  LOG_FIELDS("TASK_ID", t->id, "NODE_ID", t->agent->config.node_id, "LEASE_TOKEN", token,
                             "ATTEMPT", attempt, "CONTENT_ID", in ? in->content : "", "INPUT_PATH", in ? in->path : "",
                             "MC_CODE", code_of(error), "MC_REASON", reason),
                  "Task %s (lease %s): input %s cannot be had: %s", t->id, token, in ? in->path : "", reason);
}

static void log_input_fetched(Task *t, TaskInput *in, const InputFetchResult *r) {
        char token[32], attempt[32], bytes[32], seeders[32], agents[32], peers[16], banned[16], seconds[32], resumed[16];

        snprintf(token, sizeof(token), "%" PRIi64, t->lease_token);
        snprintf(attempt, sizeof(attempt), "%" PRIi64, t->attempt);
        snprintf(bytes, sizeof(bytes), "%" PRIu64, r->bytes);
        snprintf(seeders, sizeof(seeders), "%" PRIu64, r->bytes_seeders);
        snprintf(agents, sizeof(agents), "%" PRIu64, r->bytes_agents);
        snprintf(peers, sizeof(peers), "%u", r->peers);
        snprintf(banned, sizeof(banned), "%u", r->peers_banned);
        snprintf(seconds, sizeof(seconds), "%.3f", (double) r->duration_usec / 1e6);
        snprintf(resumed, sizeof(resumed), "%" PRIu32, r->pieces_resumed);
        log_event(LOG_INFO, MC_EVENT_INPUTS_FETCHED,
                  LOG_FIELDS("TASK_ID", t->id, "NODE_ID", t->agent->config.node_id, "LEASE_TOKEN", token,
                             "ATTEMPT", attempt, "CONTENT_ID", in->content, "INPUT_PATH", in->path,
                             "MC_SOURCE", r->cached ? "cache" : "peers", "MC_BYTES", bytes,
                             "MC_BYTES_SEEDERS", seeders, "MC_BYTES_AGENTS", agents, "MC_PEERS", peers,
                             "MC_PEERS_BANNED", banned,
                             "MC_SECONDS", seconds, "MC_PIECES_RESUMED", resumed, "MC_PEER_BYTES", r->peer_list ?: ""),
                  "Task %s (lease %s): input %s ready (%s%s bytes from %s peers in %s s).", t->id, token, in->path,
                  r->cached ? "in the cache; " : "", bytes, peers, seconds);
}

static void on_input(InputWaiter *w, const InputFetchResult *r) {
        TaskInput *in = (TaskInput *) ((uint8_t *) w - offsetof(TaskInput, waiter));
        Task *t = in->task;
        Agent *a = t->agent;

        if (r->error < 0) {
                log_input_failed(t, in, r->error, r->reason);
                task_release(t, code_of(r->error), r->reason);
                return;
        }
        log_input_fetched(t, in, r);
        if (r->cached) {
                t->inputs_bytes_cache += in->length;
                a->input_bytes_cache += in->length;
        } else if (!r->shared) {
                t->inputs_bytes_seeders += r->bytes_seeders;
                t->inputs_bytes_agents += r->bytes_agents;
                a->input_bytes_seeders += r->bytes_seeders;
                a->input_bytes_agents += r->bytes_agents;
        }
        in->ready = true;
        if (++t->n_inputs_ready < t->n_inputs)
                return;
        t->inputs_ready = true;
        t->inputs_ready_usec = realtime_usec();
        t->state = TASK_CLAIMED;
        agent_bus_fetching_changed(a);
        task_start(t);
}

/* The control accepts only absolute paths in their one normal form (docs/api.md); checked again here
 * since the exec driver makes the path a name under the job's directory. */
static bool input_path_ok(const char *p) {
        if (p[0] != '/' || p[1] == 0 || strlen(p) > 1024)
                return false;
        for (const char *c = p; *c; ) {
                size_t n;

                c++;                    /* the '/' */
                n = strcspn(c, "/");
                if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
                        return false;
                c += n;
        }
        return true;
}

int task_inputs_parse(Task *t, json_object *inputs) {
        size_t n = inputs ? json_object_array_length(inputs) : 0;

        assert(!t->inputs);
        if (n == 0)
                return 0;
        t->inputs = calloc(n, sizeof(TaskInput));
        if (!t->inputs)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *o = json_object_array_get_idx(inputs, i);
                TaskInput *in = &t->inputs[i];
                const char *content, *path;
                int64_t length;
                int r;

                in->task = t;
                in->waiter.done = on_input;
                t->n_inputs = i + 1;
                if (!json_object_is_type(o, json_type_object) || json_get_string(o, "content", &content) < 0 ||
                    json_get_string(o, "path", &path) < 0 || !input_path_ok(path))
                        return -EBADMSG;
                /* null for a task pushed before contents were registered: its size is unknown. */
                if (json_get_int64(o, "length", &length) < 0 || length < 0)
                        return -ENODATA;
                in->content = strdup(content);
                in->path = strdup(path);
                if (!in->content || !in->path)
                        return -ENOMEM;
                in->length = (uint64_t) length;
                r = input_cache_pin(t->agent->input_cache, content, in->length, &in->entry);
                if (r < 0)
                        return r == -ENOMEM ? r : -EBADMSG;
                t->inputs_bytes += in->length;
        }
        return 0;
}

/* Stops waiting; the inputs stay pinned. */
static void task_inputs_stop(Task *t) {
        for (size_t i = 0; i < t->n_inputs; i++)
                input_fetcher_forget(&t->inputs[i].waiter);
}

void task_inputs_free(Task *t) {
        task_inputs_stop(t);
        for (size_t i = 0; i < t->n_inputs; i++) {
                input_cache_unpin(t->inputs[i].entry);
                free(t->inputs[i].content);
                free(t->inputs[i].path);
        }
        free(t->inputs);
        t->inputs = NULL;
        t->n_inputs = t->n_inputs_ready = 0;
}

static int task_inputs_check_room(Task *t, char *why, size_t size) {
        uint64_t need = 0, max = input_cache_max_bytes(t->agent->input_cache);

        for (size_t i = 0; i < t->n_inputs; i++) {
                bool seen = false;
                if (input_cache_entry_complete(t->inputs[i].entry))
                        continue;
                for (size_t j = 0; j < i; j++)
                        seen = seen || t->inputs[j].entry == t->inputs[i].entry;
                if (!seen)
                        need += t->inputs[i].length;
        }
        if (need > max) {
                snprintf(why, size, "the inputs to fetch (%" PRIu64 " bytes) are larger than the input cache (%" PRIu64
                         " bytes)", need, max);
                return -EFBIG;
        }
        return 0;
}

int task_inputs_fetch(Task *t) {
        Agent *a = t->agent;
        char why[256];
        int r;

        assert(t->state == TASK_CLAIMED);
        if (t->inputs_ready)
                return 1;
        if (t->n_inputs == 0) {
                t->inputs_ready = true;
                t->inputs_ready_usec = realtime_usec();
                return 1;
        }
        r = task_inputs_check_room(t, why, sizeof(why));
        if (r < 0) {
                log_input_failed(t, NULL, r, why);
                task_release(t, code_of(r), why);
                return 0;
        }
        t->state = TASK_FETCHING;
        log_task(LOG_INFO, t, MC_EVENT_NONE, "fetching %zu inputs (%" PRIu64 " bytes).", t->n_inputs, t->inputs_bytes);
        agent_bus_fetching_changed(a);
        for (size_t i = 0; i < t->n_inputs; i++) {
                r = input_fetcher_want(a->input_fetcher, t->inputs[i].entry, &t->inputs[i].waiter);
                if (r < 0) {
                        snprintf(why, sizeof(why), "cannot fetch it: %s", strerror(-r));
                        log_input_failed(t, &t->inputs[i], r, why);
                        task_release(t, "inputs_unavailable", why);
                        return 0;
                }
        }
        return 0;
}

void task_inputs_stop_fetching(Task *t) {
        task_inputs_stop(t);
}

void task_inputs_for_driver(Task *t, DriverInput *ret) {
        for (size_t i = 0; i < t->n_inputs; i++)
                ret[i] = (DriverInput) {
                        .source = input_cache_entry_path(t->inputs[i].entry),
                        .path = t->inputs[i].path,
                };
}

/* ---------------------------------------------------------------------------------------------- */

void task_release_bad_inputs(Task *t, int error) {
        char why[128];

        snprintf(why, sizeof(why), "%s", error == -ENODATA ? "an input's content is not registered with the control"
                                         : "the claim answer's inputs are not usable");
        log_input_failed(t, NULL, -ENOENT, why);
        task_release(t, "inputs_unavailable", why);
}

unsigned agent_n_fetching(Agent *a) {
        unsigned n = 0;

        for (Task *t = a->tasks; t; t = t->next)
                n += t->state == TASK_FETCHING && !t->drop_result;
        return n;
}
