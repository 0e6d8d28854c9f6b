// What every server connection shares: the router, the limits, the Date header cache.

import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct HTTPServerLimits: Sendable {
    /// HTTP/1.1: the whole request head; HTTP/2: the header list size (RFC 9113 §6.5.2).
    public var maxHeaderBytes = 32 * 1024
    public var maxBodyBytes = 8 * 1024 * 1024
    public var maxConcurrentStreams = 100
    /// A connection with nothing in flight is closed after this long without a byte from the peer.
    public var idleTimeout: Duration = .seconds(60)
    /// A request head (or the HTTP/2 preface) must arrive in full within this long (slowloris).
    public var requestHeadTimeout: Duration = .seconds(10)
    /// HTTP/1.1 requests read ahead of their responses; reading pauses beyond this.
    public var maxPipelinedRequests = 16
    /// HTTP/2 rapid reset: a token bucket of incoming RST_STREAMs (burst, then per second).
    public var streamResetBurst = 200
    public var streamResetRatePerSecond = 33
    /// HTTP/2 stops producing output while this much is queued for the socket (slow readers).
    public var maxQueuedOutputBytes = 1024 * 1024
    /// Open connections one client address may hold (0: no cap); more are closed at accept.
    /// Clients behind one NAT or proxy share an address: raise it for them.
    public var maxConnectionsPerAddress = 256

    public init() {}
}

final class ServerContext: Sendable {
    let router: Router
    let limits: HTTPServerLimits
    let idleTimeoutNanos: UInt64
    let headTimeoutNanos: UInt64

    init(router: Router, limits: HTTPServerLimits) {
        self.router = router
        self.limits = limits
        idleTimeoutNanos = limits.idleTimeout.nanoseconds
        headTimeoutNanos = limits.requestHeadTimeout.nanoseconds
    }

    /// Routes a request whose head is in (its body may still be coming): cheap enough for the loop.
    func route(_ request: HTTPRequest) -> Router.Routed { router.route(request) }

    /// The most body a routed request may have: a streaming route's own limit, else the server's.
    func bodyLimit(_ routed: Router.Routed) -> Int {
        if case .streaming(_, _, let limit) = routed { return limit }
        return limits.maxBodyBytes
    }

    /// Runs a routed request with its body. An answer known at once (immediate route, 404,
    /// 405) is returned; otherwise the handler runs off the event loop and `completion` gets
    /// its response on `loop`. A streaming route gets `bodyStream` (or its whole `body`).
    func run(_ routed: Router.Routed, body: [UInt8], bodyStream: HTTPBodyStream? = nil, on loop: any EventLoop,
             completion: @escaping @Sendable (HTTPResponse) -> Void) -> HTTPResponse? {
        let handler: HTTPHandler
        var request: HTTPRequest
        switch routed {
        case .response(let response):
            return response
        case .handler(let routedHandler, let routedRequest):
            (handler, request) = (routedHandler, routedRequest)
            request.body = body
        case .streaming(let routedHandler, let routedRequest, let limit):
            (handler, request) = (routedHandler, routedRequest)
            request.bodyStream = bodyStream ?? .complete(body, limit: limit)
        }
        let ready = request
        Task {
            let response = await Router.run(handler, ready)
            loop.execute { completion(response) }
        }
        return nil
    }
}

/// The IMF-fixdate for `Date` headers.
enum HTTPDate {
    private static let clock = SecondClock(format: "%a, %d %b %Y %H:%M:%S GMT", utc: true)
    static var now: String { clock.now }
}

/// The current time as strftime `format` gives it, formatted at most once a second
/// (headers and log lines want it on every request; strftime is not cheap).
public final class SecondClock: Sendable {
    private let cache = Mutex<(second: Int, text: String)>((-1, ""))
    private let format: String
    private let utc: Bool

    /// `utc` false: local time (as swift-log's StreamLogHandler writes it).
    public init(format: String, utc: Bool) {
        self.format = format
        self.utc = utc
    }

    public var now: String {
        let second = time(nil)
        return cache.withLock { cached in
            if cached.second == second { return cached.text }
            var t = second
            var parts = tm()
            if utc { gmtime_r(&t, &parts) } else { localtime_r(&t, &parts) }
            var buffer = [CChar](repeating: 0, count: 64)
            let count = strftime(&buffer, buffer.count, format, &parts)
            cached = (second, String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self))
            return cached.text
        }
    }
}

/// The part of a server connection that speaks one protocol. Loop-confined.
protocol ServerProtocolHandler: AnyObject {
    func received(_ bytes: UnsafeRawBufferPointer)
    func readComplete()
    func inputClosed()
    func writabilityRestored()
    /// Periodic check of the timeouts; `now` is monotonic nanoseconds.
    func tick(now: UInt64)
    /// Stop taking new requests, finish the ones in flight, then close.
    func beginGracefulShutdown()
    /// The socket is gone: bodies still streaming to handlers break off, file reads stop.
    func connectionClosed()
}
