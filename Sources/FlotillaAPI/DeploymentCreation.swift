// Creating a deployment, the use case behind POST /api/v1/deployments: a typed spec in,
// the deployment out. Set-based whatever the fleet size: one INSERT … SELECT records the
// targeted devices (deployment_targets); each device's execution is made when it next
// polls (ExecutionEngine.materialize). Older queued executions of the same app on the
// targeted devices are superseded (ExecutionEngine.cancelQueued); in-flight ones finish
// first, and the next poll hands out the newer one.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

/// What a caller asks for: which flow (version: the newest when nil), for which devices,
/// with which parameters; the Idempotency-Key and the body's digest make a retry safe.
struct DeploymentSpec: Sendable {
    var flow: (name: String, version: Int?)
    var target: DeploymentTarget
    var params: [String: JSON]
    var idempotencyKey: String?
    var digest: [UInt8]
}

/// A deployment just made.
struct CreatedDeployment: Sendable {
    var id: String
    var flowName: String
    var flowVersion: Int
    var app: String
    var appVersion: String
    var devicesTargeted: Int
    var superseded: Int

    var json: JSON {
        .fields([
            ("id", .string(id)), ("flow", .fields([("name", .string(flowName)), ("version", .int(flowVersion))])),
            ("app", .string(app)), ("app_version", .string(appVersion)),
            ("devices_targeted", .int(devicesTargeted)), ("superseded", .int(superseded)), ("status", .string("active")),
        ])
    }
}

enum DeploymentCreation: Sendable {
    case created(CreatedDeployment)
    /// The same Idempotency-Key and body again: the deployment the first request made.
    case replayed(JSON)
}

extension ManagementAPI {
    /// The request's body and headers as a spec (400/422 with every problem found).
    static func readDeploymentSpec(_ request: HTTPRequest) throws -> DeploymentSpec {
        let key = try idempotencyKey(request)
        var body = try BodyReader(request)
        let flowSpec = body.object("flow", required: true)
        let targetSpec = body.object("target", required: true)
        let params = body.object("params") ?? [:]
        try body.finish()
        var problems: [Problem] = []
        let flow = readFlowReference(flowSpec, problems: &problems)
        let target = readTarget(targetSpec, problems: &problems)
        if !problems.isEmpty { throw APIError.invalid(problems) }
        return DeploymentSpec(flow: flow, target: target, params: params, idempotencyKey: key, digest: Secrets.sha256(request.body))
    }

    /// Makes the deployment `spec` describes (the caller's scope was checked by the route).
    func createDeployment(_ spec: DeploymentSpec) async throws -> DeploymentCreation {
        if let key = spec.idempotencyKey, let replay = try await replayIdempotent(key: key, digest: spec.digest) { return .replayed(replay) }
        guard let flowRow = try await db.query("""
            SELECT name, version, app, definition FROM flows
            WHERE name = \(spec.flow.name) AND (\(spec.flow.version)::int IS NULL OR version = \(spec.flow.version)::int)
            ORDER BY version DESC LIMIT 1
            """).first else {
            throw APIError.notFound(spec.flow.version.map { "no flow '\(spec.flow.name)' version \($0)" } ?? "no flow '\(spec.flow.name)'")
        }
        let (flowName, flowVersion, app, definition) = try flowRow.decode(String.self, Int.self, String.self, JSONText.self)
        let rendered: RenderedFlow
        do {
            rendered = try FlowDefinition.render(canonical: try JSON.parse(Array(definition.text.utf8)), params: spec.params)
        } catch let error as FlowInvalid {
            throw APIError.invalid(error.problems.map { Problem(field: $0.path, message: $0.message) })
        }
        var renderedSteps = rendered.steps
        let downloads = try Self.artifactDownloads(&renderedSteps)
        let steps = renderedSteps
        let now = Timestamp(engine.clock.now())
        let (id, count, superseded) = try await db.transaction { conn -> (String, Int, Int) in
            try Self.checkGroupsExist(conn, spec.target.groups)
            try Self.checkArtifactsExist(conn, downloads)
            let id = try conflictOnDuplicate("this Idempotency-Key was just used by another request; retry to get its deployment") {
                try conn.query("""
                    INSERT INTO deployments (flow_name, flow_version, app, app_version, params, target, steps, rollback, plans,
                                             rollback_timeout, device_count, idempotency_key, request_digest, created_at)
                    VALUES (\(flowName), \(flowVersion), \(app), \(rendered.appVersion), \(JSONText(JSON.object(rendered.params).serialized))::jsonb,
                            \(JSONText(spec.target.json.serialized))::jsonb, \(JSONText(JSON.array(steps).serialized))::jsonb,
                            \(JSONText(rendered.rollback.serialized))::jsonb, \(JSONText(ExecutionEngine.plansJSON(rendered.plans).serialized))::jsonb,
                            \(rendered.rollbackTimeout), 0, \(spec.idempotencyKey), \(Bytea(spec.digest)), \(now)::timestamptz)
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
                SELECT d.id, \(id)::uuid FROM devices d WHERE \(spec.target.condition) ORDER BY d.id
                """).affectedRows
            if count == 0 { throw APIError.invalid("target", "matches no devices") }
            // Supersede: older executions of the app that devices hold but have not started…
            let supersededQueued = try ExecutionEngine.cancelQueued(
                conn, from: "FROM deployment_targets t",
                where: "t.deployment_id = \(id)::uuid AND e.device_id = t.device_id AND e.app = \(app)",
                failure: .superseded(by: id), at: now)
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
            _ = try conn.query("SELECT pg_notify(\(APIContext.changeChannel), \(APIContext.workPrefix + id))")
            return (id, count, supersededQueued + supersededPending)
        }
        // Polls here learn of it at once; other replicas when the NOTIFY sent at commit reaches them.
        idleDevices.invalidateAll()
        // Fresh statistics for the rows just recorded, so counts and listings get hash joins
        // instead of nested loops (autovacuum would take up to a minute to notice).
        if count >= 10_000 { Task.detached { [db] in _ = try? await db.query("ANALYZE deployment_targets") } }
        try await engine.wakeTargets(of: id)
        return .created(CreatedDeployment(id: id, flowName: flowName, flowVersion: flowVersion, app: app, appVersion: rendered.appVersion,
                                          devicesTargeted: count, superseded: superseded))
    }
}
