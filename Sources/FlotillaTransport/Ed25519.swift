// Ed25519 signatures through OpenSSL's libcrypto (EVP, raw 32-byte keys), for execution
// manifests: the server signs what it hands a device, the agent verifies before acting.
// Here rather than in the server: the agent links this module and not the database layer.

import COpenSSL

public enum Ed25519 {
    public struct KeyError: Error, CustomStringConvertible {
        public let description: String
    }

    /// A signing key, kept as its 32-byte seed (what the key file holds).
    public struct PrivateKey: Sendable {
        public let seed: [UInt8]
        public let publicKey: [UInt8]

        public init(seed: [UInt8]) throws {
            guard seed.count == 32 else { throw KeyError(description: "an Ed25519 private key is 32 bytes, not \(seed.count)") }
            let key = try Ed25519.pkey(seed, isPrivate: true)
            defer { EVP_PKEY_free(key) }
            var out = [UInt8](repeating: 0, count: 32)
            var length = 32
            guard EVP_PKEY_get_raw_public_key(key, &out, &length) == 1, length == 32 else {
                throw KeyError(description: "OpenSSL could not derive the public key")
            }
            self.seed = seed
            publicKey = out
        }

        /// A new key from OpenSSL's CSPRNG.
        public static func generate() throws -> PrivateKey {
            var seed = [UInt8](repeating: 0, count: 32)
            guard RAND_bytes(&seed, 32) == 1 else { throw KeyError(description: "RAND_bytes failed") }
            return try PrivateKey(seed: seed)
        }

        /// The 64-byte signature of `message`.
        public func sign(_ message: [UInt8]) throws -> [UInt8] {
            let key = try Ed25519.pkey(seed, isPrivate: true)
            defer { EVP_PKEY_free(key) }
            guard let context = EVP_MD_CTX_new() else { throw KeyError(description: "out of memory") }
            defer { EVP_MD_CTX_free(context) }
            var signature = [UInt8](repeating: 0, count: 64)
            var length = 64
            // Ed25519 hashes internally: no digest is named, and the message goes in one piece.
            guard EVP_DigestSignInit(context, nil, nil, nil, key) == 1,
                  EVP_DigestSign(context, &signature, &length, message, message.count) == 1, length == 64 else {
                throw KeyError(description: "OpenSSL could not sign")
            }
            return signature
        }
    }

    /// Whether `signature` is `publicKey`'s signature of `message`. Any malformed input is false.
    public static func verify(signature: [UInt8], of message: [UInt8], publicKey: [UInt8]) -> Bool {
        guard signature.count == 64, publicKey.count == 32, let key = try? pkey(publicKey, isPrivate: false) else { return false }
        defer { EVP_PKEY_free(key) }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        return EVP_DigestVerifyInit(context, nil, nil, nil, key) == 1
            && EVP_DigestVerify(context, signature, signature.count, message, message.count) == 1
    }

    /// A short, stable name for a public key (the first 8 bytes of its SHA-256, in hex), so
    /// logs and answers can say which key signed without printing the key.
    public static func keyID(_ publicKey: [UInt8]) -> String { String(sha256Hex(publicKey).prefix(16)) }

    private static func pkey(_ bytes: [UInt8], isPrivate: Bool) throws -> OpaquePointer {
        let key = isPrivate ? EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, bytes, bytes.count)
                            : EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, bytes, bytes.count)
        guard let key else { throw KeyError(description: "OpenSSL refused the Ed25519 key") }
        return key
    }
}
