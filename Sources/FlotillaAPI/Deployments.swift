// Deployments: what pipelines call. Create (idempotent with an Idempotency-Key), show
// (status, counts per state, `?wait=N` until it finishes), the devices' executions, cancel.
//
// Creating one is set-based whatever the fleet size: one INSERT … SELECT records the
// targeted devices (deployment_targets); each device's execution is made when it next
// polls (materialize, in DeviceManifest.swift). Older queued executions of the same app on
// the targeted devices are superseded; in-flight ones finish first, and the next poll
// hands out the newer one.

import FlotillaCore
import FlotillaStore
import FlotillaTransport

extension ManagementAPI {
    func registerDeploymentRoutes(on router: inout Router) {
        route(&router, "POST", "/api/v1/deployments", role: .deployer) { request, caller in
            let key = try Self.idempotencyKey(request)
            let digest = Secrets.sha256(request.body)
            var body = try BodyReader(request)
            let flowSpec = body.object("flow", required: true)
            let targetSpec = body.object("target", required: true)
            let params = body.object("params") ?? [:]
            try body.finish()
            var problems: [Problem] = []
            let flow = Self.readFlowReference(flowSpec, problems: &problems)
            let target = Self.readTarget(targetSpec, problems: &problems)
            if !problems.isEmpty { throw APIError.invalid(problems) }
            try caller.checkScope(flow: flow.name, groups: target.groups, devices: target.devices, selector: target.selector != nil)

            if let key, let replay = try await replayIdempotent(key: key, digest: digest) { return replay }
            guard let flowRow = try await db.query("""
                SELECT name, version, app, definition FROM flows
                WHERE name = \(flow.name) AND (\(flow.version)::int IS NULL OR version = \(flow.version)::int)
                ORDER BY version DESC LIMIT 1
                """).first else {
                throw APIError.notFound(flow.version.map { "no flow '\(flow.name)' version \($0)" } ?? "no flow '\(flow.name)'")
            }
            let (flowName, flowVersion, app, definition) = try flowRow.decode(String.self, Int.self, String.self, JSONText.self)
            let rendered: RenderedFlow
            do {
                rendered = try FlowDefinition.render(canonical: try JSON.parse(Array(definition.text.utf8)), params: params)
            } catch let error as FlowInvalid {
                throw APIError.invalid(error.problems.map { Problem(field: $0.path, message: $0.message) })
            }
            var renderedSteps = rendered.steps
            let downloads = try Self.artifactDownloads(&renderedSteps)
            let steps = renderedSteps
            let now = Timestamp(engine.clock.now())
            let (id, count, superseded) = try await db.transaction { conn -> (String, Int, Int) in
                try Self.checkGroupsExist(conn, target.groups)
                try Self.checkArtifactsExist(conn, downloads)
                let id = try conflictOnDuplicate("this Idempotency-Key was just used by another request; retry to get its deployment") {
                    try conn.query("""
                        INSERT INTO deployments (flow_name, flow_version, app, app_version, params, target, steps, rollback, plans,
                                                 rollback_timeout, device_count, idempotency_key, request_digest, created_at)
                        VALUES (\(flowName), \(flowVersion), \(app), \(rendered.appVersion), \(JSONText(JSON.object(rendered.params).serialized))::jsonb,
                                \(JSONText(target.json.serialized))::jsonb, \(JSONText(JSON.array(steps).serialized))::jsonb,
                                \(JSONText(rendered.rollback.serialized))::jsonb, \(JSONText(ExecutionEngine.plansJSON(rendered.plans).serialized))::jsonb,
                                \(rendered.rollbackTimeout), 0, \(key), \(Bytea(digest)), \(now)::timestamptz)
                        RETURNING id::text
                        """)[0].decode(String.self)
                }
                if !downloads.isEmpty {
                    _ = try conn.query("""
                        INSERT INTO deployment_artifacts (deployment_id, sha256)
                        SELECT DISTINCT \(id)::uuid, unnest(\(PGTextArray(downloads.map(\.sha256)))::text[])
                        """)
                }
                // Sorting 100k target ids spills to disk with the default 4 MB.
                _ = try conn.query("SET LOCAL work_mem = '64MB'")
                // Shared with other creations; a device delete takes it exclusively (see 0006).
                _ = try conn.query("SELECT pg_advisory_xact_lock_shared(\(Self.targetsLockSpace), 0)")
                let count = try conn.query("""
                    INSERT INTO deployment_targets (device_id, deployment_id)
                    SELECT d.id, \(id)::uuid FROM devices d WHERE \(target.condition) ORDER BY d.id
                    """).affectedRows
                if count == 0 { throw APIError.invalid("target", "matches no devices") }
                // Supersede: older executions of the app that devices hold but have not started…
                let supersededQueued = try conn.query("""
                    WITH s AS (
                        UPDATE executions e SET state = 'canceled', failure = \(JSONText(ExecutionEngine.failureJSON(.superseded(by: id)).serialized))::jsonb,
                            deadline_at = NULL, finished_at = \(now)::timestamptz, updated_at = \(now)::timestamptz, version = e.version + 1
                        FROM deployment_targets t
                        WHERE t.deployment_id = \(id)::uuid AND e.device_id = t.device_id AND e.app = \(app) AND e.state = 'queued'
                        RETURNING e.id),
                    ev AS (INSERT INTO execution_events (execution_id, from_state, to_state, cause, at)
                           SELECT s.id, 'queued', 'canceled', \(Failure.superseded(by: id).message), \(now)::timestamptz FROM s)
                    SELECT count(*) FROM s
                    """)[0].decode(Int.self)
                // …and older targets not handed out yet: they now read as superseded (see 0006).
                // The planner's row estimates for deployment_targets lag behind a fan-out just
                // recorded (they say ~1k rows where there are 100k) and it would pick a nested
                // loop of 100k index probes; a hash join is ~8× faster here.
                _ = try conn.query("SET LOCAL enable_nestloop = off")
                let supersededPending = try conn.query("""
                    SELECT count(DISTINCT o.device_id) FROM deployments od JOIN deployment_targets o ON o.deployment_id = od.id
                    WHERE od.app = \(app) AND od.canceled_at IS NULL AND od.id <> \(id)::uuid
                      AND EXISTS (SELECT 1 FROM deployment_targets n WHERE n.device_id = o.device_id AND n.deployment_id = \(id)::uuid)
                    """)[0].decode(Int.self)
                _ = try conn.query("UPDATE deployments SET device_count = \(count) WHERE id = \(id)::uuid")
                _ = try conn.query("SELECT pg_notify(\(Self.changeChannel), \(Self.workPrefix + id))")
                return (id, count, supersededQueued + supersededPending)
            }
            // Polls here learn of it at once; other replicas when the NOTIFY sent at commit reaches them.
            idleDevices.invalidateAll()
            // Fresh statistics for the rows just recorded, so counts and listings get hash joins
            // instead of nested loops (autovacuum would take up to a minute to notice).
            if count >= 10_000 { Task.detached { [db] in _ = try? await db.query("ANALYZE deployment_targets") } }
            try await Self.wakeTargets(of: id, db: db, waiters: engine.waiters)
            return .json(201, JSON.fields([
                ("id", .string(id)), ("flow", .fields([("name", .string(flowName)), ("version", .int(flowVersion))])),
                ("app", .string(app)), ("app_version", .string(rendered.appVersion)),
                ("devices_targeted", .int(count)), ("superseded", .int(superseded)), ("status", .string("active")),
            ]).serialized, headers: ["location": "/api/v1/deployments/\(id)"])
        }

        route(&router, "GET", "/api/v1/deployments", role: .viewer) { request, _ in
            var query = try QueryReader(request, allowed: ["limit", "cursor"])
            let limit = query.limit()
            let after = query.newestFirstCursor(isKey: isUUID)
            try query.finish()
            let rows = try await db.query("""
                SELECT \(unsafe: Self.deploymentColumns) FROM deployments d
                WHERE (\(after.time)::timestamptz IS NULL OR (d.created_at, d.id) < (\(after.time)::timestamptz, \(after.key)::uuid))
                ORDER BY d.created_at DESC, d.id DESC LIMIT \(limit + 1)
                """)
            return try newestFirstPage(rows, limit: limit, key: "id", Self.deploymentJSON)
        }

        route(&router, "GET", "/api/v1/deployments/{id}", role: .viewer) { request, _ in
            let id = request.pathParameters["id"]!
            var query = try QueryReader(request, allowed: ["wait"])
            let wait = query.waitSeconds(max: 3600)
            try query.finish()
            // `?wait=N`: answer once the deployment is no longer active, or after N seconds.
            let started = monotonicNanos()
            while true {
                let deployment = try await loadDeployment(id)
                let active = deployment.objectValue?["status"] == .string("active")
                if !active || monotonicNanos() - started >= UInt64(wait) * 1_000_000_000 {
                    return .json(200, deployment.serialized)
                }
                try await Task.sleep(for: .milliseconds(250))
            }
        }

        route(&router, "GET", "/api/v1/deployments/{id}/devices", role: .viewer) { request, _ in
            let id = request.pathParameters["id"]!
            var query = try QueryReader(request, allowed: ["state", "limit", "cursor"])
            let state = query["state"]
            if let state, ExecutionState(rawValue: state) == nil {
                query.problem("state", "must be one of \(ExecutionState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let limit = query.limit()
            let after = query.cursor()
            try query.finish()
            _ = try await loadDeployment(id)  // 404 for an unknown deployment
            // Executions, and the targets not handed out yet, which read as queued or canceled.
            let rows = try await db.query("""
                SELECT * FROM (
                    SELECT \(unsafe: Self.executionColumns) FROM executions e JOIN devices dv ON dv.id = e.device_id
                    JOIN deployments d ON d.id = e.deployment_id WHERE e.deployment_id = \(id)::uuid
                    UNION ALL
                    \(Self.pendingTargets(of: id))
                ) x
                WHERE (\(state)::text IS NULL OR x.state = \(state)) AND (\(after)::text IS NULL OR x.name > \(after))
                ORDER BY x.name LIMIT \(limit + 1)
                """)
            return try page(try rows.map(Self.executionJSON), limit: limit) { try rows[$0].decode(String.self, column: "name") }
        }

        route(&router, "POST", "/api/v1/deployments/{id}/cancel", role: .deployer) { request, caller in
            let id = request.pathParameters["id"]!
            guard isUUID(id) else { throw APIError.notFound("no deployment '\(id)'") }
            if caller.scope.isRestricted {
                // A scoped token may cancel only what it could have created.
                guard let row = try await db.query("SELECT flow_name, target FROM deployments WHERE id = \(id)::uuid").first else {
                    throw APIError.notFound("no deployment '\(id)'")
                }
                let (flow, spec) = try row.decode(String.self, JSONText.self)
                var ignored: [Problem] = []
                let target = Self.readTarget(try JSON.parse(Array(spec.text.utf8)).objectValue, problems: &ignored)
                try caller.checkScope(flow: flow, groups: target.groups, devices: target.devices, selector: target.selector != nil)
            }
            let now = Timestamp(engine.clock.now())
            let canceled = Failure.canceledBeforeStart
            let (queued, inFlight) = try await db.transaction { conn -> (Int, [String]) in
                guard try !conn.query("""
                    UPDATE deployments SET canceled_at = coalesce(canceled_at, \(now)::timestamptz) WHERE id = \(id)::uuid RETURNING 1
                    """).isEmpty else { throw APIError.notFound("no deployment '\(id)'") }
                let queued = try conn.query("""
                    WITH c AS (
                        UPDATE executions SET state = 'canceled', failure = \(JSONText(ExecutionEngine.failureJSON(canceled).serialized))::jsonb,
                            finished_at = \(now)::timestamptz, updated_at = \(now)::timestamptz, version = version + 1
                        WHERE deployment_id = \(id)::uuid AND state = 'queued' RETURNING id),
                    ev AS (INSERT INTO execution_events (execution_id, from_state, to_state, cause, at)
                           SELECT c.id, 'queued', 'canceled', \(canceled.message), \(now)::timestamptz FROM c)
                    SELECT count(*) FROM c
                    """)[0].decode(Int.self)
                // Targets not handed out yet now read as canceled; their devices never get them.
                let pending = try conn.query("SELECT count(*) FROM deployment_targets WHERE deployment_id = \(id)::uuid")[0].decode(Int.self)
                let inFlight = try conn.query("""
                    SELECT id::text FROM executions
                    WHERE deployment_id = \(id)::uuid AND state IN ('downloading', 'installing', 'rebooting', 'verifying')
                    """).map { try $0.decode(String.self) }
                return (queued + pending, inFlight)
            }
            // Started executions go through the machine one by one: each stops or rolls back.
            for execution in inFlight {
                _ = try await engine.apply(execution, device: nil) { machine, now in machine.operatorCanceled(at: now) }
            }
            var deployment = try await loadDeployment(id).objectValue ?? [:]
            deployment["canceled_queued"] = .int(queued)
            deployment["stopped_in_flight"] = .int(inFlight.count)
            return .json(200, JSON.object(deployment).serialized)
        }
    }
}
