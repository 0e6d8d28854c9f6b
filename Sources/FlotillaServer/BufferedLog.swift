// The server's log handler: swift-log's StreamLogHandler line format, but buffered. The
// stock handler formats a timestamp with localtime + strftime and flushes stderr on every
// line, a write(2) per request; with the per-request line on (the default level, info),
// bench/api.sh measured that at half of a cached GET's throughput. Here a line is appended
// to a shared buffer under a lock, and a thread writes the buffer out every 100 ms, at once
// for a warning or worse, and at exit. What a kill -9 loses is at most the last 100 ms.

import FlotillaStore
import FlotillaTransport
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

struct BufferedLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        let pretty = fields.isEmpty ? "" : " " + fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let line = "\(LogOutput.clock.now) \(event.level)\(label.isEmpty ? "" : " ")\(label):\(pretty) [\(event.source)] \(event.message)\n"
        LogOutput.shared.append(line, urgent: event.level >= .warning)
    }
}

final class LogOutput: Sendable {
    static let shared = LogOutput(fd: 2)

    private let fd: Int32
    private let pending = Mutex<[UInt8]>([])
    /// Serializes writers (the flusher thread, urgent lines, exit) so lines stay in order.
    private let writing = Mutex(())

    private init(fd: Int32) {
        self.fd = fd
        BackgroundThread.start { [self] in
            while true {
                usleep(100_000)
                flush()
            }
        }
        atexit { LogOutput.shared.flush() }
    }

    func append(_ line: String, urgent: Bool) {
        let size = pending.withLock { buffer -> Int in
            buffer.append(contentsOf: line.utf8)
            return buffer.count
        }
        if urgent || size >= 1 << 16 { flush() }
    }

    func flush() {
        writing.withLock { _ in
            let bytes = pending.withLock { buffer -> [UInt8] in
                defer { buffer = [] }
                return buffer
            }
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if written > 0 { offset += written } else if written < 0 && errno == EINTR { continue } else { return }
            }
        }
    }

    /// StreamLogHandler's timestamp: local time, `%Y-%m-%dT%H:%M:%S%z`.
    static let clock = SecondClock(format: "%Y-%m-%dT%H:%M:%S%z", utc: false)
}
