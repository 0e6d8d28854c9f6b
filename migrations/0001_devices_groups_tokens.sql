-- The first schema: API tokens, devices, groups and group membership.
-- Migrations run inside a transaction each (see Sources/FlotillaStore/Migrator.swift):
-- no BEGIN/COMMIT here, and never edit this file once released; add 0002_… instead.

-- Management API tokens. Only the SHA-256 of the secret is stored.
CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'viewer')),
    secret_hash bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Devices. Deleting one is a hard delete (memberships go with it); `version` is bumped
-- by every update so writes can be conditional (UPDATE … WHERE id = $1 AND version = $2).
CREATE TABLE devices (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL COLLATE "C" UNIQUE,
    labels       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    attributes   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz,
    version      bigint NOT NULL DEFAULT 1
);
-- Label selectors (labels @> '{"site":"berlin"}') use this index.
CREATE INDEX devices_labels ON devices USING gin (labels jsonb_path_ops);
CREATE INDEX devices_last_seen ON devices (last_seen_at);

-- What each device reports as installed, per app (filled by update flows).
CREATE TABLE installed_versions (
    device_id  uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    app        text NOT NULL,
    version    text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, app)
);

CREATE TABLE groups (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL COLLATE "C" UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    version    bigint NOT NULL DEFAULT 1
);

-- A device can be in many groups.
CREATE TABLE group_members (
    group_id  uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    device_id uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX group_members_device ON group_members (device_id);
