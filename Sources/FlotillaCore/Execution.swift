// One device's execution of a deployment: the per-device update state machine.
//
//                 stepStarted(0)          stepSucceeded(i) → the state of step i+1
//   queued ──────────────────────▶ downloading ─▶ installing ─▶ rebooting ─▶ verifying ─▶ succeeded
//     │                                 │              │       booted(target)   │  last step
//     │ cancel / superseded             │ fail,        │ fail, deadline,        │ succeeded
//     ▼                                 │ deadline,    │ cancel, booted(other), │
//   canceled ◀──── cancel ──────────────┤ no change    ▼ unexpected reboot      ▼
//                                       ▼         rolling_back ──────────────▶ rolled_back
//                                     failed           │   rollbackSucceeded,    ▲
//                                                      │   booted(known-good)    │ booted(known-good):
//                                                      ▼                         │ the device fell back
//                                               rollback_failed                  │ on its own (from
//                                        (rollbackFailed, deadline)             rebooting / verifying)
//
// The working state follows the kind of the current step (download → downloading, run →
// installing, reboot → rebooting, verify → verifying); a flow may have several steps of
// one kind. A failure rolls back when the device may have changed, that is when any step
// up to and including the failing one is not a download; otherwise it ends in `failed`.
//
// Rules every event follows:
// - Reports carry a sequence number: the last accepted one again is a `duplicate`, an
//   older one is `stale`; neither changes anything. A report about an earlier step, or
//   any report after the machine moved to rolling back or ended, is `stale` too: the
//   answer's directive tells the agent what to do now.
// - Anything impossible is `.rejected(reason)`; nothing here traps on network input.
// - Time is an argument. Each working state has a deadline (`deadlinePassed(at:)`); a step
//   started again (an agent restart announces its re-run) gets a fresh one, at most
//   `maxAttempts` times in all, after which the step fails.

public struct Execution: Sendable, Equatable {
    public let steps: [StepPlan]
    /// The app version this execution installs, and the one to fall back to (nil: none).
    public let targetVersion: String
    public let knownGood: String?
    /// Seconds the agent has to roll back and confirm.
    public let rollbackTimeout: Int

    public internal(set) var state: ExecutionState
    /// The current step (0 while queued).
    public internal(set) var step: Int
    /// How many times the current step was started (an agent restart starts it again).
    public internal(set) var attempt: Int
    /// The last accepted report's sequence number.
    public internal(set) var lastSeq: Int
    public internal(set) var deadline: Instant?
    public internal(set) var failure: Failure?
    public internal(set) var rollbackFailure: Failure?

    /// How often one step may be started (its first start and the re-runs an agent restart
    /// announces) before the execution fails.
    public static let maxAttempts = 5

    /// A new, queued execution.
    public init(steps: [StepPlan], targetVersion: String, knownGood: String?, rollbackTimeout: Int) {
        self.init(steps: steps, targetVersion: targetVersion, knownGood: knownGood, rollbackTimeout: rollbackTimeout,
                  state: .queued, step: 0, attempt: 0, lastSeq: 0, deadline: nil, failure: nil, rollbackFailure: nil)
    }

    /// An execution as it was stored.
    public init(steps: [StepPlan], targetVersion: String, knownGood: String?, rollbackTimeout: Int,
                state: ExecutionState, step: Int, attempt: Int, lastSeq: Int, deadline: Instant?,
                failure: Failure?, rollbackFailure: Failure?) {
        self.steps = steps
        self.targetVersion = targetVersion
        self.knownGood = knownGood
        self.rollbackTimeout = rollbackTimeout
        self.state = state
        self.step = step
        self.attempt = attempt
        self.lastSeq = lastSeq
        self.deadline = deadline
        self.failure = failure
        self.rollbackFailure = rollbackFailure
    }

    // MARK: Events

    public mutating func agentReported(_ report: AgentReport, at now: Instant) -> Decision {
        guard report.seq >= 1 else { return .rejected("seq must be 1 or more") }
        if report.seq == lastSeq { return .duplicate }
        if report.seq < lastSeq { return .stale }
        let decision: Decision
        switch report.event {
        case .stepStarted(let index): decision = stepStarted(index, at: now)
        case .stepProgress(let index): decision = stepProgress(index)
        case .stepSucceeded(let index): decision = stepSucceeded(index, at: now)
        case .stepFailed(let index, let message, let exitCode, let logTail):
            decision = stepFailed(index, Failure(.stepFailed, message, step: index, exitCode: exitCode, logTail: logTail), at: now)
        case .booted(let version): decision = deviceBooted(version: version, at: now)
        case .rollbackSucceeded: decision = rollbackSucceeded(at: now)
        case .rollbackFailed(let message, let exitCode, let logTail):
            decision = rollbackFailed(Failure(.rollbackFailed, message, exitCode: exitCode, logTail: logTail), at: now)
        }
        if case .accepted = decision { lastSeq = report.seq }
        return decision
    }

    /// The sweeper found the execution overdue (or thought so: a deadline that moved is `stale`).
    public mutating func deadlinePassed(at now: Instant) -> Decision {
        guard let deadline, now >= deadline else { return .stale }
        let waited = "within \(deadlineSeconds)s"
        switch state {
        case .downloading:
            return fail(Failure(.deadline, "step \(step) (download) did not finish \(waited)", step: step), at: now)
        case .installing, .verifying:
            return fail(Failure(.deadline, "step \(step) (\(steps[step].kind.rawValue)) did not finish \(waited)", step: step), at: now)
        case .rebooting:
            return fail(Failure(.deadline, "the device did not come back from the reboot \(waited)", step: step), at: now)
        case .rollingBack:
            rollbackFailure = Failure(.deadline, "the device did not confirm its rollback \(waited)")
            return move(to: .rollbackFailed, deadline: nil, cause: "rollback deadline passed")
        case .queued, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled:
            return .stale
        }
    }

    /// An operator canceled the deployment: queued ones end, started ones stop or roll back.
    public mutating func operatorCanceled(at now: Instant) -> Decision {
        switch state {
        case .queued:
            failure = .canceledBeforeStart
            return move(to: .canceled, deadline: nil, cause: Failure.canceledBeforeStart.message)
        case .downloading, .installing, .rebooting, .verifying:
            let decision = fail(Failure(.canceled, "canceled by an operator during step \(step)", step: step), at: now,
                                ifNothingChanged: .canceled)
            guard case .accepted(let actions) = decision else { return decision }
            return .accepted(actions + [.wakeAgent])
        case .rollingBack, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled:
            return .stale
        }
    }

    /// A newer deployment for the same app replaced this one before it started.
    public mutating func superseded(by deployment: String, at now: Instant) -> Decision {
        switch state {
        case .queued:
            failure = .superseded(by: deployment)
            return move(to: .canceled, deadline: nil, cause: Failure.superseded(by: deployment).message)
        case .downloading, .installing, .rebooting, .verifying, .rollingBack:
            return .rejected("only queued executions are superseded; in-flight ones finish first")
        case .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled:
            return .stale
        }
    }
}
