-- Lazy executions. Creating a deployment records which devices it targets, one narrow row
-- each, and nothing more: an execution is made when its device next polls (see
-- ManagementAPI.materialize). Eagerly inserting 100k executions cost ~6 s, most of it
-- in their five indexes and two foreign-key triggers; these rows cost a fraction of that.
--
-- A row here is a target not yet handed to its device, so it reads as "queued" — or as
-- "canceled" when its deployment was canceled or a newer deployment of the same app also
-- targets the device (superseded). Materializing deletes the row in the statement that
-- inserts the execution.
--
-- No foreign keys, on purpose (their per-row triggers are the cost being avoided). Devices:
-- deleting one deletes its rows, under an advisory lock that deployment creation holds
-- shared, so no row can outlive its device. Deployments are never deleted.
CREATE TABLE deployment_targets (
    device_id     uuid NOT NULL,
    deployment_id uuid NOT NULL,
    PRIMARY KEY (device_id, deployment_id)
);
CREATE INDEX deployment_targets_deployment ON deployment_targets (deployment_id, device_id);

-- "Newer" among deployments of an app, for supersession: creation order. Timestamps can tie
-- (and come from each replica's clock); a sequence cannot.
ALTER TABLE deployments ADD COLUMN seq bigserial;
CREATE INDEX deployments_app_seq ON deployments (app, seq);
