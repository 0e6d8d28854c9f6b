// The one executor of AgentMachine, for the real agent (`run`) and for every virtual device
// of `simulate` alike. It owns the machine and the conversation with the server; what the
// machine's actions do on a device, and where its memory lives, is the body's (DeviceBody:
// files, scripts, snapshots; SimulatedBody: sleeps, failure rates, memory). So a virtual
// device reconnects, backs off, keeps its outbox and obeys directives exactly as an agent
// does, by construction.
//
//   start → machine.started() → perform
//   loop: deliver the outbox → (only when it is empty) long-poll agent/next → manifest
//         → signature check → machine → perform
//   perform: save the journal, then each action in order; an activity's outcome is the
//            machine's next event; a directive in a report's answer may replace what is left.
//
// The journal is saved before every side effect, so a kill anywhere resumes correctly.
// Reports go to the outbox first and are delivered in order whenever the server can be
// reached; the work on the device does not wait for the network.

import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import FlotillaWire
import Foundation

final class AgentRunner: @unchecked Sendable {
    struct Polling: Sendable {
        var wait: Int
        var minimum: Double
        var maximum: Double
    }

    struct Network: Sendable {
        let connection: @Sendable () async throws -> HTTP2Client
        /// Forgets a connection that failed, so the next request makes a fresh one.
        let drop: @Sendable () async -> Void
        let auth: @Sendable () -> HTTPHeaders
        /// The device token manifests must be bound to.
        let token: @Sendable () -> String
    }

    let body: any AgentBody
    let network: Network
    let polling: Polling
    var trust: ManifestTrust?
    let log: @Sendable (String) -> Void
    var observe: @Sendable (RunnerEvent) -> Void = { _ in }
    /// Between polls: a token rotated on disk, the server's signing-key document.
    var beforePoll: @Sendable () async -> Void = {}
    /// After an execution ended: tell the server what runs now.
    var afterEnd: @Sendable () async -> Void = {}
    var isStopped: @Sendable () -> Bool = { false }

    private(set) var machine: AgentMachine
    private(set) var manifest: JSON
    private(set) var backoff = 1.0
    /// After a failed delivery, reports just wait in the outbox until this time, so work on
    /// the device never stalls on connect timeouts.
    private var deliveryRetryAt: Date?
    /// The server's state of the execution, as its last answer said.
    private var serverState: ExecutionState?

    init(body: any AgentBody, machine: AgentMachine, manifest: JSON?, network: Network, polling: Polling, trust: ManifestTrust?,
         log: @escaping @Sendable (String) -> Void) {
        self.body = body
        self.machine = machine
        self.manifest = manifest ?? .object([:])
        self.network = network
        self.polling = polling
        self.trust = trust
        self.log = log
    }

    /// The machine as it was when the process (or virtual device) started.
    func resume() async {
        await perform(machine.started())
    }

    /// Polls and works until stopped.
    func run() async {
        while !isStopped() {
            await deliverOutbox()
            // Only poll with an empty outbox: the server must hear how the last execution
            // ended before it is asked what to do next.
            if !body.pendingReports().isEmpty {
                await pause()
                continue
            }
            await beforePoll()
            do {
                let response = try await network.connection().send(
                    ClientRequest(path: DeviceRoutes.next.path(query: [("wait", String(polling.wait))]), headers: network.auth()),
                    timeout: .seconds(polling.wait + 15))
                switch response.status {
                case 200:
                    backoff = 1
                    await received(try JSON.parse(response.body))
                case 204:
                    backoff = 1
                    let interval = Double(response.headers["x-poll-interval"] ?? "") ?? polling.minimum
                    let jitter = Double(response.headers["x-poll-jitter"] ?? "") ?? 0
                    // A long poll already waited on the server: then only the jitter spreads the
                    // fleet out. A plain poll waits the server's interval, within our bounds.
                    let base = polling.wait > 0 ? 0 : min(max(interval, polling.minimum), polling.maximum)
                    try await Task.sleep(for: .seconds(base + Double.random(in: 0...max(0, min(jitter, polling.maximum)))))
                case 401:
                    log("the server refused the device token (401); check --token")
                    await pause()
                default:  // 403 device_pending (waiting for approval), 429, 5xx: wait, at least as long as asked
                    log("poll answered \(response.status): \(response.bodyText.prefix(200))")
                    await pause(atLeast: Double(response.headers["retry-after"] ?? ""))
                }
            } catch {
                if isStopped() { return }
                log("server unreachable: \(error)")
                observe(.unreachable)
                await network.drop()
                await pause()
            }
        }
    }

    /// Exponential backoff with jitter while the server cannot be reached (or refuses):
    /// never a tight loop. `atLeast`: the server's Retry-After, honoured up to the maximum.
    func pause(atLeast minimum: Double? = nil) async {
        let asked = min(minimum ?? 0, polling.maximum)
        try? await Task.sleep(for: .seconds(max(asked, backoff * Double.random(in: 0.5...1.5))))
        backoff = min(backoff * 2, polling.maximum)
    }

    /// A manifest for this device: check its signature, remember it, hand it to the machine.
    private func received(_ answer: JSON) async {
        guard var trust else { return }
        let execution: JSON
        switch trust.check(answer, token: network.token(), now: Int(Date().timeIntervalSince1970)) {
        case .failure(let refusal):
            log("refusing the manifest: \(refusal)")
            observe(.manifestRefused)
            await pause()
            return
        case .success(let signed):
            do { try trust.accepted(issuedAt: signed.issuedAt, byNext: signed.byNext) } catch { log("cannot save the manifest key's state: \(error)") }
            self.trust = trust
            if signed.byNext { log("the server signs with its next manifest key now; pinned it") }
            execution = signed.execution  // the signed copy; the unsigned one beside it is ignored
        }
        let decoded: Manifest
        do {
            decoded = try Manifest(json: execution)
        } catch let refusal {
            log("refusing the manifest: \(refusal)")
            observe(.manifestRefused)
            if let unsupported = refusal.unsupportedExecution(in: execution) {
                await perform(machine.unsupportedManifestReceived(executionID: unsupported.id, serverState: unsupported.state,
                                                                  serverSeq: unsupported.seq, serverStep: unsupported.step,
                                                                  reason: refusal.description))
                // Refused once and reported (the outbox keeps the report until it is heard): the
                // same execution handed out again is a replay, never a second refusal.
                try? self.trust?.markFinished(unsupported.id)
            } else {
                await pause()
            }
            return
        }
        let job = AgentJob(decoded)
        do { try body.keep(manifest: execution) } catch {
            log("cannot keep the manifest (\(error)); not acting without it")
            await pause()
            return
        }
        manifest = execution
        serverState = decoded.state
        log("execution \(job.executionID): \(job.app) \(job.version), \(job.steps.count) steps")
        await perform(machine.manifestReceived(job, serverState: decoded.state, serverSeq: decoded.seq, serverStep: decoded.step))
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
            do { try body.save(machine) } catch {
                log("cannot write the journal (\(error)); not acting without it")
                await pause()
                return
            }
            var next: AgentDecision?
            while next == nil, !actions.isEmpty {
                let action = actions.removeFirst()
                next = await execute(action)
                body.crashPoint(after: action)
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
        func activity(_ activity: Activity) async -> AgentDecision {
            do throws(StepFailure) {
                try await body.perform(activity, manifest: manifest)
                return machine.activitySucceeded()
            } catch {
                log("failed: \(error.message)")
                return machine.activityFailed(error.message, exitCode: error.exitCode, logTail: error.logTail)
            }
        }
        switch action {
        case .report(let report):
            do { try body.enqueue(report) } catch { log("cannot queue a report: \(error)") }
            return nil
        case .download(let step):
            log("step \(step): download")
            return await activity(.download(step: step))
        case .snapshot:
            return await activity(.snapshot)
        case .runScript(let step):
            log("step \(step): install script")
            return await activity(.runScript(step: step))
        case .healthCheck(let step):
            log("step \(step): health check")
            return await activity(.healthCheck(step: step))
        case .verifyRestore:
            return await activity(.verifyRestore)
        case .restoreSnapshot:
            log("rolling back: restoring the known-good")
            return await activity(.restoreSnapshot)
        case .runRollbackScript:
            return await activity(.runRollbackScript)
        case .dropSnapshot:
            body.dropSnapshot()
            return nil
        case .reboot:
            // The journal already says a reboot is pending; tell the server what we can, then go.
            await deliverOutbox()
            switch await body.reboot() {
            case .cameBack: return machine.started()
            case .failed(let message): return machine.activityFailed(message)
            }
        case .finished(let outcome, let app, let version):
            log("execution ended: \(outcome.rawValue)")
            let id = manifest.objectValue?["id"]?.stringValue
            body.ended(outcome, app: app, version: version, execution: id)
            observe(.ended(outcome, serverState: serverState))
            if let id { try? trust?.markFinished(id) }  // never again, even if replayed
            try? body.keep(manifest: nil)
            manifest = .object([:])
            serverState = nil
            await afterEnd()
            return nil
        }
    }

    /// Sends queued reports in order until the outbox is empty or the server is unreachable.
    /// Returns the machine's decision when an answer carried a directive that changes the plan.
    @discardableResult
    func deliverOutbox() async -> AgentDecision? {
        var steered: AgentDecision?
        if let retry = deliveryRetryAt, Date() < retry { return nil }
        let pending = body.pendingReports()
        for entry in pending {
            do {
                let response = try await network.connection().send(ClientRequest(
                    method: DeviceRoutes.report.method, path: DeviceRoutes.report.path(entry.execution), headers: network.auth(),
                    body: .bytes(Array(entry.body.serialized.utf8))), timeout: .seconds(30))
                let answer = ReportAnswer(body: response.body)
                observe(.reportAnswered(status: response.status, answer))
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
                try? body.remove(entry)
                if response.status != 200 { log("report \(entry.body.serialized) answered \(response.status)") }
                // The manifest is kept until the execution's `finished` action has run, so the
                // last reports' answers still count for it (the machine forgets its job sooner).
                if let answer, entry.execution == manifest.objectValue?["id"]?.stringValue { serverState = answer.state }
                if entry.execution == machine.job?.executionID, let answer, answer.directive != .proceed {
                    log("the server says \(answer.directive.rawValue) for execution \(entry.execution)")
                    let decision = machine.directiveReceived(answer.directive)
                    if case .accepted(let actions) = decision, !actions.isEmpty { steered = decision }
                }
            } catch {
                observe(.unreachable)
                deliveryRetryAt = Date().addingTimeInterval(min(backoff, 5))
                await network.drop()
                return steered
            }
        }
        deliveryRetryAt = nil
        // Only a server that answered ends the backoff: an empty outbox says nothing about
        // the server (resetting here made idle agents retry a dead server every second).
        if !pending.isEmpty { backoff = 1 }
        return steered
    }
}
