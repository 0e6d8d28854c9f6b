// Bodies that are never held whole in memory (artifact uploads and downloads):
//
// - `HTTPBodyStream`: the request body of a *streaming* route, handed to its handler
//   as it arrives. The reader pulls chunks; each pull gives the transport credit to let
//   more in (an HTTP/2 WINDOW_UPDATE, or resumed socket reads for HTTP/1.1), so a slow
//   disk slows the client down instead of filling memory.
// - `HTTPFileBody`: a region of an open file sent as a response body, read from disk
//   on a background queue one chunk ahead of the socket.

import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public final class HTTPBodyStream: Sendable {
    private struct State {
        var chunks: [[UInt8]] = []
        var buffered = 0
        var ended = false
        var failure: HTTPError?
        var waiter: CheckedContinuation<[UInt8]?, any Error>?
    }

    private let state = Mutex(State())
    /// Told (on the reader's thread) how many bytes the reader took.
    private let credit: @Sendable (Int) -> Void
    /// The most this route accepts; the transport refuses more with 413.
    public let limit: Int

    init(limit: Int, credit: @escaping @Sendable (Int) -> Void) {
        self.limit = limit
        self.credit = credit
    }

    /// A body that is already complete (a streaming route's request that arrived whole).
    public static func complete(_ bytes: [UInt8], limit: Int) -> HTTPBodyStream {
        let stream = HTTPBodyStream(limit: limit) { _ in }
        if !bytes.isEmpty { _ = stream.yield(bytes) }
        stream.finish()
        return stream
    }

    /// The next bytes of the body (everything buffered so far), or nil at its end. Throws
    /// an `HTTPError` when the body broke off (the client went away, or it was too large).
    public func next() async throws -> [UInt8]? {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8]?, any Error>) in
            let ready: Result<[UInt8]?, HTTPError>? = state.withLock { state in
                if !state.chunks.isEmpty {
                    let bytes = state.chunks.count == 1 ? state.chunks[0] : Array(state.chunks.joined())
                    state.chunks = []
                    state.buffered = 0
                    return .success(bytes)
                }
                if let failure = state.failure { return .failure(failure) }
                if state.ended { return .success(nil) }
                state.waiter = continuation
                return nil
            }
            guard let ready else { return }
            if case .success(let bytes?) = ready { credit(bytes.count) }
            continuation.resume(with: ready.mapError { $0 as any Error })
        }
    }

    // MARK: The transport's side (on its event loop)

    /// Hands bytes to the reader; returns how many are now buffered unread.
    @discardableResult
    func yield(_ bytes: [UInt8]) -> Int {
        let (waiter, buffered) = state.withLock { state -> (CheckedContinuation<[UInt8]?, any Error>?, Int) in
            guard state.failure == nil, !state.ended else { return (nil, 0) }
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, 0)
            }
            state.chunks.append(bytes)
            state.buffered += bytes.count
            return (nil, state.buffered)
        }
        if let waiter {
            credit(bytes.count)
            waiter.resume(returning: bytes)
        }
        return buffered
    }

    func finish() {
        let waiter = state.withLock { state in
            state.ended = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    func fail(_ error: HTTPError) {
        let waiter = state.withLock { state -> CheckedContinuation<[UInt8]?, any Error>? in
            guard !state.ended, state.failure == nil else { return nil }
            state.failure = error
            state.chunks = []
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(throwing: error)
    }

    var isFinished: Bool { state.withLock { $0.ended || $0.failure != nil } }

    static func tooLarge(_ limit: Int) -> HTTPError {
        HTTPError(413, code: "body_too_large", message: "request body exceeds \(limit) bytes")
    }

    static let brokenOff = HTTPError(400, code: "body_incomplete", message: "the client stopped sending before the body ended")
}

/// Owns a file descriptor; closes it when the last body or read using it is gone.
final class OwnedDescriptor: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { Glibc.close(fd) }
}

public struct HTTPFileError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// A region of an open file, sent as a response body (`HTTPResponse.file`).
public struct HTTPFileBody: Sendable {
    let descriptor: OwnedDescriptor
    public let offset: Int
    public let length: Int
    /// The whole file's size, whatever region this is.
    public let fileSize: Int

    /// Opens a regular file; the body is all of it.
    public init(path: String) throws(HTTPFileError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HTTPFileError(description: "\(path): \(String(cString: strerror(errno)))") }
        let descriptor = OwnedDescriptor(fd)
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw HTTPFileError(description: "\(path) is not a regular file")
        }
        self.init(descriptor: descriptor, offset: 0, length: Int(info.st_size), fileSize: Int(info.st_size))
    }

    init(descriptor: OwnedDescriptor, offset: Int, length: Int, fileSize: Int) {
        self.descriptor = descriptor
        self.offset = offset
        self.length = length
        self.fileSize = fileSize
    }

    /// The bytes `offset ..< offset + length` of the same file (a Range request's answer).
    public func region(offset: Int, length: Int) -> HTTPFileBody {
        precondition(offset >= 0 && length >= 0 && offset + length <= fileSize, "region outside the file")
        return HTTPFileBody(descriptor: descriptor, offset: offset, length: length, fileSize: fileSize)
    }

    static let readQueue = DispatchQueue(label: "flotilla.file-reads", attributes: .concurrent)
    static let chunkSize = 256 * 1024

    /// Reads the chunk at `position` (relative to the region) on a background queue and hands
    /// it to `done` on `loop`. An empty chunk before the end means the file shrank: an error.
    func readChunk(at position: Int, on loop: any EventLoop,
                   _ done: @escaping @Sendable (Result<[UInt8], HTTPFileError>) -> Void) {
        let want = min(Self.chunkSize, length - position)
        let (descriptor, at) = (self.descriptor, offset + position)
        Self.readQueue.async {
            var bytes = [UInt8](repeating: 0, count: want)
            let n = bytes.withUnsafeMutableBytes { pread(descriptor.fd, $0.baseAddress, want, off_t(at)) }
            let result: Result<[UInt8], HTTPFileError>
            if n < 0 {
                result = .failure(HTTPFileError(description: String(cString: strerror(errno))))
            } else if n == 0 && want > 0 {
                result = .failure(HTTPFileError(description: "file shorter than announced"))
            } else {
                bytes.removeSubrange(n...)
                result = .success(bytes)
            }
            loop.execute { done(result) }
        }
    }
}
