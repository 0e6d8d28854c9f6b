// The Dispatch backend of `EventLoop`: one serial queue per loop, one read source and
// one lazily created write source per file descriptor.
//
// Pitfalls this file exists to contain (each one crashes or spins a core if missed):
// - A write source left resumed on a writable socket fires continuously: it is resumed
//   only while there is something to write, and suspended again when the buffer drains.
// - Suspend/resume must balance, a suspended source must be resumed before it is
//   cancelled (or its cancel handler never runs), and releasing a suspended source traps.
// - The fd may be closed only after the cancel handlers of *all* its sources have run.

import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

final class DispatchEventLoop: EventLoop, @unchecked Sendable {
    let queue: DispatchQueue
    private let key = DispatchSpecificKey<ObjectIdentifier>()
    let readBuffer: UnsafeMutableRawBufferPointer

    init(label: String) {
        queue = DispatchQueue(label: label)
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        queue.setSpecific(key: key, value: ObjectIdentifier(self))
    }

    var inEventLoop: Bool { DispatchQueue.getSpecific(key: key) == ObjectIdentifier(self) }

    func execute(_ task: @escaping @Sendable () -> Void) {
        queue.async(execute: task)
    }

    @discardableResult
    func schedule(after delay: Duration, _ task: @escaping @Sendable () -> Void) -> any Cancellable {
        let item = DispatchWorkItem(block: task)
        queue.asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: delay.nanoseconds)), execute: item)
        return CancellableWorkItem(item: item)
    }

    func watch(fd: Int32, handler: any FDEventHandler) -> any FDWatch {
        DispatchFDWatch(fd: fd, queue: queue, handler: handler)
    }
}

private struct CancellableWorkItem: Cancellable, @unchecked Sendable {
    let item: DispatchWorkItem
    func cancel() { item.cancel() }
}

/// Loop-confined: every method runs on `queue`.
private final class DispatchFDWatch: FDWatch, @unchecked Sendable {
    private let fd: Int32
    private let queue: DispatchQueue
    private var handler: (any FDEventHandler)?
    private var readSource: (any DispatchSourceRead)?
    private var writeSource: (any DispatchSourceWrite)?
    private var readSuspended = false
    private var writeSuspended = true
    private var liveSources = 0
    private var cancelled = false

    init(fd: Int32, queue: DispatchQueue, handler: any FDEventHandler) {
        self.fd = fd
        self.queue = queue
        self.handler = handler
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [unowned self] in self.handler?.fdReadable() }
        source.setCancelHandler { [self] in self.sourceCancelled() }
        liveSources += 1
        readSource = source
        source.activate()
    }

    func setReadInterest(_ on: Bool) {
        guard !cancelled, let source = readSource, on == readSuspended else { return }
        readSuspended = !on
        if on { source.resume() } else { source.suspend() }
    }

    func setWriteInterest(_ on: Bool) {
        guard !cancelled, on == writeSuspended else { return }
        writeSuspended = !on
        if let source = writeSource {
            if on { source.resume() } else { source.suspend() }
        } else if on {
            // Created on first need: most request/response exchanges never see EAGAIN.
            let source = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
            source.setEventHandler { [unowned self] in self.handler?.fdWritable() }
            source.setCancelHandler { [self] in self.sourceCancelled() }
            liveSources += 1
            writeSource = source
            source.activate()
        }
    }

    func cancel() {
        guard !cancelled else { return }
        cancelled = true
        // A suspended source never runs its cancel handler: resume first.
        if let source = readSource {
            if readSuspended { source.resume() }
            source.cancel()
        }
        if let source = writeSource {
            if writeSuspended { source.resume() }
            source.cancel()
        }
        readSuspended = false
        writeSuspended = false
    }

    private func sourceCancelled() {
        liveSources -= 1
        guard liveSources == 0 else { return }
        let handler = self.handler
        // Break the cycle source -> handler block -> self -> source.
        self.handler = nil
        readSource = nil
        writeSource = nil
        handler?.fdReleased()
    }
}

/// A lock-free counter for round-robin choices and statistics.
final class AtomicCounter: Sendable {
    private let value = Atomic<Int>(0)
    func increment() -> Int { value.add(1, ordering: .relaxed).oldValue }
    func decrement() -> Int { value.subtract(1, ordering: .relaxed).oldValue }
    var current: Int { value.load(ordering: .relaxed) }
}
