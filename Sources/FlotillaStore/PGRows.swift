// Query results, copied out of libpq's PGresult at once so that no C memory outlives the
// call, and decoded by column position into typed tuples:
//
//     for row in try conn.query("SELECT id, name, last_seen_at FROM devices") {
//         let (id, name, seen) = try row.decode(String.self, String.self, Timestamp?.self)
//     }

import CLibpq

public struct PGRows: Sendable, RandomAccessCollection {
    public let columns: [String]
    let values: [[String?]]
    /// Rows touched by INSERT/UPDATE/DELETE (0 for other statements).
    public let affectedRows: Int

    init(_ result: OpaquePointer) {
        let rowCount = Int(PQntuples(result)), columnCount = Int(PQnfields(result))
        columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        var values: [[String?]] = []
        values.reserveCapacity(rowCount)
        for row in 0..<Int32(rowCount) {
            values.append((0..<Int32(columnCount)).map { column in
                PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
            })
        }
        self.values = values
        affectedRows = Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { values.count }
    public subscript(position: Int) -> PGRow { PGRow(columns: columns, values: values[position]) }
}

public struct PGRow: Sendable {
    public let columns: [String]
    public let values: [String?]

    /// The columns, in order, as the given types.
    public func decode<each T: PGDecodable>(_ types: repeat (each T).Type) throws -> (repeat each T) {
        var column = 0
        func next<U: PGDecodable>(_ type: U.Type) throws -> U {
            defer { column += 1 }
            guard column < values.count else {
                throw PGError.decoding(column: "#\(column)", message: "the row has only \(values.count) columns")
            }
            return try U.decode(pgText: values[column], column: columns[column])
        }
        return (repeat try next((each T).self))
    }

    /// The first column. (The variadic form above covers this too, but type inference through
    /// a one-element pack fails in some expression contexts.)
    public func decode<T: PGDecodable>(_ type: T.Type) throws -> T {
        guard !values.isEmpty else { throw PGError.decoding(column: "#0", message: "the row has no columns") }
        return try T.decode(pgText: values[0], column: columns[0])
    }

    /// One column by name.
    public func decode<T: PGDecodable>(_ type: T.Type, column name: String) throws -> T {
        guard let index = columns.firstIndex(of: name) else {
            throw PGError.decoding(column: name, message: "no such column")
        }
        return try T.decode(pgText: values[index], column: name)
    }
}

public enum PGError: Error, Sendable, CustomStringConvertible {
    /// Could not connect, or the connection broke: the database is (for now) unreachable.
    case connectionFailed(String)
    /// No connection could be had in time (pool exhausted or database down).
    case unavailable(String)
    /// The server refused a statement.
    case server(sqlState: String, message: String, detail: String?, constraint: String?)
    /// A column did not hold what the code expected.
    case decoding(column: String, message: String)

    public var sqlState: String? {
        if case .server(let state, _, _, _) = self { return state }
        return nil
    }

    public var constraint: String? {
        if case .server(_, _, _, let constraint) = self { return constraint }
        return nil
    }

    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// Class 22, data exception: the value itself cannot be taken (a NUL, a number out of
    /// range, an impossible date). The caller's input, never the server's fault.
    public var isDataException: Bool { sqlState?.hasPrefix("22") == true }
    public var isForeignKeyViolation: Bool { sqlState == "23503" }
    /// The statement ran past statement_timeout (or was canceled).
    public var isTimeout: Bool { sqlState == "57014" }
    /// The database cannot be reached; the request may succeed later (HTTP 503).
    public var isUnavailable: Bool {
        switch self {
        case .connectionFailed, .unavailable: return true
        // 57P01..57P03: admin shutdown, crash shutdown, cannot connect now (starting up).
        case .server(let state, _, _, _): return state.hasPrefix("57P")
        case .decoding: return false
        }
    }

    public var description: String {
        switch self {
        case .connectionFailed(let message): "database connection failed: \(message)"
        case .unavailable(let message): "database unavailable: \(message)"
        case .server(let state, let message, let detail, _): "database error \(state): \(message)" + (detail.map { " (\($0))" } ?? "")
        case .decoding(let column, let message): "cannot decode column \(column): \(message)"
        }
    }
}
