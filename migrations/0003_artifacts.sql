-- The artifact store: files live on disk under their SHA-256 (see Sources/FlotillaStore/ArtifactFiles.swift);
-- these rows say which exist. deployment_artifacts records which deployments download which
-- artifact, so one still in use by a live deployment cannot be deleted.

CREATE TABLE artifacts (
    sha256       text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size         bigint NOT NULL CHECK (size > 0),
    name         text NOT NULL,          -- the uploader's file name, informative only
    content_type text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX artifacts_created ON artifacts (created_at DESC, sha256 DESC);

-- No foreign key to artifacts: a finished deployment must not keep its artifact alive.
CREATE TABLE deployment_artifacts (
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    sha256        text NOT NULL,
    PRIMARY KEY (sha256, deployment_id)
);
