-- The boot a device last reported (`boot_id` in POST /api/v1/agent/heartbeat with
-- `booted: true`). Heartbeats carry no sequence number, so a retried "I just booted" would
-- otherwise look like a second reboot and roll back an execution that is verifying. The
-- heartbeat handler applies a boot only when this column changes (a conditional write).
ALTER TABLE devices ADD COLUMN last_boot_id text;
