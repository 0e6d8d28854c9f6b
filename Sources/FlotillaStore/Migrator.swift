// Applies `migrations/NNNN_name.sql` in order, each in its own transaction, and records
// each in `schema_migrations` with the SHA-256 of its text.
//
// A session-level advisory lock serializes servers that start at the same moment: the
// second waits, then finds nothing left to do. An applied migration whose file changed
// since is refused: the database no longer matches what the code believes, and guessing
// would corrupt data. Fix it by restoring the file and adding a new migration.

import Foundation

public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let sql: String
    public var checksum: String { Secrets.sha256Hex(sql) }
}

public enum MigrationError: Error, CustomStringConvertible {
    case unreadable(String)
    case badFileName(String)
    case duplicateVersion(Int)
    case edited(version: Int, name: String)
    case unknownApplied(version: Int, name: String)
    case failed(version: Int, name: String, underlying: PGError)

    public var description: String {
        switch self {
        case .unreadable(let message): "cannot read migrations: \(message)"
        case .badFileName(let file): "migration file '\(file)' is not named NNNN_name.sql"
        case .duplicateVersion(let version): "two migration files have version \(version)"
        case .edited(let version, let name):
            "migration \(version) (\(name)) was edited after it was applied; restore the original file and put the change in a new migration"
        case .unknownApplied(let version, let name):
            "the database has migration \(version) (\(name)) that this server does not know; is the server older than the database?"
        case .failed(let version, let name, let underlying): "migration \(version) (\(name)) failed: \(underlying)"
        }
    }
}

public enum Migrator {
    /// Key of the advisory lock ("Flot" in ASCII): any constant works as long as it never changes.
    static let lockKey = 0x466c_6f74

    /// Reads and orders the `.sql` files of `directory`.
    public static func load(directory: String) throws -> [Migration] {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }
        } catch {
            throw MigrationError.unreadable("\(directory): \(error.localizedDescription)")
        }
        var migrations: [Migration] = []
        for file in files {
            let stem = file.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]),
                  stem[..<underscore].count == 4, version > 0 else { throw MigrationError.badFileName(file) }
            guard let data = FileManager.default.contents(atPath: directory + "/" + file),
                  let sql = String(data: data, encoding: .utf8) else {
                throw MigrationError.unreadable("\(directory)/\(file) is not readable UTF-8 text")
            }
            migrations.append(Migration(version: version, name: String(stem[stem.index(after: underscore)...]), sql: sql))
        }
        migrations.sort { $0.version < $1.version }
        for (a, b) in zip(migrations, migrations.dropFirst()) where a.version == b.version {
            throw MigrationError.duplicateVersion(a.version)
        }
        return migrations
    }

    /// Applies what is pending; returns the versions applied now (empty: already up to date).
    @discardableResult
    public static func migrate(_ connection: PGConnection, _ migrations: [Migration]) throws -> [Migration] {
        try connection.query("SELECT pg_advisory_lock(\(lockKey))")
        defer { _ = try? connection.query("SELECT pg_advisory_unlock(\(lockKey))") }
        try connection.execute(unsafe: """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
        var applied: [Int: (name: String, checksum: String)] = [:]
        for row in try connection.query("SELECT version, name, checksum FROM schema_migrations") {
            let (version, name, checksum) = try row.decode(Int.self, String.self, String.self)
            applied[version] = (name, checksum)
        }
        let known = Dictionary(uniqueKeysWithValues: migrations.map { ($0.version, $0) })
        for (version, record) in applied.sorted(by: { $0.key < $1.key }) {
            guard let migration = known[version] else { throw MigrationError.unknownApplied(version: version, name: record.name) }
            guard migration.checksum == record.checksum else { throw MigrationError.edited(version: version, name: migration.name) }
        }
        var done: [Migration] = []
        for migration in migrations where applied[migration.version] == nil {
            do {
                try connection.transaction { connection in
                    try connection.execute(unsafe: migration.sql)
                    try connection.query("""
                        INSERT INTO schema_migrations (version, name, checksum)
                        VALUES (\(migration.version), \(migration.name), \(migration.checksum))
                        """)
                }
            } catch let error as PGError {
                throw MigrationError.failed(version: migration.version, name: migration.name, underlying: error)
            }
            done.append(migration)
        }
        return done
    }
}
