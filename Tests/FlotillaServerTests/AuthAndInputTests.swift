import FlotillaAPI
import FlotillaStore
import Foundation
import XCTest

final class AuthTests: XCTestCase {
    var server: APIServer!
    override func setUp() async throws { server = try APIServer() }
    override func tearDown() async throws { await server.stop() }

    func testTokensAndRoles() async throws {
        for wire in Wire.allCases {
            let admin = APIClient(port: server.port, token: server.adminToken, wire: wire)
            let anonymous = APIClient(port: server.port, token: nil, wire: wire)
            let missing = try await anonymous.call("GET", "/api/v1/devices")
            expect(missing, 401, code: "unauthorized")
            XCTAssertEqual(missing.headers["www-authenticate"], "Bearer")
            anonymous.token = "flt_a_not-a-real-token"
            expect(try await anonymous.call("GET", "/api/v1/devices"), 401, code: "invalid_token")
            expect(try await anonymous.call("GET", "/api/v1/devices", headers: ["authorization": "Basic Zm9vOmJhcg=="]), 401)

            // A viewer reads, but cannot write or manage tokens.
            let created = try await admin.call("POST", "/api/v1/tokens", #"{"name":"dashboard-\#(wire)","role":"viewer"}"#)
            expect(created, 201)
            let secret = try XCTUnwrap(created.json["secret"]?.stringValue)
            let tokenID = try XCTUnwrap(created.json["token"]?["id"]?.stringValue)
            XCTAssertTrue(secret.hasPrefix("flt_a_") && secret.count == 49)
            let viewer = APIClient(port: server.port, token: secret, wire: wire)
            expect(try await viewer.call("GET", "/api/v1/devices"), 200)
            expect(try await viewer.call("GET", "/api/v1/groups"), 200)
            expect(try await viewer.call("POST", "/api/v1/groups", #"{"name":"nope"}"#), 403, code: "forbidden")
            expect(try await viewer.call("DELETE", "/api/v1/devices/whatever"), 403, code: "forbidden")
            expect(try await viewer.call("GET", "/api/v1/tokens"), 403, code: "forbidden")

            // Listing never shows a secret.
            let list = try await admin.call("GET", "/api/v1/tokens")
            expect(list, 200)
            XCTAssertFalse(list.text.contains("flt_a_"), list.text)
            XCTAssertFalse(list.text.contains("secret"), list.text)
            XCTAssertTrue(list.json["items"]?.arrayValue?.contains { $0["id"]?.stringValue == tokenID } == true)

            // Revocation takes effect on the very next request.
            let revoked = try await admin.call("POST", "/api/v1/tokens/\(tokenID)/revoke")
            expect(revoked, 200)
            XCTAssertNotEqual(revoked.json["revoked_at"], .null)
            expect(try await viewer.call("GET", "/api/v1/devices"), 401, code: "invalid_token")
            expect(try await admin.call("POST", "/api/v1/tokens/\(tokenID)/revoke"), 200)
            expect(try await admin.call("POST", "/api/v1/tokens/00000000-0000-0000-0000-000000000000/revoke"), 404)
            expect(try await admin.call("POST", "/api/v1/tokens/not-a-uuid/revoke"), 404)
            expect(try await admin.call("POST", "/api/v1/tokens", #"{"name":"x","role":"root"}"#), 422, code: "invalid")
            await admin.close()
        }
    }

    func testTheLastAdminTokenCannotBeRevoked() async throws {
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        let items = try await admin.call("GET", "/api/v1/tokens").json["items"]?.arrayValue ?? []
        let ownID = try XCTUnwrap(items.first?["id"]?.stringValue)
        expect(try await admin.call("POST", "/api/v1/tokens/\(ownID)/revoke"), 409, code: "conflict")
        let second = try await admin.call("POST", "/api/v1/tokens", #"{"name":"ops","role":"admin"}"#)
        expect(second, 201)
        expect(try await admin.call("POST", "/api/v1/tokens/\(ownID)/revoke"), 200)
        expect(try await admin.call("GET", "/api/v1/devices"), 401)
        await admin.close()
    }

    /// Two replicas on one database: a token revoked through one is refused by the other,
    /// although the other had it in its cache (NOTIFY flushes every replica's cache).
    func testRevocationReachesOtherReplicas() async throws {
        let replica = try APIServer(sharing: server)
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        let created = try await admin.call("POST", "/api/v1/tokens", #"{"name":"ci","role":"viewer"}"#)
        let secret = try XCTUnwrap(created.json["secret"]?.stringValue)
        let id = try XCTUnwrap(created.json["token"]?["id"]?.stringValue)
        let onReplica = APIClient(port: replica.port, token: secret, wire: .h2)
        // Wait until the replica's listener is up (its cache is off until then), then warm its cache.
        try await replica.waitUntilListening()
        expect(try await onReplica.call("GET", "/api/v1/devices"), 200)
        expect(try await onReplica.call("GET", "/api/v1/devices"), 200)
        XCTAssertTrue(replica.api.cachesTokenForTesting(secret), "the replica now answers from its cache")

        expect(try await admin.call("POST", "/api/v1/tokens/\(id)/revoke"), 200)
        var status = 0
        for _ in 0..<100 {
            status = try await onReplica.call("GET", "/api/v1/devices").status
            if status == 401 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertEqual(status, 401, "the replica must refuse a revoked token")
        XCTAssertFalse(replica.api.cachesTokenForTesting(secret))
        await onReplica.close()
        await admin.close()
        await replica.stop()
    }

    /// Device tokens are cached too: deleting the device must still refuse its token at once,
    /// on this replica and (through NOTIFY) on another that had it cached.
    func testADeletedDeviceIsRefusedEverywhereDespiteTheCache() async throws {
        let replica = try APIServer(sharing: server)
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        let created = try await admin.call("POST", "/api/v1/devices", #"{"name":"cam-gone"}"#)
        let token = try XCTUnwrap(created.json["device_token"]?.stringValue)
        let here = APIClient(port: server.port, token: token, wire: .h2)
        let there = APIClient(port: replica.port, token: token, wire: .h1)
        try await server.waitUntilListening()
        try await replica.waitUntilListening()
        for client in [here, there] {
            expect(try await client.call("GET", "/api/v1/agent/next"), 204)
            expect(try await client.call("GET", "/api/v1/agent/next"), 204)
        }
        XCTAssertTrue(server.api.cachesDeviceTokenForTesting(token) && replica.api.cachesDeviceTokenForTesting(token))

        expect(try await admin.call("DELETE", "/api/v1/devices/cam-gone"), 204)
        expect(try await here.call("GET", "/api/v1/agent/next"), 401, code: "invalid_token")
        var status = 0
        for _ in 0..<100 {
            status = try await there.call("GET", "/api/v1/agent/next").status
            if status == 401 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertEqual(status, 401, "the replica must refuse a deleted device's token")
        for client in [here, there, admin] { await client.close() }
        await replica.stop()
    }

    /// Secrets live in the database only as SHA-256 hashes.
    func testOnlyHashesAreStored() async throws {
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        let device = try await admin.call("POST", "/api/v1/devices", #"{"name":"d1"}"#)
        let deviceToken = try XCTUnwrap(device.json["device_token"]?.stringValue)
        let conn = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        let stored = try conn.query("SELECT token_hash FROM devices WHERE name = 'd1'")[0].decode(Bytea.self)
        XCTAssertEqual(stored.bytes, Secrets.sha256(deviceToken.utf8))
        let hashes = try conn.query("SELECT secret_hash FROM api_tokens").map { try $0.decode(Bytea.self).bytes }
        XCTAssertTrue(hashes.contains(Secrets.sha256(server.adminToken.utf8)))
        let dump = try conn.query("SELECT row_to_json(t)::text FROM api_tokens t").map { try $0.decode(String.self) }
            + (try conn.query("SELECT row_to_json(d)::text FROM devices d").map { try $0.decode(String.self) })
        for row in dump {
            XCTAssertFalse(row.contains(server.adminToken) || row.contains(deviceToken), "a secret in plain text: \(row)")
        }
        await admin.close()
    }
}

final class BadInputTests: XCTestCase {
    var server: APIServer!
    override func setUp() async throws { server = try APIServer() }
    override func tearDown() async throws { await server.stop() }

    func testEveryClassOfBadInput() async throws {
        for wire in Wire.allCases {
            let api = APIClient(port: server.port, token: server.adminToken, wire: wire)
            let malformed = try await api.call("POST", "/api/v1/devices", "{\n  \"name\": \"x\",\n  \"labels\": {]\n}")
            expect(malformed, 400, code: "malformed_json")
            XCTAssertEqual(malformed.json["error"]?["details"]?["line"]?.intValue, 3, malformed.text)
            XCTAssertTrue(malformed.json["error"]?["message"]?.stringValue?.contains("line 3, column 14") == true, malformed.text)
            expect(try await api.call("POST", "/api/v1/devices", #"{"name":"a","name":"b"}"#), 400, code: "malformed_json")
            expect(try await api.call("POST", "/api/v1/devices", #"{"name":"a"} trailing"#), 400, code: "malformed_json")
            expect(try await api.call("POST", "/api/v1/devices", String(repeating: "[", count: 100) + String(repeating: "]", count: 100)), 400, code: "malformed_json")
            expect(try await api.call("POST", "/api/v1/devices", ""), 400, code: "missing_body")

            let unknown = try await api.call("POST", "/api/v1/devices", #"{"name":"ok","lables":{}}"#)
            expect(unknown, 400, code: "unknown_field")
            XCTAssertTrue(unknown.text.contains("lables"), unknown.text)

            expect(try await api.call("POST", "/api/v1/devices", "[1,2]"), 422, code: "invalid")
            let types = try await api.call("POST", "/api/v1/devices", #"{"name":42,"labels":{"site":7,"bad key!":"x"},"attributes":[],"groups":"g"}"#)
            expect(types, 422, code: "invalid")
            let fields = Set((types.json["error"]?["details"]?.arrayValue ?? []).compactMap { $0["field"]?.stringValue })
            XCTAssertEqual(fields, ["name", "labels.site", "labels.bad key!", "attributes", "groups"], types.text)
            expect(try await api.call("POST", "/api/v1/devices", #"{"labels":{}}"#), 422, code: "invalid")
            expect(try await api.call("POST", "/api/v1/devices", #"{"name":"\#(String(repeating: "n", count: 129))"}"#), 422)
            expect(try await api.call("POST", "/api/v1/devices", #"{"name":"x","groups":["no-such-group"]}"#), 422, code: "invalid")

            expect(try await api.call("POST", "/api/v1/devices", #"{"name":"dup-\#(wire)"}"#), 201)
            let duplicate = try await api.call("POST", "/api/v1/devices", #"{"name":"dup-\#(wire)"}"#)
            expect(duplicate, 409, code: "conflict")
            expect(try await api.call("PATCH", "/api/v1/devices/dup-\(wire)", #"{"labels":{"k":1}}"#), 422, code: "invalid")
            expect(try await api.call("PATCH", "/api/v1/devices/dup-\(wire)", "{}", headers: ["if-match": "yesterday"]), 400, code: "bad_if_match")

            for path in ["/api/v1/devices/00000000-0000-0000-0000-000000000000", "/api/v1/devices/nope",
                         "/api/v1/groups/nope", "/api/v1/groups/nope/devices", "/api/v1/devices/nope/groups"] {
                expect(try await api.call("GET", path), 404, code: "not_found")
            }
            expect(try await api.call("PUT", "/api/v1/devices/nope", "{}"), 405, code: "method_not_allowed")

            // Hostile text is data, never SQL; errors never show SQL.
            let hostile = try await api.call("GET", "/api/v1/devices?name_prefix=%27%3B%20DROP%20TABLE%20devices%3B--")
            expect(hostile, 200)
            for response in [malformed, unknown, types, duplicate] {
                for word in ["SELECT", "INSERT", "syntax", "constraint", "pq"] {
                    XCTAssertFalse(response.text.contains(word), "\(word) leaked: \(response.text)")
                }
            }
            await api.close()
        }
    }

    func testJSONParserReportsWhereItBroke() {
        func failure(_ text: String) -> String? {
            do { _ = try JSON.parse(Array(text.utf8)); return nil } catch { return (error as? JSON.ParseError)?.description }
        }
        XCTAssertEqual(failure("{\"a\":1,}"), "expected a quoted key at line 1, column 8")
        XCTAssertEqual(failure("[1 2]"), "expected ',' or ']' in an array at line 1, column 4")
        XCTAssertEqual(failure("01"), "leading zeros are not allowed at line 1, column 1")
        XCTAssertEqual(failure("\"\\ud800\""), "unpaired surrogate in \\u escape at line 1, column 8")
        XCTAssertEqual(failure("\"a\nb\""), "control character in a string (escape it) at line 1, column 3")
        XCTAssertNil(failure(#"{"emoji":"\ud83d\ude00","n":-1.5e3,"l":[true,false,null]}"#))
        XCTAssertEqual(try JSON.parse(Array(#""\ud83d\ude00""#.utf8)), .string("😀"))
        XCTAssertEqual(JSON.object(["b": .int(1), "a": .string("x\"y")]).serialized, #"{"a":"x\"y","b":1}"#)
    }
}
