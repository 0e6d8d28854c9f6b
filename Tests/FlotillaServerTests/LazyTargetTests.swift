import FlotillaAPI
import FlotillaStore
import XCTest

/// Deployments record their targets; each device's execution is made when it first polls
/// (migration 0006). Until then the target must read exactly as a queued execution would:
/// in counts, listings, supersession, cancel, the devices filter and device deletion.
final class LazyTargetTests: ServerTestCase {
    override var adminWire: Wire { .h1 }  // pipelines speak HTTP/1.1

    override func setUp() async throws {
        try await super.setUp()
        try await admin.prepareHardhatModel()
    }

    func deploy(_ version: String, _ target: String = #"{"groups":["site-berlin"]}"#) async throws -> String {
        let created = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: version, target: target))
        expect(created, 201)
        return try XCTUnwrap(created.json["id"]?.stringValue)
    }

    func rowCount(_ sql: String) throws -> Int {
        let conn = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        return try conn.query(SQL(unsafe: sql))[0].decode(Int.self)
    }

    func testUnpolledTargetsReadAsQueuedAndBecomeExecutionsAtTheFirstPoll() async throws {
        let a = try await ScriptedDevice(server: server, admin: admin, name: "cam-a", groups: ["site-berlin"])
        _ = try await ScriptedDevice(server: server, admin: admin, name: "cam-b", groups: ["site-berlin"])
        let id = try await deploy("1.4")
        XCTAssertEqual(try rowCount("SELECT count(*) FROM executions"), 0, "creating made no executions")
        var shown = try await admin.call("GET", "/api/v1/deployments/\(id)")
        XCTAssertEqual(shown.json["status"], .string("active"))
        XCTAssertEqual(shown.json["counts"]?["queued"]?.intValue, 2)
        let listed = try await admin.call("GET", "/api/v1/deployments/\(id)/devices?state=queued")
        XCTAssertEqual(listed.json["items"]?.arrayValue?.compactMap { $0["device_name"]?.stringValue }, ["cam-a", "cam-b"])
        XCTAssertEqual(listed.json["items"]?[0]?["execution_id"], .null, "not handed out yet")
        let queuedDevices = try await admin.call("GET", "/api/v1/devices?state=queued")
        XCTAssertEqual(queuedDevices.json["items"]?.arrayValue?.count, 2)

        let polled = try await a.next()
        let execution = try XCTUnwrap(polled)
        XCTAssertEqual(execution["deployment_id"], .string(id))
        XCTAssertEqual(try rowCount("SELECT count(*) FROM executions"), 1)
        XCTAssertEqual(try rowCount("SELECT count(*) FROM deployment_targets"), 1, "cam-a's target became its execution")
        let again = try await a.next()
        XCTAssertEqual(again?["id"], execution["id"], "the same execution, not a second one")
        shown = try await admin.call("GET", "/api/v1/deployments/\(id)")
        XCTAssertEqual(shown.json["counts"]?["queued"]?.intValue, 2, "one execution queued, one target not handed out")

        // Deleting an unpolled device takes its target along: the deployment no longer waits for it.
        expect(try await admin.call("DELETE", "/api/v1/devices/cam-b"), 204)
        XCTAssertEqual(try rowCount("SELECT count(*) FROM deployment_targets"), 0)
        try await a.succeed(execution, steps: 0...3, version: "1.4", app: "hardhat-detector")
        shown = try await admin.call("GET", "/api/v1/deployments/\(id)?wait=5")
        XCTAssertEqual(shown.json["status"], .string("completed"), shown.text)
        XCTAssertEqual(shown.json["counts"]?["succeeded"]?.intValue, 1)
    }

    func testAnUnpolledTargetIsSupersededAndCanceledLikeAQueuedExecution() async throws {
        let cam = try await ScriptedDevice(server: server, admin: admin, name: "cam", groups: ["site-berlin"])
        let old = try await deploy("1.4")
        let new = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.5", target: #"{"devices":["cam"]}"#))
        expect(new, 201)
        XCTAssertEqual(new.json["superseded"]?.intValue, 1)
        let newID = try XCTUnwrap(new.json["id"]?.stringValue)
        let oldShown = try await admin.call("GET", "/api/v1/deployments/\(old)")
        XCTAssertEqual(oldShown.json["status"], .string("completed"), "its only target was superseded")
        XCTAssertEqual(oldShown.json["counts"]?["canceled"]?.intValue, 1)
        XCTAssertEqual(oldShown.json["counts"]?["queued"]?.intValue, 0)
        let listed = try await admin.execution(old, device: "cam")
        XCTAssertEqual(listed["failure"]?["message"], .string("superseded by deployment \(newID)"))

        // The poll hands out the newer one and records the older as canceled, with its event.
        let polled = try await cam.next()
        XCTAssertEqual(polled?["deployment_id"], .string(newID))
        let history = try await admin.call("GET", "/api/v1/devices/cam/executions")
        let states = history.json["items"]?.arrayValue?.map { "\($0["deployment_id"]?.stringValue ?? "")=\($0["state"]?.stringValue ?? "")" }
        XCTAssertEqual(Set(states ?? []), ["\(old)=canceled", "\(newID)=queued"])
        let events = try await admin.call("GET", "/api/v1/events?deployment=\(old)")
        XCTAssertEqual(events.json["items"]?[0]?["to"], .string("canceled"), events.text)
        XCTAssertEqual(events.json["items"]?[0]?["cause"], .string("superseded by deployment \(newID)"))

        // Canceling a deployment whose target was never handed out: the device gets nothing.
        let late = try await ScriptedDevice(server: server, admin: admin, name: "late", groups: [])
        let third = try await deploy("1.6", #"{"devices":["late"]}"#)
        let canceled = try await admin.call("POST", "/api/v1/deployments/\(third)/cancel")
        XCTAssertEqual(canceled.json["status"], .string("canceled"))
        XCTAssertEqual(canceled.json["canceled_queued"]?.intValue, 1)
        XCTAssertEqual(canceled.json["counts"]?["canceled"]?.intValue, 1)
        XCTAssertEqual(canceled.json["counts"]?["queued"]?.intValue, 0)
        let listedThird = try await admin.execution(third, device: "late")
        XCTAssertEqual(listedThird["state"], .string("canceled"))
        let nothing = try await late.next()
        XCTAssertNil(nothing)
        let lateHistory = try await admin.call("GET", "/api/v1/devices/late/executions")
        XCTAssertEqual(lateHistory.json["items"]?[0]?["state"], .string("canceled"))
        XCTAssertEqual(lateHistory.json["items"]?[0]?["failure"]?["cause"], .string("canceled"))
    }
}
