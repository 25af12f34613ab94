/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* mcctl: the operator's client of the mc HTTP API. One process, one request at a time (or one stream),
 * over the same libcurl-on-sd-event client the daemons use, so TLS (CONTROL_CA) behaves the same.
 *
 * Output: what was asked for on standard output (an id, a table, JSON, a task's output); messages on
 * standard error. Exit status: 0; 1 for an error (the control's answer named); 2 for bad usage; 3 when
 * the control cannot be reached; `watch` and `--wait` end with the task's exit code. */

#include <json-c/json.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

#include "curl-event.h"
#include "tls-client.h"

#define MCCTL_EXIT_ERROR 1
#define MCCTL_EXIT_USAGE 2
#define MCCTL_EXIT_UNREACHABLE 3

typedef struct Mcctl {
        char *url;                      /* the control's base URL, without a trailing '/' */
        char *token;
        TlsClientSettings tls;
        char *seeder;                   /* the mc-seeder program, for `content add` */
        int64_t timeout_sec;            /* of one request */

        sd_event *event;
        CurlEvent *curl;
} Mcctl;

typedef struct McctlAnswer {
        long code;                      /* HTTP status */
        json_object *json;              /* the body parsed, when it is JSON */
        char *body;                     /* the body as text */
        size_t size;
} McctlAnswer;

void mcctl_answer_done(McctlAnswer *a);

/* One request: path below the base URL ("/api/tasks?limit=5"), body NULL or JSON. Returns 0 with the
 * answer, whatever its status, or MCCTL_EXIT_UNREACHABLE (said on stderr) when no answer came. */
int mcctl_call(Mcctl *m, const char *method, const char *path, json_object *body, uint64_t timeout_usec,
               McctlAnswer *ret);

/* A streamed GET: on_data gets the body as it arrives (a negative return ends it). Returns like
 * mcctl_call(); the answer's body is empty unless the status was not 200 (then it is the error). */
int mcctl_stream(Mcctl *m, const char *path, CurlDataHandler on_data, void *userdata, McctlAnswer *ret);

/* Says what an error answer means ("mcctl: no such task (HTTP 404)") and returns the exit status. */
int mcctl_answer_failed(const McctlAnswer *a, const char *what);

/* Arguments (mcctl-args.c). "mcctl run: message (see mcctl run --help)." on stderr; MCCTL_EXIT_USAGE. */
int mcctl_usage_error(const char *command, const char *message);
/* The one ID argument of a command (after getopt), checked so that it cannot name another path;
 * what is "task" or "node". 0 or an exit status. */
int mcctl_id_argument(int argc, char *argv[], const char *what, const char **ret);
/* The same for a command that takes no option. */
int mcctl_only_id(int argc, char *argv[], const char *what, const char **ret);
/* -o/--output json|table: the value, and the one option of get and nodes. 0 or an exit status. */
int mcctl_parse_output(const char *command, const char *value, bool *ret_json);
int mcctl_output_option(int argc, char *argv[], bool *ret_json);

/* "0.5" CPUs as nano_cpus, "256M" (K, M, G, T: powers of 1024; plain bytes) as bytes. */
int parse_cpus(const char *s, int64_t *ret);
int parse_bytes(const char *s, int64_t *ret);

/* Follows a task until it ends, printing its transitions on stderr; returns its exit status. */
int mcctl_follow_task(Mcctl *m, const char *id);

/* The commands (argv[0] is the command's name). Each returns an exit status. */
int cmd_push(Mcctl *m, int argc, char *argv[]);
int cmd_run(Mcctl *m, int argc, char *argv[]);
int cmd_get(Mcctl *m, int argc, char *argv[]);
int cmd_list(Mcctl *m, int argc, char *argv[]);
int cmd_watch(Mcctl *m, int argc, char *argv[]);
int cmd_logs(Mcctl *m, int argc, char *argv[]);
int cmd_cancel(Mcctl *m, int argc, char *argv[]);
int cmd_nodes(Mcctl *m, int argc, char *argv[]);
int cmd_drain(Mcctl *m, int argc, char *argv[]);
int cmd_undrain(Mcctl *m, int argc, char *argv[]);
int cmd_content(Mcctl *m, int argc, char *argv[]);
