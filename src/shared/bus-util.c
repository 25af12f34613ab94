/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <grp.h>

#include "bus-util.h"
#include "log.h"

static int on_name_acquired(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *name = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (e)
                log_warning("Could not take the D-Bus name %s: %s", name, e->message ?: e->name);
        else
                log_debug("Took the D-Bus name %s.", name);
        return 0;
}

int bus_open_and_request_name(sd_event *e, const char *name, sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = sd_bus_open_system(&bus);
        if (r < 0)
                return log_warning_errno(r, "Cannot connect to the system bus: %m");
        r = sd_bus_attach_event(bus, e, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Cannot attach the bus to the event loop: %m");
        r = sd_bus_request_name_async(bus, NULL, name, 0, on_name_acquired, (void *) name);
        if (r < 0)
                return log_error_errno(r, "Cannot request the D-Bus name %s: %m", name);
        *ret = TAKE_PTR(bus);
        return 0;
}

int bus_check_privileged(sd_bus_message *m, const char *privileged_group, sd_bus_error *error) {
        sd_bus_creds *creds = NULL;
        const gid_t *gids = NULL;
        struct group *g;
        uid_t euid;
        gid_t egid;
        int r, n;

        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID | SD_BUS_CREDS_SUPPLEMENTARY_GIDS |
                                      SD_BUS_CREDS_AUGMENT, &creds);
        if (r < 0)
                return r;

        r = sd_bus_creds_get_euid(creds, &euid);
        if (r < 0)
                goto finish;
        if (euid == 0) {
                r = 1;
                goto finish;
        }

        g = privileged_group ? getgrnam(privileged_group) : NULL;
        if (g) {
                if (sd_bus_creds_get_egid(creds, &egid) >= 0 && egid == g->gr_gid) {
                        r = 1;
                        goto finish;
                }
                n = sd_bus_creds_get_supplementary_gids(creds, &gids);
                for (int i = 0; i < n; i++)
                        if (gids[i] == g->gr_gid) {
                                r = 1;
                                goto finish;
                        }
        }
        r = sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                              "Changing state needs root or membership of group \"%s\".",
                              privileged_group ?: "(none)");
        r = 0;
finish:
        sd_bus_creds_unref(creds);
        return r;
}
