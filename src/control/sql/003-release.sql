-- mc schema, version 3: an agent may give a lease back before its task ran (docs/api.md, "Release"),
-- and an attempt records when its inputs were ready.
--
-- A task whose inputs cannot be fetched (no peer within the deadline, every copy failing
-- verification) or do not fit on the node's disk is not the task's fault: it goes back to the queue,
-- like a lost lease but at once, with the reason in the attempt, and fails only after max_attempts.

ALTER TABLE attempts ADD COLUMN inputs_ready_at timestamptz, ADD COLUMN inputs_bytes bigint;
