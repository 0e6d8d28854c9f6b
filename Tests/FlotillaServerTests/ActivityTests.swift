// The operators' read views through the real server: failures grouped by step and
// message, the event log (newest, then followed with `after`), a device's recent
// executions and the devices list filtered by the state of their latest execution.

import FlotillaAPI
import FlotillaCore
import XCTest

final class ActivityTests: ServerTestCase {
    override func setUp() async throws {
        try await super.setUp()
        try await admin.prepareHardhatModel()
    }

    func testFailuresEventsAndDeviceHistory() async throws {
        var devices: [ScriptedDevice] = []
        for name in ["cam-a", "cam-b", "cam-c", "cam-d"] {
            devices.append(try await ScriptedDevice(server: server, admin: admin, name: name, groups: ["site-berlin"]))
        }
        let created = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "2.0", target: #"{"groups":["site-berlin"]}"#))
        expect(created, 201)
        let id = try XCTUnwrap(created.json["id"]?.stringValue)
        let before = try await admin.call("GET", "/api/v1/events?deployment=\(id)")
        expect(before, 200)
        XCTAssertEqual(before.json["items"]?.arrayValue?.count, 0, "queued executions have no transitions yet")
        // a and b fail the install the same way, c fails its download, d is still running.
        for (index, device) in devices.enumerated() {
            let next = try await device.next()
            let execution = try XCTUnwrap(next)
            let exec = execution["id"]!.stringValue!
            switch index {
            case 0, 1:
                try await device.succeed(execution, steps: 0...0, version: "2.0", app: "hardhat-detector")
                expect(try await device.report(exec, "step_started", step: 1), 200)
                expect(try await device.report(exec, "step_failed", step: 1, extra: #","exit_code":2,"message":"unzip failed""#), 200)
                expect(try await device.report(exec, "rollback_succeeded"), 200)
            case 2:
                expect(try await device.report(exec, "step_started", step: 0), 200)
                expect(try await device.report(exec, "step_failed", step: 0, extra: #","message":"sha256 mismatch""#), 200)
            default:
                expect(try await device.report(exec, "step_started", step: 0), 200)
            }
        }

        let failures = try await admin.call("GET", "/api/v1/deployments/\(id)/failures?newest=2")
        expect(failures, 200)
        let groups = try XCTUnwrap(failures.json["groups"]?.arrayValue)
        XCTAssertEqual(groups.count, 2, failures.text)
        XCTAssertEqual(groups[0]["count"]?.intValue, 2)
        XCTAssertEqual(groups[0]["state"], .string("rolled_back"))
        XCTAssertEqual(groups[0]["step_name"], .string("unpack and restart detector"))
        XCTAssertEqual(groups[0]["message"], .string("unzip failed"))
        XCTAssertEqual(groups[1]["state"], .string("failed"))
        XCTAssertEqual(groups[1]["step"]?.intValue, 0)
        XCTAssertEqual(failures.json["newest"]?.arrayValue?.count, 2)
        expect(try await admin.call("GET", "/api/v1/deployments/\(id)/failures?newest=-1"), 422)
        expect(try await admin.call("GET", "/api/v1/deployments/00000000-0000-0000-0000-000000000000/failures"), 404)

        // The event log: newest first page, then following from an id sees only later ones.
        let recent = try await admin.call("GET", "/api/v1/events?limit=3")
        expect(recent, 200)
        let items = try XCTUnwrap(recent.json["items"]?.arrayValue)
        XCTAssertEqual(items.count, 3)
        XCTAssertEqual(items.last?["device_name"], .string("cam-d"), "the newest event is d's start")
        XCTAssertEqual(items.last?["to"], .string("downloading"))
        let ids = items.compactMap { $0["id"]?.intValue }
        XCTAssertEqual(ids, ids.sorted(), "oldest first")
        let last = try XCTUnwrap(recent.json["last_id"]?.intValue)
        let nothing = try await admin.call("GET", "/api/v1/events?after=\(last)")
        XCTAssertEqual(nothing.json["items"]?.arrayValue?.count, 0)
        XCTAssertEqual(nothing.json["last_id"]?.intValue, last, "a follower keeps its place")
        let camD = try await admin.execution(id, device: "cam-d")["execution_id"]!.stringValue!
        expect(try await devices[3].report(camD, "step_failed", step: 0, extra: #","message":"disk full""#), 200)
        let followed = try await admin.call("GET", "/api/v1/events?after=\(last)")
        XCTAssertEqual(followed.json["items"]?.arrayValue?.map { $0["to"] }, [.string("failed")], followed.text)
        let forA = try await admin.call("GET", "/api/v1/events?device=cam-a&limit=500")
        XCTAssertEqual(forA.json["items"]?.arrayValue?.map { $0["to"]?.stringValue ?? "" },
                       ["downloading", "installing", "rolling_back", "rolled_back"], forA.text)
        expect(try await admin.call("GET", "/api/v1/events?after=x"), 422)
        expect(try await admin.call("GET", "/api/v1/events?deployment=nope"), 422)

        // A device's history and the devices list by latest state.
        let history = try await admin.call("GET", "/api/v1/devices/cam-a/executions")
        expect(history, 200)
        XCTAssertEqual(history.json["items"]?[0]?["state"], .string("rolled_back"))
        XCTAssertEqual(history.json["items"]?[0]?["app_version"], .string("2.0"))
        XCTAssertEqual(history.json["items"]?[0]?["deployment_id"], .string(id))
        expect(try await admin.call("GET", "/api/v1/devices/nope/executions"), 404)
        let rolledBack = try await admin.call("GET", "/api/v1/devices?state=rolled_back")
        XCTAssertEqual(rolledBack.json["items"]?.arrayValue?.map { $0["name"] }, [.string("cam-a"), .string("cam-b")])
        expect(try await admin.call("GET", "/api/v1/devices?state=sleeping"), 422)
    }
}
