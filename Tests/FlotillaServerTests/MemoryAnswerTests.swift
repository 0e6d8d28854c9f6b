// Answers given on the event loop from memory (a cached token and a cached device; see
// Sources/FlotillaAPI/MemoryAnswers.swift) keep every check the async path makes: expiry,
// revocation, the rate limit, the request id.

import FlotillaAPI
import FlotillaCore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

final class MemoryAnswerTests: ServerTestCase {
    override var usesManualClock: Bool { true }

    /// A viewer token and a device, both cached on `server`: the next GET is answered from memory.
    private func cachedViewer(on server: APIServer, admin: APIClient, device name: String = "cam-m", expiresIn: Int? = nil) async throws -> (APIClient, String, String) {
        try await server.waitUntilListening()
        let expiry = expiresIn.map { #","expires_in":\#($0)"# } ?? ""
        let created = try await admin.call("POST", "/api/v1/tokens", #"{"name":"watcher","role":"viewer"\#(expiry)}"#)
        let secret = try XCTUnwrap(created.json["secret"]?.stringValue, created.text)
        let device = try await admin.call("POST", "/api/v1/devices", #"{"name":"\#(name)"}"#)
        let id = try XCTUnwrap(device.json["device"]?["id"]?.stringValue)
        let viewer = APIClient(port: server.port, token: secret, wire: .h1)
        try await eventually("token and device cached") {
            expect(try await viewer.call("GET", "/api/v1/devices/\(id)"), 200)
            return server.api.cachesTokenForTesting(secret) && server.api.cachesDeviceForTesting(id)
        }
        return (viewer, secret, id)
    }

    func testAnExpiredOrRevokedTokenIsRefusedThoughEverythingIsCached() async throws {
        let (viewer, secret, id) = try await cachedViewer(on: server, admin: admin, expiresIn: 60)
        let first = try await viewer.call("GET", "/api/v1/devices/\(id)", headers: ["x-request-id": "abc-123"])
        expect(first, 200)
        XCTAssertEqual(first.json["name"], .string("cam-m"))
        XCTAssertEqual(first.headers["x-request-id"], "abc-123", "the client's request id is echoed")
        XCTAssertEqual(first.headers["etag"], "\"1\"")
        let second = try await viewer.call("GET", "/api/v1/devices/\(id)")
        XCTAssertNotNil(second.headers["x-request-id"], "or one is made")

        clock.advance(seconds: 61)
        XCTAssertTrue(server.api.cachesTokenForTesting(secret), "still cached: only the expiry check can refuse it")
        expect(try await viewer.call("GET", "/api/v1/devices/\(id)"), 401, code: "token_expired")
        await viewer.close()

        let (other, otherSecret, otherDevice) = try await cachedViewer(on: server, admin: admin, device: "cam-n")
        let tokens = try await admin.call("GET", "/api/v1/tokens").json["items"]?.arrayValue ?? []
        let otherID = try XCTUnwrap(tokens.first { $0["name"] == .string("watcher") && $0["expires_at"] == .null }?["id"]?.stringValue)
        expect(try await admin.call("POST", "/api/v1/tokens/\(otherID)/revoke"), 200)
        XCTAssertFalse(server.api.cachesTokenForTesting(otherSecret))
        // The revocation (a write) flushed this replica's device cache: warm it again.
        try await eventually("device cached again") {
            expect(try await self.admin.call("GET", "/api/v1/devices/\(otherDevice)"), 200)
            return self.server.api.cachesDeviceForTesting(otherDevice)
        }
        expect(try await other.call("GET", "/api/v1/devices/\(otherDevice)"), 401, code: "invalid_token")
        await other.close()
    }

    func testAnswersFromMemoryAreRateLimited() async throws {
        let limited = try APIServer(limits: RateLimits(token: RateLimit(perSecond: 0.2, burst: 8)))
        let admin = APIClient(port: limited.port, token: limited.adminToken, wire: .h2)
        let (viewer, _, id) = try await cachedViewer(on: limited, admin: admin)
        var statuses: [Int] = []
        for _ in 0..<10 {
            XCTAssertTrue(limited.api.cachesDeviceForTesting(id))
            let response = try await viewer.call("GET", "/api/v1/devices/\(id)")
            statuses.append(response.status)
            if response.status == 429 {
                XCTAssertEqual(response.errorCode, "rate_limited")
                XCTAssertNotNil(response.headers["retry-after"])
                XCTAssertNotNil(response.headers["x-request-id"])
            }
        }
        XCTAssertTrue(statuses.contains(429), "\(statuses)")
        XCTAssertEqual(statuses.filter { $0 != 200 && $0 != 429 }, [])
        await viewer.close()
        await admin.close()
        await limited.stop()
    }
}
