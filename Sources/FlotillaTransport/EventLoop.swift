// The event loop, behind a small interface.
//
// Protocol code (HTTP/1.1, HTTP/2, TLS) never touches Dispatch directly: it asks an
// `EventLoop` to run work, to schedule timers and to watch a file descriptor. The
// only backend today is `DispatchEventLoop`; an epoll/io_uring backend could be
// slotted in later without touching the protocol code, because each libdispatch
// event costs several syscalls and two thread hops on Linux.
//
// Threading rule: every object bound to a loop (a connection, its TLS session, its
// nghttp2 session) is touched only from that loop's serial queue. Such objects are
// `@unchecked Sendable`; the check that they obey the rule is `assertInLoop()`.

import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Notifications for one watched file descriptor. Called on the loop.
public protocol FDEventHandler: AnyObject {
    func fdReadable()
    func fdWritable()
    /// Both notifications are gone for good: the descriptor may be closed now, and not before
    /// (a closed-then-reused fd number would otherwise silently lose its events).
    func fdReleased()
}

/// Interest in one file descriptor's readiness. Used only on the owning loop.
public protocol FDWatch: AnyObject {
    func setReadInterest(_ on: Bool)
    func setWriteInterest(_ on: Bool)
    /// Stops watching; `fdReleased()` follows once the backend has let go of the fd.
    func cancel()
}

/// A timer or a deferred task that may be cancelled before it runs.
public protocol Cancellable: Sendable {
    func cancel()
}

public protocol EventLoop: AnyObject, Sendable {
    /// Runs `task` on the loop, after whatever is running now.
    func execute(_ task: @escaping @Sendable () -> Void)
    /// Runs `task` on the loop once `delay` has passed, unless cancelled first.
    @discardableResult
    func schedule(after delay: Duration, _ task: @escaping @Sendable () -> Void) -> any Cancellable
    /// Starts watching `fd` (read interest on, write interest off).
    func watch(fd: Int32, handler: any FDEventHandler) -> any FDWatch
    /// True when called from this loop's thread of control.
    var inEventLoop: Bool { get }
    /// A scratch buffer for socket reads, shared by every connection of this loop: reads happen
    /// only on the loop, one at a time, so one buffer serves thousands of idle connections.
    var readBuffer: UnsafeMutableRawBufferPointer { get }
}

extension EventLoop {
    @inline(__always)
    public func assertInLoop(file: StaticString = #fileID, line: UInt = #line) {
        assert(inEventLoop, "called off its event loop", file: file, line: line)
    }
}

/// A fixed set of loops; connections are spread over them round robin.
public final class EventLoopGroup: Sendable {
    public let loops: [any EventLoop]
    private let counter = AtomicCounter()

    public init(loopCount: Int = EventLoopGroup.defaultLoopCount) {
        loops = (0..<max(1, loopCount)).map { DispatchEventLoop(label: "flotilla.loop.\($0)") }
    }

    public static var defaultLoopCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    public func next() -> any EventLoop {
        loops[counter.increment() % loops.count]
    }

    /// A process-wide group for clients (agent, CLI, tests) that do not bring their own.
    public static let shared = EventLoopGroup(loopCount: 1)
}

/// The monotonic clock in nanoseconds. Protocol code takes "now" from here, never from the wall clock.
@inline(__always)
public func monotonicNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

extension Duration {
    var nanoseconds: UInt64 {
        let (s, atto) = components
        return UInt64(max(0, s)) &* 1_000_000_000 &+ UInt64(max(0, atto) / 1_000_000_000)
    }
}
