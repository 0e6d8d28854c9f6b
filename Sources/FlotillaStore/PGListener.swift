// One connection that LISTENs on a channel and hands every notification to a callback,
// on its own thread. Revoking an API token sends `NOTIFY flotilla_changes` in the same
// transaction, and every server replica's listener flushes its token cache: revocation is
// immediate everywhere without each request asking the database.
//
// While the listener is not connected (database down, connection lost) it reports
// `connected == false`; whoever caches on its word must stop caching until it is back,
// because notifications sent meanwhile are lost.

import CLibpq
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public final class PGListener: Sendable {
    private let options: PGConnectionOptions
    private let channel: String
    private let onChange: @Sendable (_ connected: Bool) -> Void
    private let onNotify: @Sendable (_ payload: String) -> Void
    private let stopped = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)

    /// `channel` must be a plain identifier (it is spelled into LISTEN). `onChange` hears
    /// every connect and disconnect; `onNotify` every payload.
    public init(options: PGConnectionOptions, channel: String,
                onChange: @escaping @Sendable (Bool) -> Void, onNotify: @escaping @Sendable (String) -> Void) {
        precondition(channel.utf8.allSatisfy { $0 == UInt8(ascii: "_") || ($0 >= 97 && $0 <= 122) }, "channel must be [a-z_]+")
        self.options = options
        self.channel = channel
        self.onChange = onChange
        self.onNotify = onNotify
        BackgroundThread.start { [self] in loop() }  // a blocking loop has no business on Dispatch's pool
    }

    /// Stops listening; returns once the thread has let go of its connection.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        done.wait()
    }

    private func loop() {
        var delayMillis: Int32 = 100
        while !stopped.load(ordering: .relaxed) {
            if let connection = try? PGConnection(options), (try? connection.execute(unsafe: "LISTEN \(channel)")) != nil {
                delayMillis = 100
                onChange(true)
                listen(on: connection)
                onChange(false)
            } else {
                // Back off while the database is away, up to 2 s between attempts.
                usleep(UInt32(delayMillis) * 1000)
                delayMillis = min(delayMillis * 2, 2000)
            }
        }
        done.signal()
    }

    /// Returns when the connection breaks or `stop()` is called (checked every 200 ms).
    private func listen(on connection: PGConnection) {
        while !stopped.load(ordering: .relaxed) {
            guard let payloads = connection.waitForNotifications(timeoutMillis: 200) else { return }
            for payload in payloads { onNotify(payload) }
        }
    }
}

extension PGConnection {
    /// Waits up to `timeoutMillis` for notifications; nil when the connection broke.
    func waitForNotifications(timeoutMillis: Int32) -> [String]? {
        var fd = pollfd(fd: socketDescriptor, events: Int16(POLLIN), revents: 0)
        let ready = poll(&fd, 1, timeoutMillis)
        if ready < 0 { return errno == EINTR ? [] : nil }
        if ready == 0 { return [] }
        return consumeNotifications()
    }
}
