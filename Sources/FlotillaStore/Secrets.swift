// Random secrets and their hashes (OpenSSL's libcrypto): API and device tokens are
// generated here, stored only as SHA-256 and compared in constant time.

import COpenSSL
import FlotillaJSON

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

    public static func base64URL(_ bytes: [UInt8]) -> String { Base64URL.encode(bytes) }

    /// Decodes unpadded base64url; nil for anything else.
    public static func decodeBase64URL(_ text: String) -> [UInt8]? { Base64URL.decode(text) }
}
