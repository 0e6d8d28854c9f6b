// The execution vocabulary both ends speak: step kinds, execution states and the server's
// directive. FlotillaCore's machines are written in these words (it re-exports this module).

/// The kind of a flow step; a working state corresponds to each.
public enum StepKind: String, Sendable, CaseIterable {
    case download, run, reboot, verify
}


public enum ExecutionState: String, Sendable, CaseIterable {
    case queued, downloading, installing, rebooting, verifying
    case rollingBack = "rolling_back"
    case succeeded, failed
    case rolledBack = "rolled_back"
    case rollbackFailed = "rollback_failed"
    case canceled

    public var isTerminal: Bool {
        switch self {
        case .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled: true
        case .queued, .downloading, .installing, .rebooting, .verifying, .rollingBack: false
        }
    }

    /// Started and not finished: at most one such execution per (device, app).
    public var isInFlight: Bool {
        switch self {
        case .downloading, .installing, .rebooting, .verifying, .rollingBack: true
        case .queued, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled: false
        }
    }

    /// The state a device is in while it works on a step of this kind.
    public static func working(on kind: StepKind) -> ExecutionState {
        switch kind {
        case .download: .downloading
        case .run: .installing
        case .reboot: .rebooting
        case .verify: .verifying
        }
    }

    /// What the agent should do next, sent with every answer to a report or poll.
    public var directive: Directive {
        switch self {
        case .queued, .downloading, .installing, .rebooting, .verifying: .proceed
        case .rollingBack: .rollBack
        case .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled: .stop
        }
    }
}

public enum Directive: String, Sendable {
    case proceed = "continue"
    case rollBack = "roll_back"
    case stop
}

extension ExecutionState {
    /// Working on a step of the flow (not queued, not rolling back, not finished): where an
    /// operator's cancel stops or rolls the device back.
    public var isWorking: Bool { isInFlight && directive == .proceed }

    /// The states of a started, unfinished execution, as SQL text for `state IN (…)`: derived
    /// from `isInFlight`, so the database's idea of "in flight" cannot drift from the machine's.
    public static var inFlightSQLList: String { sqlList(allCases.filter(\.isInFlight)) }
    /// `queued` and the in-flight states: work a device still has to do.
    public static var openSQLList: String { sqlList(allCases.filter { !$0.isTerminal }) }
    public static var workingSQLList: String { sqlList(allCases.filter(\.isWorking)) }
    public static var terminalSQLList: String { sqlList(allCases.filter(\.isTerminal)) }

    private static func sqlList(_ states: [ExecutionState]) -> String {
        states.map { "'\($0.rawValue)'" }.joined(separator: ", ")
    }
}
