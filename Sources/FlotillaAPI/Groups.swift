// Groups: named sets of devices (a device can be in many). Create, rename, delete, add and
// remove members, list members page by page. `{group}` is a group id or name; deleting
// a group removes its memberships, never its devices.

import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension ManagementAPI {
    static let groupColumns = "g.id::text, g.name, g.created_at, (SELECT count(*) FROM group_members m WHERE m.group_id = g.id)"

    static func groupJSON(_ row: PGRow) throws -> JSON {
        let (id, name, created, count) = try row.decode(String.self, String.self, Timestamp.self, Int.self)
        return .object(["id": .string(id), "name": .string(name), "created_at": .string(created.rfc3339), "device_count": .int(count)])
    }

    static func groupMatch(_ ident: String) -> SQL {
        isUUID(ident) ? "g.id = \(ident)::uuid" : "g.name = \(ident)"
    }

    func registerGroupRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.createGroup, role: .admin) { request, _ in
            var body = try BodyReader(request)
            let name = body.validName("name", required: true)
            try body.finish()
            let row = try await db.withConnection { [name] conn in
                try conflictOnDuplicate("a group named '\(name!)' exists already") {
                    try conn.pipeline([
                        "INSERT INTO groups (name) VALUES (\(name!))",
                        "SELECT \(unsafe: Self.groupColumns) FROM groups g WHERE g.name = \(name!)",
                    ])[1][0]
                }
            }
            return .json(201, try Self.groupJSON(row).serialized)
        }

        route(&router, ManagementRoutes.listGroups, role: .viewer) { request, _ in
            var query = try QueryReader(request, allowed: ["name_prefix", "limit", "cursor"])
            var filters: [SQL] = []
            if let prefix = query["name_prefix"] { filters.append("starts_with(g.name, \(prefix))") }
            let limit = query.limit()
            if let cursor = query.cursor() { filters.append("g.name > \(cursor)") }
            try query.finish()
            let condition = filters.isEmpty ? SQL("true") : SQL.join(filters, separator: " AND ")
            let rows = try await db.query("SELECT \(unsafe: Self.groupColumns) FROM groups g WHERE \(condition) ORDER BY g.name LIMIT \(limit + 1)")
            return try page(try rows.map(Self.groupJSON), limit: limit) { try rows[$0].decode(String.self, column: "name") }
        }

        route(&router, ManagementRoutes.group, role: .viewer) { request, _ in
            let ident = request.pathParameters["group"]!
            let row = try await db.query("SELECT \(unsafe: Self.groupColumns) FROM groups g WHERE \(Self.groupMatch(ident))").first
            guard let row else { throw APIError.notFound("no group '\(ident)'") }
            return .json(200, try Self.groupJSON(row).serialized)
        }

        // Rename.
        route(&router, ManagementRoutes.renameGroup, role: .admin) { request, _ in
            let ident = request.pathParameters["group"]!
            var body = try BodyReader(request)
            let name = body.validName("name", required: true)
            try body.finish()
            let row = try await db.withConnection { [name] conn in
                try conflictOnDuplicate("a group named '\(name!)' exists already") {
                    try conn.pipeline([
                        "UPDATE groups g SET name = \(name!), version = version + 1 WHERE \(Self.groupMatch(ident))",
                        "SELECT \(unsafe: Self.groupColumns) FROM groups g WHERE g.name = \(name!)",
                    ])
                }
            }
            guard row[0].affectedRows == 1, let group = row[1].first else { throw APIError.notFound("no group '\(ident)'") }
            return .json(200, try Self.groupJSON(group).serialized)
        }

        route(&router, ManagementRoutes.deleteGroup, role: .admin) { request, _ in
            let ident = request.pathParameters["group"]!
            let deleted = try await db.query("DELETE FROM groups g WHERE \(Self.groupMatch(ident))").affectedRows
            guard deleted == 1 else { throw APIError.notFound("no group '\(ident)'") }
            return HTTPResponse(status: 204)
        }

        route(&router, ManagementRoutes.groupDevices, role: .viewer) { request, _ in
            let ident = request.pathParameters["group"]!
            var query = try QueryReader(request, allowed: ["limit", "cursor"])
            let limit = query.limit()
            let cursor = query.cursor()
            try query.finish()
            let rows = try await db.withConnection { conn -> PGRows? in
                guard let group = try conn.query("SELECT g.id::text FROM groups g WHERE \(Self.groupMatch(ident))").first else {
                    return nil
                }
                let groupID = try group.decode(String.self)
                return try conn.query("""
                    SELECT \(unsafe: Self.deviceColumns) FROM devices d
                    JOIN group_members gm ON gm.device_id = d.id AND gm.group_id = \(groupID)::uuid
                    WHERE d.name > \(cursor ?? "") ORDER BY d.name LIMIT \(limit + 1)
                    """)
            }
            guard let rows else { throw APIError.notFound("no group '\(ident)'") }
            return try page(try rows.map(Self.deviceJSON), limit: limit) { try rows[$0].decode(String.self, column: "name") }
        }

        // Add devices (ids or names). Adding a member twice is not an error.
        route(&router, ManagementRoutes.addGroupDevices, role: .admin) { request, _ in
            let ident = request.pathParameters["group"]!
            var body = try BodyReader(request)
            let devices = body.stringArray("devices", required: true)
            if let devices, devices.isEmpty { body.problem("devices", "must name at least one device") }
            try body.finish()
            let added = try await db.transaction { conn -> Int? in
                guard let group = try conn.query("SELECT g.id::text FROM groups g WHERE \(Self.groupMatch(ident)) FOR UPDATE").first else {
                    return nil
                }
                let groupID = try group.decode(String.self)
                // Ids and names are matched separately so that both lookups use an index.
                let ids = PGTextArray(devices!.filter(isUUID).map { $0.lowercased() })
                let names = PGTextArray(devices!.filter { !isUUID($0) })
                let matching: SQL = "(d.id = ANY(\(ids)::uuid[]) OR d.name = ANY(\(names)::text[]))"
                var found = Set<String>()
                for row in try conn.query("SELECT d.id::text, d.name FROM devices d WHERE \(matching)") {
                    let (id, name) = try row.decode(String.self, String.self)
                    found.insert(id)
                    found.insert(name)
                }
                let missing = devices!.enumerated().filter { !found.contains(isUUID($0.element) ? $0.element.lowercased() : $0.element) }
                if !missing.isEmpty {
                    throw APIError.invalid(missing.map { Problem(field: "devices[\($0.offset)]", message: "no device '\($0.element)'") })
                }
                return try conn.query("""
                    INSERT INTO group_members (group_id, device_id)
                    SELECT \(groupID)::uuid, d.id FROM devices d WHERE \(matching)
                    ON CONFLICT DO NOTHING
                    """).affectedRows
            }
            guard let added else { throw APIError.notFound("no group '\(ident)'") }
            return .json(200, JSON.object(["added": .int(added)]).serialized)
        }

        route(&router, ManagementRoutes.removeGroupDevice, role: .admin) { request, _ in
            let group = request.pathParameters["group"]!, device = request.pathParameters["device"]!
            let removed = try await db.query("""
                DELETE FROM group_members m USING groups g, devices d
                WHERE m.group_id = g.id AND m.device_id = d.id AND \(Self.groupMatch(group)) AND \(Self.deviceMatch(device))
                """).affectedRows
            guard removed == 1 else { throw APIError.notFound("device '\(device)' is not in group '\(group)'") }
            return HTTPResponse(status: 204)
        }
    }
}
