import FlotillaAPI
import FlotillaStore
import Foundation
import Logging
import XCTest
import Yams

/// openapi/management.yaml + openapi/device.yaml and the router must describe the same API:
/// every route the server knows is documented, every documented route is served, and each
/// audience's routes are in its own file (the device API is exactly /api/v1/agent/…).
final class OpenAPITests: XCTestCase {
    static let specs = ["management", "device"]

    func loadSpec(_ name: String) throws -> [String: Any] {
        let text = try String(contentsOfFile: TestCluster.repositoryRoot + "/openapi/\(name).yaml", encoding: .utf8)
        return try XCTUnwrap(try Yams.load(yaml: text) as? [String: Any])
    }

    func testEveryRouteIsDocumentedAndEveryDocumentedRouteIsServed() throws {
        let methods: Set<String> = ["get", "post", "put", "patch", "delete", "head", "options"]
        var documented = Set<String>()
        for name in Self.specs {
            let paths = try XCTUnwrap(try loadSpec(name)["paths"] as? [String: Any])
            for (path, item) in paths {
                XCTAssertEqual(path.hasPrefix("/api/v1/agent/"), name == "device", "\(path) belongs in the other spec than \(name).yaml")
                for method in (item as? [String: Any] ?? [:]).keys where methods.contains(method) {
                    documented.insert("\(method.uppercased()) \(path)")
                }
            }
        }
        // The pool never connects: only the route table is read.
        let pool = PGPool(.init(connection: PGConnectionOptions(conninfo: "host=/nonexistent dbname=x")))
        let router = FlotillaAPI.makeRouter(context: try APIContext(db: pool, logger: Logger(label: "openapi-test"),
                                                                             artifacts: try ArtifactStore(directory: NSTemporaryDirectory() + "flotilla-openapi-artifacts")))
        let routed = Set(router.routeTable.map { "\($0.method) \($0.pattern)" })
        XCTAssertEqual(routed.subtracting(documented).sorted(), [], "routes missing from openapi/*.yaml")
        XCTAssertEqual(documented.subtracting(routed).sorted(), [], "documented routes the server does not serve")
    }

    /// Each `{name}` in a path is declared as a path parameter, and every management
    /// operation documents its 401.
    func testPathParametersAndAuthErrorsAreDeclared() throws {
        for name in Self.specs { try checkParametersAndAuth(try loadSpec(name)) }
    }

    func checkParametersAndAuth(_ spec: [String: Any]) throws {
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
                // Routes that need no token say so with `security: []`; every other one documents 401.
                let open = (operation["security"] as? [Any])?.isEmpty == true
                if path.hasPrefix("/api/") {
                    XCTAssertEqual(open, path == "/api/v1/agent/signing-key", "\(method) \(path): of the API, only the signing key is public")
                }
                if path.hasPrefix("/api/") && !open {
                    let responses = try XCTUnwrap(operation["responses"] as? [String: Any])
                    XCTAssertNotNil(responses["401"], "\(method) \(path) does not document 401")
                }
            }
        }
    }
}
