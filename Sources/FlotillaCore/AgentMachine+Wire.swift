// The agent machine's inputs and outputs in the device API's JSON: a manifest's execution
// → AgentJob, an OutgoingReport → a report body. Shared by the agent (AgentDaemon) and the
// simulator's virtual devices, so both speak exactly the same reports; and the bytes a
// manifest key signs to vouch for its successor, shared by the server and the agent.

import FlotillaJSON

extension AgentJob {
    /// The job a manifest's `execution` describes; nil without id, app, version or steps.
    public init?(manifest fields: [String: JSON]) {
        guard let id = fields["id"]?.stringValue, let app = fields["app"]?.stringValue,
              let version = fields["version"]?.stringValue, let steps = fields["steps"]?.arrayValue else { return nil }
        self.init(executionID: id, app: app, version: version,
                  steps: steps.map { StepKind(rawValue: $0.objectValue?["kind"]?.stringValue ?? "") ?? .run },
                  rollbackReboots: fields["rollback"]?.objectValue?["reboot"] == .bool(true))
    }
}

extension OutgoingReport {
    /// The body of POST /api/v1/agent/executions/{id}/reports.
    public var body: JSON {
        var fields: [(String, JSON)] = [("seq", .int(seq)), ("event", .string(event))]
        if let step { fields.append(("step", .int(step))) }
        if let message { fields.append(("message", .string(message))) }
        if let exitCode { fields.append(("exit_code", .int(exitCode))) }
        if let logTail { fields.append(("log_tail", .string(logTail))) }
        if let version { fields.append(("version", .string(version))) }
        return .fields(fields)
    }
}

/// Manifest-key rotation: the server's current key signs these bytes to endorse the next
/// key (ManifestSigner); an agent checks that signature before adopting it (ManifestTrust).
public enum ManifestKeyEndorsement {
    public static func message(next publicKey: [UInt8]) -> [UInt8] {
        Array("flotilla next manifest key v1:".utf8) + publicKey
    }
}
