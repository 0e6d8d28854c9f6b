import FlotillaAPI
import FlotillaStore
import Foundation
import Logging
import XCTest
import Yams

/// openapi/management.yaml and the router must describe the same API: every route the
/// server knows is documented, and every documented route is served.
final class OpenAPITests: XCTestCase {
    func loadSpec() throws -> [String: Any] {
        let text = try String(contentsOfFile: TestCluster.repositoryRoot + "/openapi/management.yaml", encoding: .utf8)
        return try XCTUnwrap(try Yams.load(yaml: text) as? [String: Any])
    }

    func testEveryRouteIsDocumentedAndEveryDocumentedRouteIsServed() throws {
        let spec = try loadSpec()
        let paths = try XCTUnwrap(spec["paths"] as? [String: Any])
        let methods: Set<String> = ["get", "post", "put", "patch", "delete", "head", "options"]
        var documented = Set<String>()
        for (path, item) in paths {
            for method in (item as? [String: Any] ?? [:]).keys where methods.contains(method) {
                documented.insert("\(method.uppercased()) \(path)")
            }
        }
        // The pool never connects: only the route table is read.
        let pool = PGPool(.init(connection: PGConnectionOptions(conninfo: "host=/nonexistent dbname=x")))
        let router = FlotillaAPI.makeRouter(management: ManagementAPI(db: pool, logger: Logger(label: "openapi-test")))
        let routed = Set(router.routeTable.map { "\($0.method) \($0.pattern)" })
        XCTAssertEqual(routed.subtracting(documented).sorted(), [], "routes missing from openapi/management.yaml")
        XCTAssertEqual(documented.subtracting(routed).sorted(), [], "documented routes the server does not serve")
    }

    /// Each `{name}` in a path is declared as a path parameter, and every management
    /// operation documents its 401.
    func testPathParametersAndAuthErrorsAreDeclared() throws {
        let spec = try loadSpec()
        let components = (spec["components"] as? [String: Any])?["parameters"] as? [String: Any] ?? [:]
        func names(_ parameters: Any?) -> Set<String> {
            Set((parameters as? [Any] ?? []).compactMap { entry -> String? in
                guard let entry = entry as? [String: Any] else { return nil }
                if let ref = entry["$ref"] as? String {
                    return (components[String(ref.split(separator: "/").last!)] as? [String: Any])?["name"] as? String
                }
                return entry["in"] as? String == "path" ? entry["name"] as? String : nil
            })
        }
        for (path, item) in try XCTUnwrap(spec["paths"] as? [String: Any]) {
            let item = try XCTUnwrap(item as? [String: Any])
            let needed = Set(path.matches(of: /\{([a-z_]+)\}/).map { String($0.1) })
            for (method, operation) in item where method != "parameters" {
                let operation = try XCTUnwrap(operation as? [String: Any])
                let declared = names(item["parameters"]).union(names(operation["parameters"]))
                XCTAssertTrue(needed.isSubset(of: declared), "\(method) \(path) declares \(declared), needs \(needed)")
                if path.hasPrefix("/api/") {
                    let responses = try XCTUnwrap(operation["responses"] as? [String: Any])
                    XCTAssertNotNil(responses["401"], "\(method) \(path) does not document 401")
                }
            }
        }
    }
}
