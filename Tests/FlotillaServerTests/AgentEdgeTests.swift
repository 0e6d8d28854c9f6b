// More of the real agent's scenario table: a rollback script that fails (rollback_failed,
// with the reason), a real reboot command (one that takes the agent down, and one that
// fails), and the agent over TLS with a private CA and its own client certificate (mTLS).

import FlotillaAPI
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

final class AgentEdgeTests: XCTestCase {
    var server: APIServer!
    var admin: APIClient!
    var rig: AgentRig!
    var device: ScriptedDevice!

    private func prepare(tls: TLSServerConfiguration? = nil) async throws {
        server = try APIServer(tls: tls)
        admin = APIClient(port: server.port, token: server.adminToken, wire: .h2,
                          tls: tls.map { _ in TLSClientConfiguration(trustedCAPath: TestCertificate.caPath) })
        rig = try await AgentRig.make(admin: admin)
        device = try await ScriptedDevice(server: server, admin: admin, name: "camera-1")
    }

    override func tearDown() async throws {
        await device?.client.close()
        await admin?.close()
        await server?.stop()
        rig?.remove()
    }

    private func deployAndRun(version: String, params: String = "", agent arguments: [String] = [], url: String? = nil)
        async throws -> (execution: JSON, output: String, starts: Int) {
        let created = try await admin.call("POST", "/api/v1/deployments", rig.deployment(version: version, params: params))
        expect(created, 201)
        let deployment = try XCTUnwrap(created.json["id"]?.stringValue)
        return try await rig.supervise(deployment, admin: admin) {
            try rig.startAgent(["--config", rig.work + "/none.conf", "--server", url ?? server.url, "--token", device.token] + arguments)
        }
    }

    func testAFailingRollbackScriptEndsInRollbackFailedWithTheReason() async throws {
        try await prepare()
        let (execution, output, _) = try await deployAndRun(version: "2.0", params: #""install_extra":"exit 1","rollback_extra":"exit 7""#)
        XCTAssertEqual(execution["state"], .string("rollback_failed"), output)
        XCTAssertEqual(execution["failure"]?["exit_code"], .int(1), "the failure that started the rollback is kept")
        let reason = execution["rollback_failure"]?["message"]?.stringValue ?? ""
        XCTAssertTrue(reason.contains("rollback script"), "\(execution)")
        XCTAssertEqual(execution["rollback_failure"]?["exit_code"], .int(7))
    }

    func testARealRebootCommandTakesTheAgentDownAndItResumes() async throws {
        try await prepare()
        // "Rebooting" kills the agent (its parent) outright, as a power cycle would.
        let reboot = "echo reboot >> \(rig.work)/reboots; kill -KILL $PPID; sleep 5"
        let (execution, output, starts) = try await deployAndRun(version: "2.0", agent: ["--reboot-command", reboot])
        XCTAssertEqual(execution["state"], .string("succeeded"), output)
        XCTAssertEqual(try String(contentsOfFile: rig.work + "/reboots", encoding: .utf8), "reboot\n", "the command ran once")
        XCTAssertEqual(starts, 2, output)
        XCTAssertEqual(try String(contentsOfFile: rig.device + "/models/VERSION", encoding: .utf8), "2.0\n")

        let (failed, log, _) = try await deployAndRun(version: "3.0", agent: ["--reboot-command", "echo no power >&2; exit 3"])
        XCTAssertEqual(failed["state"], .string("rolled_back"), log)
        XCTAssertTrue(failed["failure"]?["message"]?.stringValue?.contains("the reboot command failed") ?? false, "\(failed)")
        XCTAssertEqual(try String(contentsOfFile: rig.device + "/models/VERSION", encoding: .utf8), "2.0\n", "back on the known-good")
    }

    func testTheAgentOverTLSWithItsOwnCertificate() async throws {
        let pki = try TestPKI(directory: NSTemporaryDirectory() + "flotilla-agent-pki-" + UUID().uuidString, name: "devices")
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        var tls = TestCertificate.server
        tls.clientCAPath = pki.caPath
        try await prepare(tls: tls)
        let identity = try pki.issue("camera-1")
        let url = "https://localhost:\(server.port)"
        let (execution, output, _) = try await deployAndRun(version: "2.0", agent: [
            "--ca-file", TestCertificate.caPath, "--client-cert", identity.certificate, "--client-key", identity.key,
        ], url: url)
        XCTAssertEqual(execution["state"], .string("succeeded"), output)

        // Without the private CA the agent cannot trust the server; without its certificate
        // the server does not trust it. Either way nothing reaches the device.
        for arguments in [["--client-cert", identity.certificate, "--client-key", identity.key], ["--ca-file", TestCertificate.caPath]] {
            let agent = try rig.startAgent(["--config", rig.work + "/none.conf", "--server", url, "--token", device.token] + arguments)
            let refusal = arguments.contains("--ca-file") ? "client_certificate_required" : "server unreachable"
            let seen = await agent.output(showing: [refusal], within: 20)
            agent.signal(SIGKILL)
            let log = seen + agent.readToEnd()
            _ = agent.wait()
            XCTAssertTrue(log.contains(refusal), log)
        }
    }
}
