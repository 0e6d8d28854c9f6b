// Enrollment and device access through the real server: enrollment tokens used up,
// expired and revoked; a failed enrollment consumes nothing; devices racing for the last
// use; approval (pending → accepted / rejected); pre-authorized names; a revoked and a
// rotated device token, refused at once here and on another replica.

import FlotillaAPI
import FlotillaStore
import XCTest

final class EnrollmentTests: ServerTestCase {
    override var usesManualClock: Bool { true }

    override func setUp() async throws {
        try await super.setUp()
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"site-berlin"}"#), 201)
    }

    /// A new enrollment token's secret and id.
    private func enrollmentToken(_ fields: String = "") async throws -> (secret: String, id: String) {
        let created = try await admin.call("POST", "/api/v1/enrollment-tokens", #"{"name":"install-day","group":"site-berlin"\#(fields)}"#)
        expect(created, 201)
        return (try XCTUnwrap(created.json["secret"]?.stringValue), try XCTUnwrap(created.json["enrollment_token"]?["id"]?.stringValue))
    }

    private func enroll(_ secret: String, _ name: String) async throws -> APIResponse {
        try await Self.enroll(port: server.port, secret, name)
    }

    private static func enroll(port: Int, _ secret: String, _ name: String) async throws -> APIResponse {
        let client = APIClient(port: port, token: secret, wire: .h1)
        defer { Task { await client.close() } }
        return try await client.call("POST", "/api/v1/agent/enroll", #"{"name":"\#(name)","labels":{"site":"berlin"}}"#)
    }

    private func poll(_ token: String, on target: APIServer? = nil) async throws -> APIResponse {
        let client = APIClient(port: (target ?? server).port, token: token, wire: .h1)
        defer { Task { await client.close() } }
        return try await client.call("GET", "/api/v1/agent/next")
    }

    func testEnrollmentTokensAreUsedUpExpireAndCanBeRevoked() async throws {
        let (secret, id) = try await enrollmentToken(#","max_uses":2,"expires_in":3600"#)
        let first = try await enroll(secret, "cam-1")
        expect(first, 201)
        XCTAssertEqual(first.json["status"], .string("accepted"))
        XCTAssertEqual(first.json["device"]?["groups"], .array([.string("site-berlin")]))
        XCTAssertEqual(first.json["device"]?["labels"]?["site"], .string("berlin"))
        let key = try await admin.call("GET", "/api/v1/agent/signing-key")
        XCTAssertEqual(first.json["signing_key"], key.json, "enrollment hands out the manifest key")
        let deviceToken = try XCTUnwrap(first.json["device_token"]?.stringValue)
        expect(try await poll(deviceToken), 204)

        // A refused enrollment takes no use: the name is taken.
        expect(try await enroll(secret, "cam-1"), 409, code: "conflict")
        expect(try await enroll(secret, "cam-2"), 201)
        expect(try await enroll(secret, "cam-3"), 403, code: "enrollment_token_exhausted")
        let listed = try await admin.call("GET", "/api/v1/enrollment-tokens")
        XCTAssertEqual(listed.json["items"]?[0]?["uses"], .int(2))
        XCTAssertEqual(listed.json["items"]?[0]?["id"], .string(id))
        XCTAssertFalse(listed.text.contains(secret), "secrets are never listed")

        let (shortLived, _) = try await enrollmentToken(#","expires_in":60"#)
        clock.advance(seconds: 61)
        expect(try await enroll(shortLived, "cam-4"), 401, code: "enrollment_token_expired")

        let (revoked, revokedID) = try await enrollmentToken()
        expect(try await admin.call("POST", "/api/v1/enrollment-tokens/\(revokedID)/revoke"), 200)
        expect(try await enroll(revoked, "cam-5"), 401, code: "enrollment_token_revoked")
        expect(try await enroll("flt_e_unknown", "cam-6"), 401, code: "invalid_token")
        expect(try await enroll(deviceToken, "cam-7"), 401, code: "unauthorized")
        expect(try await poll(secret), 401, code: "unauthorized")

        // Bad input: each problem named.
        let bad = try await admin.call("POST", "/api/v1/enrollment-tokens", #"{"name":"x","group":"nowhere","max_uses":0,"expires_in":5}"#)
        expect(bad, 422)
        XCTAssertEqual(Set(bad.json["error"]?["details"]?.arrayValue?.compactMap { $0["field"]?.stringValue } ?? []),
                       ["max_uses", "expires_in"])
        expect(try await admin.call("POST", "/api/v1/enrollment-tokens", #"{"name":"x","group":"nowhere"}"#), 422)

        // Audited under the enrollment token.
        let audit = try await admin.call("GET", "/api/v1/audit")
        let enrollments = audit.json["items"]?.arrayValue?.filter { $0["path"] == .string("/api/v1/agent/enroll") } ?? []
        XCTAssertEqual(enrollments.first?["token_name"], .string("enrollment token install-day"), audit.text)
        XCTAssertEqual(enrollments.first?["token_id"], .string(id))
    }

    func testDevicesRacingForTheLastUseGetOneEnrollment() async throws {
        let (secret, _) = try await enrollmentToken(#","max_uses":1"#)
        let port = server.port
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<8 { group.addTask { try await Self.enroll(port: port, secret, "racer-\(index)").status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        XCTAssertEqual(statuses.filter { $0 == 201 }.count, 1, "\(statuses)")
        XCTAssertEqual(statuses.filter { $0 == 403 }.count, 7, "\(statuses)")
        let devices = try await admin.call("GET", "/api/v1/devices?name_prefix=racer-")
        XCTAssertEqual(devices.json["items"]?.arrayValue?.count, 1)
    }

    func testApprovalPreauthorizationRevocationAndRotation() async throws {
        let replica = try APIServer(sharing: server, clock: clock.wallClock)
        defer { Task { await replica.stop() } }
        try await server.waitUntilListening()
        try await replica.waitUntilListening()
        let (secret, _) = try await enrollmentToken(#","max_uses":5,"require_approval":true"#)

        // Pending: refused, not targeted, until accepted.
        let pending = try await enroll(secret, "cam-a")
        expect(pending, 201)
        XCTAssertEqual(pending.json["status"], .string("pending"))
        let token = try XCTUnwrap(pending.json["device_token"]?.stringValue)
        let waiting = try await poll(token)
        expect(waiting, 403, code: "device_pending")
        XCTAssertEqual(waiting.headers["retry-after"], "60")
        _ = try await admin.applyFlowFile("hardhat-model.yaml")
        try await admin.uploadSampleArtifact()
        let untargeted = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.0", target: #"{"groups":["site-berlin"]}"#))
        expect(untargeted, 422, code: "invalid")
        XCTAssertTrue(untargeted.text.contains("matches no devices"), untargeted.text)
        let listedPending = try await admin.call("GET", "/api/v1/devices?status=pending")
        XCTAssertEqual(listedPending.json["items"]?.arrayValue?.compactMap { $0["name"]?.stringValue }, ["cam-a"])
        let viewer = try await admin.call("POST", "/api/v1/tokens", #"{"name":"dash","role":"viewer"}"#)
        let viewerClient = APIClient(port: server.port, token: viewer.json["secret"]?.stringValue, wire: .h1)
        defer { Task { await viewerClient.close() } }
        expect(try await viewerClient.call("POST", "/api/v1/devices/cam-a/accept"), 403, code: "forbidden")

        expect(try await admin.call("POST", "/api/v1/devices/cam-a/accept"), 200)
        expect(try await admin.call("POST", "/api/v1/devices/cam-a/accept"), 200)  // an event again: no change
        expect(try await poll(token), 204)
        expect(try await poll(token, on: replica), 204)  // now cached on both replicas

        // Rejected: refused at once, on both replicas.
        expect(try await admin.call("POST", "/api/v1/devices/cam-a/reject"), 200)
        expect(try await poll(token), 403, code: "device_rejected")
        try await eventually("the other replica refuses the rejected device") { try await self.poll(token, on: replica).status == 403 }
        expect(try await admin.call("POST", "/api/v1/devices/cam-a/accept"), 200)
        expect(try await poll(token), 204)
        expect(try await poll(token, on: replica), 204)

        // Revoked, then rotated: the old token never works again.
        let revoked = try await admin.call("POST", "/api/v1/devices/cam-a/revoke-token")
        expect(revoked, 200)
        XCTAssertNotEqual(revoked.json["token_revoked_at"], .null)
        expect(try await poll(token), 401, code: "token_revoked")
        try await eventually("the other replica refuses the revoked token") { try await self.poll(token, on: replica).status == 401 }
        let rotated = try await admin.call("POST", "/api/v1/devices/cam-a/rotate-token")
        expect(rotated, 200)
        let fresh = try XCTUnwrap(rotated.json["device_token"]?.stringValue)
        expect(try await poll(fresh), 204)
        expect(try await poll(token), 401, code: "invalid_token")
        expect(try await poll(token, on: replica), 401, code: "invalid_token")

        // Pre-authorized: no token until it enrolls; then accepted despite the approval rule.
        let named = try await admin.call("POST", "/api/v1/devices", #"{"name":"cam-b","groups":["site-berlin"],"preauthorize":true}"#)
        expect(named, 201)
        XCTAssertEqual(named.json["device_token"], .null)
        XCTAssertEqual(named.json["device"]?["status"], .string("preauthorized"))
        expect(try await admin.call("POST", "/api/v1/devices/cam-b/accept"), 409, code: "conflict")
        expect(try await admin.call("POST", "/api/v1/devices/cam-b/rotate-token"), 409, code: "conflict")
        let claimed = try await enroll(secret, "cam-b")
        expect(claimed, 201)
        XCTAssertEqual(claimed.json["status"], .string("accepted"))
        expect(try await poll(try XCTUnwrap(claimed.json["device_token"]?.stringValue)), 204)
        expect(try await enroll(secret, "cam-b"), 409, code: "conflict")  // claimed once only
        expect(try await admin.call("POST", "/api/v1/devices/nobody/accept"), 404)
        expect(try await admin.call("GET", "/api/v1/devices?status=sleepy"), 422)
    }
}
