// The manifest: what GET /api/v1/agent/next hands a device (its `execution`, signed by the
// server, ManifestSigner). The server renders it from a typed value, the agent decodes it
// strictly: a manifest naming a step kind this agent does not know is refused, never run
// as something else (an old agent must not execute a future `upload` step as a script).

import FlotillaJSON

public struct Manifest: Sendable, Equatable {
    /// One step as the flow rendered it: its kind, and the whole object (url, sha256, script,
    /// env, timeout, … — what the kind needs), kept as sent.
    public struct Step: Sendable, Equatable {
        public var kind: StepKind
        public var fields: [String: JSON]

        public init(kind: StepKind, fields: [String: JSON]) {
            self.kind = kind
            self.fields = fields
        }
    }

    public var executionID: String
    public var deploymentID: String
    public var flowName: String
    public var flowVersion: Int
    public var app: String
    public var version: String
    public var knownGood: String?
    /// What the server last recorded: `queued` for a fresh execution.
    public var state: ExecutionState
    public var step: Int
    public var attempt: Int
    public var seq: Int
    /// RFC 3339, when the current step has a deadline.
    public var deadlineAt: String?
    public var steps: [Step]
    /// The flow's rollback section (snapshot paths, script, reboot).
    public var rollback: [String: JSON]
    /// The deployment's parameters: the agent puts them in scripts' environments.
    public var params: [String: JSON]

    public var directive: Directive { state.directive }
    public var rollbackReboots: Bool { rollback["reboot"] == .bool(true) }

    public init(executionID: String, deploymentID: String, flowName: String, flowVersion: Int, app: String, version: String,
                knownGood: String?, state: ExecutionState, step: Int, attempt: Int, seq: Int, deadlineAt: String?,
                steps: [Step], rollback: [String: JSON], params: [String: JSON]) {
        self.executionID = executionID
        self.deploymentID = deploymentID
        self.flowName = flowName
        self.flowVersion = flowVersion
        self.app = app
        self.version = version
        self.knownGood = knownGood
        self.state = state
        self.step = step
        self.attempt = attempt
        self.seq = seq
        self.deadlineAt = deadlineAt
        self.steps = steps
        self.rollback = rollback
        self.params = params
    }

    /// The `execution` object (what the server signs).
    public var json: JSON {
        .fields([
            ("id", .string(executionID)), ("deployment_id", .string(deploymentID)),
            ("flow", .fields([("name", .string(flowName)), ("version", .int(flowVersion))])),
            ("app", .string(app)), ("version", .string(version)), ("known_good", knownGood.map(JSON.string) ?? .null),
            ("state", .string(state.rawValue)), ("step", .int(step)), ("attempt", .int(attempt)), ("seq", .int(seq)),
            ("directive", .string(directive.rawValue)), ("deadline_at", deadlineAt.map(JSON.string) ?? .null),
            ("steps", .array(steps.map { .object($0.fields) })), ("rollback", .object(rollback)), ("params", .object(params)),
        ])
    }

    public enum Refusal: Error, Equatable, CustomStringConvertible {
        /// A field is missing or has the wrong type.
        case malformed(String)
        /// Step `index` has a kind this agent does not know: the server is newer than the agent.
        case unknownStepKind(index: Int, kind: String)

        public var description: String {
            switch self {
            case .malformed(let what): "malformed manifest: \(what)"
            case .unknownStepKind(let index, let kind):
                "step \(index) is of kind '\(kind)', which this agent does not know (known: "
                    + StepKind.allCases.map(\.rawValue).joined(separator: ", ") + "); upgrade the agent"
            }
        }
    }

    /// Decodes an `execution` object; unknown members are ignored (a newer server may add some),
    /// unknown step kinds and states are refused.
    public init(json: JSON) throws(Refusal) {
        guard let fields = json.objectValue else { throw .malformed("not an object") }
        func string(_ key: String) throws(Refusal) -> String {
            guard let value = fields[key]?.stringValue else { throw .malformed("'\(key)' must be a string") }
            return value
        }
        func int(_ key: String) throws(Refusal) -> Int {
            guard let value = fields[key]?.intValue else { throw .malformed("'\(key)' must be an integer") }
            return value
        }
        func optionalString(_ key: String) throws(Refusal) -> String? {
            switch fields[key] {
            case nil, .null?: return nil
            case .string(let text)?: return text
            case .some: throw .malformed("'\(key)' must be a string or null")
            }
        }
        guard let stepList = fields["steps"]?.arrayValue, !stepList.isEmpty else { throw .malformed("'steps' must be a non-empty array") }
        var steps: [Step] = []
        for (index, item) in stepList.enumerated() {
            guard let object = item.objectValue, let kindName = object["kind"]?.stringValue else {
                throw .malformed("step \(index) must be an object with a 'kind'")
            }
            guard let kind = StepKind(rawValue: kindName) else { throw .unknownStepKind(index: index, kind: kindName) }
            steps.append(Step(kind: kind, fields: object))
        }
        // What the agent acts on is required; what it only reports or shows may be absent.
        let stateName = try optionalString("state") ?? ExecutionState.queued.rawValue
        guard let state = ExecutionState(rawValue: stateName) else { throw .malformed("unknown state '\(stateName)'") }
        let flow = fields["flow"]?.objectValue ?? [:]
        self.init(executionID: try string("id"), deploymentID: try optionalString("deployment_id") ?? "",
                  flowName: flow["name"]?.stringValue ?? "", flowVersion: flow["version"]?.intValue ?? 0,
                  app: try string("app"), version: try string("version"), knownGood: try optionalString("known_good"),
                  state: state, step: fields["step"] == nil ? 0 : try int("step"), attempt: fields["attempt"]?.intValue ?? 0,
                  seq: fields["seq"] == nil ? 0 : try int("seq"),
                  deadlineAt: try optionalString("deadline_at"), steps: steps,
                  rollback: fields["rollback"]?.objectValue ?? [:], params: fields["params"]?.objectValue ?? [:])
    }
}
