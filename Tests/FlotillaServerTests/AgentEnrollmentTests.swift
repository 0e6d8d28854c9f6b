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
    func testAnEnrolledAgentWaitsForApprovalThenRunsAFlow() async throws {
        let server = try APIServer()
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        let work = NSTemporaryDirectory() + "flotilla-enroll-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileManager.default.createDirectory(atPath: work + "/device/models", withIntermediateDirectories: true)
        try "1.0\n".write(toFile: work + "/device/models/VERSION", atomically: true, encoding: .utf8)
        try AgentTests.flow.write(toFile: work + "/agent-test.yaml", atomically: true, encoding: .utf8)
        expect(try await admin.call("POST", "/api/v1/flows", try FlowFiles.document(atPath: work + "/agent-test.yaml").serialized), 201)
        try await admin.uploadSampleArtifact()
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
        let body = #"{"flow":{"name":"agent-test"},"target":{"groups":["field"]},"params":{"version":"2.0","artifact":"\#(sampleSHA)","size":\#(sampleArtifact.utf8.count),"root":"\#(work)/device"}}"#
        var log = ""
        var running = try startAgent(agent, config: config, state: work + "/state")
        try await Task.sleep(for: .milliseconds(1500))
        expect(try await admin.call("POST", "/api/v1/deployments", body), 422)  // a pending device is not a target
        expect(try await admin.call("POST", "/api/v1/devices/sensor-9/accept"), 200)
        let deployed = try await admin.call("POST", "/api/v1/deployments", body)
        expect(deployed, 201)
        let deployment = try XCTUnwrap(deployed.json["id"]?.stringValue)
        var execution = JSON.null
        for _ in 0..<300 {
            if !running.isRunning {  // the flow's reboot: the agent exits, its supervisor (we) restarts it
                log += running.readToEnd()
                running = try startAgent(agent, config: config, state: work + "/state")
            }
            execution = try await admin.execution(deployment, device: "sensor-9")
            if execution["state"] == .string("succeeded") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        running.signal(SIGKILL)
        log += running.readToEnd()
        _ = running.wait()
        TestLog.append(log)
        XCTAssertEqual(execution["state"], .string("succeeded"), log)
        XCTAssertTrue(log.contains("device_pending"), "the pending device was refused first\n\(log)")
        XCTAssertTrue(log.contains(" configured"), log)
        XCTAssertFalse(log.contains("trust on first use"), log)
        XCTAssertEqual(try String(contentsOfFile: work + "/device/models/VERSION", encoding: .utf8), "2.0\n")
        await admin.close()
        await server.stop()
    }

    private func startAgent(_ agent: String, config: String, state: String) throws -> ChildProcess {
        try ChildProcess(agent, ["run", "--config", config, "--state-dir", state, "--poll-wait", "1", "--poll-max", "1",
                                 "--reboot-command", "exit"])
    }
}
