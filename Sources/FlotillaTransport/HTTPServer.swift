// The listening side: binds, accepts with accept4 on a queue of its own, hands each
// connection to an event loop (round robin), and shuts down gracefully.

import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public final class HTTPServer: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var tls: TLSServerConfiguration?
        public var limits: HTTPServerLimits
        public var loopCount: Int

        public init(host: String = "0.0.0.0", port: Int = 8080, tls: TLSServerConfiguration? = nil,
                    limits: HTTPServerLimits = .init(), loopCount: Int = EventLoopGroup.defaultLoopCount) {
            self.host = host
            self.port = port
            self.tls = tls
            self.limits = limits
            self.loopCount = loopCount
        }
    }

    public let configuration: Configuration
    private let context: ServerContext
    private let group: EventLoopGroup
    private let registries: [ConnectionRegistry]
    /// Swapped by `reloadTLS` (SIGHUP); each connection keeps the context it started with.
    private let tlsContext: Mutex<TLSContext?>
    private let acceptQueue = DispatchQueue(label: "flotilla.accept")
    private var listener: Int32 = -1
    private var acceptSource: (any DispatchSourceRead)?
    private let openConnections = AtomicCounter()
    private let acceptedConnections = AtomicCounter()
    private let refusedConnections = AtomicCounter()
    private let perAddress = AddressCounts()
    private var nextRegistry = 0
    public private(set) var localAddress: SocketAddress?

    public init(configuration: Configuration, router: Router) throws {
        self.configuration = configuration
        context = ServerContext(router: router, limits: configuration.limits)
        group = EventLoopGroup(loopCount: configuration.loopCount)
        tlsContext = Mutex(try configuration.tls.map(TLSContext.server))
        registries = group.loops.map { [context, openConnections, perAddress] in
            ConnectionRegistry(loop: $0, context: context, openCount: openConnections, perAddress: perAddress)
        }
    }

    /// "http" or "https".
    public var scheme: String { configuration.tls == nil ? "http" : "https" }

    /// Connections currently open (for tests and metrics).
    public var openConnectionCount: Int { openConnections.current }

    /// Connections accepted since start (for tests and metrics).
    public var acceptedConnectionCount: Int { acceptedConnections.current }

    /// Connections closed at accept because their address had its cap (for tests and metrics).
    public var refusedConnectionCount: Int { refusedConnections.current }

    /// Binds and starts accepting. Returns the bound address (port 0 picks a free port).
    @discardableResult
    public func start() throws -> SocketAddress {
        Socket.ignoreSIGPIPE()
        let address = try SocketAddress(host: configuration.host, port: configuration.port)
        listener = try Socket.listen(on: address)
        let bound = try Socket.localAddress(listener)
        localAddress = bound
        let source = DispatchSource.makeReadSource(fileDescriptor: listener, queue: acceptQueue)
        source.setEventHandler { [unowned self] in self.acceptPending() }
        let fd = listener
        source.setCancelHandler { close(fd) }
        acceptSource = source
        source.activate()
        return bound
    }

    private func acceptPending() {
        // Drain the backlog: one event can stand for many pending connections.
        while let (fd, peer) = Socket.accept(listener) {
            guard perAddress.tryAcquire(peer.host, cap: configuration.limits.maxConnectionsPerAddress) else {
                // Closed before any byte is read: the cheapest refusal there is. Counted first,
                // so whoever sees the close also sees the count.
                _ = refusedConnections.increment()
                close(fd)
                continue
            }
            _ = acceptedConnections.increment()
            let registry = registries[nextRegistry % registries.count]
            nextRegistry &+= 1
            let tls = tlsContext.withLock { $0 }
            registry.loop.execute { registry.add(fd: fd, peer: peer, tls: tls) }
        }
    }

    /// Reads the certificate, key (and client CA) files again; new connections use them,
    /// open ones keep theirs, nothing is dropped. On error the old ones stay in use.
    public func reloadTLS() throws {
        guard let tls = configuration.tls else { return }
        let fresh = try TLSContext.server(tls)
        tlsContext.withLock { $0 = fresh }
    }

    /// Stops accepting, asks every connection to finish what is in flight (HTTP/2: GOAWAY),
    /// waits up to `gracePeriod`, then closes whatever is left.
    public func shutdown(gracePeriod: Duration = .seconds(10)) async {
        acceptQueue.sync {
            acceptSource?.cancel()
            acceptSource = nil
        }
        for registry in registries {
            registry.loop.execute { registry.beginGracefulShutdown() }
        }
        let deadline = ContinuousClock.now + gracePeriod
        while openConnections.current > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for registry in registries {
            registry.loop.execute { registry.closeAll() }
        }
        while openConnections.current > 0 {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
