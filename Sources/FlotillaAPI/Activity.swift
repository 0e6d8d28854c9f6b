// What operators watch: the event log of transitions (recent, or everything after an id so
// `flotilla events --follow` can tail it), a device's recent executions, and a deployment's
// failures grouped by step and message (what `deployments show` and `watch` summarize).
//
// All three read only; the event log's bigserial id is its cursor because it only grows.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension ManagementAPI {
    func registerActivityRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.events, role: .viewer) { request, _ in
            var query = try QueryReader(request, allowed: ["after", "limit", "deployment", "device"])
            let limit = query.limit()
            let after = query.afterID()
            let deployment = query["deployment"]
            if let deployment, !isUUID(deployment) { query.problem("deployment", "must be a deployment id") }
            let device = query["device"]
            try query.finish()
            let deviceFilter: SQL = device.map { "AND \(Self.deviceMatch($0))" } ?? ""
            // Without `after`: the newest `limit` events. With it: the oldest `limit` after it,
            // so a follower never skips one however far behind it is.
            // Two shapes, not one with `$1 IS NULL OR …`: each must walk the primary key from
            // its end (newest backwards, or forwards from `after`) instead of sorting the log.
            let since: SQL = after.map { "v.id > \($0)::bigint" } ?? "true"
            let order: SQL = after == nil ? "v.id DESC" : "v.id"
            let rows = try await db.query("""
                SELECT * FROM (
                    SELECT v.id AS event_id, v.at, v.execution_id::text, e.deployment_id::text, d.id::text AS device_id, d.name, e.app,
                           v.from_state, v.to_state, v.cause
                    FROM execution_events v JOIN executions e ON e.id = v.execution_id JOIN devices d ON d.id = e.device_id
                    WHERE \(since)
                      AND (\(deployment)::uuid IS NULL OR e.deployment_id = \(deployment)::uuid) \(deviceFilter)
                    ORDER BY \(order) LIMIT \(limit)
                ) page ORDER BY event_id
                """)
            let items = try rows.map { row -> JSON in
                let (id, at, execution, deployment, deviceID, name, app, from, to, cause) = try row.decode(
                    Int.self, Timestamp.self, String.self, String.self, String.self, String.self, String.self,
                    String.self, String.self, String.self)
                return .fields([
                    ("id", .int(id)), ("at", .string(at.rfc3339)), ("execution_id", .string(execution)),
                    ("deployment_id", .string(deployment)), ("device_id", .string(deviceID)), ("device_name", .string(name)),
                    ("app", .string(app)), ("from", .string(from)), ("to", .string(to)), ("cause", .string(cause)),
                ])
            }
            // `last_id` is where to continue from (the given `after` when nothing is new).
            let last = try rows.last.map { try $0.decode(Int.self, column: "event_id") } ?? after
            return .json(200, JSON.fields([("items", .array(items)), ("last_id", last.map(JSON.int) ?? .null)]).serialized)
        }

        route(&router, ManagementRoutes.deviceExecutions, role: .viewer) { request, _ in
            let ident = request.pathParameters["device"]!
            var query = try QueryReader(request, allowed: ["limit"])
            let limit = query.limit()
            try query.finish()
            let now = Timestamp(engine.clock.now())
            let found = try await db.withConnection { conn -> PGRows? in
                guard let row = try conn.query("SELECT d.id::text FROM devices d WHERE \(Self.deviceMatch(ident))").first else { return nil }
                let device = try row.decode(String.self)
                // Deployments made since the device last polled are listed as the poll will see them.
                _ = try conn.query(ExecutionEngine.materialize(device, at: now))
                return try conn.query("""
                    SELECT \(unsafe: Self.executionColumns), e.deployment_id::text AS deployment_id, d.app AS app,
                           d.app_version AS app_version, e.created_at AS created_at
                    FROM executions e JOIN devices dv ON dv.id = e.device_id JOIN deployments d ON d.id = e.deployment_id
                    WHERE e.device_id = \(device)::uuid
                    ORDER BY e.created_at DESC, e.id DESC LIMIT \(limit)
                    """)
            }
            guard let rows = found else { throw APIError.notFound("no device '\(ident)'") }
            let items = try rows.map { row -> JSON in
                var fields = try Self.executionJSON(row).objectValue ?? [:]
                for name in ["deployment_id", "app", "app_version"] { fields[name] = .string(try row.decode(String.self, column: name)) }
                fields["created_at"] = .string(try row.decode(Timestamp.self, column: "created_at").rfc3339)
                return .object(fields)
            }
            return .json(200, JSON.object(["items": .array(items)]).serialized)
        }

        route(&router, ManagementRoutes.deploymentFailures, role: .viewer) { request, _ in
            let id = request.pathParameters["id"]!
            var query = try QueryReader(request, allowed: ["newest"])
            var newest = 5
            if let text = query["newest"] {
                if let value = Int(text), (0...100).contains(value) { newest = value } else { query.problem("newest", "must be an integer from 0 to 100") }
            }
            try query.finish()
            _ = try await loadDeployment(id)  // 404 for an unknown deployment
            let results = try await db.withConnection { [newest] conn in
                try conn.pipeline([
                    // The step a failure happened in is the failure's own (the execution may
                    // have moved on to rolling back since); the message is what the agent said.
                    """
                    SELECT e.state, (e.failure ->> 'step')::int AS step, d.steps -> (e.failure ->> 'step')::int ->> 'name',
                           coalesce(e.failure ->> 'message', ''), count(*) AS n
                    FROM executions e JOIN deployments d ON d.id = e.deployment_id
                    WHERE e.deployment_id = \(id)::uuid AND e.failure IS NOT NULL AND e.state <> 'canceled'
                    GROUP BY 1, 2, 3, 4 ORDER BY n DESC, 2, 4 LIMIT 100
                    """,
                    """
                    SELECT \(unsafe: Self.executionColumns) FROM executions e JOIN devices dv ON dv.id = e.device_id
                    JOIN deployments d ON d.id = e.deployment_id
                    WHERE e.deployment_id = \(id)::uuid AND e.failure IS NOT NULL AND e.state <> 'canceled'
                    ORDER BY e.updated_at DESC, e.id LIMIT \(newest)
                    """,
                ])
            }
            let groups = try results[0].map { row -> JSON in
                let (state, step, stepName, message, count) = try row.decode(String.self, Int?.self, String?.self, String.self, Int.self)
                return .fields([("state", .string(state)), ("step", step.map(JSON.int) ?? .null),
                                ("step_name", stepName.map(JSON.string) ?? .null), ("message", .string(message)), ("count", .int(count))])
            }
            return .json(200, JSON.fields([("groups", .array(groups)),
                                           ("newest", .array(try results[1].map { try Self.executionJSON($0) }))]).serialized)
        }
    }
}
