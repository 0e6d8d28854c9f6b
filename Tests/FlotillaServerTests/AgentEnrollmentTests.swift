// `flotilla-agent enroll` end to end: the real agent trades an enrollment token for its
// own device token and the manifest key (written into its configuration file, 0600, other
// lines kept), waits while pending, and once an operator accepts it runs a flow to success
// with the key it was handed (not one pinned on first use).

import FlotillaAPI
import FlotillaFlowFiles
import FlotillaStore
import FlotillaTestSupport
import Foundation
import XCTest

final class AgentEnrollmentTests: XCTestCase {
    /// A configuration file that cannot be written is found out before the enrollment: no use
    /// is spent, no device made, no token issued into nowhere.
    func testAnUnwritableConfigurationSpendsNoEnrollment() async throws {
        let server = try APIServer()
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"field"}"#), 201)
        let created = try await admin.call("POST", "/api/v1/enrollment-tokens", #"{"name":"field-day","group":"field"}"#)
        let secret = try XCTUnwrap(created.json["secret"]?.stringValue)
        let config = NSTemporaryDirectory() + "no-such-directory-\(UUID().uuidString)/agent.conf"
        let (status, output) = try ChildProcess.run(productsDirectory.appendingPathComponent("flotilla-agent").path,
                                                    ["enroll", "--config", config, "--server", server.url,
                                                     "--enrollment-token", secret, "--name", "sensor-1"])
        XCTAssertNotEqual(status, 0, output)
        XCTAssertTrue(output.contains("nothing was enrolled"), output)
        let listed = try await admin.call("GET", "/api/v1/enrollment-tokens")
        XCTAssertEqual(listed.json["items"]?[0]?["uses"], .int(0), listed.text)
        expect(try await admin.call("GET", "/api/v1/devices/sensor-1"), 404)
        await admin.close()
        await server.stop()
    }

    /// `status` on a machine where the agent never ran says so, and creates nothing.
    func testStatusWithoutAgentStateSaysSoAndCreatesNothing() throws {
        let stateDir = NSTemporaryDirectory() + "no-agent-\(UUID().uuidString)"
        let (status, output) = try ChildProcess.run(productsDirectory.appendingPathComponent("flotilla-agent").path,
                                                    ["status", "--config", stateDir + ".conf", "--state-dir", stateDir])
        XCTAssertEqual(status, 1, output)
        XCTAssertTrue(output.contains("no agent state in \(stateDir)"), output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stateDir), "a status created the state directory")
    }

    func testAnEnrolledAgentWaitsForApprovalThenRunsAFlow() async throws {
        let server = try APIServer()
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        let rig = try await AgentRig.make(admin: admin)
        defer { rig.remove() }
        let work = rig.work
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"field"}"#), 201)
        let created = try await admin.call("POST", "/api/v1/enrollment-tokens", #"{"name":"field-day","group":"field","require_approval":true}"#)
        let secret = try XCTUnwrap(created.json["secret"]?.stringValue)

        let agent = productsDirectory.appendingPathComponent("flotilla-agent").path
        let config = work + "/agent.conf"
        try "# written by the installer\npoll_min = 0\n".write(toFile: config, atomically: true, encoding: .utf8)
        let (status, output) = try ChildProcess.run(agent, ["enroll", "--config", config, "--server", server.url,
                                                            "--enrollment-token", secret, "--name", "sensor-9", "--label", "crop=wheat"])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("pending"), output)
        let written = try String(contentsOfFile: config, encoding: .utf8)
        let key = try await admin.call("GET", "/api/v1/agent/signing-key")
        XCTAssertTrue(written.hasPrefix("# written by the installer\npoll_min = 0\n"), written)
        XCTAssertTrue(written.contains("token = flt_d_"), written)
        XCTAssertTrue(written.contains("signing_key = \(key.json["public_key"]?.stringValue ?? "?")\n"), written)
        let mode = try FileManager.default.attributesOfItem(atPath: config)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
        let (again, refusal) = try ChildProcess.run(agent, ["enroll", "--config", config, "--enrollment-token", secret])
        XCTAssertNotEqual(again, 0)
        XCTAssertTrue(refusal.contains("--force"), refusal)
        let device = try await admin.call("GET", "/api/v1/devices/sensor-9")
        XCTAssertEqual(device.json["status"], .string("pending"))
        XCTAssertEqual(device.json["labels"]?["crop"], .string("wheat"))

        // The agent polls while pending (refused, backing off), then works once accepted.
        let body = rig.deployment(version: "2.0", target: #"{"groups":["field"]}"#)
        let waiting = try rig.startAgent(["--config", config])
        let refused = await waiting.output(showing: ["device_pending"], within: 20)
        TestLog.append(refused)
        expect(try await admin.call("POST", "/api/v1/deployments", body), 422)  // a pending device is not a target
        expect(try await admin.call("POST", "/api/v1/devices/sensor-9/accept"), 200)
        let deployed = try await admin.call("POST", "/api/v1/deployments", body)
        expect(deployed, 201)
        let deployment = try XCTUnwrap(deployed.json["id"]?.stringValue)
        // The same process goes on: accepted, it picks the deployment up within poll_max.
        var first: ChildProcess? = waiting
        let (execution, supervised, _) = try await rig.supervise(deployment, device: "sensor-9", admin: admin) {
            if let running = first { first = nil; return running }
            return try rig.startAgent(["--config", config])
        }
        let log = refused + supervised  // the same process's output, before and after the acceptance
        XCTAssertEqual(execution["state"], .string("succeeded"), log)
        XCTAssertTrue(log.contains("device_pending"), "the pending device was refused first\n\(log)")
        XCTAssertTrue(log.contains(" configured"), log)
        XCTAssertFalse(log.contains("trust on first use"), log)
        XCTAssertEqual(try String(contentsOfFile: work + "/device/models/VERSION", encoding: .utf8), "2.0\n")
        await admin.close()
        await server.stop()
    }
}
