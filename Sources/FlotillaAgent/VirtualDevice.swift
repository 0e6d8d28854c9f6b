// One simulated device: poll, walk the manifest's steps with reports, roll back when
// told. Reports are retried with the same seq after a network error (the server answers
// a repeat as `duplicate`), so a flaky link never double-applies a step.

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
                    ClientRequest(path: "/api/v1/agent/next?wait=\(behaviour.pollWait)", headers: auth),
                    timeout: .seconds(behaviour.pollWait + 15))
                backoff = 0.5
                switch response.status {
                case 200:
                    guard let execution = (try? JSON.parse(response.body))?.objectValue?["execution"] else { throw SimulatedError.bad(response) }
                    try await perform(execution)
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

    private func perform(_ execution: JSON) async throws {
        let fields = execution.objectValue ?? [:]
        guard let id = fields["id"]?.stringValue, let steps = fields["steps"]?.arrayValue else { return }
        let version = fields["version"]?.stringValue ?? ""
        var seq = fields["seq"]?.intValue ?? 0
        func report(_ event: String, step: Int? = nil, extra: [String: JSON] = [:]) async throws -> [String: JSON] {
            seq += 1
            var body = extra
            body["seq"] = .int(seq)
            body["event"] = .string(event)
            if let step { body["step"] = .int(step) }
            let request = ClientRequest(method: "POST", path: "/api/v1/agent/executions/\(id)/reports", headers: auth,
                                        body: .bytes(Array(JSON.object(body).serialized.utf8)))
            while true {
                do {
                    let response = try await identity.client.send(request)
                    let answer = (try? JSON.parse(response.body))?.objectValue ?? [:]
                    if response.status == 200 {
                        if answer["result"]?.stringValue == "accepted" { stats.accepted() }
                        return answer
                    }
                    stats.count(\.rejected)  // 409: the server moved on (deadline, cancel); its state wins
                    return answer["error"]?.objectValue?["details"]?.objectValue ?? [:]
                } catch {
                    if stats.stopped { throw error }
                    stats.count(\.errors)
                    try await Task.sleep(for: .seconds(Double.random(in: 0.5...1.5)))
                }
            }
        }
        func pause() async throws { if behaviour.stepTime > 0 { try await Task.sleep(for: .seconds(behaviour.stepTime)) } }

        var answer: [String: JSON] = ["directive": fields["directive"] ?? .string("continue")]
        var step = fields["step"]?.intValue ?? 0
        while answer["directive"]?.stringValue == "continue" && step < steps.count {
            let kind = steps[step].objectValue?["kind"]?.stringValue ?? "run"
            answer = try await report("step_started", step: step)
            guard answer["directive"]?.stringValue == "continue" else { break }
            try await pause()
            if behaviour.failures.fails(kind) {
                answer = try await report("step_failed", step: step, extra: ["message": .string("simulated \(kind) failure"), "exit_code": .int(1)])
            } else if kind == "reboot" {
                answer = try await report("booted", extra: ["version": .string(version)])
            } else {
                answer = try await report("step_succeeded", step: step)
            }
            step += 1
        }
        if answer["directive"]?.stringValue == "roll_back" {
            try await pause()
            answer = behaviour.failures.fails("rollback")
                ? try await report("rollback_failed", extra: ["message": .string("simulated rollback failure")])
                : try await report("rollback_succeeded")
        }
        stats.ended(answer["state"]?.stringValue ?? "unknown")
    }
}

enum SimulatedError: Error {
    case bad(ClientResponse)
}

/// Counters shared by every virtual device.
final class SimulatorStats: Sendable {
    struct Snapshot {
        var accepted = 0, rejected = 0, errors = 0
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
            text += "\n  reports rejected (409): \(rejected)\n  request errors: \(errors)"
            return text
        }

        func json(seconds: Double) -> JSON {
            .fields([("seconds", .number(String(format: "%.3f", seconds))), ("reports_accepted", .int(accepted)),
                     ("accepted_per_second", .number(String(format: "%.1f", acceptedPerSecond))),
                     ("reports_rejected", .int(rejected)), ("errors", .int(errors)), ("executions_ended", .int(ended)),
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
