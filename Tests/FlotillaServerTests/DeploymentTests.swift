import FlotillaAPI
import FlotillaFlowFiles
import FlotillaCore
import FlotillaStore
import Foundation
import XCTest

/// Flows, deployments and the per-device machine through the real server and PostgreSQL,
/// with scripted devices on HTTP/2.
final class DeploymentTests: ServerTestCase {
    override var usesManualClock: Bool { true }
    override var adminWire: Wire { .h1 }  // pipelines speak HTTP/1.1

    override func setUp() async throws {
        try await super.setUp()
        try await admin.prepareHardhatModel()
    }

    func deploy(_ body: String, headers: [String: String] = [:]) async throws -> String {
        let created = try await admin.call("POST", "/api/v1/deployments", body, headers: headers)
        expect(created, 201)
        return try XCTUnwrap(created.json["id"]?.stringValue)
    }

    func testHappyPathToSucceededAndKnownGood() async throws {
        let cam = try await ScriptedDevice(server: server, admin: admin, name: "cam-1", groups: ["site-berlin"])
        let v2 = try await cam.next()
        XCTAssertNil(v2, "nothing to do yet: 204")
        let id = try await deploy(hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        let v3 = try await cam.next()
        let execution = try XCTUnwrap(v3)
        XCTAssertEqual(execution["version"], .string("1.4"))
        XCTAssertEqual(execution["directive"], .string("continue"))
        XCTAssertEqual(execution["steps"]?[0]?["sha256"], .string(sampleSHA))
        XCTAssertEqual(execution["steps"]?[1]?["env"]?["MODEL_VERSION"], .string("1.4"))
        XCTAssertEqual(execution["rollback"]?["snapshot"]?[0], .string("/var/lib/hardhat/models/current"))
        try await cam.succeed(execution, steps: 0...3, version: "1.4", app: "hardhat-detector")

        let done = try await admin.call("GET", "/api/v1/deployments/\(id)?wait=5")
        XCTAssertEqual(done.json["status"], .string("completed"), done.text)
        XCTAssertEqual(done.json["outcome"], .string("succeeded"))
        XCTAssertEqual(done.json["counts"]?["succeeded"]?.intValue, 1)
        let device = try await admin.call("GET", "/api/v1/devices/cam-1")
        XCTAssertEqual(device.json["installed"]?["hardhat-detector"], .string("1.4"))
        let v4 = try await cam.next()
        XCTAssertNil(v4, "a finished execution is not handed out again")

        // Every transition is in the event log, in order.
        let conn = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        let log = try conn.query("SELECT from_state || '>' || to_state FROM execution_events ORDER BY id").map { try $0.decode(String.self) }
        XCTAssertEqual(log, ["queued>downloading", "downloading>installing", "installing>rebooting", "rebooting>verifying", "verifying>succeeded"])
        let knownGood = try conn.query("SELECT known_good FROM installed_versions WHERE app = 'hardhat-detector'")[0].decode(String?.self)
        XCTAssertEqual(knownGood, "1.4")

        // The next deployment rolls back to 1.4 if it fails: the manifest names it.
        _ = try await deploy(hardhatDeployment(version: "1.5", target: #"{"devices":["cam-1"]}"#))
        let v5 = try await cam.next()?["known_good"]
        XCTAssertEqual(v5, .string("1.4"))
    }

    func testEachFailurePathEndsInTheRightStateWithItsReason() async throws {
        // (device, what goes wrong, expected end state, expected failure cause)
        let cases: [(String, String, String, String)] = [
            ("dl", "download", "failed", "step_failed"),
            ("inst", "install", "rolled_back", "step_failed"),
            ("health", "verify", "rolled_back", "step_failed"),
            ("fellback", "fellback", "rolled_back", "fell_back"),
            ("rbfail", "rollback", "rollback_failed", "step_failed"),
        ]
        var devices: [String: ScriptedDevice] = [:]
        for (name, _, _, _) in cases {
            devices[name] = try await ScriptedDevice(server: server, admin: admin, name: name, groups: ["site-berlin"])
        }
        // The device that falls back runs 1.3 before the deployment: that is its known-good.
        expect(try await devices["fellback"]!.client.call("POST", "/api/v1/agent/heartbeat", #"{"installed":{"hardhat-detector":"1.3"}}"#), 200)
        let id = try await deploy(hardhatDeployment(version: "2.0", target: #"{"groups":["site-berlin"]}"#))
        for (name, failure, _, _) in cases {
            let device = devices[name]!
            let v6 = try await device.next()
            let execution = try XCTUnwrap(v6)
            let exec = execution["id"]!.stringValue!
            switch failure {
            case "download":
                expect(try await device.report(exec, "step_started", step: 0), 200)
                let answer = try await device.report(exec, "step_failed", step: 0, extra: #","message":"sha256 mismatch","log_tail":"got 00ff""#)
                XCTAssertEqual(answer.json["directive"], .string("stop"), answer.text)
            case "install", "rollback":
                try await device.succeed(execution, steps: 0...0, version: "2.0", app: "hardhat-detector")
                expect(try await device.report(exec, "step_started", step: 1), 200)
                let answer = try await device.report(exec, "step_failed", step: 1, extra: #","exit_code":2,"message":"unzip failed","log_tail":"bad zip""#)
                XCTAssertEqual(answer.json["directive"], .string("roll_back"))
                let v7 = try await device.next()?["directive"]
                XCTAssertEqual(v7, .string("roll_back"), "a restarted agent learns it too")
                let end = failure == "install" ? "rollback_succeeded" : "rollback_failed"
                expect(try await device.report(exec, end, extra: #","message":"restore failed""#), 200)
            case "verify":
                try await device.succeed(execution, steps: 0...2, version: "2.0", app: "hardhat-detector")
                expect(try await device.report(exec, "step_started", step: 3), 200)
                expect(try await device.report(exec, "step_failed", step: 3, extra: #","exit_code":7,"message":"health check refused""#), 200)
                expect(try await device.report(exec, "rollback_succeeded"), 200)
            default:  // the bootloader fell back to the old version on its own
                try await device.succeed(execution, steps: 0...1, version: "2.0", app: "hardhat-detector")
                expect(try await device.report(exec, "step_started", step: 2), 200)
                expect(try await device.report(exec, "booted", extra: #","version":"1.3""#), 200)
            }
        }
        for (name, _, state, cause) in cases {
            let execution = try await admin.execution(id, device: name)
            XCTAssertEqual(execution["state"], .string(state), "\(name): \(execution.serialized)")
            XCTAssertEqual(execution["failure"]?["cause"], .string(cause), name)
        }
        let install = try await admin.execution(id, device: "inst")
        XCTAssertEqual(install["failure"]?["exit_code"]?.intValue, 2)
        XCTAssertEqual(install["failure"]?["log_tail"], .string("bad zip"))
        XCTAssertEqual(install["failure"]?["step"]?.intValue, 1)
        let v8 = try await admin.execution(id, device: "rbfail")["rollback_failure"]?["message"]
        XCTAssertEqual(v8, .string("restore failed"))
        let summary = try await admin.call("GET", "/api/v1/deployments/\(id)")
        XCTAssertEqual(summary.json["outcome"], .string("failed"))
        XCTAssertEqual(summary.json["counts"]?["rolled_back"]?.intValue, 3)
    }

    func testDuplicateStaleImpossibleAndConcurrentReports() async throws {
        let cam = try await ScriptedDevice(server: server, admin: admin, name: "cam-1", groups: ["site-berlin"])
        _ = try await deploy(hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        let v9 = try await cam.next()?["id"]?.stringValue
        let exec = try XCTUnwrap(v9)
        expect(try await cam.report(exec, "step_started", step: 0), 200)
        let again = try await cam.report(exec, "step_started", step: 0, seq: cam.seq)
        XCTAssertEqual(again.json["result"], .string("duplicate"))
        expect(try await cam.report(exec, "step_succeeded", step: 0), 200)
        let late = try await cam.report(exec, "step_progress", step: 0, seq: 1)
        XCTAssertEqual(late.json["result"], .string("stale"))
        XCTAssertEqual(late.json["state"], .string("installing"), "a stale report gets the current state back")
        let impossible = try await cam.report(exec, "step_succeeded", step: 3)
        expect(impossible, 409, code: "invalid_transition")
        XCTAssertEqual(impossible.json["error"]?["details"]?["state"], .string("installing"))

        // Two reporters race on one execution with different seqs: each report is applied
        // exactly once, in some order, and the row stays consistent.
        expect(try await cam.report(exec, "step_started", step: 1), 200)
        let second = APIClient(port: server.port, token: cam.token, wire: .h2)
        let base = cam.seq
        async let a = cam.client.call("POST", "/api/v1/agent/executions/\(exec)/reports", #"{"seq":\#(base + 1),"event":"step_progress","step":1}"#)
        async let b = second.call("POST", "/api/v1/agent/executions/\(exec)/reports", #"{"seq":\#(base + 2),"event":"step_succeeded","step":1}"#)
        let (ra, rb) = try await (a, b)
        XCTAssertEqual(rb.json["result"], .string("accepted"), rb.text)
        XCTAssertTrue(["accepted", "stale"].contains(ra.json["result"]?.stringValue ?? ""), ra.text)
        let v10 = try await admin.call("GET", "/api/v1/deployments").json["items"]?[0]?["id"]?.stringValue
        let row = try await admin.execution(try XCTUnwrap(v10), device: "cam-1")
        XCTAssertEqual(row["state"], .string("rebooting"))
        XCTAssertEqual(row["seq"]?.intValue, base + 2)
        await second.close()

        // Another device cannot see or touch this execution.
        let other = try await ScriptedDevice(server: server, admin: admin, name: "other")
        expect(try await other.report(exec, "step_started", step: 0), 404, code: "not_found")
        expect(try await other.client.call("POST", "/api/v1/agent/executions/\(exec)/reports", #"{"seq":"x","event":"nope"}"#), 422, code: "invalid")
        let anonymous = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        expect(try await anonymous.call("GET", "/api/v1/agent/next"), 401, code: "unauthorized")
        await anonymous.close()
    }

    func testSupersessionCancelAndIdempotencyKeys() async throws {
        let busy = try await ScriptedDevice(server: server, admin: admin, name: "busy", groups: ["site-berlin"])
        let idle = try await ScriptedDevice(server: server, admin: admin, name: "idle", groups: ["site-berlin"])
        let first = try await deploy(hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        let v11 = try await busy.next()
        let busyExec = try XCTUnwrap(v11)
        try await busy.succeed(busyExec, steps: 0...0, version: "1.4", app: "hardhat-detector")
        expect(try await busy.report(busyExec["id"]!.stringValue!, "step_started", step: 1), 200)

        // A newer deployment: idle's queued 1.4 is superseded; busy's in-flight 1.4 finishes first.
        let body = hardhatDeployment(version: "1.5", target: #"{"selector":"missing=label","devices":["busy","idle"]}"#)
        let created = try await admin.call("POST", "/api/v1/deployments", body, headers: ["idempotency-key": "pipeline-run-42"])
        expect(created, 201)
        XCTAssertEqual(created.json["superseded"]?.intValue, 1)
        XCTAssertEqual(created.json["devices_targeted"]?.intValue, 2)
        let second = try XCTUnwrap(created.json["id"]?.stringValue)
        let replay = try await admin.call("POST", "/api/v1/deployments", body, headers: ["idempotency-key": "pipeline-run-42"])
        expect(replay, 200)
        XCTAssertEqual(replay.json["id"]?.stringValue, second)
        XCTAssertEqual(replay.headers["idempotent-replay"], "true")
        expect(try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "9", target: #"{"devices":["idle"]}"#),
                                    headers: ["idempotency-key": "pipeline-run-42"]), 409, code: "idempotency_key_reused")

        let superseded = try await admin.execution(first, device: "idle")
        XCTAssertEqual(superseded["state"], .string("canceled"))
        XCTAssertEqual(superseded["failure"]?["message"], .string("superseded by deployment \(second)"))
        let v12 = try await busy.next()?["id"]
        XCTAssertEqual(v12, busyExec["id"], "the in-flight execution comes first")
        let v13 = try await idle.next()?["deployment_id"]
        XCTAssertEqual(v13, .string(second))

        // Cancel: idle (queued) ends; busy's first deployment is still in flight, so the
        // second one stays queued for it and ends canceled too.
        let canceled = try await admin.call("POST", "/api/v1/deployments/\(second)/cancel")
        expect(canceled, 200)
        XCTAssertEqual(canceled.json["status"], .string("canceled"))
        XCTAssertEqual(canceled.json["canceled_queued"]?.intValue, 2)
        // Canceling the first (busy is installing) rolls it back and tells the device.
        let rolled = try await admin.call("POST", "/api/v1/deployments/\(first)/cancel")
        XCTAssertEqual(rolled.json["stopped_in_flight"]?.intValue, 1)
        let answer = try await busy.report(busyExec["id"]!.stringValue!, "step_succeeded", step: 1)
        XCTAssertEqual(answer.json["directive"], .string("roll_back"))
        let v14 = try await admin.execution(first, device: "busy")["failure"]?["cause"]
        XCTAssertEqual(v14, .string("canceled"))
    }

    func testDeadlinesExpireWithTheInjectedClock() async throws {
        let quiet = try await ScriptedDevice(server: server, admin: admin, name: "quiet", groups: ["site-berlin"])
        let id = try await deploy(hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        let v15 = try await quiet.next()
        let execution = try XCTUnwrap(v15)
        try await quiet.succeed(execution, steps: 0...1, version: "1.4", app: "hardhat-detector")
        expect(try await quiet.report(execution["id"]!.stringValue!, "step_started", step: 2), 200)  // reboots, never returns
        let v16 = try await server.api.sweepDeadlines()
        XCTAssertEqual(v16, 0)
        clock.advance(seconds: 899)
        let v17 = try await server.api.sweepDeadlines()
        XCTAssertEqual(v17, 0, "the reboot deadline is 900 s")
        clock.advance(seconds: 2)
        let v18 = try await server.api.sweepDeadlines()
        XCTAssertEqual(v18, 1)
        var row = try await admin.execution(id, device: "quiet")
        XCTAssertEqual(row["state"], .string("rolling_back"))
        XCTAssertEqual(row["failure"]?["cause"], .string("deadline"))
        clock.advance(seconds: 901)  // nobody confirms the rollback either
        let v19 = try await server.api.sweepDeadlines()
        XCTAssertEqual(v19, 1)
        row = try await admin.execution(id, device: "quiet")
        XCTAssertEqual(row["state"], .string("rollback_failed"))
    }

    func testLongPollWakesWhenADeploymentArrives() async throws {
        let cam = try await ScriptedDevice(server: server, admin: admin, name: "cam-1", groups: ["site-berlin"])
        let started = Date()
        async let polled = cam.next(wait: 30)
        // Parked before the deployment exists: only a wake-up can answer it in time.
        try await eventually("the poll is parked") { server.api.pollIsParkedForTesting(cam.id) }
        let id = try await deploy(hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        let execution = try await polled
        XCTAssertEqual(execution?["deployment_id"], .string(id))
        XCTAssertLessThan(Date().timeIntervalSince(started), 25, "woken by the deployment, not by the 30 s wait running out")
    }

    /// Replicas share one database: a deployment created through one wakes a long poll held
    /// by another (NOTIFY), and an idle device cached as "nothing to do" there learns of it too.
    func testADeploymentThroughOneReplicaReachesPollsOnAnother() async throws {
        let replica = try APIServer(sharing: server, clock: clock.wallClock)
        try await replica.waitUntilListening()
        let waiting = try await ScriptedDevice(server: replica, admin: admin, name: "cam-1", groups: ["site-berlin"])
        let idle = try await ScriptedDevice(server: replica, admin: admin, name: "cam-2", groups: ["site-berlin"])
        let nothing = try await idle.next()
        XCTAssertNil(nothing, "idle: now cached as such on the replica")
        let started = Date()
        async let polled = waiting.next(wait: 30)
        // Parked on the replica before the deployment exists: only the NOTIFY can wake it in time.
        try await eventually("the poll is parked on the replica") { replica.api.pollIsParkedForTesting(waiting.id) }
        let id = try await deploy(hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        let execution = try await polled
        XCTAssertEqual(execution?["deployment_id"], .string(id))
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "woken through NOTIFY, not by the 30 s wait running out")
        var found: JSON?
        for _ in 0..<100 {
            found = try await idle.next()
            if found != nil { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTAssertEqual(found?["deployment_id"], .string(id), "the replica's idle cache was flushed")
        await replica.stop()
    }

    /// Each server remembers the executions it last wrote. When another replica moves one on,
    /// the remembered copy is behind: it must never refuse a report the real state accepts.
    func testAReplicaWithAnOldCopyOfAnExecutionStillAnswersFromTheRealState() async throws {
        let replica = try APIServer(sharing: server, clock: clock.wallClock)
        let cam = try await ScriptedDevice(server: server, admin: admin, name: "cam-1", groups: ["site-berlin"])
        _ = try await deploy(hardhatDeployment(version: "1.4", target: #"{"groups":["site-berlin"]}"#))
        let next = try await cam.next()
        let execution = try XCTUnwrap(next)
        let id = try XCTUnwrap(execution["id"]?.stringValue)
        try await cam.succeed(execution, steps: 0...0, version: "1.4", app: "hardhat-detector")  // remembered here: step 1 next
        expect(try await cam.report(id, "step_started", step: 1), 200)
        // Through the other replica: the install fails, the execution starts rolling back.
        let elsewhere = APIClient(port: replica.port, token: cam.token, wire: .h2)
        cam.seq += 1
        let failed = try await elsewhere.call("POST", "/api/v1/agent/executions/\(id)/reports",
                                              #"{"seq":\#(cam.seq),"event":"step_failed","step":1,"exit_code":3}"#)
        expect(failed, 200)
        XCTAssertEqual(failed.json["directive"], .string("roll_back"))
        // Back on the first server, whose copy still says "installing".
        let rolledBack = try await cam.report(id, "rollback_succeeded")
        expect(rolledBack, 200)
        XCTAssertEqual(rolledBack.json["state"], .string("rolled_back"))
        await elsewhere.close()
        await replica.stop()
    }

    func testBadDeploymentRequests() async throws {
        _ = try await ScriptedDevice(server: server, admin: admin, name: "cam-1", groups: ["site-berlin"])
        expect(try await admin.call("POST", "/api/v1/deployments", #"{"flow":{"name":"nope"},"target":{"devices":["cam-1"]}}"#), 404, code: "not_found")
        let missing = try await admin.call("POST", "/api/v1/deployments", #"{"flow":{"name":"hardhat-model"},"target":{"devices":["cam-1"]},"params":{"size":"big"}}"#)
        expect(missing, 422, code: "invalid")
        XCTAssertEqual(Set(missing.json["error"]?["details"]?.arrayValue?.compactMap { $0["field"]?.stringValue } ?? []),
                       ["params.artifact", "params.size", "params.version"])
        expect(try await admin.call("POST", "/api/v1/deployments", #"{"flow":{"name":"hardhat-model"},"target":{}}"#), 422, code: "invalid")
        expect(try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1", target: #"{"devices":["ghost"]}"#)), 422, code: "invalid")
        expect(try await admin.call("POST", "/api/v1/deployments", hardhatDeployment(version: "1", target: #"{"groups":["nowhere"]}"#)), 422, code: "invalid")
        expect(try await admin.call("POST", "/api/v1/deployments", #"{"flow":{"name":"hardhat-model"},"target":{"devices":["cam-1"]},"colour":1}"#), 400, code: "unknown_field")
        expect(try await admin.call("GET", "/api/v1/deployments/00000000-0000-0000-0000-000000000000"), 404, code: "not_found")
        expect(try await admin.call("POST", "/api/v1/flows", #"{"name":"x","app":"y","app_version":"${v}","steps":[]}"#), 422, code: "invalid")
        // Applying the same file again is a no-op; a change is a new version.
        let v20 = try await admin.applyFlowFile("hardhat-model.yaml")
        XCTAssertEqual(v20, 1)
        let flow = try await admin.call("GET", "/api/v1/flows/hardhat-model")
        var definition = try XCTUnwrap(flow.json["definition"]?.objectValue)
        definition["description"] = .string("changed")
        definition["steps"] = try FlowFiles.document(atPath: TestCluster.repositoryRoot + "/flows/hardhat-model.yaml")["steps"]
        expect(try await admin.call("POST", "/api/v1/flows", JSON.object(definition).serialized), 201)
        expect(try await admin.call("GET", "/api/v1/flows/hardhat-model/versions/2"), 200)
    }

    func testShippedFlowFilesAreValidAndRender() throws {
        let flows = try FlowFiles.load(directory: TestCluster.repositoryRoot + "/flows")
        XCTAssertEqual(flows.map(\.flow.name).sorted(), ["config-file", "crop-disease-model", "hardhat-model"])
        let params: [String: [String: JSON]] = [
            "hardhat-model": ["version": .string("1.4"), "artifact": .string(sampleSHA), "size": .int(10)],
            "crop-disease-model": ["version": .string("7"), "url": .string("https://models.example.com/crop-7.tflite"),
                                   "sha256": .string(sampleSHA), "size": .int(5)],
            "config-file": ["version": .string("2026-11-21"), "artifact": .string(sampleSHA)],
        ]
        for (_, flow) in flows {
            let rendered = try FlowDefinition.render(canonical: flow.canonical, params: params[flow.name]!)
            XCTAssertFalse(rendered.plans.isEmpty)
            XCTAssertFalse(JSON.array(rendered.steps).serialized.contains("${"), "\(flow.name) renders every reference")
        }
    }
}
