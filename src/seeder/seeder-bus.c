/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* org.mutualcloud.Seeder1 at /org/mutualcloud/Seeder1: the store's contents (Add, AddFd, Remove,
 * List, GetTorrent), counts as properties (the serving ones from the seed server's counters,
 * changes signalled at most once a second), and a signal per content added or removed. Add and AddFd answer when
 * the file is stored (copied and hashed: seconds for a large file), with the content id. */

#include <fcntl.h>

#include "bus-util.h"
#include "log.h"
#include "seeder.h"

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Seeder *s = userdata;
        SwarmServerStats st = {};

        if (s->server)
                seed_server_get_stats(s->server, &st);
        if (streq(property, "Contents"))
                return sd_bus_message_append(reply, "u", (uint32_t) store_n_contents(s->store));
        if (streq(property, "StoreBytes"))
                return sd_bus_message_append(reply, "t", seeder_store_bytes(s));
        if (streq(property, "Peers"))
                return sd_bus_message_append(reply, "u", (uint32_t) st.connections);
        if (streq(property, "BytesServed"))
                /* Block payload handed to the block sender since start. */
                return sd_bus_message_append(reply, "t", st.bytes_sent);
        if (streq(property, "PeerViolations"))
                return sd_bus_message_append(reply, "t", seed_server_violations(&st));
        if (streq(property, "PeersRefused"))
                return sd_bus_message_append(reply, "t", seed_server_refused(&st));
        if (streq(property, "SendPath"))
                return sd_bus_message_append(reply, "s",
                                             s->server ? block_send_path_to_string(seed_server_send_path(s->server)) : "");
        if (streq(property, "PeerPort"))
                return sd_bus_message_append(reply, "q", s->peer_port);
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s.", property);
}

/* Starts the add; its answer comes when it ends (seeder-daemon.c). */
static int start_add(sd_bus_message *m, Seeder *s, int fd, sd_bus_error *error) {
        int r;

        r = seeder_add_fd(s, fd, m);
        if (r == -EBUSY)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "%d adds are running; try again when one has ended.", SEEDER_ADDS_MAX);
        if (r == -ENOSPC)
                return sd_bus_error_set_errnof(error, ENOSPC, "The store would exceed STORE_MAX_BYTES.");
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r, "Cannot start the add: %s", strerror(-r));
        return 1;       /* answered later */
}

static int method_add(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Seeder *s = userdata;
        const char *path, *reason = NULL;
        int r, fd;

        r = bus_check_privileged(m, s->config->bus_group, error);
        if (r <= 0)
                return r;
        r = sd_bus_message_read(m, "s", &path);
        if (r < 0)
                return r;
        if (path[0] != '/')
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "\"%s\" is not an absolute path.", path);
        /* Opened as the daemon's user, in its sandbox: what it cannot read, AddFd can still take. */
        fd = content_open_source(path, &reason);
        if (fd < 0)
                return sd_bus_error_set_errnof(error, -fd, "%s: %s", path, reason ?: strerror(-fd));
        return start_add(m, s, fd, error);
}

static int method_add_fd(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Seeder *s = userdata;
        int r, fd;

        r = bus_check_privileged(m, s->config->bus_group, error);
        if (r <= 0)
                return r;
        r = sd_bus_message_read(m, "h", &fd);
        if (r < 0)
                return r;
        /* The message owns its descriptor; the add needs one of its own. */
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot take the descriptor: %m");
        return start_add(m, s, fd, error);
}

static int method_remove(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Seeder *s = userdata;
        const char *id;
        int r;

        r = bus_check_privileged(m, s->config->bus_group, error);
        if (r <= 0)
                return r;
        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        if (!content_id_name_valid(id) || strlen(id) != 2 * TORRENT_ID_SIZE)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "\"%s\" is not a content id (64 lowercase hex digits).", id);
        r = seeder_remove(s, id);
        if (r == -ENOENT)
                return sd_bus_error_set_errnof(error, ENOENT, "No content %s in the store.", id);
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r, "Cannot remove %s: %s", id, strerror(-r));
        return sd_bus_reply_method_return(m, NULL);
}

static int method_list(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *json = seeder_list_json(userdata);

        if (!json)
                return -ENOMEM;
        return sd_bus_reply_method_return(m, "s", json);
}

static int method_get_torrent(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ uint8_t *torrent = NULL;
        Seeder *s = userdata;
        const char *id;
        size_t size;
        int r;

        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        r = store_torrent(s->store, id, &torrent, &size);
        if (r == -ENOENT)
                return sd_bus_error_set_errnof(error, ENOENT, "No content %s in the store.", id);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(reply, 'y', torrent, size);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static const sd_bus_vtable seeder_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Contents", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StoreBytes", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Peers", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BytesServed", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PeerViolations", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PeersRefused", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PeerPort", "q", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("SendPath", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("Add", SD_BUS_ARGS("s", path), SD_BUS_RESULT("s", id), method_add,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("AddFd", SD_BUS_ARGS("h", fd), SD_BUS_RESULT("s", id), method_add_fd,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Remove", SD_BUS_ARGS("s", id), SD_BUS_NO_RESULT, method_remove,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("List", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", json), method_list, 0),
        SD_BUS_METHOD_WITH_ARGS("GetTorrent", SD_BUS_ARGS("s", id), SD_BUS_RESULT("ay", torrent), method_get_torrent, 0),
        SD_BUS_SIGNAL_WITH_ARGS("ContentAdded", SD_BUS_ARGS("s", id), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ContentRemoved", SD_BUS_ARGS("s", id), 0),
        SD_BUS_VTABLE_END,
};

int seeder_bus_init(Seeder *s) {
        int r;

        r = bus_open_and_request_name(s->event, SEEDER_BUS_NAME, &s->bus);
        if (r < 0)
                return r;
        r = sd_bus_add_object_vtable(s->bus, &s->bus_slot, SEEDER_BUS_PATH, SEEDER_BUS_INTERFACE, seeder_vtable, s);
        if (r < 0)
                return log_error_errno(r, "Cannot publish %s: %m", SEEDER_BUS_PATH);
        return 0;
}

static void contents_changed(Seeder *s, const char *signal, const char *id) {
        if (!s->bus)
                return;
        (void) sd_bus_emit_signal(s->bus, SEEDER_BUS_PATH, SEEDER_BUS_INTERFACE, signal, "s", id);
        (void) sd_bus_emit_properties_changed(s->bus, SEEDER_BUS_PATH, SEEDER_BUS_INTERFACE, "Contents",
                                              "StoreBytes", NULL);
}

void seeder_bus_content_added(Seeder *s, const char *id) {
        contents_changed(s, "ContentAdded", id);
}

void seeder_bus_content_removed(Seeder *s, const char *id) {
        contents_changed(s, "ContentRemoved", id);
}

void seeder_bus_peers_changed(Seeder *s) {
        if (s->bus)
                (void) sd_bus_emit_properties_changed(s->bus, SEEDER_BUS_PATH, SEEDER_BUS_INTERFACE, "Peers",
                                                      "BytesServed", "PeerViolations", "PeersRefused", NULL);
}
