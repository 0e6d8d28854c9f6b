// Enrollment tokens: what an admin hands installers so devices can register themselves
// (the device side, POST /api/v1/agent/enroll, is Enrollment.swift).
//
//   POST /api/v1/enrollment-tokens             admin: make one (group, expiry, max uses,
//                                              approval); the secret is shown once
//   GET  /api/v1/enrollment-tokens             admin: list (never secrets)
//   POST /api/v1/enrollment-tokens/{id}/revoke admin: refused from the next use on

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension ManagementAPI {
    static let enrollmentColumns = """
        e.id::text, e.name, g.name, e.expires_at, e.max_uses, e.uses, e.require_approval, e.created_at, e.revoked_at
        """

    static func enrollmentJSON(_ row: PGRow) throws -> JSON {
        let (id, name, group, expires, maxUses, uses, approval, created, revoked) = try row.decode(
            String.self, String.self, String.self, Timestamp.self, Int.self, Int.self, Bool.self, Timestamp.self, Timestamp?.self)
        return .fields([
            ("id", .string(id)), ("name", .string(name)), ("group", .string(group)), ("expires_at", .string(expires.rfc3339)),
            ("max_uses", .int(maxUses)), ("uses", .int(uses)), ("require_approval", .bool(approval)),
            ("created_at", .string(created.rfc3339)), ("revoked_at", revoked.map { .string($0.rfc3339) } ?? .null),
        ])
    }

    func registerEnrollmentTokenRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.createEnrollmentToken, role: .admin) { request, _ in
            var body = try BodyReader(request)
            let name = body.string("name", required: true)
            if let name, !(1...100).contains(name.count) { body.problem("name", "must be 1 to 100 characters") }
            let group = body.string("group", required: true)
            let expiresIn = body.int("expires_in", range: 60...31_536_000) ?? 7 * 86_400
            let maxUses = body.int("max_uses", range: 1...1_000_000) ?? 1
            let approval = body.bool("require_approval") ?? false
            try body.finish()
            let secret = Secrets.newToken(prefix: "flt_e_")
            let expires = Timestamp(engine.clock.now().adding(seconds: expiresIn))
            let row = try await db.withConnection { [name, group] conn in
                let inserted = try conn.query("""
                    WITH made AS (
                        INSERT INTO enrollment_tokens (name, group_id, secret_hash, expires_at, max_uses, require_approval)
                        SELECT \(name!), g.id, \(Bytea(Secrets.sha256(secret.utf8))), \(expires), \(maxUses), \(approval)
                        FROM groups g WHERE g.name = \(group!)
                        RETURNING *)
                    SELECT \(unsafe: Self.enrollmentColumns) FROM made e JOIN groups g ON g.id = e.group_id
                    """)
                guard let row = inserted.first else { throw APIError.invalid("group", "no group named '\(group!)'") }
                return row
            }
            return .json(201, JSON.object(["enrollment_token": try Self.enrollmentJSON(row), "secret": .string(secret)]).serialized)
        }

        route(&router, ManagementRoutes.listEnrollmentTokens, role: .admin) { request, _ in
            try QueryReader(request, allowed: []).finish()
            let rows = try await db.query("""
                SELECT \(unsafe: Self.enrollmentColumns) FROM enrollment_tokens e JOIN groups g ON g.id = e.group_id
                ORDER BY e.created_at, e.id
                """)
            return .json(200, JSON.object(["items": .array(try rows.map(Self.enrollmentJSON))]).serialized)
        }

        route(&router, ManagementRoutes.revokeEnrollmentToken, role: .admin) { request, _ in
            let id = request.pathParameters["id"]!
            guard isUUID(id) else { throw APIError.notFound("no enrollment token with id \(id)") }
            let row = try await db.query("""
                WITH revoked AS (
                    UPDATE enrollment_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = \(id)::uuid RETURNING *)
                SELECT \(unsafe: Self.enrollmentColumns) FROM revoked e JOIN groups g ON g.id = e.group_id
                """).first
            guard let row else { throw APIError.notFound("no enrollment token with id \(id)") }
            return .json(200, try Self.enrollmentJSON(row).serialized)
        }
    }
}
