import FlotillaStore
import Foundation
import Synchronization
import XCTest

final class SQLTests: XCTestCase {
    func testInterpolationBindsEveryValue() {
        let name = "x'; DROP TABLE devices; --"
        let limit = 5
        let query: SQL = "SELECT * FROM devices WHERE name = \(name) AND n < \(limit) AND t = \(Optional<String>.none)"
        XCTAssertEqual(query.text, "SELECT * FROM devices WHERE name = $1 AND n < $2 AND t = $3")
        XCTAssertEqual(query.binds, [name, "5", nil])
    }

    func testFragmentsAreRenumbered() {
        let a: SQL = "a = \(1) AND b = \(2)"
        let b: SQL = "c = \(3)"
        let joined = SQL.join([a, b], separator: " OR ")
        XCTAssertEqual(joined.text, "a = $1 AND b = $2 OR c = $3")
        let nested: SQL = "SELECT \(unsafe: "x") WHERE \(joined) LIMIT \(10)"
        XCTAssertEqual(nested.text, "SELECT x WHERE a = $1 AND b = $2 OR c = $3 LIMIT $4")
        XCTAssertEqual(nested.binds, ["1", "2", "3", "10"])
    }

    func testTimestampsRoundTripRFC3339AndPostgresText() throws {
        let t = try XCTUnwrap(Timestamp(parsing: "2026-11-21T16:04:05.123456Z"))
        XCTAssertEqual(t.rfc3339, "2026-11-21T16:04:05.123456Z")
        XCTAssertEqual(Timestamp(parsing: "2026-11-21 17:04:05.123456+01"), t)
        XCTAssertEqual(Timestamp(parsing: "2026-11-21T12:34:05.123456-03:30")?.rfc3339, "2026-11-21T16:04:05.123456Z")
        XCTAssertEqual(Timestamp(parsing: "1969-12-31T23:59:59Z")?.microseconds, -1_000_000)
        XCTAssertEqual(Timestamp(parsing: "1969-12-31T23:59:59Z")?.rfc3339, "1969-12-31T23:59:59Z")
        XCTAssertEqual(Timestamp(parsing: "2024-02-29T00:00:00.5Z")?.rfc3339, "2024-02-29T00:00:00.500000Z")
        for bad in ["", "2026-11-21", "2026-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2026-11-21T16:04:05",
                    "2026-11-21T24:00:00Z", "2026-11-21T16:04:05.Z", "2026-11-21T16:04:05Zjunk"] {
            XCTAssertNil(Timestamp(parsing: bad), bad)
        }
    }
}

final class StoreTests: XCTestCase {
    func connect(statementTimeout: Int = 10_000) throws -> PGConnection {
        try PGConnection(PGConnectionOptions(conninfo: TestCluster.freshDatabase().conninfo, statementTimeoutMillis: statementTimeout))
    }

    func testValuesRoundTripThroughPostgres() throws {
        let conn = try connect()
        let hostile = "it's \"quoted\" \\ and ; DROP TABLE x; --"
        let when = Timestamp(parsing: "2026-11-21T16:04:05.123456Z")!
        let row = try conn.query("""
            SELECT \(hostile)::text, \(42)::int, \(true)::bool, \(2.5)::float8, \(when)::timestamptz,
                   \(JSONText(#"{"a": [1, "x"]}"#))::jsonb, \(Bytea([0, 1, 254, 255]))::bytea,
                   \(Optional<Int>.none)::int, \(PGTextArray(["a\"b", "c\\d", "e,f"]))::text[]
            """)[0]
        let (text, int, bool, double, time, json, bytes, null, array) = try row.decode(
            String.self, Int.self, Bool.self, Double.self, Timestamp.self, JSONText.self, Bytea.self, Int?.self, String.self)
        XCTAssertEqual(text, hostile)
        XCTAssertEqual(int, 42)
        XCTAssertTrue(bool)
        XCTAssertEqual(double, 2.5)
        XCTAssertEqual(time, when)
        XCTAssertEqual(json.text, #"{"a": [1, "x"]}"#)
        XCTAssertEqual(bytes.bytes, [0, 1, 254, 255])
        XCTAssertNil(null)
        XCTAssertEqual(array, #"{"a\"b","c\\d","e,f"}"#)
        XCTAssertThrowsError(try row.decode(String.self, column: "nope"))
        XCTAssertThrowsError(try conn.query("SELECT NULL::int")[0].decode(Int.self), "NULL into a non-optional is an error")
    }

    func testServerErrorsCarryTheirSQLState() throws {
        let conn = try connect()
        try conn.execute(unsafe: "CREATE TABLE t (k text PRIMARY KEY)")
        try conn.query("INSERT INTO t VALUES (\("a"))")
        XCTAssertThrowsError(try conn.query("INSERT INTO t VALUES (\("a"))")) { error in
            XCTAssertTrue((error as? PGError)?.isUniqueViolation == true, "\(error)")
            XCTAssertEqual((error as? PGError)?.constraint, "t_pkey")
        }
        // The connection is still good afterwards.
        XCTAssertEqual(try conn.query("SELECT count(*) FROM t")[0].decode(Int.self), 1)
    }

    func testTransactionsCommitOrRollBack() throws {
        let conn = try connect()
        try conn.execute(unsafe: "CREATE TABLE t (k int)")
        _ = try conn.transaction { try $0.query("INSERT INTO t VALUES (\(1))") }
        struct Boom: Error {}
        XCTAssertThrowsError(try conn.transaction { conn in
            try conn.query("INSERT INTO t VALUES (\(2))")
            throw Boom()
        })
        XCTAssertEqual(try conn.query("SELECT array_agg(k)::text FROM t")[0].decode(String.self), "{1}")
    }

    func testPipelineIsOneAtomicBatch() throws {
        let conn = try connect()
        try conn.execute(unsafe: "CREATE TABLE t (k int PRIMARY KEY)")
        let results = try conn.pipeline(["INSERT INTO t VALUES (\(1))", "INSERT INTO t VALUES (\(2))", "SELECT count(*) FROM t"])
        XCTAssertEqual(results.count, 3)
        XCTAssertEqual(try results[2][0].decode(Int.self), 2)
        // A failure in the middle aborts the rest and rolls back the whole batch.
        XCTAssertThrowsError(try conn.pipeline(["INSERT INTO t VALUES (\(3))", "INSERT INTO t VALUES (\(1))",
                                                "INSERT INTO t VALUES (\(4))"])) { error in
            XCTAssertTrue((error as? PGError)?.isUniqueViolation == true, "\(error)")
        }
        XCTAssertEqual(try conn.query("SELECT array_agg(k ORDER BY k)::text FROM t")[0].decode(String.self), "{1,2}")
        // Prepared statements made inside a pipeline are reused by plain queries afterwards.
        XCTAssertEqual(try conn.query("SELECT count(*) FROM t")[0].decode(Int.self), 2)
    }

    func testStatementTimeout() throws {
        let conn = try connect(statementTimeout: 100)
        XCTAssertThrowsError(try conn.query("SELECT pg_sleep(\(5))")) { error in
            XCTAssertTrue((error as? PGError)?.isTimeout == true, "\(error)")
        }
        XCTAssertEqual(try conn.query("SELECT 1")[0].decode(Int.self), 1)
    }

    func testPoolBoundsConcurrencyAndQueuesWaiters() async throws {
        let conninfo = try TestCluster.freshDatabase().conninfo
        let pool = PGPool(.init(connection: PGConnectionOptions(conninfo: conninfo), size: 2))
        final class Gauge: Sendable { let state = Mutex((now: 0, peak: 0)) }
        let gauge = Gauge()
        try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<12 {
                group.addTask {
                    try await pool.withConnection { conn in
                        gauge.state.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
                        defer { gauge.state.withLock { $0.now -= 1 } }
                        return try conn.query("SELECT \(i)::int FROM pg_sleep(0.02)")[0].decode(Int.self)
                    }
                }
            }
            var sum = 0
            for try await value in group { sum += value }
            XCTAssertEqual(sum, (0..<12).reduce(0, +))
        }
        XCTAssertEqual(gauge.state.withLock { $0.peak }, 2, "never more connections at work than the pool size")
        pool.close()
    }

    func testWaitersGiveUpAfterTheAcquireTimeout() async throws {
        var configuration = PGPool.Configuration(connection: PGConnectionOptions(conninfo: try TestCluster.freshDatabase().conninfo), size: 1)
        configuration.acquireTimeout = .milliseconds(100)
        let pool = PGPool(configuration)
        async let holder: Void = pool.withConnection { try $0.query("SELECT pg_sleep(1)") }
        try await Task.sleep(for: .milliseconds(50))
        do {
            _ = try await pool.withConnection { _ in 1 }
            XCTFail("the only connection is busy for a second")
        } catch let error as PGError {
            XCTAssertTrue(error.isUnavailable, "\(error)")
        }
        try await holder
        let seven = try await pool.withConnection { try $0.query("SELECT 7")[0].decode(Int.self) }
        XCTAssertEqual(seven, 7)
        pool.close()
    }

    /// The pool's batching must give every caller its own result: concurrent statements,
    /// first uses of a text racing each other, a failing statement among good ones, and a
    /// connection killed under them.
    func testEveryDriverGivesEachStatementItsOwnResult() async throws {
        let conninfo = try TestCluster.freshDatabase().conninfo
        do {
            let driver = "workers"
            let pool = PGPool(PGPool.Configuration(connection: PGConnectionOptions(conninfo: conninfo), size: 2))
            try await withThrowingTaskGroup(of: (Int, Result<Int, PGError>).self) { group in
                for i in 0..<300 {
                    group.addTask {
                        // Five texts, so first uses (prepares) race; every 7th divides by zero.
                        let sql: SQL = switch i % 5 {
                        case 0: "SELECT \(i)::int / \(i % 7 == 0 ? 0 : 1)"
                        case 1: "SELECT \(i)::int + 0"
                        case 2: "SELECT \(i)::int * 1"
                        case 3: "SELECT \(i)::int - 0"
                        default: "SELECT abs(\(i)::int)"
                        }
                        do {
                            return (i, .success(try await pool.query(sql)[0].decode(Int.self)))
                        } catch let error as PGError {
                            return (i, .failure(error))
                        }
                    }
                }
                for try await (i, result) in group {
                    switch result {
                    case .success(let value):
                        XCTAssertFalse(i % 5 == 0 && i % 7 == 0, "\(driver): \(i) should have failed")
                        XCTAssertEqual(value, i, "\(driver)")
                    case .failure(let error):
                        XCTAssertTrue(i % 5 == 0 && i % 7 == 0, "\(driver): \(i) failed: \(error)")
                        XCTAssertEqual(error.sqlState, "22012", "\(driver)")
                    }
                }
            }
            // Kill the pool's sessions, as a database restart does: callers get an error that
            // says "unavailable" (never a hang), and the pool reconnects on its own.
            let admin = try PGConnection(PGConnectionOptions(conninfo: conninfo))
            try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'flotilla' AND pid <> pg_backend_pid()")
            var recovered = false
            for _ in 0..<50 where !recovered {
                do {
                    recovered = try await pool.query("SELECT 42")[0].decode(Int.self) == 42
                } catch let error as PGError {
                    XCTAssertTrue(error.isUnavailable, "\(driver): \(error)")
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            XCTAssertTrue(recovered, "\(driver): the pool never reconnected")
            pool.close()
        }
    }

    func testUnreachableDatabaseFailsFast() async throws {
        let pool = PGPool(.init(connection: PGConnectionOptions(conninfo: "host=/nonexistent-dir port=5432 dbname=x user=x")))
        for _ in 0..<3 {
            do {
                _ = try await pool.withConnection { try $0.query("SELECT 1") }
                XCTFail("there is no database")
            } catch let error as PGError {
                XCTAssertTrue(error.isUnavailable, "\(error)")
            }
        }
    }
}
