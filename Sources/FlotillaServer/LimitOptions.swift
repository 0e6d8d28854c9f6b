// `flotilla-server` flags for abuse limits: request rates per caller (FlotillaAPI
// RateLimiter, 429 + Retry-After) and open connections per client address (HTTPServer,
// closed at accept). Defaults suit a fleet polling every 30 s and a few pipelines.

import ArgumentParser
import FlotillaAPI
import FlotillaCore

struct LimitOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Requests per second each device may make, and its burst: RATE/BURST, or 'off'.", valueName: "rate/burst"))
    var rateLimitDevice = "5/60"

    @Option(help: ArgumentHelp("Requests per second each API token may make, and its burst: RATE/BURST, or 'off'.", valueName: "rate/burst"))
    var rateLimitToken = "50/200"

    @Option(help: ArgumentHelp("Enrollments per second each enrollment token may make, and its burst: RATE/BURST, or 'off'.", valueName: "rate/burst"))
    var rateLimitEnrollment = "10/50"

    @Option(help: ArgumentHelp("Refused (401) authentications per second from one address, and the burst, before it gets 429: RATE/BURST, or 'off'.", valueName: "rate/burst"))
    var rateLimitRefused = "10/100"

    @Option(help: "Open connections one client address may hold; 0: no cap. Clients behind one NAT or proxy share an address.")
    var maxConnectionsPerAddress = 256

    func validate() throws {
        _ = try rateLimits()
        guard maxConnectionsPerAddress >= 0 else { throw ValidationError("--max-connections-per-address must be 0 or more") }
    }

    func rateLimits() throws -> RateLimits {
        RateLimits(device: try Self.parse(rateLimitDevice, "--rate-limit-device"), token: try Self.parse(rateLimitToken, "--rate-limit-token"),
                   enrollment: try Self.parse(rateLimitEnrollment, "--rate-limit-enrollment"),
                   refusedAuthentication: try Self.parse(rateLimitRefused, "--rate-limit-refused"))
    }

    static func parse(_ text: String, _ flag: String) throws -> RateLimit {
        if text == "off" { return .off }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let rate = Double(parts[0]), rate > 0, rate.isFinite, let burst = Int(parts[1]), burst >= 1 else {
            throw ValidationError("\(flag) must be RATE/BURST (e.g. 5/60: 5 per second, bursts of 60) or 'off', got '\(text)'")
        }
        return RateLimit(perSecond: rate, burst: burst)
    }
}
