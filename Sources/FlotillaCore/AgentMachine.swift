// The device agent's decision logic for one execution: pure, events in, actions out.
// One runner (Sources/FlotillaAgent/AgentRunner.swift, for the real agent and the
// simulator alike) performs the actions in one place and feeds their outcomes back; it
// writes the machine to its journal before it performs anything, so a crash at any point
// restarts from a known phase.
//
//                      manifestReceived
//     idle ─────────────────────────────────▶ step 0
//
//     step i, by kind:                  succeeded              failed
//       download   downloading(i)  ──▶  step i+1          ──▶  done (failed: nothing touched)
//       run        snapshotting(i) ──▶  installing(i)     ──▶  restoring
//                  installing(i)   ──▶  step i+1          ──▶  restoring
//       reboot     rebooting(i)    ── started (next boot) ──▶  step i+1
//       verify     verifying(i)    ──▶  step i+1          ──▶  restoring
//     past the last step: drop the snapshot ──▶ done (succeeded)
//
//     restoring ──▶ rollbackScript ──▶ [rollbackRebooting ── started ──▶] rollbackVerifying
//       (the restored paths still match the snapshot) ──▶ done (rolled back);
//     any failure while rolling back ──▶ done (rollback failed: an operator is needed)
//
//     started (the agent process began with this journal):
//       downloading → download again (it resumes)     snapshotting → snapshot again
//       installing  → roll back (a script half ran)    rebooting    → booted, next step
//       verifying   → verify again                     rolling back → that stage again
//       (a step run again is announced with step_started: the server renews its deadline)
//     directiveReceived: roll_back → roll back now (if anything changed); stop → end here,
//       restoring first if anything changed (the device is never left half-updated).
//     unsupportedManifestReceived (a step kind this agent does not know): nothing runs; the
//       server is told the step failed, so the execution ends with the reason instead of
//       being handed out again and again.
//
// Every report carries the next sequence number, which the journal keeps: reports sent
// again after a crash are duplicates the server recognises.

import FlotillaJSON

/// What the agent knows of the execution it works on (from the manifest).
public struct AgentJob: Sendable, Equatable {
    public var executionID: String
    public var app: String
    public var version: String
    public var steps: [StepKind]
    /// The flow's rollback asks for a reboot after restoring.
    public var rollbackReboots: Bool

    public init(executionID: String, app: String, version: String, steps: [StepKind], rollbackReboots: Bool) {
        self.executionID = executionID
        self.app = app
        self.version = version
        self.steps = steps
        self.rollbackReboots = rollbackReboots
    }
}

public enum AgentPhase: Sendable, Equatable {
    case idle
    case downloading(step: Int), snapshotting(step: Int), installing(step: Int), rebooting(step: Int), verifying(step: Int)
    case restoring, rollbackScript, rollbackRebooting, rollbackVerifying
}

/// How an execution ended on the device.
public enum AgentOutcome: String, Sendable, Equatable {
    case succeeded, failed, rolledBack = "rolled_back", rollbackFailed = "rollback_failed", abandoned
}

/// A report for the outbox, in the device API's vocabulary (FlotillaWire's ReportBody).
public struct OutgoingReport: Sendable, Equatable {
    public var execution: String
    public var body: ReportBody

    public var seq: Int { body.seq }
    public var event: ReportEvent { body.event }
    public var step: Int? { body.step }
}

public enum AgentAction: Sendable, Equatable {
    case report(OutgoingReport)
    case download(step: Int)
    case snapshot
    case runScript(step: Int)
    case reboot
    case healthCheck(step: Int)
    case restoreSnapshot
    case runRollbackScript
    /// Check that the restored paths match the snapshot. (Not the flow's health check: that
    /// one checks the *new* version and would fail on the known-good by design.)
    case verifyRestore
    case dropSnapshot
    /// The execution is over: forget it (and record the installed version when it succeeded).
    case finished(AgentOutcome, app: String, version: String)
}

public enum AgentDecision: Sendable, Equatable {
    case accepted([AgentAction])
    case rejected(String)
}

public struct AgentMachine: Sendable, Equatable {
    public private(set) var job: AgentJob?
    public private(set) var phase: AgentPhase = .idle
    /// The last sequence number used (the server's, when the job began).
    public private(set) var seq = 0
    /// Something on the device changed (a snapshot exists to restore).
    public private(set) var snapshotTaken = false

    public init() {}

    init(job: AgentJob?, phase: AgentPhase, seq: Int, snapshotTaken: Bool) {
        self.job = job
        self.phase = phase
        self.seq = seq
        self.snapshotTaken = snapshotTaken
    }

    /// The server handed us an execution. `serverState`/`serverSeq`/`serverStep` are what it
    /// last recorded: a fresh execution is `queued`; anything else means the server thinks we
    /// are already on it, which without a journal means the device lost its memory.
    public mutating func manifestReceived(_ newJob: AgentJob, serverState: ExecutionState, serverSeq: Int, serverStep: Int) -> AgentDecision {
        if let busy = refusalWhileBusy { return busy }
        guard !newJob.steps.isEmpty else { return .rejected("the manifest has no steps") }
        seq = serverSeq
        if serverState == .queued {
            job = newJob
            snapshotTaken = false
            return .accepted(begin(step: 0))
        }
        // Not ours to continue: say so, and let the server's machine decide (a failed step
        // rolls back; a rollback we cannot do needs an operator).
        return .accepted([refusal(newJob.executionID, serverState: serverState, serverStep: serverStep,
                                  "the agent has no journal for this execution (its state directory was lost or reset)")])
    }

    /// The server handed us an execution this agent cannot run (a step kind it does not know:
    /// the server is newer). Nothing runs; the server hears why, and its machine ends the
    /// execution (`failed` from queued: nothing on the device changed).
    public mutating func unsupportedManifestReceived(executionID: String, serverState: ExecutionState, serverSeq: Int,
                                                     serverStep: Int, reason: String) -> AgentDecision {
        if let busy = refusalWhileBusy { return busy }
        seq = serverSeq
        return .accepted([refusal(executionID, serverState: serverState, serverStep: serverStep, reason)])
    }

    /// The current activity finished well.
    public mutating func activitySucceeded() -> AgentDecision {
        switch phase {
        case .idle:
            return .rejected("nothing is running")
        case .downloading(let step), .installing(let step), .verifying(let step):
            return .accepted([.report(next(.stepSucceeded, step: step))] + begin(step: step + 1))
        case .snapshotting(let step):
            snapshotTaken = true
            phase = .installing(step: step)
            return .accepted([.runScript(step: step)])
        case .rebooting, .rollbackRebooting:
            return .rejected("a reboot ends with the agent's next start")
        case .restoring:
            phase = .rollbackScript
            return .accepted([.runRollbackScript])
        case .rollbackScript:
            if job?.rollbackReboots == true {
                phase = .rollbackRebooting
                return .accepted([.reboot])
            }
            return .accepted(verifyRollback())
        case .rollbackVerifying:
            return .accepted(finish(.rolledBack, [.report(next(.rollbackSucceeded)), .dropSnapshot]))
        }
    }

    /// The current activity failed (exit code and output tail when a script ran).
    public mutating func activityFailed(_ message: String, exitCode: Int? = nil, logTail: String? = nil) -> AgentDecision {
        switch phase {
        case .idle:
            return .rejected("nothing is running")
        case .downloading(let step):
            // Downloads land in the state directory; nothing on the device was touched.
            let report = next(.stepFailed, step: step, message: message, exitCode: exitCode, logTail: logTail)
            return .accepted(finish(.failed, [.report(report)]))
        case .snapshotting(let step), .installing(let step), .rebooting(let step), .verifying(let step):
            let report = next(.stepFailed, step: step, message: message, exitCode: exitCode, logTail: logTail)
            return .accepted([.report(report)] + rollBack())
        case .restoring, .rollbackScript, .rollbackRebooting, .rollbackVerifying:
            let report = next(.rollbackFailed, message: message, exitCode: exitCode, logTail: logTail)
            // The snapshot stays: an operator restoring by hand needs it.
            return .accepted(finish(.rollbackFailed, [.report(report)]))
        }
    }

    /// The agent process started with this machine from its journal.
    public mutating func started() -> AgentDecision {
        switch phase {
        case .idle:
            return .accepted([])
        case .downloading(let step):
            // A re-run is announced: the server renews the step's deadline and counts it.
            return .accepted([.report(next(.stepStarted, step: step)), .download(step: step)])
        case .snapshotting(let step):
            return .accepted([.report(next(.stepStarted, step: step)), .snapshot])
        case .installing(let step):
            // The script may have half run; it is not ours to guess how far. Restore.
            let report = next(.stepFailed, step: step, message: "the agent stopped while the install script ran; rolling back")
            return .accepted([.report(report)] + rollBack())
        case .rebooting(let step):
            return .accepted([.report(next(.booted, version: job?.version))] + begin(step: step + 1))
        case .verifying(let step):
            return .accepted([.report(next(.stepStarted, step: step)), .healthCheck(step: step)])
        case .restoring:
            return .accepted([.restoreSnapshot])
        case .rollbackScript:
            return .accepted([.runRollbackScript])
        case .rollbackRebooting, .rollbackVerifying:
            return .accepted(verifyRollback())
        }
    }

    /// The server's answer to a report or poll named a directive for our execution.
    /// Spelled out per phase and directive, no wildcard: a directive added later must be
    /// decided for every phase, not silently roll back a device that is installing.
    public mutating func directiveReceived(_ directive: Directive) -> AgentDecision {
        switch phase {
        case .idle:
            return .accepted([])
        case .restoring, .rollbackScript, .rollbackRebooting, .rollbackVerifying:
            return .accepted([])  // already on the way back, whatever the server says now
        case .downloading:
            switch directive {
            case .proceed: return .accepted([])
            case .rollBack, .stop: return .accepted(finish(.abandoned, []))  // nothing on the device changed yet
            }
        case .snapshotting:
            switch directive {
            case .proceed: return .accepted([])
            case .stop: return .accepted(finish(.abandoned, []))  // the snapshot only copied; nothing changed
            case .rollBack: return .accepted(rollBack())
            }
        case .installing, .rebooting, .verifying:
            switch directive {
            case .proceed: return .accepted([])
            case .rollBack, .stop: return .accepted(rollBack())  // never leave the device half-updated
            }
        }
    }

    // MARK: - Helpers

    /// One execution at a time: a manifest while another is under way is refused.
    private var refusalWhileBusy: AgentDecision? {
        switch phase {
        case .idle:
            nil
        case .downloading, .snapshotting, .installing, .rebooting, .verifying, .restoring, .rollbackScript,
             .rollbackRebooting, .rollbackVerifying:
            .rejected("already working on execution \(job?.executionID ?? "?")")
        }
    }

    private mutating func begin(step: Int) -> [AgentAction] {
        guard let job, step < job.steps.count else { return finish(.succeeded, [.dropSnapshot]) }
        let started = AgentAction.report(next(.stepStarted, step: step))
        switch job.steps[step] {
        case .download:
            phase = .downloading(step: step)
            return [started, .download(step: step)]
        case .run where !snapshotTaken:
            phase = .snapshotting(step: step)
            return [started, .snapshot]
        case .run:
            phase = .installing(step: step)
            return [started, .runScript(step: step)]
        case .reboot:
            phase = .rebooting(step: step)
            return [started, .reboot]
        case .verify:
            phase = .verifying(step: step)
            return [started, .healthCheck(step: step)]
        }
    }

    private mutating func rollBack() -> [AgentAction] {
        phase = .restoring
        return [.restoreSnapshot]
    }

    private mutating func verifyRollback() -> [AgentAction] {
        phase = .rollbackVerifying
        return [.verifyRestore]
    }

    private mutating func finish(_ outcome: AgentOutcome, _ actions: [AgentAction]) -> [AgentAction] {
        let ended = AgentAction.finished(outcome, app: job?.app ?? "", version: job?.version ?? "")
        phase = .idle
        job = nil
        snapshotTaken = false
        return actions + [ended]
    }

    private mutating func next(_ event: ReportEvent, step: Int? = nil, message: String? = nil, exitCode: Int? = nil,
                               logTail: String? = nil, version: String? = nil) -> OutgoingReport {
        seq += 1
        return OutgoingReport(execution: job?.executionID ?? "", body: ReportBody(
            seq: seq, event: event, step: step, message: message, exitCode: exitCode, logTail: logTail, version: version))
    }

    /// The report that hands an execution we will not run back to the server's machine.
    private mutating func refusal(_ execution: String, serverState: ExecutionState, serverStep: Int, _ message: String) -> AgentAction {
        var report = serverState == .rollingBack ? next(.rollbackFailed, message: message)
                                                 : next(.stepFailed, step: serverStep, message: message)
        report.execution = execution
        return .report(report)
    }
}
