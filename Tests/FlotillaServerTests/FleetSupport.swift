// Helpers for deployment tests: a clock the test moves by hand, a wait for what other
// replicas learn a moment later, and a scripted device that speaks the device API over
// HTTP/2, so API tests say exactly which report arrives when (the real agent's scenarios
// are in AgentTests).

import FlotillaAPI
import FlotillaFlowFiles
import FlotillaCore
import FlotillaStore
import Foundation
import Synchronization
import XCTest

/// Starts at the real time; `advance` moves it (deadline expiry without waiting).
final class ManualClock: Sendable {
    private let current = Mutex(WallClock.system.now())
    func advance(seconds: Int) { current.withLock { $0 = $0.adding(seconds: seconds) } }
    var wallClock: WallClock { WallClock { [self] in current.withLock { $0 } } }
}

/// Waits (up to `seconds`) until `condition` holds, then returns; fails the test with
/// `what` if it never does. For what other replicas or processes learn a moment later.
func eventually(_ what: String, seconds: Double = 5, every interval: Duration = .milliseconds(20),
                file: StaticString = #filePath, line: UInt = #line, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: interval)
    }
    XCTFail("never happened: \(what)", file: file, line: line)
}

/// A device registered through the management API, reporting through the device API.
final class ScriptedDevice: @unchecked Sendable {
    let name: String
    let id: String
    let token: String
    let client: APIClient
    var seq = 0

    init(server: APIServer, admin: APIClient, name: String, groups: [String] = [], labels: [String: String] = [:]) async throws {
        let labelText = JSON.object(labels.mapValues(JSON.string)).serialized
        let groupText = JSON.array(groups.map(JSON.string)).serialized
        let created = try await admin.call("POST", "/api/v1/devices", #"{"name":"\#(name)","labels":\#(labelText),"groups":\#(groupText)}"#)
        XCTAssertEqual(created.status, 201, created.text)
        self.name = name
        id = try XCTUnwrap(created.json["device"]?["id"]?.stringValue)
        token = try XCTUnwrap(created.json["device_token"]?.stringValue)
        client = APIClient(port: server.port, token: token, wire: .h2)
    }

    /// The next manifest's execution, or nil on 204.
    func next(wait: Int = 0) async throws -> JSON? {
        let response = try await client.call("GET", "/api/v1/agent/next?wait=\(wait)")
        if response.status == 204 { return nil }
        XCTAssertEqual(response.status, 200, response.text)
        return response.json["execution"]
    }

    /// Sends one report with the next seq (or `seq` when given).
    @discardableResult
    func report(_ execution: String, _ event: String, step: Int? = nil, seq given: Int? = nil, extra: String = "") async throws -> APIResponse {
        let number = given ?? { seq += 1; return seq }()
        var body = #"{"seq":\#(number),"event":"\#(event)""#
        if let step { body += #","step":\#(step)"# }
        body += extra + "}"
        return try await client.call("POST", "/api/v1/agent/executions/\(execution)/reports", body)
    }

    /// Runs steps `range` to success (reboot steps: start, then a heartbeat saying it booted on `version`).
    func succeed(_ execution: JSON, steps range: ClosedRange<Int>, version: String, app: String) async throws {
        let id = execution["id"]!.stringValue!
        let steps = execution["steps"]!.arrayValue!
        for index in range {
            expect(try await report(id, "step_started", step: index), 200)
            if steps[index]["kind"] == .string("reboot") {
                let beat = try await client.call("POST", "/api/v1/agent/heartbeat", #"{"installed":{"\#(app)":"\#(version)"},"booted":true}"#)
                expect(beat, 200)
            } else {
                expect(try await report(id, "step_succeeded", step: index), 200)
            }
        }
    }
}

extension APIClient {
    /// Applies a flow file from flows/ and returns its version.
    func applyFlowFile(_ name: String) async throws -> Int {
        let document = try FlowFiles.document(atPath: TestCluster.repositoryRoot + "/flows/\(name)")
        let response = try await call("POST", "/api/v1/flows", document.serialized)
        XCTAssertTrue([200, 201].contains(response.status), response.text)
        return response.json["flow"]?["version"]?.intValue ?? 0
    }

    func execution(_ deployment: String, device: String) async throws -> JSON {
        let page = try await call("GET", "/api/v1/deployments/\(deployment)/devices?limit=500")
        XCTAssertEqual(page.status, 200, page.text)
        return try XCTUnwrap(page.json["items"]?.arrayValue?.first { $0["device_name"] == .string(device) })
    }
}

/// A stand-in model file (text, so the HTTP/1.1 test client can send it) and its SHA-256.
let sampleArtifact = String(repeating: "hard-hat detector weights v1.4\n", count: 33)
let sampleSHA = hexString(Secrets.sha256(sampleArtifact.utf8))

extension APIClient {
    /// What deployment tests start from: flow hardhat-model v1, group site-berlin, the sample artifact.
    func prepareHardhatModel() async throws {
        let version = try await applyFlowFile("hardhat-model.yaml")
        XCTAssertEqual(version, 1)
        expect(try await call("POST", "/api/v1/groups", #"{"name":"site-berlin"}"#), 201)
        try await uploadSampleArtifact()
    }

    /// Uploads `sampleArtifact` to the artifact store, as a pipeline does before deploying.
    func uploadSampleArtifact() async throws {
        let response = try await call("POST", "/api/v1/artifacts?name=model.zip", sampleArtifact)
        XCTAssertTrue([200, 201].contains(response.status), response.text)
        XCTAssertEqual(response.json["sha256"]?.stringValue, sampleSHA)
    }
}

/// The body that deploys hardhat-model `version` to `target` (a JSON object text).
func hardhatDeployment(version: String, target: String) -> String {
    #"{"flow":{"name":"hardhat-model"},"target":\#(target),"params":{"version":"\#(version)","artifact":"\#(sampleSHA)","size":\#(sampleArtifact.utf8.count)}}"#
}
