// How accepted transitions reach the database: one statement for any number of them.
//
// Each accepted event becomes an `ExecutionWrite` (the machine's new fields, the event-log
// rows, the installed/known-good versions). `ExecutionWrite.sql` turns a list of them into
// one statement whose parts are all conditional on the row's version, per row:
//
//   UPDATE executions … FROM the writes WHERE id = w.id AND version = w.version
//   → the event log, installed versions and last seen, for the rows that were updated only
//   → the ids that were updated (a missing id lost its race and reloads).
//
// `GroupCommit` is why it is a list: reports arriving together share one statement and
// one durable commit (one WAL flush) instead of paying one each. There is no timer: while
// a batch is being committed the next one gathers, so a lone report is not delayed and a
// burst is committed in a few statements. The sweeper's writes, made inside a transaction
// of their own, use the same statement with one element.

import FlotillaCore
import FlotillaJSON
import FlotillaStore
import FlotillaWire
import Synchronization

struct ExecutionWrite: Sendable {
    let id: String
    let deviceID: String
    let app: String
    let row: JSON

    init(_ loaded: ExecutionEngine.Loaded, actions: [Action], report: JSON?, at now: Instant) {
        let m = loaded.machine
        var froms: [JSON] = [], tos: [JSON] = [], causes: [JSON] = []
        var installed: String?
        var knownGood: String?
        for action in actions {
            switch action {
            case .logTransition(let from, let to, let cause):
                froms.append(.string(from.rawValue)); tos.append(.string(to.rawValue)); causes.append(.string(cause))
            case .recordKnownGood(let version):
                installed = version; knownGood = version
            case .recordInstalled(let version):
                if let version { installed = version }
            case .wakeAgent:
                break
            }
        }
        id = loaded.id; deviceID = loaded.deviceID; app = loaded.app
        row = .fields([
            ("id", .string(loaded.id)), ("version", .int(loaded.version)),
            ("state", .string(m.state.rawValue)), ("step", .int(m.step)), ("attempt", .int(m.attempt)), ("seq", .int(m.lastSeq)),
            ("deadline_at", m.deadline.map { .string(Timestamp($0).pgText) } ?? .null),
            ("failure", m.failure.map(ExecutionEngine.failureJSON) ?? .null),
            ("rollback_failure", m.rollbackFailure.map(ExecutionEngine.failureJSON) ?? .null),
            ("report", report ?? .null), ("terminal", .bool(m.state.isTerminal)), ("at", .string(Timestamp(now).pgText)),
            ("froms", .array(froms)), ("tos", .array(tos)), ("causes", .array(causes)),
            ("installed", installed.map(JSON.string) ?? .null), ("known_good", knownGood.map(JSON.string) ?? .null),
        ])
    }

    /// One statement for all of `writes` (at most one per execution, and per device and app:
    /// see GroupCommit.take). Returns the ids it updated.
    static func sql(_ writes: [ExecutionWrite]) -> SQL {
        """
        WITH w AS (
            SELECT * FROM jsonb_to_recordset(\(JSONText(JSON.array(writes.map(\.row)).serialized))::jsonb) AS w(
                id uuid, version int, state text, step int, attempt int, seq int, deadline_at timestamptz,
                failure jsonb, rollback_failure jsonb, report jsonb, terminal boolean, at timestamptz,
                froms text[], tos text[], causes text[], installed text, known_good text)),
        u AS (
            UPDATE executions e SET state = w.state, step = w.step, attempt = w.attempt, seq = w.seq,
                deadline_at = w.deadline_at, failure = w.failure, rollback_failure = w.rollback_failure,
                last_report = coalesce(w.report, e.last_report),
                last_report_at = CASE WHEN w.report IS NULL THEN e.last_report_at ELSE w.at END,
                updated_at = w.at, finished_at = CASE WHEN w.terminal THEN w.at END, version = e.version + 1
            FROM w WHERE e.id = w.id AND e.version = w.version
            RETURNING e.id, e.device_id, e.app),
        ev AS (
            INSERT INTO execution_events (execution_id, from_state, to_state, cause, at)
            SELECT u.id, x.f, x.t, x.c, w.at
            FROM u JOIN w ON w.id = u.id, unnest(w.froms, w.tos, w.causes) AS x(f, t, c)),
        iv AS (
            INSERT INTO installed_versions (device_id, app, version, known_good, updated_at)
            SELECT u.device_id, u.app, w.installed, w.known_good, w.at FROM u JOIN w ON w.id = u.id WHERE w.installed IS NOT NULL
            ON CONFLICT (device_id, app) DO UPDATE SET version = excluded.version,
                known_good = coalesce(excluded.known_good, installed_versions.known_good), updated_at = excluded.updated_at),
        seen AS (
            -- At most every 10 s: a device row update rewrites all of its indexes (the
            -- labels GIN among them), and last seen needs no finer grain than that.
            UPDATE devices SET last_seen_at = s.at
            FROM (SELECT u.device_id, max(w.at) AS at FROM u JOIN w ON w.id = u.id
                  WHERE w.report IS NOT NULL GROUP BY u.device_id) AS s
            WHERE devices.id = s.device_id
              AND (devices.last_seen_at IS NULL OR devices.last_seen_at < s.at - interval '10 seconds'))
        SELECT id::text FROM u
        """
    }
}

/// Gathers concurrent writes into shared statements (see the top of the file).
final class GroupCommit: Sendable {
    private struct Waiting {
        let write: ExecutionWrite
        let continuation: CheckedContinuation<Bool, any Error>
    }

    private struct State {
        var waiting: [Waiting] = []
        var running = 0
    }

    private let db: PGPool
    private let state = Mutex(State())
    /// Statements in flight at once: enough to keep a commit always gathering while another
    /// flushes, few enough to leave pool connections for everything else.
    private let concurrency: Int
    static let batchLimit = 256

    init(db: PGPool, concurrency: Int = 2) {
        self.db = db
        self.concurrency = concurrency
    }

    /// Commits `write` (with whatever else is waiting). false: the row's version had moved.
    func commit(_ write: ExecutionWrite) async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { state in
                state.waiting.append(Waiting(write: write, continuation: continuation))
                guard state.running < concurrency else { return false }
                state.running += 1
                return true
            }
            if start { Task { await self.drain() } }
        }
    }

    private func drain() async {
        while let batch = take() {
            do {
                let updated = Set(try await db.query(ExecutionWrite.sql(batch.map(\.write))).map { try $0.decode(String.self) })
                for item in batch { item.continuation.resume(returning: updated.contains(item.write.id)) }
            } catch where batch.count > 1 {
                // One bad write (say, a second in-flight execution for an app) must not fail
                // the others: each goes again on its own and gets its own answer.
                for item in batch {
                    do {
                        let updated = try await db.query(ExecutionWrite.sql([item.write]))
                        item.continuation.resume(returning: !updated.isEmpty)
                    } catch {
                        item.continuation.resume(throwing: error)
                    }
                }
            } catch {
                batch.forEach { $0.continuation.resume(throwing: error) }
            }
        }
    }

    /// The next batch: waiting writes in arrival order, at most one per execution and per
    /// (device, app), since one statement cannot update a row twice. The rest wait their turn.
    /// nil (and one fewer running) when nothing waits.
    private func take() -> [Waiting]? {
        state.withLock { state in
            guard !state.waiting.isEmpty else {
                state.running -= 1
                return nil
            }
            var batch: [Waiting] = [], later: [Waiting] = []
            var executions = Set<String>(), apps = Set<String>()
            for item in state.waiting {
                if batch.count < Self.batchLimit, executions.insert(item.write.id).inserted {
                    if apps.insert(item.write.deviceID + "/" + item.write.app).inserted {
                        batch.append(item)
                        continue
                    }
                    executions.remove(item.write.id)
                }
                later.append(item)
            }
            state.waiting = later
            return batch
        }
    }
}
