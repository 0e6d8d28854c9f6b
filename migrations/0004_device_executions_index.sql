-- A device's executions are found by device: its history (`GET /api/v1/devices/{device}/executions`),
-- the devices list's `state` filter (each device's latest execution), and the cascade when a
-- device is deleted. So the unique key leads with the device. It replaces (deployment_id,
-- device_id) instead of adding an index: each index on executions costs the 100k-device
-- fan-out about half a second; lookups by deployment use executions_deployment_state.
ALTER TABLE executions DROP CONSTRAINT executions_deployment_id_device_id_key;
ALTER TABLE executions ADD CONSTRAINT executions_device_deployment_key UNIQUE (device_id, deployment_id);
