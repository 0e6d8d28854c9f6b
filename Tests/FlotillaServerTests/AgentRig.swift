// What the real-agent tests share: a "device" directory holding the known-good model, the
// agent-test flow (AgentTests.flow) applied with the sample artifact, and a supervisor that
// runs the real `flotilla-agent`, restarting it whenever it exits (the flow's reboot, a
// kill) until the server says the device's execution ended.

import FlotillaAPI
import FlotillaFlowFiles
import FlotillaStore
import FlotillaTestSupport
import Foundation
import XCTest

struct AgentRig {
    let work: String
    var device: String { work + "/device" }

    /// A fresh directory with `device/models/VERSION` at 1.0 and `flow` applied (as agent-test).
    static func make(admin: APIClient, flow: String = AgentTests.flow) async throws -> AgentRig {
        let work = NSTemporaryDirectory() + "flotilla-agent-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: work + "/device/models", withIntermediateDirectories: true)
        try "1.0\n".write(toFile: work + "/device/models/VERSION", atomically: true, encoding: .utf8)
        try flow.write(toFile: work + "/agent-test.yaml", atomically: true, encoding: .utf8)
        let applied = try await admin.call("POST", "/api/v1/flows", try FlowFiles.document(atPath: work + "/agent-test.yaml").serialized)
        XCTAssertTrue([200, 201].contains(applied.status), applied.text)
        try await admin.uploadSampleArtifact()
        return AgentRig(work: work)
    }

    func remove() { try? FileManager.default.removeItem(atPath: work) }

    /// The body deploying agent-test `version` to `target`, with `params` (JSON members) added.
    func deployment(version: String, target: String = #"{"devices":["camera-1"]}"#, params: String = "") -> String {
        let extra = params.isEmpty ? "" : "," + params
        return #"{"flow":{"name":"agent-test"},"target":\#(target),"params":{"version":"\#(version)","artifact":"\#(sampleSHA)","size":\#(sampleArtifact.utf8.count),"root":"\#(device)"\#(extra)}}"#
    }

    /// `flotilla-agent run` on this rig's state directory, fast polls, reboot = exit, plus `arguments`.
    func startAgent(_ arguments: [String], environment: [String: String] = [:]) throws -> ChildProcess {
        try ChildProcess(productsDirectory.appendingPathComponent("flotilla-agent").path,
                         ["run", "--state-dir", work + "/state", "--poll-wait", "1", "--poll-min", "0", "--poll-max", "2"]
                            + (arguments.contains("--reboot-command") ? [] : ["--reboot-command", "exit"]) + arguments,
                         environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
    }

    /// Supervises the agent (`start` again whenever it exits) until `device`'s execution of
    /// `deployment` is terminal, then stops it. The output goes to the run's log (TestLog).
    func supervise(_ deployment: String, device: String = "camera-1", admin: APIClient, timeout: TimeInterval = 60,
                   start: () throws -> ChildProcess) async throws -> (execution: JSON, output: String, starts: Int) {
        var output = "", starts = 0
        var agent: ChildProcess?
        let deadline = Date().addingTimeInterval(timeout)
        var execution = JSON.null
        while Date() < deadline {
            if agent == nil || agent?.isRunning == false {
                if let agent { output += agent.readToEnd() }
                XCTAssertLessThan(starts, 8, "the agent keeps exiting\n\(output)")
                agent = try start()
                starts += 1
            }
            execution = try await admin.execution(deployment, device: device)
            if ["succeeded", "failed", "rolled_back", "rollback_failed", "canceled"].contains(execution["state"]?.stringValue ?? "") {
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        // Let the agent finish its bookkeeping (its outbox delivered), then stop it.
        let outbox = work + "/state/outbox"
        try await eventually("the agent delivered its outbox") {
            agent?.isRunning != true || ((try? FileManager.default.contentsOfDirectory(atPath: outbox)) ?? []).isEmpty
        }
        agent?.signal(SIGKILL)
        if let agent { output += agent.readToEnd(); _ = agent.wait() }
        TestLog.append(output)
        return (execution, output, starts)
    }
}

extension ChildProcess {
    /// Reads the process's output until every one of `patterns` has appeared, and returns
    /// what it read: a test waits for what the process says, not for a fixed time. Past
    /// `seconds` the process is killed and the output so far returned (the caller's
    /// assertion then says what was missing). The process goes on running otherwise.
    func output(showing patterns: [String], within seconds: Double) async -> String {
        let killer = DispatchWorkItem { [self] in signal(SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: killer)
        defer { killer.cancel() }
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async { [self] in
                var seen = ""
                while !patterns.allSatisfy(seen.contains), let line = readLine() { seen += line }
                continuation.resume(returning: seen)
            }
        }
    }
}
