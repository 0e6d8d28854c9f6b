// A deployment's own state changes by events through DeploymentLifecycle and conditional
// writes: cancels racing each other leave one transition, one version step, one event.

import FlotillaAPI
import FlotillaStore
import Synchronization
import XCTest

final class DeploymentLifecycleTests: ServerTestCase {
    func testRacingCancelsLeaveOneTransition() async throws {
        try await admin.prepareHardhatModel()
        expect(try await admin.call("POST", "/api/v1/devices", #"{"name":"cam-1","groups":["site-berlin"]}"#), 201)
        let created = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        expect(created, 201)
        let id = try XCTUnwrap(created.json["id"]?.stringValue)
        // Make the race certain: hold the deployment's row, so every cancel reads `active` and
        // then waits at its write; released, each write is decided by its version condition.
        let holder = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        try holder.execute(unsafe: "BEGIN")
        _ = try holder.query("SELECT 1 FROM deployments WHERE id = \(id)::uuid FOR UPDATE")
        let port = server.port, token = server.adminToken
        async let racing = withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let client = APIClient(port: port, token: token, wire: .h2)  // async: blocking reads would starve the pool
                    defer { Task { await client.close() } }
                    return try await client.call("POST", "/api/v1/deployments/\(id)/cancel").status
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let watcher = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        try await eventually("cancels are waiting at their write", seconds: 10) {
            try watcher.query("""
                SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%deployment_events%'
                """)[0].decode(Int.self, column: "n") >= 2
        }
        try holder.execute(unsafe: "COMMIT")
        let statuses = try await racing
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

/// `?wait=N` answers when every device has finished: a canceled deployment whose device is
/// still rolling back is not finished yet.
final class DeploymentWaitTests: ServerTestCase {
    func testWaitingOnACanceledDeploymentWaitsForItsRollbacks() async throws {
        try await admin.prepareHardhatModel()
        let cam = try await ScriptedDevice(server: server, admin: admin, name: "cam-1", groups: ["site-berlin"])
        let created = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        let id = try XCTUnwrap(created.json["id"]?.stringValue)
        let handed = try await cam.next()
        let execution = try XCTUnwrap(handed)
        let executionID = try XCTUnwrap(execution["id"]?.stringValue)
        expect(try await cam.report(executionID, "step_started", step: 0), 200)
        expect(try await cam.report(executionID, "step_succeeded", step: 0), 200)  // installing now: the device changed
        expect(try await admin.call("POST", "/api/v1/deployments/\(id)/cancel"), 200)
        let rolling = try await admin.execution(id, device: "cam-1")
        XCTAssertEqual(rolling["state"], .string("rolling_back"))

        let port = server.port, token = server.adminToken
        let answered = Mutex(false)
        let waiter = Task {
            let client = APIClient(port: port, token: token, wire: .h2)  // async: a blocking read would hold a pool thread
            defer { Task { await client.close() } }
            let json = try await client.call("GET", "/api/v1/deployments/\(id)?wait=20").json
            answered.withLock { $0 = true }
            return json
        }
        // A negative check needs a window: the wait must not answer while the device rolls back
        // (before the fix it answered at once, `outcome: pending`).
        try await Task.sleep(for: .milliseconds(500))
        XCTAssertFalse(answered.withLock { $0 }, "answered while the device was still rolling back")
        let rolledBack = try await cam.report(executionID, "rollback_succeeded")
        expect(rolledBack, 200)
        XCTAssertEqual(rolledBack.json["result"], .string("accepted"), rolledBack.text)
        let result = try await waiter.value
        XCTAssertEqual(result["status"], .string("canceled"))
        XCTAssertNotEqual(result["outcome"], .string("pending"), "answered once the rollback ended: \(result.serialized)")
        XCTAssertEqual(result["counts"]?["rolled_back"]?.intValue, 1, result.serialized)
        await cam.client.close()
    }
}
