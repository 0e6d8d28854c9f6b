// The device API (`/api/v1/agent/…`, openapi/device.yaml): what agents call with their
// device token. A device sees and touches only its own executions (404 for others').
//
//   GET  /agent/next?wait=N           the next instruction (a manifest) or 204 after up to N s
//   POST /agent/executions/{id}/reports   one report; the answer says continue, roll_back or stop
//   POST /agent/heartbeat             installed versions, attributes, "I just booted" (boot_id)
//   GET  /agent/signing-key           the public key manifests are signed with (no token)
//   POST /agent/enroll                with an enrollment token (Enrollment.swift)
//   POST /agent/token                 the device rotates its token (DeviceTokenRotation.swift)
//
// Only an accepted device with an unrevoked token gets through; with mTLS, only over a
// connection whose client certificate names it.

import FlotillaCore
import FlotillaStore
import FlotillaTransport

struct DeviceCaller: Sendable {
    let id: String
    let name: String
    /// SHA-256 of the token it presented: signed manifests are bound to it.
    let tokenHash: [UInt8]
}

extension ManagementAPI {
    /// Seconds between polls the server asks for when there is nothing to do, and the
    /// jitter agents add so a fleet rebooted together does not poll in lockstep.
    static let pollInterval = 30, pollJitter = 10

    func deviceRoute(_ router: inout Router, _ method: String, _ pattern: String,
                     _ handler: @escaping @Sendable (HTTPRequest, DeviceCaller) async throws -> HTTPResponse) {
        serve(&router, method, pattern, authenticate: { [self] in try await authenticateDevice($0) },
              logName: { "device:\($0.id)" }, limit: limits.device, handler)
    }

    /// `nextManifest`, except that a device known to be idle is answered from memory.
    func pendingManifest(_ device: String) async throws -> JSON? {
        let key = Array(device.utf8)
        if idleDevices.lookup(key) != nil { return nil }
        let generation = idleDevices.currentGeneration()
        let manifest = try await nextManifest(device)
        if manifest == nil { idleDevices.store(key, true, generation: generation) }
        return manifest
    }

    /// The manifest with its `signed` copy (ManifestSigner.swift), which is what agents act on.
    func signed(_ manifest: JSON, for device: DeviceCaller) throws -> HTTPResponse {
        var fields = manifest.objectValue ?? [:]
        fields["signed"] = try signer.sign(manifest.objectValue?["execution"] ?? .null, tokenHash: device.tokenHash, now: engine.clock.now())
        return .json(200, JSON.object(fields).serialized)
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
            throw HTTPError(403, code: "client_certificate_required", message: "this server requires devices to present a client certificate (mTLS)")
        }
        guard presented == name else {
            throw HTTPError(403, code: "client_certificate_mismatch", message: "the client certificate is for '\(presented)', not for this device")
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
            throw Self.invalidToken("invalid_token", "the device token is unknown (was it rotated, or the device deleted?)")
        }
        if try row.decode(Bool.self, column: "switching") {
            try await completeRotation(device: try row.decode(String.self, column: "id"), hash: hash)
        }
        // Only an accepted device with a live token gets through, and only that is cached:
        // any change of these flushes the cache everywhere (DeviceAccess.swift).
        if try row.decode(Bool.self, column: "revoked") {
            throw Self.invalidToken("token_revoked", "this device token was revoked; an operator must rotate it")
        }
        switch AdmissionState(rawValue: try row.decode(String.self, column: "status")) {
        case .accepted?:
            break
        case .pending?:
            throw HTTPError(403, code: "device_pending", message: "the device is waiting for an operator to accept it",
                            headers: ["retry-after": "60"])
        case .rejected?, .preauthorized?, nil:
            throw HTTPError(403, code: "device_rejected", message: "the device was rejected by an operator")
        }
        let caller = DeviceCaller(id: try row.decode(String.self, column: "id"), name: try row.decode(String.self, column: "name"), tokenHash: hash)
        deviceTokens.store(hash, caller, generation: generation)
        return caller
    }

    func registerDeviceAPIRoutes(on router: inout Router) {
        // The key manifests are signed with. Public, like any public key: agents fetch it on
        // first start when none is configured, and pin it (trust on first use).
        let key = HTTPResponse.json(200, signer.publicKeyJSON.serialized)
        router.get("/api/v1/agent/signing-key") { _ in key }

        deviceRoute(&router, "GET", "/api/v1/agent/next") { request, device in
            var query = try QueryReader(request, allowed: ["wait"])
            let wait = query.waitSeconds(max: 300)
            try query.finish()
            // Register before looking, so a deployment created in between still wakes us.
            let ticket = wait > 0 ? engine.waiters.register(device.id) : nil
            defer { ticket.map(engine.waiters.finish) }
            if let manifest = try await pendingManifest(device.id) { return try signed(manifest, for: device) }
            if let ticket {
                await engine.waiters.wait(ticket, seconds: wait)
                if let manifest = try await pendingManifest(device.id) { return try signed(manifest, for: device) }
            }
            return HTTPResponse(status: 204, headers: ["x-poll-interval": "\(Self.pollInterval)", "x-poll-jitter": "\(Self.pollJitter)"])
        }

        deviceRoute(&router, "POST", "/api/v1/agent/executions/{id}/reports") { request, device in
            let id = request.pathParameters["id"]!
            let (report, stored) = try Self.readReport(request)
            guard let (loaded, decision) = try await engine.apply(id, device: device.id, report: stored, { machine, now in
                machine.agentReported(report, at: now)
            }) else { throw APIError.notFound("no execution '\(id)' for this device") }
            let m = loaded.machine
            let answer: [(String, JSON)] = [
                ("execution_id", .string(id)), ("state", .string(m.state.rawValue)), ("step", .int(m.step)),
                ("directive", .string(m.state.directive.rawValue)),
                ("deadline_at", m.deadline.map { .string(Timestamp($0).rfc3339) } ?? .null),
            ]
            switch decision {
            case .accepted: return .json(200, JSON.fields(answer + [("result", .string("accepted"))]).serialized)
            case .duplicate: return .json(200, JSON.fields(answer + [("result", .string("duplicate"))]).serialized)
            case .stale: return .json(200, JSON.fields(answer + [("result", .string("stale"))]).serialized)
            case .rejected(let reason):
                throw HTTPError(409, code: "invalid_transition", message: reason, details: JSON.fields(answer).serialized)
            }
        }

        deviceRoute(&router, "POST", "/api/v1/agent/heartbeat") { request, device in
            var body = try BodyReader(request)
            let installed = body.object("installed") ?? [:]
            let attributes = body.attributes("attributes")
            let booted = body.value("booted", required: false)
            let bootID = body.string("boot_id")
            try body.finish()
            var versions: [String: String] = [:]
            var problems: [Problem] = []
            for (app, value) in installed {
                if let text = value.stringValue, !text.isEmpty, text.utf8.count <= 128, Rules.isName(app) { versions[app] = text } else {
                    problems.append(Problem(field: "installed.\(app)", message: "app names are names; versions are strings of 1 to 128 bytes"))
                }
            }
            if let booted, booted != .bool(true) && booted != .bool(false) { problems.append(Problem(field: "booted", message: "must be true or false")) }
            if let bootID, !(1...64).contains(bootID.utf8.count) { problems.append(Problem(field: "boot_id", message: "must be 1 to 64 bytes")) }
            if !problems.isEmpty { throw APIError.invalid(problems) }
            let now = Timestamp(engine.clock.now())
            let apps = versions.keys.sorted()
            let appVersions = apps.map { versions[$0]! }
            let reported = versions
            // A boot is news only once: with a boot_id, a retried heartbeat about the same boot
            // changes nothing (the conditional write below updates no row).
            let newBootID = booted == .bool(true) ? bootID : nil
            // Only what changed is written: each write to a device tells every replica's device
            // cache (migrations/0010), and a notifying commit is a third dearer. Last seen keeps
            // the 10 s grain the report path gives it.
            let results = try await db.withConnection { conn in
                try conn.pipeline([
                    """
                    UPDATE devices SET last_seen_at = \(now)::timestamptz, attributes = coalesce(\(attributes)::jsonb, attributes)
                    WHERE id = \(device.id)::uuid
                      AND (last_seen_at IS NULL OR last_seen_at < \(now)::timestamptz - interval '10 seconds'
                           OR attributes IS DISTINCT FROM coalesce(\(attributes)::jsonb, attributes))
                    """,
                    """
                    UPDATE devices SET last_boot_id = \(newBootID) WHERE id = \(device.id)::uuid
                      AND \(newBootID)::text IS NOT NULL AND last_boot_id IS DISTINCT FROM \(newBootID)::text
                    """,
                    """
                    INSERT INTO installed_versions (device_id, app, version, updated_at)
                    SELECT \(device.id)::uuid, a, v, \(now)::timestamptz
                    FROM unnest(\(PGTextArray(apps))::text[], \(PGTextArray(appVersions))::text[]) AS x(a, v)
                    ON CONFLICT (device_id, app) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at
                    WHERE installed_versions.version IS DISTINCT FROM excluded.version
                    """,
                    """
                    SELECT id::text, app FROM executions WHERE device_id = \(device.id)::uuid
                    AND state IN ('downloading', 'installing', 'rebooting', 'verifying', 'rolling_back')
                    """,
                ])
            }
            let inFlight = try results[3].map { try $0.decode(String.self, String.self) }
            let newBoot = bootID == nil || results[1].affectedRows == 1
            // "I just booted": each started execution learns which version the device came back with.
            if booted == .bool(true) && newBoot {
                // An app the heartbeat does not mention tells us nothing: leave its execution alone.
                for (execution, app) in inFlight {
                    guard let version = reported[app] else { continue }
                    _ = try await engine.apply(execution, device: device.id) { machine, now in machine.deviceBooted(version: version, at: now) }
                }
            }
            return .json(200, JSON.fields([("poll_interval", .int(Self.pollInterval)), ("poll_jitter", .int(Self.pollJitter))]).serialized)
        }
    }
}
