// What the device API reads and writes: the manifest an agent receives and the reports it
// sends.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire
import Synchronization

extension DeviceAPI {
    /// The device's next instruction: its execution in flight (again, e.g. after an agent
    /// restart), else its oldest queued one whose app has nothing in flight. nil: nothing to do.
    /// First, targets of deployments made since the last poll become executions.
    /// The device's next instruction, waiting up to `waiting` seconds for one (a long poll:
    /// a deployment made meanwhile, here or on another replica, wakes it). nil: nothing to do.
    func nextInstruction(for device: String, waiting: Int) async throws -> Manifest? {
        // Register before looking, so a deployment created in between still wakes us.
        let ticket = waiting > 0 && !isDraining ? engine.waiters.register(device) : nil
        defer { ticket.map(engine.waiters.finish) }
        if let manifest = try await pendingManifest(device) { return manifest }
        guard let ticket else { return nil }
        await engine.waiters.wait(ticket, seconds: waiting)
        // Woken because the server is stopping: answer now, without the database.
        if isDraining { return nil }
        return try await pendingManifest(device)
    }

    var isDraining: Bool { context.draining.load(ordering: .relaxed) }

    /// `nextManifest`, except that a device known to be idle is answered from memory.
    func pendingManifest(_ device: String) async throws -> Manifest? {
        let key = Array(device.utf8)
        if idleDevices.lookup(key) != nil { return nil }
        let generation = idleDevices.currentGeneration()
        let manifest = try await nextManifest(device)
        if manifest == nil { idleDevices.store(key, true, generation: generation) }
        return manifest
    }

    /// Feeds one report to the device's execution `id` through the executor. The answer says
    /// where the execution stands (and so what the agent does next); `refusal` is set when
    /// the machine refused the report (409). 404 when the device has no such execution.
    func applyReport(_ report: AgentReport, stored: JSON, to id: String, from device: String) async throws -> (ReportAnswer, refusal: String?) {
        guard let (loaded, decision) = try await engine.apply(id, device: device, report: stored, { machine, now in
            machine.agentReported(report, at: now)
        }) else { throw APIError.notFound("no execution '\(id)' for this device") }
        let m = loaded.machine
        func answer(_ result: ReportAnswer.Result?) -> ReportAnswer {
            ReportAnswer(executionID: id, state: m.state, step: m.step, deadlineAt: m.deadline.map { Timestamp($0).rfc3339 }, result: result)
        }
        switch decision {
        case .accepted: return (answer(.accepted), nil)
        case .duplicate: return (answer(.duplicate), nil)
        case .stale: return (answer(.stale), nil)
        case .rejected(let reason): return (answer(nil), reason)
        }
    }

    func nextManifest(_ device: String) async throws -> Manifest? {
        _ = try await db.query(ExecutionEngine.materialize(device, at: Timestamp(engine.clock.now())))
        guard let row = try await db.query("""
            SELECT e.id::text, e.deployment_id::text, e.app, d.app_version, e.known_good, e.state, e.step, e.attempt, e.seq,
                   e.deadline_at, d.steps, d.rollback, d.flow_name, d.flow_version, d.params
            FROM executions e JOIN deployments d ON d.id = e.deployment_id
            WHERE e.device_id = \(device)::uuid
              AND e.state IN (\(unsafe: ExecutionState.openSQLList))
              AND (e.state <> 'queued' OR NOT EXISTS (
                    SELECT 1 FROM executions o WHERE o.device_id = e.device_id AND o.app = e.app
                    AND o.state IN (\(unsafe: ExecutionState.inFlightSQLList))))
            ORDER BY e.state = 'queued', e.created_at LIMIT 1
            """).first else { return nil }
        let (id, deployment, app, version, knownGood, stateName, step, attempt, seq, deadline, steps, rollback, flowName, flowVersion,
             params) = try row.decode(
            String.self, String.self, String.self, String.self, String?.self, String.self, Int.self, Int.self, Int.self,
            Timestamp?.self, JSONText.self, JSONText.self, String.self, Int.self, JSONText.self)
        guard let state = ExecutionState(rawValue: stateName) else {
            throw PGError.decoding(column: "state", message: "unknown execution state \(stateName)")
        }
        // Steps were rendered (and their kinds checked) when the deployment was created.
        let stepList = try (JSON.parse(Array(steps.text.utf8)).arrayValue ?? []).map { item -> Manifest.Step in
            let fields = item.objectValue ?? [:]
            guard let kind = fields["kind"]?.stringValue.flatMap(StepKind.init(rawValue:)) else {
                throw PGError.decoding(column: "steps", message: "a step without a known kind")
            }
            return Manifest.Step(kind: kind, fields: fields)
        }
        return Manifest(executionID: id, deploymentID: deployment, flowName: flowName, flowVersion: flowVersion, app: app, version: version,
                        knownGood: knownGood, state: state, step: step, attempt: attempt, seq: seq, deadlineAt: deadline?.rfc3339,
                        steps: stepList, rollback: try JSON.parse(Array(rollback.text.utf8)).objectValue ?? [:],
                        params: try JSON.parse(Array(params.text.utf8)).objectValue ?? [:])
    }

    /// A report body → the machine's event, plus what is kept as the execution's last report.
    static func readReport(_ request: HTTPRequest) throws -> (AgentReport, JSON) {
        var body = try BodyReader(request)
        let seq = body.int("seq", required: true, range: 1...Int(Int32.max))
        let eventName = body.string("event", required: true)
        let event = eventName.flatMap(ReportEvent.init(rawValue:))
        let needsStep = event?.needsStep ?? false
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

    /// One pass of the deadline sweeper (ExecutionEngine+Sets.swift); the server's start-up
    /// tasks and the tests drive it through here.
    @discardableResult
    public func sweepDeadlines(limit: Int = 500) async throws -> Int {
        try await engine.sweepDeadlines(limit: limit)
    }
}
