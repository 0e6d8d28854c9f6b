// The vocabulary of one device's execution of a deployment: states, steps, reports,
// failures and what the machine asks its executor to do. Plain values, no behaviour
// beyond a few derived properties; the rules live in Execution.swift.

/// What the machine needs to know about a step: its kind and how long it may take.
public struct StepPlan: Sendable, Equatable {
    public var kind: StepKind
    /// Seconds from the step's start (or from the previous step's success) to its deadline.
    public var timeout: Int

    public init(_ kind: StepKind, timeout: Int) {
        self.kind = kind
        self.timeout = timeout
    }
}


/// Why an execution left the happy path. Every terminal state but `succeeded` has one.
public struct Failure: Sendable, Equatable {
    public enum Cause: String, Sendable, CaseIterable {
        case stepFailed = "step_failed"
        case deadline
        case canceled
        case superseded
        /// The device came back with a version that is neither the target nor the known-good.
        case unexpectedVersion = "unexpected_version"
        /// The device came back on its known-good version by itself (bootloader fallback).
        case fellBack = "fell_back"
        /// The device rebooted in the middle of a step that does not expect it.
        case unexpectedReboot = "unexpected_reboot"
        case rollbackFailed = "rollback_failed"
    }

    public var cause: Cause
    public var message: String
    /// The step it happened in (index into the flow's steps), when there was one.
    public var step: Int?
    public var exitCode: Int?
    /// The last lines of the step's output, as the agent sent them.
    public var logTail: String?

    public init(_ cause: Cause, _ message: String, step: Int? = nil, exitCode: Int? = nil, logTail: String? = nil) {
        self.cause = cause
        self.message = message
        self.step = step
        self.exitCode = exitCode
        self.logTail = logTail
    }
}

extension Failure {
    /// The reasons queued executions end with; the set-based SQL that cancels or supersedes
    /// thousands of queued rows at once writes these same values.
    public static let canceledBeforeStart = Failure(.canceled, "canceled by an operator before it started")
    public static func superseded(by deployment: String) -> Failure { Failure(.superseded, "superseded by deployment \(deployment)") }
}

/// One report from the agent. `seq` grows with every report the agent sends for an
/// execution; a repeated seq is a retry, a smaller one arrived late.
public struct AgentReport: Sendable, Equatable {
    public var seq: Int
    public var event: AgentEvent

    public init(seq: Int, _ event: AgentEvent) {
        self.seq = seq
        self.event = event
    }
}

public enum AgentEvent: Sendable, Equatable {
    case stepStarted(step: Int)
    case stepProgress(step: Int)
    case stepSucceeded(step: Int)
    /// The failure's cause and step are filled in by the machine.
    case stepFailed(step: Int, message: String, exitCode: Int?, logTail: String?)
    /// The device is up again and runs `version` of the execution's app (nil: none installed).
    case booted(version: String?)
    case rollbackSucceeded
    case rollbackFailed(message: String, exitCode: Int?, logTail: String?)
}

/// The machine's answer to an event.
public enum Decision: Sendable, Equatable {
    /// The event was applied: persist the execution, then perform the actions.
    case accepted([Action])
    /// The same report again (a retry): nothing to write; answer with the current state.
    case duplicate
    /// A report that arrived late or no longer matters: nothing changes.
    case stale
    /// Impossible in this state (409 with this reason); nothing changes.
    case rejected(String)
}

/// What the executor must do after persisting an accepted event.
public enum Action: Sendable, Equatable {
    /// Append to the event log (every state change, with its cause).
    case logTransition(from: ExecutionState, to: ExecutionState, cause: String)
    /// The execution succeeded: the device's installed and known-good versions become this.
    case recordKnownGood(version: String)
    /// The device reported which version of the app it runs.
    case recordInstalled(version: String?)
    /// Tell a waiting agent now rather than at its next poll (a cancel, a rollback).
    case wakeAgent
}
