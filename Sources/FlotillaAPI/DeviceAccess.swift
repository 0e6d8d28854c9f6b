// Operator control over a device's access (SECURITY.md):
//
//   POST /api/v1/devices/{device}/accept        pending or rejected → accepted
//   POST /api/v1/devices/{device}/reject        pending or accepted → rejected
//   POST /api/v1/devices/{device}/revoke-token  the device token is refused from now on
//   POST /api/v1/devices/{device}/rotate-token  a new device token (shown once); the old
//                                               one is refused from now on
//
// Each is an event, not a state write: accept and reject go through DeviceAdmission
// (FlotillaCore) and a conditional UPDATE on the device's version. Each change flushes
// the device-token caches of every replica (NOTIFY, as deleting a device does), so the
// device's very next request is judged by the new state.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension ManagementAPI {
    func registerDeviceAccessRoutes(on router: inout Router) {
        for (endpoint, event) in [(ManagementRoutes.acceptDevice, AdmissionEvent.accepted), (ManagementRoutes.rejectDevice, .rejected)] {
            route(&router, endpoint, role: .admin) { request, _ in
                let row = try await admit(request.pathParameters["device"]!, event)
                return .json(200, try Self.deviceJSON(row).serialized)
            }
        }

        route(&router, ManagementRoutes.revokeDeviceToken, role: .admin) { request, _ in
            let ident = request.pathParameters["device"]!
            let row = try await changeAccess(ident, """
                UPDATE devices d SET token_revoked_at = coalesce(token_revoked_at, now()), previous_token_hash = NULL,
                    updated_at = now(), version = version + 1
                WHERE \(Self.deviceMatch(ident)) RETURNING d.id
                """)
            return .json(200, try Self.deviceJSON(row).serialized)
        }

        route(&router, ManagementRoutes.rotateDeviceToken, role: .admin) { request, _ in
            let ident = request.pathParameters["device"]!
            let token = Secrets.newToken(prefix: "flt_d_")
            // A pre-authorized device has no token to rotate: it gets one by enrolling.
            let row = try await changeAccess(ident, """
                UPDATE devices d SET token_hash = \(Bytea(Secrets.sha256(token.utf8))), token_revoked_at = NULL,
                    previous_token_hash = NULL, updated_at = now(), version = version + 1
                WHERE \(Self.deviceMatch(ident)) AND status <> 'preauthorized' RETURNING d.id
                """, refusal: "the device has not enrolled yet, so it has no token to rotate")
            return .json(200, JSON.object(["device": try Self.deviceJSON(row), "device_token": .string(token)]).serialized)
        }
    }

    /// Runs `update` (which returns the device's id) with a replica-wide token-cache flush,
    /// and reads the device back. No row updated: 404 when there is no such device, else 409.
    private func changeAccess(_ ident: String, _ update: SQL, refusal: String = "") async throws -> PGRow {
        let row = try await db.transaction { conn -> PGRow? in
            guard let changed = try conn.query(update).first else {
                if try conn.query("SELECT 1 FROM devices d WHERE \(Self.deviceMatch(ident))").isEmpty { return nil }
                throw APIError.conflict(refusal)
            }
            try conn.query("SELECT pg_notify(\(APIContext.changeChannel), 'device')")
            return try conn.query("SELECT \(unsafe: Self.deviceColumns) FROM devices d WHERE d.id = \(changed.decode(String.self))")[0]
        }
        deviceTokens.invalidateAll()
        guard let row else { throw APIError.notFound("no device '\(ident)'") }
        return row
    }

    /// Accept or reject: read the state, let DeviceAdmission decide, write only if the
    /// device's version is still the one read (a concurrent change makes us decide again).
    private func admit(_ ident: String, _ event: AdmissionEvent) async throws -> PGRow {
        for _ in 0..<5 {
            guard let current = try await db.query("SELECT d.id::text, d.status, d.version FROM devices d WHERE \(Self.deviceMatch(ident))").first else {
                throw APIError.notFound("no device '\(ident)'")
            }
            let (id, status, version) = try current.decode(String.self, String.self, Int.self)
            var admission = DeviceAdmission(AdmissionState(rawValue: status) ?? .accepted)
            switch admission.happened(event) {
            case .rejected(let reason):
                throw APIError.conflict(reason)
            case .unchanged:
                return try await db.query("SELECT \(unsafe: Self.deviceColumns) FROM devices d WHERE d.id = \(id)::uuid")[0]
            case .moved(let state):
                do {
                    return try await changeAccess(ident, """
                        UPDATE devices d SET status = \(state.rawValue), updated_at = now(), version = version + 1
                        WHERE d.id = \(id)::uuid AND d.version = \(version) RETURNING d.id
                        """)
                } catch let error as HTTPError where error.status == 409 {
                    continue  // the version moved on: decide again on what it is now
                }
            }
        }
        throw APIError.conflict("the device kept changing; retry")
    }
}
