-- Update flows, deployments, one execution per (device, deployment), and the event log.
-- See Sources/FlotillaCore/Execution.swift for the state machine these rows store.

-- A flow version is immutable; applying changed content adds version n+1.
CREATE TABLE flows (
    name       text NOT NULL COLLATE "C",
    version    int NOT NULL CHECK (version >= 1),
    app        text NOT NULL,
    definition jsonb NOT NULL,           -- the canonical definition (defaults filled in)
    digest     bytea NOT NULL CHECK (length(digest) = 32),  -- SHA-256 of its canonical text
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE deployments (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    flow_name       text NOT NULL,
    flow_version    int NOT NULL,
    app             text NOT NULL,
    app_version     text NOT NULL,
    params          jsonb NOT NULL,
    target          jsonb NOT NULL,       -- as the pipeline sent it
    steps           jsonb NOT NULL,       -- rendered: what every device receives
    rollback        jsonb NOT NULL,
    plans           jsonb NOT NULL,       -- [[kind, timeout seconds], …] for the state machine
    rollback_timeout int NOT NULL,
    device_count    int NOT NULL,
    idempotency_key text UNIQUE,
    request_digest  bytea,                -- SHA-256 of the request body, for the idempotency check
    created_at      timestamptz NOT NULL DEFAULT now(),
    canceled_at     timestamptz,
    FOREIGN KEY (flow_name, flow_version) REFERENCES flows (name, version)
);
CREATE INDEX deployments_created ON deployments (created_at DESC, id);

CREATE TABLE executions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    device_id     uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    app           text NOT NULL,
    state         text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'downloading', 'installing', 'rebooting',
                      'verifying', 'rolling_back', 'succeeded', 'failed', 'rolled_back', 'rollback_failed', 'canceled')),
    step          int NOT NULL DEFAULT 0,
    attempt       int NOT NULL DEFAULT 0,
    seq           bigint NOT NULL DEFAULT 0,  -- last accepted report's sequence number
    known_good    text,                        -- what to fall back to, fixed when the execution is created
    deadline_at   timestamptz,
    failure       jsonb,
    rollback_failure jsonb,
    last_report   jsonb,
    last_report_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    version       bigint NOT NULL DEFAULT 1,   -- every write is conditional on it
    UNIQUE (deployment_id, device_id)
);
-- One execution in flight per (device, app), and at most one waiting behind it.
CREATE UNIQUE INDEX executions_one_in_flight ON executions (device_id, app)
    WHERE state IN ('downloading', 'installing', 'rebooting', 'verifying', 'rolling_back');
CREATE UNIQUE INDEX executions_one_queued ON executions (device_id, app) WHERE state = 'queued';
CREATE INDEX executions_deployment_state ON executions (deployment_id, state);
CREATE INDEX executions_deadline ON executions (deadline_at) WHERE deadline_at IS NOT NULL;
CREATE INDEX executions_device_open ON executions (device_id, created_at)
    WHERE state NOT IN ('succeeded', 'failed', 'rolled_back', 'rollback_failed', 'canceled');

-- Every accepted state change, with its cause.
CREATE TABLE execution_events (
    id           bigserial PRIMARY KEY,
    execution_id uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    from_state   text NOT NULL,
    to_state     text NOT NULL,
    cause        text NOT NULL,
    at           timestamptz NOT NULL
);
CREATE INDEX execution_events_execution ON execution_events (execution_id, id);

-- The last known-good version per (device, app), advanced when an execution succeeds.
ALTER TABLE installed_versions ADD COLUMN known_good text;
