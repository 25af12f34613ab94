-- mc schema, version 6: live output, drains from the control, retention (docs/api.md).
--
-- While a task runs, its agent sends what it printed in chunks (POST /api/tasks/{id}/output), kept here
-- per lease until the task ends: then the result's output (task_output) is the authority and the
-- chunks go. pos is where the chunk starts in the lease's live text (the bytes of the chunks before
-- it), so that an agent that sends a chunk again after a lost answer stores it once.
CREATE TABLE task_output_chunks (
        task_id     text   NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        lease_token bigint NOT NULL,
        pos         bigint NOT NULL CHECK (pos >= 0),
        data        text   NOT NULL,
        PRIMARY KEY (task_id, lease_token, pos)
);

-- A drain asked for through the control (POST /api/nodes/{id}/drain), which the node's own heartbeats,
-- which carry its local (D-Bus) drain in "draining", do not undo.
ALTER TABLE nodes ADD COLUMN drained boolean NOT NULL DEFAULT false;

-- Retention deletes finished tasks oldest first, a small batch at a time; the event stream's cursor
-- (GET /api/events?since=) reads the tasks changed after a time.
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_updated_idx ON tasks (updated_at);
