// What the HTTP/2 server and client sessions share: building nghttp2 header lists and
// draining `nghttp2_session_mem_send` into the channel. nghttp2 is used sans-I/O: bytes
// in through `mem_recv`, bytes out through `mem_send`, one `send` per event.

import CNghttp2

/// Header fields as nghttp2 wants them: pointers into one contiguous buffer, valid during `body`.
func withNGHTTP2Headers<R>(_ fields: [(name: String, value: String)],
                           _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
    // Two allocations in all: the bytes of every name and value, then the nv array pointing into them.
    let total = fields.reduce(1) { $0 + $1.name.utf8.count + $1.value.utf8.count }
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: total) { storage in
        withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(1, fields.count)) { nva in
            var offset = 0
            func copy(_ text: String) -> (UnsafeMutablePointer<UInt8>, Int) {
                let start = storage.baseAddress! + offset
                var text = text
                let count = text.withUTF8 { utf8 in
                    start.update(from: utf8.baseAddress ?? UnsafePointer(start), count: utf8.count)
                    return utf8.count
                }
                offset += count
                return (start, count)
            }
            for (i, field) in fields.enumerated() {
                let (name, nameLength) = copy(field.name)
                let (value, valueLength) = copy(field.value)
                (nva.baseAddress! + i).initialize(to: nghttp2_nv(name: name, value: value, namelen: nameLength,
                                                                 valuelen: valueLength, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
            }
            return body(nva.baseAddress!, fields.count)
        }
    }
}

/// Headers that are connection-specific in HTTP/1.1 and forbidden in HTTP/2 (RFC 9113 §8.2.2).
func isConnectionSpecificHeader(_ lowercasedName: String) -> Bool {
    switch lowercasedName {
    case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host": true
    default: false
    }
}

extension SocketChannel {
    /// Moves what nghttp2 wants to send into the channel's buffer and sends it. Output is
    /// produced in slices of at most `maxQueued` bytes, so a slow reader cannot make us buffer
    /// without bound: when the socket blocks, the channel's writability event resumes us.
    /// Returns false on a fatal session error.
    func drainAndFlush(session: OpaquePointer, maxQueued: Int) -> Bool {
        while !isClosed {
            var data: UnsafePointer<UInt8>?
            let count = nghttp2_session_mem_send(session, &data)
            if count < 0 { return false }
            if count > 0, let data {
                write(UnsafeRawBufferPointer(start: data, count: count))
                if pendingOutboundBytes < maxQueued { continue }
            }
            flush()  // one send for everything gathered in this event
            if count == 0 || isWriteBlocked { return true }
        }
        return true
    }
}

/// The C callback table: nghttp2 copies it into each session, so one table serves all.
struct NGHTTP2Callbacks: @unchecked Sendable {
    let pointer: OpaquePointer

    init(_ configure: (OpaquePointer) -> Void) {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        configure(callbacks!)
        pointer = callbacks!
    }
}

/// An in-memory body handed to nghttp2 slice by slice (its data source read callback).
struct OutgoingBody {
    private var bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8] = []) { self.bytes = bytes }

    /// Copies the next slice into `buffer`; flags EOF (and frees the bytes) at the end.
    mutating func read(into buffer: UnsafeMutablePointer<UInt8>, capacity: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        let count = min(capacity, bytes.count - offset)
        bytes.withUnsafeBytes { raw in
            if count > 0 { UnsafeMutableRawPointer(buffer).copyMemory(from: raw.baseAddress! + offset, byteCount: count) }
        }
        offset += count
        if offset == bytes.count {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            bytes = []
            offset = 0
        }
        return count
    }
}

func stringFrom(_ pointer: UnsafePointer<UInt8>?, _ count: Int) -> String {
    guard let pointer else { return "" }
    return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
}
