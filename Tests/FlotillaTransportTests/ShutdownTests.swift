import Foundation
import XCTest
@testable import FlotillaTransport

final class ShutdownTests: XCTestCase {
    func testInFlightRequestsFinishAndNewConnectionsAreRefused() async throws {
        let server = try TestServer()
        let client = try await HTTP2Client.connect(to: server.url)
        let h1 = try RawSocket(port: server.port)
        async let h2Slow = client.get("/slow?ms=500")
        h1.send("GET /slow?ms=500 HTTP/1.1\r\nHost: x\r\n\r\n")
        try await waitFor { server.probe.running == 2 }  // both requests are in their handlers

        await server.server.shutdown(gracePeriod: .seconds(5))
        XCTAssertEqual(server.server.openConnectionCount, 0)

        let h2Response = try await h2Slow
        XCTAssertEqual(h2Response.status, 200)
        let h1Response = try XCTUnwrap(h1.readResponse())
        XCTAssertEqual(h1Response.status, 200)
        XCTAssertEqual(h1Response.headers["connection"], "close", "the last response says the connection ends")
        XCTAssertTrue(h1.isClosedByPeer())
        XCTAssertThrowsError(try RawSocket(port: server.port), "the listener is closed")
        do {
            _ = try await client.get("/healthz")
            XCTFail("the HTTP/2 connection should be gone after GOAWAY")
        } catch is HTTPClientError {}
    }

    func testGracePeriodBoundsTheWait() async throws {
        let server = try TestServer()
        let client = try await HTTP2Client.connect(to: server.url)
        async let stuck = client.get("/slow?ms=10000")
        try await waitFor { server.probe.running == 1 }
        await server.server.shutdown(gracePeriod: .milliseconds(300))
        do {
            _ = try await stuck
            XCTFail("a request past the grace period cannot succeed")
        } catch is HTTPClientError {}
        XCTAssertEqual(server.server.openConnectionCount, 0)
    }
}
