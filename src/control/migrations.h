/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "db.h"

/* The schema's tables, from src/control/sql/NNN-name.sql, in version order. */
extern const DbMigration control_migrations[];
extern const size_t control_n_migrations;
/* Its functions, from src/control/sql/functions.sql, applied at every start. */
extern const char control_functions_sql[];
