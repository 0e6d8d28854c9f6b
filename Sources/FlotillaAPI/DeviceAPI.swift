// The device API (`/api/v1/agent/…`, openapi/device.yaml): what agents call with their
// device token. A device sees and touches only its own executions (404 for others').
//
//   GET  /agent/next?wait=N           the next instruction (a manifest) or 204 after up to N s
//                                     (nextInstruction, DeviceManifest.swift)
//   POST /agent/executions/{id}/reports   one report; the answer says continue, roll_back or stop
//                                     (applyReport, DeviceManifest.swift)
//   POST /agent/heartbeat             installed versions, attributes, "I just booted" (boot_id)
//                                     (recordHeartbeat, DeviceHeartbeat.swift)
//   GET  /agent/signing-key           the public key manifests are signed with (no token)
//   GET  /agent/artifacts/{sha256}    an artifact one of its executions names (DeviceArtifacts.swift)
//   POST /agent/enroll                with an enrollment token (Enrollment.swift)
//   POST /agent/token                 the device rotates its token (DeviceTokenRotation.swift)
//
// Only an accepted device with an unrevoked token gets through; with mTLS, only over a
// connection whose client certificate names it. The routes only read, call a use case and
// render; paths, report bodies, answers and the manifest are FlotillaWire's.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

struct DeviceCaller: Sendable {
    let id: String
    let name: String
    /// SHA-256 of the token it presented: signed manifests are bound to it.
    let tokenHash: [UInt8]
}

public struct DeviceAPI: APIAudience {
    let context: APIContext

    public init(context: APIContext) { self.context = context }

    public func register(on router: inout Router) {
        registerDeviceAPIRoutes(on: &router)
        registerDeviceTokenRoutes(on: &router)
        registerEnrollmentRoute(on: &router)
        registerArtifactRoute(on: &router)
    }

    /// Seconds between polls the server asks for when there is nothing to do, and the
    /// jitter agents add so a fleet rebooted together does not poll in lockstep.
    static let pollInterval = 30, pollJitter = 10
    /// What a stopping server asks instead: come back in a few seconds.
    static let drainingPollInterval = 5

    func deviceRoute(_ router: inout Router, _ endpoint: Endpoint, limit: RateLimit? = nil, limitKey: String = "",
                     _ handler: @escaping @Sendable (HTTPRequest, DeviceCaller) async throws -> HTTPResponse) {
        serve(&router, endpoint, authenticate: { [self] in try await authenticateDevice($0) },
              logName: { "device:\($0.id)" }, limit: limit ?? limits.device, limitKey: limitKey, handler)
    }

    /// The manifest with its `signed` copy (ManifestSigner.swift), which is what agents act on.
    func signed(_ manifest: Manifest, for device: DeviceCaller) throws -> HTTPResponse {
        let execution = manifest.json
        let signed = try signer.sign(execution, tokenHash: device.tokenHash, now: engine.clock.now())
        return .json(200, JSON.fields([("execution", execution), ("signed", signed)]).serialized)
    }

    /// The device behind the token; with mTLS on, also the device its certificate names.
    func authenticateDevice(_ request: HTTPRequest) async throws -> DeviceCaller {
        let caller = try await deviceForToken(request)
        if deviceCertificates { try checkCertificate(request, name: caller.name) }
        return caller
    }

    /// mTLS: the connection's verified client certificate must name this device (its CN),
    /// so a device token is useless without the device's private key. Checked per request,
    /// not cached: the certificate belongs to the connection, the cache to the token.
    func checkCertificate(_ request: HTTPRequest, name: String) throws {
        guard let presented = request.clientCertificate else {
            throw HTTPError(403, code: .clientCertificateRequired, message: "this server requires devices to present a client certificate (mTLS)")
        }
        guard presented == name else {
            throw HTTPError(403, code: .clientCertificateMismatch, message: "the client certificate is for '\(presented)', not for this device")
        }
    }

    private func deviceForToken(_ request: HTTPRequest) async throws -> DeviceCaller {
        let hash = try Self.bearerHash(request, prefix: "flt_d_", what: "the device token", example: "flt_d_…")
        if let cached = deviceTokens.lookup(hash) { return cached }
        let generation = deviceTokens.currentGeneration()
        // The current token, or the one before a rotation the device has not completed yet.
        guard let row = try await db.query("""
                SELECT id::text, name, CASE WHEN token_hash = \(Bytea(hash)) THEN token_hash ELSE previous_token_hash END AS matched,
                       token_hash = \(Bytea(hash)) AND previous_token_hash IS NOT NULL AS switching,
                       status, token_revoked_at IS NOT NULL AS revoked
                FROM devices WHERE token_hash = \(Bytea(hash)) OR previous_token_hash = \(Bytea(hash))
                """).first,
              Secrets.constantTimeEquals(try row.decode(Bytea.self, column: "matched").bytes, hash) else {
            throw Self.invalidToken(.invalidToken, "the device token is unknown (was it rotated, or the device deleted?)")
        }
        if try row.decode(Bool.self, column: "switching") {
            try await completeRotation(device: try row.decode(String.self, column: "id"), hash: hash)
        }
        // Only an accepted device with a live token gets through, and only that is cached:
        // any change of these flushes the cache everywhere (DeviceAccess.swift).
        if try row.decode(Bool.self, column: "revoked") {
            throw Self.invalidToken(.tokenRevoked, "this device token was revoked; an operator must rotate it")
        }
        switch AdmissionState(rawValue: try row.decode(String.self, column: "status")) {
        case .accepted?:
            break
        case .pending?:
            throw HTTPError(403, code: .devicePending, message: "the device is waiting for an operator to accept it",
                            headers: ["retry-after": "60"])
        case .rejected?, .preauthorized?, nil:
            throw HTTPError(403, code: .deviceRejected, message: "the device was rejected by an operator")
        }
        let caller = DeviceCaller(id: try row.decode(String.self, column: "id"), name: try row.decode(String.self, column: "name"), tokenHash: hash)
        deviceTokens.store(hash, caller, generation: generation)
        return caller
    }

    func registerDeviceAPIRoutes(on router: inout Router) {
        // The key manifests are signed with. Public, like any public key: agents fetch it on
        // first start when none is configured, and pin it (trust on first use).
        let key = HTTPResponse.json(200, signer.publicKeyJSON.serialized)
        router.add(DeviceRoutes.signingKey.method, DeviceRoutes.signingKey.pattern) { _ in key }

        deviceRoute(&router, DeviceRoutes.next) { request, device in
            var query = try QueryReader(request, allowed: ["wait"])
            let wait = query.waitSeconds(max: 300)
            try query.finish()
            if let manifest = try await nextInstruction(for: device.id, waiting: wait) { return try signed(manifest, for: device) }
            // A stopping server asks for the next poll soon (a restart or another replica takes it).
            let interval = isDraining ? Self.drainingPollInterval : Self.pollInterval
            return HTTPResponse(status: 204, headers: ["x-poll-interval": "\(interval)", "x-poll-jitter": "\(Self.pollJitter)"])
        }

        deviceRoute(&router, DeviceRoutes.report) { request, device in
            let id = request.pathParameters["id"]!
            let (report, stored) = try Self.readReport(request)
            let (answer, refusal) = try await applyReport(report, stored: stored, to: id, from: device.id)
            if let refusal { throw HTTPError(409, code: .invalidTransition, message: refusal, details: answer.json.serialized) }
            return .json(200, answer.json.serialized)
        }

        deviceRoute(&router, DeviceRoutes.heartbeat) { request, device in
            try await recordHeartbeat(try Self.readHeartbeat(request), from: device.id)
            return .json(200, JSON.fields([("poll_interval", .int(Self.pollInterval)), ("poll_jitter", .int(Self.pollJitter))]).serialized)
        }
    }
}
