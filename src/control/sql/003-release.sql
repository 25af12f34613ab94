-- mc schema, version 3: an agent may give a lease back before its task ran (docs/api.md, "Release"),
-- and an attempt records when its inputs were ready.
--
-- A task whose inputs cannot be fetched (no peer within the deadline, every copy failing
-- verification) or do not fit on the node's disk is not the task's fault: it goes back to the queue,
-- like a lost lease but at once, with the reason in the attempt, and fails only after max_attempts.

ALTER TABLE attempts ADD COLUMN inputs_ready_at timestamptz, ADD COLUMN inputs_bytes bigint;

CREATE OR REPLACE FUNCTION mc_task_json(t tasks, with_detail boolean) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
        RETURN t.spec || jsonb_build_object(
                'id', t.id,
                'status', t.status,
                'attempt', t.attempt,
                'max_attempts', t.max_attempts,
                'created_at', mc_ts(t.created_at),
                'updated_at', mc_ts(t.updated_at),
                'finished_at', mc_ts(t.finished_at),
                'pending_reason', t.pending_reason,
                'lease', CASE WHEN t.status IN ('leased', 'running') THEN jsonb_build_object(
                                'node_id', t.lease_node, 'lease_token', t.lease_token,
                                'expires_at', mc_ts(t.lease_expires_at)) END,
                'result', CASE WHEN t.finished_at IS NOT NULL THEN jsonb_build_object(
                                'exit_code', t.exit_code, 'reason', t.reason,
                                'stdout_tail', CASE WHEN with_detail THEN t.stdout_tail END,
                                'stderr_tail', CASE WHEN with_detail THEN t.stderr_tail END,
                                'truncated', coalesce(t.truncated, false)) END)
        || CASE WHEN with_detail THEN jsonb_build_object('attempts', coalesce((
                SELECT jsonb_agg(jsonb_build_object(
                        'attempt', a.attempt, 'node_id', a.node_id, 'lease_token', a.lease_token,
                        'leased_at', mc_ts(a.leased_at), 'started_at', mc_ts(a.started_at),
                        'ended_at', mc_ts(a.ended_at), 'status', a.status, 'exit_code', a.exit_code,
                        'reason', a.reason, 'inputs_ready_at', mc_ts(a.inputs_ready_at),
                        'inputs_bytes', a.inputs_bytes) ORDER BY a.attempt)
                FROM attempts a WHERE a.task_id = t.id), '[]'::jsonb))
           ELSE '{}'::jsonb END;
END
$$;

-- mc_started with the inputs' readiness. The four-argument form stays for replicas of the previous
-- version during a rolling upgrade.
CREATE FUNCTION mc_started(p_id text, p_node text, p_token bigint, p_container text,
                           p_inputs_ready_usec bigint, p_inputs_bytes bigint)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        r record;
        n integer;
BEGIN
        SELECT * INTO r FROM mc_started(p_id, p_node, p_token, p_container);
        IF r.code = 200 AND (p_inputs_ready_usec IS NOT NULL OR p_inputs_bytes IS NOT NULL) THEN
                n := (r.body->>'attempt')::integer;
                UPDATE attempts SET inputs_ready_at = CASE WHEN p_inputs_ready_usec IS NOT NULL
                                        THEN to_timestamp(p_inputs_ready_usec / 1e6) END,
                                    inputs_bytes = p_inputs_bytes
                 WHERE task_id = p_id AND attempt = n;
        END IF;
        RETURN QUERY SELECT r.code, r.body;
END
$$;

-- Gives the lease back: the attempt ends 'released' with the agent's reason, and the task is queued
-- again at once, or fails with that reason once it has had max_attempts. A task cancelled meanwhile
-- stays cancelled.
CREATE FUNCTION mc_release(p_id text, p_node text, p_token bigint, p_code text, p_reason text)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        t tasks;
        lk record;
        why text := p_code || CASE WHEN p_reason IS NOT NULL THEN ': ' || p_reason ELSE '' END;
BEGIN
        SELECT * INTO lk FROM mc_lock_lease(p_id, p_node, p_token, true);
        IF lk.code IS NOT NULL THEN
                RETURN QUERY SELECT lk.code, lk.body;
                RETURN;
        END IF;
        t := lk.t;

        UPDATE attempts SET ended_at = now(), status = 'released', reason = why
         WHERE task_id = p_id AND attempt = t.attempt;
        IF t.status <> 'cancelled' THEN
                UPDATE tasks SET
                        status = CASE WHEN t.attempt >= t.max_attempts THEN 'failed' ELSE 'queued' END,
                        reason = CASE WHEN t.attempt >= t.max_attempts THEN why ELSE t.reason END,
                        finished_at = CASE WHEN t.attempt >= t.max_attempts THEN now() END,
                        lease_node = NULL, lease_expires_at = NULL, updated_at = now()
                 WHERE tasks.id = p_id RETURNING * INTO t;
                IF t.status = 'queued' THEN
                        PERFORM mc_notify_queued(CASE WHEN t.target_node IS NULL THEN 1 ELSE 0 END,
                                                 CASE WHEN t.target_node IS NULL THEN NULL ELSE ARRAY[t.target_node] END);
                END IF;
        ELSE
                UPDATE tasks SET lease_expires_at = NULL, updated_at = now() WHERE tasks.id = p_id RETURNING * INTO t;
        END IF;
        -- The node has capacity again.
        PERFORM mc_notify_queued(0, ARRAY[p_node]);
        RETURN QUERY SELECT 200, mc_task_json(t, true);
END
$$;
