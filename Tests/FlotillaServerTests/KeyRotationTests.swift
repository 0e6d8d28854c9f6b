// Rotating the manifest-signing key with the real agent: the server announces its next key,
// endorsed by the current one; the agent keeps it; a server that signs with it is then
// trusted, and the rotation sticks across restarts even though the configuration still
// names the old key. A next key not endorsed by the pinned key is ignored, and manifests
// signed by it are refused.

import FlotillaAPI
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

final class KeyRotationTests: XCTestCase {
    func testAgentsFollowAnEndorsedRotationAndIgnoreAnUnendorsedOne() async throws {
        let old = try Ed25519.PrivateKey.generate(), new = try Ed25519.PrivateKey.generate()
        let server = try APIServer(signer: ManifestSigner(key: old, next: new))
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        let rig = try await AgentRig.make(admin: admin)
        defer { rig.remove() }
        let device = try await ScriptedDevice(server: server, admin: admin, name: "camera-1")
        // As `flotilla-agent enroll` writes it: the key of that day.
        let config = rig.work + "/agent.conf"
        try "token = \(device.token)\nsigning_key = \(Base64URL.encode(old.publicKey))\n".write(toFile: config, atomically: true, encoding: .utf8)
        func run(_ version: String, on target: APIServer) async throws -> (JSON, String) {
            let created = try await admin.call("POST", "/api/v1/deployments", rig.deployment(version: version))
            expect(created, 201)
            let (execution, output, _) = try await rig.supervise(try XCTUnwrap(created.json["id"]?.stringValue), admin: admin) {
                try rig.startAgent(["--config", config, "--server", target.url])
            }
            return (execution, output)
        }
        func trust() throws -> [String: JSON] {
            try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: rig.work + "/state/trust.json")))).objectValue ?? [:]
        }

        let (first, log1) = try await run("2.0", on: server)
        XCTAssertEqual(first["state"], .string("succeeded"), log1)
        XCTAssertTrue(log1.contains("announced its next manifest key"), log1)
        XCTAssertEqual(try trust()["next_key"], .string(Base64URL.encode(new.publicKey)))

        // The rotation on the servers' side: they sign with the new key now.
        let rotated = try APIServer(sharing: server, signer: ManifestSigner(key: new))
        let (second, log2) = try await run("3.0", on: rotated)
        XCTAssertEqual(second["state"], .string("succeeded"), log2)
        XCTAssertTrue(log2.contains("signs with its next manifest key now"), log2)
        XCTAssertEqual(try trust()["public_key"], .string(Base64URL.encode(new.publicKey)))
        let (third, log3) = try await run("4.0", on: rotated)  // the configuration still names the old key
        XCTAssertEqual(third["state"], .string("succeeded"), log3)
        XCTAssertTrue(log3.contains("pinned earlier"), log3)

        // A server announcing a next key its own (unpinned) key endorsed: ignored, and refused.
        let rogueKey = try Ed25519.PrivateKey.generate(), rogueNext = try Ed25519.PrivateKey.generate()
        let rogue = try APIServer(sharing: server, signer: ManifestSigner(key: rogueKey, next: rogueNext))
        let created = try await admin.call("POST", "/api/v1/deployments", rig.deployment(version: "5.0"))
        expect(created, 201)
        let agent = try rig.startAgent(["--config", config, "--server", rogue.url])
        let seen = await agent.output(showing: ["ignoring an announced next manifest key", "refusing the manifest: bad signature"], within: 20)
        agent.signal(SIGKILL)
        let log4 = seen + agent.readToEnd()
        _ = agent.wait()
        TestLog.append(log4)
        XCTAssertTrue(log4.contains("ignoring an announced next manifest key"), log4)
        XCTAssertTrue(log4.contains("refusing the manifest: bad signature"), log4)
        XCTAssertEqual(try trust()["public_key"], .string(Base64URL.encode(new.publicKey)), "still the rotated key")
        XCTAssertEqual(try String(contentsOfFile: rig.device + "/models/VERSION", encoding: .utf8), "4.0\n", "nothing ran")

        await device.client.close()
        await admin.close()
        for replica in [rogue, rotated, server] { await replica.stop() }
    }
}
