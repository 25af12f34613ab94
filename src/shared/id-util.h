/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* The syntax of task and node ids, docs/api.md: [A-Za-z0-9][A-Za-z0-9._-]{0,127}. Ids name files
 * (the agent's outbox and lease records), containers, cgroups and DHT salts, so everything that takes
 * one from outside checks it with this, and "../x" or "" never gets that far. */
#define ID_MAX 128

bool id_is_valid(const char *s);
