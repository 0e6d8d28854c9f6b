import FlotillaCore
import XCTest

/// Whole runs through the machine: the happy path and a failure at each step.
final class ExecutionScenarioTests: XCTestCase {
    let t0 = Instant.seconds(1_800_000_000)

    func fresh(knownGood: String? = "1.3") -> Execution {
        Execution(steps: ExecutionPairsTests.steps, targetVersion: "1.4", knownGood: knownGood, rollbackTimeout: 300)
    }

    /// Feeds reports with increasing seq; returns the last decision.
    @discardableResult
    func feed(_ execution: inout Execution, _ events: [AgentEvent], at time: Instant? = nil) -> Decision {
        var last = Decision.stale
        for event in events {
            last = execution.agentReported(AgentReport(seq: execution.lastSeq + 1, event), at: time ?? t0)
            guard case .accepted = last else { return last }
        }
        return last
    }

    func testHappyPath() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0), .stepProgress(step: 0), .stepSucceeded(step: 0)])
        XCTAssertEqual(e.state, .installing)
        XCTAssertEqual(e.deadline, t0.adding(seconds: 60))
        feed(&e, [.stepStarted(step: 1), .stepSucceeded(step: 1), .stepStarted(step: 2)])
        XCTAssertEqual(e.state, .rebooting)
        XCTAssertEqual(e.deadline, t0.adding(seconds: 120))
        XCTAssertEqual(feed(&e, [.booted(version: "1.4")]), .accepted([
            .recordInstalled(version: "1.4"), .logTransition(from: .rebooting, to: .verifying, cause: "step 3 (verify) is next"),
        ]))
        let done = feed(&e, [.stepStarted(step: 3), .stepSucceeded(step: 3)])
        XCTAssertEqual(done, .accepted([.logTransition(from: .verifying, to: .succeeded, cause: "all 4 steps succeeded"),
                                        .recordKnownGood(version: "1.4")]))
        XCTAssertEqual(e.state, .succeeded)
        XCTAssertNil(e.deadline)
        XCTAssertNil(e.failure)
        XCTAssertEqual(e.state.directive, .stop)
    }

    func testDownloadFailureChangesNothingSoNoRollback() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0), .stepFailed(step: 0, message: "sha256 mismatch", exitCode: nil, logTail: "got ab12…")])
        XCTAssertEqual(e.state, .failed)
        XCTAssertEqual(e.failure, Failure(.stepFailed, "sha256 mismatch", step: 0, exitCode: nil, logTail: "got ab12…"))
    }

    func testInstallFailureRollsBack() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0), .stepSucceeded(step: 0), .stepStarted(step: 1),
                  .stepFailed(step: 1, message: "install.sh exited 2", exitCode: 2, logTail: "unzip: bad zip")])
        XCTAssertEqual(e.state, .rollingBack)
        XCTAssertEqual(e.state.directive, .rollBack)
        XCTAssertEqual(e.deadline, t0.adding(seconds: 300))
        XCTAssertEqual(e.failure?.exitCode, 2)
        XCTAssertEqual(feed(&e, [.rollbackSucceeded]), .accepted([
            .logTransition(from: .rollingBack, to: .rolledBack, cause: "rollback confirmed by the agent"),
            .recordInstalled(version: "1.3"),
        ]))
        XCTAssertEqual(e.failure?.message, "install.sh exited 2", "the original reason is kept")
    }

    func testRebootDeadlineRollsBackAndRollbackDeadlineNeedsAnOperator() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0), .stepSucceeded(step: 0), .stepStarted(step: 1), .stepSucceeded(step: 1),
                  .stepStarted(step: 2)])
        XCTAssertEqual(e.deadlinePassed(at: t0.adding(seconds: 119)), .stale)
        guard case .accepted = e.deadlinePassed(at: t0.adding(seconds: 120)) else { return XCTFail() }
        XCTAssertEqual(e.state, .rollingBack)
        XCTAssertEqual(e.failure?.cause, .deadline)
        guard case .accepted = e.deadlinePassed(at: t0.adding(seconds: 420)) else { return XCTFail() }
        XCTAssertEqual(e.state, .rollbackFailed)
        XCTAssertEqual(e.rollbackFailure?.cause, .deadline)
    }

    func testHealthCheckFailureAndSoakBrokenByReboot() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0), .stepSucceeded(step: 0), .stepStarted(step: 1), .stepSucceeded(step: 1),
                  .stepStarted(step: 2), .booted(version: "1.4"), .stepStarted(step: 3)])
        var broken = e
        feed(&e, [.stepFailed(step: 3, message: "health check: connection refused", exitCode: 7, logTail: nil)])
        XCTAssertEqual(e.state, .rollingBack)
        feed(&broken, [.booted(version: "1.4")])
        XCTAssertEqual(broken.state, .rollingBack)
        XCTAssertEqual(broken.failure?.cause, .unexpectedReboot)
    }

    func testDeviceThatFellBackOnItsOwnIsReconciled() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0), .stepSucceeded(step: 0), .stepStarted(step: 1), .stepSucceeded(step: 1),
                  .stepStarted(step: 2), .booted(version: "1.3")])
        XCTAssertEqual(e.state, .rolledBack)
        XCTAssertEqual(e.failure?.cause, .fellBack)
        XCTAssertEqual(e.state.directive, .stop)
    }

    func testCancelInFlightRollsBackAndWakesTheAgent() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0), .stepSucceeded(step: 0), .stepStarted(step: 1)])
        XCTAssertEqual(e.operatorCanceled(at: t0), .accepted([
            .logTransition(from: .installing, to: .rollingBack, cause: "canceled by an operator during step 1"), .wakeAgent,
        ]))
        // The agent's late report of success changes nothing; the answer says roll back.
        XCTAssertEqual(feed(&e, [.stepSucceeded(step: 1)]), .stale)
        XCTAssertEqual(e.state.directive, .rollBack)
    }

    func testRetriedAndRestartedSteps() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0)])
        let seq = e.lastSeq
        XCTAssertEqual(e.agentReported(AgentReport(seq: seq, .stepStarted(step: 0)), at: t0), .duplicate)
        // The agent restarted and starts the download again (resuming it): a second attempt, a fresh deadline.
        XCTAssertEqual(feed(&e, [.stepStarted(step: 0)], at: t0.adding(seconds: 50)), .accepted([]))
        XCTAssertEqual(e.attempt, 2)
        XCTAssertEqual(e.deadline, t0.adding(seconds: 110))
        XCTAssertEqual(e.agentReported(AgentReport(seq: 0, .stepStarted(step: 0)), at: t0), .rejected("seq must be 1 or more"))
    }

    /// An agent that keeps dying in one step renews its deadline only so often: the start past
    /// `maxAttempts` fails the step (rolling back, the device may have changed at step 1).
    func testAStepRestartedTooOftenFails() {
        var e = fresh()
        feed(&e, [.stepStarted(step: 0), .stepSucceeded(step: 0)])  // installing; step 1 not started yet
        for attempt in 1...Execution.maxAttempts {
            XCTAssertEqual(feed(&e, [.stepStarted(step: 1)]), .accepted([]), "attempt \(attempt)")
            XCTAssertEqual(e.attempt, attempt)
        }
        guard case .accepted = feed(&e, [.stepStarted(step: 1)]) else { return XCTFail("the last start is taken, and fails the step") }
        XCTAssertEqual(e.state, .rollingBack)
        XCTAssertEqual(e.failure?.cause, .stepFailed)
        XCTAssertTrue(e.failure?.message.contains("was started 6 times") == true, e.failure?.message ?? "")
    }

    func testFlowWithoutRunStepsNeverRollsBack() {
        var e = Execution(steps: [StepPlan(.download, timeout: 10)], targetVersion: "2", knownGood: nil, rollbackTimeout: 60)
        feed(&e, [.stepStarted(step: 0)])
        XCTAssertEqual(e.operatorCanceled(at: t0), .accepted([
            .logTransition(from: .downloading, to: .canceled, cause: "canceled by an operator during step 0"), .wakeAgent,
        ]))
    }

    func testSupersededOnlyWhileQueued() {
        var e = fresh()
        XCTAssertEqual(e.superseded(by: "d2", at: t0), .accepted([.logTransition(from: .queued, to: .canceled, cause: "superseded by deployment d2")]))
        XCTAssertEqual(e.failure?.cause, .superseded)
    }
}
