// A bounded pool of PostgreSQL connections, each driven by its own serial queue with
// blocking libpq calls, so no event loop and no cooperative-pool thread ever waits on
// the database.
//
// Why blocking workers and not async libpq on the event loops: a worker keeps each
// connection's code straight-line (send, read, done), and its cost is one queue hop per
// *batch*, not per statement, because `query` batches concurrent statements into one
// pipeline. A second driver (nonblocking libpq pipelines on a read source of PQsocket)
// was built and measured against this one by bench/api.sh: the workers were as fast or
// faster (39.2k against 37.6k GET device/s), so it was deleted; one driver to keep right.
//
// Callers borrow a connection for one synchronous closure:
//
//     let rows = try await pool.withConnection { conn in try conn.query("SELECT 1") }
//
// or, for a single statement, `pool.query(sql)`: those are batched across callers (one
// pipeline round trip for many requests' statements), which is what keeps a
// database-backed request cheap under load.
//
// When every connection is busy, callers wait in FIFO order, up to `acquireTimeout`;
// then they get `PGError.unavailable` (the API answers 503 + Retry-After). A connection
// found dead on borrow (the server restarted) is replaced before use; while the
// database is unreachable, connection attempts are spaced out by `reconnectDelay` and
// requests fail fast instead of piling up.

import Dispatch
import Synchronization

public final class PGPool: Sendable {
    public struct Configuration: Sendable {
        public var connection: PGConnectionOptions
        public var size = 8
        public var acquireTimeout: Duration = .seconds(5)
        public var reconnectDelay: Duration = .milliseconds(200)

        public init(connection: PGConnectionOptions, size: Int = 8) {
            self.connection = connection
            self.size = max(1, size)
        }
    }

    final class Slot: @unchecked Sendable {
        let queue: DispatchQueue
        /// Touched only on `queue`.
        var connection: PGConnection?
        init(index: Int) { queue = DispatchQueue(label: "flotilla.pg.\(index)") }
    }

    private struct State {
        var idle: [Slot]
        var waiters: [(id: Int, continuation: CheckedContinuation<Slot, any Error>)] = []
        /// Single statements waiting to be batched (see `query`).
        var pending: [(sql: SQL, continuation: CheckedContinuation<PGRows, any Error>)] = []
        var nextWaiterID = 0
        var lastConnectFailure: UInt64?
        var closed = false
    }

    public let configuration: Configuration
    private let state: Mutex<State>
    private let timers = DispatchQueue(label: "flotilla.pg.timers")

    public init(_ configuration: Configuration) {
        self.configuration = configuration
        state = Mutex(State(idle: (0..<configuration.size).map(Slot.init(index:))))
    }

    /// Runs `body` with a connection of its own on a pool worker.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        let slot = try await acquire()
        return try await withCheckedThrowingContinuation { continuation in
            slot.queue.async {
                let result = Result { try self.run(body, on: slot) }
                self.release(slot)
                continuation.resume(with: result)
            }
        }
    }

    /// Runs one statement on its own (an implicit transaction).
    ///
    /// Statements from concurrent callers are batched: a worker takes every statement waiting
    /// (up to `batchLimit`) and sends them as one pipeline with a Sync after each, so each
    /// is still its own transaction but the lot costs one write, one read and one wake-up.
    /// Under load this is what makes a database-backed request cheap.
    public func query(_ sql: SQL) async throws -> PGRows {
        try sql.refuseNUL()
        return try await withCheckedThrowingContinuation { continuation in
            enum Outcome { case queued, wake(Slot), closed }
            let outcome: Outcome = state.withLock { state in
                if state.closed { return .closed }
                state.pending.append((sql, continuation))
                // Wake an idle worker; when all are busy, the next one to finish takes the batch.
                return state.idle.popLast().map(Outcome.wake) ?? .queued
            }
            switch outcome {
            case .queued: break
            case .closed: continuation.resume(throwing: PGError.unavailable("the pool is closed"))
            case .wake(let slot): slot.queue.async { self.serve(slot, batch: []) }
            }
        }
    }

    /// Most statements per batch: bounded so a blocking send can never fill the socket
    /// while PostgreSQL waits for us to read (a pipeline deadlock).
    static let batchLimit = 64

    /// Runs `body` inside BEGIN … COMMIT (ROLLBACK when it throws).
    public func transaction<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        try await withConnection { try $0.transaction(body) }
    }

    /// Fails every waiter and closes every connection. Later calls fail with `.unavailable`.
    public func close() {
        let (waiters, pending) = state.withLock { state in
            state.closed = true
            defer { state.waiters = []; state.pending = [] }
            return (state.waiters, state.pending)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: PGError.unavailable("the pool is closed")) }
        for query in pending { query.continuation.resume(throwing: PGError.unavailable("the pool is closed")) }
        let slots = state.withLock { $0.idle }
        for slot in slots { slot.queue.sync { slot.connection = nil } }
    }

    // MARK: - Internals

    /// The slot's connection, replaced first if the server closed it. On the slot's queue.
    private func liveConnection(_ slot: Slot) throws -> PGConnection {
        if let connection = slot.connection, !connection.isIdleAndAlive() { slot.connection = nil }
        if slot.connection == nil { slot.connection = try connect() }
        return slot.connection!
    }

    private func run<T>(_ body: (PGConnection) throws -> T, on slot: Slot) throws -> T {
        let connection = try liveConnection(slot)
        defer {
            // A broken connection, or one left inside a transaction by a failed ROLLBACK, is not reused.
            if !connection.isUsable || !connection.isIdle { slot.connection = nil }
        }
        return try body(connection)
    }

    private func connect() throws -> PGConnection {
        let now = monotonicNow()
        let delay = UInt64(nanoseconds(configuration.reconnectDelay))
        let tooSoon = state.withLock { state in
            state.lastConnectFailure.map { now &- $0 < delay } ?? false
        }
        if tooSoon { throw PGError.unavailable("the database is unreachable; retrying") }
        do {
            let connection = try PGConnection(configuration.connection)
            state.withLock { $0.lastConnectFailure = nil }
            return connection
        } catch {
            state.withLock { $0.lastConnectFailure = now }
            throw error
        }
    }

    private func acquire() async throws -> Slot {
        let timeout = configuration.acquireTimeout
        return try await withCheckedThrowingContinuation { continuation in
            enum Outcome { case slot(Slot), closed, wait(Int) }
            let outcome: Outcome = state.withLock { state in
                if state.closed { return .closed }
                if let slot = state.idle.popLast() { return .slot(slot) }
                state.nextWaiterID += 1
                state.waiters.append((state.nextWaiterID, continuation))
                return .wait(state.nextWaiterID)
            }
            switch outcome {
            case .slot(let slot):
                continuation.resume(returning: slot)
            case .closed:
                continuation.resume(throwing: PGError.unavailable("the pool is closed"))
            case .wait(let id):
                timers.asyncAfter(deadline: .now() + .nanoseconds(nanoseconds(timeout))) {
                    let expired = self.state.withLock { state -> CheckedContinuation<Slot, any Error>? in
                        guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                        return state.waiters.remove(at: index).continuation
                    }
                    expired?.resume(throwing: PGError.unavailable("all \(self.configuration.size) database connections stayed busy"))
                }
            }
        }
    }

    /// A slot is free: hand it to the longest waiter, else let it work through the batched
    /// statements, else park it. Waiters go first so that batches cannot starve them.
    private func release(_ slot: Slot) {
        enum Next { case waiter(CheckedContinuation<Slot, any Error>), batch([(sql: SQL, continuation: CheckedContinuation<PGRows, any Error>)]), idle }
        let next: Next = state.withLock { state in
            if !state.waiters.isEmpty { return .waiter(state.waiters.removeFirst().continuation) }
            if !state.pending.isEmpty {
                let count = min(state.pending.count, PGPool.batchLimit)
                defer { state.pending.removeFirst(count) }
                return .batch(Array(state.pending.prefix(count)))
            }
            state.idle.append(slot)
            return .idle
        }
        switch next {
        case .waiter(let waiter): waiter.resume(returning: slot)
        case .batch(let batch): slot.queue.async { self.serve(slot, batch: batch) }
        case .idle: break
        }
    }

    /// Runs one batch of statements on the slot's queue, then releases the slot (which may
    /// bring the next batch). An empty batch just releases: a wake-up finds the work itself.
    private func serve(_ slot: Slot, batch: [(sql: SQL, continuation: CheckedContinuation<PGRows, any Error>)]) {
        if !batch.isEmpty {
            do {
                let results = try run({ try $0.batch(batch.map(\.sql)) }, on: slot)
                for (query, result) in zip(batch, results) { query.continuation.resume(with: result) }
            } catch {
                for query in batch { query.continuation.resume(throwing: error) }
            }
        }
        release(slot)
    }
}

func monotonicNow() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

func nanoseconds(_ duration: Duration) -> Int {
    Int(duration.components.seconds) * 1_000_000_000 + Int(duration.components.attoseconds / 1_000_000_000)
}
