/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <curl/curl.h>
#include <sys/epoll.h>

#include "curl-event.h"
#include "daemon-util.h"
#include "list.h"
#include "log.h"

#define DEFAULT_MAX_BODY (16U * 1024U * 1024U)

/* One watched socket of libcurl's. Kept in a list of our own as well, so that whatever libcurl still
 * holds when the multi handle goes away is released. */
typedef struct CurlSocket {
        CurlEvent *curl;
        curl_socket_t fd;
        sd_event_source *source;
        LIST_FIELDS(struct CurlSocket);
} CurlSocket;

struct CurlRequest {
        CurlEvent *curl;
        CURL *easy;
        struct curl_slist *headers;
        char *body_copy;
        char *buf;
        size_t size, allocated, max_body;
        bool truncated;
        int data_error;
        CurlCompletion done;
        CurlDataHandler on_data;
        void *userdata;
        uint64_t started_usec;
        bool added;             /* attached to the multi handle */
        bool cancelled;         /* removal waits for the deferred handler */
        bool completing;        /* its completion callback is running */
        char errbuf[CURL_ERROR_SIZE];
        LIST_FIELDS(CurlRequest);
};

struct CurlEvent {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        sd_event_source *defer;         /* runs pending adds and removals outside libcurl */
        CurlSocket *sockets;
        CurlRequest *requests;
        size_t n_requests;
        unsigned in_curl;               /* > 0 while libcurl may be calling us back */
        TlsClientSettings tls;          /* "" fields unset */
};

static void request_unlink(CurlRequest *r) {
        CurlEvent *c = r->curl;

        LIST_REMOVE(c->requests, r);
        c->n_requests--;
}

static void request_free(CurlRequest *r) {
        if (!r)
                return;
        if (r->easy) {
                if (r->added)
                        (void) curl_multi_remove_handle(r->curl->multi, r->easy);
                curl_easy_cleanup(r->easy);
        }
        curl_slist_free_all(r->headers);
        free(r->body_copy);
        free(r->buf);
        free(r);
}

static void request_destroy(CurlRequest *r) {
        request_unlink(r);
        request_free(r);
}

static int curl_code_to_errno(CURLcode code) {
        switch (code) {
        case CURLE_OK:
                return 0;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return -EINVAL;
        default:
                return -EIO;
        }
}

/* The errors that TLS itself caused: the peer's certificate, or our own CA file, certificate or key. */
static bool curl_code_is_tls(CURLcode code) {
        static const CURLcode tls_codes[] = {
                CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM,
                CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ENGINE_NOTFOUND,
                CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_ENGINE_INITFAILED, CURLE_SSL_ISSUER_ERROR,
                CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CRL_BADFILE,
        };
        for (size_t i = 0; i < ELEMENTSOF(tls_codes); i++)
                if (code == tls_codes[i])
                        return true;
        return false;
}

static void complete(CurlRequest *r, CURLcode code) {
        CurlResponse resp = {};
        curl_off_t total = 0;
        char *ct = NULL;

        r->added = false;
        (void) curl_multi_remove_handle(r->curl->multi, r->easy);

        if (r->cancelled) {
                request_destroy(r);
                return;
        }

        if (code == CURLE_WRITE_ERROR && r->data_error < 0)
                resp.error = r->data_error;
        else
                resp.error = curl_code_to_errno(code);
        if (resp.error < 0) {
                resp.error_message = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
                resp.tls_failed = curl_code_is_tls(code);
        }
        else {
                (void) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.code);
                (void) curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
                resp.content_type = ct;
        }
        resp.body = r->buf ?: "";
        resp.size = r->size;
        resp.truncated = r->truncated;
        if (curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME_T, &total) == CURLE_OK && total >= 0)
                resp.total_usec = (uint64_t) total;
        else
                resp.total_usec = now_usec() - r->started_usec;

        r->completing = true;
        if (r->done)
                r->done(r, &resp, r->userdata);
        request_destroy(r);
}

static void process_messages(CurlEvent *c) {
        CURLMsg *m;
        int left;

        while ((m = curl_multi_info_read(c->multi, &left))) {
                CurlRequest *r = NULL;

                if (m->msg != CURLMSG_DONE)
                        continue;
                if (curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &r) != CURLE_OK || !r)
                        continue;
                /* complete() may run user code that adds or removes handles: curl_multi_info_read()
                 * copes with that, as long as we read messages one at a time. */
                complete(r, m->data.result);
        }
}

static void socket_action(CurlEvent *c, curl_socket_t fd, int mask) {
        int running;

        c->in_curl++;
        (void) curl_multi_socket_action(c->multi, fd, mask, &running);
        c->in_curl--;
        process_messages(c);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        CurlEvent *c = userdata;
        int mask = 0;

        if (revents & (EPOLLIN | EPOLLHUP))
                mask |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                mask |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                mask |= CURL_CSELECT_ERR;
        socket_action(c, fd, mask);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        socket_action(userdata, CURL_SOCKET_TIMEOUT, 0);
        return 0;
}

static void socket_free(CurlSocket *w) {
        CurlEvent *c = w->curl;

        LIST_REMOVE(c->sockets, w);
        sd_event_source_disable_unref(w->source);
        free(w);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        CurlEvent *c = userp;
        CurlSocket *w = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (w) {
                        (void) curl_multi_assign(c->multi, fd, NULL);
                        socket_free(w);
                }
                return 0;
        }

        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;

        if (w) {
                r = sd_event_source_set_io_events(w->source, events);
                if (r < 0)
                        log_warning_errno(r, "Failed to change the events of an HTTP client socket: %m");
                return 0;
        }

        w = calloc(1, sizeof(CurlSocket));
        if (!w)
                return -1;
        w->curl = c;
        w->fd = fd;
        r = sd_event_add_io(c->event, &w->source, fd, events, on_io, c);
        if (r < 0) {
                log_warning_errno(r, "Failed to watch an HTTP client socket: %m");
                free(w);
                return -1;
        }
        (void) sd_event_source_set_description(w->source, "curl-io");
        LIST_PREPEND(c->sockets, w);
        (void) curl_multi_assign(c->multi, fd, w);
        return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
        CurlEvent *c = userp;
        int r;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        /* Requests cancelled while the loop is being torn down: nothing to time any more. */
        if (sd_event_get_state(c->event) == SD_EVENT_FINISHED)
                return 0;

        /* libcurl must not be called from this callback: even a zero timeout goes through the loop. */
        r = sd_event_source_set_time_relative(c->timer, (uint64_t) timeout_ms * USEC_PER_MSEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the HTTP client timer: %m");
                return -1;
        }
        return 0;
}

static int request_attach(CurlRequest *r) {
        CURLMcode mc;

        mc = curl_multi_add_handle(r->curl->multi, r->easy);
        if (mc != CURLM_OK) {
                log_warning("Failed to start an HTTP request: %s", curl_multi_strerror(mc));
                return mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
        }
        r->added = true;
        return 0;
}

static void fail_request(CurlRequest *r, int error, const char *message) {
        CurlResponse resp = {
                .error = error,
                .error_message = message,
                .body = "",
        };

        r->completing = true;
        if (r->done)
                r->done(r, &resp, r->userdata);
        request_destroy(r);
}

/* Adds the requests started from inside libcurl callbacks and frees those cancelled there. */
static int on_defer(sd_event_source *s, void *userdata) {
        CurlEvent *c = userdata;
        bool again = true;

        while (again) {
                again = false;
                for (CurlRequest *r = c->requests; r; r = r->next) {
                        if (r->cancelled) {
                                request_destroy(r);
                                again = true;
                                break;
                        }
                        if (!r->added && !r->completing) {
                                int k = request_attach(r);
                                if (k < 0) {
                                        fail_request(r, k, "Failed to start the request.");
                                        again = true;
                                        break;
                                }
                        }
                }
        }
        return 0;
}

static void schedule_defer(CurlEvent *c) {
        int r = sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule HTTP client work: %m");
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        CurlRequest *r = userdata;
        size_t n = size * nmemb;

        if (r->cancelled)
                return 0;       /* aborts the transfer */

        if (r->on_data) {
                int k = r->on_data(r, ptr, n, r->userdata);
                if (k < 0) {
                        r->data_error = k;
                        return 0;
                }
                return r->cancelled ? 0 : n;
        }

        if (r->truncated)
                return n;
        if (r->size + n > r->max_body) {
                n = r->max_body - r->size;
                r->truncated = true;
        }
        if (r->size + n + 1 > r->allocated) {
                size_t a = MAX(MAX(r->allocated * 2, r->size + n + 1), (size_t) 1024);
                char *b = realloc(r->buf, a);
                if (!b) {
                        r->data_error = -ENOMEM;
                        return 0;
                }
                r->buf = b;
                r->allocated = a;
        }
        memcpy(r->buf + r->size, ptr, n);
        r->size += n;
        r->buf[r->size] = 0;
        return size * nmemb;
}

int curl_event_new(sd_event *e, CurlEvent **ret) {
        static bool global_done = false;
        _cleanup_(curl_event_freep) CurlEvent *c = NULL;
        int r;

        if (!global_done) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return log_error_errno(EIO, "Failed to initialise libcurl.");
                global_done = true;
        }

        c = calloc(1, sizeof(CurlEvent));
        if (!c)
                return log_oom();
        c->event = sd_event_ref(e);

        c->multi = curl_multi_init();
        if (!c->multi)
                return log_oom();
        (void) curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
        (void) curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        (void) curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        (void) curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);

        /* Disarmed until libcurl asks for a timeout (UINT64_MAX: never; the relative variant overflows).
         * Accuracy 1 µs: the default (0) lets sd-event delay it by up to 250 ms, and libcurl often asks
         * for a zero timeout to make progress. */
        r = sd_event_add_time(e, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 1, on_timer, c);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP client timer: %m");
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->timer, "curl-timer");

        r = sd_event_add_defer(e, &c->defer, on_defer, c);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP client work source: %m");
        (void) sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->defer, "curl-defer");

        *ret = TAKE_PTR(c);
        return 0;
}

CurlEvent *curl_event_free(CurlEvent *c) {
        if (!c)
                return NULL;

        while (c->requests)
                request_destroy(c->requests);
        if (c->multi)
                curl_multi_cleanup(c->multi);
        while (c->sockets)
                socket_free(c->sockets);
        sd_event_source_disable_unref(c->timer);
        sd_event_source_disable_unref(c->defer);
        sd_event_unref(c->event);
        free(c->tls.ca_file);
        free(c->tls.cert_file);
        free(c->tls.key_file);
        free(c);
        return NULL;
}

int curl_event_set_tls(CurlEvent *c, const TlsClientSettings *tls) {
        TlsClientSettings n = {
                .ca_file = strdup(strempty(tls->ca_file)),
                .cert_file = strdup(strempty(tls->cert_file)),
                .key_file = strdup(strempty(tls->key_file)),
        };

        if (!n.ca_file || !n.cert_file || !n.key_file) {
                free(n.ca_file);
                free(n.cert_file);
                free(n.key_file);
                return -ENOMEM;
        }
        free(c->tls.ca_file);
        free(c->tls.cert_file);
        free(c->tls.key_file);
        c->tls = n;
        return 0;
}

long curl_request_response_code(CurlRequest *r) {
        long code = 0;

        if (!r || !r->easy || curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK)
                return 0;
        return code;
}

size_t curl_event_n_running(CurlEvent *c) {
        return c ? c->n_requests : 0;
}

static int add_header(struct curl_slist **l, const char *h) {
        struct curl_slist *n = curl_slist_append(*l, h);
        if (!n)
                return -ENOMEM;
        *l = n;
        return 0;
}

int curl_event_request(CurlEvent *c, const CurlRequestOptions *o, CurlCompletion done, void *userdata,
                       CurlRequest **ret) {
        CurlRequest *r;
        const char *method = o->method ?: "GET";
        int k;

        if (!o->url)
                return -EINVAL;

        r = calloc(1, sizeof(CurlRequest));
        if (!r)
                return -ENOMEM;
        r->curl = c;
        r->done = done;
        r->on_data = o->on_data;
        r->userdata = userdata;
        r->max_body = o->max_body ?: DEFAULT_MAX_BODY;
        r->started_usec = now_usec();

        r->easy = curl_easy_init();
        if (!r->easy) {
                request_free(r);
                return -ENOMEM;
        }

        /* Without an empty Expect, libcurl waits up to a second for "100 Continue" before sending a
         * body over 1 KiB, which would dominate our latencies. */
        k = add_header(&r->headers, "Expect:");
        if (k >= 0 && o->body) {
                _cleanup_free_ char *h = NULL;
                if (asprintf(&h, "Content-Type: %s", o->content_type ?: "application/json") < 0)
                        k = -ENOMEM;
                else
                        k = add_header(&r->headers, h);
        }
        if (k >= 0 && o->bearer_token) {
                _cleanup_free_ char *h = NULL;
                if (asprintf(&h, "Authorization: Bearer %s", o->bearer_token) < 0)
                        k = -ENOMEM;
                else
                        k = add_header(&r->headers, h);
        }
        for (const char *const *h = o->headers; k >= 0 && h && *h; h++)
                k = add_header(&r->headers, *h);
        if (k < 0) {
                request_free(r);
                return k;
        }

        if (o->body || !streq(method, "GET")) {
                if (o->body) {
                        r->body_copy = malloc(o->body_size + 1);
                        if (!r->body_copy) {
                                request_free(r);
                                return -ENOMEM;
                        }
                        memcpy(r->body_copy, o->body, o->body_size);
                        r->body_copy[o->body_size] = 0;
                }
        }

        (void) curl_easy_setopt(r->easy, CURLOPT_URL, o->url);
        (void) curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
        (void) curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
        (void) curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
        (void) curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_write);
        (void) curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
        (void) curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
        (void) curl_easy_setopt(r->easy, CURLOPT_TCP_NODELAY, 1L);
        (void) curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
        (void) curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
        if (o->unix_socket)
                (void) curl_easy_setopt(r->easy, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
        else {
                /* libcurl's defaults, said explicitly: an https:// peer is always verified, name included. */
                (void) curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYPEER, 1L);
                (void) curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYHOST, 2L);
                if (!isempty(c->tls.ca_file))
                        (void) curl_easy_setopt(r->easy, CURLOPT_CAINFO, c->tls.ca_file);
                if (!isempty(c->tls.cert_file)) {
                        (void) curl_easy_setopt(r->easy, CURLOPT_SSLCERT, c->tls.cert_file);
                        (void) curl_easy_setopt(r->easy, CURLOPT_SSLKEY, c->tls.key_file);
                }
        }
        if (o->timeout_usec > 0)
                (void) curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS,
                                        (long) MAX(o->timeout_usec / USEC_PER_MSEC, UINT64_C(1)));
        if (o->fresh_connect)
                (void) curl_easy_setopt(r->easy, CURLOPT_FRESH_CONNECT, 1L);
        if (o->connect_timeout_usec > 0)
                (void) curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
                                        (long) MAX(o->connect_timeout_usec / USEC_PER_MSEC, UINT64_C(1)));

        if (streq(method, "GET") && !o->body)
                (void) curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
        else if (streq(method, "HEAD"))
                (void) curl_easy_setopt(r->easy, CURLOPT_NOBODY, 1L);
        else {
                if (o->body || streq(method, "POST") || streq(method, "PUT")) {
                        (void) curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                                                (curl_off_t) (o->body ? o->body_size : 0));
                        (void) curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body_copy ?: "");
                }
                if (!streq(method, "POST"))
                        (void) curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, method);
        }

        LIST_PREPEND(c->requests, r);
        c->n_requests++;

        if (c->in_curl > 0)
                /* libcurl refuses to be re-entered from its callbacks: attach from the loop. */
                schedule_defer(c);
        else {
                k = request_attach(r);
                if (k < 0) {
                        request_destroy(r);
                        return k;
                }
        }

        if (ret)
                *ret = r;
        return 0;
}

void curl_request_cancel(CurlRequest *r) {
        if (!r || r->completing || r->cancelled)
                return;
        if (r->curl->in_curl > 0) {
                r->cancelled = true;
                schedule_defer(r->curl);
                return;
        }
        request_destroy(r);
}
