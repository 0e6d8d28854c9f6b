// The real `flotilla` binary against a real server: log in (config written 0600), create
// groups, apply flows (new, unchanged, changed with its diff), push an artifact, deploy
// with --wait while `flotilla-agent simulate` runs the devices, and the exit codes for a
// deployment that succeeds (0), one that rolls back (8), a bad token (4), an unreachable
// server (1).

import FlotillaAPI
import FlotillaFlowFiles
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

final class CLITests: XCTestCase {
    var server: APIServer!
    var home: String!

    override func setUp() async throws {
        server = try APIServer()
        home = NSTemporaryDirectory() + "flotilla-cli-home-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        await server.stop()
        try? FileManager.default.removeItem(atPath: home)
    }

    /// Runs `flotilla` off the cooperative pool (the server under test shares this process).
    func cli(_ arguments: [String], environment extra: [String: String] = [:], shell: Bool = false) async throws -> (status: Int32, output: String) {
        // "" unsets a variable (NO_COLOR for the terminal run).
        let environment = ["HOME": home!, "PATH": "/usr/bin:/bin", "NO_COLOR": "1"].merging(extra) { $1 }.filter { !$0.value.isEmpty }
        let executable = shell ? "/bin/sh" : productsDirectory.appendingPathComponent("flotilla").path
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try ChildProcess.run(executable, arguments, environment: environment) })
            }
        }
    }

    /// Starts the simulator for `devices` devices of `group` and waits until they registered.
    func simulate(group: String, devices: Int, extra: [String] = []) throws -> ChildProcess {
        let child = try ChildProcess(productsDirectory.appendingPathComponent("flotilla-agent").path,
                                     ["simulate", "--server", server.url, "--token", server.adminToken, "--devices", String(devices),
                                      "--group", group, "--prefix", "\(group)-", "--step-time", "0", "--poll-wait", "1",
                                      "--executions", String(devices), "--duration", "60"] + extra)
        var output = ""
        while let line = child.readLine() {
            output += line
            if line.contains("registered") { break }
        }
        XCTAssertTrue(output.contains("registered \(devices) devices"), output)
        return child
    }

    func testAnOperatorsSessionFromLoginToARolledBackDeployment() async throws {
        // Login checks the token, then saves it where later commands find it.
        let login = try await cli(["login", "--server", server.url, "--token", server.adminToken])
        XCTAssertEqual(login.status, 0, login.output)
        let config = home + "/.config/flotilla/config"
        let mode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: config)[.posixPermissions] as? Int)
        XCTAssertEqual(mode & 0o777, 0o600)
        let refused = try await cli(["login", "--server", server.url, "--token", "flt_a_wrong"], environment: ["FLOTILLA_CONFIG": home + "/other"])
        XCTAssertEqual(refused.status, 4, refused.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: home + "/other"), "a refused login saves nothing")

        for group in ["calm", "stormy"] {
            let created = try await cli(["groups", "create", group])
            XCTAssertEqual(created.status, 0, created.output)
        }
        let duplicate = try await cli(["groups", "create", "calm"])
        XCTAssertEqual(duplicate.status, 1)
        XCTAssertTrue(duplicate.output.contains("exists"), duplicate.output)

        // Flows: three new ones, then the same again (unchanged), then a changed copy.
        let applied = try await cli(["flows", "apply", TestCluster.repositoryRoot + "/flows"])
        XCTAssertEqual(applied.status, 0, applied.output)
        XCTAssertTrue(applied.output.contains("hardhat-model: v1 (new flow)"), applied.output)
        let again = try await cli(["flows", "apply", TestCluster.repositoryRoot + "/flows/hardhat-model.yaml"])
        XCTAssertTrue(again.output.contains("hardhat-model: unchanged (v1)"), again.output)
        let changed = home + "/hardhat-model.yaml"
        let text = try String(contentsOfFile: TestCluster.repositoryRoot + "/flows/hardhat-model.yaml", encoding: .utf8)
        try text.replacingOccurrences(of: "timeout: 3600", with: "timeout: 7200").write(toFile: changed, atomically: true, encoding: .utf8)
        let v2 = try await cli(["flows", "apply", changed])
        XCTAssertTrue(v2.output.contains("hardhat-model: v1 → v2  changed: steps[0].timeout"), v2.output)
        let listed = try await cli(["flows", "list", "--json"])
        let flows = try JSON.parse(Array(listed.output.utf8))
        XCTAssertEqual(flows.arrayValue?.map { $0.objectValue?["name"]?.stringValue ?? "" }, ["config-file", "crop-disease-model", "hardhat-model"])

        // The artifact: pushed with its checksum, which the CLI prints for the deploy.
        let model = home + "/model.zip"
        try String(repeating: "weights\n", count: 5000).write(toFile: model, atomically: true, encoding: .utf8)
        let pushed = try await cli(["artifacts", "push", model])
        XCTAssertEqual(pushed.status, 0, pushed.output)
        let sha = try sha256Hex(ofFile: model)
        XCTAssertTrue(pushed.output.contains("sha256 \(sha)"), pushed.output)
        let params = ["--param", "version=1.4", "--param", "artifact=\(sha)", "--param", "size=40000"]

        // A clean run: --wait ends with exit 0 and the devices run 1.4.
        let calm = try simulate(group: "calm", devices: 5)
        let good = try await cli(["deploy", "hardhat-model", "--group", "calm", "--wait", "--interval", "0.2"] + params)
        XCTAssertEqual(good.status, 0, good.output)
        XCTAssertTrue(good.output.contains("completed 5/5 done: succeeded 5 (outcome succeeded)"), good.output)
        XCTAssertEqual(calm.wait(), 0)
        let shown = try await cli(["devices", "show", "calm-000002"])
        XCTAssertTrue(shown.output.contains("hardhat-detector  1.4        1.4"), "installed and known-good: \(shown.output)")

        // Every install fails: every device rolls back and --wait exits 8. A follower of the
        // event log sees the four rollbacks as they happen.
        let follower = try ChildProcess(productsDirectory.appendingPathComponent("flotilla").path,
                                        ["events", "--follow", "--json", "--interval", "0.2", "--limit", "1"],
                                        environment: ["HOME": home, "NO_COLOR": "1"])
        let watchdog = DispatchWorkItem { follower.signal(SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: watchdog)
        let stormy = try simulate(group: "stormy", devices: 4, extra: ["--fail", "run=1"])
        let bad = try await cli(["deploy", "hardhat-model@2", "--group", "stormy", "--wait", "--interval", "0.2"] + params)
        XCTAssertEqual(bad.status, 8, bad.output)
        XCTAssertTrue(bad.output.contains("rolled_back 4 (outcome failed)"), bad.output)
        XCTAssertEqual(stormy.wait(), 0)
        var followed: [JSON] = []
        while followed.filter({ $0.objectValue?["to"] == .string("rolled_back") }).count < 4, let line = follower.readLine() {
            if let event = try? JSON.parse(Array(line.utf8)) { followed.append(event) }
        }
        follower.signal(SIGTERM)
        watchdog.cancel()
        XCTAssertEqual(followed.filter { $0.objectValue?["to"] == .string("rolled_back") }.count, 4, "the follower saw every rollback")
        let ids = followed.compactMap { $0.objectValue?["id"]?.intValue }
        XCTAssertEqual(ids, ids.sorted(), "in order")
        XCTAssertEqual(Set(ids).count, ids.count, "each once")
        let deployments = try JSON.parse(Array(try await cli(["deployments", "list", "--json"]).output.utf8))
        let id = try XCTUnwrap(deployments.arrayValue?.first?.objectValue?["id"]?.stringValue)
        let show = try await cli(["deployments", "show", id])
        XCTAssertTrue(show.output.contains("4        rolled_back  unpack and restart detector  simulated run failure"), show.output)
        let watched = try await cli(["deployments", "watch", id])
        XCTAssertEqual(watched.status, 8, "watching an ended deployment reports how it ended")
        // On a terminal (a pseudo-terminal from script(1)) the frame has colour and a bar.
        let flotilla = productsDirectory.appendingPathComponent("flotilla").path
        let onTTY = try await cli(["-c", "/usr/bin/script -qfec '\(flotilla) deployments watch \(id)' /dev/null"],
                                  environment: ["TERM": "xterm", "NO_COLOR": ""], shell: true)
        XCTAssertEqual(onTTY.status, 8, onTTY.output)
        XCTAssertTrue(onTTY.output.contains("[##############################] 4/4 done"), onTTY.output)
        XCTAssertTrue(onTTY.output.contains("\u{1B}[31mrolled_back\u{1B}[0m 4"), "red on a terminal: \(onTTY.output)")
        XCTAssertTrue(onTTY.output.contains("newest failures"), onTTY.output)
        let rolledBack = try await cli(["devices", "list", "--state", "rolled_back"])
        XCTAssertEqual(rolledBack.output.split(separator: "\n").count, 5, rolledBack.output)
        let events = try await cli(["events", "--deployment", id, "--json", "--limit", "500"])
        let transitions = events.output.split(separator: "\n").compactMap { try? JSON.parse(Array($0.utf8)) }
        XCTAssertEqual(transitions.count, 4 * 4, "downloading, installing, rolling_back, rolled_back per device: \(events.output)")

        // The audit log names who did it: the login's token applied, pushed and deployed.
        let audit = try await cli(["audit", "--limit", "500"])
        XCTAssertEqual(audit.status, 0, audit.output)
        XCTAssertTrue(audit.output.contains("bootstrap admin  POST /api/v1/deployments  201  127.0.0.1"), audit.output)

        // What a pipeline sees when things are wrong.
        let badParam = try await cli(["deploy", "hardhat-model", "--group", "calm", "--param", "size=big"])
        XCTAssertEqual(badParam.status, 2, badParam.output)
        let invalid = try await cli(["deploy", "hardhat-model", "--group", "calm", "--param", "version=2"])
        XCTAssertEqual(invalid.status, 1)
        XCTAssertTrue(invalid.output.contains("params.artifact: is required"), invalid.output)
        let badToken = try await cli(["devices", "list", "--token", "flt_a_nope"])
        XCTAssertEqual(badToken.status, 4, badToken.output)
        let unreachable = try await cli(["devices", "list", "--server", "http://127.0.0.1:1"])
        XCTAssertEqual(unreachable.status, 1)
        XCTAssertTrue(unreachable.output.contains("cannot reach the server at http://127.0.0.1:1"), unreachable.output)
    }

    /// A listing cut at --limit says that more exist (on stderr; --json stays one document).
    func testAListingCutAtItsLimitSaysMoreExist() async throws {
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        for index in 1...3 { expect(try await admin.call("POST", "/api/v1/devices", #"{"name":"cam-\#(index)"}"#), 201) }
        await admin.close()
        let connection = ["--server", server.url, "--token", server.adminToken]
        let cut = try await cli(["devices", "list", "--limit", "2"] + connection)
        XCTAssertEqual(cut.status, 0, cut.output)
        XCTAssertTrue(cut.output.contains("(the first 2 shown; more exist: --limit N or --all)"), cut.output)
        let whole = try await cli(["devices", "list", "--all"] + connection)
        XCTAssertFalse(whole.output.contains("more exist"), whole.output)
        XCTAssertTrue(whole.output.contains("cam-3"), whole.output)
        let exact = try await cli(["devices", "list", "--limit", "3"] + connection)
        XCTAssertFalse(exact.output.contains("more exist"), "all three fit: \(exact.output)")
    }
}
