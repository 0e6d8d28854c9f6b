// More of DeploymentTests (same fixtures): a booted heartbeat counted once per boot, and
// a flow fetched from the server applied again.

import FlotillaAPI
import FlotillaFlowFiles
import Foundation
import XCTest

extension DeploymentTests {
    /// A heartbeat saying "I just booted" with a boot_id counts once: retried (the same
    /// boot), it is not taken for a second reboot; a new boot during verify is one.
    func testABootIsCountedOncePerBootID() async throws {
        let cam = try await ScriptedDevice(server: server, admin: admin, name: "cam-boot")
        let deployment = try await deploy(hardhatDeployment(version: "2.0", target: #"{"devices":["cam-boot"]}"#))
        let next = try await cam.next()
        let execution = try XCTUnwrap(next)
        let exec = try XCTUnwrap(execution["id"]?.stringValue)
        try await cam.succeed(execution, steps: 0...1, version: "2.0", app: "hardhat-detector")
        expect(try await cam.report(exec, "step_started", step: 2), 200)
        let beat = #"{"installed":{"hardhat-detector":"2.0"},"booted":true,"boot_id":"boot-1"}"#
        for _ in 0..<2 {  // the second is a retry of the first
            expect(try await cam.client.call("POST", "/api/v1/agent/heartbeat", beat), 200)
            let state = try await admin.execution(deployment, device: "cam-boot")["state"]
            XCTAssertEqual(state, .string("verifying"))
        }
        expect(try await cam.client.call("POST", "/api/v1/agent/heartbeat", beat.replacingOccurrences(of: "boot-1", with: "boot-2")), 200)
        let after = try await admin.execution(deployment, device: "cam-boot")
        XCTAssertEqual(after["state"], .string("rolling_back"), "a real second boot during verify: \(after)")
        XCTAssertEqual(after["failure"]?["cause"], .string("unexpected_reboot"))
        expect(try await cam.client.call("POST", "/api/v1/agent/heartbeat", #"{"booted":true,"boot_id":""}"#), 422)
    }

    /// A flow fetched from the server (`document`) applies again as the same version, and an
    /// edit of it makes the next one: the API round-trips its own output.
    func testAFetchedFlowAppliesAgainUnchanged() async throws {
        for file in ["hardhat-model.yaml", "crop-disease-model.yaml", "config-file.yaml", "agent-test"] {
            let document = file == "agent-test" ? try AgentTests.flowDocument() : try FlowFiles.document(atPath: TestCluster.repositoryRoot + "/flows/" + file)
            let first = try await admin.call("POST", "/api/v1/flows", document.serialized)
            XCTAssertTrue([200, 201].contains(first.status), first.text)
            let name = try XCTUnwrap(first.json["flow"]?["name"]?.stringValue)
            let fetched = try await admin.call("GET", "/api/v1/flows/\(name)")
            let again = try await admin.call("POST", "/api/v1/flows", fetched.json["document"]?.serialized ?? "null")
            expect(again, 200)
            XCTAssertEqual(again.json["created"], .bool(false), "\(file): the fetched document is the same flow")
            XCTAssertEqual(again.json["flow"]?["definition"], fetched.json["definition"], file)
        }
        let fetched = try await admin.call("GET", "/api/v1/flows/hardhat-model")
        var edited = try XCTUnwrap(fetched.json["document"]?.objectValue)
        edited["description"] = .string("edited after fetching")
        let next = try await admin.call("POST", "/api/v1/flows", JSON.object(edited).serialized)
        expect(next, 201)
        XCTAssertEqual(next.json["flow"]?["version"], .int((fetched.json["version"]?.intValue ?? 0) + 1))
    }
}
