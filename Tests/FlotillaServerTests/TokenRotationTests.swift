// A device rotating its own token: the old one works until the new one is first used
// (then it stops, on every replica); a rotation whose answer was lost is simply done again;
// and the real agent, rotated by `flotilla-agent rotate-token` while it runs, switches at
// its next poll.

import FlotillaAPI
import FlotillaStore
import FlotillaTestSupport
import Foundation
import XCTest

final class TokenRotationTests: ServerTestCase {
    private func call(_ method: String, _ path: String, token: String, on target: APIServer? = nil) async throws -> APIResponse {
        let client = APIClient(port: (target ?? server).port, token: token, wire: .h1)
        defer { Task { await client.close() } }
        return try await client.call(method, path)
    }

    private func rotate(_ token: String) async throws -> String {
        let answer = try await call("POST", "/api/v1/agent/token", token: token)
        expect(answer, 200)
        return try XCTUnwrap(answer.json["device_token"]?.stringValue)
    }

    func testTheOldTokenWorksUntilTheNewOneIsUsed() async throws {
        let replica = try APIServer(sharing: server)
        defer { Task { await replica.stop() } }
        try await server.waitUntilListening()
        try await replica.waitUntilListening()
        let device = try await ScriptedDevice(server: server, admin: admin, name: "cam-1")
        let original = device.token
        expect(try await call("GET", "/api/v1/agent/next", token: original, on: replica), 204)  // cached there

        let lost = try await rotate(original)  // pretend this answer never arrived
        expect(try await call("GET", "/api/v1/agent/next", token: original), 204, code: nil)
        let second = try await rotate(original)  // so the device rotates again with what it has
        expect(try await call("GET", "/api/v1/agent/next", token: lost), 401, code: "invalid_token")

        expect(try await call("GET", "/api/v1/agent/next", token: second), 204)  // first use: the switch
        expect(try await call("GET", "/api/v1/agent/next", token: original), 401, code: "invalid_token")
        try await eventually("the other replica forgets the old token too") {
            try await call("GET", "/api/v1/agent/next", token: original, on: replica).status == 401
        }

        let audit = try await admin.call("GET", "/api/v1/audit")
        let rotations = audit.json["items"]?.arrayValue?.filter { $0["path"] == .string("/api/v1/agent/token") } ?? []
        XCTAssertEqual(rotations.count, 2)
        XCTAssertEqual(rotations.first?["token_name"], .string("device cam-1"), audit.text)

        // An operator's revocation ends a rotation in progress as well.
        let third = try await rotate(second)
        expect(try await admin.call("POST", "/api/v1/devices/cam-1/revoke-token"), 200)
        expect(try await call("GET", "/api/v1/agent/next", token: second), 401)
        expect(try await call("GET", "/api/v1/agent/next", token: third), 401, code: "token_revoked")
        await device.client.close()
    }

    func testTheRunningAgentSwitchesAfterRotateToken() async throws {
        let rig = try await AgentRig.make(admin: admin)
        defer { rig.remove() }
        let device = try await ScriptedDevice(server: server, admin: admin, name: "camera-1")
        let config = rig.work + "/agent.conf"
        try "server = \(server.url)\ntoken = \(device.token)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let agent = try rig.startAgent(["--config", config])
        defer { agent.signal(SIGKILL); TestLog.append(agent.readToEnd()); _ = agent.wait() }

        let binary = productsDirectory.appendingPathComponent("flotilla-agent").path
        let (status, output) = try ChildProcess.run(binary, ["rotate-token", "--config", config])
        XCTAssertEqual(status, 0, output)
        let written = try XCTUnwrap(try AgentOptionsFile.token(config))
        XCTAssertNotEqual(written, device.token)
        // The agent's next poll uses the new token, which retires the old one.
        try await eventually("the running agent switched to the rotated token", seconds: 10, every: .milliseconds(100)) {
            try await call("GET", "/api/v1/agent/next", token: device.token).status == 401
        }
        expect(try await call("GET", "/api/v1/agent/next", token: written), 204)
        let (again, refusal) = try ChildProcess.run(binary, ["rotate-token", "--config", rig.work + "/none.conf", "--token", written,
                                                             "--server", server.url])
        XCTAssertNotEqual(again, 0, "a token from a flag cannot be saved anywhere")
        XCTAssertTrue(refusal.contains("configuration file"), refusal)
        await device.client.close()
    }
}

/// Reads `token = …` from an agent configuration file.
enum AgentOptionsFile {
    static func token(_ path: String) throws -> String? {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
            .first { $0.hasPrefix("token =") }.map { String($0.dropFirst("token =".count)).trimmingCharacters(in: .whitespaces) }
    }
}
