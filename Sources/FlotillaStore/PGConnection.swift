// One libpq connection, used with blocking calls from exactly one thread at a time
// (a pool worker; see PGPool for why blocking workers and not async libpq).
//
// Every parameterized query goes through a per-connection prepared-statement cache:
// the first use of a text pays a Parse, every later one skips parsing and planning.
// `pipeline(_:)` sends several statements and one Sync in a single round trip; the
// statements between two Syncs run as one implicit transaction, so a pipeline is atomic.

import CLibpq
#if canImport(Glibc)
import Glibc
#endif

public struct PGConnectionOptions: Sendable {
    /// A libpq connection string or URL ("postgresql:///flotilla?host=/path/run").
    public var conninfo: String
    /// Milliseconds a statement may run before the server cancels it (0: no limit).
    public var statementTimeoutMillis = 10_000
    /// Seconds libpq waits for a TCP connect.
    public var connectTimeoutSeconds = 3

    public init(conninfo: String, statementTimeoutMillis: Int = 10_000) {
        self.conninfo = conninfo
        self.statementTimeoutMillis = statementTimeoutMillis
    }
}

public final class PGConnection {
    private let conn: OpaquePointer
    /// Prepared statements on this connection: SQL text → statement name.
    var statements: [String: String] = [:]
    var nextStatement = 0
    /// Beyond this many distinct texts, queries run unprepared (dynamic SQL must not grow memory without bound).
    static let statementCacheLimit = 256

    public init(_ options: PGConnectionOptions) throws {
        // Later keywords override what the conninfo says: the session always runs in UTC with
        // ISO dates (PGValues relies on it) and with our statement timeout.
        let settings = "-c TimeZone=UTC -c DateStyle=ISO -c client_min_messages=warning -c statement_timeout=\(options.statementTimeoutMillis)"
        // NULL-terminated, as PQconnectdbParams wants.
        let keywords: [String?] = ["dbname", "options", "connect_timeout", "application_name", nil]
        let values: [String?] = [options.conninfo, settings, String(options.connectTimeoutSeconds), "flotilla", nil]
        let connection = withCStringArray(keywords) { k in
            withCStringArray(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let connection else { throw PGError.connectionFailed("out of memory") }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = PGConnection.errorText(connection)
            PQfinish(connection)
            throw PGError.connectionFailed(message)
        }
        conn = connection
    }

    deinit { PQfinish(conn) }

    /// False once the connection is lost; the pool then drops it.
    public var isUsable: Bool { PQstatus(conn) == CONNECTION_OK }

    var socketDescriptor: Int32 { PQsocket(conn) }


    /// Reads what the server sent and returns the payloads of the notifications in it;
    /// nil when the connection broke.
    func consumeNotifications() -> [String]? {
        guard PQconsumeInput(conn) == 1, PQstatus(conn) == CONNECTION_OK else { return nil }
        var payloads: [String] = []
        while let notify = PQnotifies(conn) {
            payloads.append(String(cString: notify.pointee.extra))
            PQfreemem(notify)
        }
        return payloads
    }

    /// Not inside a transaction and not in the middle of a command.
    var isIdle: Bool { PQtransactionStatus(conn) == PQTRANS_IDLE }

    /// True when the connection is idle and the server has not closed it behind our back.
    /// A restarted server closes every session; without this check the first query on each
    /// pooled connection would fail. Costs one poll(2).
    func isIdleAndAlive() -> Bool {
        guard isUsable, isIdle else { return false }
        var fd = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
        if poll(&fd, 1, 0) == 0 { return true }
        // Something arrived while idle: a notice, a notification, or the goodbye of a dying server.
        return consumeNotifications() != nil
    }

    /// Runs one parameterized statement and returns all of its rows. It goes through the
    /// same pipeline path as batches, so a first use prepares and executes in one round
    /// trip; inside BEGIN … COMMIT the Sync does not end the transaction.
    @discardableResult
    public func query(_ sql: SQL) throws -> PGRows {
        try sql.refuseNUL()
        return try runPipeline([sql], syncEach: true)[0].get()
    }

    /// Runs raw SQL through the simple protocol: several statements in one string are
    /// allowed (migration files). Never pass client input.
    public func execute(unsafe script: String) throws {
        // PQexec returns the last statement's result; an error stops the script there.
        let result = PQexec(conn, script)
        defer { PQclear(result) }
        if let failure = PGConnection.error(from: result, conn: conn) { throw failure }
    }

    /// BEGIN … COMMIT around `body`; ROLLBACK if it throws.
    public func transaction<T>(_ body: (PGConnection) throws -> T) throws -> T {
        try execute(unsafe: "BEGIN")
        do {
            let value = try body(self)
            try execute(unsafe: "COMMIT")
            return value
        } catch {
            if isUsable { try? execute(unsafe: "ROLLBACK") }
            throw error
        }
    }

    /// Sends every statement, then one Sync, and reads all results: one round trip for
    /// the lot, atomic (one implicit transaction). For a handful of statements: blocking
    /// mode cannot interleave sending with reading, so a huge pipeline could stall.
    public func pipeline(_ queries: [SQL]) throws -> [PGRows] {
        for sql in queries { try sql.refuseNUL() }
        return try runPipeline(queries, syncEach: false).map { try $0.get() }
    }

    /// Independent statements in one round trip, each followed by its own Sync: each is its
    /// own transaction, and one failing does not affect the others. The pool batches
    /// concurrent requests' queries through this (see PGPool.query, which checked each
    /// statement for NUL before queueing it).
    public func batch(_ queries: [SQL]) throws -> [Result<PGRows, PGError>] {
        try runPipeline(queries, syncEach: true)
    }

    private func runPipeline(_ queries: [SQL], syncEach: Bool) throws -> [Result<PGRows, PGError>] {
        guard PQenterPipelineMode(conn) == 1 else { throw PGError.connectionFailed(PGConnection.errorText(conn)) }
        defer { PQexitPipelineMode(conn) }
        func sync() throws {
            guard PQpipelineSync(conn) == 1 else { throw PGError.connectionFailed(PGConnection.errorText(conn)) }
        }
        // Send everything first.
        var freshNames: [String?] = []
        var preparedHere: [String: String] = [:]
        for sql in queries {
            let binds = sql.binds
            var name = statements[sql.text] ?? preparedHere[sql.text]
            var fresh: String?
            if name == nil, statements.count + preparedHere.count < PGConnection.statementCacheLimit {
                nextStatement += 1
                fresh = "s\(nextStatement)"
                name = fresh
                preparedHere[sql.text] = fresh
                guard PQsendPrepare(conn, fresh!, sql.text, Int32(binds.count), nil) == 1 else {
                    throw PGError.connectionFailed(PGConnection.errorText(conn))
                }
            }
            freshNames.append(fresh)
            let sent = withCStringArray(binds) { values in
                if let name {
                    PQsendQueryPrepared(conn, name, Int32(binds.count), values, nil, nil, 0)
                } else {
                    PQsendQueryParams(conn, sql.text, Int32(binds.count), nil, values, nil, nil, 0)
                }
            }
            guard sent == 1 else { throw PGError.connectionFailed(PGConnection.errorText(conn)) }
            if syncEach { try sync() }
        }
        if !syncEach { try sync() }

        // Then read: per statement [prepare result, NULL], result, NULL; a Sync result per segment.
        func next() throws -> OpaquePointer {
            guard let result = PQgetResult(conn) else { throw PGError.connectionFailed(PGConnection.errorText(conn)) }
            if PQresultStatus(result) != PGRES_PIPELINE_SYNC { _ = PQgetResult(conn) }
            return result
        }
        func expectSync() throws {
            let result = try next()
            defer { PQclear(result) }
            guard PQresultStatus(result) == PGRES_PIPELINE_SYNC else {
                throw PGError.connectionFailed("pipeline out of step: " + PGConnection.errorText(conn))
            }
        }
        var results: [Result<PGRows, PGError>] = []
        var segmentError: PGError?
        for (index, sql) in queries.enumerated() {
            if let fresh = freshNames[index] {
                let prepared = try next()
                if let error = PGConnection.error(from: prepared, conn: conn) {
                    segmentError = segmentError ?? error
                } else {
                    statements[sql.text] = fresh
                }
                PQclear(prepared)
            }
            let result = try next()
            if PQresultStatus(result) == PGRES_PIPELINE_ABORTED {
                results.append(.failure(segmentError ?? .server(sqlState: "25P02", message: "pipeline aborted", detail: nil, constraint: nil)))
            } else if let error = PGConnection.error(from: result, conn: conn) {
                segmentError = segmentError ?? error
                results.append(.failure(error))
            } else {
                results.append(.success(PGRows(result)))
            }
            PQclear(result)
            if syncEach {
                try expectSync()
                segmentError = nil
            }
        }
        if !syncEach {
            try expectSync()
            // One transaction: if anything failed, nothing happened.
            if let segmentError { return queries.map { _ in .failure(segmentError) } }
        }
        return results
    }

    // MARK: - Internals

    /// nil for a successful result.
    static func error(from result: OpaquePointer?, conn: OpaquePointer) -> PGError? {
        guard let result else { return .connectionFailed(errorText(conn)) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_PIPELINE_SYNC:
            return nil
        default:
            guard PQstatus(conn) == CONNECTION_OK, let state = field(result, Int32(UInt8(ascii: "C"))) else {
                return .connectionFailed(errorText(conn))
            }
            return .server(sqlState: state, message: field(result, Int32(UInt8(ascii: "M"))) ?? "",
                           detail: field(result, Int32(UInt8(ascii: "D"))),
                           constraint: field(result, Int32(UInt8(ascii: "n"))))
        }
    }

    /// `code` is one of libpq's PG_DIAG_* letters (character macros Swift does not import).
    private static func field(_ result: OpaquePointer, _ code: Int32) -> String? {
        PQresultErrorField(result, code).map { String(cString: $0) }
    }

    static func errorText(_ conn: OpaquePointer) -> String {
        guard let text = PQerrorMessage(conn) else { return "unknown libpq error" }
        let message = String(cString: text).trimmingTrailingWhitespace
        return message.isEmpty ? "connection lost" : message
    }
}

/// Calls `body` with a C array of C strings (NULL entries for nil) that lives for the call.
func withCStringArray<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    if strings.isEmpty { return body(nil) }
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0)! } }
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeMutableBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(buffer.count, 1)) { body($0) }
    }
}

extension String {
    var trimmingTrailingWhitespace: String {
        var text = self
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return text
    }
}
