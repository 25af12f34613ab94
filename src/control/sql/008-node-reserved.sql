-- mc schema, version 8: each node's reserved capacity is kept in a row, not summed at every claim.
--
-- A claim used to sum the resources of its node's leases to know what was free: with many leases per
-- node (the claim benchmark ends with 625 each) that sum was a third of the claim's time in
-- PostgreSQL. Now node_reserved holds, per node, the sum of nano_cpus and memory_bytes and the count
-- of its leased and running tasks, kept by a trigger on tasks (mc_task_reserve in functions.sql) at
-- every change that makes a task count or stop counting for a node, whichever function or replica
-- makes it: a claim, a result, a release, a cancel, an expiry, a deletion.
--
-- Locks (functions.sql says how each path keeps to them): only a claim raises a node's row, under the
-- node's claim lock, so a claim reads it without a row lock; the others lower it. A transaction that
-- changes several nodes' rows (a batch of claims, the lease watch's expiry) takes them in node_id
-- order, so that two of them cannot wait for each other.
CREATE TABLE node_reserved (
        node_id      text    PRIMARY KEY REFERENCES nodes (node_id) ON DELETE CASCADE,
        nano_cpus    bigint  NOT NULL DEFAULT 0,
        memory_bytes bigint  NOT NULL DEFAULT 0,
        leases       integer NOT NULL DEFAULT 0
);

-- The trigger's function as this version wrote it; functions.sql has the current one, applied after
-- this migration. It is created here so that the triggers exist from the moment the rows are filled:
-- creating them locks tasks against writes until this migration commits, so no lease changes between
-- the fill and the first time a trigger keeps the rows (the functions are applied in a transaction of
-- their own, and replicas of version 7 go on claiming meanwhile).
CREATE FUNCTION mc_task_reserve() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
        -- A start (leased to running) keeps the task in its node's count.
        IF TG_OP = 'UPDATE' AND (OLD.status IN ('leased', 'running')) = (NEW.status IN ('leased', 'running'))
           AND OLD.lease_node IS NOT DISTINCT FROM NEW.lease_node
           AND OLD.nano_cpus = NEW.nano_cpus AND OLD.memory_bytes = NEW.memory_bytes THEN
                RETURN NULL;
        END IF;
        IF TG_OP <> 'INSERT' AND OLD.status IN ('leased', 'running') AND OLD.lease_node IS NOT NULL THEN
                UPDATE node_reserved r SET nano_cpus = r.nano_cpus - OLD.nano_cpus,
                                           memory_bytes = r.memory_bytes - OLD.memory_bytes, leases = r.leases - 1
                 WHERE r.node_id = OLD.lease_node;
        END IF;
        IF TG_OP <> 'DELETE' AND NEW.status IN ('leased', 'running') AND NEW.lease_node IS NOT NULL THEN
                UPDATE node_reserved r SET nano_cpus = r.nano_cpus + NEW.nano_cpus,
                                           memory_bytes = r.memory_bytes + NEW.memory_bytes, leases = r.leases + 1
                 WHERE r.node_id = NEW.lease_node;
                IF NOT FOUND THEN
                        INSERT INTO node_reserved AS r (node_id, nano_cpus, memory_bytes, leases)
                        VALUES (NEW.lease_node, NEW.nano_cpus, NEW.memory_bytes, 1)
                        ON CONFLICT (node_id) DO UPDATE SET nano_cpus = r.nano_cpus + EXCLUDED.nano_cpus,
                                                            memory_bytes = r.memory_bytes + EXCLUDED.memory_bytes,
                                                            leases = r.leases + 1;
                END IF;
        END IF;
        RETURN NULL;
END
$$;

-- Only the changes of these columns fire it: not a renewal, not an explanation. It has no WHEN:
-- PostgreSQL parses a trigger's WHEN again at every statement that fires it, which cost a claim more
-- than the function's own test. The deletion's keeps its WHEN (a deletion is of an ended task, and
-- rarer than claims). A task is inserted queued, never with a lease (mc_push, mc_push_one): no
-- trigger on insert, which would cost every push.
CREATE TRIGGER mc_task_reserve_update AFTER UPDATE OF status, lease_node, nano_cpus, memory_bytes ON tasks FOR EACH ROW
        EXECUTE FUNCTION mc_task_reserve();
CREATE TRIGGER mc_task_reserve_delete AFTER DELETE ON tasks FOR EACH ROW
        WHEN (OLD.status IN ('leased', 'running') AND OLD.lease_node IS NOT NULL)
        EXECUTE FUNCTION mc_task_reserve();

INSERT INTO node_reserved (node_id, nano_cpus, memory_bytes, leases)
SELECT n.node_id, coalesce(sum(t.nano_cpus), 0), coalesce(sum(t.memory_bytes), 0), count(t.id)
  FROM nodes n LEFT JOIN tasks t ON t.lease_node = n.node_id AND t.status IN ('leased', 'running')
 GROUP BY n.node_id;

-- It served that sum (and the count of a node's leases, now here too); without it a claim, which
-- changes status, writes one index entry less.
DROP INDEX tasks_lease_node_idx;
