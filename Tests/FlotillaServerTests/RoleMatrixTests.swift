// Every management route against every role (and no token), the OpenAPI file's `x-role`
// against the roles the server enforces, and scoped deployer tokens: flows and groups
// globs, expiry (also of a cached token) and last-used time.

import FlotillaAPI
import FlotillaFlowFiles
import FlotillaStore
import Foundation
import XCTest
import Yams

final class RoleMatrixTests: ServerTestCase {
    override var usesManualClock: Bool { true }

    private func token(_ body: String) async throws -> APIClient {
        let created = try await admin.call("POST", "/api/v1/tokens", body)
        expect(created, 201)
        return APIClient(port: server.port, token: try XCTUnwrap(created.json["secret"]?.stringValue), wire: .h1)
    }

    func testEveryRouteAgainstEveryRole() async throws {
        var clients: [(Role?, APIClient)] = [(nil, APIClient(port: server.port, token: nil, wire: .h1))]
        for role in Role.allCases {
            clients.append((role, try await token(#"{"name":"\#(role.rawValue)","role":"\#(role.rawValue)"}"#)))
        }
        // A scoped deployer has exactly a deployer's rights on every route (its scope narrows
        // what it may deploy where: testScopedDeployerTokens).
        clients.append((.deployer, try await token(#"{"name":"scoped","role":"deployer","flows":["hardhat-*"],"groups":["site-*"]}"#)))
        let routes = server.api.routeRolesForTesting
        XCTAssertGreaterThan(routes.count, 40)
        for (method, pattern, needed) in routes {
            // Ids nobody has: an allowed call gets past the role check and fails later (404,
            // 422, …), never 401 or 403.
            let path = pattern.replacingOccurrences(of: "{id}", with: "00000000-0000-4000-8000-000000000000")
                .replacingOccurrences(of: "{sha256}", with: String(repeating: "0", count: 64))
                .replacingOccurrences(of: "{device}", with: "nobody").replacingOccurrences(of: "{group}", with: "nogroup")
                .replacingOccurrences(of: "{name}", with: "noflow").replacingOccurrences(of: "{version}", with: "1")
            XCTAssertFalse(path.contains("{"), "\(pattern): a path parameter this test does not fill")
            let body: String? = ["POST", "PATCH", "PUT"].contains(method) ? "{}" : nil
            for (role, client) in clients {
                let answer = try await client.call(method, path, body)
                let label = "\(method) \(pattern) as \(role?.rawValue ?? "nobody")"
                guard let role else {
                    XCTAssertEqual(answer.status, 401, label)
                    continue
                }
                if role.allows(needed) {
                    XCTAssertFalse([401, 403].contains(answer.status), "\(label): \(answer.status) \(answer.text)")
                } else {
                    XCTAssertEqual(answer.status, 403, label)
                    XCTAssertEqual(answer.errorCode, "forbidden", label)
                }
            }
        }
        for (_, client) in clients { await client.close() }

        // The spec says the same.
        let text = try String(contentsOfFile: TestCluster.repositoryRoot + "/openapi/management.yaml", encoding: .utf8)
        let paths = try XCTUnwrap((try Yams.load(yaml: text) as? [String: Any])?["paths"] as? [String: Any])
        for (method, pattern, needed) in routes {
            let operation = (paths[pattern] as? [String: Any])?[method.lowercased()] as? [String: Any]
            XCTAssertEqual(operation?["x-role"] as? String, needed.rawValue, "x-role of \(method) \(pattern)")
        }
    }

    func testScopedDeployerTokens() async throws {
        try await admin.prepareHardhatModel()
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"depot"}"#), 201)
        for (name, group) in [("cam-1", "site-berlin"), ("cam-2", "depot")] {
            expect(try await admin.call("POST", "/api/v1/devices", #"{"name":"\#(name)","groups":["\#(group)"]}"#), 201)
        }
        let pipeline = try await token(#"{"name":"ci","role":"deployer","flows":["hardhat-*"],"groups":["site-*"]}"#)
        defer { Task { await pipeline.close() } }

        expect(try await pipeline.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.1", target: #"{"groups":["site-berlin"]}"#)), 201)
        for target in [#"{"groups":["depot"]}"#, #"{"groups":["site-berlin","depot"]}"#, #"{"devices":["cam-1"]}"#, #"{"selector":"a=b"}"#] {
            expect(try await pipeline.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.2", target: target)), 403, code: "out_of_scope")
        }
        let config = try await admin.applyFlowFile("config-file.yaml")
        XCTAssertEqual(config, 1)
        let other = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.3", target: #"{"groups":["depot"]}"#))
        expect(other, 201)
        let otherID = try XCTUnwrap(other.json["id"]?.stringValue)
        expect(try await pipeline.call("POST", "/api/v1/deployments/\(otherID)/cancel"), 403, code: "out_of_scope")
        let own = try await pipeline.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        expect(try await pipeline.call("POST", "/api/v1/deployments/\(try XCTUnwrap(own.json["id"]?.stringValue))/cancel"), 200)
        let flows = TestCluster.repositoryRoot + "/flows/"
        expect(try await pipeline.call("POST", "/api/v1/flows", try FlowFiles.document(atPath: flows + "config-file.yaml").serialized),
               403, code: "out_of_scope")
        expect(try await pipeline.call("POST", "/api/v1/flows", try FlowFiles.document(atPath: flows + "hardhat-model.yaml").serialized), 200)
        expect(try await pipeline.call("POST", "/api/v1/groups", #"{"name":"x"}"#), 403, code: "forbidden")

        // Only deployers are scoped; patterns are checked.
        expect(try await admin.call("POST", "/api/v1/tokens", #"{"name":"v","role":"viewer","flows":["a"]}"#), 422)
        expect(try await admin.call("POST", "/api/v1/tokens", #"{"name":"d","role":"deployer","groups":[]}"#), 422)

        // Expiry, also of a token the server has cached; last use is recorded.
        let shortLived = try await token(#"{"name":"temp","role":"viewer","expires_in":60}"#)
        defer { Task { await shortLived.close() } }
        expect(try await shortLived.call("GET", "/api/v1/groups"), 200)
        clock.advance(seconds: 61)
        expect(try await shortLived.call("GET", "/api/v1/groups"), 401, code: "token_expired")
        let listed = try await admin.call("GET", "/api/v1/tokens")
        let byName = Dictionary(uniqueKeysWithValues: (listed.json["items"]?.arrayValue ?? []).map { ($0["name"]?.stringValue ?? "", $0) })
        XCTAssertEqual(byName["ci"]?["flows"], .array([.string("hardhat-*")]))
        XCTAssertEqual(byName["ci"]?["groups"], .array([.string("site-*")]))
        XCTAssertNotEqual(byName["ci"]?["last_used_at"], .null)
        XCTAssertNotEqual(byName["temp"]?["expires_at"], .null)
        XCTAssertEqual(byName["v"], nil)
    }

    /// An expired admin token cannot let anyone back in: it does not count as another admin,
    /// and revoking it is never refused as revoking the last one.
    func testExpiredAdminTokensDoNotCountAsTheLastAdmin() async throws {
        let temporary = try await admin.call("POST", "/api/v1/tokens", #"{"name":"temp-admin","role":"admin","expires_in":60}"#)
        expect(temporary, 201)
        let temporaryID = try XCTUnwrap(temporary.json["token"]?["id"]?.stringValue)
        let listed = try await admin.call("GET", "/api/v1/tokens")
        let bootstrapID = try XCTUnwrap(listed.json["items"]?.arrayValue?.first { $0["name"] == .string("bootstrap admin") }?["id"]?.stringValue)
        clock.advance(seconds: 61)
        expect(try await admin.call("POST", "/api/v1/tokens/\(bootstrapID)/revoke"), 409, code: "conflict")
        expect(try await admin.call("POST", "/api/v1/tokens/\(temporaryID)/revoke"), 200)
    }
}
