// The per-address connection cap: beyond it a new connection is closed at accept, before
// a byte is read; closing one makes room again.

import Foundation
import XCTest
@testable import FlotillaTransport
import FlotillaTestSupport

final class ConnectionCapTests: XCTestCase {
    func testConnectionsBeyondTheCapAreClosedAtAccept() async throws {
        var limits = HTTPServerLimits()
        limits.maxConnectionsPerAddress = 3
        let server = try TestServer(limits: limits)
        var open: [RawSocket] = []
        for _ in 0..<3 {
            let socket = try RawSocket(port: server.port)
            socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            XCTAssertEqual(socket.readResponse()?.status, 200)
            open.append(socket)
        }
        let refused = try RawSocket(port: server.port)  // the kernel completes the handshake; the server then closes it
        refused.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertNil(refused.readResponse(), "a fourth connection from the same address gets no answer")
        XCTAssertTrue(refused.isClosedByPeer())
        XCTAssertEqual(server.server.refusedConnectionCount, 1)
        XCTAssertEqual(server.server.openConnectionCount, 3)

        // One closes: room for one more.
        open.removeFirst()
        let deadline = Date().addingTimeInterval(5)
        while server.server.openConnectionCount > 2 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        let again = try RawSocket(port: server.port)
        again.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(again.readResponse()?.status, 200)
        open.removeAll()
        await server.stop()
    }
}
