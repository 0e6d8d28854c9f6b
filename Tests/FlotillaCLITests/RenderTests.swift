// Renderers as pure functions: the same data on a terminal (colour, humanized times) and
// on a pipe (plain, RFC 3339); the watch frame and line; API errors turned into messages
// and exit codes; the diff `flows apply` prints.

@testable import FlotillaCLIKit
import FlotillaJSON
import FlotillaTransport
import Foundation
import XCTest

final class RenderTests: XCTestCase {
    let now = Date(timeIntervalSince1970: 1_795_000_000)
    var tty: Style { Style(tty: true, color: true, now: now) }
    var plainTTY: Style { Style(tty: true, color: false, now: now) }
    let pipe = Style.pipe

    func rfc3339(_ secondsAgo: TimeInterval) -> JSON { .string(Views.timestamp(now.addingTimeInterval(-secondsAgo))) }

    func device(_ name: String, seen: JSON) -> JSON {
        .object(["name": .string(name), "groups": .array([.string("site-berlin")]), "labels": .object(["site": .string("berlin")]),
                 "installed": .object(["hardhat-detector": .string("1.4")]), "last_seen_at": seen])
    }

    func testTablesAlignOnAPipeAndUseColourAndRelativeTimesOnATerminal() {
        let items = [device("cam-1", seen: rfc3339(300)), device("camera-long-name", seen: .null)]
        let plain = Views.devices(items, pipe)
        let lines = plain.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3)
        XCTAssertTrue(lines[0].hasPrefix("NAME              GROUPS"), plain)
        XCTAssertEqual(lines[1].firstRange(of: "site-berlin")?.lowerBound.utf16Offset(in: lines[1]),
                       lines[0].firstRange(of: "GROUPS")?.lowerBound.utf16Offset(in: lines[0]), "columns line up")
        XCTAssertTrue(lines[1].contains(Views.timestamp(now.addingTimeInterval(-300))), "RFC 3339 on a pipe")
        XCTAssertFalse(plain.contains("\u{1B}"), "no escape codes on a pipe")
        XCTAssertTrue(lines[2].hasSuffix("-"), "never seen")

        let coloured = Views.devices(items, tty)
        XCTAssertTrue(coloured.contains("\u{1B}[1mNAME\u{1B}[0m"), "bold headers")
        XCTAssertTrue(coloured.contains("5m ago"), coloured)
        XCTAssertEqual(Views.devices(items, plainTTY).contains("\u{1B}"), false, "--no-color on a terminal")
        XCTAssertEqual(Views.devices([], pipe), "no devices\n")
        var waiting = device("cam-9", seen: .null).objectValue!
        waiting["status"] = .string("pending")
        XCTAssertTrue(Views.devices([.object(waiting)], pipe).contains("cam-9 (pending)"), "a device waiting for approval stands out")
        XCTAssertFalse(plain.contains("(accepted)"), "accepted devices are not marked")
        XCTAssertEqual(visibleWidth(tty.state("rolled_back")), "rolled_back".count)
    }

    func testHumanizedTimes() {
        XCTAssertEqual(humanize(0.5), "just now")
        XCTAssertEqual(humanize(42), "42s ago")
        XCTAssertEqual(humanize(3 * 3600 + 5), "3h ago")
        XCTAssertEqual(humanize(2 * 86400), "2d ago")
        XCTAssertEqual(humanize(-300), "in 5m")
        XCTAssertEqual(byteCount(512), "512 B")
        XCTAssertEqual(byteCount(48 * 1024 * 1024 + 1), "48.0 MiB")
        XCTAssertEqual(progressBar(1, of: 4, width: 8), "[##------]")
        XCTAssertEqual(progressBar(0, of: 0, width: 4), "[####]", "an empty deployment is complete")
    }

    func deployment(status: String, outcome: String, counts: [String: Int]) -> JSON {
        .fields([
            ("id", .string("3f2a0000-0000-0000-0000-000000000001")), ("flow", .object(["name": .string("hardhat-model"), "version": .int(2)])),
            ("app", .string("hardhat-detector")), ("app_version", .string("1.4")), ("status", .string(status)), ("outcome", .string(outcome)),
            ("devices_targeted", .int(counts.values.reduce(0, +))), ("counts", .object(counts.mapValues(JSON.int))),
            ("created_at", rfc3339(60)), ("target", .object(["groups": .array([.string("site-berlin")])])), ("params", .object([:])),
        ])
    }

    func testWatchFrameAndLine() {
        let running = deployment(status: "active", outcome: "pending", counts: ["queued": 5, "installing": 2, "succeeded": 2, "rolled_back": 1])
        XCTAssertEqual(Views.watchLine(running), "active 3/10 done: queued 5, installing 2, succeeded 2, rolled_back 1")
        let failures: JSON = .object(["groups": .array([]), "newest": .array([.object([
            "device_name": .string("cam-7"), "state": .string("rolled_back"),
            "failure": .object(["step": .int(1), "message": .string("unzip failed")]),
        ])])])
        let frame = Views.watchFrame(running, failures: failures, pipe)
        XCTAssertTrue(frame.hasPrefix("deployment 3f2a0000-0000-0000-0000-000000000001  hardhat-model@2 → hardhat-detector 1.4  active, outcome pending\n"), frame)
        XCTAssertTrue(frame.contains("[#########---------------------] 3/10 done\n"), frame)
        XCTAssertTrue(frame.contains("queued 5  installing 2  succeeded 2  rolled_back 1\n"), frame)
        XCTAssertTrue(frame.contains("  cam-7  rolled_back  step 1: unzip failed\n"), frame)

        let done = deployment(status: "completed", outcome: "failed", counts: ["succeeded": 9, "rolled_back": 1])
        XCTAssertEqual(Views.watchLine(done), "completed 10/10 done: succeeded 9, rolled_back 1 (outcome failed)")
        XCTAssertEqual(Watch.exitCode(for: done), ExitStatus.deploymentFailed)
        XCTAssertEqual(Watch.exitCode(for: deployment(status: "completed", outcome: "succeeded", counts: ["succeeded": 3])), ExitStatus.ok)
        XCTAssertEqual(Watch.exitCode(for: deployment(status: "canceled", outcome: "canceled", counts: ["canceled": 3])), ExitStatus.deploymentFailed)
    }

    func testDeploymentShowGroupsFailuresByStepAndMessage() {
        let failures: JSON = .object(["groups": .array([
            .object(["state": .string("rolled_back"), "step": .int(1), "step_name": .string("unpack"), "message": .string("unzip failed"), "count": .int(12)]),
            .object(["state": .string("failed"), "step": .int(0), "step_name": .null, "message": .string("sha256 mismatch"), "count": .int(1)]),
        ])])
        let text = Views.deployment(deployment(status: "completed", outcome: "failed", counts: ["succeeded": 87, "rolled_back": 12, "failed": 1]),
                                    failures: failures, pipe)
        XCTAssertTrue(text.contains("succeeded 87  failed 1  rolled_back 12"), text)
        XCTAssertTrue(text.contains("12       rolled_back  unpack  unzip failed"), text)
        XCTAssertTrue(text.contains("1        failed       step 0  sha256 mismatch"), text)
        XCTAssertTrue(Views.deployment(deployment(status: "active", outcome: "pending", counts: [:]), failures: .object([:]), pipe)
                        .hasSuffix("no failures\n"))
    }

    func response(_ status: Int, _ body: String, headers: HTTPHeaders = [:]) -> ClientResponse {
        ClientResponse(status: status, headers: headers, body: Array(body.utf8))
    }

    func testAPIErrorsBecomeMessagesAndExitCodes() throws {
        XCTAssertEqual(try Session.interpret(response(200, #"{"a":1}"#), method: "GET", path: "/x"), .object(["a": .int(1)]))
        XCTAssertEqual(try Session.interpret(response(204, ""), method: "DELETE", path: "/x"), .null)
        func failure(_ status: Int, _ body: String, headers: HTTPHeaders = [:]) -> CLIError? {
            do { _ = try Session.interpret(response(status, body, headers: headers), method: "POST", path: "/api/v1/x"); return nil } catch {
                return error as? CLIError
            }
        }
        XCTAssertEqual(failure(401, #"{"error":{"code":"invalid_token","message":"the API token is unknown or revoked"}}"#)?.exitCode, ExitStatus.auth)
        XCTAssertEqual(failure(403, #"{"error":{"code":"forbidden","message":"needs admin"}}"#)?.exitCode, ExitStatus.auth)
        let invalid = try XCTUnwrap(failure(422, #"{"error":{"code":"invalid","message":"2 fields are invalid","details":[{"field":"params.version","message":"is required"},{"field":"target","message":"is empty"}]}}"#))
        XCTAssertEqual(invalid.exitCode, ExitStatus.error)
        XCTAssertEqual(invalid.message, "the server found 2 problems:\n  params.version: is required\n  target: is empty")
        let missing = try XCTUnwrap(failure(404, #"{"error":{"code":"not_found","message":"no deployment 'x'"}}"#))
        XCTAssertEqual(missing.message, "no deployment 'x' (HTTP 404 for POST /api/v1/x)")
        XCTAssertEqual(failure(503, #"{"error":{"code":"database_unavailable","message":"db down"}}"#, headers: ["retry-after": "1"])?.hint,
                       "the server's database is unavailable; retry in 1 seconds")
        XCTAssertEqual(failure(502, "bad gateway")?.message, "bad gateway (HTTP 502 for POST /api/v1/x)", "a non-JSON body still says something")
    }

    func testFlowApplyDiffNamesWhatChanged() {
        let old: JSON = .object(["app_version": .string("${version}"), "steps": .array([
            .object(["kind": .string("run"), "script": .string("a")]), .object(["kind": .string("reboot")]),
        ])])
        var newer = old.objectValue!
        newer["steps"] = .array([.object(["kind": .string("run"), "script": .string("b"), "timeout": .int(60)]), .object(["kind": .string("reboot")])])
        newer["description"] = .string("new")
        XCTAssertEqual(changedPaths(old, .object(newer)), ["description", "steps[0].script", "steps[0].timeout"])
        newer["steps"] = .array([])
        XCTAssertEqual(changedPaths(old, .object(newer)), ["description", "steps"], "a different step count is one change")
        XCTAssertEqual(changedPaths(old, old), [])
        XCTAssertEqual(query(query("/api/v1/events", [("device", "cam 1&2"), ("deployment", nil)]), [("after", "7")]),
                       "/api/v1/events?device=cam%201%262&after=7", "values are encoded; a second query joins with &")
    }
}
