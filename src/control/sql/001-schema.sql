-- mc schema, version 1. Applied by mc-control at start under an advisory lock, so replicas that start
-- together apply it once. The functions the API calls are in functions.sql.

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
