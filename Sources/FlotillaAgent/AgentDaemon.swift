// `flotilla-agent run`: the executor of AgentMachine. The one place where the machine's
// actions touch the device, the disk and the network:
//
//   start → journal → machine.started() → perform
//   loop: deliver the outbox → long-poll agent/next → manifest → machine → perform
//   perform: save the journal, then each action in order; an activity's outcome is the
//            machine's next event; a directive in a report's answer may replace what is left.
//
// The journal is saved before every side effect, so SIGKILL anywhere resumes correctly.
// Reports go to the on-disk outbox first and are delivered in order whenever the server
// can be reached; the work on the device does not wait for the network.

import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import Foundation

final class AgentDaemon: @unchecked Sendable {
    let config: AgentConfig
    let files: AgentFiles
    private var machine: AgentMachine
    /// The manifest of the execution in progress (its steps' concrete values), kept in
    /// manifest.json so that it survives a restart, read from disk only at start.
    private var manifest: JSON
    var client: HTTP2Client?
    var backoff = 1.0
    /// What makes a manifest believable (ManifestTrust.swift); set before the first poll.
    var trust: ManifestTrust?
    /// When the server's signing-key document was last read (an announced next key).
    var trustRefreshedAt = Date.distantPast
    /// After a failed delivery, reports just wait in the outbox until this time, so work on
    /// the device never stalls on connect timeouts.
    private var deliveryRetryAt: Date?

    /// The device token in use: the configured one, or a newer one `rotate-token` wrote
    /// into the configuration file since (see followTokenFile).
    var token: String

    init(config: AgentConfig) throws {
        self.config = config
        token = config.token
        files = try AgentFiles(root: config.stateDirectory)
        machine = try files.loadMachine()
        manifest = try AgentFiles.read(files.manifestPath) ?? .object([:])
    }

    var auth: HTTPHeaders { ["authorization": "Bearer \(token)", "content-type": "application/json"] }

    func run() async throws {
        log("flotilla-agent \(FlotillaVersion.current) starting; state in \(config.stateDirectory); phase \(machine.journal.objectValue?["phase"]?.stringValue ?? "?")")
        await loadTrust(offline: true)
        await perform(machine.started())
        await heartbeat()
        await loadTrust()
        while true {
            await deliverOutbox()
            // Only poll with an empty outbox: the server must hear how the last execution
            // ended before it is asked what to do next.
            if !files.pendingReports().isEmpty {
                await pause()
                continue
            }
            followTokenFile()
            await refreshTrust()
            do {
                let response = try await connection().send(
                    ClientRequest(path: DeviceRoutes.next.path(query: [("wait", String(config.pollWait))]), headers: auth),
                    timeout: .seconds(config.pollWait + 15))
                switch response.status {
                case 200:
                    backoff = 1
                    try await received(JSON.parse(response.body))
                case 204:
                    backoff = 1
                    let interval = Double(response.headers["x-poll-interval"] ?? "") ?? config.pollMinimum
                    let jitter = Double(response.headers["x-poll-jitter"] ?? "") ?? 0
                    // A long poll already waited on the server: then only the jitter spreads the
                    // fleet out. A plain poll waits the server's interval, within our bounds.
                    let base = config.pollWait > 0 ? 0 : min(max(interval, config.pollMinimum), config.pollMaximum)
                    try await Task.sleep(for: .seconds(base + Double.random(in: 0...max(0, min(jitter, config.pollMaximum)))))
                case 401:
                    log("the server refused the device token (401); check --token")
                    await pause()
                default:  // 403 device_pending (waiting for approval), 429, 5xx: wait, at least as long as asked
                    log("poll answered \(response.status): \(response.bodyText.prefix(200))")
                    await pause(atLeast: Double(response.headers["retry-after"] ?? ""))
                }
            } catch {
                log("server unreachable: \(error)")
                await dropConnection()
                await pause()
            }
        }
    }

    /// A manifest for this device: check its signature, remember it, hand it to the machine.
    private func received(_ body: JSON) async throws {
        let execution: JSON
        switch trust!.check(body, token: token, now: Int(Date().timeIntervalSince1970)) {
        case .failure(let refusal):
            log("refusing the manifest: \(refusal)")
            await pause()
            return
        case .success(let signed):
            try trust!.accepted(issuedAt: signed.issuedAt, byNext: signed.byNext)
            if signed.byNext { log("the server signs with its next manifest key now; pinned it") }
            execution = signed.execution  // the signed copy; the unsigned one beside it is ignored
        }
        let decoded: Manifest
        do {
            decoded = try Manifest(json: execution)
        } catch let refusal {
            log("refusing the manifest: \(refusal)")
            if let unsupported = Self.unsupported(execution, refusal) {
                await perform(machine.unsupportedManifestReceived(executionID: unsupported.id, serverState: unsupported.state,
                                                                  serverSeq: unsupported.seq, serverStep: unsupported.step,
                                                                  reason: refusal.description))
                // Refused once and reported (the outbox keeps the report until it is heard): the
                // same execution handed out again is a replay, never a second refusal.
                try? trust?.markFinished(unsupported.id)
            } else {
                await pause()
            }
            return
        }
        let job = AgentJob(decoded)
        try AgentFiles.writeAtomically(execution, to: files.manifestPath)
        manifest = execution
        log("execution \(job.executionID): \(job.app) \(job.version), \(job.steps.count) steps")
        await perform(machine.manifestReceived(job, serverState: decoded.state, serverSeq: decoded.seq, serverStep: decoded.step))
    }

    /// Where the server stands on a manifest refused for a step kind we do not know, so the
    /// refusal can be reported; nil when the manifest is too broken even for that.
    static func unsupported(_ execution: JSON, _ refusal: Manifest.Refusal) -> (id: String, state: ExecutionState, seq: Int, step: Int)? {
        // Read as Manifest reads them: the same defaults for what may be absent.
        guard case .unknownStepKind = refusal, let fields = execution.objectValue, let id = fields["id"]?.stringValue,
              let state = ExecutionState(rawValue: fields["state"]?.stringValue ?? ExecutionState.queued.rawValue) else { return nil }
        return (id, state, fields["seq"]?.intValue ?? 0, fields["step"]?.intValue ?? 0)
    }

    // MARK: - The executor

    private func perform(_ first: AgentDecision) async {
        var decision = first
        while true {
            guard case .accepted(var actions) = decision else {
                if case .rejected(let reason) = decision { log("machine refused: \(reason)") }
                return
            }
            // Journal first: whatever happens next, a restart knows where we were.
            do { try files.save(machine) } catch {
                log("cannot write the journal (\(error)); not acting without it")
                await pause()
                return
            }
            var next: AgentDecision?
            while next == nil, !actions.isEmpty {
                let action = actions.removeFirst()
                next = await execute(action)
                crashPoint(after: action)
                // Deliver once a run of reports is queued (not after each of them); the
                // server's answer may change the plan.
                if next == nil, action.isReport, actions.first?.isReport != true, let steered = await deliverOutbox() {
                    next = steered
                }
            }
            guard let next else { return }
            decision = next
        }
    }

    /// Performs one action; returns the machine's decision on its outcome (activities only).
    private func execute(_ action: AgentAction) async -> AgentDecision? {
        let steps = AgentSteps(files: files, manifest: manifest, client: { [self] in try await connection() }, auth: auth,
                               caFile: config.caFile, log: { [self] in log($0) }, dropClient: { [self] in await dropConnection() })
        func outcome(_ body: () throws(StepFailure) -> Void) -> AgentDecision {
            do throws(StepFailure) {
                try body()
                return machine.activitySucceeded()
            } catch {
                log("failed: \(error.message)")
                return machine.activityFailed(error.message, exitCode: error.exitCode, logTail: error.logTail)
            }
        }
        switch action {
        case .report(let report):
            do { try files.enqueue(report) } catch { log("cannot queue a report: \(error)") }
            return nil
        case .download(let step):
            log("step \(step): download")
            do throws(StepFailure) {
                try await steps.download(step)
                return machine.activitySucceeded()
            } catch {
                log("failed: \(error.message)")
                return machine.activityFailed(error.message)
            }
        case .snapshot:
            return outcome { () throws(StepFailure) in try Snapshot.take(steps.snapshotPaths, files: files) }
        case .runScript(let step):
            log("step \(step): install script")
            return outcome { () throws(StepFailure) in try steps.runScript(step) }
        case .healthCheck(let step):
            log("step \(step): health check")
            return outcome { () throws(StepFailure) in try steps.healthCheck(step) }
        case .verifyRestore:
            return outcome { () throws(StepFailure) in try Snapshot.verify(files: files) }
        case .restoreSnapshot:
            log("rolling back: restoring the known-good")
            return outcome { () throws(StepFailure) in try Snapshot.restore(files: files) }
        case .runRollbackScript:
            return outcome { () throws(StepFailure) in try steps.rollbackScript() }
        case .dropSnapshot:
            Snapshot.drop(files: files)
            return nil
        case .reboot:
            return await reboot()
        case .finished(let outcome, let app, let version):
            log("execution ended: \(outcome.rawValue)")
            if outcome == .succeeded { try? files.setInstalled(app: app, version: version) }
            try? AgentFiles.writeAtomically(.fields([
                ("outcome", .string(outcome.rawValue)), ("app", .string(app)), ("version", .string(version)),
                ("execution", manifest.objectValue?["id"] ?? .null), ("at", .string(ISO8601DateFormatter().string(from: Date()))),
            ]), to: files.root + "/last-result.json")
            if let id = manifest.objectValue?["id"]?.stringValue { try? trust?.markFinished(id) }  // never again, even if replayed
            try? AgentFiles.remove(files.manifestPath)
            manifest = .object([:])
            await heartbeat()
            return nil
        }
    }

    /// The journal already says a reboot is pending; tell the server what we can, then go.
    private func reboot() async -> AgentDecision? {
        await deliverOutbox()
        switch config.reboot {
        case .exit:
            log("reboot: exiting for the supervisor to start the agent again")
            exit(0)
        case .command(let command):
            log("reboot: \(command)")
            let result = try? Script.run(command, environment: [:], timeout: 120)
            guard result?.succeeded == true else {
                return machine.activityFailed("the reboot command failed: \(result?.tail ?? "could not start it")")
            }
            // The system is going down; the next start continues from the journal.
            try? await Task.sleep(for: .seconds(3600))
            return machine.activityFailed("the reboot command returned but the device did not reboot within an hour")
        }
    }

    /// Fault injection for the Killed_in_X tests: with FLOTILLA_AGENT_KILL_AFTER=<action>
    /// (download, snapshot, run, reboot, verify, restore, rollback_script), the agent SIGKILLs
    /// itself once, right after doing that action and before its outcome reaches the journal:
    /// the worst moment to lose power. A marker file makes it happen only once.
    private func crashPoint(after action: AgentAction) {
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

    /// Sends queued reports in order until the outbox is empty or the server is unreachable.
    /// Returns the machine's decision when an answer carried a directive that changes the plan.
    @discardableResult
    private func deliverOutbox() async -> AgentDecision? {
        var steered: AgentDecision?
        if let retry = deliveryRetryAt, Date() < retry { return nil }
        for entry in files.pendingReports() {
            do {
                let response = try await connection().send(ClientRequest(
                    method: DeviceRoutes.report.method, path: DeviceRoutes.report.path(entry.execution), headers: auth,
                    body: .bytes(Array(entry.body.serialized.utf8))), timeout: .seconds(30))
                if response.status == 401 || response.status == 429 || response.status >= 500 {
                    // Not heard: kept, and sent again no sooner than the server asks. A 429
                    // dropped here once lost a step_started, and every later report met a
                    // server that had never seen the step begin.
                    log("report answered \(response.status); keeping it for later")
                    let wait = Double(response.headers["retry-after"] ?? "") ?? min(backoff, 5)
                    deliveryRetryAt = Date().addingTimeInterval(max(wait, 0.5))
                    return steered
                }
                // 200 (accepted, duplicate, stale), 409 (the server moved on) and 404/422 are all
                // final answers: the report has been heard and must not be sent again.
                try? AgentFiles.remove(entry.path)
                let answer = ReportAnswer(body: response.body)
                if response.status != 200 { log("report \(entry.body.serialized) answered \(response.status)") }
                if entry.execution == machine.job?.executionID, let directive = answer?.directive, directive != .proceed {
                    log("the server says \(directive.rawValue) for execution \(entry.execution)")
                    let decision = machine.directiveReceived(directive)
                    if case .accepted(let actions) = decision, !actions.isEmpty { steered = decision }
                }
            } catch {
                deliveryRetryAt = Date().addingTimeInterval(min(backoff, 5))
                await dropConnection()
                return steered
            }
        }
        deliveryRetryAt = nil
        backoff = 1
        return steered
    }
}

extension AgentAction {
    var isReport: Bool { if case .report = self { true } else { false } }
}
