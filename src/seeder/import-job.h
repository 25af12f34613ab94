/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* content_import() on a thread of its own, so that the daemon's event loop keeps serving (D-Bus,
 * peers, the watchdog) while a file is copied and hashed. The job ends with one call of `done` on the
 * event loop's thread; the thread is joined before that call, and the job frees itself after it
 * (the owner forgets its pointer in `done`).
 *
 *     import_job_start(event, store_dir_fd, store_path, src_fd, on_done, userdata, &job);
 *
 * import_job_free() before the end asks the thread to stop (the copy stops between steps of
 * 64 MiB; hashing, the last step, runs to its end) and waits for it; `done` is not called then. */

#include <systemd/sd-event.h>

#include "content-import.h"

typedef struct ImportJob ImportJob;

/* error 0: result filled (the callee takes its manifest, or calls content_import_done()); else a
 * negative errno and reason as content_import() gives them (reason may be NULL). */
typedef void (*ImportJobDone)(ImportJob *j, int error, const char *reason, ContentImport *result, void *userdata);

/* Takes src_fd (closed when the job ends, or on failure to start). */
int import_job_start(sd_event *e, int dir_fd, const char *dir_path, int src_fd, ImportJobDone done,
                     void *userdata, ImportJob **ret);
ImportJob *import_job_free(ImportJob *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(ImportJob *, import_job_free);
