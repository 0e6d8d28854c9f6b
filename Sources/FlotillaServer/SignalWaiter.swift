// Waits for signals (SIGTERM/SIGINT: stop; SIGHUP: reload TLS) through Dispatch signal sources.
//
// This lives in a nonisolated type on purpose: a DispatchSource handler created in
// top-level or main-actor code is main-actor isolated in Swift 6 and traps when it
// fires on a background queue.

import Dispatch
#if canImport(Glibc)
import Glibc
#endif

final class SignalWaiter: @unchecked Sendable {
    private let queue = DispatchQueue(label: "flotilla.signals")
    private var sources: [any DispatchSourceSignal] = []
    private var received: [Int32] = []
    private var waiter: CheckedContinuation<Int32, Never>?

    init(signals: [Int32]) {
        for number in signals {
            signal(number, SIG_IGN)  // the default action would kill us before the source sees it
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { @Sendable [unowned self] in self.deliver(number) }
            source.activate()
            sources.append(source)
        }
    }

    private func deliver(_ number: Int32) {
        if let waiter {
            self.waiter = nil
            waiter.resume(returning: number)
        } else {
            received.append(number)
        }
    }

    /// The next signal, waiting if none has arrived yet.
    func next() async -> Int32 {
        await withCheckedContinuation { continuation in
            queue.async {
                if self.received.isEmpty {
                    self.waiter = continuation
                } else {
                    continuation.resume(returning: self.received.removeFirst())
                }
            }
        }
    }
}
