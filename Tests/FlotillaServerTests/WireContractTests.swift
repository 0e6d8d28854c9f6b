// The wire contract (FlotillaWire) is the one source of paths, events and error codes for
// the server, the agent and the CLI. These tests hold the three to it: the router serves
// exactly the contract's endpoints (OpenAPITests holds the router to the YAML files), the
// agent and the CLI spell no path of their own, and every error code the sources send is
// one the contract lists.

import FlotillaAPI
import FlotillaCore
import FlotillaStore
import Foundation
import Logging
import XCTest

final class WireContractTests: XCTestCase {
    func testTheRouterServesExactlyTheContractsEndpoints() throws {
        let pool = PGPool(.init(connection: PGConnectionOptions(conninfo: "host=/nonexistent dbname=x")))
        let router = FlotillaAPI.makeRouter(context: try APIContext(db: pool, logger: Logger(label: "wire-test"),
                                                                             artifacts: try ArtifactStore(directory: NSTemporaryDirectory() + "flotilla-wire-artifacts")))
        let routed = Set(router.routeTable.map { "\($0.method) \($0.pattern)" }.filter { $0.contains(" /api/") })
        let contract = Set((DeviceRoutes.all + ManagementRoutes.all).map(\.description))
        XCTAssertEqual(routed.subtracting(contract).sorted(), [], "routes the contract does not name")
        XCTAssertEqual(contract.subtracting(routed).sorted(), [], "contract endpoints the server does not serve")
        XCTAssertTrue(DeviceRoutes.all.allSatisfy { $0.pattern.hasPrefix("/api/v1/agent/") })
        XCTAssertFalse(ManagementRoutes.all.contains { $0.pattern.hasPrefix("/api/v1/agent/") })
    }

    /// The agent and the CLI build every path from the contract: a literal would drift.
    func testTheAgentAndTheCLISpellNoPathOfTheirOwn() throws {
        for module in ["FlotillaAgent", "FlotillaCLIKit"] {
            let directory = TestCluster.repositoryRoot + "/Sources/" + module
            for file in try FileManager.default.contentsOfDirectory(atPath: directory) where file.hasSuffix(".swift") {
                let text = try String(contentsOfFile: directory + "/" + file, encoding: .utf8)
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
                where line.contains("\"/api/") && !line.trimmingCharacters(in: .whitespaces).hasPrefix("//") {
                    XCTFail("\(module)/\(file):\(number + 1) spells an API path: \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
    }

    func testEveryErrorCodeTheSourcesSendIsInTheContract() throws {
        let known = Set(ErrorCode.allCases.map(\.rawValue))
        var sent = Set<String>()
        let sources = TestCluster.repositoryRoot + "/Sources"
        for module in try FileManager.default.contentsOfDirectory(atPath: sources) {
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: sources + "/" + module) else { continue }
            for file in files where file.hasSuffix(".swift") {
                let text = try String(contentsOfFile: "\(sources)/\(module)/\(file)", encoding: .utf8)
                for match in text.matches(of: /code: "([a-z_]+)"|invalidToken\("([a-z_]+)"/) {
                    sent.insert(String(match.1 ?? match.2 ?? ""))
                }
                for match in text.matches(of: /code: \.([a-zA-Z]+)/) { sent.insert(snakeCase(String(match.1))) }
            }
        }
        XCTAssertGreaterThan(sent.count, 30, "the scan found the codes")
        XCTAssertEqual(sent.subtracting(known).sorted(), [], "codes sent but missing from FlotillaWire/ErrorCode.swift")
    }

    func testPathsArePercentEncodedPerSegment() {
        XCTAssertEqual(ManagementRoutes.removeGroupDevice.path("site berlin", "cam/1"), "/api/v1/groups/site%20berlin/devices/cam%2F1")
        XCTAssertEqual(ManagementRoutes.listDevices.path(query: [("selector", "a=b,c=d"), ("cursor", nil)]),
                       "/api/v1/devices?selector=a%3Db%2Cc%3Dd")
        XCTAssertEqual(DeviceRoutes.report.path("e1"), "/api/v1/agent/executions/e1/reports")
    }

    private func snakeCase(_ name: String) -> String {
        name.reduce(into: "") { out, character in
            if character.isUppercase { out += "_" + character.lowercased() } else { out.append(character) }
        }
    }
}
