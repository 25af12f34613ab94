/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* HTTP client requests on an sd-event loop: libcurl's multi interface, its sockets watched with
 * sd_event_add_io() and its timer mapped onto one one-shot sd-event timer, so that no request ever
 * blocks the loop. A request is started with curl_event_request() and ends with exactly one call of
 * its completion callback, unless it is cancelled first (then never).
 *
 * Bodies are either collected (up to max_body bytes; more marks the response truncated) or, when
 * on_data is set, handed over as they arrive (for streams: Docker's logs and events, a long pull).
 * A unix socket path (the Docker engine's) replaces the TCP connection for a request. */

#include <systemd/sd-event.h>

#include "macro.h"
#include "tls-client.h"

typedef struct CurlEvent CurlEvent;
typedef struct CurlRequest CurlRequest;

typedef struct CurlResponse {
        int error;                      /* 0, or negative errno when no HTTP answer came (then code is 0) */
        const char *error_message;      /* curl's description of error; NULL when error == 0 */
        long code;                      /* HTTP status */
        const char *content_type;       /* may be NULL */
        const char *body;               /* NUL-terminated; "" for none or when streamed to on_data */
        size_t size;
        bool truncated;                 /* the body was longer than max_body */
        bool tls_failed;                /* error is TLS's: the peer's certificate did not verify, or ours
                                         * could not be used (error_message says which) */
        uint64_t total_usec;            /* from the start of the request to its end */
} CurlResponse;

/* Called once when the request has ended. The response (and its body) is valid during the call only.
 * The request is freed after the callback returns; the callback may start and cancel other requests. */
typedef void (*CurlCompletion)(CurlRequest *req, const CurlResponse *resp, void *userdata);

/* Called with each piece of a streamed body. A negative return aborts the request (its completion
 * then reports that error). May be called from within libcurl: it may start new requests and cancel
 * any request, including this one. */
typedef int (*CurlDataHandler)(CurlRequest *req, const void *data, size_t size, void *userdata);

typedef struct CurlRequestOptions {
        const char *method;             /* "GET" when NULL; "POST", "DELETE", ... */
        const char *url;                /* with a unix socket: "http://localhost/path" */
        const char *unix_socket;        /* NULL for TCP */
        const char *body;               /* copied; NULL for none (a POST then sends an empty body) */
        size_t body_size;
        const char *content_type;       /* of body; "application/json" when body is set and this is NULL */
        const char *bearer_token;       /* adds "Authorization: Bearer ..." */
        const char *const *headers;     /* further "Name: value" lines, NULL-terminated, or NULL */
        uint64_t timeout_usec;          /* the whole request; 0 for none */
        uint64_t connect_timeout_usec;  /* 0: libcurl's default */
        size_t max_body;                /* collected body cap; 0: 16 MiB */
        CurlDataHandler on_data;        /* stream the body instead of collecting it */
        bool fresh_connect;             /* a new connection, not one kept alive: is the server accepting now? */
} CurlRequestOptions;

int curl_event_new(sd_event *e, CurlEvent **ret);
/* Cancels every running request (without completion calls) and frees everything. */
CurlEvent *curl_event_free(CurlEvent *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(CurlEvent *, curl_event_free);

/* TLS for every request over TCP from now on (copied): CA file, client certificate and key. Requests
 * over a unix socket (the Docker engine's) get none of it. */
int curl_event_set_tls(CurlEvent *c, const TlsClientSettings *tls);

/* Starts a request. ret (may be NULL) gets a handle that stays valid until the completion callback
 * returns or the request is cancelled. */
int curl_event_request(CurlEvent *c, const CurlRequestOptions *o, CurlCompletion done, void *userdata,
                       CurlRequest **ret);

/* Ends a request early; its completion is never called. Safe from any callback. */
void curl_request_cancel(CurlRequest *r);

/* The HTTP status once the headers have arrived (in a data handler), 0 before. */
long curl_request_response_code(CurlRequest *r);

size_t curl_event_n_running(CurlEvent *c);
