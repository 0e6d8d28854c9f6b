// Request-rate limits per device and per API or enrollment token (SECURITY.md): one
// TokenBucket (FlotillaCore) per caller, kept in this replica's memory. `serve` asks here
// after authenticating and answers 429 with Retry-After when the bucket is empty.
//
// Per replica, on purpose: a shared counter would cost a database write per request. With
// N replicas behind a balancer a caller gets at most N times the limit. Buckets live in 16
// shards (less lock contention across event loops); a shard that grows past its share of
// `capacity` forgets its full buckets (a full bucket is the state of a new caller anyway).

import FlotillaCore
import FlotillaTransport
import FlotillaWire
import Synchronization

public struct RateLimits: Sendable {
    /// Each device (polls, reports, heartbeats, artifact ranges).
    public var device: RateLimit
    /// Each management API token (pipelines, the CLI, dashboards).
    public var token: RateLimit
    /// Each enrollment token (a batch of devices enrolling together).
    public var enrollment: RateLimit
    /// Refused (401) authentications per client address; when spent, the address gets 429.
    public var refusedAuthentication: RateLimit

    public init(device: RateLimit = RateLimit(perSecond: 5, burst: 60), token: RateLimit = RateLimit(perSecond: 50, burst: 200),
                enrollment: RateLimit = RateLimit(perSecond: 10, burst: 50),
                refusedAuthentication: RateLimit = RateLimit(perSecond: 10, burst: 100)) {
        self.device = device
        self.token = token
        self.enrollment = enrollment
        self.refusedAuthentication = refusedAuthentication
    }

    public static let off = RateLimits(device: .off, token: .off, enrollment: .off, refusedAuthentication: .off)
}

final class RateLimiter: Sendable {
    /// Monotonic time, not the API's wall clock: a test's hand-moved clock must not starve
    /// its own requests, and a wall clock stepping back must not refill buckets.
    static func now() -> Instant { Instant(microseconds: Int64(monotonicNanos() / 1_000)) }

    private final class Shard: Sendable {
        let buckets = Mutex<[String: TokenBucket]>([:])
    }

    private let shards: [Shard] = (0..<16).map { _ in Shard() }
    private let shardCapacity: Int

    init(capacity: Int = 1_000_000) {
        shardCapacity = max(1, capacity / 16)
    }

    /// Whether `key`'s bucket is empty now (without taking from it).
    func isExhausted(_ key: String, _ limit: RateLimit, at now: Instant) -> Bool {
        if limit.isOff { return false }
        return shard(key).buckets.withLock { $0[key].map { !$0.hasToken(at: now) } ?? false }
    }

    private func shard(_ key: String) -> Shard {
        var hasher = Hasher()
        hasher.combine(key)
        return shards[Int(UInt(bitPattern: hasher.finalize()) % 16)]
    }

    func request(_ key: String, _ limit: RateLimit, at now: Instant) -> RateDecision {
        if limit.isOff { return .allowed }
        return shard(key).buckets.withLock { buckets in
            if buckets.count >= shardCapacity, buckets[key] == nil {
                buckets = buckets.filter { !$0.value.isFull(at: now) }
                if buckets.count >= shardCapacity { buckets.removeAll(keepingCapacity: true) }
            }
            var bucket = buckets[key] ?? TokenBucket(limit, at: now)
            let decision = bucket.requested(at: now)
            buckets[key] = bucket
            return decision
        }
    }
}
