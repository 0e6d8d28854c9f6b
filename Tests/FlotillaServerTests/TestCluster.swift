// The test suite's PostgreSQL: the same EmbeddedPostgres the server uses, one cluster
// per test run (fsync off), a migrated template database, and a fresh database per test
// made with `CREATE DATABASE … TEMPLATE …` (a file copy: milliseconds, full isolation).

import FlotillaAPI
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import Logging
import XCTest

enum TestCluster {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let migrationsDirectory = repositoryRoot + "/migrations"
    static let template = "flotilla_template"

    /// Started on first use, stopped when the test process exits.
    static let shared: EmbeddedPostgres = {
        let directory = NSTemporaryDirectory() + "flotilla-pg-\(getpid())"
        removeClustersOfDeadRuns()
        do {
            let cluster = try EmbeddedPostgres(dataDirectory: directory, durable: false)
            try cluster.start()
            atexit {
                TestCluster.shared.stop()
                for leftover in ["flotilla-pg-", "flotilla-unused-", "flotilla-tls-"] {
                    try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + leftover + "\(getpid())")
                }
            }
            let admin = try PGConnection(PGConnectionOptions(conninfo: cluster.conninfo(database: "postgres")))
            try admin.execute(unsafe: "CREATE DATABASE \(template)")
            do {
                let connection = try PGConnection(PGConnectionOptions(conninfo: cluster.conninfo(database: template)))
                try Migrator.migrate(connection, Migrator.load(directory: migrationsDirectory))
            }
            return cluster
        } catch {
            fatalError("cannot start the test PostgreSQL cluster: \(error)")
        }
    }()

    /// A run that was killed (timeout, ^C) could not stop its cluster; do it for it.
    private static func removeClustersOfDeadRuns() {
        let temporary = NSTemporaryDirectory()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] where name.hasPrefix("flotilla-pg-") {
            guard let pid = Int32(name.dropFirst("flotilla-pg-".count)), kill(pid, 0) != 0 else { continue }
            if let stale = try? EmbeddedPostgres(dataDirectory: temporary + name, durable: false) { stale.stopIfRunning() }
            try? FileManager.default.removeItem(atPath: temporary + name)
        }
    }

    private static let counter = Mutex(0)

    /// A new, migrated, empty database; returns its conninfo.
    static func freshDatabase() throws -> (name: String, conninfo: String) {
        let cluster = shared
        let number = counter.withLock { value -> Int in
            value += 1
            return value
        }
        let name = "test_\(getpid())_\(number)"
        let admin = try PGConnection(PGConnectionOptions(conninfo: cluster.conninfo(database: "postgres")))
        try admin.execute(unsafe: "CREATE DATABASE \(name) TEMPLATE \(template)")
        return (name, cluster.conninfo(database: name))
    }

    /// A database with no schema at all, for migration tests.
    static func emptyDatabase() throws -> (name: String, conninfo: String) {
        let cluster = shared
        let name = "empty_\(getpid())_\(counter.withLock { value -> Int in value += 1; return value })"
        let admin = try PGConnection(PGConnectionOptions(conninfo: cluster.conninfo(database: "postgres")))
        try admin.execute(unsafe: "CREATE DATABASE \(name)")
        return (name, cluster.conninfo(database: name))
    }
}

import Synchronization

/// An in-process server with the management API over a fresh database, and an admin token.
final class APIServer: @unchecked Sendable {
    let server: HTTPServer
    let pool: PGPool
    let port: Int
    let conninfo: String
    let adminToken: String
    let api: APIContext
    /// The artifact store's directory (a replica shares its first server's, as real replicas must).
    let artifactDirectory: String
    var url: String { "http://127.0.0.1:\(port)" }

    /// A server on a fresh database, or a second replica on `sharing`'s database.
    /// `port`: 0 for any free port, or a given one (a server "restarted" where its clients know it).
    init(poolSize: Int = 4, sharing other: APIServer? = nil, clock: WallClock = .system, maxArtifactBytes: Int = 64 << 20,
         port: Int = 0, limits: RateLimits = RateLimits(), tls: TLSServerConfiguration? = nil, signer: ManifestSigner? = nil) throws {
        if let other {
            conninfo = other.conninfo
            adminToken = other.adminToken
            artifactDirectory = other.artifactDirectory
        } else {
            artifactDirectory = NSTemporaryDirectory() + "flotilla-artifacts-" + UUID().uuidString
            conninfo = try TestCluster.freshDatabase().conninfo
            let bootstrap = try PGConnection(PGConnectionOptions(conninfo: conninfo))
            adminToken = try XCTUnwrap(ManagementAPI.bootstrapAdminToken(bootstrap))
        }
        var configuration = PGPool.Configuration(connection: PGConnectionOptions(conninfo: conninfo), size: poolSize)
        configuration.acquireTimeout = .seconds(2)
        pool = PGPool(configuration)
        // Request lines at info go to the run's log (TestLog), which scripts/test scans for secrets.
        var logger = Logger(label: "test") { _ in RunLogHandler() }
        logger.logLevel = TestLog.path == nil ? .critical : .info
        TestLog.recordSecret(adminToken)
        api = try APIContext(db: pool, logger: logger, artifacts: try ArtifactStore(directory: artifactDirectory, maxBytes: maxArtifactBytes),
                            listen: PGConnectionOptions(conninfo: conninfo), clock: clock, signer: signer ?? other?.api.signer,
                                limits: limits, deviceCertificates: tls?.clientCAPath != nil)
        server = try HTTPServer(configuration: .init(host: "127.0.0.1", port: port, tls: tls, loopCount: 2),
                                router: FlotillaAPI.makeRouter(context: api))
        self.port = try server.start().port
        TestLog.recordSecret(Base64URL.encode(api.signer.key.seed))
    }

    /// Waits until this server's NOTIFY listener is connected (its caches are off until then).
    func waitUntilListening() async throws {
        for _ in 0..<100 where !api.cacheIsEnabledForTesting { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertTrue(api.cacheIsEnabledForTesting, "the listener never connected")
    }

    func stop() async {
        await server.shutdown(gracePeriod: .seconds(2))
        api.stop()
        pool.close()
    }
}

/// Log lines as the server's StreamLogHandler writes them (level, message, metadata), into
/// the test run's log.
struct RunLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = metadata.merging(event.metadata ?? [:]) { $1 }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        TestLog.append("\(event.level) \(event.message) \(fields.joined(separator: " "))")
    }
}

/// A test with one server on a fresh database and an admin client, both stopped after it.
/// Subclasses add their fixtures in `setUp` after `super.setUp()`.
class ServerTestCase: XCTestCase {
    var server: APIServer!
    var admin: APIClient!
    /// A clock the test moves by hand; the server reads it when `usesManualClock`.
    let clock = ManualClock()
    var usesManualClock: Bool { false }
    /// How the admin client talks (pipelines speak HTTP/1.1, the CLI HTTP/2).
    var adminWire: Wire { .h2 }

    override func setUp() async throws {
        server = try APIServer(clock: usesManualClock ? clock.wallClock : .system)
        admin = APIClient(port: server.port, token: server.adminToken, wire: adminWire)
    }

    override func tearDown() async throws {
        await admin?.close()
        await server?.stop()
    }
}
