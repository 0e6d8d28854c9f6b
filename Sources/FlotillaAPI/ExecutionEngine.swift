// The executor: the one place where events meet the per-device state machine and the
// database. Every event (an agent's report, a boot seen in a heartbeat, the sweeper's
// deadline, an operator's cancel) goes through `apply`:
//
//   load the row → rebuild `Execution` → feed the event (time from the injected clock)
//   → if accepted: one conditional statement (UPDATE … WHERE id = $1 AND version = $2,
//     plus the event log and installed/known-good versions, all or nothing), shared with
//     other reports arriving at the same time (ExecutionWrites.swift: group commit)
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
import FlotillaWire
import Synchronization

final class ExecutionEngine: Sendable {
    let db: PGPool
    let clock: WallClock
    let waiters = DeviceWaiters()
    private let recent = Mutex<[String: Loaded]>([:])
    private let commits: GroupCommit
    private static let recentCapacity = 20_000  // about 0.5 KB each; past it, start over

    init(db: PGPool, clock: WallClock) {
        self.db = db
        self.clock = clock
        commits = GroupCommit(db: db)
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

    static func loadSQL(_ id: String, device: String?) -> SQL {
        """
        SELECT \(unsafe: columns) FROM executions e JOIN deployments d ON d.id = e.deployment_id
        WHERE e.id = \(id)::uuid AND (\(device)::uuid IS NULL OR e.device_id = \(device)::uuid)
        """
    }

    /// Feeds one event to execution `id` (restricted to `device` when given) and persists
    /// the outcome. nil when there is no such execution (for this device).
    ///
    /// Neither step holds a connection: the load is a single (pipelined) statement and the
    /// write goes through the group commit, so many reports share one round trip and one
    /// WAL flush.
    func apply(_ id: String, device: String?, report: JSON? = nil,
               _ event: @escaping @Sendable (inout Execution, Instant) -> Decision) async throws -> (Loaded, Decision)? {
        guard isUUID(id) else { return nil }
        var remembered = recent.withLock { $0[id] }.flatMap { device == nil || $0.deviceID == device ? $0 : nil }
        for _ in 0..<16 {
            let guess = remembered
            remembered = nil
            let fresh: Loaded?
            if guess == nil {
                fresh = try await db.query(Self.loadSQL(id, device: device)).first.map(Self.decode)
            } else {
                fresh = nil
            }
            guard var loaded = guess ?? fresh else { return nil }
            let now = clock.now()
            let decision = event(&loaded.machine, now)
            guard case .accepted(let actions) = decision else {
                // Only a fresh row may refuse an event: a remembered one may be behind.
                if guess == nil { return (loaded, decision) }
                recent.withLock { $0[id] = nil }
                continue
            }
            let written: Bool
            do {
                written = try await commits.commit(ExecutionWrite(loaded, actions: actions, report: report, at: now))
            } catch let error as PGError where error.isUniqueViolation {
                throw Self.secondInFlight(loaded.app)
            }
            guard written else {
                recent.withLock { $0[id] = nil }
                continue  // someone else moved it first (or the guess was old): look again
            }
            loaded.version += 1
            remember(loaded)
            if actions.contains(.wakeAgent) { waiters.wake(loaded.deviceID) }
            return (loaded, decision)
        }
        throw HTTPError(503, code: .contended, message: "the execution is changing too fast; retry", headers: ["retry-after": "1"])
    }

    private static func secondInFlight(_ app: String) -> HTTPError {
        APIError.conflict("another execution of app '\(app)' is in flight on this device; it must finish first")
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

    /// The conditional write on a connection the caller holds (the sweeper's transaction).
    /// false: the row's version moved on (nothing was written).
    func write(_ conn: PGConnection, _ loaded: Loaded, actions: [Action], report: JSON?, at now: Instant) throws -> Bool {
        do {
            return try !conn.query(ExecutionWrite.sql([ExecutionWrite(loaded, actions: actions, report: report, at: now)])).isEmpty
        } catch let error as PGError where error.isUniqueViolation {
            throw Self.secondInFlight(loaded.app)
        }
    }
}

extension Timestamp {
    init(_ instant: Instant) { self.init(microsecondsSinceEpoch: instant.microseconds) }
}
