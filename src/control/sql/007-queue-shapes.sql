-- mc schema, version 7: a claim's cost does not grow with the backlog.
--
-- A claim used to walk the queued tasks in order (tasks_queued_idx) and filter out those it could not
-- take: with a million tasks targeted at another node, or too large for it, at the head of the queue,
-- every claim of that node read them all (270 ms) to answer that there was nothing. Now the queue is
-- two indexes, the tasks any node may take and each node's own, both ordered by the task's resources
-- (its shape) and then by age. A claim looks only at its node's part and at the untargeted one, and
-- within them only at the shapes that fit its free capacity, skipping from one shape to the next
-- (mc_claim in functions.sql); its cost grows with the number of distinct shapes that fit, not with
-- the number of tasks.
CREATE INDEX tasks_queue_any_idx ON tasks (nano_cpus, memory_bytes, seq)
        WHERE status = 'queued' AND target_node IS NULL;
CREATE INDEX tasks_queue_node_idx ON tasks (target_node, nano_cpus, memory_bytes, seq)
        WHERE status = 'queued' AND target_node IS NOT NULL;

-- tasks_queued_idx (seq) stays: mc_explain_pending and the counts read the queue in order, and with
-- statistics that still say most tasks are queued (a burst of pushes, not yet analysed) a plan over
-- tasks_status_seq_idx or tasks_seq_key instead walks the tasks already claimed.
