// How executions, failures and step plans look in JSON (the database's jsonb columns
// and the API's answers), and the clock the API reads time from.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire
#if canImport(Glibc)
import Glibc
#endif

/// Where the API gets "now": the system clock in production, a hand-moved one in tests
/// (deadline expiry without waiting).
public struct WallClock: Sendable {
    public let now: @Sendable () -> Instant

    public init(_ now: @escaping @Sendable () -> Instant) { self.now = now }

    public static let system = WallClock {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Instant(microseconds: Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000)
    }
}

extension ExecutionEngine {
    static func failureJSON(_ failure: Failure) -> JSON {
        .fields([
            ("cause", .string(failure.cause.rawValue)), ("message", .string(failure.message)),
            ("step", failure.step.map(JSON.int) ?? .null), ("exit_code", failure.exitCode.map(JSON.int) ?? .null),
            ("log_tail", failure.logTail.map(JSON.string) ?? .null),
        ])
    }

    /// `failureJSON(.superseded(by:))` built by PostgreSQL, for the deployment id in `column`
    /// (targets superseded before they became executions; see 0006).
    static func supersededFailureSQL(column: String) -> SQL {
        let superseded = Failure.superseded(by: "")
        return """
            jsonb_build_object('cause', \(superseded.cause.rawValue)::text, 'message', \(superseded.message)::text || \(unsafe: column)::text,
                               'step', NULL, 'exit_code', NULL, 'log_tail', NULL)
            """
    }

    /// `failureJSON(.canceledBeforeStart)` as a jsonb parameter.
    static var canceledBeforeStartSQL: SQL { "\(JSONText(failureJSON(.canceledBeforeStart).serialized))::jsonb" }

    static func decodeFailure(_ text: String) throws -> Failure {
        let value = try JSON.parse(Array(text.utf8))
        guard let cause = value.objectValue?["cause"]?.stringValue.flatMap(Failure.Cause.init(rawValue:)) else {
            throw PGError.decoding(column: "failure", message: "no known cause in \(text)")
        }
        let fields = value.objectValue ?? [:]
        return Failure(cause, fields["message"]?.stringValue ?? "", step: fields["step"]?.intValue,
                       exitCode: fields["exit_code"]?.intValue, logTail: fields["log_tail"]?.stringValue)
    }

    /// `[["download", 3600], …]`: what the machine needs of the rendered steps.
    static func plansJSON(_ plans: [StepPlan]) -> JSON {
        .array(plans.map { .array([.string($0.kind.rawValue), .int($0.timeout)]) })
    }

    static func decodePlans(_ text: String) throws -> [StepPlan] {
        let items = try JSON.parse(Array(text.utf8)).arrayValue ?? []
        return try items.map { item in
            guard let pair = item.arrayValue, pair.count == 2, let kind = pair[0].stringValue.flatMap(StepKind.init(rawValue:)),
                  let timeout = pair[1].intValue else {
                throw PGError.decoding(column: "plans", message: "malformed step plan \(item.serialized)")
            }
            return StepPlan(kind, timeout: timeout)
        }
    }
}
