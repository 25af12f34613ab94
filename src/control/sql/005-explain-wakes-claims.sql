-- mc schema, version 5: an explanation that changes wakes the claims waiting for a task.
--
-- mc_explain_pending() updates the pending_reason of queued tasks, and an UPDATE locks its rows until
-- it commits. A claim that comes in that moment passes over the locked task (FOR UPDATE SKIP LOCKED,
-- which is what lets claimers not wait for each other) and answers that there is nothing; a claim
-- that long-polls then slept until its wait ran out, since nothing new was queued to wake it. This
-- happened when the first node registered after tasks had been pushed (the explanation "no agent node
-- is registered and alive" is cleared by the next round), under load about one time in a few
-- hundred. Now a claim that finds nothing free waits for an explained task held by another
-- transaction (the explanation's update is short), and the tasks whose explanation changed are
-- announced as queued again once the update commits, so that a claim waiting meanwhile looks again.

CREATE OR REPLACE FUNCTION mc_explain_pending(p_lost_after_ms integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
        n_untargeted integer;
        targets text[];
BEGIN
        WITH ready AS (
                SELECT * FROM nodes WHERE last_heartbeat > now() - p_lost_after_ms * interval '1 millisecond'
        ), q AS (
                SELECT t.id, CASE
                        WHEN NOT EXISTS (SELECT 1 FROM ready)
                                THEN 'no agent node is registered and alive'
                        WHEN t.target_node IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ready r WHERE r.node_id = t.target_node)
                                THEN format('target node %s is not registered or not alive', t.target_node)
                        WHEN NOT EXISTS (SELECT 1 FROM ready r WHERE (t.target_node IS NULL OR r.node_id = t.target_node)
                                                                   AND r.nano_cpus >= t.nano_cpus AND r.memory_bytes >= t.memory_bytes)
                                THEN format('no node is large enough: the task needs %s nano_cpus and %s memory_bytes; the largest node offers %s nano_cpus and %s memory_bytes',
                                            t.nano_cpus, t.memory_bytes,
                                            coalesce((SELECT max(r.nano_cpus) FROM ready r), 0),
                                            coalesce((SELECT max(r.memory_bytes) FROM ready r), 0))
                        END AS why
                FROM tasks t WHERE t.status = 'queued'
                ORDER BY t.seq LIMIT 1000
        ), changed AS (
                UPDATE tasks t SET pending_reason = q.why FROM q
                 WHERE t.id = q.id AND t.pending_reason IS DISTINCT FROM q.why
                RETURNING t.target_node
        )
        SELECT count(*) FILTER (WHERE target_node IS NULL),
               array_agg(DISTINCT target_node) FILTER (WHERE target_node IS NOT NULL)
          INTO n_untargeted, targets FROM changed;
        -- Notifications are delivered at commit: after the locks are gone.
        PERFORM mc_notify_queued(n_untargeted, targets);
END
$$;

-- As in version 4, with the second look described above.
CREATE OR REPLACE FUNCTION mc_claim(p_node text, p_ttl_ms integer)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        n nodes;
        t tasks;
        free_cpus bigint;
        free_memory bigint;
        held text;
BEGIN
        SELECT * INTO n FROM nodes WHERE node_id = p_node;
        IF NOT FOUND THEN
                RETURN QUERY SELECT 404, jsonb_build_object('error', 'node is not registered', 'field', 'node_id');
                RETURN;
        END IF;
        IF n.draining THEN
                RETURN;
        END IF;

        PERFORM pg_advisory_xact_lock(hashtext('mc-claim:' || p_node));
        SELECT n.nano_cpus - coalesce(sum(x.nano_cpus), 0), n.memory_bytes - coalesce(sum(x.memory_bytes), 0)
          INTO free_cpus, free_memory
          FROM tasks x WHERE x.lease_node = p_node AND x.status IN ('leased', 'running');

        SELECT * INTO t FROM tasks x
         WHERE x.status = 'queued'
           AND (x.target_node IS NULL OR x.target_node = p_node)
           AND x.nano_cpus <= free_cpus AND x.memory_bytes <= free_memory
         ORDER BY x.seq LIMIT 1
         FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
                -- Passed over, maybe, only because mc_explain_pending() is changing its explanation:
                -- wait for that row (its update is short) rather than answer that there is nothing.
                -- Only explained tasks can be held so; one another claimer holds is, once it commits,
                -- no longer queued, and is passed over again.
                -- The lock is taken on that one row by id, so that the re-check after the wait is
                -- on its status alone (the explanation's update changes pending_reason).
                SELECT x.id INTO held FROM tasks x
                 WHERE x.status = 'queued' AND x.pending_reason IS NOT NULL
                   AND (x.target_node IS NULL OR x.target_node = p_node)
                   AND x.nano_cpus <= free_cpus AND x.memory_bytes <= free_memory
                 ORDER BY x.seq LIMIT 1;
                IF held IS NULL THEN
                        RETURN;
                END IF;
                SELECT * INTO t FROM tasks x WHERE x.id = held AND x.status = 'queued' FOR UPDATE;
                IF NOT FOUND THEN
                        RETURN;
                END IF;
        END IF;

        UPDATE tasks SET status = 'leased', attempt = attempt + 1, lease_token = lease_token + 1,
                         lease_node = p_node, lease_renewals = 0, lease_ttl_ms = p_ttl_ms,
                         lease_expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond',
                         updated_at = now(), pending_reason = NULL
         WHERE tasks.id = t.id
        RETURNING * INTO t;
        INSERT INTO attempts (task_id, attempt, node_id, lease_token) VALUES (t.id, t.attempt, p_node, t.lease_token);

        RETURN QUERY SELECT 200, jsonb_build_object('task', mc_task_json(t, false), 'lease_token', t.lease_token,
                                                     'attempt', t.attempt, 'lease_ttl_ms', p_ttl_ms,
                                                     'inputs', mc_task_inputs(t));
END
$$;
