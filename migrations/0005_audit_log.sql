-- Every management mutation (any /api/v1 management request that is not a GET), who made
-- it (the token; null when the token was refused), from where, and how it ended. Written
-- by the request path itself, read through GET /api/v1/audit. Append-only: the table
-- refuses UPDATE and DELETE (TRUNCATE too), so the API cannot rewrite history.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    token_id    uuid,
    method      text NOT NULL,
    path        text NOT NULL,
    status      int NOT NULL,
    remote_addr text,
    request_id  text NOT NULL
);
CREATE INDEX audit_log_token ON audit_log (token_id, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
