-- mc schema, version 1. Applied by mc-control at start under an advisory lock, so replicas that start
-- together apply it once. Every API call is one statement calling one of the functions below, so each is
-- one round trip and one transaction.

CREATE TABLE tasks (
        seq              bigserial   NOT NULL UNIQUE,        -- insertion order; the list cursor
        id               text        PRIMARY KEY,
        spec             jsonb       NOT NULL,                -- the validated push body, as sent (minus id)
        status           text        NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'leased', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled')),
        target_node      text,
        nano_cpus        bigint      NOT NULL DEFAULT 0,
        memory_bytes     bigint      NOT NULL DEFAULT 0,
        labels           jsonb       NOT NULL DEFAULT '{}',
        max_attempts     integer     NOT NULL DEFAULT 3,
        attempt          integer     NOT NULL DEFAULT 0,      -- leases granted so far
        lease_token      bigint      NOT NULL DEFAULT 0,      -- the fencing token, raised by every claim
        lease_node       text,
        lease_expires_at timestamptz,
        created_at       timestamptz NOT NULL DEFAULT now(),
        updated_at       timestamptz NOT NULL DEFAULT now(),
        finished_at      timestamptz,
        pending_reason   text,
        exit_code        integer,
        reason           text,
        stdout_tail      text,
        stderr_tail      text,
        truncated        boolean
);

-- Claims scan queued tasks in order; the sweep scans leases by deadline; capacity sums leases per node;
-- listing pages by seq, optionally within one status, optionally by labels (GIN, containment).
CREATE INDEX tasks_queued_idx ON tasks (seq) WHERE status = 'queued';
CREATE INDEX tasks_lease_deadline_idx ON tasks (lease_expires_at) WHERE status IN ('leased', 'running');
CREATE INDEX tasks_lease_node_idx ON tasks (lease_node) WHERE status IN ('leased', 'running');
CREATE INDEX tasks_status_seq_idx ON tasks (status, seq);
CREATE INDEX tasks_labels_idx ON tasks USING gin (labels jsonb_path_ops);

CREATE TABLE attempts (
        task_id      text        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        attempt      integer     NOT NULL,
        node_id      text        NOT NULL,
        lease_token  bigint      NOT NULL,
        leased_at    timestamptz NOT NULL DEFAULT now(),
        started_at   timestamptz,
        ended_at     timestamptz,
        status       text        NOT NULL DEFAULT 'leased',
        exit_code    integer,
        reason       text,
        container_id text,
        PRIMARY KEY (task_id, attempt)
);

CREATE TABLE nodes (
        node_id        text        PRIMARY KEY,
        nano_cpus      bigint      NOT NULL,
        memory_bytes   bigint      NOT NULL,
        labels         jsonb       NOT NULL DEFAULT '{}',
        runtime        text,
        driver         text,
        version        text,
        draining       boolean     NOT NULL DEFAULT false,
        registered_at  timestamptz NOT NULL DEFAULT now(),
        last_heartbeat timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE task_output (
        task_id   text    PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
        output    text    NOT NULL,
        truncated boolean NOT NULL DEFAULT false
);

-- STABLE like to_char, so that it is inlined into its callers: a SQL function that is not inlined is
-- parsed and planned again on every statement that calls it.
CREATE FUNCTION mc_ts(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
        SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The task record served by the API. with_detail adds attempts and the output tails. PL/pgSQL rather
-- than SQL, which cannot be inlined here (sub-select) and so would be parsed and planned on every call
-- (every claim): PL/pgSQL keeps its plan for the session.
CREATE FUNCTION mc_task_json(t tasks, with_detail boolean) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
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
                        'reason', a.reason) ORDER BY a.attempt)
                FROM attempts a WHERE a.task_id = t.id), '[]'::jsonb))
           ELSE '{}'::jsonb END;
END
$$;

-- Push a batch of validated tasks in one transaction (one commit for many pushes). Each element of
-- p_tasks is {"id","spec","target_node","nano_cpus","memory_bytes","labels","max_attempts"}. Returns one
-- row per element: 'created' (with created_at), 'exists' (same id, same spec: the stored record) or
-- 'conflict' (same id, other spec), or 'retry' (a concurrent push of the same id just committed).
CREATE FUNCTION mc_push(p_tasks jsonb)
RETURNS TABLE (id text, result text, record jsonb) LANGUAGE plpgsql AS $$
DECLARE
        n_untargeted integer;
        targets text[];
BEGIN
        RETURN QUERY
        WITH input AS (
                SELECT x->>'id' AS id, x->'spec' AS spec, x->>'target_node' AS target_node,
                       (x->>'nano_cpus')::bigint AS nano_cpus, (x->>'memory_bytes')::bigint AS memory_bytes,
                       x->'labels' AS labels, (x->>'max_attempts')::integer AS max_attempts, o AS ord
                FROM jsonb_array_elements(p_tasks) WITH ORDINALITY AS e(x, o)
        ), inserted AS (
                INSERT INTO tasks AS t (id, spec, target_node, nano_cpus, memory_bytes, labels, max_attempts)
                SELECT i.id, i.spec, i.target_node, i.nano_cpus, i.memory_bytes, i.labels, i.max_attempts
                FROM input i ORDER BY i.ord
                ON CONFLICT ON CONSTRAINT tasks_pkey DO NOTHING
                RETURNING t.id, t.created_at
        )
        SELECT i.id,
               CASE WHEN ins.id IS NOT NULL THEN 'created'
                    -- inserted by a transaction that committed after this statement's snapshot
                    WHEN old.t IS NULL THEN 'retry'
                    WHEN (old.t).spec = i.spec THEN 'exists'
                    ELSE 'conflict' END,
               CASE WHEN ins.id IS NOT NULL THEN jsonb_build_object('created_at', mc_ts(ins.created_at))
                    WHEN (old.t).spec = i.spec THEN mc_task_json(old.t, true) END
        FROM input i
        LEFT JOIN inserted ins ON ins.id = i.id
        -- Only a push that inserted nothing looks for the stored task: one index probe. OFFSET 0 keeps
        -- this a per-row probe; as a plain join the planner, which guesses 100 input rows, hashes the
        -- whole table on every push for as long as it is small (below some 30 000 rows).
        LEFT JOIN LATERAL (SELECT o AS t FROM tasks o WHERE ins.id IS NULL AND o.id = i.id OFFSET 0) old ON true
        ORDER BY i.ord;

        SELECT count(*) FILTER (WHERE x->>'target_node' IS NULL),
               array_agg(DISTINCT x->>'target_node') FILTER (WHERE x->>'target_node' IS NOT NULL)
          INTO n_untargeted, targets
          FROM jsonb_array_elements(p_tasks) x;
        PERFORM mc_notify_queued(n_untargeted, targets);
END
$$;

-- Wakes waiting claims on every replica: "<n>" for n tasks any node may take, "@<node>" for a node.
CREATE FUNCTION mc_notify_queued(n_untargeted integer, targets text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
        t text;
BEGIN
        IF n_untargeted > 0 THEN
                PERFORM pg_notify('mc_queued', n_untargeted::text);
        END IF;
        FOREACH t IN ARRAY coalesce(targets, '{}'::text[]) LOOP
                PERFORM pg_notify('mc_queued', '@' || t);
        END LOOP;
END
$$;

CREATE FUNCTION mc_register(p_node text, p_nano_cpus bigint, p_memory_bytes bigint, p_labels jsonb,
                            p_runtime text, p_driver text, p_version text)
RETURNS void LANGUAGE sql AS $$
        INSERT INTO nodes AS n (node_id, nano_cpus, memory_bytes, labels, runtime, driver, version)
        VALUES (p_node, p_nano_cpus, p_memory_bytes, p_labels, p_runtime, p_driver, p_version)
        ON CONFLICT (node_id) DO UPDATE SET
                nano_cpus = EXCLUDED.nano_cpus, memory_bytes = EXCLUDED.memory_bytes,
                labels = EXCLUDED.labels, runtime = EXCLUDED.runtime, driver = EXCLUDED.driver,
                version = EXCLUDED.version, draining = false, last_heartbeat = now();
$$;

-- Leases one queued task that fits the node, or returns no row. Claims of one node are serialised by a
-- transaction-scoped advisory lock, so that two of them cannot both take its last free capacity; unlike
-- a row lock it assigns no transaction id, so a claim that finds nothing writes nothing (no commit to
-- flush), and the node's free capacity is summed once.
CREATE FUNCTION mc_claim(p_node text, p_ttl_ms integer)
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
                         lease_node = p_node,
                         lease_expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond',
                         updated_at = now(), pending_reason = NULL
         WHERE tasks.id = t.id
        RETURNING * INTO t;
        INSERT INTO attempts (task_id, attempt, node_id, lease_token) VALUES (t.id, t.attempt, p_node, t.lease_token);

        RETURN QUERY SELECT 200, jsonb_build_object('task', mc_task_json(t, false), 'lease_token', t.lease_token,
                                                     'attempt', t.attempt, 'lease_ttl_ms', p_ttl_ms);
END
$$;

-- Renews every lease of the node that is still its own and not past its deadline; reports the others.
CREATE FUNCTION mc_heartbeat(p_node text, p_leases jsonb, p_ttl_ms integer, p_draining boolean)
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
                UPDATE tasks t SET lease_expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond'
                  FROM l
                 WHERE t.id = l.id AND t.lease_token = l.token AND t.lease_node = p_node
                   AND t.status IN ('leased', 'running') AND t.lease_expires_at > clock_timestamp()
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

-- The fencing check of the agents' writes, in one place: locks task p_id and returns it, or the answer
-- to give instead (404: no such task; 409: the token is not the current lease of p_node, or the task is
-- past the point where this write means anything). A task cancelled while leased still takes the one
-- result of its last lease when p_allow_cancelled.
CREATE FUNCTION mc_lock_lease(p_id text, p_node text, p_token bigint, p_allow_cancelled boolean,
                              OUT t tasks, OUT code integer, OUT body jsonb) LANGUAGE plpgsql AS $$
BEGIN
        SELECT * INTO t FROM tasks WHERE tasks.id = p_id FOR UPDATE;
        IF NOT FOUND THEN
                code := 404;
                body := jsonb_build_object('error', 'no such task', 'field', 'id');
        ELSIF t.lease_token <> p_token OR t.lease_node IS DISTINCT FROM p_node
              OR NOT (t.status IN ('leased', 'running')
                      OR (p_allow_cancelled AND t.status = 'cancelled' AND t.exit_code IS NULL)) THEN
                code := 409;
                body := jsonb_build_object('error', format('stale lease token %s (task is %s, current token %s)',
                                                           p_token, t.status, t.lease_token), 'field', 'lease_token');
        END IF;
END
$$;

CREATE FUNCTION mc_started(p_id text, p_node text, p_token bigint, p_container text)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        t tasks;
        lk record;
BEGIN
        SELECT * INTO lk FROM mc_lock_lease(p_id, p_node, p_token, false);
        IF lk.code IS NOT NULL THEN
                RETURN QUERY SELECT lk.code, lk.body;
                RETURN;
        END IF;
        t := lk.t;
        IF t.status = 'leased' THEN
                UPDATE tasks SET status = 'running', updated_at = now() WHERE tasks.id = p_id RETURNING * INTO t;
        END IF;
        UPDATE attempts SET started_at = coalesce(started_at, now()), status = 'running',
                            container_id = coalesce(p_container, container_id)
         WHERE task_id = p_id AND attempt = t.attempt;
        RETURN QUERY SELECT 200, mc_task_json(t, false);
END
$$;

CREATE FUNCTION mc_finish(p_id text, p_node text, p_token bigint, p_status text, p_exit_code integer,
                          p_reason text, p_stdout text, p_stderr text, p_truncated boolean,
                          p_output text, p_output_truncated boolean)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        t tasks;
        lk record;
BEGIN
        SELECT * INTO lk FROM mc_lock_lease(p_id, p_node, p_token, true);
        IF lk.code IS NOT NULL THEN
                RETURN QUERY SELECT lk.code, lk.body;
                RETURN;
        END IF;
        t := lk.t;

        -- A task cancelled while it ran keeps its status; its result is still worth recording.
        UPDATE tasks SET status = CASE WHEN t.status = 'cancelled' THEN 'cancelled' ELSE p_status END,
                         exit_code = p_exit_code, reason = coalesce(p_reason, reason),
                         stdout_tail = p_stdout, stderr_tail = p_stderr, truncated = p_truncated,
                         finished_at = coalesce(finished_at, now()), updated_at = now(),
                         lease_expires_at = NULL
         WHERE tasks.id = p_id RETURNING * INTO t;
        UPDATE attempts SET ended_at = now(), status = p_status, exit_code = p_exit_code, reason = p_reason
         WHERE task_id = p_id AND attempt = t.attempt;
        IF p_output IS NOT NULL THEN
                INSERT INTO task_output (task_id, output, truncated) VALUES (p_id, p_output, p_output_truncated)
                ON CONFLICT (task_id) DO UPDATE SET output = EXCLUDED.output, truncated = EXCLUDED.truncated;
        END IF;
        -- The node has capacity again.
        PERFORM mc_notify_queued(0, ARRAY[p_node]);
        RETURN QUERY SELECT 200, mc_task_json(t, true);
END
$$;

CREATE FUNCTION mc_cancel(p_id text)
RETURNS TABLE (code integer, body jsonb, lease_node text) LANGUAGE plpgsql AS $$
DECLARE
        t tasks;
        was text;
BEGIN
        SELECT * INTO t FROM tasks WHERE tasks.id = p_id FOR UPDATE;
        IF NOT FOUND THEN
                RETURN QUERY SELECT 404, jsonb_build_object('error', 'no such task', 'field', 'id'), NULL::text;
                RETURN;
        END IF;
        IF t.status NOT IN ('queued', 'leased', 'running') THEN
                RETURN QUERY SELECT 409, jsonb_build_object('error', format('task already ended (%s)', t.status),
                                                            'field', 'id'), NULL::text;
                RETURN;
        END IF;
        was := t.status;
        -- The lease node and token stay, so that the next heartbeat answers "cancelled" for them.
        UPDATE tasks SET status = 'cancelled', reason = 'cancelled by user', finished_at = now(), updated_at = now(),
                         pending_reason = NULL
         WHERE tasks.id = p_id RETURNING * INTO t;
        IF was <> 'queued' THEN
                UPDATE attempts SET status = 'cancelled', reason = 'cancelled by user'
                 WHERE task_id = p_id AND attempt = t.attempt;
        END IF;
        RETURN QUERY SELECT 200, mc_task_json(t, true), CASE WHEN was <> 'queued' THEN t.lease_node END;
END
$$;

-- Re-queues (or fails, after max_attempts) every lease whose deadline plus the grace has passed. When
-- nothing has expired it writes nothing, so the frequent sweep costs no commit.
CREATE FUNCTION mc_sweep(p_grace_ms integer)
RETURNS TABLE (id text, status text, attempt integer, lease_token bigint, node_id text) LANGUAGE plpgsql AS $$
DECLARE
        swept jsonb;
        n_untargeted integer;
        targets text[];
BEGIN
        WITH expired AS (
                SELECT x.id, x.lease_node FROM tasks x
                 WHERE x.status IN ('leased', 'running')
                   -- now(), not clock_timestamp(): only a stable bound can limit the scan of the deadline
                   -- index to what has expired, instead of reading every lease on every sweep.
                   AND x.lease_expires_at < now() - p_grace_ms * interval '1 millisecond'
                 FOR UPDATE SKIP LOCKED
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

        IF swept IS NULL THEN
                RETURN;
        END IF;

        SELECT count(*) FILTER (WHERE x->>'status' = 'queued' AND x->>'target_node' IS NULL),
               array_agg(DISTINCT x->>'target_node') FILTER (WHERE x->>'status' = 'queued' AND x->>'target_node' IS NOT NULL)
          INTO n_untargeted, targets FROM jsonb_array_elements(swept) x;
        PERFORM mc_notify_queued(n_untargeted, targets);

        RETURN QUERY SELECT x->>'id', x->>'status', (x->>'attempt')::integer, (x->>'lease_token')::bigint, x->>'node_id'
                       FROM jsonb_array_elements(swept) x;
END
$$;

-- Explains queued tasks that no registered node could ever take.
CREATE FUNCTION mc_explain_pending(p_lost_after_ms integer) RETURNS void LANGUAGE sql AS $$
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
        )
        UPDATE tasks t SET pending_reason = q.why FROM q
         WHERE t.id = q.id AND t.pending_reason IS DISTINCT FROM q.why;
$$;

CREATE FUNCTION mc_list(p_status text, p_labels jsonb, p_limit integer, p_after bigint)
RETURNS jsonb LANGUAGE sql STABLE AS $$
        WITH page AS (
                SELECT t FROM tasks t
                 WHERE (p_status IS NULL OR t.status = p_status)
                   AND (p_labels IS NULL OR t.labels @> p_labels)
                   AND (p_after IS NULL OR t.seq < p_after)
                 ORDER BY t.seq DESC
                 LIMIT p_limit + 1
        ), numbered AS (
                SELECT p.t, row_number() OVER (ORDER BY (p.t).seq DESC) AS n FROM page p
        )
        SELECT jsonb_build_object(
                'tasks', coalesce((SELECT jsonb_agg(mc_task_json(x.t, false) ORDER BY (x.t).seq DESC)
                                   FROM numbered x WHERE x.n <= p_limit), '[]'::jsonb),
                'next', (SELECT ((x.t).seq)::text FROM numbered x WHERE x.n = p_limit
                         AND EXISTS (SELECT 1 FROM numbered y WHERE y.n = p_limit + 1)))
$$;

CREATE FUNCTION mc_nodes(p_lost_after_ms integer) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT jsonb_build_object('nodes', coalesce(jsonb_agg(jsonb_build_object(
                'node_id', n.node_id,
                'state', CASE WHEN n.last_heartbeat < now() - p_lost_after_ms * interval '1 millisecond' THEN 'lost'
                              WHEN n.draining THEN 'draining' ELSE 'ready' END,
                'capacity', jsonb_build_object('nano_cpus', n.nano_cpus, 'memory_bytes', n.memory_bytes),
                'reserved', jsonb_build_object('nano_cpus', coalesce(r.cpus, 0), 'memory_bytes', coalesce(r.mem, 0)),
                'running_tasks', coalesce(r.n, 0),
                'labels', n.labels, 'runtime', n.runtime, 'driver', n.driver, 'version', n.version,
                'registered_at', mc_ts(n.registered_at), 'last_heartbeat', mc_ts(n.last_heartbeat))
                ORDER BY n.node_id), '[]'::jsonb))
        FROM nodes n
        LEFT JOIN LATERAL (SELECT sum(t.nano_cpus) AS cpus, sum(t.memory_bytes) AS mem, count(*) AS n
                           FROM tasks t WHERE t.lease_node = n.node_id AND t.status IN ('leased', 'running')) r ON true
$$;

-- Counts for metrics and D-Bus properties. The states a task passes through (queued, leased, running)
-- come from the partial indexes and stay cheap however many tasks have finished; the finished states
-- cost a scan of the status index, so callers ask for them (p_final) only now and then.
CREATE FUNCTION mc_counts(p_lost_after_ms integer, p_final boolean) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT jsonb_build_object(
                'tasks', jsonb_build_object(
                        'queued', (SELECT count(*) FROM tasks WHERE status = 'queued'),
                        'leased', (SELECT count(*) FROM tasks WHERE status = 'leased'),
                        'running', (SELECT count(*) FROM tasks WHERE status = 'running'))
                  || CASE WHEN p_final THEN coalesce((SELECT jsonb_object_agg(s.status, s.n) FROM
                        (SELECT status, count(*) AS n FROM tasks
                          WHERE status IN ('succeeded', 'failed', 'timed_out', 'cancelled') GROUP BY status) s),
                        '{}'::jsonb) ELSE '{}'::jsonb END,
                'nodes_ready', (SELECT count(*) FROM nodes
                                WHERE last_heartbeat > now() - p_lost_after_ms * interval '1 millisecond'
                                  AND NOT draining))
$$;
