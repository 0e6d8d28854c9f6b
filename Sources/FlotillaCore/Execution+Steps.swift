// The agent's reports, one function per kind, and the few moves they share.
// See the diagram at the top of Execution.swift.

extension Execution {
    mutating func stepStarted(_ index: Int, at now: Instant) -> Decision {
        switch state {
        case .queued:
            guard index == 0, let first = plan(0) else { return .rejected("step \(index) cannot start before step 0") }
            attempt = 1
            return move(to: .working(on: first.kind), deadline: now.adding(seconds: first.timeout),
                        cause: "step 0 (\(first.kind.rawValue)) started")
        case .downloading, .installing, .rebooting, .verifying:
            if index < step { return .stale }
            guard index == step, let current = plan(step) else {
                return .rejected("step \(index) cannot start: step \(step) has not succeeded")
            }
            // The step (re)starts: after the previous step succeeded, or after an agent restart,
            // which renews its deadline. Bounded: an agent that keeps dying in one step fails it
            // (and rolls back where the device may have changed) instead of renewing forever.
            attempt += 1
            if attempt > Execution.maxAttempts {
                return fail(Failure(.stepFailed, "step \(step) (\(current.kind.rawValue)) was started \(attempt) times; the agent keeps stopping in it",
                                    step: step), at: now)
            }
            deadline = now.adding(seconds: current.timeout)
            return .accepted([])
        case .rollingBack, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled:
            return .stale
        }
    }

    mutating func stepProgress(_ index: Int) -> Decision {
        switch state {
        case .queued:
            return .rejected("step \(index) has not started")
        case .downloading, .installing, .rebooting, .verifying:
            if index < step { return .stale }
            return index == step ? .accepted([]) : .rejected("step \(index) has not started; the current step is \(step)")
        case .rollingBack, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled:
            return .stale
        }
    }

    mutating func stepSucceeded(_ index: Int, at now: Instant) -> Decision {
        switch state {
        case .queued:
            return .rejected("step \(index) has not started")
        case .downloading, .installing, .rebooting, .verifying:
            if index < step { return .stale }
            guard index == step else { return .rejected("step \(index) has not started; the current step is \(step)") }
            if state == .rebooting {
                return .rejected("a reboot step completes when the device reports that it booted (event 'booted')")
            }
            return advance(at: now)
        case .rollingBack, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled:
            return .stale
        }
    }

    mutating func stepFailed(_ index: Int, _ failure: Failure, at now: Instant) -> Decision {
        switch state {
        case .queued:
            // Step 0 could not even start (no disk space, say): nothing changed.
            guard index == 0 else { return .rejected("step \(index) has not started") }
            return fail(failure, at: now)
        case .downloading, .installing, .rebooting, .verifying:
            if index < step { return .stale }
            guard index == step else { return .rejected("step \(index) has not started; the current step is \(step)") }
            return fail(failure, at: now)
        case .rollingBack, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled:
            return .stale
        }
    }

    /// The device is up and runs `version` of the app. Where a reboot was expected this
    /// completes it; elsewhere it tells us the device restarted or fell back on its own.
    public mutating func deviceBooted(version: String?, at now: Instant) -> Decision {
        let seen = Action.recordInstalled(version: version)
        let onKnownGood = version != nil && version == knownGood
        let shown = version ?? "none"
        let decision: Decision
        switch state {
        case .queued, .succeeded, .failed, .rolledBack, .rollbackFailed, .canceled:
            return .stale
        case .downloading:
            // Nothing was changed yet: the agent resumes the download.
            decision = .accepted([])
        case .rebooting where version == targetVersion:
            decision = advance(at: now)
        case .rebooting, .verifying, .installing:
            if onKnownGood {
                failure = Failure(.fellBack, "the device came back on its known-good version \(shown) instead of \(targetVersion)", step: step)
                decision = move(to: .rolledBack, deadline: nil, cause: "device fell back to \(shown) by itself")
            } else if version != targetVersion {
                decision = fail(Failure(.unexpectedVersion, "the device came back with version \(shown), expected \(targetVersion)", step: step), at: now)
            } else {
                decision = fail(Failure(.unexpectedReboot, "the device rebooted during step \(step) (\(steps[step].kind.rawValue))", step: step), at: now)
            }
        case .rollingBack:
            decision = onKnownGood
                ? move(to: .rolledBack, deadline: nil, cause: "device back on known-good \(shown)")
                : .accepted([])
        }
        guard case .accepted(let actions) = decision else { return decision }
        return .accepted([seen] + actions)
    }

    mutating func rollbackSucceeded(at now: Instant) -> Decision {
        switch state {
        case .rollingBack:
            let confirmed = knownGood.map { [Action.recordInstalled(version: $0)] } ?? []
            guard case .accepted(let actions) = move(to: .rolledBack, deadline: nil, cause: "rollback confirmed by the agent") else {
                return .rejected("unreachable")
            }
            return .accepted(actions + confirmed)
        case .rolledBack, .rollbackFailed, .succeeded, .failed, .canceled:
            return .stale
        case .queued, .downloading, .installing, .rebooting, .verifying:
            return .rejected("nothing to roll back: the execution is \(state.rawValue)")
        }
    }

    mutating func rollbackFailed(_ failure: Failure, at now: Instant) -> Decision {
        switch state {
        case .rollingBack:
            rollbackFailure = failure
            return move(to: .rollbackFailed, deadline: nil, cause: "rollback failed: \(failure.message)")
        case .rolledBack, .rollbackFailed, .succeeded, .failed, .canceled:
            return .stale
        case .queued, .downloading, .installing, .rebooting, .verifying:
            return .rejected("nothing to roll back: the execution is \(state.rawValue)")
        }
    }

    // MARK: Shared moves

    func plan(_ index: Int) -> StepPlan? { steps.indices.contains(index) ? steps[index] : nil }

    /// Seconds the current deadline allowed (for messages).
    var deadlineSeconds: Int { state == .rollingBack ? rollbackTimeout : plan(step)?.timeout ?? 0 }

    /// The current step succeeded: on to the next one, or done.
    mutating func advance(at now: Instant) -> Decision {
        guard let next = plan(step + 1) else {
            let done = move(to: .succeeded, deadline: nil, cause: "all \(steps.count) steps succeeded")
            guard case .accepted(let actions) = done else { return done }
            return .accepted(actions + [.recordKnownGood(version: targetVersion)])
        }
        step += 1
        attempt = 0
        return move(to: .working(on: next.kind), deadline: now.adding(seconds: next.timeout),
                    cause: "step \(step) (\(next.kind.rawValue)) is next")
    }

    /// A failure in the current step: roll back if the device may have changed, else end
    /// in `ifNothingChanged` (`failed`, or `canceled` for an operator's cancel).
    mutating func fail(_ failure: Failure, at now: Instant, ifNothingChanged: ExecutionState = .failed) -> Decision {
        self.failure = failure
        let touched = steps.prefix(step + 1).contains { $0.kind != .download }
        if touched {
            return move(to: .rollingBack, deadline: now.adding(seconds: rollbackTimeout), cause: failure.message)
        }
        return move(to: ifNothingChanged, deadline: nil, cause: failure.message)
    }

    /// Changes state (logging it when it differs) and sets the deadline.
    mutating func move(to next: ExecutionState, deadline: Instant?, cause: String) -> Decision {
        let previous = state
        state = next
        self.deadline = deadline
        return .accepted(previous == next ? [] : [.logTransition(from: previous, to: next, cause: cause)])
    }
}
