// A detached thread of its own, for loops that block or sleep (the NOTIFY listener, the log
// flusher): blocking has no place on Dispatch's pool or Swift's cooperative pool.

#if canImport(Glibc)
import Glibc
#endif

public enum BackgroundThread {
    public static func start(_ body: @escaping @Sendable () -> Void) {
        final class Box: @unchecked Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        pthread_create(&thread, nil, { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, Unmanaged.passRetained(Box(body)).toOpaque())
        pthread_detach(thread)
    }
}
