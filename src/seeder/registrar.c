/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <json-c/json.h>

#include "daemon-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "registrar.h"
#include "strv.h"

#define BACKOFF_MIN_USEC (1 * USEC_PER_SEC)
#define BACKOFF_MAX_USEC (300 * USEC_PER_SEC)
/* One PUT, connection included: a manifest is small, and a replica that takes longer is passed over
 * for the next. */
#define REQUEST_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define CONNECT_TIMEOUT_USEC (5 * USEC_PER_SEC)

typedef struct Entry Entry;
struct Entry {
        Registrar *registrar;
        char id[65];
        uint8_t *torrent;
        size_t size;
        RegistrationState state;
        char *error;                    /* the last failure, for the list */
        uint64_t backoff_usec;
        uint64_t next_usec;             /* CLOCK_MONOTONIC: not before */
        CurlRequest *request;
        size_t url_index;               /* the replica of the current try */
        bool warned;                    /* this run of failures was logged at warning level */
        LIST_FIELDS(Entry);
};

struct Registrar {
        sd_event *event;
        CurlEvent *curl;                /* borrowed */
        char *token;
        bool enabled;
        char **urls;
        Entry *entries;
        unsigned in_flight;
        sd_event_source *timer;
        RegistrarChanged changed;
        void *userdata;
};

static const char *const state_names[_REGISTRATION_STATE_MAX] = {
        [REGISTRATION_PENDING] = "pending",
        [REGISTRATION_DONE] = "registered",
        [REGISTRATION_REFUSED] = "refused",
        [REGISTRATION_OFF] = "off",
};

const char *registration_state_to_string(RegistrationState s) {
        return s >= 0 && s < _REGISTRATION_STATE_MAX ? state_names[s] : NULL;
}

static Entry *find(Registrar *r, const char *id) {
        for (Entry *e = r->entries; e; e = e->next)
                if (streq(e->id, id))
                        return e;
        return NULL;
}

static void entry_cancel(Entry *e) {
        if (!e->request)
                return;
        curl_request_cancel(e->request);
        e->request = NULL;
        e->registrar->in_flight--;
}

static void entry_free(Entry *e) {
        entry_cancel(e);
        free(e->torrent);
        free(e->error);
        free(e);
}

Registrar *registrar_free(Registrar *r) {
        if (!r)
                return NULL;
        while (r->entries) {
                Entry *e = r->entries;
                LIST_REMOVE(r->entries, e);
                entry_free(e);
        }
        r->timer = sd_event_source_disable_unref(r->timer);
        strv_free(r->urls);
        free(r->token);
        sd_event_unref(r->event);
        free(r);
        return NULL;
}

static void set_error(Entry *e, const char *fmt, ...) _printf_(2, 3);
static void set_error(Entry *e, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        free(e->error);
        e->error = s;
}

static void notify(Entry *e) {
        Registrar *r = e->registrar;

        if (r->changed)
                r->changed(r, e->id, e->state, r->userdata);
}

static void pump(Registrar *r);
static int try_url(Entry *e);

/* Every replica failed this try: wait and try again. */
static void round_failed(Entry *e, const char *url, long code) {
        char status[32];

        e->backoff_usec = MIN(MAX(e->backoff_usec * 2, BACKOFF_MIN_USEC), BACKOFF_MAX_USEC);
        e->next_usec = now_usec() + e->backoff_usec;
        snprintf(status, sizeof(status), "%ld", code);
        /* The first failure of a run is worth a warning; its repetitions every few minutes are not. */
        log_event(e->warned ? LOG_DEBUG : LOG_WARNING, MC_EVENT_CONTENT_REGISTER_FAILED,
                  /* The last two only when there was a replica to try, and it answered. */
                  LOG_FIELDS("CONTENT_ID", e->id, "MC_REASON", strna(e->error), "MC_RETRY", "yes",
                             "CONTROL_URL", url, "HTTP_STATUS", code > 0 ? status : NULL),
                  "Content %s is not registered with the control yet: %s. Trying again in %" PRIu64 " s.",
                  e->id, strna(e->error), e->backoff_usec / USEC_PER_SEC);
        e->warned = true;
        notify(e);
}

static void on_put_done(CurlRequest *req, const CurlResponse *resp, void *userdata) {
        Entry *e = userdata;
        Registrar *r = e->registrar;
        _cleanup_free_ char *url = NULL;
        char status[32];

        e->request = NULL;
        r->in_flight--;
        url = strdup(e->url_index < strv_length(r->urls) ? r->urls[e->url_index] : "");

        if (resp->error < 0 || resp->code >= 500 || resp->code == 408 || resp->code == 429) {
                /* This replica cannot take it now; the next one may. */
                if (resp->tls_failed)
                        tls_client_log_failure(url, resp->error_message);
                if (resp->error < 0)
                        set_error(e, "%s: %s", strna(url), resp->error_message ?: strerror(-resp->error));
                else
                        set_error(e, "%s answered %ld", strna(url), resp->code);
                e->url_index++;
                if (e->url_index < strv_length(r->urls) && try_url(e) >= 0)
                        return;
                round_failed(e, url, resp->error < 0 ? 0 : resp->code);
                pump(r);
                return;
        }

        snprintf(status, sizeof(status), "%ld", resp->code);
        if (resp->code == 200 || resp->code == 201) {
                e->state = REGISTRATION_DONE;
                free(e->error);
                e->error = NULL;
                log_event(LOG_INFO, MC_EVENT_CONTENT_REGISTERED,
                          LOG_FIELDS("CONTENT_ID", e->id, "CONTROL_URL", strna(url), "HTTP_STATUS", status),
                          "Content %s is registered with the control %s (%s).", e->id, strna(url),
                          resp->code == 201 ? "new there" : "it had it already");
        } else {
                _cleanup_(json_object_putp) json_object *body = NULL;
                const char *why = NULL;

                /* The control explains a refusal in {"error": ...} (docs/api.md). */
                if (json_parse_strict(resp->body, resp->size, &body, NULL) >= 0)
                        (void) json_get_string(body, "error", &why);
                set_error(e, "%s refused it: %ld %s", strna(url), resp->code, why ?: "");
                e->state = REGISTRATION_REFUSED;
                log_event(LOG_WARNING, MC_EVENT_CONTENT_REGISTER_FAILED,
                          LOG_FIELDS("CONTENT_ID", e->id, "CONTROL_URL", strna(url), "HTTP_STATUS", status,
                                     "MC_REASON", strna(e->error), "MC_RETRY", "no"),
                          "The control refused content %s: %s. It is served all the same; not trying again.",
                          e->id, strna(e->error));
        }
        /* Done with this content for now: free its copy of the manifest. */
        free(e->torrent);
        e->torrent = NULL;
        e->size = 0;
        notify(e);
        pump(r);
}

static int try_url(Entry *e) {
        Registrar *r = e->registrar;
        _cleanup_free_ char *url = NULL;
        int k;

        assert(e->url_index < strv_length(r->urls));
        if (asprintf(&url, "%s/api/contents/%s", r->urls[e->url_index], e->id) < 0)
                return -ENOMEM;
        k = curl_event_request(r->curl, &(CurlRequestOptions) {
                        .method = "PUT",
                        .url = url,
                        .body = (const char *) e->torrent,
                        .body_size = e->size,
                        .content_type = "application/x-bittorrent",
                        .bearer_token = isempty(r->token) ? NULL : r->token,
                        .timeout_usec = REQUEST_TIMEOUT_USEC,
                        .connect_timeout_usec = CONNECT_TIMEOUT_USEC,
                        .max_body = 64 * 1024,
                }, on_put_done, e, &e->request);
        if (k < 0) {
                set_error(e, "cannot send a request: %s", strerror(-k));
                return k;
        }
        r->in_flight++;
        log_debug("Registering content %s with %s.", e->id, r->urls[e->url_index]);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        pump(userdata);
        return 0;
}

/* Starts the tries that are due, as many as may run, and sets the timer for the next one. */
static void pump(Registrar *r) {
        uint64_t now = now_usec(), next = UINT64_MAX;

        if (!r->enabled || strv_length(r->urls) == 0)
                return;
        for (Entry *e = r->entries; e; e = e->next) {
                if (e->state != REGISTRATION_PENDING || e->request)
                        continue;
                if (e->next_usec > now) {
                        next = MIN(next, e->next_usec);
                        continue;
                }
                if (r->in_flight >= REGISTRAR_IN_FLIGHT)
                        break;          /* the next completion pumps again */
                e->url_index = 0;
                if (try_url(e) < 0)
                        round_failed(e, r->urls[0], 0);
        }
        if (next == UINT64_MAX)
                return;
        if (!r->timer) {
                if (sd_event_add_time(r->event, &r->timer, CLOCK_MONOTONIC, next, 0, on_timer, r) < 0)
                        log_warning("Cannot arm the registration timer; registrations wait for the next change.");
                return;
        }
        (void) sd_event_source_set_time(r->timer, next);
        (void) sd_event_source_set_enabled(r->timer, SD_EVENT_ONESHOT);
}

int registrar_new(sd_event *e, CurlEvent *curl, const char *token, bool enabled, RegistrarChanged changed,
                  void *userdata, Registrar **ret) {
        Registrar *r;

        assert(e);
        assert(curl);
        assert(ret);

        r = calloc(1, sizeof(Registrar));
        if (!r)
                return -ENOMEM;
        r->event = sd_event_ref(e);
        r->curl = curl;
        r->enabled = enabled;
        r->changed = changed;
        r->userdata = userdata;
        if (token && !(r->token = strdup(token))) {
                registrar_free(r);
                return -ENOMEM;
        }
        *ret = r;
        return 0;
}

int registrar_set_urls(Registrar *r, char *const *urls) {
        _cleanup_strv_free_ char **l = NULL;

        for (char *const *u = urls; u && *u; u++) {
                _cleanup_free_ char *s = strdup(*u);
                size_t n;

                if (!s)
                        return -ENOMEM;
                n = strlen(s);
                while (n > 0 && s[n - 1] == '/')
                        s[--n] = 0;
                if (!strv_contains(l, s) && strv_extend(&l, s) < 0)
                        return -ENOMEM;
        }
        strv_free(r->urls);
        r->urls = TAKE_PTR(l);
        pump(r);
        return 0;
}

int registrar_add(Registrar *r, const char *id, const void *torrent, size_t size) {
        Entry *e;

        assert(strlen(id) < sizeof(e->id));
        e = find(r, id);
        if (!e) {
                e = calloc(1, sizeof(Entry));
                if (!e)
                        return -ENOMEM;
                e->registrar = r;
                strcpy(e->id, id);
                LIST_PREPEND(r->entries, e);
        }
        entry_cancel(e);
        free(e->torrent);
        e->torrent = malloc(MAX(size, (size_t) 1));
        if (!e->torrent) {
                LIST_REMOVE(r->entries, e);
                entry_free(e);
                return -ENOMEM;
        }
        memcpy(e->torrent, torrent, size);
        e->size = size;
        e->state = r->enabled ? REGISTRATION_PENDING : REGISTRATION_OFF;
        e->backoff_usec = 0;
        e->next_usec = 0;
        e->warned = false;
        free(e->error);
        e->error = NULL;
        if (!r->enabled) {
                free(e->torrent);
                e->torrent = NULL;
        }
        pump(r);
        return 0;
}

void registrar_remove(Registrar *r, const char *id) {
        Entry *e = find(r, id);

        if (!e)
                return;
        LIST_REMOVE(r->entries, e);
        entry_free(e);
        pump(r);
}

RegistrationState registrar_state(Registrar *r, const char *id, const char **ret_error) {
        Entry *e = find(r, id);

        if (ret_error)
                *ret_error = e ? e->error : NULL;
        if (!e)
                return r->enabled ? REGISTRATION_PENDING : REGISTRATION_OFF;
        return e->state;
}
