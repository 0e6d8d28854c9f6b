// Flows over the API: apply (a new version when the content changed, a no-op when it is
// identical), validate (dry run), list, get by name (latest) or by name and version.
// The server also applies every file in `flows/` at start-up through `applyFlow`.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension ManagementAPI {
    static let flowColumns = "f.name, f.version, f.app, f.definition, f.created_at"

    /// `withDocument` (a single flow's GET): also the flow as authors write it, ready to edit
    /// and apply again. Listings and apply answers leave it out: it is the definition again.
    static func flowJSON(_ row: PGRow, withDocument: Bool = false) throws -> JSON {
        let (name, version, app, definition, created) = try row.decode(String.self, Int.self, String.self, JSONText.self, Timestamp.self)
        var fields: [(String, JSON)] = [("name", .string(name)), ("version", .int(version)), ("app", .string(app)),
                                        ("definition", .raw(definition.text))]
        if withDocument {
            fields.append(("document", (try? JSON.parse(Array(definition.text.utf8))).map(FlowDefinition.document(fromCanonical:)) ?? .null))
        }
        fields.append(("created_at", .string(created.rfc3339)))
        return .fields(fields)
    }

    /// Parses a flow document or throws 422 listing every problem with its path.
    static func parseFlow(_ document: JSON) throws -> FlowDefinition {
        do {
            return try FlowDefinition.parse(document)
        } catch {
            throw APIError.invalid(error.problems.map { Problem(field: $0.path, message: $0.message) })
        }
    }

    /// Stores `flow` as its next version unless the latest version has the same content.
    /// Returns the stored row and whether it was new.
    public static func applyFlow(_ conn: PGConnection, _ flow: FlowDefinition) throws -> (json: JSON, created: Bool) {
        let text = flow.canonical.serialized
        let digest = Bytea(Secrets.sha256(text.utf8))
        return try conn.transaction { conn in
            // Serializes applies of one flow name across replicas: versions stay dense.
            _ = try conn.query("SELECT pg_advisory_xact_lock(hashtext('flow:' || \(flow.name)))")
            let latest = try conn.query("""
                SELECT \(unsafe: flowColumns), f.digest FROM flows f WHERE f.name = \(flow.name) ORDER BY f.version DESC LIMIT 1
                """).first
            if let latest, try latest.decode(Bytea.self, column: "digest").bytes == digest.bytes {
                return (try flowJSON(latest), false)
            }
            let row = try conn.query("""
                INSERT INTO flows (name, version, app, definition, digest)
                VALUES (\(flow.name), (SELECT coalesce(max(version), 0) + 1 FROM flows WHERE name = \(flow.name)),
                        \(flow.app), \(JSONText(text))::jsonb, \(digest))
                RETURNING \(unsafe: flowColumns.replacingOccurrences(of: "f.", with: ""))
                """)[0]
            return (try flowJSON(row), true)
        }
    }

    func registerFlowRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.applyFlow, role: .deployer) { request, caller in
            let flow = try Self.parseFlow(try parseBody(request))
            if !caller.scope.allowsFlow(flow.name) {
                throw HTTPError(403, code: .outOfScope, message: "this token may apply only flows matching \(caller.scope.flows!.joined(separator: ", "))")
            }
            let (json, created) = try await db.withConnection { try Self.applyFlow($0, flow) }
            return .json(created ? 201 : 200, JSON.fields([("flow", json), ("created", .bool(created))]).serialized)
        }

        route(&router, ManagementRoutes.validateFlow, role: .viewer) { request, _ in
            let flow = try Self.parseFlow(try parseBody(request))
            return .json(200, JSON.fields([("valid", .bool(true)), ("definition", flow.canonical)]).serialized)
        }

        route(&router, ManagementRoutes.listFlows, role: .viewer) { request, _ in
            var query = try QueryReader(request, allowed: ["limit", "cursor"])
            let limit = query.limit()
            let after = query.cursor()
            try query.finish()
            let rows = try await db.query("""
                SELECT DISTINCT ON (f.name) \(unsafe: Self.flowColumns) FROM flows f
                WHERE (\(after)::text IS NULL OR f.name > \(after)) ORDER BY f.name, f.version DESC LIMIT \(limit + 1)
                """)
            return try page(try rows.map { try Self.flowJSON($0) }, limit: limit) { try rows[$0].decode(String.self, column: "name") }
        }

        route(&router, ManagementRoutes.flow, role: .viewer) { request, _ in
            let name = request.pathParameters["name"]!
            guard let row = try await db.query("""
                SELECT \(unsafe: Self.flowColumns) FROM flows f WHERE f.name = \(name) ORDER BY f.version DESC LIMIT 1
                """).first else { throw APIError.notFound("no flow '\(name)'") }
            return .json(200, try Self.flowJSON(row, withDocument: true).serialized)
        }

        route(&router, ManagementRoutes.flowVersion, role: .viewer) { request, _ in
            let name = request.pathParameters["name"]!
            guard let version = Int(request.pathParameters["version"]!), Rules.flowVersions.contains(version) else {
                throw APIError.invalid("version", "must be an integer from 1 to \(Rules.flowVersions.upperBound)")
            }
            guard let row = try await db.query("""
                SELECT \(unsafe: Self.flowColumns) FROM flows f WHERE f.name = \(name) AND f.version = \(version)
                """).first else { throw APIError.notFound("no flow '\(name)' version \(version)") }
            return .json(200, try Self.flowJSON(row, withDocument: true).serialized)
        }
    }
}
