// A token bucket: how the server limits the request rate of one device or one API token.
//
//   tokens ──(one per request)──▶ allowed          refilled at `perSecond`, up to `burst`
//   empty ─────────────────────▶ limited(retry after the seconds until one token is back)
//
// Pure: the caller passes the time. A clock that goes backwards (another replica's, a
// test's) refills nothing rather than trapping or minting tokens.

public struct RateLimit: Sendable, Equatable {
    public let perSecond: Double
    public let burst: Int

    public init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }

    /// No limit at all.
    public static let off = RateLimit(perSecond: 0, burst: 0)
    public var isOff: Bool { perSecond <= 0 || burst <= 0 }

    /// The same limit, `factor` times as generous (off stays off).
    public func scaled(by factor: Int) -> RateLimit {
        isOff ? self : RateLimit(perSecond: perSecond * Double(factor), burst: burst * factor)
    }
}

public enum RateDecision: Sendable, Equatable {
    case allowed
    /// Whole seconds to wait (at least 1), for a Retry-After header.
    case limited(retryAfter: Int)
}

public struct TokenBucket: Sendable, Equatable {
    public let limit: RateLimit
    public private(set) var tokens: Double
    public private(set) var updated: Instant

    /// A full bucket.
    public init(_ limit: RateLimit, at now: Instant) {
        self.limit = limit
        tokens = Double(limit.burst)
        updated = now
    }

    /// The tokens there will be at `now` (none are minted by a clock going back).
    private func refilled(at now: Instant) -> Double {
        let elapsed = now > updated ? Double(now.microseconds - updated.microseconds) / 1_000_000 : 0
        return min(Double(limit.burst), tokens + elapsed * limit.perSecond)
    }

    /// Whether the bucket will have refilled completely by `now` (it can then be forgotten).
    public func isFull(at now: Instant) -> Bool { refilled(at: now) >= Double(limit.burst) }

    /// Whether a request now would be allowed (without taking a token).
    public func hasToken(at now: Instant) -> Bool { limit.isOff || refilled(at: now) >= 1 }

    public mutating func requested(at now: Instant) -> RateDecision {
        if limit.isOff { return .allowed }
        if now > updated {
            tokens = refilled(at: now)
            updated = now
        }
        if tokens >= 1 {
            tokens -= 1
            return .allowed
        }
        let wait = (1 - tokens) / limit.perSecond
        return .limited(retryAfter: max(1, Int(wait.rounded(.up))))
    }
}
