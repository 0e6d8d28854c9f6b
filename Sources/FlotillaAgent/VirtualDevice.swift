// One simulated device: poll, then run the execution through the agent's own decision
// logic (AgentMachine) with simulated activities. Reports are retried with the same seq
// after a network error (the server answers a repeat as `duplicate`), so a flaky link
// never double-applies a step.

import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import Foundation
import Synchronization

struct VirtualDevice: Sendable {
    struct Identity: Sendable {
        let name: String
        let token: String
        let client: HTTP2Client
    }

    struct Behaviour: Sendable {
        let stepTime: Double
        let failures: FailureRates
        let pollWait: Int
        /// The server's manifest key: a manifest is run only if its signature checks.
        let signingKey: [UInt8]
    }

    private let identity: Identity
    private let behaviour: Behaviour
    private let stats: SimulatorStats
    private let auth: HTTPHeaders

    init(_ identity: Identity, behaviour: Behaviour, stats: SimulatorStats) {
        self.identity = identity
        self.behaviour = behaviour
        self.stats = stats
        auth = ["authorization": "Bearer \(identity.token)", "content-type": "application/json"]
    }

    func run() async {
        var backoff = 0.5
        while !stats.stopped {
            do {
                let response = try await identity.client.send(
                    ClientRequest(path: DeviceRoutes.next.path(query: [("wait", String(behaviour.pollWait))]), headers: auth),
                    timeout: .seconds(behaviour.pollWait + 15))
                backoff = 0.5
                switch response.status {
                case 200:
                    // The same check as the agent's (ManifestTrust), kept in memory: signature,
                    // this device's token, expiry. Only the signed copy is acted on.
                    let trust = ManifestTrust(path: "", publicKey: behaviour.signingKey)
                    switch trust.check(try JSON.parse(response.body), token: identity.token, now: Int(Date().timeIntervalSince1970)) {
                    case .success(let signed):
                        try await perform(signed.execution)
                    case .failure:
                        stats.count(\.refused)
                        try await Task.sleep(for: .seconds(1))
                    }
                case 204:
                    continue
                default:
                    throw SimulatedError.bad(response)
                }
            } catch {
                if stats.stopped { return }
                stats.count(\.errors)
                // Exponential backoff with jitter: a fleet must not hammer a server that is down.
                try? await Task.sleep(for: .seconds(backoff * Double.random(in: 0.5...1.5)))
                backoff = min(backoff * 2, 30)
            }
        }
    }

    /// Runs one execution through the agent's own machine (FlotillaCore's AgentMachine),
    /// as the real agent does, with simulated activities: each takes `stepTime` and fails
    /// with its kind's rate. Only the journal, the outbox and the scripts are left out.
    private func perform(_ execution: JSON) async throws {
        var machine = AgentMachine()
        var decision: AgentDecision
        do {
            let manifest = try Manifest(json: execution)
            decision = machine.manifestReceived(AgentJob(manifest), serverState: manifest.state, serverSeq: manifest.seq, serverStep: manifest.step)
        } catch let refusal {
            guard let unsupported = AgentDaemon.unsupported(execution, refusal) else { return }
            decision = machine.unsupportedManifestReceived(executionID: unsupported.id, serverState: unsupported.state,
                                                           serverSeq: unsupported.seq, serverStep: unsupported.step, reason: refusal.description)
        }
        var serverState = "unknown"
        while case .accepted(var actions) = decision {
            var next: AgentDecision?
            while next == nil, !actions.isEmpty {
                switch actions.removeFirst() {
                case .report(let report):
                    guard let answer = try await send(report) else { break }
                    serverState = answer.state.rawValue
                    // The server may have moved on (a deadline, a cancel): its directive steers.
                    if answer.directive != .proceed, case .accepted(let steered) = machine.directiveReceived(answer.directive), !steered.isEmpty {
                        next = .accepted(steered)
                    }
                case .download:
                    next = try await activity("download", &machine)
                case .runScript:
                    next = try await activity("run", &machine)
                case .healthCheck:
                    next = try await activity("verify", &machine)
                case .runRollbackScript:
                    next = try await activity("rollback", &machine)
                case .snapshot, .restoreSnapshot, .verifyRestore:
                    next = machine.activitySucceeded()
                case .reboot:
                    // A failed reboot is the machine's activity failure; a good one, the next start.
                    try await pause()
                    next = behaviour.failures.fails("reboot") ? machine.activityFailed("simulated reboot failure") : machine.started()
                case .dropSnapshot:
                    break
                case .finished(let outcome, _, _):
                    stats.ended(serverState == "unknown" ? outcome.rawValue : serverState)
                    return
                }
            }
            guard let next else { return }
            decision = next
        }
    }

    private func activity(_ kind: String, _ machine: inout AgentMachine) async throws -> AgentDecision {
        try await pause()
        return behaviour.failures.fails(kind) ? machine.activityFailed("simulated \(kind) failure", exitCode: 1) : machine.activitySucceeded()
    }

    private func pause() async throws { if behaviour.stepTime > 0 { try await Task.sleep(for: .seconds(behaviour.stepTime)) } }

    /// Sends one report, again with the same seq after a network error (the server answers a
    /// repeat as `duplicate`). Returns the answer, or a 409's details (the server's state);
    /// nil for an answer that is neither.
    private func send(_ report: OutgoingReport) async throws -> ReportAnswer? {
        let request = ClientRequest(method: DeviceRoutes.report.method, path: DeviceRoutes.report.path(report.execution), headers: auth,
                                    body: .bytes(Array(report.body.json.serialized.utf8)))
        while true {
            do {
                let response = try await identity.client.send(request)
                if response.status == 429 || response.status >= 500 {
                    // Not heard: the same report again, no sooner than the server asks.
                    stats.count(\.errors)
                    try await Task.sleep(for: .seconds(Double(response.headers["retry-after"] ?? "") ?? 1))
                    continue
                }
                let answer = ReportAnswer(body: response.body)
                if response.status == 200 {
                    if answer?.result == .accepted { stats.accepted() }
                    return answer
                }
                stats.count(\.rejected)  // 409: the server moved on (deadline, cancel); its state wins
                return answer
            } catch {
                if stats.stopped { throw error }
                stats.count(\.errors)
                try await Task.sleep(for: .seconds(Double.random(in: 0.5...1.5)))
            }
        }
    }
}

enum SimulatedError: Error {
    case bad(ClientResponse)
}

/// Counters shared by every virtual device.
final class SimulatorStats: Sendable {
    struct Snapshot {
        var accepted = 0, rejected = 0, errors = 0, refused = 0
        /// When the first and the latest accepted report came back: the busy window.
        var firstAccepted: Date?, lastAccepted: Date?
        var acceptedPerSecond: Double {
            guard let first = firstAccepted, let last = lastAccepted, last > first else { return 0 }
            return Double(accepted) / last.timeIntervalSince(first)
        }
        var outcomes: [String: Int] = [:]
        var ended: Int { outcomes.values.reduce(0, +) }

        func line(since start: Date, previous: Snapshot) -> String {
            let t = Int(Date().timeIntervalSince(start))
            let outcomes = self.outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            return "t=\(t)s  reports accepted \(accepted) (+\(accepted - previous.accepted)/s)  executions ended \(ended)\(outcomes.isEmpty ? "" : " (\(outcomes))")  rejected \(rejected)  errors \(errors)"
        }

        func summary(seconds: Double) -> String {
            var text = "simulated \(String(format: "%.1f", seconds)) s: \(accepted) reports accepted (\(String(format: "%.0f", acceptedPerSecond))/s while busy), \(ended) executions ended"
            for (state, n) in outcomes.sorted(by: { $0.key < $1.key }) { text += "\n  \(state): \(n)" }
            text += "\n  reports rejected (409): \(rejected)\n  request errors: \(errors)\n  manifests refused (bad signature): \(refused)"
            return text
        }

        func json(seconds: Double) -> JSON {
            .fields([("seconds", .number(String(format: "%.3f", seconds))), ("reports_accepted", .int(accepted)),
                     ("accepted_per_second", .number(String(format: "%.1f", acceptedPerSecond))),
                     ("reports_rejected", .int(rejected)), ("errors", .int(errors)), ("manifests_refused", .int(refused)),
                     ("executions_ended", .int(ended)),
                     ("outcomes", .object(outcomes.mapValues { .int($0) }))])
        }
    }

    private let state = Mutex((snapshot: Snapshot(), stopped: false))

    var snapshot: Snapshot { state.withLock { $0.snapshot } }
    var stopped: Bool { state.withLock { $0.stopped } }
    func stop() { state.withLock { $0.stopped = true } }
    func count(_ field: WritableKeyPath<Snapshot, Int>) { state.withLock { $0.snapshot[keyPath: field] += 1 } }
    func accepted() {
        let now = Date()
        state.withLock { state in
            state.snapshot.accepted += 1
            if state.snapshot.firstAccepted == nil { state.snapshot.firstAccepted = now }
            state.snapshot.lastAccepted = now
        }
    }
    func ended(_ outcome: String) { state.withLock { $0.snapshot.outcomes[outcome, default: 0] += 1 } }
}
