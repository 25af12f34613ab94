-- mc's functions: every API call is one statement calling one of them, so each is one round trip and
-- one transaction.
--
-- Unlike the tables (the numbered migrations, applied once each), this file is applied whole at every
-- start of mc-control, after the migrations and under their advisory lock, so that each function is
-- written once, as it is now, and a change to one is a change here. Hence CREATE OR REPLACE only; a
-- change of a function's result type, which REPLACE refuses, needs a migration that drops it first.
-- A control that finds a schema newer than it knows leaves the functions alone: they are a newer
-- control's.
--
-- Bodies are checked when called, not here (as pg_dump does): a function may call one defined below.
--
-- In PL/pgSQL, a call whose result is not wanted (a lock, an unlock, a notification) on a path taken
-- per task is an assignment to a throwaway text variable (`ignored := pg_notify(...)`; a void result
-- is assigned as ''), not PERFORM: PERFORM runs its call as a query through SPI, with the executor's
-- start and end, while an assignment of a plain call is evaluated directly: the two unlocks of
-- mc_announce_wanted(), which every task change calls, as PERFORM doubled its cost (5.45 against 2.80 µs
-- a call, bench/control/insert-cost). PERFORM stays for what is a query (PERFORM 1 FROM ...) and on
-- the rare paths.
SET LOCAL check_function_bodies = off;

-- STABLE like to_char, so that it is inlined into its callers: a SQL function that is not inlined is
-- parsed and planned again on every statement that calls it.
CREATE OR REPLACE FUNCTION mc_ts(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
        SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The task record served by the API. with_detail adds attempts and the output tails. PL/pgSQL rather
-- than SQL, which cannot be inlined here (sub-select) and so would be parsed and planned on every call
-- (every claim): PL/pgSQL keeps its plan for the session.
-- The lease shows its renewals and TTL; expires_at is the database's reading of its clock at the last
-- renewal plus the TTL, for people (no decision is taken on it).
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
                        'ended_at', mc_ts(a.ended_at), 'expired_at', mc_ts(a.expired_at),
                        'status', a.status, 'exit_code', a.exit_code,
                        'reason', a.reason, 'inputs_ready_at', mc_ts(a.inputs_ready_at),
                        'inputs_bytes', a.inputs_bytes) ORDER BY a.attempt)
                FROM attempts a WHERE a.task_id = t.id), '[]'::jsonb))
           ELSE '{}'::jsonb END;
END
$$;

-- The inputs of task t as an agent plans its cache with them: each input's content and path, in the
-- order pushed, with the content's length and piece length. PL/pgSQL, as mc_task_json, for its plan to
-- be kept: as a SQL function (a FROM clause cannot be inlined) it was planned again at every claim.
CREATE OR REPLACE FUNCTION mc_task_inputs(t tasks) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
        IF NOT t.spec ? 'inputs' THEN
                RETURN '[]'::jsonb;
        END IF;
        RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                'content', e.x->>'content', 'path', e.x->>'path',
                                'length', c.length, 'piece_length', c.piece_length) ORDER BY e.idx), '[]'::jsonb)
                FROM jsonb_array_elements(coalesce(t.spec->'inputs', '[]'::jsonb)) WITH ORDINALITY AS e(x, idx)
                LEFT JOIN contents c ON c.id = e.x->>'content');
END
$$;

-- The summary served as JSON. The magnet link is the one src/torrent/magnet.c makes for an id without
-- peers: BEP 52's btmh with the SHA-256 multihash prefix 1220.
CREATE OR REPLACE FUNCTION mc_content_json(c contents) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT jsonb_build_object(
                'id', c.id, 'name', c.name, 'length', c.length, 'piece_length', c.piece_length,
                'pieces', c.pieces, 'created_at', mc_ts(c.created_at), 'created_by', c.created_by,
                'magnet', 'magnet:?xt=urn:btmh:1220' || c.id)
$$;

-- ---- Announcing only to someone waiting. A NOTIFY costs PostgreSQL more than the statement that sends
-- it, commits included: at commit it takes a lock on the whole database's queue of notifications and
-- keeps it until the commit is done, so announcing transactions commit one at a time, and every
-- listening backend is woken (bench/control/notify-cost: the push's INSERT with its announcement ran
-- at 0.37 of the bare INSERT's rate with 8 clients). So the tasks and these functions announce a
-- change only when some replica waits for it:
--
-- - A replica with waiting claims holds, on its listening connection, the advisory lock
--   mc_await_key('queued') in share mode; one with watches or streams, mc_await_key('events').
--   mc_await() sets what its session holds, and records it in its setting mc.awaits.
-- - A statement that would announce (mc_announce_wanted()) first takes the guard mc_await_key('guard')
--   in share mode until its transaction ends, then tries the wanted kind's lock exclusively for a
--   moment: if that fails, somebody holds it, and it announces. Its own session's locks do not
--   conflict with it, hence mc.awaits.
-- - A replica that starts to wait takes its lock, then the guard exclusively, for a moment: that
--   waits until every transaction that looked before it (and so may announce nothing) has ended.
--   Only then does it look at the tasks (its claims and watches look again: control-main.c), so a
--   change is either announced to it or already there to be seen.
-- - The guard is only tried: while a replica waits for it (or holds it), a statement that would
--   announce does not queue behind it but announces, which is always right. So a transaction left
--   open after changing a task holds up only the replica starting to wait (until its statement
--   timeout, then it tries again), never the others' changes.
-- An announcement nobody needed (two statements trying the lock at once) costs only its NOTIFY. A
-- replica that dies lets go of its locks with its session.
--
-- Controls from before this scheme listen without holding any lock. Every listening connection of
-- a control that knows it holds mc_await_key('aware'); while another listens without it
-- (mc_unaware_listeners()), controls that know wait for everything on its behalf (awaits.c).
CREATE OR REPLACE FUNCTION mc_await_key(p_kind text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
        SELECT CASE p_kind WHEN 'guard' THEN 7302018120 WHEN 'queued' THEN 7302018121
                           WHEN 'events' THEN 7302018122 WHEN 'aware' THEN 7302018123 END
$$;

-- Listening connections of controls (their application_name) on this database that hold no
-- mc_await_key('aware'): controls from before announcing on demand.
CREATE OR REPLACE FUNCTION mc_unaware_listeners() RETURNS bigint LANGUAGE sql STABLE AS $$
        SELECT count(*) FROM pg_stat_activity a
         WHERE a.application_name = 'mc-control-listener' AND a.datname = current_database()
           AND NOT EXISTS (SELECT 1 FROM pg_locks l
                            WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
                              AND (l.classid::bigint << 32 | l.objid::bigint) = mc_await_key('aware'))
$$;

-- Whether a change is to be announced: p_queued for a task queued (claims and watches wait for it),
-- else for any other change (watches and streams only).
CREATE OR REPLACE FUNCTION mc_announce_wanted(p_queued boolean) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
        own text := coalesce(current_setting('mc.awaits', true), '');
        ignored text;
BEGIN
        IF NOT pg_try_advisory_xact_lock_shared(mc_await_key('guard')) THEN
                RETURN true;
        END IF;
        IF own LIKE '%events%' OR (p_queued AND own LIKE '%queued%') THEN
                RETURN true;
        END IF;
        IF NOT pg_try_advisory_lock(mc_await_key('events')) THEN
                RETURN true;
        END IF;
        ignored := pg_advisory_unlock(mc_await_key('events'));
        IF p_queued THEN
                IF NOT pg_try_advisory_lock(mc_await_key('queued')) THEN
                        RETURN true;
                END IF;
                ignored := pg_advisory_unlock(mc_await_key('queued'));
        END IF;
        RETURN false;
END
$$;

-- What the calling session (a replica's listening connection) waits for, from scratch: p_kinds is
-- '', 'queued', 'events' or 'queued,events'. Returns when every transaction that may have looked
-- before has ended. The listening session holds no other advisory lock.
CREATE OR REPLACE FUNCTION mc_await(p_kinds text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
        PERFORM pg_advisory_unlock_all();
        PERFORM pg_advisory_lock_shared(mc_await_key('aware'));
        IF p_kinds LIKE '%queued%' THEN
                PERFORM pg_advisory_lock_shared(mc_await_key('queued'));
        END IF;
        IF p_kinds LIKE '%events%' THEN
                PERFORM pg_advisory_lock_shared(mc_await_key('events'));
        END IF;
        PERFORM set_config('mc.awaits', p_kinds, false);
        IF p_kinds <> '' THEN
                PERFORM pg_advisory_lock(mc_await_key('guard'));
                PERFORM pg_advisory_unlock(mc_await_key('guard'));
        END IF;
END
$$;

-- Wakes waiting claims on every replica: "<n>" for n tasks any node may take, "@<node>" for a node.
-- A task queued needs none (its event on mc_events wakes them): this is for a node's capacity freed,
-- its drain lifted, a queued task's pending_reason changed.
CREATE OR REPLACE FUNCTION mc_notify_queued(n_untargeted integer, targets text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
        t text;
        ignored text;
BEGIN
        IF (n_untargeted > 0 OR cardinality(targets) > 0) AND NOT mc_announce_wanted(true) THEN
                RETURN;
        END IF;
        IF n_untargeted > 0 THEN
                ignored := pg_notify('mc_queued', n_untargeted::text);
        END IF;
        FOREACH t IN ARRAY coalesce(targets, '{}'::text[]) LOOP
                ignored := pg_notify('mc_queued', '@' || t);
        END LOOP;
END
$$;

-- Push a batch of validated tasks in one transaction (one commit for many pushes). Each element of
-- p_tasks is {"id","spec","target_node","nano_cpus","memory_bytes","labels","max_attempts"}. Returns one
-- row per element: 'created' (with created_at), 'exists' (same id, same spec: the stored record) or
-- 'conflict' (same id, other spec), or 'retry' (a concurrent push of the same id just committed).
-- Every input must name a registered content: a task with an
-- unknown content is not inserted; its row answers 'invalid' with the {"error", "field"} to return
-- (the first unknown input, "inputs[<0-based index>].content"). Done here, in the push's own
-- statement, so that the check and the insert are one transaction.
-- A push alone of a task without inputs (the usual push of a client that waits for each answer) is not
-- this but one prepared INSERT, in push.c (PUSH_ONE_SQL). Neither notifies mc_queued: each inserted
-- task's event on mc_events (mc_task_event) wakes the claims that could take it.
CREATE OR REPLACE FUNCTION mc_push(p_tasks jsonb)
RETURNS TABLE (id text, result text, record jsonb) LANGUAGE plpgsql AS $$
BEGIN
        RETURN QUERY
        WITH input AS (
                SELECT x->>'id' AS id, x->'spec' AS spec, x->>'target_node' AS target_node,
                       (x->>'nano_cpus')::bigint AS nano_cpus, (x->>'memory_bytes')::bigint AS memory_bytes,
                       x->'labels' AS labels, (x->>'max_attempts')::integer AS max_attempts, o AS ord
                FROM jsonb_array_elements(p_tasks) WITH ORDINALITY AS e(x, o)
        ), unknown AS (
                SELECT DISTINCT ON (i.ord) i.ord, e.idx - 1 AS idx, e.x->>'content' AS content
                FROM input i, jsonb_array_elements(coalesce(i.spec->'inputs', '[]'::jsonb)) WITH ORDINALITY AS e(x, idx)
                WHERE NOT EXISTS (SELECT 1 FROM contents c WHERE c.id = e.x->>'content')
                ORDER BY i.ord, e.idx
        ), inserted AS (
                INSERT INTO tasks AS t (id, spec, target_node, nano_cpus, memory_bytes, labels, max_attempts)
                SELECT i.id, i.spec, i.target_node, i.nano_cpus, i.memory_bytes, i.labels, i.max_attempts
                FROM input i WHERE NOT EXISTS (SELECT 1 FROM unknown u WHERE u.ord = i.ord)
                ORDER BY i.ord
                ON CONFLICT ON CONSTRAINT tasks_pkey DO NOTHING
                RETURNING t.id, t.created_at
        )
        SELECT i.id,
               CASE WHEN u.ord IS NOT NULL THEN 'invalid'
                    WHEN ins.id IS NOT NULL THEN 'created'
                    -- inserted by a transaction that committed after this statement's snapshot
                    WHEN old.t IS NULL THEN 'retry'
                    WHEN (old.t).spec = i.spec THEN 'exists'
                    ELSE 'conflict' END,
               CASE WHEN u.ord IS NOT NULL THEN jsonb_build_object(
                            'error', format('unknown content %s: register its manifest first (PUT /api/contents/%s)',
                                            u.content, u.content),
                            'field', format('inputs[%s].content', u.idx))
                    WHEN ins.id IS NOT NULL THEN jsonb_build_object('created_at', mc_ts(ins.created_at))
                    WHEN (old.t).spec = i.spec THEN mc_task_json(old.t, true) END
        FROM input i
        LEFT JOIN unknown u ON u.ord = i.ord
        LEFT JOIN inserted ins ON ins.id = i.id
        -- Only a push that inserted nothing looks for the stored task: one index probe. OFFSET 0 keeps
        -- this a per-row probe; as a plain join the planner, which guesses 100 input rows, hashes the
        -- whole table on every push for as long as it is small (below some 30 000 rows).
        LEFT JOIN LATERAL (SELECT o AS t FROM tasks o WHERE ins.id IS NULL AND u.ord IS NULL AND o.id = i.id
                           OFFSET 0) old ON true
        ORDER BY i.ord;
END
$$;

CREATE OR REPLACE FUNCTION mc_cancel(p_id text)
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

-- A page of tasks, newest first. PL/pgSQL with a statement made for the filters given, planned for
-- their values: a SQL function is planned once for any parameters, and that plan walked the tasks by
-- seq testing each against the status, which with a status no task has read every task (460 ms at a
-- million). Now a status filter reads the (status, seq) index from the cursor on, and labels use the
-- GIN index when the planner expects that to be cheaper. The text of the statement is one of eight,
-- made from fixed pieces; the values are parameters.
CREATE OR REPLACE FUNCTION mc_list(p_status text, p_labels jsonb, p_limit integer, p_after bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
        result jsonb;
BEGIN
        EXECUTE format($q$
        WITH page AS (
                SELECT t FROM tasks t
                 WHERE true %s %s %s
                 ORDER BY t.seq DESC
                 LIMIT $3 + 1
        ), numbered AS (
                SELECT p.t, row_number() OVER (ORDER BY (p.t).seq DESC) AS n FROM page p
        )
        SELECT jsonb_build_object(
                'tasks', coalesce((SELECT jsonb_agg(mc_task_json(x.t, false) ORDER BY (x.t).seq DESC)
                                   FROM numbered x WHERE x.n <= $3), '[]'::jsonb),
                'next', (SELECT ((x.t).seq)::text FROM numbered x WHERE x.n = $3
                         AND EXISTS (SELECT 1 FROM numbered y WHERE y.n = $3 + 1)))$q$,
                CASE WHEN p_status IS NOT NULL THEN 'AND t.status = $1' ELSE '' END,
                CASE WHEN p_labels IS NOT NULL THEN 'AND t.labels @> $2' ELSE '' END,
                CASE WHEN p_after IS NOT NULL THEN 'AND t.seq < $4' ELSE '' END)
        INTO result USING p_status, p_labels, p_limit, p_after;
        RETURN result;
END
$$;

CREATE OR REPLACE FUNCTION mc_register(p_node text, p_nano_cpus bigint, p_memory_bytes bigint, p_labels jsonb,
                            p_runtime text, p_driver text, p_version text)
RETURNS void LANGUAGE sql AS $$
        INSERT INTO nodes AS n (node_id, nano_cpus, memory_bytes, labels, runtime, driver, version)
        VALUES (p_node, p_nano_cpus, p_memory_bytes, p_labels, p_runtime, p_driver, p_version)
        ON CONFLICT (node_id) DO UPDATE SET
                nano_cpus = EXCLUDED.nano_cpus, memory_bytes = EXCLUDED.memory_bytes,
                labels = EXCLUDED.labels, runtime = EXCLUDED.runtime, driver = EXCLUDED.driver,
                version = EXCLUDED.version, draining = false, last_heartbeat = now();
        -- Its reserved capacity (schema version 8), kept by mc_task_reserve from now on.
        INSERT INTO node_reserved (node_id) VALUES (p_node) ON CONFLICT (node_id) DO NOTHING;
$$;

-- The queue as a claim of p_node with p_cpus and p_memory free sees it: for each shape (nano_cpus,
-- memory_bytes) that fits, among the untargeted tasks (targeted false) and those targeted at p_node
-- (true), its oldest queued task's seq; oldest first. A loose index scan of tasks_queue_any_idx and
-- tasks_queue_node_idx (schema version 7): each step is one probe, to the next memory_bytes of the same
-- nano_cpus that fits, or else to the next nano_cpus that fits; so it reads a few index pages per shape
-- that fits and per nano_cpus value, however many tasks each has. A SQL function without SET, STABLE
-- and not STRICT, so that it is inlined into its caller's statement (mc_claim_batch), whose plan is kept
-- for the session and is the generic one: each statement's form picks its index whatever the values,
-- while the plan cache, left to itself, found custom plans cheaper and planned these statements again
-- at every claim (a quarter of the claim's CPU with 32 claimers, by perf). As a PL/pgSQL function of
-- its own it cost a claim another 50 µs (the call, its SET, the rows collected and read back).
CREATE OR REPLACE FUNCTION mc_queue_heads(p_node text, p_cpus bigint, p_memory bigint)
RETURNS TABLE (nano_cpus bigint, memory_bytes bigint, seq bigint, targeted boolean) LANGUAGE sql STABLE AS $$
        WITH RECURSIVE node_q AS (
                (SELECT x.nano_cpus AS c, x.memory_bytes AS m, x.seq FROM tasks x
                  WHERE x.status = 'queued' AND x.target_node = p_node AND x.nano_cpus <= p_cpus
                  ORDER BY x.target_node, x.nano_cpus, x.memory_bytes, x.seq LIMIT 1)
                UNION ALL
                SELECT nx.* FROM node_q q CROSS JOIN LATERAL (
                        (SELECT x.nano_cpus, x.memory_bytes, x.seq FROM tasks x
                          WHERE x.status = 'queued' AND x.target_node = p_node
                            AND x.nano_cpus = q.c AND x.memory_bytes > q.m AND x.memory_bytes <= p_memory
                          ORDER BY x.target_node, x.nano_cpus, x.memory_bytes, x.seq LIMIT 1)
                        UNION ALL
                        (SELECT x.nano_cpus, x.memory_bytes, x.seq FROM tasks x
                          WHERE x.status = 'queued' AND x.target_node = p_node
                            AND x.nano_cpus > q.c AND x.nano_cpus <= p_cpus
                          ORDER BY x.target_node, x.nano_cpus, x.memory_bytes, x.seq LIMIT 1)
                        LIMIT 1) nx
        )
        SELECT a.nano_cpus, a.memory_bytes, a.seq, false FROM mc_queue_heads_any(p_cpus, p_memory) a
        UNION ALL
        -- A step to the next nano_cpus lands on its smallest memory_bytes, which may not fit.
        SELECT q.c, q.m, q.seq, true FROM node_q q WHERE q.m <= p_memory
        ORDER BY 3
$$;

-- The untargeted half of mc_queue_heads: the shapes of the tasks any node may take that fit p_cpus and
-- p_memory, each with its oldest task's seq (the same loose index scan). mc_claim_batch also reads it
-- on its own, once per batch, for the largest node in it. Inlined likewise, into mc_queue_heads too.
CREATE OR REPLACE FUNCTION mc_queue_heads_any(p_cpus bigint, p_memory bigint)
RETURNS TABLE (nano_cpus bigint, memory_bytes bigint, seq bigint) LANGUAGE sql STABLE AS $$
        WITH RECURSIVE any_q AS (
                (SELECT x.nano_cpus AS c, x.memory_bytes AS m, x.seq FROM tasks x
                  WHERE x.status = 'queued' AND x.target_node IS NULL AND x.nano_cpus <= p_cpus
                  ORDER BY x.nano_cpus, x.memory_bytes, x.seq LIMIT 1)
                UNION ALL
                SELECT nx.* FROM any_q q CROSS JOIN LATERAL (
                        (SELECT x.nano_cpus, x.memory_bytes, x.seq FROM tasks x
                          WHERE x.status = 'queued' AND x.target_node IS NULL
                            AND x.nano_cpus = q.c AND x.memory_bytes > q.m AND x.memory_bytes <= p_memory
                          ORDER BY x.nano_cpus, x.memory_bytes, x.seq LIMIT 1)
                        UNION ALL
                        (SELECT x.nano_cpus, x.memory_bytes, x.seq FROM tasks x
                          WHERE x.status = 'queued' AND x.target_node IS NULL
                            AND x.nano_cpus > q.c AND x.nano_cpus <= p_cpus
                          ORDER BY x.nano_cpus, x.memory_bytes, x.seq LIMIT 1)
                        LIMIT 1) nx
        )
        SELECT q.c, q.m, q.seq FROM any_q q WHERE q.m <= p_memory
$$;

-- Leases one queued task that fits the node, or returns no row. Claims of one node are serialised by a
-- transaction-scoped advisory lock, so that two of them cannot both take its last free capacity; unlike
-- a row lock it assigns no transaction id, so a claim that finds nothing writes nothing (no commit to
-- flush), and the node's free capacity is summed once.
-- The answer has the task's inputs with their sizes (mc_task_inputs). A new lease starts with no
-- renewals and records its TTL. A claim that finds nothing free waits for an explained task that
-- mc_explain_pending holds (its update is short) and looks again, rather than answering that there is
-- nothing while that update runs.
--
-- What the claim reads does not grow with the backlog (schema version 7). The queue is two indexes,
-- the untargeted tasks and each node's own, each ordered by shape (nano_cpus, memory_bytes) and then
-- by seq; the claim never looks at another node's tasks, and reads only the shapes that fit its free
-- capacity, skipping from one to the next (a "loose index scan": within one nano_cpus the next
-- memory_bytes that fits, else the next nano_cpus that fits; shapes too large are stepped over at
-- the price of one probe per nano_cpus value). Each shape's first entry is its oldest task; the claim
-- tries the shapes oldest head first and takes, with FOR UPDATE SKIP LOCKED, the oldest free task of
-- the first one that has one. Its cost grows with the number of distinct shapes that fit, not with the
-- number of tasks. Under concurrent claims the order is the queue's only approximately, as it always
-- was with SKIP LOCKED: a shape whose head another claim holds gives its next task.
-- Generic plans only, as for mc_queue_heads.
--
-- A claim is mc_claim_batch of one node; mc_claim is that, for callers that want one answer.
CREATE OR REPLACE FUNCTION mc_claim(p_node text, p_ttl_ms integer)
RETURNS TABLE (code integer, body jsonb) LANGUAGE sql AS $$
        SELECT b.r_code, b.r_body FROM mc_claim_batch(ARRAY[p_node], p_ttl_ms, true) b
$$;

-- The claims of several nodes in one transaction: group commit of claims, one statement, one commit
-- (one WAL flush) for all of them. Each element of p_nodes is one claim, its own node's, and is
-- answered by at most one row whose r_i is its 1-based index: r_code 200 (a task leased: r_body the
-- answer, r_task, r_token and r_attempt its lease), 404 (the node is not registered), or 0 (ask again
-- alone, below); no row: nothing for it now. The claims are taken one after the other, each as
-- mc_claim's, and each sees what the ones before it leased (one transaction), so a task goes to one of
-- them at most, a node's free capacity counts what it leased earlier in the batch, and a node named
-- twice gets two tasks if both fit.
--
-- p_wait false (a batch of several): the batch never waits for a node's claim lock, so that batches
-- running at once (here, or on another replica) cannot deadlock on each other's node locks, held to
-- their commits.
-- A claim whose node lock another transaction holds, or which found nothing but a task that
-- mc_explain_pending holds, answers 0 instead of waiting: its caller asks again alone (p_wait true),
-- which waits as mc_claim always did. Tasks are taken with SKIP LOCKED, and those this transaction
-- leased are no longer queued to the claims after them.
--
-- A node's free capacity is its size less its row of node_reserved (schema version 8), read without a
-- row lock: only a claim of the node raises it, and this one holds the node's claim lock; whatever
-- lowers it meanwhile (a result, an expiry) makes the claim see less free than there is, never more.
-- The lease's trigger (mc_task_reserve) then raises the row, which waits for a transaction that is
-- lowering it. The claims are taken in node_id order, whatever the order of p_nodes, which is the order
-- in which the lease watch takes the rows of the nodes whose leases it expires: a batch and an expiry
-- can each wait for the other's row, but not both.
CREATE OR REPLACE FUNCTION mc_claim_batch(p_nodes text[], p_ttl_ms integer, p_wait boolean)
RETURNS TABLE (r_i integer, r_code integer, r_body jsonb, r_task text, r_token bigint, r_attempt integer)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
        n nodes;
        t tasks;
        s record;
        free_cpus bigint;
        free_memory bigint;
        held text;
        k integer;
        node text;
        any_cpus bigint[];
        any_memory bigint[];
        any_read boolean := false;
        shape_cpus bigint[];            -- the shapes this claim tries, oldest head first
        shape_memory bigint[];
        shape_targeted boolean[];       -- NULL: all untargeted
        max_cpus bigint;
        max_memory bigint;
        ignored text;
BEGIN
        FOR node, k IN SELECT u.node, u.k::integer FROM unnest(p_nodes) WITH ORDINALITY AS u(node, k) ORDER BY u.node, u.k LOOP
                t := NULL;
                held := NULL;
                SELECT * INTO n FROM nodes WHERE node_id = node;
                IF NOT FOUND THEN
                        RETURN QUERY SELECT k, 404, jsonb_build_object('error', 'node is not registered', 'field', 'node_id'),
                                            NULL::text, NULL::bigint, NULL::integer;
                        CONTINUE;
                END IF;
                CONTINUE WHEN n.draining OR n.drained;

                IF p_wait THEN
                        ignored := pg_advisory_xact_lock(hashtext('mc-claim:' || node));
                ELSIF NOT pg_try_advisory_xact_lock(hashtext('mc-claim:' || node)) THEN
                        RETURN QUERY SELECT k, 0, NULL::jsonb, NULL::text, NULL::bigint, NULL::integer;
                        CONTINUE;
                END IF;
                -- No row: the node never held a lease since it registered (or since version 8).
                SELECT n.nano_cpus - r.nano_cpus, n.memory_bytes - r.memory_bytes INTO free_cpus, free_memory
                  FROM node_reserved r WHERE r.node_id = node;
                IF NOT FOUND THEN
                        free_cpus := n.nano_cpus;
                        free_memory := n.memory_bytes;
                END IF;

                -- The plan kept for the session is made for any node and shape. With memory_bytes equal
                -- to a parameter the planner sees the order "by seq" in the probe, which tasks_seq_key
                -- gives too, and with statistics that say most queued tasks have this shape it walks
                -- that index instead, through every task of the other nodes and shapes (270 ms at a
                -- million). As a range of one value memory_bytes stays in the order, which only the
                -- queue's index gives without a sort, and still bounds the index scan to the one shape.
                --
                -- A node with tasks of its own looks at its shapes and the untargeted ones together,
                -- oldest head first. The others (most claims) try the untargeted shapes that the batch
                -- read once, for the largest of its nodes (the loose index scan cost a claim more than
                -- its probe), oldest head first as they were then: a shape a claim before emptied
                -- gives nothing and the next is tried; one pushed since is not seen, and its
                -- notification has the control ask again.
                -- The probe is ordered as the node's queue index, so that the generic plan takes that
                -- index whatever the statistics say (a plan that filters by the node walks every
                -- queued task of the others: 843 buffers behind 20 000 for another node).
                PERFORM 1 FROM tasks x WHERE x.status = 'queued' AND x.target_node = node
                 ORDER BY x.target_node, x.nano_cpus, x.memory_bytes, x.seq LIMIT 1;
                IF FOUND THEN
                        SELECT array_agg(h.nano_cpus ORDER BY h.seq), array_agg(h.memory_bytes ORDER BY h.seq),
                               array_agg(h.targeted ORDER BY h.seq)
                          INTO shape_cpus, shape_memory, shape_targeted
                          FROM mc_queue_heads(node, free_cpus, free_memory) h;
                ELSE
                        IF NOT any_read THEN
                                -- Two statements: with a subquery for an argument the function would
                                -- not be inlined, and a SQL function that is not is planned at every call.
                                SELECT max(b.nano_cpus), max(b.memory_bytes) INTO max_cpus, max_memory
                                  FROM nodes b WHERE b.node_id = ANY (p_nodes);
                                SELECT array_agg(h.nano_cpus ORDER BY h.seq), array_agg(h.memory_bytes ORDER BY h.seq)
                                  INTO any_cpus, any_memory
                                  FROM mc_queue_heads_any(max_cpus, max_memory) h;
                                any_read := true;
                        END IF;
                        shape_cpus := any_cpus;
                        shape_memory := any_memory;
                        shape_targeted := NULL;
                END IF;
                FOR i IN 1 .. coalesce(array_length(shape_cpus, 1), 0) LOOP
                        CONTINUE WHEN shape_cpus[i] > free_cpus OR shape_memory[i] > free_memory;
                        IF shape_targeted[i] THEN
                                SELECT * INTO t FROM tasks x
                                 WHERE x.status = 'queued' AND x.target_node = node
                                   AND x.nano_cpus = shape_cpus[i] AND x.memory_bytes >= shape_memory[i] AND x.memory_bytes <= shape_memory[i]
                                 ORDER BY x.nano_cpus, x.memory_bytes, x.seq LIMIT 1
                                 FOR UPDATE SKIP LOCKED;
                        ELSE
                                SELECT * INTO t FROM tasks x
                                 WHERE x.status = 'queued' AND x.target_node IS NULL
                                   AND x.nano_cpus = shape_cpus[i] AND x.memory_bytes >= shape_memory[i] AND x.memory_bytes <= shape_memory[i]
                                 ORDER BY x.nano_cpus, x.memory_bytes, x.seq LIMIT 1
                                 FOR UPDATE SKIP LOCKED;
                        END IF;
                        EXIT WHEN t.id IS NOT NULL;
                END LOOP;

                IF t.id IS NULL THEN
                        -- Passed over, maybe, only because mc_explain_pending() is changing its
                        -- explanation: wait for that row (its update is short) rather than answer that
                        -- there is nothing. Only explained tasks can be held so; one another claimer
                        -- holds is, once it commits, no longer queued, and is passed over again. Every
                        -- task of the shapes that fit was held a moment ago, so what this reads is about
                        -- as many tasks as were held. The lock is taken on that one row by id, so that
                        -- the re-check after the wait is on its status alone (the explanation's update
                        -- changes pending_reason).
                        FOR s IN SELECT * FROM mc_queue_heads(node, free_cpus, free_memory) LOOP
                                IF s.targeted THEN
                                        SELECT x.id INTO held FROM tasks x
                                         WHERE x.status = 'queued' AND x.target_node = node
                                           AND x.nano_cpus = s.nano_cpus AND x.memory_bytes >= s.memory_bytes AND x.memory_bytes <= s.memory_bytes
                                           AND x.pending_reason IS NOT NULL
                                         ORDER BY x.nano_cpus, x.memory_bytes, x.seq LIMIT 1;
                                ELSE
                                        SELECT x.id INTO held FROM tasks x
                                         WHERE x.status = 'queued' AND x.target_node IS NULL
                                           AND x.nano_cpus = s.nano_cpus AND x.memory_bytes >= s.memory_bytes AND x.memory_bytes <= s.memory_bytes
                                           AND x.pending_reason IS NOT NULL
                                         ORDER BY x.nano_cpus, x.memory_bytes, x.seq LIMIT 1;
                                END IF;
                                EXIT WHEN held IS NOT NULL;
                        END LOOP;
                        CONTINUE WHEN held IS NULL;
                        IF NOT p_wait THEN
                                RETURN QUERY SELECT k, 0, NULL::jsonb, NULL::text, NULL::bigint, NULL::integer;
                                CONTINUE;
                        END IF;
                        SELECT * INTO t FROM tasks x WHERE x.id = held AND x.status = 'queued' FOR UPDATE;
                        CONTINUE WHEN NOT FOUND;
                END IF;

                UPDATE tasks SET status = 'leased', attempt = tasks.attempt + 1, lease_token = tasks.lease_token + 1,
                                 lease_node = node, lease_renewals = 0, lease_ttl_ms = p_ttl_ms,
                                 lease_expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond',
                                 updated_at = now(), pending_reason = NULL
                 WHERE tasks.id = t.id
                RETURNING * INTO t;
                INSERT INTO attempts (task_id, attempt, node_id, lease_token) VALUES (t.id, t.attempt, node, t.lease_token);

                -- Assignments, which PL/pgSQL evaluates as simple expressions, rather than a query
                -- (RETURN QUERY starts an executor for its one row); mc_task_inputs is not called for
                -- a task without inputs.
                r_i := k;
                r_code := 200;
                r_body := jsonb_build_object('task', mc_task_json(t, false), 'lease_token', t.lease_token,
                                             'attempt', t.attempt, 'lease_ttl_ms', p_ttl_ms,
                                             'inputs', CASE WHEN t.spec ? 'inputs' THEN mc_task_inputs(t) ELSE '[]'::jsonb END);
                r_task := t.id;
                r_token := t.lease_token;
                r_attempt := t.attempt;
                RETURN NEXT;
        END LOOP;
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

        RETURN QUERY SELECT 200, jsonb_build_object('lease_ttl_ms', p_ttl_ms, 'renewed', renewed, 'revoked', revoked,
                                                     'drain', (SELECT n.drained FROM nodes n WHERE n.node_id = p_node));
END
$$;

-- The heartbeats of several nodes in one transaction, one commit for all (src/control/heartbeat.c);
-- each answered as mc_heartbeat answers it alone, with its place in p_beats (1-based). The nodes are
-- taken in the order of their ids, so that two batches (on one replica or on several) lock the nodes'
-- rows in the same order and cannot deadlock; a node's leased tasks are only ever its own.
CREATE OR REPLACE FUNCTION mc_heartbeat_batch(p_beats jsonb, p_ttl_ms integer)
RETURNS TABLE (r_i integer, r_code integer, r_body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        b record;
BEGIN
        FOR b IN SELECT e.i::integer AS i, e.x->>'node_id' AS node, coalesce(e.x->'leases', '[]'::jsonb) AS leases,
                        coalesce((e.x->>'draining')::boolean, false) AS draining
                   FROM jsonb_array_elements(p_beats) WITH ORDINALITY AS e(x, i)
                  ORDER BY e.x->>'node_id', e.i
        LOOP
                RETURN QUERY SELECT b.i, h.code, h.body FROM mc_heartbeat(b.node, b.leases, p_ttl_ms, b.draining) h;
        END LOOP;
END
$$;

-- The fencing check of the agents' writes, in one place: locks task p_id and returns it, or the answer
-- to give instead (404: no such task; 409: the token is not the current lease of p_node, or the task is
-- past the point where this write means anything). A task cancelled while leased still takes the one
-- result of its last lease when p_allow_cancelled.
CREATE OR REPLACE FUNCTION mc_lock_lease(p_id text, p_node text, p_token bigint, p_allow_cancelled boolean,
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

CREATE OR REPLACE FUNCTION mc_started(p_id text, p_node text, p_token bigint, p_container text)
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

-- mc_started with the inputs' readiness. The four-argument form stays for replicas of the previous
-- version during a rolling upgrade.
CREATE OR REPLACE FUNCTION mc_started(p_id text, p_node text, p_token bigint, p_container text,
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

-- mc_started, and whether this call is the one that recorded the start (first): an agent whose answer
-- was lost sends its started again and gets 200 again, and what a replica counts of a start (the
-- inputs' bytes in /metrics) must count it once. The attempt's started_at is the now() (the
-- transaction's start) of the call that recorded it; a call that found it set is another transaction,
-- with another now() (the lease's row lock makes it wait for the first one's commit).
CREATE OR REPLACE FUNCTION mc_started_first(p_id text, p_node text, p_token bigint, p_container text,
                                            p_inputs_ready_usec bigint, p_inputs_bytes bigint)
RETURNS TABLE (code integer, body jsonb, first boolean) LANGUAGE plpgsql AS $$
DECLARE
        r record;
BEGIN
        SELECT * INTO r FROM mc_started(p_id, p_node, p_token, p_container, p_inputs_ready_usec, p_inputs_bytes);
        RETURN QUERY SELECT r.code, r.body, r.code = 200 AND EXISTS (
                SELECT 1 FROM attempts a WHERE a.task_id = p_id AND a.attempt = (r.body->>'attempt')::integer
                                           AND a.started_at = now());
END
$$;

CREATE OR REPLACE FUNCTION mc_finish(p_id text, p_node text, p_token bigint, p_status text, p_exit_code integer,
                          p_reason text, p_stdout text, p_stderr text, p_truncated boolean,
                          p_output text, p_output_truncated boolean)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        t tasks;
        lk record;
        ignored text;
BEGIN
        SELECT * INTO lk FROM mc_lock_lease(p_id, p_node, p_token, true);
        -- The lease expired while the result was on its way, and nobody has held the task since (the
        -- token of a new lease would be larger): the result stands, as if it had come a moment sooner.
        -- It is of a run that ended within its lease: an agent sends no result of a run it did not
        -- see end before its own fence, which comes before any replica's expiry. Taking it spares
        -- the task a second run. A task that failed at that expiry ('lost') stays failed.
        IF lk.code = 409 AND (lk.t).status = 'queued' AND (lk.t).lease_token = p_token
           AND EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = p_id AND a.attempt = (lk.t).attempt
                          AND a.node_id = p_node AND a.lease_token = p_token AND a.status = 'expired') THEN
                lk.code := NULL;
        END IF;
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
        -- The result's output is the authority from now on: the live chunks go.
        DELETE FROM task_output_chunks WHERE task_id = p_id;
        IF p_output IS NOT NULL THEN
                INSERT INTO task_output (task_id, output, truncated) VALUES (p_id, p_output, p_output_truncated)
                ON CONFLICT (task_id) DO UPDATE SET output = EXCLUDED.output, truncated = EXCLUDED.truncated;
        END IF;
        -- The node has capacity again.
        ignored := mc_notify_queued(0, ARRAY[p_node]);
        RETURN QUERY SELECT 200, mc_task_json(t, true);
END
$$;

-- Gives the lease back: the attempt ends 'released' with the agent's reason, and the task is queued
-- again at once, or fails with that reason once it has had max_attempts. A task cancelled meanwhile
-- stays cancelled.
CREATE OR REPLACE FUNCTION mc_release(p_id text, p_node text, p_token bigint, p_code text, p_reason text)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        t tasks;
        lk record;
        why text := p_code || CASE WHEN p_reason IS NOT NULL THEN ': ' || p_reason ELSE '' END;
        ignored text;
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
        ELSE
                UPDATE tasks SET lease_expires_at = NULL, updated_at = now() WHERE tasks.id = p_id RETURNING * INTO t;
        END IF;
        -- The node has capacity again.
        ignored := mc_notify_queued(0, ARRAY[p_node]);
        RETURN QUERY SELECT 200, mc_task_json(t, true);
END
$$;

-- The sweep of schema version 1-3 expired leases by the database's clock. A replica of those versions,
-- still running during a rolling upgrade, calls it: it does nothing now, and the lease watch
-- (mc_lease_watch) of the newer replicas expires.
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
--
-- The expired leases' nodes' rows of node_reserved, which their trigger lowers, are locked first, in
-- node_id order (mc_claim_batch says why).
CREATE OR REPLACE FUNCTION mc_lease_watch(p_expire jsonb)
RETURNS TABLE (id text, lease_token bigint, renewals bigint, ttl_ms integer, expired text, attempt integer,
               node_id text) LANGUAGE plpgsql AS $$
DECLARE
        swept jsonb;
        ids text[];
BEGIN
        IF jsonb_array_length(p_expire) > 0 THEN
                WITH want AS (
                        SELECT x->>'task_id' AS id, (x->>'lease_token')::bigint AS token,
                               (x->>'renewals')::bigint AS renewals
                        FROM jsonb_array_elements(p_expire) x
                )
                -- SKIP LOCKED: a row locked by a renewal (or another replica's sweep) is looked at again
                -- next round, with what that transaction left.
                SELECT array_agg(e.id) INTO ids FROM (
                        SELECT x.id FROM tasks x JOIN want w
                            ON x.id = w.id AND x.lease_token = w.token AND x.lease_renewals = w.renewals
                         WHERE x.status IN ('leased', 'running')
                         FOR UPDATE OF x SKIP LOCKED) e;
        END IF;

        IF ids IS NOT NULL THEN
                PERFORM 1 FROM node_reserved r
                 WHERE r.node_id IN (SELECT x.lease_node FROM tasks x WHERE x.id = ANY (ids))
                 ORDER BY r.node_id FOR UPDATE OF r;
                WITH expired AS (
                        SELECT x.id, x.lease_node FROM tasks x WHERE x.id = ANY (ids)
                ), changed AS (
                        UPDATE tasks t SET
                                status = CASE WHEN t.attempt >= t.max_attempts THEN 'failed' ELSE 'queued' END,
                                reason = CASE WHEN t.attempt >= t.max_attempts THEN 'lost' ELSE t.reason END,
                                finished_at = CASE WHEN t.attempt >= t.max_attempts THEN now() END,
                                lease_node = NULL, lease_expires_at = NULL, updated_at = now()
                          FROM expired e WHERE t.id = e.id
                        RETURNING t.id, t.status, t.attempt, t.lease_token, e.lease_node AS node_id
                ), attempts_ended AS (
                        UPDATE attempts a SET ended_at = now(), expired_at = now(), status = 'expired',
                                              reason = 'lease expired'
                          FROM changed c WHERE a.task_id = c.id AND a.attempt = c.attempt
                )
                SELECT jsonb_agg(to_jsonb(c)) INTO swept FROM changed c;
        END IF;

        IF swept IS NOT NULL THEN
                RETURN QUERY SELECT x->>'id', (x->>'lease_token')::bigint, NULL::bigint, NULL::integer, x->>'status',
                                    (x->>'attempt')::integer, x->>'node_id'
                               FROM jsonb_array_elements(swept) x;
        END IF;

        RETURN QUERY SELECT t.id, t.lease_token, t.lease_renewals, t.lease_ttl_ms, NULL::text, t.attempt, t.lease_node
                       FROM tasks t WHERE t.status IN ('leased', 'running');
END
$$;

-- Explains queued tasks that no registered node could ever take.
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

-- A node as GET /api/nodes shows it. "draining" is the node's own (D-Bus) drain or one asked for
-- through the control ("drained"), which only the control's undrain ends.
CREATE OR REPLACE FUNCTION mc_node_json(n nodes, p_lost_after_ms integer) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT jsonb_build_object(
                'node_id', n.node_id,
                'state', CASE WHEN n.last_heartbeat < now() - p_lost_after_ms * interval '1 millisecond' THEN 'lost'
                              WHEN n.draining OR n.drained THEN 'draining' ELSE 'ready' END,
                'drained', n.drained,
                'capacity', jsonb_build_object('nano_cpus', n.nano_cpus, 'memory_bytes', n.memory_bytes),
                'reserved', jsonb_build_object('nano_cpus', coalesce(r.nano_cpus, 0), 'memory_bytes', coalesce(r.memory_bytes, 0)),
                'running_tasks', coalesce(r.leases, 0),
                'labels', n.labels, 'runtime', n.runtime, 'driver', n.driver, 'version', n.version,
                'registered_at', mc_ts(n.registered_at), 'last_heartbeat', mc_ts(n.last_heartbeat))
        FROM (SELECT 1) one LEFT JOIN node_reserved r ON r.node_id = n.node_id
$$;

CREATE OR REPLACE FUNCTION mc_nodes(p_lost_after_ms integer) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT jsonb_build_object('nodes', coalesce(jsonb_agg(mc_node_json(n, p_lost_after_ms) ORDER BY n.node_id),
                                                    '[]'::jsonb))
        FROM nodes n
$$;

-- Counts for metrics and D-Bus properties. The states a task passes through (queued, leased, running)
-- come from the partial indexes and stay cheap however many tasks have finished; the finished states
-- cost a scan of the status index, so callers ask for them (p_final) only now and then.
CREATE OR REPLACE FUNCTION mc_counts(p_lost_after_ms integer, p_final boolean) RETURNS jsonb LANGUAGE sql STABLE AS $$
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
                                  AND NOT draining AND NOT drained))
$$;

-- Registers a checked manifest: 201 created, 200 when the same bytes are stored under the id already,
-- 409 when other bytes are (which two valid canonical manifests of one id cannot be). A concurrent PUT
-- of the same id waits on the insert (ON CONFLICT) and then finds the row, in this statement's or the
-- next statement's snapshot.
CREATE OR REPLACE FUNCTION mc_content_put(p_id text, p_torrent bytea, p_name text, p_length bigint, p_piece_length integer,
                               p_pieces integer, p_by text)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        c contents;
BEGIN
        INSERT INTO contents AS x (id, torrent, name, length, piece_length, pieces, created_by)
        VALUES (p_id, p_torrent, p_name, p_length, p_piece_length, p_pieces, p_by)
        ON CONFLICT (id) DO NOTHING
        RETURNING * INTO c;
        IF FOUND THEN
                RETURN QUERY SELECT 201, mc_content_json(c);
                RETURN;
        END IF;
        SELECT * INTO c FROM contents x WHERE x.id = p_id;
        IF c.torrent = p_torrent THEN
                RETURN QUERY SELECT 200, mc_content_json(c);
        ELSE
                RETURN QUERY SELECT 409, jsonb_build_object(
                        'error', 'a content with this id is stored with a different manifest', 'field', 'id');
        END IF;
END
$$;

CREATE OR REPLACE FUNCTION mc_contents_list(p_limit integer, p_after bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
        WITH page AS (
                SELECT c FROM contents c
                 WHERE p_after IS NULL OR c.seq < p_after
                 ORDER BY c.seq DESC
                 LIMIT p_limit + 1
        ), numbered AS (
                SELECT p.c, row_number() OVER (ORDER BY (p.c).seq DESC) AS n FROM page p
        )
        SELECT jsonb_build_object(
                'contents', coalesce((SELECT jsonb_agg(mc_content_json(x.c) ORDER BY (x.c).seq DESC)
                                      FROM numbered x WHERE x.n <= p_limit), '[]'::jsonb),
                'next', (SELECT ((x.c).seq)::text FROM numbered x WHERE x.n = p_limit
                         AND EXISTS (SELECT 1 FROM numbered y WHERE y.n = p_limit + 1)))
$$;

-- ---- Watching: every change of a task's status (or of its record's time: a cancelled task's result)
-- is announced on the channel mc_events to every replica, which passes it to the long polls
-- (GET /api/tasks/{id}?wait=) and event streams (GET /api/events) it serves. The payload is the event
-- as the stream sends it (well under NOTIFY's 8000 bytes: an id is at most 128). A queued task's event
-- (pushed, released, expired) is also what wakes the claims waiting on every replica: all, or, with
-- target_node, that node's (control-main.c).
CREATE OR REPLACE FUNCTION mc_event_json(t tasks) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT jsonb_build_object('id', t.id, 'status', t.status, 'attempt', t.attempt,
                                  'node_id', CASE WHEN t.status IN ('leased', 'running') THEN t.lease_node END,
                                  'target_node', t.target_node,
                                  'exit_code', t.exit_code, 'updated_at', mc_ts(t.updated_at))
$$;

CREATE OR REPLACE FUNCTION mc_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
        ignored text;
BEGIN
        IF mc_announce_wanted(NEW.status = 'queued') THEN
                ignored := pg_notify('mc_events', mc_event_json(NEW)::text);
        END IF;
        RETURN NULL;
END
$$;

-- The triggers that call it are bound to the table but hold nothing but the call: created here, once
-- (creating a trigger locks the table against writes, which a start of every replica should not do),
-- and what they do changes with mc_task_event. A renewal (lease_renewals) sets neither column and
-- fires nothing.
DO $$
BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'tasks'::regclass AND tgname = 'mc_task_inserted') THEN
                CREATE TRIGGER mc_task_inserted AFTER INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION mc_task_event();
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'tasks'::regclass AND tgname = 'mc_task_changed') THEN
                CREATE TRIGGER mc_task_changed AFTER UPDATE OF status, updated_at ON tasks FOR EACH ROW
                        WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.updated_at IS DISTINCT FROM NEW.updated_at)
                        EXECUTE FUNCTION mc_task_event();
        END IF;
END
$$;

-- ---- Each node's reserved capacity (node_reserved, schema version 8): the sums of the resources of
-- its leased and running tasks, and their count, kept by the triggers on tasks that schema version 8
-- created (on an update of status, lease_node or resources, and on the deletion of a task with a
-- lease; no task is inserted with one). Every path that leases or ends a lease keeps the row by
-- changing the task; none writes node_reserved itself. A claim raises its node's row under the node's
-- claim lock; the others lower rows: one at a time (a result, a release, a cancel), or, in the lease
-- watch's expiry, several, locked first in node_id order, the order in which a batch of claims takes
-- them.
CREATE OR REPLACE FUNCTION mc_task_reserve() RETURNS trigger LANGUAGE plpgsql AS $$
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

-- The catch-up of an event stream that names a cursor: the tasks changed at or after p_since (their
-- current state), oldest change first.
CREATE OR REPLACE FUNCTION mc_events_since(p_since timestamptz, p_limit integer) RETURNS SETOF jsonb LANGUAGE sql STABLE AS $$
        SELECT mc_event_json(t) FROM tasks t WHERE t.updated_at >= p_since ORDER BY t.updated_at, t.seq LIMIT p_limit
$$;

-- ---- Live output. A chunk of lease p_token's output that starts at p_pos, the bytes stored so far:
-- stored (200 {"stored": bytes now}); already stored (p_pos below that: an agent that sends again after
-- a lost answer) 200 as well; a gap 400; 409 for a stale lease; 413 once the lease has p_max bytes.
-- Followers on every replica are told on mc_output.
CREATE OR REPLACE FUNCTION mc_output_chunk(p_id text, p_node text, p_token bigint, p_pos bigint, p_data text, p_max bigint)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        lk record;
        have bigint;
        ignored text;
BEGIN
        SELECT * INTO lk FROM mc_lock_lease(p_id, p_node, p_token, false);
        IF lk.code IS NOT NULL THEN
                RETURN QUERY SELECT lk.code, lk.body;
                RETURN;
        END IF;
        -- The last chunk's end is the lease's size: one index probe, however many chunks.
        SELECT c.pos + octet_length(c.data) INTO have FROM task_output_chunks c
         WHERE c.task_id = p_id AND c.lease_token = p_token ORDER BY c.pos DESC LIMIT 1;
        have := coalesce(have, 0);
        IF p_pos < have THEN
                RETURN QUERY SELECT 200, jsonb_build_object('stored', have);
                RETURN;
        END IF;
        IF p_pos > have THEN
                RETURN QUERY SELECT 400, jsonb_build_object('error', format('chunk starts at %s, but %s bytes are stored', p_pos, have),
                                                            'field', 'offset');
                RETURN;
        END IF;
        IF have >= p_max THEN
                RETURN QUERY SELECT 413, jsonb_build_object('error', format('the live output of a lease is at most %s bytes', p_max),
                                                            'field', 'data');
                RETURN;
        END IF;
        IF p_data <> '' THEN
                INSERT INTO task_output_chunks (task_id, lease_token, pos, data) VALUES (p_id, p_token, p_pos, p_data);
                IF mc_announce_wanted(false) THEN
                        ignored := pg_notify('mc_output', p_id);
                END IF;
        END IF;
        RETURN QUERY SELECT 200, jsonb_build_object('stored', have + octet_length(p_data));
END
$$;

-- What GET /api/tasks/{id}/logs serves: no row for an unknown task. Once the result came with its
-- output, that output (authoritative); before, the live chunks of the current lease (or of lease
-- p_token when given) from byte p_from on. next_pos is where the text returned ends; lease_token is the
-- task's current lease.
CREATE OR REPLACE FUNCTION mc_task_logs(p_id text, p_token bigint, p_from bigint)
RETURNS TABLE (status text, authoritative boolean, lease_token bigint, next_pos bigint, data text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
        t tasks;
        o text;
        tok bigint;
BEGIN
        SELECT * INTO t FROM tasks x WHERE x.id = p_id;
        IF NOT FOUND THEN
                RETURN;
        END IF;
        SELECT x.output INTO o FROM task_output x WHERE x.task_id = p_id;
        IF FOUND THEN
                RETURN QUERY SELECT t.status::text, true, t.lease_token, octet_length(o)::bigint, o;
                RETURN;
        END IF;
        tok := coalesce(p_token, t.lease_token);
        RETURN QUERY SELECT t.status::text, false, t.lease_token,
                            coalesce(max(c.pos + octet_length(c.data)), p_from),
                            coalesce(string_agg(c.data, '' ORDER BY c.pos), '')
                       FROM task_output_chunks c
                      WHERE c.task_id = p_id AND c.lease_token = tok AND c.pos >= p_from;
END
$$;

-- ---- Nodes, from the control.
CREATE OR REPLACE FUNCTION mc_node_drain(p_node text, p_drained boolean, p_lost_after_ms integer)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        n nodes;
BEGIN
        UPDATE nodes SET drained = p_drained WHERE node_id = p_node RETURNING * INTO n;
        IF NOT FOUND THEN
                RETURN QUERY SELECT 404, jsonb_build_object('error', 'no such node', 'field', 'id');
                RETURN;
        END IF;
        IF NOT p_drained THEN
                -- Claims of the node waiting meanwhile look again.
                PERFORM mc_notify_queued(0, ARRAY[p_node]);
        END IF;
        RETURN QUERY SELECT 200, mc_node_json(n, p_lost_after_ms);
END
$$;

-- Removes a lost node: refused (409) while it heartbeats (within p_lost_after_ms) or holds a lease.
-- Under the node's claim lock, taken first as a claim takes it, so that no claim of the node leases a
-- task between the count and the deletion.
CREATE OR REPLACE FUNCTION mc_node_delete(p_node text, p_lost_after_ms integer)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        n nodes;
        held integer;
BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('mc-claim:' || p_node));
        SELECT * INTO n FROM nodes WHERE node_id = p_node FOR UPDATE;
        IF NOT FOUND THEN
                RETURN QUERY SELECT 404, jsonb_build_object('error', 'no such node', 'field', 'id');
                RETURN;
        END IF;
        IF n.last_heartbeat >= now() - p_lost_after_ms * interval '1 millisecond' THEN
                RETURN QUERY SELECT 409, jsonb_build_object('error', 'the node is alive (it heartbeats); only a lost node can be removed',
                                                            'field', 'id');
                RETURN;
        END IF;
        SELECT r.leases INTO held FROM node_reserved r WHERE r.node_id = p_node FOR UPDATE;
        IF held > 0 THEN
                RETURN QUERY SELECT 409, jsonb_build_object('error', format('the node holds %s leases; they must expire first', held),
                                                            'field', 'id');
                RETURN;
        END IF;
        DELETE FROM nodes WHERE node_id = p_node;
        RETURN QUERY SELECT 204, NULL::jsonb;
END
$$;

-- ---- Deleting tasks: one that has ended (409 otherwise), or, by retention, those that ended more than
-- p_age_ms ago, at most p_batch of them per call (short transactions, rows others hold skipped).
-- Attempts, output and live chunks go with them (ON DELETE CASCADE).
CREATE OR REPLACE FUNCTION mc_task_delete(p_id text)
RETURNS TABLE (code integer, body jsonb) LANGUAGE plpgsql AS $$
DECLARE
        t tasks;
BEGIN
        SELECT * INTO t FROM tasks x WHERE x.id = p_id FOR UPDATE;
        IF NOT FOUND THEN
                RETURN QUERY SELECT 404, jsonb_build_object('error', 'no such task', 'field', 'id');
                RETURN;
        END IF;
        IF t.status IN ('queued', 'leased', 'running') THEN
                RETURN QUERY SELECT 409, jsonb_build_object('error', format('task has not ended (%s); cancel it first', t.status),
                                                            'field', 'id');
                RETURN;
        END IF;
        DELETE FROM tasks x WHERE x.id = p_id;
        RETURN QUERY SELECT 204, NULL::jsonb;
END
$$;

CREATE OR REPLACE FUNCTION mc_retention(p_age_ms bigint, p_batch integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
        n integer;
BEGIN
        WITH old AS (
                SELECT x.id FROM tasks x
                 WHERE x.finished_at < now() - p_age_ms * interval '1 millisecond'
                   AND x.status NOT IN ('queued', 'leased', 'running')
                 ORDER BY x.finished_at LIMIT p_batch
                 FOR UPDATE SKIP LOCKED
        )
        DELETE FROM tasks t USING old WHERE t.id = old.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
END
$$;
