/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The seeder's peer port: the sockets systemd passed (mc-seeder.socket), or one of our own on
 * LISTEN_ADDRESS:PORT. Connections are accepted on the event loop and handed to `accepted` (the
 * daemon gives them to its seed server, seed-server.h), a burst of at most 64 per wake-up. */

#include <systemd/sd-event.h>

#include "macro.h"

typedef struct PeerListener PeerListener;

/* Called with each accepted socket (non-blocking, close-on-exec), which the callee owns. */
typedef void (*PeerAccepted)(PeerListener *l, int fd, void *userdata);

/* fds: n listening sockets (taken), or n == 0 to open address:port. */
int peer_listener_new(sd_event *e, const int *fds, size_t n, const char *address, uint16_t port,
                      PeerAccepted accepted, void *userdata, PeerListener **ret);
PeerListener *peer_listener_free(PeerListener *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(PeerListener *, peer_listener_free);

/* The port of the first socket (what the DHT announces), 0 if unknown. */
uint16_t peer_listener_port(PeerListener *l);
