// The agent machine as the journal stores it: plain JSON, read back exactly. The agent
// writes this before every side effect, so decoding must accept every phase it can write
// and refuse anything else with a reason (a corrupt journal is reported, not guessed at).

import FlotillaJSON

public struct JournalError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
}

extension AgentMachine {
    public var journal: JSON {
        let (name, step): (String, Int?) = switch phase {
        case .idle: ("idle", nil)
        case .downloading(let step): ("downloading", step)
        case .snapshotting(let step): ("snapshotting", step)
        case .installing(let step): ("installing", step)
        case .rebooting(let step): ("rebooting", step)
        case .verifying(let step): ("verifying", step)
        case .restoring: ("restoring", nil)
        case .rollbackScript: ("rollback_script", nil)
        case .rollbackRebooting: ("rollback_rebooting", nil)
        case .rollbackVerifying: ("rollback_verifying", nil)
        }
        var fields: [(String, JSON)] = [("phase", .string(name)), ("seq", .int(seq)), ("snapshot_taken", .bool(snapshotTaken))]
        if let step { fields.append(("step", .int(step))) }
        if let job {
            fields.append(("job", .fields([
                ("execution", .string(job.executionID)), ("app", .string(job.app)), ("version", .string(job.version)),
                ("steps", .array(job.steps.map { .string($0.rawValue) })), ("rollback_reboots", .bool(job.rollbackReboots)),
            ])))
        }
        return .fields(fields)
    }

    public init(journal: JSON) throws(JournalError) {
        guard let fields = journal.objectValue, let name = fields["phase"]?.stringValue, let seq = fields["seq"]?.intValue else {
            throw JournalError(description: "the journal has no phase or seq")
        }
        let step = fields["step"]?.intValue ?? -1
        let phase: AgentPhase
        switch name {
        case "idle": phase = .idle
        case "downloading": phase = .downloading(step: step)
        case "snapshotting": phase = .snapshotting(step: step)
        case "installing": phase = .installing(step: step)
        case "rebooting": phase = .rebooting(step: step)
        case "verifying": phase = .verifying(step: step)
        case "restoring": phase = .restoring
        case "rollback_script": phase = .rollbackScript
        case "rollback_rebooting": phase = .rollbackRebooting
        case "rollback_verifying": phase = .rollbackVerifying
        default: throw JournalError(description: "unknown phase '\(name)'")
        }
        var job: AgentJob?
        if let j = fields["job"]?.objectValue {
            guard let execution = j["execution"]?.stringValue, let app = j["app"]?.stringValue,
                  let version = j["version"]?.stringValue, let names = j["steps"]?.arrayValue else {
                throw JournalError(description: "the journal's job is incomplete")
            }
            var steps: [StepKind] = []
            for kind in names {
                guard let step = kind.stringValue.flatMap(StepKind.init(rawValue:)) else {
                    throw JournalError(description: "unknown step kind in the journal")
                }
                steps.append(step)
            }
            job = AgentJob(executionID: execution, app: app, version: version, steps: steps,
                           rollbackReboots: j["rollback_reboots"] == .bool(true))
        }
        if phase != .idle && job == nil { throw JournalError(description: "phase '\(name)' without a job") }
        if case .idle = phase {} else if step < 0, ["downloading", "snapshotting", "installing", "rebooting", "verifying"].contains(name) {
            throw JournalError(description: "phase '\(name)' without a step")
        }
        if let job, step >= job.steps.count { throw JournalError(description: "step \(step) is past the job's \(job.steps.count) steps") }
        self.init(job: job, phase: phase, seq: seq, snapshotTaken: fields["snapshot_taken"] == .bool(true))
    }
}
