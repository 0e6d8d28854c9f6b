// Argument parsing and exit codes, without a server: what a typo, a missing target or a
// missing server does; help text that documents the exit codes; offline flow validation
// with every problem's line.

@testable import FlotillaCLIKit
@testable import FlotillaFlowFiles
import ArgumentParser
import Foundation
import XCTest

final class ParsingTests: XCTestCase {
    func testCommandsParseIntoTheirOptions() throws {
        let deploy = try XCTUnwrap(try Flotilla.parseAsRoot([
            "deploy", "hardhat-model@3", "--group", "site-berlin", "--group", "site-paris", "--param", "version=1.4",
            "--selector", "kind=cam", "--wait", "--interval", "0.5", "--server", "http://h:1", "--token", "t", "--json",
        ]) as? Deploy)
        XCTAssertEqual(deploy.flow, "hardhat-model@3")
        XCTAssertEqual(deploy.group, ["site-berlin", "site-paris"])
        XCTAssertEqual(deploy.param, ["version=1.4"])
        XCTAssertTrue(deploy.watch.wait)
        XCTAssertEqual(deploy.watch.interval, 0.5)
        XCTAssertTrue(deploy.output.json)
        XCTAssertEqual(try deploy.connection.resolve(environment: [:]), ClientConfig(server: "http://h:1", token: "t"))

        let list = try XCTUnwrap(try Flotilla.parseAsRoot(["devices", "list", "--group", "g", "--state", "rolled_back", "--all"]) as? Devices.List)
        XCTAssertEqual(list.group, "g")
        XCTAssertEqual(list.state, "rolled_back")
        XCTAssertTrue(list.paging.all)

        let label = try XCTUnwrap(try Flotilla.parseAsRoot(["devices", "label", "cam-1", "site=berlin", "rack-"]) as? Devices.Label)
        XCTAssertEqual(try label.patch(), .object(["labels": .object(["site": .string("berlin"), "rack": .null])]))

        XCTAssertNotNil(try Flotilla.parseAsRoot(["deployments", "watch", "abc"]) as? Deployments.WatchCommand)

        let enrollment = try XCTUnwrap(try Flotilla.parseAsRoot([
            "enrollment-tokens", "create", "install-day", "--group", "site-berlin", "--max-uses", "20", "--expires-in", "2d", "--require-approval",
        ]) as? EnrollmentTokens.Create)
        XCTAssertEqual(enrollment.maxUses, 20)
        XCTAssertTrue(enrollment.requireApproval)
        XCTAssertEqual(try seconds(enrollment.expiresIn), 2 * 86_400)
        XCTAssertThrowsError(try Flotilla.parseAsRoot(["enrollment-tokens", "create", "x", "--group", "g", "--expires-in", "soon"]))
        let pipeline = try XCTUnwrap(try Flotilla.parseAsRoot([
            "tokens", "create", "ci", "--role", "deployer", "--flow", "hardhat-*", "--group", "site-*", "--expires-in", "90d",
        ]) as? Tokens.Create)
        XCTAssertEqual(pipeline.flow, ["hardhat-*"])
        XCTAssertEqual(pipeline.group, ["site-*"])
        XCTAssertEqual(try seconds("90s"), 90)
        XCTAssertEqual(try seconds("30m"), 1800)
        XCTAssertEqual(try seconds("12h"), 43_200)
        XCTAssertThrowsError(try seconds("0d"))
        XCTAssertNotNil(try Flotilla.parseAsRoot(["events", "--follow"]) as? Events)
        // Every command's options are valid together (argument-parser checks names only when parsing it).
        for path in [["login"], ["devices", "list"], ["devices", "show", "x"], ["groups", "show", "g"], ["flows", "list"],
                     ["flows", "show", "f"], ["artifacts", "list"], ["deployments", "list"], ["deployments", "show", "i"],
                     ["deployments", "devices", "i"], ["deployments", "cancel", "i"], ["tokens", "list"], ["tokens", "create", "n"],
                     ["tokens", "revoke", "i"], ["events"], ["audit", "--by-token", "t"],
                     ["enrollment-tokens", "list"], ["enrollment-tokens", "create", "n", "--group", "g"], ["enrollment-tokens", "revoke", "i"],
                     ["devices", "register", "d", "--preauthorize"], ["devices", "accept", "d"], ["devices", "reject", "d"],
                     ["devices", "revoke-token", "d"], ["devices", "rotate-token", "d"], ["devices", "list", "--status", "pending"],
                     ["flows", "show", "f", "--document"]] {
            XCTAssertNoThrow(try Flotilla.parseAsRoot(path), "\(path)")
        }
    }

    func testUsageErrorsExitTwo() async {
        for arguments in [
            ["deploy", "hardhat-model"],                              // no target
            ["deploy", "hardhat-model@x", "--group", "g"],            // bad version
            ["deploy", "hardhat-model", "--group", "g", "--param", "novalue"],
            ["devices", "label", "cam-1"],                            // no change
            ["devices", "frobnicate"],
            ["groups", "add", "g"],
            ["deployments", "list", "--limit", "0"],
            ["--no-such-flag"],
        ] {
            let code = await CLIMain.run(arguments)
            XCTAssertEqual(code, ExitStatus.usage, "\(arguments)")
        }
    }

    func testWhereTheServerAndTokenComeFrom() throws {
        let none = try XCTUnwrap(try Flotilla.parseAsRoot(["devices", "list"]) as? Devices.List)
        XCTAssertThrowsError(try none.connection.resolve(environment: [:])) { error in
            XCTAssertEqual((error as? CLIError)?.exitCode, ExitStatus.usage)
        }
        XCTAssertThrowsError(try none.connection.resolve(environment: ["FLOTILLA_URL": "http://e:1"])) { error in
            XCTAssertEqual((error as? CLIError)?.exitCode, ExitStatus.auth, "a server but no token")
        }
        XCTAssertEqual(try none.connection.resolve(environment: ["FLOTILLA_URL": "http://e:1", "FLOTILLA_TOKEN": "env"]),
                       ClientConfig(server: "http://e:1", token: "env"))

        // The config file: written 0600, read back, and below flags and environment.
        let directory = NSTemporaryDirectory() + "flotilla-cli-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/flotilla/config"
        try ClientConfig(server: "https://saved:8443", token: "saved", caFile: "/etc/ca.pem").save(to: path)
        let mode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
        XCTAssertEqual(mode & 0o777, 0o600)
        XCTAssertEqual(ClientConfig.path(environment: ["XDG_CONFIG_HOME": directory]), path)
        let saved = ["XDG_CONFIG_HOME": directory]
        XCTAssertEqual(try none.connection.resolve(environment: saved),
                       ClientConfig(server: "https://saved:8443", token: "saved", caFile: "/etc/ca.pem"))
        XCTAssertEqual(try none.connection.resolve(environment: saved.merging(["FLOTILLA_TOKEN": "env"]) { $1 }).token, "env")
        let flagged = try XCTUnwrap(try Flotilla.parseAsRoot(["devices", "list", "--token", "flag"]) as? Devices.List)
        XCTAssertEqual(try flagged.connection.resolve(environment: saved.merging(["FLOTILLA_TOKEN": "env"]) { $1 }).token, "flag")
    }

    func testHelpDocumentsExitCodesAndCompletionIsGenerated() {
        let help = Flotilla.helpMessage()
        for line in ["0  ok", "2  usage", "4  authentication", "8  a watched deployment"] {
            XCTAssertTrue(help.contains(line), "help lacks '\(line)':\n\(help)")
        }
        XCTAssertTrue(Flotilla.helpMessage(for: Deploy.self).contains("--wait"))
        let bash = Flotilla.completionScript(for: .bash)
        XCTAssertTrue(bash.contains("deployments"), "the completion script knows the subcommands")
    }

    func testOfflineValidationGivesEveryProblemWithItsLine() async throws {
        let directory = NSTemporaryDirectory() + "flotilla-flows-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/bad.yaml"
        try """
            name: bad-flow
            app: detector
            app_version: "${version}"
            parameters:
              version: {type: string}
            steps:
              - name: fetch
                download:
                  url: https://example.com/m.zip
                  sha256: "${nope}"
                  destination: /tmp/m.zip
              - name: install
                run:
                  script: echo hi
                  timeout: soon
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let problems: [FlowFiles.LocatedProblem]
        switch FlowFiles.validate(atPath: file) {
        case .valid: return XCTFail("the flow is invalid")
        case .invalid(let found): problems = found
        }
        let byPath = Dictionary(problems.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(byPath["steps[1].run.timeout"]?.line, 15, "\(problems)")
        XCTAssertEqual(byPath["steps[0].download.sha256"]?.line, 10, "\(problems)")
        XCTAssertEqual(FlowFiles.components(of: "steps[1].run.timeout"), [.key("steps"), .index(1), .key("run"), .key("timeout")])

        let bad = await CLIMain.run(["flows", "validate", file])
        XCTAssertEqual(bad, ExitStatus.error)
        let shipped = await CLIMain.run(["flows", "validate", repositoryRoot + "/flows"])
        XCTAssertEqual(shipped, ExitStatus.ok)
        let missing = await CLIMain.run(["flows", "validate", directory + "/nothing.yaml"])
        XCTAssertEqual(missing, ExitStatus.usage)
    }

    func testParamsAreTypedByTheFlowsDeclarations() throws {
        let declared: [String: JSON] = ["version": .object(["type": .string("string")]), "size": .object(["type": .string("integer")]),
                                        "force": .object(["type": .string("boolean")])]
        XCTAssertEqual(try typedParams(["version=1.4", "size=42", "force=true"], declared: declared),
                       ["version": .string("1.4"), "size": .int(42), "force": .bool(true)])
        XCTAssertThrowsError(try typedParams(["size=big"], declared: declared)) { error in
            XCTAssertEqual((error as? CLIError)?.exitCode, ExitStatus.usage)
        }
        XCTAssertThrowsError(try typedParams(["colour=red"], declared: declared)) { error in
            XCTAssertTrue("\(error)".contains("force, size, version"), "\(error)")
        }
        XCTAssertEqual(try flowReference("hardhat-model@12").version, 12)
        XCTAssertNil(try flowReference("hardhat-model").version)
        XCTAssertThrowsError(try flowReference("@3"))
    }
}

/// The repository's root (this file is Tests/FlotillaCLITests/ParsingTests.swift).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
