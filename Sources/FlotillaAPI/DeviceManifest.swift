// What the device API reads and writes: the manifest an agent receives, the reports it
// sends, and the deadline sweeper that acts for devices that went quiet.

import FlotillaCore
import FlotillaStore
import FlotillaTransport

extension ManagementAPI {
    /// The device's next instruction: its execution in flight (again, e.g. after an agent
    /// restart), else its oldest queued one whose app has nothing in flight. nil: nothing to do.
    /// First, targets of deployments made since the last poll become executions.
    func nextManifest(_ device: String) async throws -> JSON? {
        _ = try await db.query(Self.materialize(device, at: Timestamp(engine.clock.now())))
        guard let row = try await db.query("""
            SELECT e.id::text, e.deployment_id::text, e.app, d.app_version, e.known_good, e.state, e.step, e.attempt, e.seq,
                   e.deadline_at, d.steps, d.rollback, d.flow_name, d.flow_version, d.params
            FROM executions e JOIN deployments d ON d.id = e.deployment_id
            WHERE e.device_id = \(device)::uuid
              AND e.state IN ('queued', 'downloading', 'installing', 'rebooting', 'verifying', 'rolling_back')
              AND (e.state <> 'queued' OR NOT EXISTS (
                    SELECT 1 FROM executions o WHERE o.device_id = e.device_id AND o.app = e.app
                    AND o.state IN ('downloading', 'installing', 'rebooting', 'verifying', 'rolling_back')))
            ORDER BY e.state = 'queued', e.created_at LIMIT 1
            """).first else { return nil }
        let (id, deployment, app, version, knownGood, stateName, step, attempt, seq, deadline, steps, rollback, flowName, flowVersion,
             params) = try row.decode(
            String.self, String.self, String.self, String.self, String?.self, String.self, Int.self, Int.self, Int.self,
            Timestamp?.self, JSONText.self, JSONText.self, String.self, Int.self, JSONText.self)
        let directive = ExecutionState(rawValue: stateName)?.directive ?? .stop
        return .fields([
            ("execution", .fields([
                ("id", .string(id)), ("deployment_id", .string(deployment)),
                ("flow", .fields([("name", .string(flowName)), ("version", .int(flowVersion))])),
                ("app", .string(app)), ("version", .string(version)), ("known_good", knownGood.map(JSON.string) ?? .null),
                ("state", .string(stateName)), ("step", .int(step)), ("attempt", .int(attempt)), ("seq", .int(seq)),
                ("directive", .string(directive.rawValue)), ("deadline_at", deadline.map { .string($0.rfc3339) } ?? .null),
                ("steps", .raw(steps.text)), ("rollback", .raw(rollback.text)),
                // The deployment's parameters: the agent puts them in scripts' environments.
                ("params", .raw(params.text)),
            ])),
        ])
    }

    /// Turns the device's targets not handed out yet (deployment_targets, see 0006) into
    /// executions. Per app, the newest deployment's becomes queued, unless it was canceled;
    /// every other becomes canceled, superseded by that newest one, with its event. A target
    /// that cannot become an execution yet (a queued one of the app already exists) stays.
    static func materialize(_ device: String, at now: Timestamp) -> SQL {
        """
            WITH p AS (
                SELECT d.id, d.app, d.canceled_at, first_value(d.id) OVER w AS newest, row_number() OVER w AS rank
                FROM deployment_targets t JOIN deployments d ON d.id = t.deployment_id
                WHERE t.device_id = \(device)::uuid
                WINDOW w AS (PARTITION BY d.app ORDER BY d.seq DESC)),
            i AS (
                INSERT INTO executions (deployment_id, device_id, app, state, known_good, failure, created_at, updated_at, finished_at)
                SELECT p.id, \(device)::uuid, p.app, CASE WHEN p.rank = 1 AND p.canceled_at IS NULL THEN 'queued' ELSE 'canceled' END,
                       (SELECT coalesce(iv.known_good, iv.version) FROM installed_versions iv
                        WHERE iv.device_id = \(device)::uuid AND iv.app = p.app),
                       CASE WHEN p.rank > 1 THEN \(ExecutionEngine.supersededFailureSQL(column: "p.newest"))
                            WHEN p.canceled_at IS NOT NULL THEN \(ExecutionEngine.canceledBeforeStartSQL) END,
                       \(now)::timestamptz, \(now)::timestamptz,
                       CASE WHEN p.rank > 1 OR p.canceled_at IS NOT NULL THEN \(now)::timestamptz END
                FROM p
                ON CONFLICT DO NOTHING
                RETURNING id, deployment_id, state, failure),
            gone AS (DELETE FROM deployment_targets t USING i WHERE t.device_id = \(device)::uuid AND t.deployment_id = i.deployment_id)
            INSERT INTO execution_events (execution_id, from_state, to_state, cause, at)
            SELECT i.id, 'queued', 'canceled', i.failure ->> 'message', \(now)::timestamptz FROM i WHERE i.state = 'canceled'
            """
    }

    /// The `event` of a report, as agents spell it.
    enum ReportEvent: String, CaseIterable {
        case stepStarted = "step_started", stepProgress = "step_progress", stepSucceeded = "step_succeeded"
        case stepFailed = "step_failed", booted, rollbackSucceeded = "rollback_succeeded", rollbackFailed = "rollback_failed"
    }

    /// A report body → the machine's event, plus what is kept as the execution's last report.
    static func readReport(_ request: HTTPRequest) throws -> (AgentReport, JSON) {
        var body = try BodyReader(request)
        let seq = body.int("seq", required: true, range: 1...Int(Int32.max))
        let eventName = body.string("event", required: true)
        let event = eventName.flatMap(ReportEvent.init(rawValue:))
        let needsStep = eventName?.hasPrefix("step_") ?? false
        let step = body.int("step", required: needsStep, range: 0...10_000)
        let exitCode = body.int("exit_code", range: Int(Int32.min)...Int(Int32.max))
        let message = body.string("message")
        let logTail = body.string("log_tail")
        let version = body.string("version")
        let progress = body.value("progress", required: false)
        if eventName != nil && event == nil {
            body.problem("event", "must be one of \(ReportEvent.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if (message?.utf8.count ?? 0) > 4096 { body.problem("message", "is longer than 4096 bytes") }
        if (logTail?.utf8.count ?? 0) > 65_536 { body.problem("log_tail", "is longer than 64 KiB; send the tail") }
        if let progress, progress.objectValue == nil { body.problem("progress", "must be an object") }
        try body.finish()
        let index = step ?? 0
        let agentEvent: AgentEvent = switch event ?? .rollbackFailed {  // finish() threw if it was missing
        case .stepStarted: .stepStarted(step: index)
        case .stepProgress: .stepProgress(step: index)
        case .stepSucceeded: .stepSucceeded(step: index)
        case .stepFailed: .stepFailed(step: index, message: message ?? "step \(index) failed", exitCode: exitCode, logTail: logTail)
        case .booted: .booted(version: version)
        case .rollbackSucceeded: .rollbackSucceeded
        case .rollbackFailed: .rollbackFailed(message: message ?? "rollback failed", exitCode: exitCode, logTail: logTail)
        }
        var stored: [(String, JSON)] = [("seq", .int(seq ?? 0)), ("event", .string(eventName ?? ""))]
        if let step { stored.append(("step", .int(step))) }
        if let progress { stored.append(("progress", progress)) }
        if let message { stored.append(("message", .string(message))) }
        if let exitCode { stored.append(("exit_code", .int(exitCode))) }
        if let version { stored.append(("version", .string(version))) }
        return (AgentReport(seq: seq ?? 0, agentEvent), .fields(stored))
    }

    /// One pass of the deadline sweeper: overdue executions, each fed `deadlinePassed`.
    /// Rows are claimed with FOR UPDATE SKIP LOCKED, so replicas sweeping at once split the
    /// work instead of colliding. Returns how many executions moved.
    @discardableResult
    public func sweepDeadlines(limit: Int = 500) async throws -> Int {
        let now = engine.clock.now()
        let moved = try await db.transaction { [engine] conn -> [String] in
            let overdue = try conn.query("""
                SELECT \(unsafe: ExecutionEngine.columns) FROM executions e JOIN deployments d ON d.id = e.deployment_id
                WHERE e.deadline_at <= \(Timestamp(now))::timestamptz
                ORDER BY e.deadline_at LIMIT \(limit) FOR UPDATE OF e SKIP LOCKED
                """).map(ExecutionEngine.decode)
            var moved: [String] = []
            for var loaded in overdue {
                guard case .accepted(let actions) = loaded.machine.deadlinePassed(at: now) else { continue }
                if try engine.write(conn, loaded, actions: actions, report: nil, at: now) { moved.append(loaded.deviceID) }
            }
            return moved
        }
        // The directive changed (roll back, stop): tell waiting agents now.
        for device in Set(moved) { engine.waiters.wake(device) }
        return moved.count
    }
}
