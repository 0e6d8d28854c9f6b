// A device rotating its own token (`flotilla-agent rotate-token`, SECURITY.md):
//
//   POST /api/v1/agent/token   → a new device token, shown once
//
// The token the device presented stays valid as `previous_token_hash` (migration 0009)
// until the device first uses the new one; that first request clears it and flushes every
// replica's token cache, so from then on only the new token works. If the answer is lost
// (the link dropped, the agent died before saving it), the device still holds a valid
// token and simply rotates again: the lost one is replaced, never activated.
// (An operator's `rotate-token` is different: the old token stops at once.)

import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension DeviceAPI {
    func registerDeviceTokenRoutes(on router: inout Router) {
        // Audited (under the device's id), unlike the rest of the device API: a credential changed.
        serve(&router, DeviceRoutes.rotateToken, authenticate: { [self] (request: HTTPRequest) async throws -> DeviceCaller in
            try await authenticateDevice(request)
        }, logName: { (device: DeviceCaller) in device.id }, limit: limits.device, audited: true) { [self] (request: HTTPRequest, device: DeviceCaller) async throws -> HTTPResponse in
            if !request.body.isEmpty { try BodyReader(request).finish() }  // nothing to say; `{}` is fine too
            let token = Secrets.newToken(prefix: "flt_d_")
            let presented = Bytea(device.tokenHash)
            let rotated = try await db.query("""
                UPDATE devices SET token_hash = \(Bytea(Secrets.sha256(token.utf8))), previous_token_hash = \(presented),
                    updated_at = now(), version = version + 1
                WHERE id = \(device.id)::uuid AND (token_hash = \(presented) OR previous_token_hash = \(presented))
                  AND token_revoked_at IS NULL
                """).affectedRows
            guard rotated == 1 else {
                throw HTTPError(409, code: .conflict, message: "the token changed meanwhile (an operator rotated or revoked it)")
            }
            return .json(200, JSON.object(["device_token": .string(token)]).serialized)
        }
    }

    /// The device used its new token for the first time: the previous one stops working,
    /// here and (through NOTIFY) on every replica.
    func completeRotation(device: String, hash: [UInt8]) async throws {
        try await db.transaction { conn in
            let cleared = try conn.query("""
                UPDATE devices SET previous_token_hash = NULL
                WHERE id = \(device)::uuid AND token_hash = \(Bytea(hash)) AND previous_token_hash IS NOT NULL
                """).affectedRows
            if cleared == 1 { try conn.query("SELECT pg_notify(\(APIContext.changeChannel), 'device')") }
        }
        deviceTokens.invalidateAll()
    }
}
