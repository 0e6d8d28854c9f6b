// What the one runner (AgentRunner.swift) needs of the device it runs on: its memory (the
// journal, the manifest in progress, the outbox) and the activities the machine asks for.
// DeviceBody is a real device (files in the state directory, scripts, snapshots, the
// configured reboot); SimulatedBody is a virtual one (memory, sleeps, failure rates).

import FlotillaCore
import FlotillaJSON

/// A report waiting in the outbox.
struct PendingReport: Sendable {
    let execution: String
    let body: JSON
    /// The body's handle on it (a file, an index), to drop it once heard.
    let handle: String
}

/// What the machine asks the device to do, besides reports and bookkeeping.
enum Activity: Sendable {
    case download(step: Int), snapshot, runScript(step: Int), healthCheck(step: Int)
    case restoreSnapshot, runRollbackScript, verifyRestore
}

enum RebootResult: Sendable {
    /// The device came back (a simulated one): the machine's next event is `started`.
    case cameBack
    case failed(String)
}

/// A device as the runner sees it: its memory and its activities.
protocol AgentBody: AnyObject, Sendable {
    func save(_ machine: AgentMachine) throws
    /// The manifest of the execution in progress (nil when none), kept with the journal.
    func keep(manifest: JSON?) throws
    func enqueue(_ report: OutgoingReport) throws
    func pendingReports() -> [PendingReport]
    func remove(_ report: PendingReport) throws
    func perform(_ activity: Activity, manifest: JSON) async throws(StepFailure)
    func dropSnapshot()
    func reboot() async -> RebootResult
    /// The execution ended on the device (the installed version moves only on success).
    func ended(_ outcome: AgentOutcome, app: String, version: String, execution: String?)
    /// Fault injection (the Killed_in_X tests): called after each action.
    func crashPoint(after action: AgentAction)
}

/// What the runner tells whoever watches it (the simulator's counters).
enum RunnerEvent: Sendable {
    case reportAnswered(status: Int, ReportAnswer?)
    case unreachable
    case manifestRefused
    case ended(AgentOutcome, serverState: ExecutionState?)
}

extension Manifest.Refusal {
    /// Where the server stands on a manifest refused for a step kind this agent does not
    /// know, so the refusal can be reported; nil when the manifest is too broken even for that.
    func unsupportedExecution(in execution: JSON) -> (id: String, state: ExecutionState, seq: Int, step: Int)? {
        // Read as Manifest reads them: the same defaults for what may be absent.
        guard case .unknownStepKind = self, let fields = execution.objectValue, let id = fields["id"]?.stringValue,
              let state = ExecutionState(rawValue: fields["state"]?.stringValue ?? ExecutionState.queued.rawValue) else { return nil }
        return (id, state, fields["seq"]?.intValue ?? 0, fields["step"]?.intValue ?? 0)
    }
}

extension AgentAction {
    var isReport: Bool { if case .report = self { true } else { false } }
}
