/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* D-Bus plumbing shared by the daemons: connect to the system bus (or the one named in
 * DBUS_SYSTEM_BUS_ADDRESS, which sd-bus honours), attach to the event loop, take a well-known name,
 * and decide whether a caller may change state. */

#include <systemd/sd-bus.h>

#include "macro.h"

#define _cleanup_bus_message_unref_ _cleanup_(sd_bus_message_unrefp)

/* Opens the system bus, attaches it to the event loop and requests name asynchronously (a failure
 * to get the name is logged, and the daemon keeps serving HTTP). */
int bus_open_and_request_name(sd_event *e, const char *name, sd_bus **ret);

/* Returns 1 when the sender of m is root or a member of the group named privileged_group, 0 when it
 * is not (and sets error to AccessDenied), negative errno if its credentials cannot be read. */
int bus_check_privileged(sd_bus_message *m, const char *privileged_group, sd_bus_error *error);
