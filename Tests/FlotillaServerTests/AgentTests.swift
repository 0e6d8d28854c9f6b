// The real `flotilla-agent run` process against a real server, on a "device" that is a
// temporary directory: the scenario table of issue 5, in the spirit of mender's
// Error_in_X / Killed_in_X. A reboot makes the agent exit (`--reboot-command exit`) and
// the test, as its supervisor, starts it again. FLOTILLA_AGENT_KILL_AFTER makes the agent
// SIGKILL itself right after an action, before its outcome reaches the journal.

import FlotillaAPI
import FlotillaFlowFiles
import FlotillaStore
import FlotillaTestSupport
import Foundation
import XCTest

final class AgentTests: XCTestCase {
    var server: APIServer!
    var admin: APIClient!
    var work: String!
    var device: ScriptedDevice!
    var modelsBefore: [String: String] = [:]

    /// A flow whose steps act on `${root}` (the device) and whose failures are parameters.
    static let flow = """
        name: agent-test
        app: demo-model
        app_version: "${version}"
        parameters:
          version: {type: string}
          artifact: {type: string}
          size: {type: integer}
          root: {type: string}
          install_extra: {type: string, default: "true"}
          install_timeout: {type: integer, default: 20}
          verify_extra: {type: string, default: "true"}
          rollback_extra: {type: string, default: "true"}
        steps:
          - name: fetch model
            download:
              artifact: "${artifact}"
              sha256: "${artifact}"
              size: "${size}"
              destination: "${root}/incoming/model-${version}.bin"
              timeout: 60
          - name: install model
            run:
              script: |
                set -eu
                cp "${root}/incoming/model-${version}.bin" "${root}/models/current.bin"
                echo "$FLOTILLA_PARAM_VERSION" > "${root}/models/VERSION"
                rm -f "${root}/models/old-only.txt"
                mkdir -p "${root}/models/extra" && echo new > "${root}/models/extra/added.txt"
                ${install_extra}
              timeout: "${install_timeout}"
          - reboot:
              deadline: 120
          - name: model answers
            verify:
              script: test "$(cat ${root}/models/VERSION)" = "${version}" && ${verify_extra}
              timeout: 10
        rollback:
          snapshot:
            - "${root}/models"
          script: echo restored >> "${root}/rollback.log" && ${rollback_extra}
          timeout: 30
        """

    var rig: AgentRig!

    /// `flow` as the JSON document the API takes (a flow with a reboot, a verify with a
    /// script, a rollback with snapshot and script: most of what a flow can say).
    static func flowDocument() throws -> JSON {
        let path = NSTemporaryDirectory() + "agent-test-\(UUID().uuidString).yaml"
        try flow.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try FlowFiles.document(atPath: path)
    }

    override func setUp() async throws {
        server = try APIServer()
        admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        rig = try await AgentRig.make(admin: admin)
        work = rig.work
        try writeKnownGood()
        modelsBefore = try tree(work + "/device/models")
        device = try await ScriptedDevice(server: server, admin: admin, name: "camera-1")
    }

    override func tearDown() async throws {
        await device?.client.close()
        await admin.close()
        await server.stop()
        rig?.remove()
    }

    // MARK: - Scenarios

    func testHappyPathInstallsReportsAndAdvancesTheKnownGood() async throws {
        let (state, output, starts) = try await deployAndRun()
        XCTAssertEqual(state["state"], .string("succeeded"), output)
        XCTAssertEqual(starts, 2, "one start, one after the reboot\n\(output)")
        XCTAssertEqual(try String(contentsOfFile: work + "/device/models/VERSION", encoding: .utf8), "2.0\n")
        XCTAssertEqual(try String(contentsOfFile: work + "/device/models/current.bin", encoding: .utf8), sampleArtifact)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/device/models/old-only.txt"))
        let shown = try await admin.call("GET", "/api/v1/devices/camera-1")
        XCTAssertEqual(shown.json["installed"]?["demo-model"], .string("2.0"), shown.text)
        XCTAssertEqual(shown.json["known_good"]?["demo-model"], .string("2.0"), shown.text)
        let status = try agentStatus()
        XCTAssertEqual(status["phase"], .string("idle"))
        XCTAssertEqual(status["installed"]?["demo-model"], .string("2.0"))
        XCTAssertEqual(status["last_result"]?["outcome"], .string("succeeded"))
        XCTAssertEqual(status["reports_queued"]?.intValue, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/state/snapshot"), "the snapshot is dropped after success")
    }

    /// Two deployments for the same app before the device polls: the newer supersedes the
    /// older queued one on the server, and the agent installs only the newer.
    func testTheNewerOfTwoQueuedDeploymentsWins() async throws {
        let created = try await admin.call("POST", "/api/v1/deployments", rig.deployment(version: "4.0"))
        XCTAssertEqual(created.status, 201, created.text)
        let olderID = try XCTUnwrap(created.json["id"]?.stringValue)
        let (state, output, _) = try await deployAndRun(version: "5.0")
        XCTAssertEqual(state["state"], .string("succeeded"), output)
        XCTAssertEqual(try String(contentsOfFile: work + "/device/models/VERSION", encoding: .utf8), "5.0\n")
        let superseded = try await admin.execution(olderID, device: "camera-1")
        XCTAssertEqual(superseded["state"], .string("canceled"), "\(superseded)")
        XCTAssertTrue(superseded["failure"]?["message"]?.stringValue?.contains("superseded") == true, "\(superseded)")
        XCTAssertFalse(output.contains("demo-model 4.0"), "the agent never saw the older one\n\(output)")
    }

    func testChecksumMismatchTouchesNothingAndFails() async throws {
        // The stored blob is corrupted after upload (same size): the agent must catch it.
        let blob = server.artifactDirectory + "/sha256/\(sampleSHA.prefix(2))/\(sampleSHA)"
        try String(repeating: "X", count: sampleArtifact.utf8.count).write(toFile: blob, atomically: false, encoding: .utf8)
        let (state, output, _) = try await deployAndRun()
        XCTAssertEqual(state["state"], .string("failed"), output)
        XCTAssertTrue(state["failure"]?["message"]?.stringValue?.contains("checksum mismatch") == true, "\(state)")
        XCTAssertEqual(try tree(work + "/device/models"), modelsBefore)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/device/incoming"), "nothing placed on the device")
    }

    /// A download cut short continues from the partial file: the device already holds the
    /// first half, and the server's copy of that half is corrupted. Only a download that
    /// resumes (Range) instead of starting over ends with the right checksum.
    func testADownloadResumesFromThePartialFile() async throws {
        let half = sampleArtifact.utf8.count / 2
        try FileManager.default.createDirectory(atPath: work + "/state/downloads", withIntermediateDirectories: true)
        try Data(sampleArtifact.utf8.prefix(half)).write(to: URL(fileURLWithPath: work + "/state/downloads/\(sampleSHA).part"))
        let blob = server.artifactDirectory + "/sha256/\(sampleSHA.prefix(2))/\(sampleSHA)"
        try Data(Array(String(repeating: "X", count: half).utf8) + Array(sampleArtifact.utf8.dropFirst(half))).write(to: URL(fileURLWithPath: blob))
        let (state, output, _) = try await deployAndRun()
        XCTAssertEqual(state["state"], .string("succeeded"), output)
        XCTAssertEqual(try String(contentsOfFile: work + "/device/models/current.bin", encoding: .utf8), sampleArtifact)
    }

    /// The server goes away while the install script runs. The agent carries on (install,
    /// reboot, verify) with its reports piling up in the outbox, and delivers them in order
    /// once the server is back: the server ends up agreeing on `succeeded`.
    func testReportsWaitInTheOutboxWhileTheServerIsDown() async throws {
        let port = server.port
        let gate = work + "/device/go"
        let created = try await admin.call("POST", "/api/v1/deployments", rig.deployment(
            version: "3.0", params: #""install_extra":"touch \#(work!)/device/running; while [ ! -f \#(gate) ]; do sleep 0.05; done","install_timeout":60"#))
        XCTAssertEqual(created.status, 201, created.text)
        let deployment = try XCTUnwrap(created.json["id"]?.stringValue)
        var agent = try startAgent(environment: [:])
        var output = ""
        for _ in 0..<300 where !FileManager.default.fileExists(atPath: work + "/device/running") { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: work + "/device/running"), "the install script started")
        // Down goes the server; the script finishes; the agent reboots (exits) and verifies.
        await device.client.close()
        await admin.close()
        let old = server!
        await old.stop()
        XCTAssertTrue(FileManager.default.createFile(atPath: gate, contents: nil))
        for _ in 0..<200 where agent.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        output += agent.readToEnd()
        XCTAssertEqual(agent.wait(), 0, "the reboot step exits the agent\n\(output)")
        agent = try startAgent(environment: [:])
        var queued = 0
        for _ in 0..<200 {
            queued = try agentStatus()["reports_queued"]?.intValue ?? 0
            if try String(contentsOfFile: work + "/device/models/VERSION", encoding: .utf8) == "3.0\n", queued >= 4 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        // step_succeeded(run), step_started(reboot), booted, step_started(verify) at least.
        XCTAssertGreaterThanOrEqual(queued, 4, "reports wait in the outbox")
        // Back comes the server, on the same port and database.
        server = try APIServer(sharing: old, port: port)
        admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        var state = JSON.null
        for _ in 0..<300 {
            state = try await admin.execution(deployment, device: "camera-1")
            if state["state"] == .string("succeeded") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        agent.signal(SIGKILL)
        output += agent.readToEnd()
        XCTAssertEqual(state["state"], .string("succeeded"), "\(state)\n\(output)")
        XCTAssertEqual(try agentStatus()["reports_queued"]?.intValue, 0, output)
        // In order and once each: the event log walks the flow with no transition twice.
        let db = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        let transitions = try db.query("""
            SELECT from_state || '>' || to_state FROM execution_events
            WHERE execution_id = \(try XCTUnwrap(state["execution_id"]?.stringValue))::uuid ORDER BY id
            """).map { try $0.decode(String.self) }
        XCTAssertEqual(transitions, ["queued>downloading", "downloading>installing", "installing>rebooting",
                                     "rebooting>verifying", "verifying>succeeded"])
    }

    func testInstallScriptFailureRestoresByteForByte() async throws {
        let (state, output, _) = try await deployAndRun(params: #""install_extra":"echo broken-model-archive >&2; exit 3""#)
        XCTAssertEqual(state["state"], .string("rolled_back"), output)
        XCTAssertEqual(state["failure"]?["exit_code"]?.intValue, 3, "\(state)")
        XCTAssertTrue(state["failure"]?["log_tail"]?.stringValue?.contains("broken-model-archive") == true, "the output tail is kept: \(state)")
        XCTAssertEqual(try tree(work + "/device/models"), modelsBefore)
        XCTAssertEqual(try String(contentsOfFile: work + "/device/rollback.log", encoding: .utf8), "restored\n")
        let shown = try await admin.call("GET", "/api/v1/devices/camera-1")
        XCTAssertNil(shown.json["known_good"]?["demo-model"], "a rollback does not advance the known-good")
    }

    func testInstallScriptTimeoutKillsItAndRestores() async throws {
        let (state, output, _) = try await deployAndRun(params: #""install_extra":"sleep 60","install_timeout":1"#)
        XCTAssertEqual(state["state"], .string("rolled_back"), output)
        XCTAssertTrue(state["failure"]?["message"]?.stringValue?.contains("timed out") == true, "\(state)")
        XCTAssertEqual(try tree(work + "/device/models"), modelsBefore)
    }

    func testFailedHealthCheckAfterTheRebootRollsBack() async throws {
        let (state, output, starts) = try await deployAndRun(params: #""verify_extra":"false""#)
        XCTAssertEqual(state["state"], .string("rolled_back"), output)
        XCTAssertEqual(starts, 2, output)
        XCTAssertEqual(try tree(work + "/device/models"), modelsBefore)
    }

    /// Killed_in_X: SIGKILL right after each action, then started again. The device ends
    /// on the new version or exactly on the old one, and the server agrees.
    func testKilledAfterEveryActionEndsConsistently() async throws {
        let cases: [(kill: String, params: String, expected: String)] = [
            ("download", "", "succeeded"),
            ("snapshot", "", "succeeded"),
            ("run", "", "rolled_back"),  // a script that may have half run is never trusted
            ("verify", "", "succeeded"),
            ("restore", #""install_extra":"exit 1""#, "rolled_back"),
            ("rollback_script", #""install_extra":"exit 1""#, "rolled_back"),
        ]
        for (index, scenario) in cases.enumerated() {
            if index > 0 { try resetDevice() }
            let (state, output, starts) = try await deployAndRun(version: "2.\(index)", params: scenario.params,
                                                                 environment: ["FLOTILLA_AGENT_KILL_AFTER": scenario.kill])
            XCTAssertEqual(state["state"], .string(scenario.expected), "killed after \(scenario.kill)\n\(output)")
            XCTAssertTrue(output.contains("KILL_AFTER=\(scenario.kill)"), "the kill happened: \(scenario.kill)\n\(output)")
            XCTAssertGreaterThanOrEqual(starts, 2, scenario.kill)
            if scenario.kill == "verify" {
                // The restarted agent said it runs the health check again: counted, deadline renewed.
                XCTAssertEqual(state["attempt"]?.intValue, 2, "the re-run was announced\n\(output)")
            }
            if scenario.expected == "rolled_back" {
                XCTAssertEqual(try tree(work + "/device/models"), modelsBefore, "killed after \(scenario.kill)")
            } else {
                XCTAssertEqual(try String(contentsOfFile: work + "/device/models/VERSION", encoding: .utf8), "2.\(index)\n")
            }
        }
    }

    // MARK: - Harness

    /// Deploys agent-test `version` to the device and supervises the agent (AgentRig) until
    /// the server's execution is terminal.
    private func deployAndRun(version: String = "2.0", params: String = "", environment: [String: String] = [:])
        async throws -> (execution: JSON, output: String, starts: Int) {
        let created = try await admin.call("POST", "/api/v1/deployments", rig.deployment(version: version, params: params))
        XCTAssertEqual(created.status, 201, created.text)
        let deployment = try XCTUnwrap(created.json["id"]?.stringValue)
        return try await rig.supervise(deployment, admin: admin) { try startAgent(environment: environment) }
    }

    private func startAgent(environment: [String: String]) throws -> ChildProcess {
        try rig.startAgent(["--config", work + "/none.conf", "--server", server.url, "--token", device.token], environment: environment)
    }

    private func agentStatus() throws -> JSON {
        let (status, output) = try ChildProcess.run(productsDirectory.appendingPathComponent("flotilla-agent").path,
                                                    ["status", "--json", "--config", work + "/none.conf", "--state-dir", work + "/state"])
        XCTAssertEqual(status, 0, output)
        return try JSON.parse(Array(output.utf8))
    }

    /// The known-good on the device: version 1.0, a file the update deletes, a private mode.
    private func writeKnownGood() throws {
        try? FileManager.default.removeItem(atPath: work + "/device/models")
        try FileManager.default.createDirectory(atPath: work + "/device/models", withIntermediateDirectories: true)
        try "1.0\n".write(toFile: work + "/device/models/VERSION", atomically: true, encoding: .utf8)
        try "old weights\n".write(toFile: work + "/device/models/current.bin", atomically: true, encoding: .utf8)
        try "only in 1.0\n".write(toFile: work + "/device/models/old-only.txt", atomically: true, encoding: .utf8)
        XCTAssertEqual(chmod(work + "/device/models/current.bin", 0o640), 0)
    }

    /// Puts the known-good back between sub-scenarios (a succeeded one changed it).
    private func resetDevice() throws {
        try writeKnownGood()
        XCTAssertEqual(try tree(work + "/device/models"), modelsBefore)
    }

    /// Every path under `root` → its kind, mode and contents: equal trees are byte-for-byte equal.
    private func tree(_ root: String) throws -> [String: String] {
        var result: [String: String] = [:]
        let paths = [""] + (FileManager.default.subpaths(atPath: root) ?? [])
        for path in paths {
            let full = root + (path.isEmpty ? "" : "/" + path)
            var info = stat()
            guard lstat(full, &info) == 0 else { continue }
            let mode = String(info.st_mode & 0o7777, radix: 8)
            if (info.st_mode & S_IFMT) == S_IFREG {
                result[path] = "file \(mode) " + (try String(contentsOfFile: full, encoding: .utf8))
            } else {
                result[path] = "other \(mode) \(info.st_mode & S_IFMT)"
            }
        }
        return result
    }
}
