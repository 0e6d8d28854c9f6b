import XCTest
@testable import FlotillaTransport

final class HTTP2ClientTests: XCTestCase {
    func testH2cRequestThroughOurClient() async throws {
        let server = try TestServer()
        let client = try await HTTP2Client.connect(to: server.url)
        let response = try await client.get("/healthz")
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.bodyText, #"{"status":"ok"}"#)
        XCTAssertEqual(response.headers["content-type"], "application/json")
        await client.close()
        await server.stop()
    }
}
