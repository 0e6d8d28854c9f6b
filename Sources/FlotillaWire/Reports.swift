// A report (POST /api/v1/agent/executions/{id}/reports) and the server's answer to it.
// The agent and the simulator encode reports and decode answers with these; the server
// decodes reports (with its own per-field problems, DeviceAPI) and encodes answers.

import FlotillaJSON

/// The `event` of a report.
public enum ReportEvent: String, Sendable, CaseIterable {
    case stepStarted = "step_started", stepProgress = "step_progress", stepSucceeded = "step_succeeded"
    case stepFailed = "step_failed", booted, rollbackSucceeded = "rollback_succeeded", rollbackFailed = "rollback_failed"

    /// The events about one step carry its index.
    public var needsStep: Bool {
        switch self {
        case .stepStarted, .stepProgress, .stepSucceeded, .stepFailed: true
        case .booted, .rollbackSucceeded, .rollbackFailed: false
        }
    }
}

/// A report's body.
public struct ReportBody: Sendable, Equatable {
    public var seq: Int
    public var event: ReportEvent
    public var step: Int?
    public var message: String?
    public var exitCode: Int?
    public var logTail: String?
    public var version: String?

    public init(seq: Int, event: ReportEvent, step: Int? = nil, message: String? = nil, exitCode: Int? = nil,
                logTail: String? = nil, version: String? = nil) {
        self.seq = seq
        self.event = event
        self.step = step
        self.message = message
        self.exitCode = exitCode
        self.logTail = logTail
        self.version = version
    }

    public var json: JSON {
        var fields: [(String, JSON)] = [("seq", .int(seq)), ("event", .string(event.rawValue))]
        if let step { fields.append(("step", .int(step))) }
        if let message { fields.append(("message", .string(message))) }
        if let exitCode { fields.append(("exit_code", .int(exitCode))) }
        if let logTail { fields.append(("log_tail", .string(logTail))) }
        if let version { fields.append(("version", .string(version))) }
        return .fields(fields)
    }
}

/// What the server made of a report (200), or, inside a 409's `error.details`, where the
/// execution stands now.
public struct ReportAnswer: Sendable, Equatable {
    public enum Result: String, Sendable {
        case accepted, duplicate, stale
    }

    public var executionID: String
    public var state: ExecutionState
    public var step: Int
    public var directive: Directive
    /// RFC 3339, when the current step has a deadline.
    public var deadlineAt: String?
    /// nil in a 409's details: the report was refused.
    public var result: Result?

    public init(executionID: String, state: ExecutionState, step: Int, deadlineAt: String?, result: Result?) {
        self.executionID = executionID
        self.state = state
        self.step = step
        directive = state.directive
        self.deadlineAt = deadlineAt
        self.result = result
    }

    public var json: JSON {
        var fields: [(String, JSON)] = [
            ("execution_id", .string(executionID)), ("state", .string(state.rawValue)), ("step", .int(step)),
            ("directive", .string(directive.rawValue)), ("deadline_at", deadlineAt.map(JSON.string) ?? .null),
        ]
        if let result { fields.append(("result", .string(result.rawValue))) }
        return .fields(fields)
    }

    /// The answer in a response body: a 200's body, or a 409's `error.details`. nil when the
    /// body is neither (a 404, a 422, an error from a proxy).
    public init?(body: [UInt8]) {
        guard let json = try? JSON.parse(body), var fields = json.objectValue else { return nil }
        if let details = fields["error"]?.objectValue?["details"]?.objectValue { fields = details }
        guard let id = fields["execution_id"]?.stringValue, let state = fields["state"]?.stringValue.flatMap(ExecutionState.init(rawValue:)),
              let step = fields["step"]?.intValue else { return nil }
        self.init(executionID: id, state: state, step: step, deadlineAt: fields["deadline_at"]?.stringValue,
                  result: fields["result"]?.stringValue.flatMap(Result.init(rawValue:)))
        // The directive is derived from the state on both ends; a server that sends another
        // one is newer than this client, and its word wins.
        if let given = fields["directive"]?.stringValue.flatMap(Directive.init(rawValue:)) { directive = given }
    }
}
