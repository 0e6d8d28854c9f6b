// The management API (`/api/v1/…`): what pipelines, operators and the CLI call.
//
// Every route goes through `serve(…)` (management routes through `route(…)`, device
// routes through `deviceRoute(…)`), the one place that
//   1. gives the request an id (the client's `X-Request-ID` when it is sane),
//   2. authenticates the bearer token (401; refusals are rate-limited per address) and,
//      for management routes, checks its role (403),
//   3. applies the caller's rate limit (429 + Retry-After),
//   4. runs the handler and turns database trouble into 503 + Retry-After,
//   5. appends management mutations to the audit log,
//   6. logs one structured line: request id, method, path, status, duration, token id.
// Handlers see an authenticated `Caller` and a pool; they know nothing about sockets.

import FlotillaCore
import FlotillaStore
import Synchronization
import FlotillaTransport
import Logging

public struct ManagementAPI: Sendable {
    let db: PGPool
    let logger: Logger
    let tokens = TokenCache<Caller>()
    /// Device tokens: a poll or report then costs no authentication query. Flushed like
    /// `tokens` (same channel) when a device is deleted.
    let deviceTokens = TokenCache<DeviceCaller>()
    /// Devices whose last poll found nothing to do: the next idle poll is answered without a
    /// query. Work only ever appears through a new deployment, which flushes it (here at once,
    /// elsewhere through NOTIFY), so a cached "nothing" is never older than that.
    let idleDevices = TokenCache<Bool>(ttlSeconds: 30, capacity: 1_000_000)
    /// Answers of `GET /api/v1/devices/{device}` (see DeviceCache for why they stay true).
    let deviceCache = DeviceCache.devices()
    let engine: ExecutionEngine
    let artifacts: ArtifactStore
    public let signer: ManifestSigner
    /// Every management route and the role it needs, as registered (the role matrix test
    /// and the OpenAPI file's `x-role` are checked against it).
    let routeRoles = RouteRoles()
    let limits: RateLimits
    /// mTLS for devices: the device API and enrollment need a verified client certificate
    /// whose CN is the device's name (DeviceAPI.swift).
    let deviceCertificates: Bool
    /// Buckets per caller (device, token, enrollment token), and per client address for
    /// refused authentications: two limiters, so neither key needs a prefix to keep apart.
    let limiter = RateLimiter()
    let refusals = RateLimiter()
    private let listener: PGListener?

    /// With `listen`, a PGListener on that database keeps the token cache honest across
    /// replicas (see TokenCache); without it, every request looks its token up.
    /// `signer`: the server's manifest-signing key; tests pass none and get a fresh one.
    public init(db: PGPool, logger: Logger, artifacts: ArtifactStore, listen: PGConnectionOptions? = nil,
                clock: WallClock = .system, signer: ManifestSigner? = nil, limits: RateLimits = RateLimits(),
                deviceCertificates: Bool = false) throws {
        self.limits = limits
        self.deviceCertificates = deviceCertificates
        self.signer = try signer ?? ManifestSigner(key: .generate())
        self.db = db
        self.logger = logger
        self.artifacts = artifacts
        let engine = ExecutionEngine(db: db, clock: clock)
        self.engine = engine
        listener = listen.map { [tokens, deviceTokens, idleDevices, deviceCache] options in
            PGListener(options: options, channel: Self.changeChannel,
                       onChange: { enabled in
                           tokens.setEnabled(enabled)
                           deviceTokens.setEnabled(enabled)
                           idleDevices.setEnabled(enabled)
                           deviceCache.setEnabled(enabled)
                       },
                       onNotify: { payload in
                           if payload.hasPrefix(Self.devicesPrefix) {
                               // Sent by the triggers of migrations/0010: these devices' answers changed.
                               deviceCache.invalidate(payload: payload.dropFirst(Self.devicesPrefix.count))
                           } else if payload.hasPrefix(Self.workPrefix) {
                               // A deployment committed (maybe on another replica): wake its devices' polls here.
                               idleDevices.invalidateAll()
                               let id = String(payload.dropFirst(Self.workPrefix.count))
                               Task { try? await Self.wakeTargets(of: id, db: db, waiters: engine.waiters) }
                           } else {
                               tokens.invalidateAll()
                               deviceTokens.invalidateAll()
                           }
                       })
        }
    }

    /// Stops the token listener (at shutdown).
    public func stop() {
        listener?.stop()
        engine.waiters.wakeAll()
    }

    /// One NOTIFY channel for every replica-wide change: a token revoked or a device deleted
    /// (flush the token caches), or `work:<deployment id>` (new executions: flush the idle
    /// cache, wake the long polls of the devices it targets), or `devices:<ids>` (those
    /// devices changed: drop them from the device cache).
    static let changeChannel = "flotilla_changes"
    static let workPrefix = "work:"
    static let devicesPrefix = "devices:"

    public func register(on router: inout Router) {
        registerTokenRoutes(on: &router)
        registerDeviceRoutes(on: &router)
        registerDeviceAccessRoutes(on: &router)
        registerEnrollmentRoutes(on: &router)
        registerGroupRoutes(on: &router)
        registerFlowRoutes(on: &router)
        registerDeploymentRoutes(on: &router)
        registerArtifactRoutes(on: &router)
        registerDeviceAPIRoutes(on: &router)
        registerDeviceTokenRoutes(on: &router)
        registerActivityRoutes(on: &router)
        registerAuditRoutes(on: &router)
    }

    typealias Handler = @Sendable (HTTPRequest, Caller) async throws -> HTTPResponse

    /// Registers a management `handler` behind token authentication and a role check.
    /// With `streamingLimit`, the body is not buffered: it streams in through `request.bodyStream`.
    /// With `fromMemory`, a request whose token and answer are both in memory is answered on
    /// the event loop (see answerFromMemory); `handler` must give the same answer.
    func route(_ router: inout Router, _ method: String, _ pattern: String, role: Role, streamingLimit: Int? = nil,
               fromMemory: (@Sendable (HTTPRequest, Caller) -> HTTPResponse?)? = nil, _ handler: @escaping Handler) {
        routeRoles.add(method, pattern, role)
        let attempt = fromMemory.map { answer -> ImmediateAttempt in { [self] request in answerFromMemory(request, role: role, answer) } }
        // The role is checked after authentication, so a 403 is logged and audited under the
        // token that was refused (a 401 has no token to name).
        serve(&router, method, pattern, streamingLimit: streamingLimit, fromMemory: attempt, authenticate: { [self] request in
            try await authenticate(request)
        }, logName: { $0.tokenID }, limit: limits.token, audited: true) { request, caller in
            guard caller.role.allows(role) else {
                throw HTTPError(403, code: "forbidden", message: "this needs a token with the \(role.rawValue) role; yours is \(caller.role.rawValue)")
            }
            // A write may have changed devices: this replica forgets its cached ones before it
            // answers, so the caller reads its own write here (other replicas hear the NOTIFY).
            defer { if Self.isMutation(method) { deviceCache.invalidateAll() } }
            return try await handler(request, caller)
        }
    }

    /// The one wrapper every API route runs in: authentication, the caller's rate limit, error
    /// mapping, the audit log and the request log.
    func serve<Who: Sendable>(_ router: inout Router, _ method: String, _ pattern: String, streamingLimit: Int? = nil,
                              fromMemory: ImmediateAttempt? = nil,
                              authenticate: @escaping @Sendable (HTTPRequest) async throws -> Who,
                              logName: @escaping @Sendable (Who) -> String, limit: RateLimit, audited: Bool = false,
                              _ handler: @escaping @Sendable (HTTPRequest, Who) async throws -> HTTPResponse) {
        let wrapped: HTTPHandler = { [self] request in
            let started = monotonicNanos()
            let requestID = Self.requestID(from: request)
            var caller: Who?
            var response: HTTPResponse
            do {
                let authenticated = try await authenticateLimited(request, authenticate)
                caller = authenticated
                if case .limited(let wait) = limiter.request(logName(authenticated), limit, at: RateLimiter.now()) {
                    throw Self.rateLimited(wait)
                }
                response = try await handler(request, authenticated)
            } catch let error as HTTPError {
                response = error.response
            } catch let error as PGError where error.isUnavailable || error.isTimeout {
                logger.warning("database unavailable", metadata: ["request_id": .string(requestID), "error": .string(error.description)])
                response = .error(503, code: "database_unavailable",
                                  message: "the database is not reachable right now; retry shortly",
                                  headers: ["retry-after": "1"])
            } catch let error as PGError where error.isDataException {
                // A safety net: input checks should have refused the value before any SQL ran.
                logger.warning("database refused a value", metadata: ["request_id": .string(requestID), "error": .string(error.description)])
                response = .error(422, code: "invalid_value", message: "a value in this request cannot be stored (\(error.sqlState ?? "22000"))")
            } catch {
                // Never leak SQL or internals to the client; the log has them.
                logger.error("request failed", metadata: ["request_id": .string(requestID), "error": .string(String(describing: error))])
                response = .error(500, code: "internal", message: "internal server error (request id \(requestID))")
            }
            response.headers.set("x-request-id", requestID)
            if audited && Self.isMutation(request.method) {
                await appendAudit(request, tokenID: caller.map(logName), status: response.status, requestID: requestID)
            }
            logRequest(request, status: response.status, requestID: requestID, elapsed: monotonicNanos() - started, caller: caller.map(logName))
            return response
        }
        if let streamingLimit {
            router.streaming(method, pattern, limit: streamingLimit, wrapped)
        } else if let fromMemory {
            router.memoized(method, pattern, attempt: fromMemory, wrapped)
        } else {
            router.add(method, pattern, wrapped)
        }
    }

    /// Authenticates, counting refusals (401) per client address: an address that keeps
    /// presenting bad tokens is answered 429 before any lookup (each costs a query), until
    /// its bucket refills — guessing is slowed, and so is a flood aimed at the database.
    func authenticateLimited<Who>(_ request: HTTPRequest, _ authenticate: (HTTPRequest) async throws -> Who) async throws -> Who {
        let key = request.remoteAddress ?? "-"
        if refusals.isExhausted(key, limits.refusedAuthentication, at: RateLimiter.now()) {
            throw HTTPError(429, code: "rate_limited", message: "too many refused tokens from this address; retry in a few seconds",
                            headers: ["retry-after": "5"])
        }
        do {
            return try await authenticate(request)
        } catch let error as HTTPError where error.status == 401 {
            _ = refusals.request(key, limits.refusedAuthentication, at: RateLimiter.now())
            throw error
        }
    }

    /// A 404 or 405 the router gave by itself still gets a request id and its log line.
    /// Called on the event loop: the line is written from a task, never from the loop.
    func logUnmatched(_ request: HTTPRequest, _ response: HTTPResponse) -> HTTPResponse {
        let requestID = Self.requestID(from: request)
        var response = response
        response.headers.set("x-request-id", requestID)
        logRequestLater(request, status: response.status, requestID: requestID, elapsed: 0, caller: nil)
        return response
    }

    /// The one line every request gets (never the token, only its id); `elapsed` in nanoseconds.
    func logRequest(_ request: HTTPRequest, status: Int, requestID: String, elapsed: UInt64, caller: String?) {
        logger.info("request", metadata: [
            "request_id": .string(requestID), "method": .string(request.method), "path": .string(request.path),
            "status": .stringConvertible(status), "duration_ms": .string(formatMillis(Double(elapsed) / 1_000_000)),
            "caller": .string(caller ?? "-"),
        ])
    }

    /// The same line, for answers given on the event loop: written from a task, never from
    /// the loop (and no task at all when the level drops it).
    func logRequestLater(_ request: HTTPRequest, status: Int, requestID: String, elapsed: UInt64, caller: String?) {
        guard logger.logLevel <= .info else { return }
        Task { logRequest(request, status: status, requestID: requestID, elapsed: elapsed, caller: caller) }
    }

    static func rateLimited(_ wait: Int) -> HTTPError {
        HTTPError(429, code: "rate_limited", message: "too many requests for this token; retry in \(wait) s",
                  headers: ["retry-after": String(wait)])
    }

    /// The client's id if it is short and plain (safe to log and echo), else a fresh one.
    static func requestID(from request: HTTPRequest) -> String {
        if let given = request.headers["x-request-id"], (1...64).contains(given.utf8.count),
           given.utf8.allSatisfy({ isIDByte($0) }) {
            return given
        }
        // Unique, not secret: a per-process random prefix and a counter (RAND_bytes per
        // request cost ~5% of a database-backed request).
        let count = requestCounter.add(1, ordering: .relaxed).newValue
        return requestIDPrefix + String(UInt32(truncatingIfNeeded: count), radix: 16)
    }

    private static let requestIDPrefix = hexString(Secrets.randomBytes(4)) + "-"
    private static let requestCounter = Atomic<UInt64>(0)

    static func isIDByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            true
        default:
            false
        }
    }
}

private func formatMillis(_ value: Double) -> String {
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}

final class RouteRoles: Sendable {
    private let entries = Mutex<[(method: String, pattern: String, role: Role)]>([])
    func add(_ method: String, _ pattern: String, _ role: Role) { entries.withLock { $0.append((method, pattern, role)) } }
    var all: [(method: String, pattern: String, role: Role)] { entries.withLock { $0 } }
}

extension ManagementAPI {
    /// For tests: every management route and the role it needs.
    public var routeRolesForTesting: [(method: String, pattern: String, role: Role)] { routeRoles.all }
}

/// Maps the constraint a unique violation names to a 409 message, or rethrows.
func conflictOnDuplicate<T>(_ message: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as PGError where error.isUniqueViolation {
        throw APIError.conflict(message())
    }
}
