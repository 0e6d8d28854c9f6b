// One accepted connection: picks the protocol, then forwards the channel's events to it.
//
// Plaintext: the first 24 bytes decide — the HTTP/2 client preface means h2c (prior
// knowledge), anything else is HTTP/1.1 (whose parser answers garbage with a 400).
// TLS: ALPN decides; a client that offered no ALPN is sniffed like plaintext.

#if canImport(Glibc)
import Glibc
#endif

private let http2Preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

final class ServerConnection: ChannelHandler, @unchecked Sendable {
    private enum Phase {
        case detecting(ByteBuffer)
        case serving(any ServerProtocolHandler)
    }

    private let context: ServerContext
    private unowned let registry: ConnectionRegistry
    private var phase = Phase.detecting(ByteBuffer())
    private(set) var channel: SocketChannel!
    private let acceptedAt = monotonicNanos()
    private var shuttingDown = false

    init(context: ServerContext, registry: ConnectionRegistry) {
        self.context = context
        self.registry = registry
    }

    func attach(_ channel: SocketChannel) { self.channel = channel }

    func channelActive(_ channel: SocketChannel) {
        switch channel.negotiatedProtocol {
        case "h2": select(HTTP2ServerHandler(channel: channel, context: context))
        case "http/1.1": select(HTTP1ServerHandler(channel: channel, context: context))
        default: break  // plaintext or no ALPN: wait for the first bytes
        }
    }

    private func select(_ handler: any ServerProtocolHandler) {
        phase = .serving(handler)
        if shuttingDown { handler.beginGracefulShutdown() }
    }

    func channelRead(_ channel: SocketChannel, _ bytes: UnsafeRawBufferPointer) {
        switch phase {
        case .serving(let handler):
            handler.received(bytes)
        case .detecting(var buffered):
            buffered.append(bytes)
            let decided: (any ServerProtocolHandler)? = buffered.withReadableBytes { raw in
                let prefix = min(raw.count, http2Preface.count)
                if !raw[0..<prefix].elementsEqual(http2Preface[0..<prefix]) {
                    return HTTP1ServerHandler(channel: channel, context: context)
                }
                return raw.count >= http2Preface.count ? HTTP2ServerHandler(channel: channel, context: context) : nil
            }
            guard let decided else {
                phase = .detecting(buffered)
                return
            }
            select(decided)
            buffered.withReadableBytes { decided.received($0) }
        }
    }

    func channelReadComplete(_ channel: SocketChannel) {
        if case .serving(let handler) = phase { handler.readComplete() }
    }

    func channelInputClosed(_ channel: SocketChannel) {
        if case .serving(let handler) = phase { handler.inputClosed() } else { channel.close() }
    }

    func channelWritabilityRestored(_ channel: SocketChannel) {
        if case .serving(let handler) = phase { handler.writabilityRestored() }
    }

    func channelClosed(_ channel: SocketChannel, error: (any Error)?) {
        if case .serving(let handler) = phase { handler.connectionClosed() }
        phase = .detecting(ByteBuffer())  // drops the protocol handler (and its nghttp2 session)
        registry.remove(self)
    }

    func tick(now: UInt64) {
        switch phase {
        case .serving(let handler):
            handler.tick(now: now)
        case .detecting:
            // Neither a preface nor a request line in time (this also bounds a stalled TLS handshake
            // and a client that connects and says nothing).
            if now &- acceptedAt > min(context.headTimeoutNanos, context.idleTimeoutNanos) { channel.close() }
        }
    }

    func beginGracefulShutdown() {
        shuttingDown = true
        switch phase {
        case .serving(let handler):
            handler.beginGracefulShutdown()
            channel.flush()
        case .detecting:
            channel.close()
        }
    }
}

/// The connections of one event loop, and the timer that checks their timeouts. Loop-confined.
final class ConnectionRegistry: @unchecked Sendable {
    let loop: any EventLoop
    private let context: ServerContext
    private var connections: [ObjectIdentifier: ServerConnection] = [:]
    private var ticker: (any Cancellable)?
    private let tickInterval: Duration
    private var shuttingDown = false
    let openCount: AtomicCounter
    private let perAddress: AddressCounts

    init(loop: any EventLoop, context: ServerContext, openCount: AtomicCounter, perAddress: AddressCounts) {
        self.loop = loop
        self.context = context
        self.openCount = openCount
        self.perAddress = perAddress
        // Timeouts are checked by one sweep per loop rather than one timer per connection:
        // cheaper with thousands of idle connections, at the cost of this much resolution.
        let shortest = min(context.limits.idleTimeout, context.limits.requestHeadTimeout)
        tickInterval = max(.milliseconds(50), min(.seconds(1), shortest / 4))
    }

    func add(fd: Int32, peer: SocketAddress, tls: TLSContext?) {
        loop.assertInLoop()
        let connection = ServerConnection(context: context, registry: self)
        let session: TLSSession?
        do {
            session = try tls.map { try TLSSession(context: $0, isServer: true) }
        } catch {
            close(fd)
            perAddress.release(peer.host)
            return
        }
        let channel = SocketChannel(fd: fd, loop: loop, peer: peer, tls: session, handler: connection)
        connection.attach(channel)
        connections[ObjectIdentifier(connection)] = connection
        _ = openCount.increment()
        channel.start()
        if shuttingDown { connection.beginGracefulShutdown() }
        if ticker == nil { scheduleTick() }
    }

    func remove(_ connection: ServerConnection) {
        if connections.removeValue(forKey: ObjectIdentifier(connection)) != nil {
            _ = openCount.decrement()
            if let host = connection.channel.peer?.host { perAddress.release(host) }
        }
    }

    private func scheduleTick() {
        ticker = loop.schedule(after: tickInterval) { [self] in
            let now = monotonicNanos()
            for connection in Array(connections.values) { connection.tick(now: now) }
            if connections.isEmpty { ticker = nil } else { scheduleTick() }
        }
    }

    func beginGracefulShutdown() {
        shuttingDown = true
        for connection in Array(connections.values) { connection.beginGracefulShutdown() }
    }

    func closeAll() {
        for connection in Array(connections.values) { connection.channel.close() }
    }
}
