-- A device rotating its own token (POST /api/v1/agent/token): the token it used stays valid
-- as `previous_token_hash` until the device first uses the new one, so a rotation whose
-- answer is lost (the link dropped, the agent crashed before saving it) never locks the
-- device out. The first request with the new token clears it.
ALTER TABLE devices ADD COLUMN previous_token_hash bytea CHECK (length(previous_token_hash) = 32);
CREATE UNIQUE INDEX devices_previous_token ON devices (previous_token_hash) WHERE previous_token_hash IS NOT NULL;
