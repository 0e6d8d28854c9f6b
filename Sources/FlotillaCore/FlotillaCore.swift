// FlotillaCore: the pure core of Flotilla.
//
// The per-device update state machine, the agent's own state machine, device admission,
// token scopes and the rate limiter's token bucket live here (the rollout policy will
// join them). The rule for this module: no I/O, no clock, no Foundation, no Dispatch,
// no Glibc — time is an argument, effects are returned as plain Equatable actions.
// `scripts/test` (which `.ci/run` runs) fails if this rule is broken.

// The machines speak the wire's vocabulary (ExecutionState, StepKind, Directive, ReportEvent):
// whoever imports the core sees it too.
@_exported import FlotillaWire

/// The product's version, shared by the server (`GET /version`), the agent and the CLI.
public enum FlotillaVersion {
    public static let current = "0.1.0"
    /// The API generation the server speaks (`/api/v1`).
    public static let apiVersion = "v1"
}
