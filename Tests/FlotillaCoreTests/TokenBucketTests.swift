// The token bucket: a burst, then limited with the right wait; refill by elapsed time up
// to the burst; a clock going backwards mints nothing; `off` never limits.

import FlotillaCore
import XCTest

final class TokenBucketTests: XCTestCase {
    func testBurstLimitRefillAndClockSteps() {
        let start = Instant.seconds(1_000)
        var bucket = TokenBucket(RateLimit(perSecond: 0.5, burst: 2), at: start)
        XCTAssertEqual(bucket.requested(at: start), .allowed)
        XCTAssertEqual(bucket.requested(at: start), .allowed)
        XCTAssertFalse(bucket.hasToken(at: start))
        XCTAssertEqual(bucket.requested(at: start), .limited(retryAfter: 2), "one token every 2 s")
        XCTAssertEqual(bucket.requested(at: start.adding(seconds: 1)), .limited(retryAfter: 1), "half a token back")
        XCTAssertTrue(bucket.hasToken(at: start.adding(seconds: 2)))
        XCTAssertEqual(bucket.requested(at: start.adding(seconds: 2)), .allowed)
        XCTAssertEqual(bucket.requested(at: Instant.seconds(10)), .limited(retryAfter: 2), "a clock stepping back refills nothing")
        XCTAssertFalse(bucket.isFull(at: start.adding(seconds: 2)))
        XCTAssertTrue(bucket.isFull(at: start.adding(seconds: 100)))
        XCTAssertEqual(bucket.requested(at: start.adding(seconds: 100)), .allowed)
        XCTAssertEqual(bucket.requested(at: start.adding(seconds: 100)), .allowed, "refilled to the burst, not beyond")
        XCTAssertEqual(bucket.requested(at: start.adding(seconds: 100)), .limited(retryAfter: 2))

        var off = TokenBucket(.off, at: start)
        for _ in 0..<1000 { XCTAssertEqual(off.requested(at: start), .allowed) }
    }
}
