-- A device's executions, newest first: `GET /api/v1/devices/{device}/executions` and the
-- devices list's `state` filter (the state of each device's latest execution) read this.
CREATE INDEX executions_device_recent ON executions (device_id, created_at DESC, id DESC);
