/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <json-c/json.h>
#include <sys/stat.h>
#include <time.h>

#include "curl-event.h"
#include "daemon-util.h"
#include "json-util.h"
#include "log.h"
#include "magnet.h"
#include "registrar.h"
#include "seeder-cli.h"
#include "seeder.h"
#include "store.h"

/* An add answers when the file is copied and hashed: minutes for the largest files. */
#define ADD_TIMEOUT_USEC (24 * 3600 * USEC_PER_SEC)
#define CALL_TIMEOUT_USEC (60 * USEC_PER_SEC)

typedef struct Command {
        const char *name;
        const char *args;
        const char *help;
        unsigned n_args;
        int (*run)(SeederConfig *c, sd_bus *bus, char **args, bool json);
} Command;

static int cmd_add(SeederConfig *c, sd_bus *bus, char **args, bool json);
static int cmd_list(SeederConfig *c, sd_bus *bus, char **args, bool json);
static int cmd_remove(SeederConfig *c, sd_bus *bus, char **args, bool json);
static int cmd_torrent(SeederConfig *c, sd_bus *bus, char **args, bool json);
static int cmd_magnet(SeederConfig *c, sd_bus *bus, char **args, bool json);

static const Command commands[] = {
        { "add", "FILE",
          "Copy FILE into the store (a reflink where the filesystem can), hash it, register its manifest with\n"
          "the control and announce it in the DHT. Prints the content id (64 hex digits) and nothing else.\n"
          "The running daemon is handed the open file, so it can read whatever you can; with no daemon on\n"
          "the bus, the file is stored with the daemon's configuration (this needs write access to the\n"
          "store), registered once if a control answers, and announced when the daemon starts.",
          1, cmd_add },
        { "list", "[--json]",
          "The contents of the store: id, size, when added, and (from the daemon) whether the control has\n"
          "the manifest. --json prints [{\"id\", \"size\", \"added_usec\", \"registration\"}, ...].",
          0, cmd_list },
        { "remove", "ID", "Remove content ID from the store. Exit status 2 when the store has no such content.",
          1, cmd_remove },
        { "torrent", "ID", "Write the .torrent of content ID to standard output (not to a terminal).",
          1, cmd_torrent },
        { "magnet", "ID", "Print the magnet link of content ID (magnet:?xt=urn:btmh:1220<ID>).",
          1, cmd_magnet },
};

static const Command *find_command(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(commands[i].name, name))
                        return commands + i;
        return NULL;
}

bool seeder_cli_is_command(const char *word) {
        return find_command(word) != NULL;
}

void seeder_cli_help(const char *command) {
        const Command *c = find_command(command);

        assert(c);
        printf("mc-seeder [OPTIONS...] %s %s\n\n%s\n\nOptions: see mc-seeder --help (the daemon's configuration "
               "names the store, the controls and the token).\n", c->name, c->args, c->help);
}

static bool id_valid(const char *id) {
        return content_id_name_valid(id) && strlen(id) == 2 * TORRENT_ID_SIZE;
}

/* The daemon on the bus, or NULL (0) when none is there: then the commands use the store. */
static int connect_daemon(SeederConfig *c, sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r, has = 0;

        *ret = NULL;
        if (!c->bus)
                return 0;
        r = sd_bus_open_system(&bus);
        if (r < 0) {
                log_debug_errno(r, "No system bus (%m); using the store directly.");
                return 0;
        }
        r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "NameHasOwner", &e, &reply, "s", SEEDER_BUS_NAME);
        if (r >= 0)
                r = sd_bus_message_read(reply, "b", &has);
        if (r < 0 || !has) {
                log_debug("No %s on the bus; using the store directly.", SEEDER_BUS_NAME);
                return 0;
        }
        *ret = TAKE_PTR(bus);
        return 1;
}

static int bus_failed(int r, const sd_bus_error *e, const char *what) {
        if (sd_bus_error_is_set(e))
                log_error("%s: %s", what, e->message ?: e->name);
        else
                log_error_errno(r, "%s: %m", what);
        return sd_bus_error_get_errno(e) == ENOENT ? SEEDER_EXIT_NOT_FOUND : 1;
}

/* The store for writing, with an error that says what to do. */
static int open_store_writable(Store **ret) {
        const char *dir = seeder_state_directory();
        int r;

        r = store_open(dir, STORE_WRITE, ret);
        if (r == -EBUSY)
                return log_error_errno(r, "Another mc-seeder holds the store %s (a daemon with BUS=no, or another add); "
                                       "no daemon answers on the bus.", dir);
        if (r == -EACCES || r == -EPERM || r == -EROFS)
                return log_error_errno(r, "No mc-seeder daemon on the bus, and no write access to the store %s (%m): "
                                       "start the daemon (systemctl start mc-seeder), or run this as root.", dir);
        if (r < 0)
                return log_error_errno(r, "Cannot open the store %s: %m", dir);
        return 0;
}

static int open_store_readable(Store **ret) {
        const char *dir = seeder_state_directory();
        int r;

        r = store_open(dir, 0, ret);
        if (r < 0)
                return log_error_errno(r, "No mc-seeder daemon on the bus, and the store %s cannot be read: %m", dir);
        return 0;
}

/* -- add */

typedef struct RegisterOnce {
        sd_event *event;
        RegistrationState state;
        bool tried;
} RegisterOnce;

static void on_registered_once(Registrar *r, const char *id, RegistrationState state, void *userdata) {
        RegisterOnce *o = userdata;

        /* Called when the state changes and after each failed try: either way the first try is over. */
        o->state = state;
        o->tried = true;
        (void) sd_event_exit(o->event, 0);
}

/* Without a daemon: one try to register the manifest, so that a control knows the content at once
 * when it can. The daemon registers everything in the store when it starts. */
static void register_once(SeederConfig *c, Store *store, const char *id) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(curl_event_freep) CurlEvent *curl = NULL;
        _cleanup_(registrar_freep) Registrar *reg = NULL;
        _cleanup_free_ uint8_t *torrent = NULL;
        RegisterOnce o = {};
        const char *error = NULL;
        size_t size;

        if (strv_length(c->control_urls) == 0) {
                log_info("No CONTROL_URLS: the daemon registers the content when it starts.");
                return;
        }
        if (sd_event_new(&e) < 0 || curl_event_new(e, &curl) < 0 || curl_event_set_tls(curl, &c->tls) < 0 ||
            registrar_new(e, curl, c->token, true, on_registered_once, &o, &reg) < 0 ||
            store_torrent(store, id, &torrent, &size) < 0) {
                log_oom();
                return;
        }
        o.event = e;
        if (registrar_set_urls(reg, c->control_urls) < 0 || registrar_add(reg, id, torrent, size) < 0)
                return (void) log_oom();
        (void) sd_event_loop(e);
        if (registrar_state(reg, id, &error) != REGISTRATION_DONE)
                log_warning("The content is stored but not registered with the control (%s); the daemon tries again "
                            "when it starts.", strna(error));
}

static int add_local(SeederConfig *c, int fd, const char *path) {
        _cleanup_(store_freep) Store *store = NULL;
        ContentImport imp = {};
        const char *reason = NULL;
        char id[TORRENT_ID_HEX_SIZE], size[32];
        int r;

        r = open_store_writable(&store);
        if (r < 0)
                return r;
        if (c->store_max_bytes > 0) {
                uint64_t total = 0;
                struct stat st;

                for (size_t i = 0; i < store_n_contents(store); i++)
                        total += store_content(store, i)->size;
                if (fstat(fd, &st) >= 0 && total + (uint64_t) st.st_size > (uint64_t) c->store_max_bytes)
                        return log_error_errno(ENOSPC, "%s: the store would exceed STORE_MAX_BYTES.", path);
        }
        r = content_import(store_dir_fd(store), store_path(store), fd, &imp, &reason, NULL);
        if (r < 0)
                return log_error_errno(r, "%s: %s", path, reason ?: strerror(-r));
        memcpy(id, imp.id, sizeof(id));
        snprintf(size, sizeof(size), "%" PRIu64, imp.size);
        r = store_insert(store, &imp);
        content_import_done(&imp);
        if (r < 0)
                return log_oom();
        if (r == 0)
                log_event(LOG_INFO, MC_EVENT_CONTENT_ADDED, LOG_FIELDS("CONTENT_ID", id, "CONTENT_SIZE", size),
                          "Content %s added (%s bytes).", id, size);
        register_once(c, store, id);
        printf("%s\n", id);
        return 0;
}

static int cmd_add(SeederConfig *c, sd_bus *bus, char **args, bool json) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_close_ int fd = -1;
        const char *path = args[0], *reason = NULL, *id;
        int r;

        /* Opened here, as the caller: the daemon gets the descriptor, not the name. */
        fd = content_open_source(path, &reason);
        if (fd < 0)
                return log_error_errno(fd, "%s: %s", path, reason ?: strerror(-fd)), 1;
        if (!bus)
                return add_local(c, fd, path) < 0 ? 1 : 0;

        r = sd_bus_message_new_method_call(bus, &m, SEEDER_BUS_NAME, SEEDER_BUS_PATH, SEEDER_BUS_INTERFACE, "AddFd");
        if (r >= 0)
                r = sd_bus_message_append(m, "h", fd);
        if (r < 0)
                return log_error_errno(r, "Cannot build the call: %m"), 1;
        r = sd_bus_call(bus, m, ADD_TIMEOUT_USEC, &e, &reply);
        if (r < 0) {
                _cleanup_free_ char *what = NULL;
                return bus_failed(r, &e, asprintf(&what, "Cannot add %s", path) >= 0 ? what : path);
        }
        r = sd_bus_message_read(reply, "s", &id);
        if (r < 0)
                return log_error_errno(r, "Cannot read the answer: %m"), 1;
        printf("%s\n", id);
        return 0;
}

/* -- list */

static int print_list(json_object *list, bool json) {
        size_t n = json_object_array_length(list);

        if (json) {
                printf("%s\n", json_object_to_json_string_ext(list, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                return 0;
        }
        printf("%-64s %15s  %-20s %s\n", "ID", "SIZE", "ADDED", "REGISTRATION");
        for (size_t i = 0; i < n; i++) {
                json_object *o = json_object_array_get_idx(list, i);
                const char *id = "", *reg = "-";
                int64_t size = 0, added = 0;
                char when[32] = "-";
                struct tm tm;
                time_t t;

                (void) json_get_string(o, "id", &id);
                (void) json_get_int64(o, "size", &size);
                (void) json_get_int64(o, "added_usec", &added);
                (void) json_get_string(o, "registration", &reg);
                t = (time_t) (added / (int64_t) USEC_PER_SEC);
                if (localtime_r(&t, &tm))
                        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
                printf("%-64s %15" PRIi64 "  %-20s %s\n", id, size, when, reg);
        }
        return 0;
}

static json_object *local_list(Store *store) {
        json_object *list = json_object_new_array();

        for (size_t i = 0; list && i < store_n_contents(store); i++) {
                const StoreContent *c = store_content(store, i);
                json_object *o = json_object_new_object();

                if (!o || json_object_array_add(list, o) < 0 || json_add_string(o, "id", c->id) < 0 ||
                    json_add_int64(o, "size", (int64_t) c->size) < 0 ||
                    json_add_int64(o, "added_usec", (int64_t) c->added_usec) < 0) {
                        json_object_put(list);
                        return NULL;
                }
        }
        return list;
}

static int cmd_list(SeederConfig *c, sd_bus *bus, char **args, bool json) {
        _cleanup_(json_object_putp) json_object *list = NULL;
        int r;

        if (bus) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                const char *text;

                r = sd_bus_call_method(bus, SEEDER_BUS_NAME, SEEDER_BUS_PATH, SEEDER_BUS_INTERFACE, "List", &e, &reply, "");
                if (r < 0)
                        return bus_failed(r, &e, "Cannot list the contents");
                r = sd_bus_message_read(reply, "s", &text);
                if (r >= 0)
                        r = json_parse_strict(text, strlen(text), &list, NULL);
                if (r < 0 || !json_object_is_type(list, json_type_array))
                        return log_error_errno(EBADMSG, "The daemon's list is not a JSON array."), 1;
        } else {
                _cleanup_(store_freep) Store *store = NULL;

                if (open_store_readable(&store) < 0)
                        return 1;
                list = local_list(store);
                if (!list)
                        return log_oom(), 1;
        }
        return print_list(list, json);
}

/* -- remove, torrent, magnet */

static int cmd_remove(SeederConfig *c, sd_bus *bus, char **args, bool json) {
        const char *id = args[0];
        int r;

        if (!id_valid(id))
                return log_error_errno(EINVAL, "\"%s\" is not a content id (64 lowercase hex digits).", id), 1;
        if (bus) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

                r = sd_bus_call_method(bus, SEEDER_BUS_NAME, SEEDER_BUS_PATH, SEEDER_BUS_INTERFACE, "Remove", &e, NULL,
                                       "s", id);
                if (r < 0)
                        return bus_failed(r, &e, "Cannot remove the content");
                return 0;
        }
        {
                _cleanup_(store_freep) Store *store = NULL;

                if (open_store_writable(&store) < 0)
                        return 1;
                r = store_remove(store, id);
                if (r == -ENOENT)
                        return log_error("No content %s in the store %s.", id, store_path(store)), SEEDER_EXIT_NOT_FOUND;
                if (r < 0)
                        return log_error_errno(r, "Cannot remove %s: %m", id), 1;
                log_event(LOG_INFO, MC_EVENT_CONTENT_REMOVED, LOG_FIELDS("CONTENT_ID", id), "Content %s removed.", id);
        }
        return 0;
}

/* The .torrent of id, from the daemon or the store. Returns 0, or an exit status (logged). */
static int get_torrent(sd_bus *bus, const char *id, uint8_t **ret, size_t *ret_size) {
        int r;

        if (!id_valid(id))
                return log_error_errno(EINVAL, "\"%s\" is not a content id (64 lowercase hex digits).", id), 1;
        if (bus) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                const void *p;
                size_t n;

                r = sd_bus_call_method(bus, SEEDER_BUS_NAME, SEEDER_BUS_PATH, SEEDER_BUS_INTERFACE, "GetTorrent", &e,
                                       &reply, "s", id);
                if (r < 0)
                        return bus_failed(r, &e, "Cannot get the manifest");
                r = sd_bus_message_read_array(reply, 'y', &p, &n);
                if (r < 0)
                        return log_error_errno(r, "Cannot read the answer: %m"), 1;
                *ret = malloc(MAX(n, (size_t) 1));
                if (!*ret)
                        return log_oom(), 1;
                memcpy(*ret, p, n);
                *ret_size = n;
                return 0;
        }
        {
                _cleanup_(store_freep) Store *store = NULL;

                if (open_store_readable(&store) < 0)
                        return 1;
                r = store_torrent(store, id, ret, ret_size);
                if (r == -ENOENT)
                        return log_error("No content %s in the store %s.", id, store_path(store)), SEEDER_EXIT_NOT_FOUND;
                if (r < 0)
                        return log_error_errno(r, "Cannot make the .torrent of %s: %m", id), 1;
        }
        return 0;
}

static int cmd_torrent(SeederConfig *c, sd_bus *bus, char **args, bool json) {
        _cleanup_free_ uint8_t *torrent = NULL;
        size_t size = 0;
        int r;

        if (isatty(STDOUT_FILENO))
                return log_error_errno(EINVAL, "Not writing a .torrent to a terminal: redirect it (> FILE.torrent)."), 1;
        r = get_torrent(bus, args[0], &torrent, &size);
        if (r != 0)
                return r;
        if (fwrite(torrent, 1, size, stdout) != size || fflush(stdout) != 0)
                return log_error_errno(errno ?: EIO, "Cannot write the .torrent: %m"), 1;
        return 0;
}

static int cmd_magnet(SeederConfig *c, sd_bus *bus, char **args, bool json) {
        _cleanup_free_ uint8_t *torrent = NULL;
        _cleanup_free_ char *link = NULL;
        MagnetLink m = {};
        size_t size = 0;
        int r;

        /* Only for a content of the store: a link to one we do not seed would lead nowhere. */
        r = get_torrent(bus, args[0], &torrent, &size);
        if (r != 0)
                return r;
        if (torrent_id_from_hex(args[0], m.id) < 0 || magnet_format(&m, &link) < 0)
                return log_oom(), 1;
        printf("%s\n", link);
        return 0;
}

int seeder_cli_run(SeederConfig *c, char **words, bool json) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const Command *cmd;
        size_t n;

        assert(words && words[0]);
        cmd = find_command(words[0]);
        if (!cmd)
                return log_error_errno(EINVAL, "Unknown command \"%s\" (see --help).", words[0]), 1;
        n = strv_length(words) - 1;
        if (n != cmd->n_args)
                return log_error_errno(EINVAL, "Usage: mc-seeder %s %s (see mc-seeder %s --help).", cmd->name, cmd->args,
                                       cmd->name), 1;
        if (json && !streq(cmd->name, "list"))
                return log_error_errno(EINVAL, "--json is an option of list only."), 1;
        (void) connect_daemon(c, &bus);
        return cmd->run(c, bus, words + 1, json);
}
