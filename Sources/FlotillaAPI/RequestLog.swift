// Where request records go to become log lines: appended under a lock from any thread (an
// event loop answering from memory included, where a task per line used to cost as much
// as the answer), written by one background thread every 100 ms, and at once when a
// context stops. The hot path never formats, allocates a task or wakes a thread; the
// writer formats a batch in one go. Only records the logger's level would keep are taken.

import FlotillaStore
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

final class RequestLog: Sendable {
    static let shared = RequestLog()

    private let pending = Mutex<[(Logger, RequestRecord)]>([])
    /// Serializes writers (the thread, a stop) so lines keep their order.
    private let writing = Mutex(())

    private init() {
        BackgroundThread.start { [self] in
            while true {
                usleep(100_000)
                flush()
            }
        }
    }

    func append(_ record: RequestRecord, to logger: Logger) {
        guard logger.logLevel <= .info else { return }
        pending.withLock { $0.append((logger, record)) }
    }

    /// Writes everything appended so far (the thread's tick, or a stopping context).
    func flush() {
        writing.withLock { _ in
            let batch = pending.withLock { pending -> [(Logger, RequestRecord)] in
                defer { pending.removeAll(keepingCapacity: true) }
                return pending
            }
            for (logger, record) in batch { Self.write(record, to: logger) }
        }
    }

    /// The one line every request gets (never the token, only its id). The fields are
    /// written into the message, in the order the handler would have sorted them, rather
    /// than as metadata: a dictionary built, sorted and joined per line cost a tenth of a
    /// cached GET's throughput at the default level.
    private static func write(_ record: RequestRecord, to logger: Logger) {
        var line = "request caller="
        line.reserveCapacity(160)
        line += record.caller ?? "-"
        line += " duration_ms="
        line += formatMillis(Double(record.nanos) / 1_000_000)
        line += " method="
        line += record.method
        line += " path="
        line += record.path
        line += " request_id="
        line += record.requestID
        line += " route="
        line += record.route
        line += " status="
        line += String(record.status)
        logger.info("\(line)")
    }
}

func formatMillis(_ value: Double) -> String {
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
