// A growable byte buffer with a read cursor: the outbound queue of a connection and
// the unparsed input of the HTTP/1.1 parser.

struct ByteBuffer {
    private(set) var storage: [UInt8] = []
    private(set) var readerIndex = 0

    var readableCount: Int { storage.count - readerIndex }
    var isEmpty: Bool { readerIndex == storage.count }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        storage.append(contentsOf: bytes)
    }

    /// Lets `fill` write up to `count` bytes straight into the buffer's tail; it returns how many it wrote.
    mutating func appendWithUnsafeSpace(upTo count: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Int) {
        let start = storage.count
        storage.append(contentsOf: repeatElement(0, count: count))
        let written = storage.withUnsafeMutableBytes { raw in
            fill(UnsafeMutableRawBufferPointer(rebasing: raw[start..<(start + count)]))
        }
        storage.removeLast(count - written)
    }

    mutating func consume(_ count: Int) {
        readerIndex += count
        if readerIndex == storage.count {
            // Drained: give large buffers back, keep small ones to avoid malloc churn.
            storage.removeAll(keepingCapacity: storage.capacity <= 16 * 1024)
            readerIndex = 0
        } else if readerIndex > 64 * 1024 && readerIndex > storage.count / 2 {
            storage.removeFirst(readerIndex)
            readerIndex = 0
        }
    }

    func withReadableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[readerIndex...]))
        }
    }

    mutating func removeAll() {
        storage = []
        readerIndex = 0
    }
}
