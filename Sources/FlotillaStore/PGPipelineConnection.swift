// Async libpq: one connection in nonblocking pipeline mode, driven by a Dispatch read
// source on PQsocket. No thread ever waits on the database: statements are written the
// moment they arrive, results are read when the socket says they are there, and each is
// handed to its caller in FIFO order. Each statement is followed by its own Sync, so each
// is still its own transaction, exactly as with the blocking workers' batches.
//
// This is the "async libpq" half of the comparison issue 3 asks for; PGPool selects it with
// `Configuration.driver = .async` and bench/api.sh measures both (see PGPool for the result).
//
// Everything here runs on `queue` (the pool slot's serial queue), which is also the target
// queue of the read and write sources, so no state needs a lock.
//
// Reading a pipeline's results (libpq 15, classic API): for each statement, a prepare result
// and NULL (only when the statement is new to this connection), then the execute result and
// NULL, then PGRES_PIPELINE_SYNC. A failed prepare makes the execute PGRES_PIPELINE_ABORTED.

import CLibpq
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

final class PGPipelineConnection: @unchecked Sendable {
    typealias Completion = @Sendable (Result<PGRows, PGError>) -> Void

    private struct InFlight {
        let text: String
        /// The statement name this statement prepares, when it is the first use of its text.
        let preparing: String?
        var preparePhase: Bool
        var outcome: Result<PGRows, PGError>?
        let completion: Completion
    }

    private let connection: PGConnection
    private let queue: DispatchQueue
    private let readSource: DispatchSourceRead
    private let writeSource: DispatchSourceWrite
    private var writeArmed = false
    private var inFlight: [InFlight] = []
    private var head = 0
    /// Set once the connection failed; the pool then replaces it.
    private(set) var broken = false

    var pendingCount: Int { inFlight.count - head }

    /// `connection` must be fresh and idle; it is owned by this object from now on.
    init(_ connection: PGConnection, queue: DispatchQueue) throws {
        let conn = connection.handle
        guard PQsetnonblocking(conn, 1) == 0, PQenterPipelineMode(conn) == 1 else {
            throw PGError.connectionFailed(PGConnection.errorText(conn))
        }
        self.connection = connection
        self.queue = queue
        // The sources watch a descriptor of our own (a dup of libpq's): libpq closes its
        // socket by itself when it meets EOF, and a new connection could then get the same
        // number while our sources still watch it (its events would go to the wrong
        // source). Ours is closed only once both sources are cancelled.
        let fd = fcntl(PQsocket(conn), F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else { throw PGError.connectionFailed("cannot duplicate the connection's socket") }
        let watched = WatchedDescriptor(fd)
        readSource = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        writeSource = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        readSource.setEventHandler { [weak self] in self?.readable() }
        writeSource.setEventHandler { [weak self] in self?.flush() }
        readSource.setCancelHandler { [connection, watched] in _ = (connection, watched) }
        writeSource.setCancelHandler { [connection, watched] in _ = (connection, watched) }
        readSource.resume()
    }

    deinit { stopWatching() }

    private var watching = true

    private func stopWatching() {
        guard watching else { return }
        watching = false
        readSource.cancel()
        if !writeArmed { writeSource.resume() }  // a suspended source must not be released
        writeSource.cancel()
    }

    /// Writes the statements and one flush for the lot. On `queue`.
    func send(_ batch: [(sql: SQL, completion: Completion)]) {
        let conn = connection.handle
        for (sql, completion) in batch {
            if broken { completion(.failure(.connectionFailed("connection lost"))); continue }
            let binds = sql.binds
            var name = connection.statements[sql.text]
                ?? inFlight[head...].first(where: { $0.preparing != nil && $0.text == sql.text })?.preparing
            var preparing: String?
            if name == nil, connection.statements.count + pendingCount < PGConnection.statementCacheLimit {
                connection.nextStatement += 1
                preparing = "s\(connection.nextStatement)"
                name = preparing
                guard PQsendPrepare(conn, preparing!, sql.text, Int32(binds.count), nil) == 1 else {
                    completion(.failure(.connectionFailed(PGConnection.errorText(conn))))
                    fail(); continue
                }
            }
            let sent = withCStringArray(binds) { values in
                if let name {
                    PQsendQueryPrepared(conn, name, Int32(binds.count), values, nil, nil, 0)
                } else {
                    PQsendQueryParams(conn, sql.text, Int32(binds.count), nil, values, nil, nil, 0)
                }
            }
            // PQpipelineSync also tries to flush; in nonblocking mode what it cannot write now
            // stays buffered for `flush`.
            guard sent == 1, PQpipelineSync(conn) == 1 else {
                completion(.failure(.connectionFailed(PGConnection.errorText(conn))))
                fail(); continue
            }
            inFlight.append(InFlight(text: sql.text, preparing: preparing, preparePhase: preparing != nil,
                                     outcome: nil, completion: completion))
        }
        flush()
        // When the socket is full, libpq reads while it writes (so the server is never stuck
        // sending to us): results may now sit in libpq's buffer with nothing left on the
        // socket to wake the read source. Look at them now, or they wait forever.
        if !broken { readable() }
    }

    private func flush() {
        guard !broken else { return }
        switch PQflush(connection.handle) {
        case 0:
            if writeArmed { writeSource.suspend(); writeArmed = false }
        case 1:
            // The socket is full: PostgreSQL is busy sending us results, which `readable` drains.
            if !writeArmed { writeSource.resume(); writeArmed = true }
            readable()  // libpq may have read some of them into its buffer while trying to write
        default:
            fail()
        }
    }

    private func readable() {
        let conn = connection.handle
        guard PQconsumeInput(conn) == 1 else { return fail() }
        while head < inFlight.count, PQisBusy(conn) == 0 {
            guard let result = PQgetResult(conn) else {
                // The end of one statement's results: after a prepare, its execute comes next.
                inFlight[head].preparePhase = false
                continue
            }
            defer { PQclear(result) }
            let status = PQresultStatus(result)
            if status == PGRES_PIPELINE_SYNC {
                let done = inFlight[head]
                head += 1
                if head == inFlight.count { inFlight.removeAll(keepingCapacity: true); head = 0 }
                done.completion(done.outcome ?? .failure(.connectionFailed("no result for the statement")))
            } else if inFlight[head].preparePhase {
                if let error = PGConnection.error(from: result, conn: conn) {
                    inFlight[head].outcome = .failure(error)
                } else {
                    connection.statements[inFlight[head].text] = inFlight[head].preparing
                }
            } else if status == PGRES_PIPELINE_ABORTED {
                if inFlight[head].outcome == nil {
                    inFlight[head].outcome = .failure(.server(sqlState: "25P02", message: "pipeline aborted", detail: nil, constraint: nil))
                }
            } else if let error = PGConnection.error(from: result, conn: conn) {
                inFlight[head].outcome = .failure(error)
            } else {
                inFlight[head].outcome = .success(PGRows(result))
            }
        }
        if PQstatus(conn) != CONNECTION_OK { fail() }
    }

    /// The connection is gone: every statement in flight fails (the database may or may not
    /// have run it, as with any lost connection), and the pool opens a new one next time.
    private func fail() {
        guard !broken else { return }
        broken = true
        stopWatching()  // a dead socket stays readable (EOF): stop hearing about it
        let message = PGConnection.errorText(connection.handle)
        let failed = inFlight[head...]
        inFlight = []; head = 0
        for statement in failed { statement.completion(.failure(.connectionFailed(message))) }
    }
}

/// Closes its descriptor when the last source holding it lets go.
private final class WatchedDescriptor: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}
