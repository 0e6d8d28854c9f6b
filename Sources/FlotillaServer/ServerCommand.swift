// `flotilla-server`: parses its flags, starts the HTTP server, prints one
// `listening on …` line for scripts and tests, and shuts down gracefully on SIGTERM/SIGINT.

import ArgumentParser
import FlotillaAPI
import FlotillaCore
import FlotillaTransport
#if canImport(Glibc)
import Glibc
#endif

@main
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-server",
        abstract: "Flotilla: fleet device management for over-the-air update flows.",
        version: FlotillaVersion.current)

    @Option(help: "HOST:PORT to listen on; port 0 picks a free port. Env: FLOTILLA_LISTEN. Default 0.0.0.0:8080.")
    var listen: String?

    @Option(help: "PEM certificate chain; with --tls-key serves HTTPS (ALPN h2, http/1.1).")
    var tlsCert: String?

    @Option(help: "PEM private key for --tls-cert.")
    var tlsKey: String?

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

    func validate() throws {
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        _ = try ListenAddress(parsing: listenSpec)
    }

    private var listenSpec: String {
        listen ?? getenv("FLOTILLA_LISTEN").map { String(cString: $0) } ?? "0.0.0.0:8080"
    }

    func run() async throws {
        let address = try ListenAddress(parsing: listenSpec)
        var limits = HTTPServerLimits()
        limits.maxBodyBytes = maxBodyBytes
        limits.maxHeaderBytes = maxHeaderBytes
        limits.maxConcurrentStreams = maxConcurrentStreams
        limits.idleTimeout = .milliseconds(Int(idleTimeout * 1000))
        limits.requestHeadTimeout = .milliseconds(Int(headerTimeout * 1000))
        let tls = tlsCert.map { TLSServerConfiguration(certificatePath: $0, privateKeyPath: tlsKey!) }
        let signals = SignalWaiter(signals: [SIGTERM, SIGINT])

        let server: HTTPServer
        do {
            server = try HTTPServer(
                configuration: .init(host: address.host, port: address.port, tls: tls, limits: limits, loopCount: loops),
                router: FlotillaAPI.makeRouter())
            let bound = try server.start()
            say("listening on \(server.scheme)://\(bound)")
        } catch {
            // A clear one-line reason (port in use, unreadable key…), not a stack trace.
            throw ValidationError("cannot start: \(error)")
        }

        let signal = await signals.next()
        say("received \(signal == SIGTERM ? "SIGTERM" : "SIGINT"), finishing in-flight requests")
        await server.shutdown(gracePeriod: .milliseconds(Int(shutdownGrace * 1000)))
        say("stopped")
    }
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
    var bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(STDOUT_FILENO, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { return }
        offset += n
    }
}
