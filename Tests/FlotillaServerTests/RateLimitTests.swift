// Request-rate limits through the real server: per device and per token, a 429 with
// Retry-After once the burst is spent, other callers unaffected, and the bucket refilled
// after the wait it named.

import FlotillaAPI
import FlotillaCore
import XCTest

final class RateLimitTests: XCTestCase {
    /// The ranges of a download are not API calls: they have a bucket of their own (20 times
    /// the device's), so a big artifact in chunks is not throttled like polls, and a download
    /// leaves the device's polls and reports their own bucket.
    func testADownloadsRangesDoNotSpendTheDevicesRequestBudget() async throws {
        let server = try APIServer(limits: RateLimits(device: RateLimit(perSecond: 0.5, burst: 3)))
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        try await admin.prepareHardhatModel()
        let device = try await ScriptedDevice(server: server, admin: admin, name: "cam-1", groups: ["site-berlin"])
        expect(try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#)), 201)
        let handed = try await device.next()  // one of the device's 3
        XCTAssertNotNil(handed)
        var statuses: [Int] = []
        for chunk in 0..<20 {
            let range = "bytes=\(chunk * 50)-\(chunk * 50 + 49)"
            statuses.append(try await device.client.call("GET", "/api/v1/agent/artifacts/\(sampleSHA)", headers: ["range": range]).status)
        }
        XCTAssertEqual(statuses, Array(repeating: 206, count: 20), "\(statuses)")
        expect(try await device.client.call("GET", "/api/v1/agent/next"), 200)  // the device's own bucket still has 2
        for client in [admin, device.client] { await client.close() }
        await server.stop()
    }

    func testDevicesAndTokensAreLimitedEachOnItsOwn() async throws {
        // Slow refills (one request per 2 s) so a busy machine cannot refill a bucket mid-burst.
        let server = try APIServer(limits: RateLimits(device: RateLimit(perSecond: 0.5, burst: 3), token: RateLimit(perSecond: 0.5, burst: 20),
                                                      enrollment: RateLimit(perSecond: 0.5, burst: 1)))
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        let first = try await ScriptedDevice(server: server, admin: admin, name: "cam-1")
        let second = try await ScriptedDevice(server: server, admin: admin, name: "cam-2")
        for _ in 0..<3 { expect(try await first.client.call("GET", "/api/v1/agent/next"), 204) }
        let limited = try await first.client.call("GET", "/api/v1/agent/next")
        expect(limited, 429, code: "rate_limited")
        XCTAssertEqual(limited.headers["retry-after"], "2")
        expect(try await second.client.call("GET", "/api/v1/agent/next"), 204)  // another device: its own bucket
        try await Task.sleep(for: .milliseconds(2100))
        expect(try await first.client.call("GET", "/api/v1/agent/next"), 204)  // refilled after Retry-After

        // A token: the admin has used 2 of its 20 (the registrations); a viewer its own.
        let viewer = try await admin.call("POST", "/api/v1/tokens", #"{"name":"dash","role":"viewer"}"#)
        let dashboard = APIClient(port: server.port, token: viewer.json["secret"]?.stringValue, wire: .h1)
        var statuses: [Int] = []
        for _ in 0..<22 { statuses.append(try await dashboard.call("GET", "/api/v1/groups").status) }
        XCTAssertEqual(statuses.filter { $0 == 200 }.count, 20, "\(statuses)")
        XCTAssertEqual(statuses.suffix(2), [429, 429])
        expect(try await admin.call("GET", "/api/v1/groups"), 200)

        // An enrollment token: one enrollment, then wait.
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"field"}"#), 201)
        let created = try await admin.call("POST", "/api/v1/enrollment-tokens", #"{"name":"day","group":"field","max_uses":5}"#)
        let enroller = APIClient(port: server.port, token: created.json["secret"]?.stringValue, wire: .h1)
        expect(try await enroller.call("POST", "/api/v1/agent/enroll", #"{"name":"s-1"}"#), 201)
        expect(try await enroller.call("POST", "/api/v1/agent/enroll", #"{"name":"s-2"}"#), 429, code: "rate_limited")
        for client in [admin, dashboard, enroller, first.client, second.client] { await client.close() }
        await server.stop()
    }

    /// An address that keeps presenting bad tokens is answered 429 before any lookup —
    /// for a while every request from it, a good token's too — and recovers once its
    /// bucket refills.
    func testRefusedTokensFromOneAddressAreSlowedDown() async throws {
        let server = try APIServer(limits: RateLimits(refusedAuthentication: RateLimit(perSecond: 0.5, burst: 3)))
        let guesser = APIClient(port: server.port, token: "flt_a_guess", wire: .h1)
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        for _ in 0..<3 { expect(try await guesser.call("GET", "/api/v1/groups"), 401, code: "invalid_token") }
        let slowed = try await guesser.call("GET", "/api/v1/groups")
        expect(slowed, 429, code: "rate_limited")
        XCTAssertNotNil(slowed.headers["retry-after"])
        expect(try await admin.call("GET", "/api/v1/groups"), 429, code: "rate_limited")  // same address
        try await Task.sleep(for: .milliseconds(2100))
        expect(try await admin.call("GET", "/api/v1/groups"), 200)
        for client in [guesser, admin] { await client.close() }
        await server.stop()
    }
}
