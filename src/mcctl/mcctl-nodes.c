/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Nodes: nodes, drain, undrain; and contents: content add. */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "id-util.h"
#include "json-util.h"
#include "mcctl-table.h"
#include "mcctl.h"

static const char *member_string(json_object *o, const char *key) {
        const char *s = NULL;
        (void) json_get_string(o, key, &s);
        return s;
}

/* "2.00" CPUs and "1.5G" of memory, from nano_cpus and bytes. */
static void format_capacity(json_object *c, char *cpus, size_t cpus_size, char *mem, size_t mem_size) {
        static const char units[] = "BKMGT";
        int64_t n = 0, b = 0;
        double v;
        size_t u = 0;

        (void) json_get_int64(c, "nano_cpus", &n);
        (void) json_get_int64(c, "memory_bytes", &b);
        snprintf(cpus, cpus_size, "%.2f", n / 1e9);
        for (v = (double) b; v >= 1024 && u + 1 < strlen(units); u++)
                v /= 1024;
        snprintf(mem, mem_size, u == 0 ? "%.0f%c" : "%.1f%c", v, units[u]);
}

int cmd_nodes(Mcctl *m, int argc, char *argv[]) {
        _cleanup_(mcctl_answer_done) McctlAnswer a = {};
        _cleanup_(table_freep) Table *t = NULL;
        json_object *nodes;
        bool json;
        int r;

        r = mcctl_output_option(argc, argv, &json);
        if (r != 0)
                return r;
        if (optind < argc)
                return mcctl_usage_error(argv[0], "unexpected argument");
        r = mcctl_call(m, "GET", "/api/nodes", NULL, 0, &a);
        if (r != 0)
                return r;
        if (a.code != 200 || !a.json || !json_object_object_get_ex(a.json, "nodes", &nodes) ||
            !json_object_is_type(nodes, json_type_array))
                return mcctl_answer_failed(&a, "cannot list nodes");
        if (json) {
                printf("%s\n", json_object_to_json_string_ext(nodes, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                return 0;
        }
        t = table_new((const char *[]) { "NODE", "STATE", "CPUS", "MEMORY", "RESERVED CPUS", "RESERVED MEMORY",
                                         "TASKS", "DRIVER", "LAST HEARTBEAT" }, 9);
        if (!t)
                return MCCTL_EXIT_ERROR;
        for (size_t i = 0; i < json_object_array_length(nodes); i++) {
                json_object *n = json_object_array_get_idx(nodes, i), *cap = NULL, *res = NULL;
                char cpus[32], mem[32], rcpus[32], rmem[32], tasks[32];
                int64_t running = 0;

                (void) json_object_object_get_ex(n, "capacity", &cap);
                (void) json_object_object_get_ex(n, "reserved", &res);
                (void) json_get_int64(n, "running_tasks", &running);
                format_capacity(cap, cpus, sizeof(cpus), mem, sizeof(mem));
                format_capacity(res, rcpus, sizeof(rcpus), rmem, sizeof(rmem));
                snprintf(tasks, sizeof(tasks), "%" PRIi64, running);
                if (table_add(t, (const char *[]) { member_string(n, "node_id"), member_string(n, "state"), cpus, mem,
                                                    rcpus, rmem, tasks, member_string(n, "driver"),
                                                    member_string(n, "last_heartbeat") }) < 0)
                        return MCCTL_EXIT_ERROR;
        }
        table_print(t);
        return 0;
}

static int set_drain(Mcctl *m, int argc, char *argv[], const char *action) {
        _cleanup_(mcctl_answer_done) McctlAnswer a = {};
        _cleanup_free_ char *path = NULL;
        int r;

        if (getopt_long(argc, argv, "", (const struct option[]) { {} }, NULL) >= 0)
                return MCCTL_EXIT_USAGE;
        if (optind + 1 != argc)
                return mcctl_usage_error(argv[0], "give one node id");
        if (!id_is_valid(argv[optind])) {
                fprintf(stderr, "mcctl %s: \"%s\" is not a valid node id.\n", argv[0], argv[optind]);
                return MCCTL_EXIT_USAGE;
        }
        if (asprintf(&path, "/api/nodes/%s/%s", argv[optind], action) < 0)
                return MCCTL_EXIT_ERROR;
        r = mcctl_call(m, "POST", path, NULL, 0, &a);
        if (r != 0)
                return r;
        if (a.code != 200)
                return mcctl_answer_failed(&a, a.code == 404 ? "no such node" : "refused");
        printf("%s %s\n", argv[optind], member_string(a.json, "state") ?: (streq(action, "drain") ? "draining" : "ready"));
        return 0;
}

int cmd_drain(Mcctl *m, int argc, char *argv[]) {
        return set_drain(m, argc, argv, "drain");
}

int cmd_undrain(Mcctl *m, int argc, char *argv[]) {
        return set_drain(m, argc, argv, "undrain");
}

/* Through the local mc-seeder: it keeps the file, seeds it and registers its manifest with the
 * control; what it prints (the id) is what we print. */
int cmd_content(Mcctl *m, int argc, char *argv[]) {
        if (getopt_long(argc, argv, "+", (const struct option[]) { {} }, NULL) >= 0)
                return MCCTL_EXIT_USAGE;
        if (optind >= argc || !streq(argv[optind], "add"))
                return mcctl_usage_error(argv[0], "the one subcommand is: content add FILE");
        if (optind + 2 != argc)
                return mcctl_usage_error(argv[0], "give one FILE");
        fflush(stdout);
        execlp(m->seeder, m->seeder, "add", argv[optind + 1], (char *) NULL);
        fprintf(stderr, "mcctl content: cannot run %s: %s (is mc-seeder installed? SEEDER= names it)\n",
                m->seeder, strerror(errno));
        return MCCTL_EXIT_ERROR;
}
