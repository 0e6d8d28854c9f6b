// Time as a plain value. The core never reads a clock: callers pass `at: Instant`, so
// tests (and the deadline sweeper) can ask "what happens at 12:00:05?" without waiting.

/// A point in time: microseconds since the Unix epoch (PostgreSQL's precision).
public struct Instant: Sendable, Hashable, Comparable {
    public var microseconds: Int64

    public init(microseconds: Int64) { self.microseconds = microseconds }

    public static func seconds(_ value: Int64) -> Instant { Instant(microseconds: value * 1_000_000) }

    public static func < (a: Instant, b: Instant) -> Bool { a.microseconds < b.microseconds }

    /// `self` plus a number of seconds, saturating instead of trapping on absurd input.
    public func adding(seconds: Int) -> Instant {
        let (delta, overflow1) = Int64(seconds).multipliedReportingOverflow(by: 1_000_000)
        let (sum, overflow2) = microseconds.addingReportingOverflow(delta)
        return Instant(microseconds: overflow1 || overflow2 ? Int64.max : sum)
    }
}
