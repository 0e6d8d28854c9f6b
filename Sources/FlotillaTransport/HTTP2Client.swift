// Our own HTTP/2 client, for the agent, the CLI and the tests: h2c or TLS (ALPN h2),
// many concurrent requests multiplexed on one connection, a timeout per request,
// request bodies from memory or streamed from a file.
//
// The public type is a thin Sendable handle; the connection state lives in
// `HTTP2ClientConnection`, on one event loop, like a server connection.

import Dispatch

public struct ClientRequest: Sendable {
    public enum Body: Sendable {
        case none
        case bytes([UInt8])
        /// Streamed from disk in chunks, never held whole in memory (artifact uploads).
        case file(path: String)
    }

    public var method: String
    public var path: String
    public var headers: HTTPHeaders
    public var body: Body
    /// Called on the connection's loop with the request-body bytes handed to HTTP/2 so far
    /// (the CLI's upload progress bar). Keep it cheap: it runs once per DATA frame.
    public var bodyProgress: (@Sendable (Int) -> Void)?

    public init(method: String = "GET", path: String, headers: HTTPHeaders = [:], body: Body = .none,
                bodyProgress: (@Sendable (Int) -> Void)? = nil) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.bodyProgress = bodyProgress
    }
}

public struct ClientResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    public var bodyText: String { String(decoding: body, as: UTF8.self) }

    public init(status: Int, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

public enum HTTPClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidURL(String)
    case connectFailed(String)
    case tlsFailed(String)
    case timedOut
    case connectionClosed(String)
    case streamReset(errorCode: UInt32)
    case bodyReadFailed(String)
    case responseTooLarge(Int)

    public var description: String {
        switch self {
        case .invalidURL(let url): "invalid URL '\(url)' (expected http://HOST:PORT or https://HOST:PORT)"
        case .connectFailed(let why): "cannot connect: \(why)"
        case .tlsFailed(let why): "TLS failed: \(why)"
        case .timedOut: "the request timed out"
        case .connectionClosed(let why): "connection closed: \(why)"
        case .streamReset(let code): "the server reset the stream (HTTP/2 error code \(code))"
        case .bodyReadFailed(let why): "cannot read the request body: \(why)"
        case .responseTooLarge(let limit): "response body larger than \(limit) bytes"
        }
    }
}

public final class HTTP2Client: Sendable {
    private let connection: HTTP2ClientConnection
    public let authority: String

    private init(connection: HTTP2ClientConnection, authority: String) {
        self.connection = connection
        self.authority = authority
    }

    deinit {
        // A client dropped without close() must not leak its socket.
        let connection = self.connection
        connection.loop.execute { connection.close(nil) }
    }

    /// Connects to `url` ("http://host:port" for h2c with prior knowledge, "https://…" for TLS).
    public static func connect(to url: String, tls: TLSClientConfiguration = .init(),
                               timeout: Duration = .seconds(10),
                               maxResponseBytes: Int = 64 * 1024 * 1024,
                               group: EventLoopGroup = .shared) async throws -> HTTP2Client {
        let target = try ClientTarget(url)
        let address: SocketAddress = try await withCheckedThrowingContinuation { continuation in
            // getaddrinfo blocks: never on an event loop.
            DispatchQueue.global().async {
                continuation.resume(with: Result {
                    do { return try SocketAddress(host: target.host, port: target.port) } catch {
                        throw HTTPClientError.connectFailed("\(error)")
                    }
                })
            }
        }
        let tlsContext: TLSContext?
        do {
            tlsContext = try target.secure ? TLSContext.client(tls) : nil
        } catch {
            throw HTTPClientError.tlsFailed("\(error)")
        }
        let loop = group.next()
        let connection = HTTP2ClientConnection(loop: loop, scheme: target.secure ? "https" : "http",
                                               authority: target.authority, maxResponseBytes: maxResponseBytes)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            loop.execute {
                connection.connect(to: address, tls: tlsContext, serverName: target.host,
                                   timeout: timeout, continuation: continuation)
            }
        }
        return HTTP2Client(connection: connection, authority: target.authority)
    }

    /// Sends one request and waits for the whole response, at most `timeout`.
    public func send(_ request: ClientRequest, timeout: Duration = .seconds(30)) async throws -> ClientResponse {
        let connection = self.connection
        return try await withCheckedThrowingContinuation { continuation in
            connection.loop.execute {
                connection.start(request, timeout: timeout, continuation: continuation)
            }
        }
    }

    public func get(_ path: String, headers: HTTPHeaders = [:], timeout: Duration = .seconds(30)) async throws -> ClientResponse {
        try await send(ClientRequest(method: "GET", path: path, headers: headers), timeout: timeout)
    }

    /// Closes the connection; requests still in flight fail with `connectionClosed`.
    public func close() async {
        let connection = self.connection
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            connection.loop.execute { connection.close(continuation) }
        }
    }
}

/// scheme://host[:port] → the pieces a connection needs.
struct ClientTarget {
    let secure: Bool
    let host: String
    let port: Int
    let authority: String

    init(_ url: String) throws {
        let secure: Bool
        var rest: Substring
        if url.hasPrefix("https://") {
            secure = true
            rest = url.dropFirst(8)
        } else if url.hasPrefix("http://") {
            secure = false
            rest = url.dropFirst(7)
        } else {
            throw HTTPClientError.invalidURL(url)
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        var host = rest
        var port = secure ? 443 : 80
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()) else { throw HTTPClientError.invalidURL(url) }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let p = Int(rest[rest.index(after: colon)...]) else { throw HTTPClientError.invalidURL(url) }
            port = p
        }
        guard !host.isEmpty, (1...65535).contains(port) else { throw HTTPClientError.invalidURL(url) }
        self.secure = secure
        self.host = String(host)
        self.port = port
        authority = String(rest)
    }
}
