// `flotilla-server`: opens (or starts) the database, migrates it, starts the HTTP server,
// prints one `listening on …` line for scripts and tests (after any start-up lines), and
// shuts down gracefully on SIGTERM/SIGINT, the embedded database included.

import ArgumentParser
import FlotillaAPI
import FlotillaCore
import FlotillaStore
import FlotillaTransport
import Logging
#if canImport(Glibc)
import Glibc
#endif

@main
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-server",
        abstract: "Flotilla: fleet device management for over-the-air update flows.",
        discussion: """
            With no DATABASE_URL, the server creates and runs its own PostgreSQL cluster under \
            --data-dir (default ./.flotilla) and stops it on exit. On first start it prints an \
            admin API token and saves it to <data-dir>/admin-token.
            """,
        version: FlotillaVersion.current,
        subcommands: [Serve.self, Migrate.self],
        defaultSubcommand: Serve.self)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server (the default).")

    @Option(help: "HOST:PORT to listen on; port 0 picks a free port. Env: FLOTILLA_LISTEN. Default 0.0.0.0:8080.")
    var listen: String?

    @Option(help: "PEM certificate chain; with --tls-key serves HTTPS (ALPN h2, http/1.1).")
    var tlsCert: String?

    @Option(help: "PEM private key for --tls-cert. SIGHUP reloads both (and --tls-client-ca) without dropping connections.")
    var tlsKey: String?

    @Option(help: "PEM file of CAs for device client certificates (mTLS): the device API then needs a certificate whose CN is the device's name.")
    var tlsClientCa: String?

    @Option(help: "Largest request body accepted, in bytes (413 beyond).")
    var maxBodyBytes = HTTPServerLimits().maxBodyBytes

    @Option(help: "Largest request header section, in bytes (431 / HTTP/2 equivalent beyond).")
    var maxHeaderBytes = HTTPServerLimits().maxHeaderBytes

    @Option(help: "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.")
    var maxConcurrentStreams = HTTPServerLimits().maxConcurrentStreams

    @Option(help: "Seconds an idle connection stays open.")
    var idleTimeout: Double = 60

    @Option(help: "Seconds a client has to send a complete request head (slowloris guard).")
    var headerTimeout: Double = 10

    @Option(help: "Seconds in-flight requests get to finish on SIGTERM/SIGINT.")
    var shutdownGrace: Double = 10

    @Option(help: "Event loops (default: one per core).")
    var loops = EventLoopGroup.defaultLoopCount

    @Option(help: "Request log level: trace, debug, info, notice, warning, error, critical. Env: FLOTILLA_LOG_LEVEL.")
    var logLevel: String?

    @Option(help: "Directory of flow definitions (*.yaml, *.json) applied at start-up (default: ./flows when it exists). Env: FLOTILLA_FLOWS.")
    var flows: String?

    @Option(help: "Seconds between sweeps for executions whose deadline passed.")
    var sweepInterval: Double = 1

    @Option(help: "Ed25519 key that signs manifests (created on first start; replicas must share it). Default: <data-dir>/signing-key. Env: FLOTILLA_SIGNING_KEY.")
    var signingKey: String?

    @Option(help: "The key that will replace --signing-key (rotation): announced to agents, endorsed by the current key. Default: <data-dir>/signing-key.next if it exists. Env: FLOTILLA_SIGNING_KEY_NEXT.")
    var signingKeyNext: String?

    @Option(help: "Directory of the artifact store (default: <data-dir>/artifacts). Replicas must share it. Env: FLOTILLA_ARTIFACT_DIR.")
    var artifactDir: String?

    @Option(help: "Largest artifact accepted, in bytes (413 beyond).")
    var maxArtifactSize: Int = 4 << 30

    @OptionGroup var database: DatabaseOptions

    @OptionGroup var abuse: LimitOptions

    func validate() throws {
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard tlsClientCa == nil || tlsCert != nil else { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
        // Checked before any database is started, so a typo costs nothing.
        for (flag, path) in [("certificate", tlsCert), ("private key", tlsKey), ("client CA", tlsClientCa)] {
            if let path, access(path, R_OK) != 0 {
                throw ValidationError("loading \(flag) \(path): \(String(cString: strerror(errno)))")
            }
        }
        guard maxArtifactSize > 0 else { throw ValidationError("--max-artifact-size must be a positive number of bytes") }
        _ = try ListenAddress(parsing: listenSpec)
        _ = try parseLogLevel(logLevel ?? environment("FLOTILLA_LOG_LEVEL") ?? "info")
    }

    private var listenSpec: String {
        listen ?? environment("FLOTILLA_LISTEN") ?? "0.0.0.0:8080"
    }

    func run() async throws {
        let level = try parseLogLevel(logLevel ?? environment("FLOTILLA_LOG_LEVEL") ?? "info")
        LoggingSystem.bootstrap { label in
            var handler = BufferedLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        let address = try ListenAddress(parsing: listenSpec)
        var limits = HTTPServerLimits()
        limits.maxBodyBytes = maxBodyBytes
        limits.maxHeaderBytes = maxHeaderBytes
        limits.maxConcurrentStreams = maxConcurrentStreams
        limits.idleTimeout = .milliseconds(Int(idleTimeout * 1000))
        limits.requestHeadTimeout = .milliseconds(Int(headerTimeout * 1000))
        limits.maxConnectionsPerAddress = abuse.maxConnectionsPerAddress
        let tls = tlsCert.map { TLSServerConfiguration(certificatePath: $0, privateKeyPath: tlsKey!, clientCAPath: tlsClientCa) }
        // Installed first: a SIGTERM during start-up must still stop the embedded database.
        let signals = SignalWaiter(signals: [SIGTERM, SIGINT, SIGHUP])

        let opened: OpenDatabase
        do {
            opened = try database.open(log: say)
        } catch {
            throw ValidationError("cannot start: \(error)")
        }
        let pool = PGPool(PGPool.Configuration(connection: opened.options, size: database.dbPoolSize))
        let server: HTTPServer
        let context: APIContext
        do {
            let directory = artifactDir ?? environment("FLOTILLA_ARTIFACT_DIR") ?? database.resolvedDataDir + "/artifacts"
            let keyPath = signingKey ?? environment("FLOTILLA_SIGNING_KEY") ?? database.resolvedDataDir + "/signing-key"
            let key = try loadOrCreateSigningKey(keyPath, log: say)
            let nextPath = signingKeyNext ?? environment("FLOTILLA_SIGNING_KEY_NEXT") ?? database.resolvedDataDir + "/signing-key.next"
            let next = try loadSigningKey(nextPath)
            if signingKeyNext != nil && next == nil { throw ValidationError("--signing-key-next \(nextPath): no such file") }
            if let next { say("announcing the next manifest key \(Ed25519.keyID(next.publicKey)) (\(nextPath))") }
            context = try APIContext(db: pool, logger: Logger(label: "flotilla.http"),
                                           artifacts: try ArtifactStore(directory: directory, maxBytes: maxArtifactSize),
                                           listen: opened.options, signer: ManifestSigner(key: key, next: next), limits: try abuse.rateLimits(),
                                           deviceCertificates: tlsClientCa != nil)
        } catch {
            pool.close()
            opened.cluster?.stop()
            throw ValidationError("cannot start: \(error)")
        }
        do {
            try opened.bootstrapAdminToken(dataDir: database.resolvedDataDir, log: say)
            try applyFlowFiles(opened.options)
            server = try HTTPServer(
                configuration: .init(host: address.host, port: address.port, tls: tls, limits: limits, loopCount: loops),
                router: FlotillaAPI.makeRouter(context: context))
            let bound = try server.start()
            say("listening on \(server.scheme)://\(bound)")
        } catch {
            // A clear one-line reason (port in use, unreadable key…), not a stack trace.
            context.stop()
            pool.close()
            opened.cluster?.stop()
            throw ValidationError("cannot start: \(error)")
        }

        let sweeper = startSweeper(context)
        var signal = await signals.next()
        while signal == SIGHUP {
            // Certificate renewal (certbot, cert-manager): new connections get the new files.
            do {
                try server.reloadTLS()
                say(tls == nil ? "received SIGHUP; no TLS to reload" : "received SIGHUP, reloaded the TLS certificate and key")
            } catch {
                say("received SIGHUP, kept the old TLS certificate: \(error)")
            }
            signal = await signals.next()
        }
        say("received \(signal == SIGTERM ? "SIGTERM" : "SIGINT"), finishing in-flight requests")
        sweeper.cancel()
        // Waiting polls first (204, retry soon), so the drain below is not spent holding them
        // and none meets a closed pool.
        context.beginDrain()
        await server.shutdown(gracePeriod: .milliseconds(Int(shutdownGrace * 1000)))
        context.stop()
        pool.close()
        if let cluster = opened.cluster {
            cluster.stop()
            say("stopped the embedded PostgreSQL")
        }
        say("stopped")
    }
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending database migrations, then exit.")

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let opened: OpenDatabase
        do {
            opened = try database.open(log: say)
        } catch {
            throw ValidationError("migration failed: \(error)")
        }
        opened.cluster?.stop()
        say("migrations are up to date")
    }
}

func parseLogLevel(_ text: String) throws -> Logger.Level {
    guard let level = Logger.Level(rawValue: text.lowercased()) else {
        throw ValidationError("unknown log level '\(text)'; use trace, debug, info, notice, warning, error or critical")
    }
    return level
}

struct ListenAddress {
    let host: String
    let port: Int

    /// "HOST:PORT", "[IPv6]:PORT" or ":PORT".
    init(parsing text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw ValidationError("--listen wants HOST:PORT (e.g. 0.0.0.0:8080), got '\(text)'")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
    }
}

/// One unbuffered line on stdout: scripts and tests wait for `listening on …`, and a
/// pipe would otherwise hold it in stdio's buffer.
func say(_ line: String) {
    LogOutput.shared.flush()  // log lines written before this one come out before it
    var bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(STDOUT_FILENO, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { return }
        offset += n
    }
}
