// Test support: real servers on 127.0.0.1 port 0, raw sockets, subprocesses. No mocks.

import Foundation
import XCTest
@_exported import FlotillaTestSupport
@testable import FlotillaTransport

/// Routes the transport tests need besides the product's: echo, slow, big, concurrency probe.
enum TestRoutes {
    static func router(probe: ConcurrencyProbe = ConcurrencyProbe()) -> Router {
        var router = Router()
        router.get("/healthz") { _ in .json(200, #"{"status":"ok"}"#) }
        router.post("/echo") { request in
            HTTPResponse(status: 200, headers: ["content-type": "application/octet-stream",
                                                "x-body-length": String(request.body.count),
                                                "x-body-checksum": String(checksum(request.body))],
                         body: request.body)
        }
        router.get("/slow") { request in
            let ms = Int(request.queryParameters["ms"] ?? "100") ?? 100
            probe.enter()
            defer { probe.leave() }
            try await Task.sleep(for: .milliseconds(ms))
            return .json(200, #"{"slept":\#(ms)}"#)
        }
        router.get("/bytes") { request in
            let n = Int(request.queryParameters["n"] ?? "0") ?? 0
            return HTTPResponse(status: 200, body: [UInt8](repeating: UInt8(ascii: "x"), count: n))
        }
        router.get("/devices/{id}") { request in
            .json(200, #"{"id":"\#(request.pathParameters["id"] ?? "")"}"#)
        }
        router.get("/headers") { request in
            .json(200, #"{"count":\#(request.headers.count),"x-test":"\#(request.headers["x-test"] ?? "")","host":"\#(request.headers["host"] ?? "")"}"#)
        }
        return router
    }
}

/// Counts handlers running at once, to see the server's stream limit from the inside.
/// Also what a test waits on instead of a fixed sleep: handlers running now, and finished.
final class ConcurrencyProbe: @unchecked Sendable {
    private let lock = NSLock()
    private var current = 0
    private var highest = 0
    private var done = 0
    var peak: Int { lock.withLock { highest } }
    var running: Int { lock.withLock { current } }
    var finished: Int { lock.withLock { done } }
    func enter() { lock.withLock { current += 1; highest = max(highest, current) } }
    func leave() { lock.withLock { current -= 1; done += 1 } }
}

func checksum(_ bytes: [UInt8]) -> UInt64 {
    // FNV-1a: enough to prove the bytes arrived intact and in order.
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
    return hash
}

/// An in-process server on 127.0.0.1:0.
final class TestServer {
    let server: HTTPServer
    let port: Int
    /// The default routes' probe: how many /slow handlers run or have finished.
    let probe: ConcurrencyProbe
    var url: String { "\(server.scheme)://127.0.0.1:\(port)" }

    convenience init(limits: HTTPServerLimits = .init(), tls: TLSServerConfiguration? = nil) throws {
        let probe = ConcurrencyProbe()
        try self.init(limits: limits, tls: tls, router: TestRoutes.router(probe: probe), probe: probe)
    }

    init(limits: HTTPServerLimits = .init(), tls: TLSServerConfiguration? = nil,
         router: Router, probe: ConcurrencyProbe = ConcurrencyProbe()) throws {
        self.probe = probe
        server = try HTTPServer(configuration: .init(host: "127.0.0.1", port: 0, tls: tls, limits: limits, loopCount: 2),
                                router: router)
        port = try server.start().port
    }

    func stop() async { await server.shutdown(gracePeriod: .seconds(2)) }

    /// Waits until every connection the server had is gone (closing is asynchronous).
    func waitForNoConnections(timeout: TimeInterval = 5) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while server.openConnectionCount > 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(server.openConnectionCount, 0, "connections left open")
    }
}
