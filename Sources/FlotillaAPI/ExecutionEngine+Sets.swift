// The executor's set-based moves: what `ExecutionEngine.apply` does one execution at a time,
// done for many rows in one statement where a fleet needs it.
//
// - `cancelQueued`: the machine's rule for `queued` under `operatorCanceled` and
//   `superseded(by:)` (→ canceled, with the failure and one event each), for every queued
//   execution a condition picks: 100k rows in one UPDATE. The pair table in
//   Tests/FlotillaCoreTests pins the rule this mirrors; SetMovesTests checks the two agree.
// - `materialize`: a device's deployment targets become its executions when it polls
//   (queued, or born canceled: superseded by a newer deployment, or canceled before start).
// - `sweepDeadlines`: overdue executions, each fed `deadlinePassed` through the machine.

import FlotillaCore
import FlotillaStore
import FlotillaWire

extension ExecutionEngine {
    /// Cancels the queued executions `condition` picks (a condition on `executions e`, which
    /// may use the tables `from` names), recording `failure` and one `queued → canceled`
    /// event each. Returns how many moved. On the caller's connection (its transaction).
    static func cancelQueued(_ conn: PGConnection, from: SQL = SQL(unsafe: ""), where condition: SQL,
                             failure: Failure, at now: Timestamp) throws -> Int {
        try conn.query("""
            WITH moved AS (
                UPDATE executions e SET state = \(ExecutionState.canceled.rawValue),
                    failure = \(JSONText(failureJSON(failure).serialized))::jsonb, deadline_at = NULL,
                    finished_at = \(now)::timestamptz, updated_at = \(now)::timestamptz, version = e.version + 1
                \(from)
                WHERE e.state = \(ExecutionState.queued.rawValue) AND \(condition)
                RETURNING e.id),
            logged AS (INSERT INTO execution_events (execution_id, from_state, to_state, cause, at)
                       SELECT moved.id, \(ExecutionState.queued.rawValue), \(ExecutionState.canceled.rawValue), \(failure.message),
                              \(now)::timestamptz FROM moved)
            SELECT count(*) FROM moved
            """)[0].decode(Int.self)
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
                       CASE WHEN p.rank > 1 THEN \(supersededFailureSQL(column: "p.newest"))
                            WHEN p.canceled_at IS NOT NULL THEN \(canceledBeforeStartSQL) END,
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

    /// One pass of the deadline sweeper: overdue executions, each fed `deadlinePassed`.
    /// Rows are claimed with FOR UPDATE SKIP LOCKED, so replicas sweeping at once split the
    /// work instead of colliding. Returns how many executions moved.
    @discardableResult
    func sweepDeadlines(limit: Int = 500) async throws -> Int {
        let now = clock.now()
        let moved = try await db.transaction { [self] conn -> [String] in
            let overdue = try conn.query("""
                SELECT \(unsafe: Self.columns) FROM executions e JOIN deployments d ON d.id = e.deployment_id
                WHERE e.deadline_at <= \(Timestamp(now))::timestamptz
                ORDER BY e.deadline_at LIMIT \(limit) FOR UPDATE OF e SKIP LOCKED
                """).map(Self.decode)
            var moved: [String] = []
            for var loaded in overdue {
                guard case .accepted(let actions) = loaded.machine.deadlinePassed(at: now) else { continue }
                if try write(conn, loaded, actions: actions, report: nil, at: now) { moved.append(loaded.deviceID) }
            }
            return moved
        }
        // The directive changed (roll back, stop): tell waiting agents now.
        for device in Set(moved) { waiters.wake(device) }
        return moved.count
    }

    /// Wakes the long polls, on this server, of devices a new deployment targets.
    func wakeTargets(of deployment: String) async throws {
        let waiting = waiters.waitingDevices
        guard !waiting.isEmpty else { return }
        let rows = try await db.query("""
            SELECT device_id::text FROM deployment_targets
            WHERE deployment_id = \(deployment)::uuid AND device_id = ANY(\(PGTextArray(waiting))::uuid[])
            """)
        for row in rows { waiters.wake(try row.decode(String.self)) }
    }
}
