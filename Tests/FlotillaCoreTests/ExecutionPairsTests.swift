import FlotillaCore
import XCTest

/// Every (state, event) pair of the per-device machine, against a table written by hand.
final class ExecutionPairsTests: XCTestCase {
    static let t0 = Instant.seconds(1_800_000_000)
    static let steps = [StepPlan(.download, timeout: 60), StepPlan(.run, timeout: 60),
                        StepPlan(.reboot, timeout: 120), StepPlan(.verify, timeout: 30)]

    /// An execution sitting in `state`, at the step that state belongs to, after 5 reports.
    static func execution(in state: ExecutionState) -> Execution {
        let step: Int = switch state {
        case .queued, .downloading: 0
        case .installing, .rollingBack: 1
        case .rebooting: 2
        case .verifying, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled: 3
        }
        let deadline: Instant? = state.isInFlight ? t0.adding(seconds: 60) : nil
        return Execution(steps: steps, targetVersion: "1.4", knownGood: "1.3", rollbackTimeout: 300,
                         state: state, step: step, attempt: state == .queued ? 0 : 1, lastSeq: 5, deadline: deadline,
                         failure: state == .rollingBack || (state.isTerminal && state != .succeeded)
                             ? Failure(.stepFailed, "exit 1", step: step, exitCode: 1) : nil,
                         rollbackFailure: state == .rollbackFailed ? Failure(.rollbackFailed, "restore failed") : nil)
    }

    /// The events, each relative to the execution's current step.
    static let events: [(String, @Sendable (inout Execution) -> Decision)] = [
        ("start", { e in e.agentReported(.init(seq: 6, .stepStarted(step: e.step)), at: t0) }),
        ("startNext", { e in e.agentReported(.init(seq: 6, .stepStarted(step: e.step + 1)), at: t0) }),
        ("progress", { e in e.agentReported(.init(seq: 6, .stepProgress(step: e.step)), at: t0) }),
        ("succeed", { e in e.agentReported(.init(seq: 6, .stepSucceeded(step: e.step)), at: t0) }),
        ("succeedNext", { e in e.agentReported(.init(seq: 6, .stepSucceeded(step: e.step + 1)), at: t0) }),
        ("fail", { e in e.agentReported(.init(seq: 6, .stepFailed(step: e.step, message: "exit 3", exitCode: 3, logTail: "boom")), at: t0) }),
        ("failPrevious", { e in e.agentReported(.init(seq: 6, .stepFailed(step: e.step - 1, message: "late", exitCode: 1, logTail: nil)), at: t0) }),
        ("bootedTarget", { e in e.agentReported(.init(seq: 6, .booted(version: "1.4")), at: t0) }),
        ("bootedKnownGood", { e in e.agentReported(.init(seq: 6, .booted(version: "1.3")), at: t0) }),
        ("bootedOther", { e in e.agentReported(.init(seq: 6, .booted(version: "0.9")), at: t0) }),
        ("rollbackOK", { e in e.agentReported(.init(seq: 6, .rollbackSucceeded), at: t0) }),
        ("rollbackFail", { e in e.agentReported(.init(seq: 6, .rollbackFailed(message: "restore failed", exitCode: 2, logTail: nil)), at: t0) }),
        ("deadlineEarly", { e in e.deadlinePassed(at: t0.adding(seconds: 59)) }),
        ("deadlineLate", { e in e.deadlinePassed(at: t0.adding(seconds: 60)) }),
        ("cancel", { e in e.operatorCanceled(at: t0) }),
        ("supersede", { e in e.superseded(by: "d2", at: t0) }),
        ("duplicate", { e in e.agentReported(.init(seq: 5, .stepProgress(step: e.step)), at: t0) }),
        ("old", { e in e.agentReported(.init(seq: 4, .stepProgress(step: e.step)), at: t0) }),
    ]

    // "=": accepted, same state; a state name: accepted and moved there; the rest as named.
    static let expected: [ExecutionState: [String]] = [
        //               start          startNext   progress    succeed       succeedNext fail             failPrevious bootedTarget    bootedKnownGood bootedOther     rollbackOK     rollbackFail      deadlineEarly deadlineLate      cancel          supersede  duplicate old
        .queued:        ["downloading", "rejected", "rejected", "rejected",   "rejected", "failed",        "rejected",  "stale",        "stale",        "stale",        "rejected",    "rejected",       "stale",      "stale",          "canceled",     "canceled", "dup", "stale"],
        .downloading:   ["=",           "rejected", "=",        "installing", "rejected", "failed",        "stale",     "=",            "=",            "=",            "rejected",    "rejected",       "stale",      "failed",         "canceled",     "rejected", "dup", "stale"],
        .installing:    ["=",           "rejected", "=",        "rebooting",  "rejected", "rolling_back",  "stale",     "rolling_back", "rolled_back",  "rolling_back", "rejected",    "rejected",       "stale",      "rolling_back",   "rolling_back", "rejected", "dup", "stale"],
        .rebooting:     ["=",           "rejected", "=",        "rejected",   "rejected", "rolling_back",  "stale",     "verifying",    "rolled_back",  "rolling_back", "rejected",    "rejected",       "stale",      "rolling_back",   "rolling_back", "rejected", "dup", "stale"],
        .verifying:     ["=",           "rejected", "=",        "succeeded",  "rejected", "rolling_back",  "stale",     "rolling_back", "rolled_back",  "rolling_back", "rejected",    "rejected",       "stale",      "rolling_back",   "rolling_back", "rejected", "dup", "stale"],
        .rollingBack:   ["stale",       "stale",    "stale",    "stale",      "stale",    "stale",         "stale",     "=",            "rolled_back",  "=",            "rolled_back", "rollback_failed", "stale",     "rollback_failed", "stale",       "rejected", "dup", "stale"],
        .succeeded:     ["stale",       "stale",    "stale",    "stale",      "stale",    "stale",         "stale",     "stale",        "stale",        "stale",        "stale",       "stale",          "stale",      "stale",          "stale",        "stale",    "dup", "stale"],
        .failed:        ["stale",       "stale",    "stale",    "stale",      "stale",    "stale",         "stale",     "stale",        "stale",        "stale",        "stale",       "stale",          "stale",      "stale",          "stale",        "stale",    "dup", "stale"],
        .rolledBack:    ["stale",       "stale",    "stale",    "stale",      "stale",    "stale",         "stale",     "stale",        "stale",        "stale",        "stale",       "stale",          "stale",      "stale",          "stale",        "stale",    "dup", "stale"],
        .rollbackFailed: ["stale",      "stale",    "stale",    "stale",      "stale",    "stale",         "stale",     "stale",        "stale",        "stale",        "stale",       "stale",          "stale",      "stale",          "stale",        "stale",    "dup", "stale"],
        .canceled:      ["stale",       "stale",    "stale",    "stale",      "stale",    "stale",         "stale",     "stale",        "stale",        "stale",        "stale",       "stale",          "stale",      "stale",          "stale",        "stale",    "dup", "stale"],
    ]

    func testEveryStateEventPair() {
        XCTAssertEqual(Set(Self.expected.keys), Set(ExecutionState.allCases), "the table covers every state")
        for state in ExecutionState.allCases {
            let row = Self.expected[state]!
            XCTAssertEqual(row.count, Self.events.count, "row \(state)")
            for (column, (name, event)) in Self.events.enumerated() {
                let before = Self.execution(in: state)
                var machine = before
                let decision = event(&machine)
                let got: String
                switch decision {
                case .accepted(let actions):
                    got = machine.state == state ? "=" : machine.state.rawValue
                    // A state change is always logged, and only then.
                    let logged = actions.contains { if case .logTransition(state, machine.state, _) = $0 { true } else { false } }
                    XCTAssertEqual(logged, machine.state != state, "\(state) + \(name): log entry")
                    XCTAssertEqual(machine.lastSeq, name.hasPrefix("deadline") || name == "cancel" || name == "supersede" ? 5 : 6,
                                   "\(state) + \(name): seq")
                case .duplicate: got = "dup"
                case .stale: got = "stale"
                case .rejected(let reason):
                    got = "rejected"
                    XCTAssertFalse(reason.isEmpty)
                }
                XCTAssertEqual(got, row[column], "\(state) + \(name)")
                if got == "dup" || got == "stale" || got == "rejected" {
                    XCTAssertEqual(machine, before, "\(state) + \(name) must change nothing")
                }
                // Invariants of every outcome.
                XCTAssertEqual(machine.deadline != nil, machine.state.isInFlight, "\(state) + \(name): deadline iff in flight")
                if machine.state.isTerminal && machine.state != .succeeded {
                    XCTAssertNotNil(machine.failure ?? machine.rollbackFailure, "\(state) + \(name): a terminal state says why")
                }
            }
        }
    }
}
