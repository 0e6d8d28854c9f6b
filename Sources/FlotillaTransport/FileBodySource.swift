// A file region fed to nghttp2 as a DATA source (request bodies in the client, response
// bodies in the server). Disk reads happen on a background queue, one chunk ahead, so the
// event loop never blocks on the disk: nghttp2 is told NGHTTP2_ERR_DEFERRED while a chunk
// is being read and resumed when it arrives.

import CNghttp2

final class FileBodySource: @unchecked Sendable {
    let file: HTTPFileBody
    private var position = 0        // region offset of the next chunk to read
    private var chunk: [UInt8] = []
    private var chunkOffset = 0
    private var reading = false
    private var closed = false

    var size: Int { file.length }

    init(_ file: HTTPFileBody) { self.file = file }

    convenience init(path: String) throws(HTTPClientError) {
        do {
            self.init(try HTTPFileBody(path: path))
        } catch {
            throw .bodyReadFailed(error.description)
        }
    }

    /// nghttp2's read callback for this body; `resume` runs on `loop` when a deferred chunk is ready.
    func read(into buffer: UnsafeMutablePointer<UInt8>, capacity: Int, flags: UnsafeMutablePointer<UInt32>,
              loop: any EventLoop, resume: @escaping @Sendable (Result<Void, HTTPFileError>) -> Void) -> Int {
        if chunkOffset < chunk.count {
            let count = min(capacity, chunk.count - chunkOffset)
            chunk.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(buffer).copyMemory(from: raw.baseAddress! + chunkOffset, byteCount: count)
            }
            chunkOffset += count
            if chunkOffset == chunk.count && position >= size { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
            return count
        }
        if position >= size {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            return 0
        }
        if !reading {
            reading = true
            file.readChunk(at: position, on: loop) { [self] result in
                reading = false
                guard !closed else { return }  // the stream ended while the disk was busy
                switch result {
                case .success(let bytes):
                    chunk = bytes
                    chunkOffset = 0
                    position += bytes.count
                    resume(.success(()))
                case .failure(let error):
                    resume(.failure(error))
                }
            }
        }
        return Int(NGHTTP2_ERR_DEFERRED.rawValue)
    }

    func close() { closed = true }
}
