// `flotilla-agent simulate` as a real process against a real server: its virtual devices
// register, long-poll, walk the hardhat-model flow through its steps with reports, and
// what the simulator says happened is what the server recorded — for a clean run and for
// one where every install fails and every device rolls back.

import FlotillaAPI
import FlotillaStore
import FlotillaTestSupport
import Foundation
import XCTest

final class SimulatorTests: ServerTestCase {
    override func setUp() async throws {
        try await super.setUp()
        _ = try await admin.applyFlowFile("hardhat-model.yaml")
        try await admin.uploadSampleArtifact()
    }

    /// Runs the simulator for `devices` devices in `group`, deploys to the group once they are
    /// registered, and returns the simulator's JSON summary and the deployment's final record.
    private func simulate(group: String, devices: Int, extra: [String]) async throws -> (summary: JSON, deployment: JSON) {
        let child = try ChildProcess(productsDirectory.appendingPathComponent("flotilla-agent").path,
                                     ["simulate", "--server", server.url, "--token", server.adminToken, "--devices", String(devices),
                                      "--group", group, "--prefix", "\(group)-", "--step-time", "0", "--poll-wait", "1",
                                      "--executions", String(devices), "--duration", "60", "--json"] + extra)
        var output = ""
        while let line = child.readLine() {
            output += line
            if line.contains("registered") { break }
        }
        XCTAssertTrue(output.contains("registered \(devices) devices"), output)
        let created = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.4", target: #"{"groups":["\#(group)"]}"#))
        expect(created, 201)
        XCTAssertEqual(created.json["devices_targeted"]?.intValue, devices)
        output += child.readToEnd()
        TestLog.append(output)
        XCTAssertEqual(child.wait(), 0, output)
        let line = try XCTUnwrap(output.split(separator: "\n").last { $0.hasPrefix("{") }, output)
        let id = try XCTUnwrap(created.json["id"]?.stringValue)
        let deployment = try await admin.call("GET", "/api/v1/deployments/\(id)?wait=10")
        return (try JSON.parse(Array(line.utf8)), deployment.json)
    }

    func testACleanRunSucceedsOnEveryDeviceAndTheServerAgrees() async throws {
        let (summary, deployment) = try await simulate(group: "calm", devices: 12, extra: [])
        XCTAssertEqual(summary["outcomes"], .object(["succeeded": .int(12)]))
        XCTAssertEqual(summary["reports_rejected"]?.intValue, 0)
        XCTAssertEqual(summary["errors"]?.intValue, 0)
        XCTAssertEqual(summary["manifests_refused"]?.intValue, 0, "every manifest's signature checked out")
        // download, install, reboot (started + booted), verify: eight accepted reports each.
        XCTAssertEqual(summary["reports_accepted"]?.intValue, 12 * 8)
        XCTAssertEqual(deployment["outcome"], .string("succeeded"))
        XCTAssertEqual(deployment["counts"]?["succeeded"]?.intValue, 12)
        let device = try await admin.call("GET", "/api/v1/devices/calm-000003")
        XCTAssertEqual(device.json["installed"]?["hardhat-detector"]?.stringValue, "1.4", device.text)
    }

    func testFailingInstallsRollEveryDeviceBack() async throws {
        let (summary, deployment) = try await simulate(group: "stormy", devices: 8, extra: ["--fail", "run=1"])
        XCTAssertEqual(summary["outcomes"], .object(["rolled_back": .int(8)]))
        XCTAssertEqual(deployment["outcome"], .string("failed"))
        XCTAssertEqual(deployment["counts"]?["rolled_back"]?.intValue, 8)
        let page = try await admin.call("GET", "/api/v1/deployments/\(deployment["id"]!.stringValue!)/devices?state=rolled_back")
        XCTAssertEqual(page.json["items"]?[0]?["failure"]?["message"]?.stringValue, "simulated run failure", page.text)
    }

    /// The virtual devices run the agent's own runner: when the server restarts under them
    /// they back off and reconnect, then take a deployment made after the restart; ^C
    /// stops the run and the summary is still printed.
    func testItReconnectsAfterTheServerRestartsAndSummarizesOnSIGINT() async throws {
        let child = try ChildProcess(productsDirectory.appendingPathComponent("flotilla-agent").path,
                                     ["simulate", "--server", server.url, "--token", server.adminToken, "--devices", "4",
                                      "--group", "phoenix", "--prefix", "phoenix-", "--step-time", "0", "--poll-wait", "1", "--json"])
        let registered = await child.output(showing: ["registered 4 devices"], within: 30)
        XCTAssertTrue(registered.contains("registered 4 devices"), registered)
        // The server goes away and comes back on the same port (and database, and key).
        let port = server.port, previous = server!
        await previous.stop()
        server = try APIServer(sharing: previous, port: port)
        await admin.close()
        admin = APIClient(port: port, token: server.adminToken, wire: adminWire)
        let created = try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1.4", target: #"{"groups":["phoenix"]}"#))
        expect(created, 201)
        let id = try XCTUnwrap(created.json["id"]?.stringValue)
        // Devices that were backing off while the server was down come back within their
        // backoff (up to 30 s for the simulator), not at once.
        var finished = JSON.null
        try await eventually("the deployment finished", seconds: 90, every: .milliseconds(500)) {
            finished = try await admin.call("GET", "/api/v1/deployments/\(id)?wait=10").json
            return finished["status"] != .string("active")
        }
        XCTAssertEqual(finished["outcome"], .string("succeeded"), finished.serialized)
        child.signal(SIGINT)
        let output = registered + child.readToEnd()
        TestLog.append(output)
        XCTAssertEqual(child.wait(), 0, output)
        let line = try XCTUnwrap(output.split(separator: "\n").last { $0.hasPrefix("{") }, output)
        let summary = try JSON.parse(Array(line.utf8))
        XCTAssertEqual(summary["outcomes"], .object(["succeeded": .int(4)]), output)
        XCTAssertGreaterThan(summary["errors"]?.intValue ?? 0, 0, "the devices noticed the restart")
    }

    func testBadArgumentsAreRefusedClearly() throws {
        let child = try ChildProcess(productsDirectory.appendingPathComponent("flotilla-agent").path,
                                     ["simulate", "--token", "x", "--fail", "install=2"])
        let output = child.readToEnd()
        XCTAssertNotEqual(child.wait(), 0)
        XCTAssertTrue(output.contains("--fail install=2"), output)
    }
}
