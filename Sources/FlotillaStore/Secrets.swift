// Random secrets and their hashes (OpenSSL's libcrypto): API and device tokens are
// generated here, stored only as SHA-256 and compared in constant time.

import COpenSSL

public enum Secrets {
    /// `count` bytes from OpenSSL's CSPRNG.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let ok = bytes.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        // Without randomness no token can be safe; refusing to go on is the only correct answer.
        precondition(ok == 1, "RAND_bytes failed")
        return bytes
    }

    public static func sha256<S: Sequence>(_ data: S) -> [UInt8] where S.Element == UInt8 {
        let bytes = Array(data)
        var digest = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBufferPointer { input in
            digest.withUnsafeMutableBufferPointer { output in
                _ = SHA256(input.baseAddress, input.count, output.baseAddress)
            }
        }
        return digest
    }

    public static func sha256Hex(_ text: String) -> String { hexString(sha256(text.utf8)) }

    /// Equality whose time does not depend on where the inputs differ.
    public static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    /// A new secret: `prefix` + 32 random bytes in unpadded base64url (43 characters).
    /// The prefix (`flt_a_`, `flt_d_`) lets secret scanners and humans tell token kinds apart.
    public static func newToken(prefix: String) -> String {
        prefix + base64URL(randomBytes(32))
    }

    public static func base64URL(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out = [UInt8]()
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let b0 = UInt32(bytes[index])
            let b1 = index + 1 < bytes.count ? UInt32(bytes[index + 1]) : 0
            let b2 = index + 2 < bytes.count ? UInt32(bytes[index + 2]) : 0
            let triple = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(triple >> 18 & 63)])
            out.append(alphabet[Int(triple >> 12 & 63)])
            if index + 1 < bytes.count { out.append(alphabet[Int(triple >> 6 & 63)]) }
            if index + 2 < bytes.count { out.append(alphabet[Int(triple & 63)]) }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes unpadded base64url; nil for anything else.
    public static func decodeBase64URL(_ text: String) -> [UInt8]? {
        var values: [UInt32] = []
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): values.append(UInt32(byte - 65))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): values.append(UInt32(byte - 97 + 26))
            case UInt8(ascii: "0")...UInt8(ascii: "9"): values.append(UInt32(byte - 48 + 52))
            case UInt8(ascii: "-"): values.append(62)
            case UInt8(ascii: "_"): values.append(63)
            default: return nil
            }
        }
        guard values.count % 4 != 1 else { return nil }
        var out: [UInt8] = []
        var index = 0
        while index < values.count {
            let chunk = values[index..<min(index + 4, values.count)]
            var triple: UInt32 = 0
            for (offset, value) in chunk.enumerated() { triple |= value << (18 - 6 * UInt32(offset)) }
            out.append(UInt8(triple >> 16 & 0xff))
            if chunk.count > 2 { out.append(UInt8(triple >> 8 & 0xff)) }
            if chunk.count > 3 { out.append(UInt8(triple & 0xff)) }
            index += 4
        }
        return out
    }
}
