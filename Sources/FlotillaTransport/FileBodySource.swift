// A request body streamed from a file. Disk reads happen on a background queue, one
// chunk ahead, so the event loop never blocks on the disk: nghttp2 is told
// NGHTTP2_ERR_DEFERRED while a chunk is being read and resumed when it arrives.

import CNghttp2
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

final class FileBodySource: @unchecked Sendable {
    private static let chunkSize = 256 * 1024
    private static let readQueue = DispatchQueue(label: "flotilla.file-reads", attributes: .concurrent)
    private let fd: Int32
    let size: Int
    private var offset = 0          // file offset of the next chunk to read
    private var chunk: [UInt8] = []
    private var chunkOffset = 0
    private var reading = false
    private var closed = false

    init(path: String) throws(HTTPClientError) {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .bodyReadFailed("\(path): \(String(cString: strerror(errno)))") }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(fd)
            throw .bodyReadFailed("\(path) is not a regular file")
        }
        size = Int(info.st_size)
    }

    /// nghttp2's read callback for this body; `resume` runs on `loop` when a deferred chunk is ready.
    func read(into buffer: UnsafeMutablePointer<UInt8>, capacity: Int, flags: UnsafeMutablePointer<UInt32>,
              loop: any EventLoop, resume: @escaping @Sendable (Result<Void, HTTPClientError>) -> Void) -> Int {
        if chunkOffset < chunk.count {
            let count = min(capacity, chunk.count - chunkOffset)
            chunk.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(buffer).copyMemory(from: raw.baseAddress! + chunkOffset, byteCount: count)
            }
            chunkOffset += count
            if chunkOffset == chunk.count && offset >= size { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
            return count
        }
        if offset >= size {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            return 0
        }
        if !reading {
            reading = true
            let (fd, at, want) = (self.fd, offset, min(Self.chunkSize, size - offset))
            Self.readQueue.async {
                var bytes = [UInt8](repeating: 0, count: want)
                let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(at)) }
                let error = n < 0 ? String(cString: strerror(errno)) : nil
                let read = bytes
                loop.execute { [self] in
                    reading = false
                    guard !closed else {
                        Glibc.close(fd)  // close() waited for this read
                        return
                    }
                    if let error { return resume(.failure(.bodyReadFailed(error))) }
                    // A file that shrank under us must not leave the stream hanging.
                    guard n > 0 else { return resume(.failure(.bodyReadFailed("file shorter than announced"))) }
                    chunk = Array(read[0..<n])
                    chunkOffset = 0
                    offset += n
                    resume(.success(()))
                }
            }
        }
        return Int(NGHTTP2_ERR_DEFERRED.rawValue)
    }

    func close() {
        guard !closed else { return }
        closed = true
        // With a read in flight the fd is closed when it lands: closing now could let the
        // number be reused by another open() and the pending pread read the wrong file.
        if !reading { Glibc.close(fd) }
    }
}
