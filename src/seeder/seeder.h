/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The mc-seeder daemon: the store (store.h) on one sd-event loop, with
 *
 *   - adds running on threads of their own (import-job.h), so that the loop keeps serving and
 *     pinging the watchdog while a file is copied and hashed;
 *   - the registration of every content's manifest with the control (registrar.h), from the start
 *     and after each add;
 *   - the DHT (dht-daemon.h): each content announced under the first 20 bytes of its id with the
 *     peer port, re-announced by the DHT node (DHT_REPUBLISH), and the controls found there;
 *   - the peer listener (peer-listener.h), whose connections the seed server serves
 *     (seed-server.h: the swarm server over the io_uring block sender, a content per stored file);
 *   - org.mutualcloud.Seeder1 on the system bus (seeder-bus.c).
 *
 * seeder-main.c runs this or, given a command, the command line (seeder-cli.h). */

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "curl-event.h"
#include "dht.h"
#include "import-job.h"
#include "list.h"
#include "peer-listener.h"
#include "registrar.h"
#include "seed-server.h"
#include "seeder-config.h"
#include "store.h"

/* Adds running at once; more are refused (-EBUSY) rather than queued without bound. */
#define SEEDER_ADDS_MAX 8

typedef struct Seeder Seeder;

/* An add in progress: the D-Bus call that asked for it, answered when it ends. */
typedef struct SeederAdd SeederAdd;
struct SeederAdd {
        Seeder *seeder;
        ImportJob *job;
        sd_bus_message *call;
        LIST_FIELDS(SeederAdd);
};

struct Seeder {
        SeederConfig *config;           /* borrowed */
        sd_event *event;
        Store *store;
        CurlEvent *curl;
        Registrar *registrar;
        Dht *dht;
        char **dht_control_urls;
        sd_event_source *lookup_timer;
        bool lookup_running;
        PeerListener *peers;
        uint16_t peer_port;
        SeedServer *server;
        sd_bus *bus;
        sd_bus_slot *bus_slot;
        SeederAdd *adds;
        unsigned n_adds;
};

int seeder_new(SeederConfig *config, Seeder **ret);
Seeder *seeder_free(Seeder *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Seeder *, seeder_free);
int seeder_start(Seeder *s);

/* Starts adding the file open at fd (taken); the D-Bus call is answered when the add ends. */
int seeder_add_fd(Seeder *s, int fd, sd_bus_message *call);
/* -ENOENT for an unknown id. */
int seeder_remove(Seeder *s, const char *id);
/* The list as JSON: [{"id", "size", "added", "registration", "registration_error"}], oldest first. */
char *seeder_list_json(Seeder *s);
uint64_t seeder_store_bytes(Seeder *s);

/* seeder-dht.c */
int seeder_dht_start(Seeder *s);
void seeder_dht_announce(Seeder *s, const char *id);
void seeder_dht_unannounce(Seeder *s, const char *id);
/* The configured controls, then those found in the DHT, to the registrar. */
void seeder_apply_control_urls(Seeder *s);

/* seeder-bus.c */
int seeder_bus_init(Seeder *s);
void seeder_bus_content_added(Seeder *s, const char *id);
void seeder_bus_content_removed(Seeder *s, const char *id);
/* Peers, BytesServed, PeerViolations, PeersRefused (the seed server calls it at most once a second). */
void seeder_bus_peers_changed(Seeder *s);

#define SEEDER_BUS_NAME "org.mutualcloud.Seeder1"
#define SEEDER_BUS_PATH "/org/mutualcloud/Seeder1"
#define SEEDER_BUS_INTERFACE "org.mutualcloud.Seeder1"
