// Every (phase, event) pair of the agent's machine, with the phase it leads to and the
// actions it asks for, or the refusal. Machines are built from journals, so the journal
// codec is exercised for every phase too.

import FlotillaCore
import FlotillaJSON
import XCTest

final class AgentMachinePairsTests: XCTestCase {
    // download, run, reboot, verify: the shape of every real flow.
    static let job = AgentJob(executionID: "e1", app: "model", version: "2.0", steps: [.download, .run, .reboot, .verify],
                              rollbackReboots: false)

    static func machine(_ phase: String, step: Int? = nil, snapshot: Bool = false, rollbackReboots: Bool = false) throws -> AgentMachine {
        var fields: [(String, JSON)] = [("phase", .string(phase)), ("seq", .int(10)), ("snapshot_taken", .bool(snapshot))]
        if let step { fields.append(("step", .int(step))) }
        if phase != "idle" {
            fields.append(("job", .fields([("execution", .string("e1")), ("app", .string("model")), ("version", .string("2.0")),
                                           ("steps", .array(["download", "run", "reboot", "verify"].map(JSON.string))),
                                           ("rollback_reboots", .bool(rollbackReboots))])))
        }
        return try AgentMachine(journal: .fields(fields))
    }

    /// "phase after | action, action" with actions abbreviated; "rejected" for refusals.
    static func describe(_ machine: AgentMachine, _ decision: AgentDecision) -> String {
        guard case .accepted(let actions) = decision else { return "rejected" }
        let names = actions.map { action -> String in
            switch action {
            case .report(let r): r.event.rawValue + (r.step.map { "(\($0))" } ?? "")
            case .download(let s): "download(\(s))"
            case .snapshot: "snapshot"
            case .runScript(let s): "run(\(s))"
            case .reboot: "reboot"
            case .healthCheck(let s): "verify(\(s))"
            case .restoreSnapshot: "restore"
            case .runRollbackScript: "rollback_script"
            case .verifyRestore: "verify_restore"
            case .dropSnapshot: "drop_snapshot"
            case .finished(let outcome, _, _): "finished:" + outcome.rawValue
            }
        }
        return (machine.journal.objectValue?["phase"]?.stringValue ?? "?") + (names.isEmpty ? "" : " | " + names.joined(separator: ", "))
    }

    enum Event: CaseIterable { case manifest, unsupported, succeeded, failed, started, rollBack, stop, proceed }

    static func feed(_ event: Event, to machine: inout AgentMachine) -> AgentDecision {
        switch event {
        case .manifest: machine.manifestReceived(job, serverState: .queued, serverSeq: 0, serverStep: 0)
        case .unsupported:
            machine.unsupportedManifestReceived(executionID: "e2", serverState: .queued, serverSeq: 0, serverStep: 0, reason: "kind 'upload'")
        case .succeeded: machine.activitySucceeded()
        case .failed: machine.activityFailed("boom", exitCode: 1, logTail: "tail")
        case .started: machine.started()
        case .rollBack: machine.directiveReceived(.rollBack)
        case .stop: machine.directiveReceived(.stop)
        case .proceed: machine.directiveReceived(.proceed)
        }
    }

    /// (phase, step, snapshot taken) → event → expected.
    static let table: [(String, Int?, Bool, [Event: String])] = [
        ("idle", nil, false, [
            .manifest: "downloading | step_started(0), download(0)", .unsupported: "idle | step_failed(0)", .succeeded: "rejected", .failed: "rejected",
            .started: "idle", .rollBack: "idle", .stop: "idle", .proceed: "idle"]),
        ("downloading", 0, false, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "snapshotting | step_succeeded(0), step_started(1), snapshot",
            .failed: "idle | step_failed(0), finished:failed", .started: "downloading | step_started(0), download(0)",
            .rollBack: "idle | finished:abandoned", .stop: "idle | finished:abandoned", .proceed: "downloading"]),
        ("snapshotting", 1, false, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "installing | run(1)", .failed: "restoring | step_failed(1), restore",
            .started: "snapshotting | step_started(1), snapshot", .rollBack: "restoring | restore", .stop: "idle | finished:abandoned",
            .proceed: "snapshotting"]),
        ("installing", 1, true, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "rebooting | step_succeeded(1), step_started(2), reboot",
            .failed: "restoring | step_failed(1), restore", .started: "restoring | step_failed(1), restore",
            .rollBack: "restoring | restore", .stop: "restoring | restore", .proceed: "installing"]),
        ("rebooting", 2, true, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "rejected", .failed: "restoring | step_failed(2), restore",
            .started: "verifying | booted, step_started(3), verify(3)", .rollBack: "restoring | restore",
            .stop: "restoring | restore", .proceed: "rebooting"]),
        ("verifying", 3, true, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "idle | step_succeeded(3), drop_snapshot, finished:succeeded",
            .failed: "restoring | step_failed(3), restore", .started: "verifying | step_started(3), verify(3)",
            .rollBack: "restoring | restore", .stop: "restoring | restore", .proceed: "verifying"]),
        ("restoring", nil, true, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "rollback_script | rollback_script",
            .failed: "idle | rollback_failed, finished:rollback_failed", .started: "restoring | restore",
            .rollBack: "restoring", .stop: "restoring", .proceed: "restoring"]),
        ("rollback_script", nil, true, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "rollback_verifying | verify_restore",
            .failed: "idle | rollback_failed, finished:rollback_failed", .started: "rollback_script | rollback_script",
            .rollBack: "rollback_script", .stop: "rollback_script", .proceed: "rollback_script"]),
        ("rollback_rebooting", nil, true, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "rejected", .failed: "idle | rollback_failed, finished:rollback_failed",
            .started: "rollback_verifying | verify_restore", .rollBack: "rollback_rebooting", .stop: "rollback_rebooting",
            .proceed: "rollback_rebooting"]),
        ("rollback_verifying", nil, true, [
            .manifest: "rejected", .unsupported: "rejected", .succeeded: "idle | rollback_succeeded, drop_snapshot, finished:rolled_back",
            .failed: "idle | rollback_failed, finished:rollback_failed", .started: "rollback_verifying | verify_restore",
            .rollBack: "rollback_verifying", .stop: "rollback_verifying", .proceed: "rollback_verifying"]),
    ]

    func testEveryPhaseAndEventPair() throws {
        XCTAssertEqual(Self.table.count, 10, "every phase has a row")
        for (phase, step, snapshot, expected) in Self.table {
            XCTAssertEqual(Set(expected.keys), Set(Event.allCases), "\(phase): every event has an entry")
            for event in Event.allCases {
                var machine = try Self.machine(phase, step: step, snapshot: snapshot)
                let before = machine
                let decision = Self.feed(event, to: &machine)
                XCTAssertEqual(Self.describe(machine, decision), expected[event], "\(phase) + \(event)")
                if case .rejected = decision { XCTAssertEqual(machine, before, "a refusal changes nothing: \(phase) + \(event)") }
                // Whatever it became, the journal reads back as the same machine.
                XCTAssertEqual(try AgentMachine(journal: machine.journal), machine, "\(phase) + \(event)")
            }
        }
    }

    func testReportsCarryIncreasingSequenceNumbersFromTheServers() throws {
        var machine = AgentMachine()
        guard case .accepted(let first) = machine.manifestReceived(Self.job, serverState: .queued, serverSeq: 4, serverStep: 0),
              case .report(let started) = first[0] else { return XCTFail("a manifest starts step 0") }
        XCTAssertEqual(started.seq, 5)
        XCTAssertEqual(started.execution, "e1")
        guard case .accepted(let next) = machine.activitySucceeded(), case .report(let succeeded) = next[0],
              case .report(let secondStarted) = next[1] else { return XCTFail("download success reports twice") }
        XCTAssertEqual([succeeded.seq, secondStarted.seq], [6, 7])
    }

    func testAManifestWeHaveNoJournalForIsReportedNotRun() {
        var machine = AgentMachine()
        let lost = machine.manifestReceived(Self.job, serverState: .installing, serverSeq: 7, serverStep: 1)
        XCTAssertEqual(Self.describe(machine, lost), "idle | step_failed(1)")
        let lostRollback = machine.manifestReceived(Self.job, serverState: .rollingBack, serverSeq: 9, serverStep: 1)
        XCTAssertEqual(Self.describe(machine, lostRollback), "idle | rollback_failed")
    }

    func testAManifestWithAStepKindWeDoNotKnowIsReportedNotRun() throws {
        var machine = AgentMachine()
        guard case .accepted(let actions) = machine.unsupportedManifestReceived(
            executionID: "e9", serverState: .queued, serverSeq: 3, serverStep: 0, reason: "step 2 is of kind 'upload'"),
            case .report(let report)? = actions.first else { return XCTFail("the refusal is reported") }
        XCTAssertEqual(actions.count, 1, "nothing runs")
        XCTAssertEqual(report.execution, "e9")
        XCTAssertEqual(report.body, ReportBody(seq: 4, event: .stepFailed, step: 0, message: "step 2 is of kind 'upload'"))
        XCTAssertEqual(machine.phase, .idle)
        // A manifest whose step kind is unknown never becomes a job: the wire refuses it.
        var execution = try XCTUnwrap(JSON.parse(Array(Self.manifestText.utf8)).objectValue)
        XCTAssertNoThrow(try Manifest(json: .object(execution)))
        execution["steps"] = .array([.fields([("kind", .string("download"))]), .fields([("kind", .string("upload"))])])
        XCTAssertThrowsError(try Manifest(json: .object(execution))) { error in
            XCTAssertEqual(error as? Manifest.Refusal, .unknownStepKind(index: 1, kind: "upload"))
        }
    }

    static let manifestText = #"{"id":"e1","deployment_id":"d1","flow":{"name":"f","version":1},"app":"model","version":"2.0","known_good":null,"state":"queued","step":0,"attempt":0,"seq":0,"directive":"continue","deadline_at":null,"steps":[{"kind":"download"},{"kind":"run","script":"true"}],"rollback":{},"params":{}}"#

    func testRollbackRebootsWhenTheFlowAsks() throws {
        var machine = try Self.machine("rollback_script", snapshot: true, rollbackReboots: true)
        let decision = machine.activitySucceeded()
        XCTAssertEqual(Self.describe(machine, decision), "rollback_rebooting | reboot")
    }

    func testCorruptJournalsAreRefusedWithAReason() {
        let bad: [JSON] = [
            .object([:]),
            .fields([("phase", .string("dancing")), ("seq", .int(1))]),
            .fields([("phase", .string("installing")), ("seq", .int(1))]),
            .fields([("phase", .string("installing")), ("seq", .int(1)), ("step", .int(9)),
                     ("job", .fields([("execution", .string("e")), ("app", .string("a")), ("version", .string("1")),
                                      ("steps", .array([.string("run")]))]))]),
        ]
        for journal in bad {
            XCTAssertThrowsError(try AgentMachine(journal: journal), journal.serialized)
        }
    }
}
