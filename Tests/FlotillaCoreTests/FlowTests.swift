import FlotillaCore
import FlotillaJSON
import XCTest

final class FlowTests: XCTestCase {
    func json(_ text: String) throws -> JSON { try JSON.parse(Array(text.utf8)) }

    let minimal = """
        {"name":"cfg","app":"site-config","app_version":"${version}",
         "parameters":{"version":{"type":"string"},"sha":{"type":"string"},"retries":{"type":"integer","default":3}},
         "steps":[{"download":{"url":"https://example.com/${version}/site.conf","sha256":"${sha}","destination":"/tmp/site.conf"}},
                  {"name":"install","run":{"script":"cp /tmp/site.conf /etc/site.conf # ${retries} $${HOME}","timeout":"${retries}"}}],
         "rollback":{"snapshot":["/etc/site.conf"]}}
        """

    func testParseFillsDefaultsAndRenders() throws {
        let flow = try FlowDefinition.parse(try json(minimal))
        XCTAssertEqual(flow.name, "cfg")
        XCTAssertEqual(flow.parameters.map(\.name), ["retries", "sha", "version"])
        XCTAssertEqual(flow.parameters.first?.required, false, "a default makes a parameter optional")
        let steps = flow.canonical.objectValue?["steps"]?.arrayValue ?? []
        XCTAssertEqual(steps.first?.objectValue?["timeout"], .int(3600))
        XCTAssertEqual(steps.first?.objectValue?["name"], .string("download"))

        let sha = String(repeating: "ab", count: 32)
        let rendered = try FlowDefinition.render(canonical: flow.canonical, params: ["version": .string("2.0"), "sha": .string(sha)])
        XCTAssertEqual(rendered.appVersion, "2.0")
        XCTAssertEqual(rendered.steps[0].objectValue?["url"], .string("https://example.com/2.0/site.conf"))
        XCTAssertEqual(rendered.steps[0].objectValue?["sha256"], .string(sha))
        XCTAssertEqual(rendered.steps[1].objectValue?["script"], .string("cp /tmp/site.conf /etc/site.conf # 3 ${HOME}"))
        XCTAssertEqual(rendered.steps[1].objectValue?["timeout"], .int(3), "a whole-string reference keeps the parameter's type")
        XCTAssertEqual(rendered.plans, [StepPlan(.download, timeout: 3600), StepPlan(.run, timeout: 3)])
        XCTAssertEqual(rendered.rollbackTimeout, 900)
        XCTAssertEqual(rendered.params["retries"], .int(3))
    }

    func testSameContentSameCanonicalText() throws {
        let a = try FlowDefinition.parse(try json(minimal))
        let reordered = try FlowDefinition.parse(try json(minimal.replacingOccurrences(of: #""name":"cfg","app":"site-config""#, with: #""app":"site-config","name":"cfg""#)))
        XCTAssertEqual(a.canonical.serialized, reordered.canonical.serialized)
    }

    func testEveryProblemWithItsLocation() throws {
        let broken = """
            {"name":"Bad Name","app":"x","app_version":"${version}","parameters":{"version":{"type":"float"}},
             "steps":[{"download":{"url":"ftp://x","sha256":"${shaa}","destination":"relative/path"}},
                      {"run":{"script":"true","timeout":0}},
                      {"reboot":{},"verify":{}},
                      {"verify":{"script":"true","colour":"red"}}],
             "extra":1}
            """
        XCTAssertThrowsError(try FlowDefinition.parse(try json(broken))) { error in
            let problems = (error as? FlowInvalid)?.problems.map(\.description) ?? []
            for expected in [
                "name: must match [a-z0-9][a-z0-9._-]* (at most 63)",
                "parameters.version.type: must be string, integer or boolean",
                "steps[0].download.url: must be an http:// or https:// URL",
                "steps[0].download.destination: must be an absolute path",
                "steps[1].timeout: 0 means this step can never finish",
                "steps[2]: a step has exactly one of download, run, reboot, verify",
                "steps[3].verify.colour: unknown field (known: interval, path, script, soak, timeout)",
                "rollback: is required: a step can change the device, so say what to snapshot or run to restore it",
                "extra: unknown field (known: app, app_version, description, name, parameters, rollback, steps)",
                "steps[0].download.sha256: refers to undefined parameter 'shaa'",
            ] {
                XCTAssertTrue(problems.contains(expected), "missing \(expected) in \(problems)")
            }
            XCTAssertTrue(problems.contains("steps[3]: unreachable: steps[1] can never finish"), "\(problems)")
        }
        XCTAssertThrowsError(try FlowDefinition.parse(try json(#"{"name":"a","app":"b","app_version":"1","steps":[]}"#))) { error in
            XCTAssertEqual((error as? FlowInvalid)?.problems, [FlowProblem("steps", "a flow needs at least one step")])
        }
    }

    func testRenderReportsEachBadParameter() throws {
        let flow = try FlowDefinition.parse(try json(minimal))
        XCTAssertThrowsError(try FlowDefinition.render(canonical: flow.canonical, params: ["retries": .string("x"), "colour": .string("red")])) { error in
            XCTAssertEqual((error as? FlowInvalid)?.problems.map(\.description), [
                "params.colour: unknown parameter (the flow declares: retries, sha, version)",
                "params.retries: must be an integer, got a string",
                "params.sha: is required",
                "params.version: is required",
            ])
        }
        XCTAssertThrowsError(try FlowDefinition.render(canonical: flow.canonical, params: ["version": .string("1"), "sha": .string("nope"), "retries": .int(0)])) { error in
            XCTAssertEqual((error as? FlowInvalid)?.problems.map(\.description), [
                "steps[0].sha256: 'nope' is not a SHA-256 (64 lowercase hex digits)",
                "steps[1].timeout: must be an integer from 1 to 604800 once rendered",
            ])
        }
    }
}
