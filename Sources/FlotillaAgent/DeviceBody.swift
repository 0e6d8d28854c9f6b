// The real device under the runner (AgentRunner.swift): its memory is files in the state
// directory (AgentFiles: the journal, manifest.json, the outbox, installed versions), its
// activities are AgentSteps (downloads, scripts, the health check), Snapshot, and the
// configured reboot.

import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import Foundation

final class DeviceBody: AgentBody, @unchecked Sendable {
    let files: AgentFiles
    let config: AgentConfig
    /// The network the download step uses (the runner's connection and headers).
    var network: AgentRunner.Network?
    let log: @Sendable (String) -> Void

    init(files: AgentFiles, config: AgentConfig, log: @escaping @Sendable (String) -> Void) {
        self.files = files
        self.config = config
        self.log = log
    }

    func save(_ machine: AgentMachine) throws { try files.save(machine) }

    func keep(manifest: JSON?) throws {
        if let manifest { try AgentFiles.writeAtomically(manifest, to: files.manifestPath) } else { try AgentFiles.remove(files.manifestPath) }
    }

    func enqueue(_ report: OutgoingReport) throws { try files.enqueue(report) }

    func pendingReports() -> [PendingReport] {
        files.pendingReports().map { PendingReport(execution: $0.execution, body: $0.body, handle: $0.path) }
    }

    func remove(_ report: PendingReport) throws { try AgentFiles.remove(report.handle) }

    func perform(_ activity: Activity, manifest: JSON) async throws(StepFailure) {
        let network = network
        let steps = AgentSteps(files: files, manifest: manifest, client: { () async throws -> HTTP2Client in
            guard let network else { throw AgentError.io("no connection to the server") }
            return try await network.connection()
        }, auth: network?.auth() ?? [:], caFile: config.caFile, log: log, dropClient: { await network?.drop() })
        switch activity {
        case .download(let step): try await steps.download(step)
        case .snapshot: try Snapshot.take(steps.snapshotPaths, files: files)
        case .runScript(let step): try steps.runScript(step)
        case .healthCheck(let step): try steps.healthCheck(step)
        case .restoreSnapshot: try Snapshot.restore(files: files)
        case .runRollbackScript: try steps.rollbackScript()
        case .verifyRestore: try Snapshot.verify(files: files)
        }
    }

    func dropSnapshot() { Snapshot.drop(files: files) }

    func reboot() async -> RebootResult {
        switch config.reboot {
        case .exit:
            log("reboot: exiting for the supervisor to start the agent again")
            exit(0)
        case .command(let command):
            log("reboot: \(command)")
            let result = try? Script.run(command, environment: [:], timeout: 120)
            guard result?.succeeded == true else {
                return .failed("the reboot command failed: \(result?.tail ?? "could not start it")")
            }
            // The system is going down; the next start continues from the journal.
            try? await Task.sleep(for: .seconds(3600))
            return .failed("the reboot command returned but the device did not reboot within an hour")
        }
    }

    func ended(_ outcome: AgentOutcome, app: String, version: String, execution: String?) {
        if outcome == .succeeded { try? files.setInstalled(app: app, version: version) }
        try? AgentFiles.writeAtomically(.fields([
            ("outcome", .string(outcome.rawValue)), ("app", .string(app)), ("version", .string(version)),
            ("execution", execution.map(JSON.string) ?? .null), ("at", .string(ISO8601DateFormatter().string(from: Date()))),
        ]), to: files.root + "/last-result.json")
    }

    /// Fault injection for the Killed_in_X tests: with FLOTILLA_AGENT_KILL_AFTER=<action>
    /// (download, snapshot, run, reboot, verify, restore, rollback_script), the agent SIGKILLs
    /// itself once, right after doing that action and before its outcome reaches the journal:
    /// the worst moment to lose power. A marker file makes it happen only once.
    func crashPoint(after action: AgentAction) {
        guard let target = ProcessInfo.processInfo.environment["FLOTILLA_AGENT_KILL_AFTER"] else { return }
        let name: String? = switch action {
        case .download: "download"
        case .snapshot: "snapshot"
        case .runScript: "run"
        case .healthCheck: "verify"
        case .restoreSnapshot: "restore"
        case .runRollbackScript: "rollback_script"
        case .report, .reboot, .verifyRestore, .dropSnapshot, .finished: nil
        }
        let marker = files.root + "/killed-after-" + target
        guard name == target, !FileManager.default.fileExists(atPath: marker) else { return }
        _ = FileManager.default.createFile(atPath: marker, contents: nil)
        log("FLOTILLA_AGENT_KILL_AFTER=\(target): killing myself")
        kill(getpid(), SIGKILL)
    }
}
