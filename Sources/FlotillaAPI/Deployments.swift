// Deployments: what pipelines call. Create (idempotent with an Idempotency-Key; the use
// case is DeploymentCreation.swift), show (status, counts per state, `?wait=N` until it
// finishes), the devices' executions, cancel (an operator's event: `cancelDeployment`).

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension ManagementAPI {
    func registerDeploymentRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.createDeployment, role: .deployer) { request, caller in
            let spec = try Self.readDeploymentSpec(request)
            try caller.checkScope(flow: spec.flow.name, groups: spec.target.groups, devices: spec.target.devices,
                                  selector: spec.target.selector != nil)
            switch try await createDeployment(spec) {
            case .replayed(let deployment):
                return .json(200, deployment.serialized, headers: ["idempotent-replay": "true"])
            case .created(let created):
                return .json(201, created.json.serialized, headers: ["location": ManagementRoutes.deployment.path(created.id)])
            }
        }

        route(&router, ManagementRoutes.listDeployments, role: .viewer) { request, _ in
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

        route(&router, ManagementRoutes.deployment, role: .viewer) { request, _ in
            let id = request.pathParameters["id"]!
            var query = try QueryReader(request, allowed: ["wait"])
            let wait = query.waitSeconds(max: 3600)
            try query.finish()
            // `?wait=N`: answer once every device has finished (the outcome is known), or after
            // N seconds. A canceled deployment whose devices still roll back is not finished.
            let started = monotonicNanos()
            while true {
                let deployment = try await loadDeployment(id)
                let pending = deployment.objectValue?["outcome"] == .string("pending")
                if !pending || monotonicNanos() - started >= UInt64(wait) * 1_000_000_000 {
                    return .json(200, deployment.serialized)
                }
                try await Task.sleep(for: .milliseconds(250))
            }
        }

        route(&router, ManagementRoutes.deploymentDevices, role: .viewer) { request, _ in
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

        route(&router, ManagementRoutes.cancelDeployment, role: .deployer) { request, caller in
            let id = request.pathParameters["id"]!
            let (queued, inFlight) = try await cancelDeployment(id, by: caller)
            var deployment = try await loadDeployment(id).objectValue ?? [:]
            deployment["canceled_queued"] = .int(queued)
            deployment["stopped_in_flight"] = .int(inFlight)
            return .json(200, JSON.object(deployment).serialized)
        }
    }

    /// An operator's cancel, as events: the deployment is marked canceled; its queued work is
    /// canceled in one statement (the machine's rule for `queued`, ExecutionEngine.cancelQueued)
    /// and its targets not handed out yet read as canceled; each started execution is fed
    /// `operatorCanceled` through the executor, and stops or rolls back. Returns how many
    /// queued and how many started executions it reached.
    func cancelDeployment(_ id: String, by caller: Caller) async throws -> (queued: Int, inFlight: Int) {
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
            try Self.cancelDeploymentRow(conn, id, at: now)
            let queued = try ExecutionEngine.cancelQueued(conn, where: "e.deployment_id = \(id)::uuid", failure: canceled, at: now)
            // Targets not handed out yet now read as canceled; their devices never get them.
            let pending = try conn.query("SELECT count(*) FROM deployment_targets WHERE deployment_id = \(id)::uuid")[0].decode(Int.self)
            let inFlight = try conn.query("""
                SELECT id::text FROM executions
                WHERE deployment_id = \(id)::uuid AND state IN (\(unsafe: ExecutionState.workingSQLList))
                """).map { try $0.decode(String.self) }
            return (queued + pending, inFlight)
        }
        // Started executions go through the machine one by one: each stops or rolls back.
        for execution in inFlight {
            _ = try await engine.apply(execution, device: nil) { machine, now in machine.operatorCanceled(at: now) }
        }
        return (queued, inFlight.count)
    }

    /// The deployment's own event, through its machine (DeploymentLifecycle) and a write
    /// conditional on the version it was decided from; a lost race decides again. A cancel
    /// that already holds changes nothing (the queued and started work is still swept).
    static func cancelDeploymentRow(_ conn: PGConnection, _ id: String, at now: Timestamp) throws {
        for _ in 0..<16 {
            guard let row = try conn.query("SELECT state, version FROM deployments WHERE id = \(id)::uuid").first else {
                throw APIError.notFound("no deployment '\(id)'")
            }
            let (stateName, version) = try row.decode(String.self, Int.self)
            guard let state = DeploymentState(rawValue: stateName) else {
                throw PGError.decoding(column: "state", message: "unknown deployment state \(stateName)")
            }
            var machine = DeploymentLifecycle(state)
            guard case .accepted(let actions) = machine.operatorCanceled() else { return }
            let events = actions.map { action -> SQL in
                switch action {
                case .logTransition(let from, let to, let cause):
                    "(\(id)::uuid, \(from.rawValue), \(to.rawValue), \(cause), \(now)::timestamptz)"
                }
            }
            let written = try conn.query("""
                WITH moved AS (
                    UPDATE deployments SET state = \(machine.state.rawValue), canceled_at = \(now)::timestamptz, version = version + 1
                    WHERE id = \(id)::uuid AND version = \(version) RETURNING id),
                logged AS (INSERT INTO deployment_events (deployment_id, from_state, to_state, cause, at)
                           SELECT e.* FROM (VALUES \(SQL.join(events, separator: ", "))) AS e(d, f, t, c, a), moved)
                SELECT count(*) FROM moved
                """)[0].decode(Int.self)
            if written == 1 { return }
        }
        throw HTTPError(503, code: .contended, message: "the deployment is changing too fast; retry", headers: ["retry-after": "1"])
    }
}
