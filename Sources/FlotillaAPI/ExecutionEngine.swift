// The executor: the one place where events meet the per-device state machine and the
// database. Every event (an agent's report, a boot seen in a heartbeat, the sweeper's
// deadline, an operator's cancel) goes through `apply`:
//
//   load the row → rebuild `Execution` → feed the event (time from the injected clock)
//   → if accepted: one conditional statement (UPDATE … WHERE id = $1 AND version = $2,
//     plus the event log and installed/known-good versions, all or nothing)
//   → perform the remaining actions (wake the device's long poll).
//
// A lost race (the version moved) reloads and feeds the event again, so two reporters on
// one execution never corrupt it: the second sees the first's result.
//
// The row each accepted write leaves behind is remembered, so the next report for that
// execution skips the load. The memory is only a guess: an accepted decision is still a
// conditional write (a stale guess loses the race and reloads), and any other decision
// (duplicate, stale, rejected) is made again from a fresh load before it is answered.
// Set-based exceptions, for 100k rows at once: superseding and canceling *queued*
// executions (Deployments.swift) run as one UPDATE each. They mirror the machine's
// `superseded` / `operatorCanceled` rules for `queued` (→ canceled), which the pair table
// in Tests/FlotillaCoreTests pins.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import Synchronization

final class ExecutionEngine: Sendable {
    let db: PGPool
    let clock: WallClock
    let waiters = DeviceWaiters()
    private let recent = Mutex<[String: Loaded]>([:])
    private static let recentCapacity = 20_000  // about 0.5 KB each; past it, start over

    init(db: PGPool, clock: WallClock) {
        self.db = db
        self.clock = clock
    }

    /// An execution row and the machine rebuilt from it.
    struct Loaded: Sendable {
        var id: String
        var deviceID: String
        var app: String
        var version: Int
        var machine: Execution
    }

    static let columns = """
        e.id::text, e.device_id::text, e.app, e.state, e.step, e.attempt, e.seq, e.known_good, e.deadline_at,
        e.failure, e.rollback_failure, e.version, d.plans, d.app_version, d.rollback_timeout
        """

    static func decode(_ row: PGRow) throws -> Loaded {
        let (id, device, app, stateName, step, attempt, seq, knownGood, deadline, failure, rollbackFailure, version, plans,
             appVersion, rollbackTimeout) = try row.decode(
            String.self, String.self, String.self, String.self, Int.self, Int.self, Int.self, String?.self, Timestamp?.self,
            JSONText?.self, JSONText?.self, Int.self, JSONText.self, String.self, Int.self)
        guard let state = ExecutionState(rawValue: stateName) else {
            throw PGError.decoding(column: "state", message: "unknown execution state \(stateName)")
        }
        let machine = Execution(
            steps: try decodePlans(plans.text), targetVersion: appVersion, knownGood: knownGood, rollbackTimeout: rollbackTimeout,
            state: state, step: step, attempt: attempt, lastSeq: seq, deadline: deadline.map { Instant(microseconds: $0.microseconds) },
            failure: try failure.map { try decodeFailure($0.text) }, rollbackFailure: try rollbackFailure.map { try decodeFailure($0.text) })
        return Loaded(id: id, deviceID: device, app: app, version: version, machine: machine)
    }

    func load(_ conn: PGConnection, _ id: String, device: String?) throws -> Loaded? {
        guard isUUID(id) else { return nil }
        return try conn.query("""
            SELECT \(unsafe: Self.columns) FROM executions e JOIN deployments d ON d.id = e.deployment_id
            WHERE e.id = \(id)::uuid AND (\(device)::uuid IS NULL OR e.device_id = \(device)::uuid)
            """).first.map(Self.decode)
    }

    /// Feeds one event to execution `id` (restricted to `device` when given) and persists
    /// the outcome. nil when there is no such execution (for this device).
    func apply(_ id: String, device: String?, report: JSON? = nil,
               _ event: @escaping @Sendable (inout Execution, Instant) -> Decision) async throws -> (Loaded, Decision)? {
        var remembered = recent.withLock { $0[id] }.flatMap { device == nil || $0.deviceID == device ? $0 : nil }
        for _ in 0..<16 {
            let guess = remembered
            remembered = nil
            let outcome = try await db.withConnection { conn -> (Loaded, Decision, Bool)? in
                guard var loaded = try guess ?? self.load(conn, id, device: device) else { return nil }
                let now = self.clock.now()
                let decision = event(&loaded.machine, now)
                guard case .accepted(let actions) = decision else {
                    // Only a fresh row may refuse an event: a remembered one may be behind.
                    return (loaded, decision, guess == nil)
                }
                let written = try self.write(conn, loaded, actions: actions, report: report, at: now)
                return (loaded, decision, written)
            }
            guard let outcome else { return nil }
            var loaded = outcome.0
            let decision = outcome.1
            guard outcome.2 else {
                recent.withLock { $0[id] = nil }
                continue  // someone else moved it first (or the guess was old): look again
            }
            if case .accepted(let actions) = decision {
                loaded.version += 1
                remember(loaded)
                if actions.contains(.wakeAgent) { waiters.wake(loaded.deviceID) }
            }
            return (loaded, decision)
        }
        throw HTTPError(503, code: "contended", message: "the execution is changing too fast; retry", headers: ["retry-after": "1"])
    }

    private func remember(_ loaded: Loaded) {
        recent.withLock { recent in
            if loaded.machine.state.isTerminal {
                recent[loaded.id] = nil  // nothing more will happen to it
                return
            }
            if recent.count >= Self.recentCapacity { recent.removeAll(keepingCapacity: true) }
            recent[loaded.id] = loaded
        }
    }

    /// The conditional write. false: the row's version moved on (nothing was written).
    func write(_ conn: PGConnection, _ loaded: Loaded, actions: [Action], report: JSON?, at now: Instant) throws -> Bool {
        let m = loaded.machine
        var froms: [String] = [], tos: [String] = [], causes: [String] = []
        var installed: String?
        var knownGood: String?
        for action in actions {
            switch action {
            case .logTransition(let from, let to, let cause):
                froms.append(from.rawValue); tos.append(to.rawValue); causes.append(cause)
            case .recordKnownGood(let version):
                installed = version; knownGood = version
            case .recordInstalled(let version):
                if let version { installed = version }
            case .wakeAgent:
                break
            }
        }
        let time = Timestamp(now)
        let reportText = report.map { JSONText($0.serialized) }
        let sql: SQL = """
            WITH u AS (
                UPDATE executions SET state = \(m.state.rawValue), step = \(m.step), attempt = \(m.attempt), seq = \(m.lastSeq),
                    deadline_at = \(m.deadline.map(Timestamp.init))::timestamptz,
                    failure = \(m.failure.map { JSONText(Self.failureJSON($0).serialized) })::jsonb,
                    rollback_failure = \(m.rollbackFailure.map { JSONText(Self.failureJSON($0).serialized) })::jsonb,
                    last_report = coalesce(\(reportText)::jsonb, last_report),
                    last_report_at = CASE WHEN \(reportText)::jsonb IS NULL THEN last_report_at ELSE \(time)::timestamptz END,
                    updated_at = \(time)::timestamptz,
                    finished_at = CASE WHEN \(m.state.isTerminal) THEN \(time)::timestamptz END,
                    version = version + 1
                WHERE id = \(loaded.id)::uuid AND version = \(loaded.version)
                RETURNING id, device_id, app),
            ev AS (
                INSERT INTO execution_events (execution_id, from_state, to_state, cause, at)
                SELECT u.id, x.f, x.t, x.c, \(time)::timestamptz
                FROM u, unnest(\(PGTextArray(froms))::text[], \(PGTextArray(tos))::text[], \(PGTextArray(causes))::text[]) AS x(f, t, c)),
            iv AS (
                INSERT INTO installed_versions (device_id, app, version, known_good, updated_at)
                SELECT u.device_id, u.app, \(installed), \(knownGood), \(time)::timestamptz FROM u WHERE \(installed)::text IS NOT NULL
                ON CONFLICT (device_id, app) DO UPDATE SET version = excluded.version,
                    known_good = coalesce(excluded.known_good, installed_versions.known_good), updated_at = excluded.updated_at),
            seen AS (
                -- At most every 10 s: a device row update rewrites all of its indexes (the
                -- labels GIN among them), and last seen needs no finer grain than that.
                UPDATE devices SET last_seen_at = \(time)::timestamptz FROM u
                WHERE devices.id = u.device_id AND \(reportText)::jsonb IS NOT NULL
                  AND (devices.last_seen_at IS NULL OR devices.last_seen_at < \(time)::timestamptz - interval '10 seconds'))
            SELECT count(*) FROM u
            """
        do {
            return try conn.query(sql)[0].decode(Int.self) == 1
        } catch let error as PGError where error.isUniqueViolation {
            throw APIError.conflict("another execution of app '\(loaded.app)' is in flight on this device; it must finish first")
        }
    }
}

extension Timestamp {
    init(_ instant: Instant) { self.init(microsecondsSinceEpoch: instant.microseconds) }
}
