-- A deployment's own lifecycle (Sources/FlotillaCore/DeploymentLifecycle.swift): its state
-- and a version every change is conditional on (UPDATE … WHERE id = $1 AND version = $2),
-- as executions have; each accepted transition is appended to deployment_events. The
-- rollout policy grows the states from here.

ALTER TABLE deployments ADD COLUMN state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'canceled'));
ALTER TABLE deployments ADD COLUMN version bigint NOT NULL DEFAULT 1;
UPDATE deployments SET state = 'canceled' WHERE canceled_at IS NOT NULL;

CREATE TABLE deployment_events (
    id            bigserial PRIMARY KEY,
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    from_state    text NOT NULL,
    to_state      text NOT NULL,
    cause         text NOT NULL,
    at            timestamptz NOT NULL
);
CREATE INDEX deployment_events_deployment ON deployment_events (deployment_id, id);
