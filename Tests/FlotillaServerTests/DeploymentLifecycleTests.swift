// A deployment's own state changes by events through DeploymentLifecycle and conditional
// writes: cancels racing each other leave one transition, one version step, one event.

import FlotillaAPI
import FlotillaStore
import XCTest

final class DeploymentLifecycleTests: ServerTestCase {
    func testRacingCancelsLeaveOneTransition() async throws {
        try await admin.prepareHardhatModel()
        expect(try await admin.call("POST", "/api/v1/devices", #"{"name":"cam-1","groups":["site-berlin"]}"#), 201)
        let created = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        expect(created, 201)
        let id = try XCTUnwrap(created.json["id"]?.stringValue)
        let port = server.port, token = server.adminToken
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let client = APIClient(port: port, token: token, wire: .h1)
                    defer { Task { await client.close() } }
                    return try await client.call("POST", "/api/v1/deployments/\(id)/cancel").status
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        XCTAssertEqual(statuses, Array(repeating: 200, count: 8))
        let row = try await server.pool.query("""
            SELECT d.state, d.version, (SELECT count(*) FROM deployment_events e WHERE e.deployment_id = d.id) AS events
            FROM deployments d WHERE d.id = \(id)::uuid
            """)[0]
        XCTAssertEqual(try row.decode(String.self, column: "state"), "canceled")
        XCTAssertEqual(try row.decode(Int.self, column: "version"), 2, "one transition, one version step")
        XCTAssertEqual(try row.decode(Int.self, column: "events"), 1, "one event for the one transition")
        let shown = try await admin.call("GET", "/api/v1/deployments/\(id)")
        XCTAssertEqual(shown.json["status"], .string("canceled"))
    }
}
