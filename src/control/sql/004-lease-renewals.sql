-- mc schema, version 4: a lease expires because its renewals stopped, not because the database's wall
-- clock says so (docs/architecture.md, "Leases").
--
-- Until now a lease carried a deadline of clock_timestamp() + TTL, and the sweep re-queued what was
-- past it by now(): a step of the database host's clock (NTP, a VM resumed) expired every lease at
-- once while its agents were renewing it. Now every renewal counts in lease_renewals, and each
-- control replica watches those counts on its own monotonic clock (src/control/lease-watch.c): a lease
-- expires when its count has not moved for its TTL plus the grace, and the expiry is an UPDATE
-- conditional on the count the replica saw, so that a renewal racing it wins or loses as a whole.
-- lease_expires_at stays, for people to read; no decision is taken on it any more.

ALTER TABLE tasks ADD COLUMN lease_renewals bigint NOT NULL DEFAULT 0,  -- renewals of the current lease
                  ADD COLUMN lease_ttl_ms integer;                       -- the longest TTL its holder was given

-- The deadline index served the sweep by deadline; nothing reads by deadline now, and without it a
-- renewal, which changes no indexed column, is a HOT update.
DROP INDEX tasks_lease_deadline_idx;

-- The task record of version 3, whose lease also shows its renewals and TTL; expires_at is the
-- database's reading of its clock at the last renewal plus the TTL, for people.
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
                                'expires_at', mc_ts(t.lease_expires_at), 'renewals', t.lease_renewals,
                                'ttl_ms', t.lease_ttl_ms) END,
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

-- mc_claim of version 2; a new lease starts with no renewals and records its TTL.
CREATE OR REPLACE FUNCTION mc_claim(p_node text, p_ttl_ms integer)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        n nodes;
        t tasks;
        free_cpus bigint;
        free_memory bigint;
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
                RETURN;
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

-- Renews every lease of the node that is still its own: one the sweep has not taken back is renewed,
-- whatever the time. Each renewal counts. The lease keeps the longest TTL any answer gave its holder:
-- with replicas of different TTLs, an answer that was lost leaves the holder counting with an earlier,
-- longer one, and the sweep must wait at least that long.
CREATE OR REPLACE FUNCTION mc_heartbeat(p_node text, p_leases jsonb, p_ttl_ms integer, p_draining boolean)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        renewed jsonb;
        revoked jsonb;
BEGIN
        UPDATE nodes SET last_heartbeat = now(), draining = p_draining WHERE node_id = p_node;
        IF NOT FOUND THEN
                RETURN QUERY SELECT 404, jsonb_build_object('error', 'node is not registered', 'field', 'node_id');
                RETURN;
        END IF;

        WITH l AS (
                SELECT x->>'task_id' AS id, (x->>'lease_token')::bigint AS token
                FROM jsonb_array_elements(p_leases) x
        ), r AS (
                UPDATE tasks t SET lease_renewals = t.lease_renewals + 1, lease_ttl_ms = greatest(t.lease_ttl_ms, p_ttl_ms),
                                   lease_expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond'
                  FROM l
                 WHERE t.id = l.id AND t.lease_token = l.token AND t.lease_node = p_node
                   AND t.status IN ('leased', 'running')
                RETURNING t.id
        )
        SELECT coalesce((SELECT jsonb_agg(r.id) FROM r), '[]'::jsonb),
               coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'task_id', l.id, 'lease_token', l.token,
                        'reason', CASE
                                WHEN t.id IS NULL OR t.lease_token < l.token THEN 'unknown'
                                WHEN t.lease_token > l.token THEN 'superseded'
                                WHEN t.status = 'cancelled' THEN 'cancelled'
                                WHEN t.status IN ('succeeded', 'failed', 'timed_out') THEN 'finished'
                                WHEN t.status <> 'queued' AND t.lease_node IS DISTINCT FROM p_node THEN 'superseded'
                                ELSE 'expired' END))
                        FROM l LEFT JOIN tasks t ON t.id = l.id
                        WHERE l.id NOT IN (SELECT r.id FROM r)), '[]'::jsonb)
          INTO renewed, revoked;

        RETURN QUERY SELECT 200, jsonb_build_object('lease_ttl_ms', p_ttl_ms, 'renewed', renewed, 'revoked', revoked);
END
$$;

-- The sweep of version 1 expired by the database's clock. A replica of that version, still running
-- during a rolling upgrade, calls it: it does nothing now, and the replicas of this version expire.
CREATE OR REPLACE FUNCTION mc_sweep(p_grace_ms integer)
RETURNS TABLE (id text, status text, attempt integer, lease_token bigint, node_id text) LANGUAGE sql AS $$
        SELECT NULL::text, NULL::text, NULL::integer, NULL::bigint, NULL::text WHERE false
$$;

-- One round of a replica's lease watch. p_expire lists the leases [{"task_id", "lease_token",
-- "renewals"}] whose renewal count the replica has seen standing still for their TTL plus the grace:
-- each is re-queued (or failed, after max_attempts) only if it still is that lease with that count,
-- under its row lock (a renewal that committed meanwhile keeps it; one that comes after finds it
-- expired). Returns first what it expired (expired = the task's new status), then every lease still
-- held, with its current count and TTL (expired NULL), which the replica watches next.
CREATE FUNCTION mc_lease_watch(p_expire jsonb)
RETURNS TABLE (id text, lease_token bigint, renewals bigint, ttl_ms integer, expired text, attempt integer,
               node_id text) LANGUAGE plpgsql AS $$
DECLARE
        swept jsonb;
        n_untargeted integer;
        targets text[];
BEGIN
        IF jsonb_array_length(p_expire) > 0 THEN
                WITH want AS (
                        SELECT x->>'task_id' AS id, (x->>'lease_token')::bigint AS token,
                               (x->>'renewals')::bigint AS renewals
                        FROM jsonb_array_elements(p_expire) x
                ), expired AS (
                        -- SKIP LOCKED: a row locked by a renewal (or another replica's sweep) is looked at
                        -- again next round, with what that transaction left.
                        SELECT x.id, x.lease_node FROM tasks x JOIN want w
                            ON x.id = w.id AND x.lease_token = w.token AND x.lease_renewals = w.renewals
                         WHERE x.status IN ('leased', 'running')
                         FOR UPDATE OF x SKIP LOCKED
                ), changed AS (
                        UPDATE tasks t SET
                                status = CASE WHEN t.attempt >= t.max_attempts THEN 'failed' ELSE 'queued' END,
                                reason = CASE WHEN t.attempt >= t.max_attempts THEN 'lost' ELSE t.reason END,
                                finished_at = CASE WHEN t.attempt >= t.max_attempts THEN now() END,
                                lease_node = NULL, lease_expires_at = NULL, updated_at = now()
                          FROM expired e WHERE t.id = e.id
                        RETURNING t.id, t.status, t.attempt, t.lease_token, e.lease_node AS node_id, t.target_node
                ), attempts_ended AS (
                        UPDATE attempts a SET ended_at = now(), status = 'expired', reason = 'lease expired'
                          FROM changed c WHERE a.task_id = c.id AND a.attempt = c.attempt
                )
                SELECT jsonb_agg(to_jsonb(c)) INTO swept FROM changed c;
        END IF;

        IF swept IS NOT NULL THEN
                SELECT count(*) FILTER (WHERE x->>'status' = 'queued' AND x->>'target_node' IS NULL),
                       array_agg(DISTINCT x->>'target_node') FILTER (WHERE x->>'status' = 'queued' AND x->>'target_node' IS NOT NULL)
                  INTO n_untargeted, targets FROM jsonb_array_elements(swept) x;
                PERFORM mc_notify_queued(n_untargeted, targets);
                RETURN QUERY SELECT x->>'id', (x->>'lease_token')::bigint, NULL::bigint, NULL::integer, x->>'status',
                                    (x->>'attempt')::integer, x->>'node_id'
                               FROM jsonb_array_elements(swept) x;
        END IF;

        RETURN QUERY SELECT t.id, t.lease_token, t.lease_renewals, t.lease_ttl_ms, NULL::text, t.attempt, t.lease_node
                       FROM tasks t WHERE t.status IN ('leased', 'running');
END
$$;
