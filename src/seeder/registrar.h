/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Registering manifests with the control: PUT /api/contents/{id} with the .torrent
 * (Content-Type application/x-bittorrent) and the user token, until a replica accepts it.
 *
 * Each content is one entry. A try goes through the control replicas in order (a replica that cannot
 * be reached or answers 5xx, 408 or 429 passes the try on to the next); when all fail, the entry
 * waits (1 s, doubling up to 5 minutes) and tries again, for as long as the content is in the store.
 * 200 or 201 is success; any other answer of a replica (400, 401, 403, 409, 413, ...) is a refusal
 * that trying again would not change: the entry stops until the daemon restarts (or the content is
 * added again). Both outcomes, and the first failure of a run of retries, are logged as events
 * (content_registered, content_register_failed) and shown in the entry's state.
 *
 * At most REGISTRAR_IN_FLIGHT requests run at once (a daemon starting with a big store registers
 * everything again: the control answers 200 for what it has). The list of replicas can change at any
 * time (found in the DHT); with none known, entries wait until there is one. */

#include <systemd/sd-event.h>

#include "curl-event.h"

#define REGISTRAR_IN_FLIGHT 4

typedef struct Registrar Registrar;

typedef enum RegistrationState {
        REGISTRATION_PENDING,           /* not accepted yet; being tried, or waiting to be */
        REGISTRATION_DONE,              /* a control accepted it */
        REGISTRATION_REFUSED,           /* a control refused it; not tried again */
        REGISTRATION_OFF,               /* no control is configured: nothing to register with */
        _REGISTRATION_STATE_MAX,
} RegistrationState;

/* "pending", "registered", "refused", "off". */
const char *registration_state_to_string(RegistrationState s);

/* Called whenever an entry's state changes (for the D-Bus list, and tests waiting on it). */
typedef void (*RegistrarChanged)(Registrar *r, const char *id, RegistrationState state, void *userdata);

/* enabled false: every entry is REGISTRATION_OFF (no CONTROL_URLS, no DHT). */
int registrar_new(sd_event *e, CurlEvent *curl, const char *token, bool enabled, RegistrarChanged changed,
                  void *userdata, Registrar **ret);
Registrar *registrar_free(Registrar *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Registrar *, registrar_free);

/* Replaces the replicas (copied; trailing slashes dropped, duplicates once). Entries waiting for a
 * replica are tried at once. */
int registrar_set_urls(Registrar *r, char *const *urls);

/* Starts registering content id with its .torrent (copied). An entry that exists is tried again
 * from the start (a refused one too). */
int registrar_add(Registrar *r, const char *id, const void *torrent, size_t size);
void registrar_remove(Registrar *r, const char *id);

/* REGISTRATION_PENDING for an unknown id. *ret_error (may be NULL) gets the last failure, or NULL. */
RegistrationState registrar_state(Registrar *r, const char *id, const char **ret_error);
