/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* mc-seeder's commands: add, list, remove, torrent, magnet. Each goes through the running daemon on
 * the bus (org.mutualcloud.Seeder1; `add` passes the open file, so the daemon reads what the caller
 * may read), or, when no daemon is on the bus, uses the store itself with the daemon's configuration
 * (`add` and `remove` then need write access to the store, and take its lock).
 *
 * Output: what was asked for on standard output (an id, a table or JSON, the .torrent, a link), and
 * nothing else; messages go to standard error. Exit status: 0, 1 for an error, 2 for an unknown
 * content id. */

#include <stdbool.h>

#include "seeder-config.h"

#define SEEDER_EXIT_NOT_FOUND 2

/* Whether word is a command (for main() to decide between the daemon and the command line). */
bool seeder_cli_is_command(const char *word);
/* Prints the help of one command. */
void seeder_cli_help(const char *command);

/* words: the command and its arguments. Returns an exit status, or a negative errno (logged). */
int seeder_cli_run(SeederConfig *c, char **words, bool json);
