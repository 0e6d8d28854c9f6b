import FlotillaStore
import FlotillaTestSupport
import Foundation
import XCTest

final class MigrationTests: XCTestCase {
    /// A private copy of the migrations directory, so a test can edit files.
    func copyOfMigrations() throws -> String {
        let directory = NSTemporaryDirectory() + "flotilla-migrations-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: TestCluster.migrationsDirectory, toPath: directory)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        return directory
    }

    func testFromEmptyThenNoOp() throws {
        let database = try TestCluster.emptyDatabase()
        let conn = try PGConnection(PGConnectionOptions(conninfo: database.conninfo))
        let migrations = try Migrator.load(directory: TestCluster.migrationsDirectory)
        XCTAssertFalse(migrations.isEmpty)
        XCTAssertEqual(try Migrator.migrate(conn, migrations).map(\.version), migrations.map(\.version))
        XCTAssertEqual(try Migrator.migrate(conn, migrations), [], "a second run has nothing to do")
        let recorded = try conn.query("SELECT version, checksum FROM schema_migrations ORDER BY version").map {
            try $0.decode(Int.self, String.self)
        }
        XCTAssertEqual(recorded.map(\.0), migrations.map(\.version))
        XCTAssertEqual(recorded.map(\.1), migrations.map(\.checksum))
        XCTAssertEqual(try conn.query("SELECT count(*) FROM devices")[0].decode(Int.self), 0)
    }

    func testAnEditedMigrationIsRefused() throws {
        let database = try TestCluster.emptyDatabase()
        let conn = try PGConnection(PGConnectionOptions(conninfo: database.conninfo))
        let directory = try copyOfMigrations()
        try Migrator.migrate(conn, Migrator.load(directory: directory))
        let file = directory + "/0001_devices_groups_tokens.sql"
        try (String(contentsOfFile: file, encoding: .utf8) + "\n-- an innocent comment\n").write(toFile: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Migrator.migrate(conn, Migrator.load(directory: directory))) { error in
            XCTAssertTrue("\(error)".contains("was edited after it was applied"), "\(error)")
        }
    }

    func testAFailingMigrationLeavesNothingBehind() throws {
        let database = try TestCluster.emptyDatabase()
        let conn = try PGConnection(PGConnectionOptions(conninfo: database.conninfo))
        let directory = try copyOfMigrations()
        try "CREATE TABLE half (x int);\nSELECT no_such_function();\n".write(toFile: directory + "/0999_broken.sql", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Migrator.migrate(conn, Migrator.load(directory: directory))) { error in
            XCTAssertTrue("\(error)".contains("migration 999 (broken) failed"), "\(error)")
        }
        XCTAssertTrue(try conn.query("SELECT 1 FROM pg_tables WHERE tablename = 'half'").isEmpty, "its own transaction rolled back")
        let shipped = try Migrator.load(directory: TestCluster.migrationsDirectory).map(\.version).max()
        XCTAssertEqual(try conn.query("SELECT max(version) FROM schema_migrations")[0].decode(Int.self), shipped, "earlier ones stay applied")
    }

    func testBadFileNamesAndUnknownAppliedVersions() throws {
        let directory = try copyOfMigrations()
        try "SELECT 1;".write(toFile: directory + "/2_oops.sql", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Migrator.load(directory: directory)) { XCTAssertTrue("\($0)".contains("NNNN_name.sql")) }
        try FileManager.default.removeItem(atPath: directory + "/2_oops.sql")

        let database = try TestCluster.emptyDatabase()
        let conn = try PGConnection(PGConnectionOptions(conninfo: database.conninfo))
        try Migrator.migrate(conn, Migrator.load(directory: directory))
        try conn.query("INSERT INTO schema_migrations (version, name, checksum) VALUES (\(9000), \("future"), \("x"))")
        XCTAssertThrowsError(try Migrator.migrate(conn, Migrator.load(directory: directory))) { error in
            XCTAssertTrue("\(error)".contains("does not know"), "\(error)")
        }
    }

    /// Two servers starting at the same moment: the advisory lock makes one wait, and each
    /// migration is applied exactly once.
    func testConcurrentMigratorsApplyEachMigrationOnce() async throws {
        let database = try TestCluster.emptyDatabase()
        let migrations = try Migrator.load(directory: TestCluster.migrationsDirectory)
        let applied = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let conn = try PGConnection(PGConnectionOptions(conninfo: database.conninfo))
                    return try Migrator.migrate(conn, migrations).count
                }
            }
            return try await group.reduce(0, +)
        }
        XCTAssertEqual(applied, migrations.count)
    }

    /// `flotilla-server migrate` applies and exits; with an edited file it refuses, clearly.
    func testMigrateCommand() throws {
        let database = try TestCluster.emptyDatabase()
        let binary = productsDirectory.appendingPathComponent("flotilla-server").path
        let directory = try copyOfMigrations()
        let first = try runProcess(binary, ["migrate", "--database-url", database.conninfo, "--migrations", directory])
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.output.contains("applied migration 1 devices_groups_tokens"), first.output)
        let again = try runProcess(binary, ["migrate", "--database-url", database.conninfo, "--migrations", directory])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertFalse(again.output.contains("applied migration"), again.output)

        let file = directory + "/0001_devices_groups_tokens.sql"
        try (String(contentsOfFile: file, encoding: .utf8) + " ").write(toFile: file, atomically: true, encoding: .utf8)
        let edited = try runProcess(binary, ["--listen", "127.0.0.1:0", "--database-url", database.conninfo, "--migrations", directory])
        XCTAssertNotEqual(edited.status, 0)
        XCTAssertTrue(edited.output.contains("migration 1 (devices_groups_tokens) was edited"), edited.output)
        XCTAssertFalse(edited.output.contains("listening on"), "the server refuses to start")
    }
}
