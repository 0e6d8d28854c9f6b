// Enrollment: devices registering themselves with an enrollment token (SECURITY.md; the
// tokens themselves are made and revoked by admins, EnrollmentTokens.swift).
//
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
import FlotillaWire

struct EnrollmentCaller: Sendable {
    let id: String
}

extension DeviceAPI {
    /// Who is enrolling: a known enrollment token that can still be used. The use itself is
    /// taken in `enroll`, conditionally, so this check is advice and that one is the rule.
    func authenticateEnrollment(_ request: HTTPRequest) async throws -> EnrollmentCaller {
        let hash = try Self.bearerHash(request, prefix: "flt_e_", what: "an enrollment token", example: "flt_e_…")
        let row = try await db.query("""
            SELECT id::text, secret_hash, revoked_at IS NOT NULL, expires_at <= \(Timestamp(engine.clock.now())), uses >= max_uses
            FROM enrollment_tokens WHERE secret_hash = \(Bytea(hash))
            """).first
        guard let row, Secrets.constantTimeEquals(try row.decode(Bytea.self, column: "secret_hash").bytes, hash) else {
            throw Self.invalidToken(.invalidToken, "the enrollment token is unknown")
        }
        let (id, _, revoked, expired, exhausted) = try row.decode(String.self, Bytea.self, Bool.self, Bool.self, Bool.self)
        if revoked { throw Self.invalidToken(.enrollmentTokenRevoked, "the enrollment token was revoked") }
        if expired { throw Self.invalidToken(.enrollmentTokenExpired, "the enrollment token has expired") }
        if exhausted {
            throw HTTPError(403, code: .enrollmentTokenExhausted, message: "the enrollment token has been used as often as it may be")
        }
        return EnrollmentCaller(id: id)
    }

    func registerEnrollmentRoute(on router: inout Router) {
        serve(&router, DeviceRoutes.enroll, authenticate: { [self] (request: HTTPRequest) async throws -> EnrollmentCaller in
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
            let device = try ManagementAPI.deviceJSON(row)
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
                throw HTTPError(403, code: .enrollmentTokenExhausted, message: "the enrollment token has no use left (or was revoked or expired just now)")
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
            return try conn.query("SELECT \(unsafe: ManagementAPI.deviceColumns) FROM devices d WHERE d.id = \(device)::uuid")[0]
        }
    }
}
