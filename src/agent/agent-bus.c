/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* org.mutualcloud.Agent1 at /org/mutualcloud/Agent1: what the agent holds, the controls it talks to,
 * and Drain()/Resume(). */

#include "agent.h"
#include "bus-util.h"
#include "input-cache.h"
#include "input-fetch.h"
#include "input-server.h"
#include "log.h"

#define AGENT_BUS_NAME "org.mutualcloud.Agent1"
#define AGENT_BUS_PATH "/org/mutualcloud/Agent1"
#define AGENT_BUS_INTERFACE "org.mutualcloud.Agent1"

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Agent *a = userdata;

        if (streq(property, "NodeId"))
                return sd_bus_message_append(reply, "s", a->config.node_id);
        if (streq(property, "Runtime"))
                return sd_bus_message_append(reply, "s", a->config.docker_runtime);
        if (streq(property, "Driver"))
                return sd_bus_message_append(reply, "s", a->driver->ops->name);
        if (streq(property, "CapacityNanoCpus"))
                return sd_bus_message_append(reply, "t", (uint64_t) a->capacity_nano_cpus);
        if (streq(property, "CapacityMemoryBytes"))
                return sd_bus_message_append(reply, "t", (uint64_t) a->capacity_memory_bytes);
        if (streq(property, "RunningTasks"))
                return sd_bus_message_append(reply, "u", agent_n_running(a));
        if (streq(property, "FetchingTasks"))
                return sd_bus_message_append(reply, "u", agent_n_fetching(a));
        if (streq(property, "InputBytesFetched") || streq(property, "InputBytesFromSeeders") ||
            streq(property, "InputBytesFromAgents")) {
                InputFetcherStats st = {};
                if (a->input_fetcher)
                        input_fetcher_get_stats(a->input_fetcher, &st);
                return sd_bus_message_append(reply, "t", streq(property, "InputBytesFetched") ? st.bytes :
                                             streq(property, "InputBytesFromSeeders") ? st.bytes_seeders : st.bytes_agents);
        }
        if (streq(property, "InputBytesServed"))
                return sd_bus_message_append(reply, "t", a->input_server ? input_server_bytes_served(a->input_server) : 0);
        if (streq(property, "CacheBytes"))
                return sd_bus_message_append(reply, "t", a->input_cache ? input_cache_bytes(a->input_cache) : 0);
        if (streq(property, "CacheMaxBytes"))
                return sd_bus_message_append(reply, "t", a->input_cache ? input_cache_max_bytes(a->input_cache) : 0);
        if (streq(property, "PeerPort"))
                return sd_bus_message_append(reply, "q", a->input_server ? input_server_port(a->input_server) : 0);
        if (streq(property, "Draining"))
                return sd_bus_message_append(reply, "b", a->draining);
        if (streq(property, "ControlUrls"))
                return sd_bus_message_append_strv(reply, (char **) control_client_urls(a->control));
        if (streq(property, "CurrentControlUrl"))
                return sd_bus_message_append(reply, "s", control_client_current_url(a->control) ?: "");
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s.", property);
}

static int method_list_tasks(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *json = agent_list_tasks_json(userdata);

        if (!json)
                return -ENOMEM;
        return sd_bus_reply_method_return(m, "s", json);
}

static int set_draining(sd_bus_message *m, Agent *a, bool draining, sd_bus_error *error) {
        int r;

        r = bus_check_privileged(m, a->config.bus_group, error);
        if (r <= 0)
                return r;
        agent_set_draining(a, draining);
        (void) sd_bus_emit_properties_changed(sd_bus_message_get_bus(m), AGENT_BUS_PATH, AGENT_BUS_INTERFACE,
                                              "Draining", NULL);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_drain(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return set_draining(m, userdata, true, error);
}

static int method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return set_draining(m, userdata, false, error);
}

static const sd_bus_vtable agent_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("NodeId", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Runtime", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Driver", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CapacityNanoCpus", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CapacityMemoryBytes", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("RunningTasks", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Draining", "b", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* Tasks whose inputs are being fetched (ListTasks shows them as "fetching"). */
        SD_BUS_PROPERTY("FetchingTasks", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* Counters of the inputs: block payload received (in all, from SEEDERS, from other peers;
         * added when each download ends), sent to other agents (live), and what the cache holds; read,
         * not signalled (they move all the time). */
        SD_BUS_PROPERTY("InputBytesFetched", "t", property_get, 0, 0),
        SD_BUS_PROPERTY("InputBytesFromSeeders", "t", property_get, 0, 0),
        SD_BUS_PROPERTY("InputBytesFromAgents", "t", property_get, 0, 0),
        SD_BUS_PROPERTY("InputBytesServed", "t", property_get, 0, 0),
        SD_BUS_PROPERTY("CacheBytes", "t", property_get, 0, 0),
        SD_BUS_PROPERTY("CacheMaxBytes", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        /* Where other agents fetch inputs from us (0: not served). */
        SD_BUS_PROPERTY("PeerPort", "q", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        /* CONTROL_URLS, then the replicas found in the DHT: the order calls fail over in. */
        SD_BUS_PROPERTY("ControlUrls", "as", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* The replica that answered last, which calls go to first ("" when none is known). It moves
         * with every failover, so it is read, not signalled. */
        SD_BUS_PROPERTY("CurrentControlUrl", "s", property_get, 0, 0),
        SD_BUS_METHOD_WITH_ARGS("ListTasks", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", json), method_list_tasks, 0),
        SD_BUS_METHOD("Drain", NULL, NULL, method_drain, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Resume", NULL, NULL, method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("TaskStarted", SD_BUS_ARGS("s", id), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TaskFinished", SD_BUS_ARGS("s", id, "s", status, "i", exit_code), 0),
        SD_BUS_VTABLE_END,
};

int agent_bus_init(Agent *a) {
        int r;

        r = bus_open_and_request_name(a->event, AGENT_BUS_NAME, &a->bus);
        if (r < 0)
                return r;
        r = sd_bus_add_object_vtable(a->bus, &a->bus_slot, AGENT_BUS_PATH, AGENT_BUS_INTERFACE, agent_vtable, a);
        if (r < 0)
                return log_error_errno(r, "Cannot publish %s: %m", AGENT_BUS_PATH);
        return 0;
}

void agent_bus_task_started(Agent *a, const char *id) {
        if (a->bus)
                (void) sd_bus_emit_signal(a->bus, AGENT_BUS_PATH, AGENT_BUS_INTERFACE, "TaskStarted", "s", id);
}

void agent_bus_task_finished(Agent *a, const char *id, const char *status, int exit_code) {
        if (a->bus)
                (void) sd_bus_emit_signal(a->bus, AGENT_BUS_PATH, AGENT_BUS_INTERFACE, "TaskFinished", "ssi", id,
                                          status, exit_code);
}

void agent_bus_running_changed(Agent *a) {
        if (a->bus)
                (void) sd_bus_emit_properties_changed(a->bus, AGENT_BUS_PATH, AGENT_BUS_INTERFACE, "RunningTasks", NULL);
}

void agent_bus_control_urls_changed(Agent *a) {
        if (a->bus)
                (void) sd_bus_emit_properties_changed(a->bus, AGENT_BUS_PATH, AGENT_BUS_INTERFACE, "ControlUrls", NULL);
}

void agent_bus_fetching_changed(Agent *a) {
        if (a->bus)
                (void) sd_bus_emit_properties_changed(a->bus, AGENT_BUS_PATH, AGENT_BUS_INTERFACE, "FetchingTasks", NULL);
}
