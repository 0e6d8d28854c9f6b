// Where the server's database comes from: DATABASE_URL when set, otherwise a private
// PostgreSQL cluster it creates and starts under --data-dir. Then migrations, then the
// first admin token.

import ArgumentParser
import FlotillaTransport
import FlotillaAPI
import FlotillaStore
import Foundation

struct DatabaseOptions: ParsableArguments {
    @Option(help: "Directory for the server's own state: the embedded PostgreSQL cluster and admin-token. Env: FLOTILLA_DATA_DIR.")
    var dataDir: String?

    @Option(help: "PostgreSQL connection URL; when set, no embedded database is started. Env: DATABASE_URL.")
    var databaseURL: String?

    @Option(help: "Directory of NNNN_name.sql migrations (default: found next to the binary or in ./migrations). Env: FLOTILLA_MIGRATIONS.")
    var migrations: String?

    @Option(help: "Database connections in the pool.")
    var dbPoolSize = 8

    @Option(help: "Milliseconds a SQL statement may run before it is canceled.")
    var statementTimeout = 10_000

    var resolvedDataDir: String { dataDir ?? environment("FLOTILLA_DATA_DIR") ?? "./.flotilla" }
    var resolvedURL: String? { databaseURL ?? environment("DATABASE_URL") }

    /// The migrations shipped with this build: an explicit path, ./migrations, or the
    /// checkout/installation the binary sits in (…/.build/release → …/migrations, /usr/share/flotilla).
    func migrationsDirectory() throws -> String {
        if let explicit = migrations ?? environment("FLOTILLA_MIGRATIONS") { return explicit }
        var candidates = ["./migrations"]
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            candidates.append(directory.appendingPathComponent("migrations").path)
            candidates.append(directory.appendingPathComponent("share/flotilla/migrations").path)
            directory.deleteLastPathComponent()
        }
        candidates.append("/usr/share/flotilla/migrations")
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate + "/0001_devices_groups_tokens.sql") {
            return candidate
        }
        throw ValidationError("cannot find the migrations directory; pass --migrations DIR")
    }

    /// Connects to (or starts) the database and brings its schema up to date.
    func open(log: (String) -> Void) throws -> OpenDatabase {
        let migrationFiles = try Migrator.load(directory: migrationsDirectory())
        var cluster: EmbeddedPostgres?
        let conninfo: String
        if let url = resolvedURL {
            conninfo = url
            log("database: \(redacted(url))")
        } else {
            let embedded = try EmbeddedPostgres(dataDirectory: resolvedDataDir)
            try embedded.start(log: log)
            cluster = embedded
            conninfo = embedded.conninfo()
            log("database: embedded PostgreSQL in \(embedded.clusterDirectory)")
        }
        do {
            let options = PGConnectionOptions(conninfo: conninfo, statementTimeoutMillis: statementTimeout)
            // Migrations may take longer than a request is allowed to.
            let connection = try PGConnection(PGConnectionOptions(conninfo: conninfo, statementTimeoutMillis: 0))
            let applied = try Migrator.migrate(connection, migrationFiles)
            for migration in applied { log("applied migration \(migration.version) \(migration.name)") }
            return OpenDatabase(options: options, cluster: cluster)
        } catch {
            cluster?.stop()
            throw error
        }
    }
}

struct OpenDatabase {
    let options: PGConnectionOptions
    let cluster: EmbeddedPostgres?

    /// Creates the first admin token on an empty database, prints it once and saves it
    /// (mode 0600) to <data-dir>/admin-token.
    func bootstrapAdminToken(dataDir: String, log: (String) -> Void) throws {
        guard let secret = try ManagementAPI.bootstrapAdminToken(PGConnection(options)) else { return }
        let path = dataDir + "/admin-token"
        try writeSecretFile(path, secret + "\n")
        log("admin token (shown once, saved to \(path)): \(secret)")
    }
}

/// Writes a file only its owner can read (mode 0600, also when it already existed),
/// creating its directory if needed.
func writeSecretFile(_ path: String, _ text: String) throws {
    let directory = (path as NSString).deletingLastPathComponent
    if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
    let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))") }
    fchmod(fd, 0o600)  // an existing file keeps its old mode through O_CREAT
    let bytes = Array(text.utf8)
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    fsync(fd)
    close(fd)
    guard written == bytes.count else { throw ValidationError("cannot write \(path)") }
}

/// The manifest-signing key: read from `path`, or made and saved there (0600) on first start.
/// Replicas must all use the same key (give each the same file with --signing-key).
func loadOrCreateSigningKey(_ path: String, log: (String) -> Void) throws -> Ed25519.PrivateKey {
    if let key = try loadSigningKey(path) { return key }
    let key = try Ed25519.PrivateKey.generate()
    try writeSecretFile(path, Base64URL.encode(key.seed) + "\n")
    log("created the manifest-signing key \(path) (key id \(Ed25519.keyID(key.publicKey)))")
    return key
}

/// The key in `path`, or nil when there is no such file.
func loadSigningKey(_ path: String) throws -> Ed25519.PrivateKey? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    guard let seed = Base64URL.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), seed.count == 32 else {
        throw ValidationError("\(path): not a signing key (expected 32 bytes in base64url, as this server writes it)")
    }
    return try Ed25519.PrivateKey(seed: seed)
}

func environment(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
}

/// A URL without its password, for logs.
func redacted(_ url: String) -> String {
    guard let at = url.lastIndex(of: "@"), let scheme = url.range(of: "://"),
          let colon = url[scheme.upperBound..<at].firstIndex(of: ":") else { return url }
    return String(url[..<url.index(after: colon)]) + "***" + String(url[at...])
}

