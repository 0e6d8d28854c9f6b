-- Enrollment, device admission and scoped API tokens (issue 7; SECURITY.md).

-- An enrollment token lets devices register themselves into one group: each use makes one
-- device. Only the SHA-256 of the secret is stored. A use is taken with a conditional
-- UPDATE (uses < max_uses, not revoked, not expired) in the transaction that inserts the
-- device, so a refused or failed enrollment consumes nothing and two devices racing for
-- the last use cannot both win. Deleting the group deletes its enrollment tokens.
CREATE TABLE enrollment_tokens (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text NOT NULL,
    group_id         uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    secret_hash      bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    expires_at       timestamptz NOT NULL,
    max_uses         int NOT NULL CHECK (max_uses > 0),
    uses             int NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    require_approval boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz
);

-- Admission (FlotillaCore/DeviceAdmission.swift): `preauthorized` (an operator named the
-- device; its token is made when it enrolls), `pending` (enrolled, awaiting approval),
-- `accepted`, `rejected`. Only accepted devices may use the device API or be targeted.
-- Devices registered before this migration, or by an operator, are accepted.
-- `token_revoked_at`: the device token was revoked; rotating it makes a new one.
ALTER TABLE devices
    ADD COLUMN status text NOT NULL DEFAULT 'accepted'
        CHECK (status IN ('preauthorized', 'pending', 'accepted', 'rejected')),
    ADD COLUMN token_revoked_at timestamptz,
    ADD COLUMN enrolled_with uuid;
CREATE INDEX devices_status ON devices (status) WHERE status <> 'accepted';

-- Scoped tokens: `deployer` may read and deploy; `flows` / `groups` (glob patterns, null:
-- any) limit what it may deploy where. `expires_at` null: never. `last_used_at` is kept to
-- the minute (written on cache misses only; see Tokens.swift).
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens
    ADD CONSTRAINT api_tokens_role_check CHECK (role IN ('admin', 'deployer', 'viewer')),
    ADD COLUMN flows text[],
    ADD COLUMN groups text[],
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN last_used_at timestamptz;
