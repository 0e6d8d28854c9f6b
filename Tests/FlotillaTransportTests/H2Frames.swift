// Hand-written HTTP/2 frames, for tests that must misbehave in ways no real client will.

struct H2Frame {
    let type: UInt8
    let flags: UInt8
    let stream: UInt32
    let payload: [UInt8]

    static let data: UInt8 = 0, headers: UInt8 = 1, rstStream: UInt8 = 3, settings: UInt8 = 4, goaway: UInt8 = 7

    var bytes: [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags,
                UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)] + payload
    }

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + H2Frame(type: settings, flags: 0, stream: 0, payload: []).bytes

    /// HPACK from the static table: :method GET, :scheme http, :path /.
    static func get(stream: UInt32, endStream: Bool = true) -> H2Frame {
        H2Frame(type: headers, flags: 0x4 | (endStream ? 0x1 : 0), stream: stream, payload: [0x82, 0x86, 0x84])
    }

    static func reset(stream: UInt32, code: UInt32 = 8) -> H2Frame {
        H2Frame(type: rstStream, flags: 0, stream: stream,
                payload: [UInt8(code >> 24), UInt8(code >> 16 & 0xff), UInt8(code >> 8 & 0xff), UInt8(code & 0xff)])
    }

    /// Splits a byte stream into frames (a trailing partial frame is ignored).
    static func parse(_ bytes: [UInt8]) -> [H2Frame] {
        var frames: [H2Frame] = []
        var i = 0
        while i + 9 <= bytes.count {
            let n = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            guard i + 9 + n <= bytes.count else { break }
            let stream = UInt32(bytes[i + 5] & 0x7f) << 24 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 8 | UInt32(bytes[i + 8])
            frames.append(H2Frame(type: bytes[i + 3], flags: bytes[i + 4], stream: stream, payload: Array(bytes[(i + 9)..<(i + 9 + n)])))
            i += 9 + n
        }
        return frames
    }

    /// SETTINGS payload as id → value.
    var settingsValues: [UInt16: UInt32] {
        var result: [UInt16: UInt32] = [:]
        var i = 0
        while i + 6 <= payload.count {
            let id = UInt16(payload[i]) << 8 | UInt16(payload[i + 1])
            result[id] = UInt32(payload[i + 2]) << 24 | UInt32(payload[i + 3]) << 16 | UInt32(payload[i + 4]) << 8 | UInt32(payload[i + 5])
            i += 6
        }
        return result
    }

    /// GOAWAY's error code.
    var errorCode: UInt32 {
        guard payload.count >= 8 else { return 0 }
        return UInt32(payload[4]) << 24 | UInt32(payload[5]) << 16 | UInt32(payload[6]) << 8 | UInt32(payload[7])
    }
}
