// Devices: register (returns the device token once), get, list with filters and keyset
// pagination, update labels and attributes, delete.
//
// `{device}` in a path is a device id or a device name. Deleting is a hard delete: the
// row, its memberships and its token go; the name can be registered again.
// Updates bump `version` and honour `If-Match: "<version>"` (412 when it moved on).

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension ManagementAPI {
    /// Every device response has this shape (see openapi/management.yaml#Device).
    static let deviceColumns = """
        d.id::text, d.name, d.labels, d.attributes, d.created_at, d.updated_at, d.last_seen_at, d.version,
        coalesce((SELECT jsonb_object_agg(i.app, i.version) FROM installed_versions i WHERE i.device_id = d.id), '{}'),
        coalesce((SELECT jsonb_object_agg(i.app, i.known_good) FROM installed_versions i
                  WHERE i.device_id = d.id AND i.known_good IS NOT NULL), '{}'),
        coalesce((SELECT jsonb_agg(g.name ORDER BY g.name) FROM group_members m JOIN groups g ON g.id = m.group_id
                  WHERE m.device_id = d.id), '[]'),
        d.status, d.token_revoked_at
        """

    static func deviceJSON(_ row: PGRow) throws -> JSON {
        let (id, name, labels, attributes, created, updated, seen, version, installed, knownGood, groups, status, revoked) = try row.decode(
            String.self, String.self, JSONText.self, JSONText.self, Timestamp.self, Timestamp.self, Timestamp?.self,
            Int.self, JSONText.self, JSONText.self, JSONText.self, String.self, Timestamp?.self)
        return .fields([
            ("id", .string(id)), ("name", .string(name)), ("status", .string(status)),
            ("token_revoked_at", revoked.map { .string($0.rfc3339) } ?? .null),
            ("labels", .raw(labels.text)), ("attributes", .raw(attributes.text)),
            ("groups", .raw(groups.text)), ("installed", .raw(installed.text)),
            ("known_good", .raw(knownGood.text)),
            ("created_at", .string(created.rfc3339)), ("updated_at", .string(updated.rfc3339)),
            ("last_seen_at", seen.map { .string($0.rfc3339) } ?? .null), ("version", .int(version)),
        ])
    }

    static func deviceResponse(_ entry: DeviceAnswer) -> HTTPResponse {
        HTTPResponse(status: 200, headers: ["content-type": "application/json", "etag": entry.etag], body: entry.body)
    }

    /// `d.id = …` for an id, `d.name = …` for a name.
    static func deviceMatch(_ ident: String) -> SQL {
        isUUID(ident) ? "d.id = \(ident)::uuid" : "d.name = \(ident)"
    }

    func registerDeviceRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.createDevice, role: .admin) { request, _ in
            var body = try BodyReader(request)
            let name = body.validName("name", required: true)
            let labels = body.labels("labels") ?? [:]
            let attributes = body.attributes("attributes")
            let groups = body.stringArray("groups") ?? []
            // Pre-authorized: the device gets its token when it enrolls (Enrollment.swift), and
            // is accepted then even if the enrollment token asks for approval.
            let preauthorized = body.bool("preauthorize") ?? false
            try body.finish()
            let token = Secrets.newToken(prefix: "flt_d_")
            let labelsJSON = JSON.object(labels.mapValues(JSON.string)).serialized
            let row = try await db.withConnection { [name] conn -> PGRow in
                if !groups.isEmpty {
                    let missing = try conn.query("""
                        SELECT n.name FROM unnest(\(PGTextArray(groups))::text[]) WITH ORDINALITY AS n(name, i)
                        WHERE NOT EXISTS (SELECT 1 FROM groups g WHERE g.name = n.name) ORDER BY n.i
                        """).map { try $0.decode(String.self) }
                    if !missing.isEmpty {
                        throw APIError.invalid(missing.map { Problem(field: "groups", message: "no group named '\($0)'") })
                    }
                }
                // Insert, join the groups and read the result back in one round trip (one
                // implicit transaction): 1 round trip instead of BEGIN + 3 + COMMIT.
                return try conflictOnDuplicate("a device named '\(name!)' exists already") {
                    try conn.pipeline([
                        """
                        INSERT INTO devices (name, labels, attributes, token_hash, status)
                        VALUES (\(name!), \(JSONText(labelsJSON))::jsonb, \(JSONText(attributes ?? "{}"))::jsonb,
                                \(Bytea(Secrets.sha256(token.utf8))), \(preauthorized ? "preauthorized" : "accepted"))
                        """,
                        """
                        INSERT INTO group_members (group_id, device_id)
                        SELECT g.id, d.id FROM groups g, devices d
                        WHERE g.name = ANY(\(PGTextArray(groups))::text[]) AND d.name = \(name!)
                        """,
                        "SELECT \(unsafe: Self.deviceColumns) FROM devices d WHERE d.name = \(name!)",
                    ])[2][0]
                }
            }
            // A pre-authorized device's token is never shown: nobody holds it, enrolling replaces it.
            return .json(201, JSON.object(["device": try Self.deviceJSON(row), "device_token": preauthorized ? .null : .string(token)]).serialized)
        }

        route(&router, ManagementRoutes.listDevices, role: .viewer) { request, _ in
            var query = try QueryReader(request, allowed: ["group", "selector", "name_prefix", "last_seen_before",
                                                           "last_seen_after", "state", "status", "limit", "cursor"])
            var filters: [SQL] = []
            // `state`: devices whose latest execution (of any app) is in that state. A target of
            // a live deployment not handed out yet (see 0006) is the latest, and queued.
            if let state = query["state"] {
                if ExecutionState(rawValue: state) == nil {
                    query.problem("state", "must be one of \(ExecutionState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                filters.append("""
                    CASE WHEN EXISTS (SELECT 1 FROM deployment_targets t JOIN deployments dp ON dp.id = t.deployment_id
                                      WHERE t.device_id = d.id AND dp.canceled_at IS NULL) THEN 'queued'
                         ELSE (SELECT e.state FROM executions e WHERE e.device_id = d.id ORDER BY e.created_at DESC, e.id DESC LIMIT 1)
                    END = \(state)
                    """)
            }
            if let group = query["group"] {
                filters.append("""
                    EXISTS (SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id
                            WHERE m.device_id = d.id AND g.name = \(group))
                    """)
            }
            if let text = query["selector"], let selector = query.labelSelector(text) {
                filters.append("d.labels @> \(JSONText(JSON.object(selector.mapValues(JSON.string)).serialized))::jsonb")
            }
            if let status = query["status"] {
                if AdmissionState(rawValue: status) == nil {
                    query.problem("status", "must be one of \(AdmissionState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                filters.append("d.status = \(status)")
            }
            if let prefix = query["name_prefix"] { filters.append("starts_with(d.name, \(prefix))") }
            if let before = query.timestamp("last_seen_before") { filters.append("d.last_seen_at < \(before)") }
            if let after = query.timestamp("last_seen_after") { filters.append("d.last_seen_at > \(after)") }
            let limit = query.limit()
            if let cursor = query.cursor() { filters.append("d.name > \(cursor)") }
            try query.finish()
            let group = query["group"]
            let condition = filters.isEmpty ? SQL("true") : SQL.join(filters, separator: " AND ")
            let rows = try await db.withConnection { conn in
                if let group, try conn.query("SELECT 1 FROM groups WHERE name = \(group)").isEmpty {
                    throw APIError.invalid("group", "no group named '\(group)'")
                }
                return try conn.query("""
                    SELECT \(unsafe: Self.deviceColumns) FROM devices d WHERE \(condition)
                    ORDER BY d.name LIMIT \(limit + 1)
                    """)
            }
            let items = try rows.map(Self.deviceJSON)
            return try page(items, limit: limit) { try rows[$0].decode(String.self, column: "name") }
        }

        // Answered on the event loop when cached (see MemoryAnswers), else by a query.
        route(&router, ManagementRoutes.device, role: .viewer, fromMemory: { [deviceCache] request, _ in
            deviceCache.lookup(request.pathParameters["device"]!).map(Self.deviceResponse)
        }) { request, _ in
            let ident = request.pathParameters["device"]!
            // Here too: the event loop could not answer if the token was not cached.
            if let cached = deviceCache.lookup(ident) { return Self.deviceResponse(cached) }
            let generation = deviceCache.currentGeneration()
            let row = try await db.query("SELECT \(unsafe: Self.deviceColumns) FROM devices d WHERE \(Self.deviceMatch(ident))").first
            guard let row else { throw APIError.notFound("no device '\(ident)'") }
            let entry = DeviceAnswer(deviceID: try row.decode(String.self, column: "id"), body: Array(try Self.deviceJSON(row).serialized.utf8),
                                          etag: "\"\(try row.decode(Int.self, column: "version"))\"")
            deviceCache.store(ident, entry, generation: generation)
            return Self.deviceResponse(entry)
        }

        route(&router, ManagementRoutes.updateDevice, role: .admin) { request, _ in
            let ident = request.pathParameters["device"]!
            var body = try BodyReader(request)
            let labelPatch = body.labelPatch("labels")
            let attributes = body.attributes("attributes")
            try body.finish()
            let expected = try ifMatchVersion(request)
            let set = labelPatch.map { JSON.object($0.set.mapValues(JSON.string)).serialized }
            let remove = labelPatch.map { PGTextArray($0.remove) }
            let results = try await db.withConnection { conn in
                try conn.pipeline([
                    """
                    UPDATE devices d SET
                        labels = CASE WHEN \(set)::jsonb IS NULL THEN labels ELSE (labels || \(set)::jsonb) - \(remove)::text[] END,
                        attributes = coalesce(\(attributes)::jsonb, attributes),
                        updated_at = now(), version = version + 1
                    WHERE \(Self.deviceMatch(ident)) AND (\(expected)::bigint IS NULL OR version = \(expected)::bigint)
                    """,
                    "SELECT \(unsafe: Self.deviceColumns) FROM devices d WHERE \(Self.deviceMatch(ident))",
                ])
            }
            guard let row = results[1].first else { throw APIError.notFound("no device '\(ident)'") }
            guard results[0].affectedRows == 1 else {
                throw HTTPError(412, code: .versionMismatch,
                                message: "the device changed since version \(expected!); fetch it again and retry")
            }
            return .json(200, try Self.deviceJSON(row).serialized, headers: ["etag": "\"\(try row.decode(Int.self, column: "version"))\""])
        }

        route(&router, ManagementRoutes.deleteDevice, role: .admin) { request, _ in
            let ident = request.pathParameters["device"]!
            let deleted = try await db.transaction { conn in
                // Every replica forgets the device's token when this commits; this one at once, below.
                try conn.query("SELECT pg_notify(\(APIContext.changeChannel), 'device')")
                // Its targets in deployments go with it (no foreign key there; see 0006). The lock
                // waits out deployments being created, which may be recording this device.
                try conn.query("SELECT pg_advisory_xact_lock(\(Self.targetsLockSpace), 0)")
                try conn.query("""
                    DELETE FROM deployment_targets WHERE device_id IN (SELECT d.id FROM devices d WHERE \(Self.deviceMatch(ident)))
                    """)
                return try conn.query("DELETE FROM devices d WHERE \(Self.deviceMatch(ident))").affectedRows
            }
            deviceTokens.invalidateAll()
            guard deleted == 1 else { throw APIError.notFound("no device '\(ident)'") }
            return HTTPResponse(status: 204)
        }

        route(&router, ManagementRoutes.deviceGroups, role: .viewer) { request, _ in
            let ident = request.pathParameters["device"]!
            let results = try await db.withConnection { conn in
                try conn.pipeline([
                    "SELECT 1 FROM devices d WHERE \(Self.deviceMatch(ident))",
                    """
                    SELECT \(unsafe: Self.groupColumns) FROM groups g
                    WHERE g.id IN (SELECT m.group_id FROM group_members m JOIN devices d ON d.id = m.device_id
                                   WHERE \(Self.deviceMatch(ident)))
                    ORDER BY g.name
                    """,
                ])
            }
            guard !results[0].isEmpty else { throw APIError.notFound("no device '\(ident)'") }
            return .json(200, JSON.object(["items": .array(try results[1].map(Self.groupJSON))]).serialized)
        }
    }
}

/// `If-Match: "7"` → 7; absent → nil; anything else → 400.
func ifMatchVersion(_ request: HTTPRequest) throws -> Int? {
    guard let header = request.headers["if-match"] else { return nil }
    let text = header.hasPrefix("\"") && header.hasSuffix("\"") && header.count >= 2 ? String(header.dropFirst().dropLast()) : header
    guard let version = Int(text), version > 0 else {
        throw HTTPError(400, code: .badIfMatch, message: "If-Match must be a version ETag such as \"3\"")
    }
    return version
}
