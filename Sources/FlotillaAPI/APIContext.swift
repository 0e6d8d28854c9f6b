// What every audience of the API shares, one per server process: the pool, the executor,
// the caches and their listener, the limiters, the artifact store, the manifest signer, the
// logger and the clock. The audiences (DeviceAPI, ManagementAPI, and the DDI routes to
// come) are small structs around one context; none owns state of its own.
//
// The caches stay true across replicas through one NOTIFY channel (`changeChannel`):
// a token revoked or a device deleted (flush the token caches), `work:<deployment id>`
// (new executions: flush the idle cache, wake the long polls of the devices it targets),
// `devices:<ids>` (those devices' answers changed: drop them from the device cache).

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire
import Logging
import Synchronization

public final class APIContext: Sendable {
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
    /// Set when the server begins to stop: waiting polls answer 204 at once, with a short
    /// retry interval, instead of meeting a closed pool (503) at the end of the drain.
    let draining = Atomic(false)

    /// With `listen`, a PGListener on that database keeps the caches honest across replicas;
    /// without it, every request looks its token up. `signer`: the server's manifest-signing
    /// key; tests pass none and get a fresh one.
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
                               Task { try? await engine.wakeTargets(of: id) }
                           } else {
                               tokens.invalidateAll()
                               deviceTokens.invalidateAll()
                           }
                       })
        }
    }

    /// The first step of a graceful stop: every long poll waiting here answers now (204, come
    /// back soon), and no new one waits. Requests in flight finish normally.
    public func beginDrain() {
        draining.store(true, ordering: .relaxed)
        engine.waiters.wakeAll()
    }

    /// Stops the listener, wakes every waiting poll and writes the request lines still
    /// waiting (at shutdown).
    public func stop() {
        listener?.stop()
        engine.waiters.wakeAll()
        RequestLog.shared.flush()
    }

    static let changeChannel = "flotilla_changes"
    static let workPrefix = "work:"
    static let devicesPrefix = "devices:"

    /// One pass of the deadline sweeper (ExecutionEngine+Sets.swift); the server's start-up
    /// tasks and the tests drive it through here.
    @discardableResult
    public func sweepDeadlines(limit: Int = 500) async throws -> Int {
        try await engine.sweepDeadlines(limit: limit)
    }

    /// For tests: a long poll of this device is parked, waiting for a wake-up.
    public func pollIsParkedForTesting(_ device: String) -> Bool { engine.waiters.isParked(device) }

    /// For tests: every management route and the role it needs.
    public var routeRolesForTesting: [(method: String, pattern: String, role: Role)] { routeRoles.all }
}

/// An audience of the API (devices, operators, DDI clients): its routes over the shared
/// context. The context's parts read as the audience's own, so a handler says `db`, not
/// `context.db`.
protocol APIAudience: Sendable {
    var context: APIContext { get }
}

extension APIAudience {
    var db: PGPool { context.db }
    var logger: Logger { context.logger }
    var engine: ExecutionEngine { context.engine }
    var artifacts: ArtifactStore { context.artifacts }
    var signer: ManifestSigner { context.signer }
    var limits: RateLimits { context.limits }
    var limiter: RateLimiter { context.limiter }
    var refusals: RateLimiter { context.refusals }
    var tokens: TokenCache<Caller> { context.tokens }
    var deviceTokens: TokenCache<DeviceCaller> { context.deviceTokens }
    var idleDevices: TokenCache<Bool> { context.idleDevices }
    var deviceCache: DeviceCache { context.deviceCache }
    var deviceCertificates: Bool { context.deviceCertificates }
}
