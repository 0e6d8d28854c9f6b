// Enrollment: devices registering themselves with an enrollment token (SECURITY.md).
//
//   POST /api/v1/enrollment-tokens             admin: make one (group, expiry, max uses,
//                                              approval); the secret is shown once
//   GET  /api/v1/enrollment-tokens             admin: list (never secrets)
//   POST /api/v1/enrollment-tokens/{id}/revoke admin: refused from the next use on
//   POST /api/v1/agent/enroll                  a device, with `Bearer flt_e_…`: gets its own
//                                              device token and the manifest-signing key
//
// A use is taken by a conditional UPDATE inside the transaction that creates the device,
// so a failed enrollment (a duplicate name, say) consumes nothing, and two devices racing
// for the last use cannot both get it. Where the device starts (accepted or pending) is
// DeviceAdmission's decision (FlotillaCore); a pre-authorized name is claimed and accepted.

import FlotillaCore
import FlotillaStore
import FlotillaTransport

struct EnrollmentCaller: Sendable {
    let id: String
}

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

    /// Who is enrolling: a known enrollment token that can still be used. The use itself is
    /// taken in `enroll`, conditionally, so this check is advice and that one is the rule.
    func authenticateEnrollment(_ request: HTTPRequest) async throws -> EnrollmentCaller {
        let hash = try Self.bearerHash(request, prefix: "flt_e_", what: "an enrollment token", example: "flt_e_…")
        let row = try await db.query("""
            SELECT id::text, secret_hash, revoked_at IS NOT NULL, expires_at <= \(Timestamp(engine.clock.now())), uses >= max_uses
            FROM enrollment_tokens WHERE secret_hash = \(Bytea(hash))
            """).first
        guard let row, Secrets.constantTimeEquals(try row.decode(Bytea.self, column: "secret_hash").bytes, hash) else {
            throw Self.invalidToken("invalid_token", "the enrollment token is unknown")
        }
        let (id, _, revoked, expired, exhausted) = try row.decode(String.self, Bytea.self, Bool.self, Bool.self, Bool.self)
        if revoked { throw Self.invalidToken("enrollment_token_revoked", "the enrollment token was revoked") }
        if expired { throw Self.invalidToken("enrollment_token_expired", "the enrollment token has expired") }
        if exhausted {
            throw HTTPError(403, code: "enrollment_token_exhausted", message: "the enrollment token has been used as often as it may be")
        }
        return EnrollmentCaller(id: id)
    }

    func registerEnrollmentRoutes(on router: inout Router) {
        route(&router, "POST", "/api/v1/enrollment-tokens", role: .admin) { request, _ in
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

        route(&router, "GET", "/api/v1/enrollment-tokens", role: .admin) { request, _ in
            try QueryReader(request, allowed: []).finish()
            let rows = try await db.query("""
                SELECT \(unsafe: Self.enrollmentColumns) FROM enrollment_tokens e JOIN groups g ON g.id = e.group_id
                ORDER BY e.created_at, e.id
                """)
            return .json(200, JSON.object(["items": .array(try rows.map(Self.enrollmentJSON))]).serialized)
        }

        route(&router, "POST", "/api/v1/enrollment-tokens/{id}/revoke", role: .admin) { request, _ in
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

        serve(&router, "POST", "/api/v1/agent/enroll", authenticate: { [self] (request: HTTPRequest) async throws -> EnrollmentCaller in
                  try await authenticateEnrollment(request)
              },
              logName: { (caller: EnrollmentCaller) in caller.id }, limit: limits.enrollment, audited: true) { [self] (request: HTTPRequest, caller: EnrollmentCaller) async throws -> HTTPResponse in
            var body = try BodyReader(request)
            let name = body.validName("name", required: true)
            let labels = body.labels("labels") ?? [:]
            let attributes = body.attributes("attributes")
            try body.finish()
            // With mTLS, a device enrolls under the name its (factory) certificate carries.
            if deviceCertificates { try checkCertificate(request, name: name!) }
            let token = Secrets.newToken(prefix: "flt_d_")
            let row = try await enroll(name: name!, labels: labels, attributes: attributes, token: token, with: caller)
            let device = try Self.deviceJSON(row)
            return .json(201, JSON.fields([
                ("device", device), ("status", .string(try row.decode(String.self, column: "status"))), ("device_token", .string(token)),
                ("signing_key", signer.publicKeyJSON),
            ]).serialized)
        }
    }

    /// One enrollment, all or nothing: take a use, create (or claim the pre-authorized)
    /// device, put it in the token's group.
    private func enroll(name: String, labels: [String: String], attributes: String?, token: String,
                        with caller: EnrollmentCaller) async throws -> PGRow {
        let hash = Bytea(Secrets.sha256(token.utf8))
        let labelsJSON = JSONText(JSON.object(labels.mapValues(JSON.string)).serialized)
        let now = Timestamp(engine.clock.now())
        return try await db.transaction { conn in
            guard let use = try conn.query("""
                UPDATE enrollment_tokens SET uses = uses + 1
                WHERE id = \(caller.id)::uuid AND revoked_at IS NULL AND expires_at > \(now) AND uses < max_uses
                RETURNING group_id::text, require_approval
                """).first else {
                throw HTTPError(403, code: "enrollment_token_exhausted", message: "the enrollment token has no use left (or was revoked or expired just now)")
            }
            let (group, needsApproval) = try use.decode(String.self, Bool.self)
            let existing = try conn.query("SELECT id::text, status, version FROM devices WHERE name = \(name)").first
            let device: String
            if let existing {
                let (id, status, version) = try existing.decode(String.self, String.self, Int.self)
                var admission = DeviceAdmission(AdmissionState(rawValue: status) ?? .accepted)
                switch admission.happened(.enrolled(needsApproval: needsApproval)) {
                case .rejected, .unchanged:
                    throw APIError.conflict("a device named '\(name)' exists already")
                case .moved(let state):
                    let claimed = try conn.query("""
                        UPDATE devices SET status = \(state.rawValue), token_hash = \(hash), token_revoked_at = NULL,
                            labels = labels || \(labelsJSON)::jsonb, attributes = attributes || coalesce(\(attributes)::jsonb, '{}'),
                            enrolled_with = \(caller.id)::uuid, updated_at = now(), version = version + 1
                        WHERE id = \(id)::uuid AND version = \(version)
                        """).affectedRows
                    guard claimed == 1 else { throw APIError.conflict("the device '\(name)' changed while enrolling; retry") }
                }
                device = id
            } else {
                let state = DeviceAdmission.firstEnrollment(needsApproval: needsApproval)
                device = try conflictOnDuplicate("a device named '\(name)' exists already") {
                    try conn.query("""
                        INSERT INTO devices (name, labels, attributes, token_hash, status, enrolled_with)
                        VALUES (\(name), \(labelsJSON)::jsonb, coalesce(\(attributes)::jsonb, '{}'), \(hash), \(state.rawValue), \(caller.id)::uuid)
                        RETURNING id::text
                        """)[0].decode(String.self)
                }
            }
            try conn.query("""
                INSERT INTO group_members (group_id, device_id) VALUES (\(group)::uuid, \(device)::uuid) ON CONFLICT DO NOTHING
                """)
            return try conn.query("SELECT \(unsafe: Self.deviceColumns) FROM devices d WHERE d.id = \(device)::uuid")[0]
        }
    }
}
