/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The host lists of a libpq connection string (host=a,b port=5432,5433): libpq tries them in order,
 * and in the nonblocking mode mc-control uses it waits on a host that does not answer at all for as
 * long as TCP does. db.c gives such an attempt up and begins the next ones one host further, with the
 * lists rotated here. */

/* list ("a,b,c") with its first k % n entries moved to its end ("b,c,a" for k = 1), as a new string;
 * NULL when that changes nothing (one entry, or k % n == 0) or on out of memory: then use list as
 * it is. Empty entries stay where they are in the rotation ("a,,c" gives ",c,a" for k = 1). */
char *db_hosts_rotate(const char *list, unsigned k);
