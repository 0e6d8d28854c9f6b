// A deployment's own state, beside its devices' executions: stored (`deployments.state`,
// `deployments.version`, migrations/0011) and changed only by conditional writes, with
// each accepted transition in `deployment_events`, like an execution.
//
//                  operatorCanceled
//     active ─────────────────────────▶ canceled
//
// Whether an active deployment is finished (every device ended) is read from its
// executions, not stored: `completed` is derived where it is shown. The rollout policy
// will grow this machine (releasing waves, baking, pausing, halting) from here.

public enum DeploymentState: String, Sendable, CaseIterable {
    case active, canceled
}

public enum DeploymentAction: Sendable, Equatable {
    case logTransition(from: DeploymentState, to: DeploymentState, cause: String)
}

public enum DeploymentDecision: Sendable, Equatable {
    case accepted([DeploymentAction])
    /// Nothing to do: the event already holds (a retried cancel).
    case stale
}

public struct DeploymentLifecycle: Sendable, Equatable {
    public private(set) var state: DeploymentState

    public init(_ state: DeploymentState) { self.state = state }

    /// An operator (or a pipeline) canceled the deployment: nothing more is handed out;
    /// its devices' executions are canceled or stopped by their own machine.
    public mutating func operatorCanceled() -> DeploymentDecision {
        switch state {
        case .active:
            state = .canceled
            return .accepted([.logTransition(from: .active, to: .canceled, cause: "canceled by an operator")])
        case .canceled:
            return .stale
        }
    }
}
