/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "config.h"
#include "control-client.h"
#include "prometheus.h"
#include "daemon-util.h"
#include "id-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"

#define CONNECT_TIMEOUT_USEC (2 * USEC_PER_SEC)

struct ControlClient {
        sd_event *event;
        CurlEvent *curl;
        char **urls;            /* NULL-terminated, never NULL */
        size_t n_urls;
        size_t current;         /* the replica that answered last */
        char *token;
        ControlCall *calls;
        ControlUnreachableCallback unreachable_cb;
        void *unreachable_userdata;
        Histogram latency;      /* of answered calls that are not long polls */
};

struct ControlCall {
        ControlClient *client;
        CurlRequest *request;
        sd_event_source *fail_source;   /* nothing to try: the failure is reported from the loop */
        char *path;
        char *body;             /* NULL for a GET */
        char *accept;           /* GET: the Accept header line */
        size_t max_body;
        uint64_t timeout_usec;
        /* By URL, not by position: the list may change while the call is in flight. */
        char *url;              /* the replica being tried; NULL before the first */
        char **tried;
        uint64_t sent_usec;
        ControlCallback cb;
        void *userdata;
        LIST_FIELDS(ControlCall);
};

static int64_t claim_resource(json_object *record, const char *key) {
        json_object *res;
        int64_t v;

        if (!json_object_object_get_ex(record, "resources", &res) || !res || json_get_int64(res, key, &v) < 0)
                return 0;
        return MAX(v, (int64_t) 0);
}

int control_answer_lease_ttl_ms(json_object *answer, int64_t *ret) {
        int64_t ttl_ms;
        int r;

        r = json_get_int64(answer, "lease_ttl_ms", &ttl_ms);
        if (r < 0)
                return r;
        if (ttl_ms < 1 || ttl_ms > CONTROL_LEASE_TTL_MAX_MS)
                return -ERANGE;
        *ret = ttl_ms;
        return 0;
}

int control_claim_answer_parse(json_object *answer, ControlClaimAnswer *ret) {
        ControlClaimAnswer c = { .attempt = 1, .held_ms = -1 };
        int64_t ttl_ms;

        if (!answer || !json_object_object_get_ex(answer, "task", &c.record) ||
            json_get_string(c.record, "id", &c.task_id) < 0 || json_get_int64(answer, "lease_token", &c.lease_token) < 0 ||
            !id_is_valid(c.task_id) || c.lease_token < 1)
                return -EBADMSG;
        (void) json_get_int64(answer, "attempt", &c.attempt);
        if (control_answer_lease_ttl_ms(answer, &ttl_ms) >= 0)
                c.lease_ttl_ms = ttl_ms;
        /* Beyond the longest wait a control allows (5 min), it is not a hold: counted from the send. */
        if (json_get_int64(answer, "held_ms", &c.held_ms) < 0 || c.held_ms < 0 || c.held_ms > 300000)
                c.held_ms = -1;
        c.nano_cpus = claim_resource(c.record, "nano_cpus");
        c.memory_bytes = claim_resource(c.record, "memory_bytes");
        if (json_get_int64(c.record, "timeout_sec", &c.timeout_sec) < 0)
                c.timeout_sec = 3600;
        /* The control allows a week; ten years is far beyond any control's limit and still far from
         * wrapping the deadline in microseconds. */
        if (c.timeout_sec < 1 || c.timeout_sec > 10 * 366 * 24 * 3600LL)
                return -EBADMSG;
        if (json_object_object_get_ex(answer, "inputs", &c.inputs) && c.inputs &&
            !json_object_is_type(c.inputs, json_type_array))
                return -EBADMSG;
        *ret = c;
        return 0;
}

char *control_url_normalize(const char *url) {
        /* "http://host:port/" and "http://host:port" are the same base. */
        char *s = strdup(url);
        size_t l;

        if (!s)
                return NULL;
        l = strlen(s);
        while (l > 0 && s[l - 1] == '/')
                s[--l] = 0;
        return s;
}

static ssize_t url_index(char *const *urls, const char *url) {
        if (!url)
                return -1;
        for (size_t i = 0; urls && urls[i]; i++)
                if (streq(urls[i], url))
                        return (ssize_t) i;
        return -1;
}

int control_client_new(sd_event *e, CurlEvent *curl, char *const *urls, const char *token, ControlClient **ret) {
        _cleanup_(control_client_freep) ControlClient *c = NULL;
        int r;

        c = calloc(1, sizeof(ControlClient));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        c->curl = curl;
        c->urls = calloc(1, sizeof(char *));
        if (!c->urls)
                return -ENOMEM;
        r = control_client_set_urls(c, urls);
        if (r < 0)
                return r;
        if (token) {
                c->token = strdup(token);
                if (!c->token)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static void call_free(ControlCall *call) {
        ControlClient *c = call->client;

        LIST_REMOVE(c->calls, call);
        sd_event_source_disable_unref(call->fail_source);
        free(call->path);
        free(call->body);
        free(call->accept);
        free(call->url);
        strv_free(call->tried);
        free(call);
}

ControlClient *control_client_free(ControlClient *c) {
        if (!c)
                return NULL;
        while (c->calls)
                control_call_cancel(c->calls);
        strv_free(c->urls);
        if (c->token) {
                explicit_bzero(c->token, strlen(c->token));
                free(c->token);
        }
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

int control_client_set_urls(ControlClient *c, char *const *urls) {
        _cleanup_strv_free_ char **l = calloc(1, sizeof(char *));
        const char *current = c->n_urls > 0 ? c->urls[c->current] : NULL;
        size_t n = 0;
        ssize_t i;

        if (!l)
                return -ENOMEM;
        for (char *const *u = urls; u && *u; u++) {
                _cleanup_free_ char *s = control_url_normalize(*u);
                if (!s)
                        return -ENOMEM;
                if (isempty(s) || url_index(l, s) >= 0)
                        continue;
                if (strv_extend(&l, s) < 0)
                        return -ENOMEM;
                n++;
        }

        if (n == c->n_urls) {
                bool same = true;
                for (size_t k = 0; same && k < n; k++)
                        same = streq(l[k], c->urls[k]);
                if (same)
                        return 0;
        }
        i = url_index(l, current);
        c->current = i >= 0 ? (size_t) i : 0;
        strv_free(c->urls);
        c->urls = TAKE_PTR(l);
        c->n_urls = n;
        return 1;
}

char *const *control_client_urls(ControlClient *c) {
        return c->urls;
}

size_t control_client_n_urls(ControlClient *c) {
        return c->n_urls;
}

void control_client_set_unreachable_callback(ControlClient *c, ControlUnreachableCallback cb, void *userdata) {
        c->unreachable_cb = cb;
        c->unreachable_userdata = userdata;
}

const char *control_client_current_url(ControlClient *c) {
        return c->n_urls > 0 ? c->urls[c->current] : NULL;
}

void control_call_cancel(ControlCall *call) {
        if (!call)
                return;
        curl_request_cancel(call->request);
        call_free(call);
}

/* The replica to try after the one that just failed: the next in the list that this call has not
 * tried yet, wrapping around. -1 when none is left. */
static ssize_t next_url(ControlClient *c, ControlCall *call) {
        ssize_t i = url_index(c->urls, call->url);
        size_t start = i >= 0 ? (size_t) i + 1 : c->current;

        for (size_t k = 0; k < c->n_urls; k++) {
                size_t j = (start + k) % c->n_urls;
                if (url_index(call->tried, c->urls[j]) < 0)
                        return (ssize_t) j;
        }
        return -1;
}

/* Hands the reply over, after unlinking the call: the callback may free the client's other calls. */
static void call_complete(ControlCall *call, const ControlReply *reply, bool unreachable) {
        ControlClient *c = call->client;
        ControlCallback cb = call->cb;
        void *ud = call->userdata;

        call_free(call);
        /* Only schedules work (a DHT lookup): safe before the callback. */
        if (unreachable && c->unreachable_cb)
                c->unreachable_cb(c, c->unreachable_userdata);
        cb(reply, ud);
}

static int call_send(ControlCall *call, size_t idx);

const Histogram *control_client_latency(ControlClient *c) {
        return &c->latency;
}

static void on_done(CurlRequest *req, const CurlResponse *resp, void *userdata) {
        ControlCall *call = userdata;
        ControlClient *c = call->client;
        _cleanup_json_ json_object *json = NULL;
        _cleanup_free_ char *message = NULL, *url = NULL;
        bool failed = resp->error < 0 || resp->code >= 500;
        ControlReply reply = {
                .error = resp->error,
                .code = resp->code,
                .body = resp->body,
                .size = resp->size,
                .sent_usec = call->sent_usec,
        };

        call->request = NULL;
        /* A claim is a long poll: its time is its wait, not the round trip. */
        if (resp->error >= 0 && !streq(call->path, "/api/agents/claim"))
                histogram_observe(&c->latency, metrics_latency_bounds, (double) resp->total_usec / USEC_PER_SEC);
        if (resp->tls_failed)
                tls_client_log_failure(call->url, resp->error_message);
        /* No answer, or a replica that cannot serve (database unreachable, stopping): try the next. */
        if (failed) {
                ssize_t next;
                while ((next = next_url(c, call)) >= 0) {
                        log_debug("Control %s: %s; trying %s.", call->url,
                                  resp->error < 0 ? resp->error_message : "5xx", c->urls[next]);
                        if (call_send(call, (size_t) next) >= 0)
                                return;
                }
        }

        url = TAKE_PTR(call->url);
        reply.url = url;
        if (resp->error >= 0 && resp->truncated && resp->code == 200) {
                reply.error = -EFBIG;
                reply.message = "the answer is larger than expected";
                reply.body = NULL;
                reply.size = 0;
                call_complete(call, &reply, false);
                return;
        }
        if (resp->size > 0)
                (void) json_parse_strict(resp->body, resp->size, &json, NULL);
        reply.json = json;
        if (resp->error < 0) {
                if (asprintf(&message, "%s: %s", strna(url), resp->error_message ?: "no answer") < 0)
                        message = NULL;
                reply.message = message ?: "no answer";
        } else {
                const char *e = NULL;
                if (json && json_get_string(json, "error", &e) >= 0)
                        reply.message = e;
                if (!failed) {
                        ssize_t i = url_index(c->urls, url);
                        if (i >= 0)
                                c->current = (size_t) i;
                }
        }
        call_complete(call, &reply, failed);
}

static int call_send(ControlCall *call, size_t idx) {
        ControlClient *c = call->client;
        _cleanup_free_ char *full = NULL, *base = NULL;
        uint64_t sent;
        int r;

        base = strdup(c->urls[idx]);
        if (!base || asprintf(&full, "%s%s", base, call->path) < 0)
                return -ENOMEM;
        /* Tried, whatever happens next: a replica that cannot even be asked is not asked again. */
        r = strv_extend(&call->tried, base);
        if (r < 0)
                return r;
        sent = now_usec();
        r = curl_event_request(c->curl, &(CurlRequestOptions) {
                        .method = call->body ? "POST" : "GET",
                        .url = full,
                        .body = call->body,
                        .body_size = call->body ? strlen(call->body) : 0,
                        .bearer_token = isempty(c->token) ? NULL : c->token,  /* none: a client certificate, or auth off */
                        .headers = call->accept ? (const char *const[]) { call->accept, NULL } : NULL,
                        .timeout_usec = call->timeout_usec,
                        .connect_timeout_usec = MIN(call->timeout_usec, CONNECT_TIMEOUT_USEC),
                        .max_body = call->max_body,
                }, on_done, call, &call->request);
        if (r < 0)
                return r;
        free(call->url);
        call->url = TAKE_PTR(base);
        call->sent_usec = sent;
        return 0;
}

static int on_no_replica(sd_event_source *s, void *userdata) {
        ControlCall *call = userdata;

        call_complete(call, &(ControlReply) {
                        .error = -EHOSTUNREACH,
                        .message = "no control replica known yet",
                        .sent_usec = now_usec(),
                }, true);
        return 0;
}

static int call_new(ControlClient *c, const char *path, uint64_t timeout_usec, ControlCallback cb, void *userdata,
                    ControlCall **ret) {
        ControlCall *call;

        call = calloc(1, sizeof(ControlCall));
        if (!call)
                return -ENOMEM;
        call->client = c;
        call->cb = cb;
        call->userdata = userdata;
        call->timeout_usec = timeout_usec;
        call->max_body = 8U * 1024U * 1024U;
        call->path = strdup(path);
        LIST_PREPEND(c->calls, call);
        if (!call->path) {
                call_free(call);
                return -ENOMEM;
        }
        *ret = call;
        return 0;
}

static int call_begin(ControlCall *call, ControlCall **ret) {
        ControlClient *c = call->client;
        int r;

        if (c->n_urls > 0)
                r = call_send(call, c->current);
        else {
                /* Reported like a replica that did not answer, so that the callers' retries apply;
                 * from the loop, since callers do not expect their callback within control_post(). */
                r = sd_event_add_defer(c->event, &call->fail_source, on_no_replica, call);
                if (r >= 0)
                        (void) sd_event_source_set_enabled(call->fail_source, SD_EVENT_ONESHOT);
        }
        if (r < 0) {
                call_free(call);
                return r;
        }
        if (ret)
                *ret = call;
        return 0;
}

int control_post(ControlClient *c, const char *path, json_object *body, uint64_t timeout_usec,
                 ControlCallback cb, void *userdata, ControlCall **ret) {
        ControlCall *call;
        int r;

        r = call_new(c, path, timeout_usec, cb, userdata, &call);
        if (r < 0)
                return r;
        call->body = strdup(body ? json_to_string(body) : "{}");
        if (!call->body) {
                call_free(call);
                return -ENOMEM;
        }
        return call_begin(call, ret);
}

int control_get(ControlClient *c, const char *path, const char *accept, size_t max_body, uint64_t timeout_usec,
                ControlCallback cb, void *userdata, ControlCall **ret) {
        ControlCall *call;
        int r;

        r = call_new(c, path, timeout_usec, cb, userdata, &call);
        if (r < 0)
                return r;
        if (max_body > 0)
                call->max_body = max_body;
        if (accept && asprintf(&call->accept, "Accept: %s", accept) < 0) {
                call->accept = NULL;
                call_free(call);
                return -ENOMEM;
        }
        return call_begin(call, ret);
}
