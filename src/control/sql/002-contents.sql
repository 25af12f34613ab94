-- mc schema, version 2: contents, the files tasks take as inputs (docs/api.md, "Contents").
--
-- A content is registered by its manifest, a BitTorrent v2 .torrent of one file that mc-control has
-- checked (canonical, SHA-256 of info = id, piece layer hashing to the pieces root) before storing it
-- re-encoded, so that one content has one stored form. Who seeds it is not stored here: the DHT finds
-- the seeders. Contents are never deleted, which is what lets a push check its inputs against this
-- table without locking the rows it found: a content known at push time stays known.

CREATE TABLE contents (
        seq          bigserial   NOT NULL UNIQUE,             -- insertion order; the list cursor
        id           text        PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),
        torrent      bytea       NOT NULL,                    -- the canonical .torrent {info, piece layers}
        name         text        NOT NULL,                    -- the info's name: hex of the pieces root
        length       bigint      NOT NULL CHECK (length >= 0),
        piece_length integer     NOT NULL CHECK (piece_length > 0),
        pieces       integer     NOT NULL CHECK (pieces >= 0),
        created_at   timestamptz NOT NULL DEFAULT now(),
        created_by   text                                     -- the user who registered it (NULL without auth)
);

-- The summary served as JSON. The magnet link is the one src/torrent/magnet.c makes for an id without
-- peers: BEP 52's btmh with the SHA-256 multihash prefix 1220.
CREATE FUNCTION mc_content_json(c contents) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT jsonb_build_object(
                'id', c.id, 'name', c.name, 'length', c.length, 'piece_length', c.piece_length,
                'pieces', c.pieces, 'created_at', mc_ts(c.created_at), 'created_by', c.created_by,
                'magnet', 'magnet:?xt=urn:btmh:1220' || c.id)
$$;

-- Registers a checked manifest: 201 created, 200 when the same bytes are stored under the id already,
-- 409 when other bytes are (which two valid canonical manifests of one id cannot be). A concurrent PUT
-- of the same id waits on the insert (ON CONFLICT) and then finds the row, in this statement's or the
-- next statement's snapshot.
CREATE FUNCTION mc_content_put(p_id text, p_torrent bytea, p_name text, p_length bigint, p_piece_length integer,
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

CREATE FUNCTION mc_contents_list(p_limit integer, p_after bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
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

-- mc_push of version 1, plus the check that every input names a registered content. A task with an
-- unknown content is not inserted; its row answers 'invalid' with the {"error", "field"} to return
-- (the first unknown input, "inputs[<0-based index>].content"). Done here, in the push's own
-- statement, so that the check and the insert are one transaction.
CREATE OR REPLACE FUNCTION mc_push(p_tasks jsonb)
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

        SELECT count(*) FILTER (WHERE x->>'target_node' IS NULL),
               array_agg(DISTINCT x->>'target_node') FILTER (WHERE x->>'target_node' IS NOT NULL)
          INTO n_untargeted, targets
          FROM jsonb_array_elements(p_tasks) x;
        PERFORM mc_notify_queued(n_untargeted, targets);
END
$$;

-- The inputs of task t as an agent plans its cache with them: each input's content and path, in the
-- order pushed, with the content's length and piece length.
CREATE FUNCTION mc_task_inputs(t tasks) RETURNS jsonb LANGUAGE sql STABLE AS $$
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'content', e.x->>'content', 'path', e.x->>'path',
                        'length', c.length, 'piece_length', c.piece_length) ORDER BY e.idx), '[]'::jsonb)
        FROM jsonb_array_elements(coalesce(t.spec->'inputs', '[]'::jsonb)) WITH ORDINALITY AS e(x, idx)
        LEFT JOIN contents c ON c.id = e.x->>'content'
$$;

-- mc_claim of version 1; the answer has the task's inputs with their sizes (mc_task_inputs) too.
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
                         lease_node = p_node,
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
