// One simulated device: the agent's runner (AgentRunner) over a body whose activities are
// simulated. It polls, backs off, keeps an outbox, retries a report the server did not hear
// with the same seq (a repeat is a `duplicate`), obeys directives and reconnects after a
// server restart exactly as the real agent does, because it is the real agent's code.

import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import Foundation
import Synchronization

/// A virtual device: the agent's own runner (AgentRunner) over a simulated body. Its polls,
/// backoff, outbox, signature checks and directives are the real agent's code.
struct VirtualDevice: Sendable {
    struct Identity: Sendable {
        let name: String
        let token: String
        let connection: SharedConnection
    }

    struct Behaviour: Sendable {
        let stepTime: Double
        let failures: FailureRates
        let pollWait: Int
        /// The server's manifest key: a manifest is run only if its signature checks.
        let signingKey: [UInt8]
    }

    let identity: Identity
    let behaviour: Behaviour
    let stats: SimulatorStats

    init(_ identity: Identity, behaviour: Behaviour, stats: SimulatorStats) {
        self.identity = identity
        self.behaviour = behaviour
        self.stats = stats
    }

    func run() async {
        let shared = identity.connection
        let last = LastClient()
        let auth: HTTPHeaders = ["authorization": "Bearer \(identity.token)", "content-type": "application/json"]
        let token = identity.token
        let network = AgentRunner.Network(connection: {
            let client = try await shared.client()
            last.client = client
            return client
        }, drop: { await shared.drop(last.client) }, auth: { auth }, token: { token })
        let runner = AgentRunner(body: SimulatedBody(behaviour), machine: AgentMachine(), manifest: nil, network: network,
                                 polling: .init(wait: behaviour.pollWait, minimum: 1, maximum: 30),
                                 trust: ManifestTrust(path: "", publicKey: behaviour.signingKey), log: { _ in })
        let stats = stats
        runner.observe = { event in
            switch event {
            case .reportAnswered(let status, let answer):
                if status == 200, answer?.result == .accepted { stats.accepted() }
                if status == 409 { stats.count(\.rejected) }  // the server moved on (deadline, cancel); its state wins
                if status == 429 || status >= 500 { stats.count(\.errors) }
            case .unreachable: stats.count(\.errors)
            case .manifestRefused: stats.count(\.refused)
            case .ended(let outcome, let serverState): stats.ended(serverState?.rawValue ?? outcome.rawValue)
            }
        }
        runner.isStopped = { stats.stopped }
        await runner.run()
    }
}

final class LastClient: @unchecked Sendable {
    var client: HTTP2Client?
}

/// One HTTP/2 connection shared by many virtual devices. When it breaks (the server
/// restarted), the first device to notice drops it and the next request of any device
/// makes a new one; a device that failed on an older connection drops nothing.
actor SharedConnection {
    let url: String
    private var current: HTTP2Client?
    private var connecting: Task<HTTP2Client, any Error>?

    init(url: String, client: HTTP2Client) {
        self.url = url
        current = client
    }

    func client() async throws -> HTTP2Client {
        if let current { return current }
        if let connecting { return try await connecting.value }
        let task = Task { [url] in try await HTTP2Client.connect(to: url, timeout: .seconds(10)) }
        connecting = task
        defer { connecting = nil }
        let made = try await task.value
        current = made
        return made
    }

    func drop(_ failed: HTTP2Client?) async {
        guard let failed, failed === current else { return }
        current = nil
        await failed.close()
    }

    func close() async {
        await current?.close()
        current = nil
    }
}

/// A simulated device under the runner: its memory is memory (a process's devices end with
/// it), its activities take `stepTime` and fail with their kind's rate.
final class SimulatedBody: AgentBody, @unchecked Sendable {
    let behaviour: Behaviour
    private var outbox: [PendingReport] = []
    private var next = 0

    typealias Behaviour = VirtualDevice.Behaviour

    init(_ behaviour: Behaviour) { self.behaviour = behaviour }

    func save(_ machine: AgentMachine) throws {}
    func keep(manifest: JSON?) throws {}

    func enqueue(_ report: OutgoingReport) throws {
        next += 1
        outbox.append(PendingReport(execution: report.execution, body: report.body.json, handle: String(next)))
    }

    func pendingReports() -> [PendingReport] { outbox }

    func remove(_ report: PendingReport) throws { outbox.removeAll { $0.handle == report.handle } }

    func perform(_ activity: Activity, manifest: JSON) async throws(StepFailure) {
        let kind: String? = switch activity {
        case .download: "download"
        case .runScript: "run"
        case .healthCheck: "verify"
        case .runRollbackScript: "rollback"
        case .snapshot, .restoreSnapshot, .verifyRestore: nil  // bookkeeping: instant, never fails
        }
        guard let kind else { return }
        await pause()
        if behaviour.failures.fails(kind) { throw StepFailure(message: "simulated \(kind) failure", exitCode: 1) }
    }

    func dropSnapshot() {}

    func reboot() async -> RebootResult {
        await pause()
        return behaviour.failures.fails("reboot") ? .failed("simulated reboot failure") : .cameBack
    }

    func ended(_ outcome: AgentOutcome, app: String, version: String, execution: String?) {}
    func crashPoint(after action: AgentAction) {}

    private func pause() async { if behaviour.stepTime > 0 { try? await Task.sleep(for: .seconds(behaviour.stepTime)) } }
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
