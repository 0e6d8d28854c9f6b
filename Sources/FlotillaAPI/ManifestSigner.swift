// Signed manifests (SECURITY.md). Every manifest `GET /api/v1/agent/next` hands out carries
// `signed`: the manifest again as exact bytes (`payload`, base64url) with an Ed25519
// signature over them. Agents act only on the payload, never on the unsigned copy beside
// it, so nothing between the server and the device (a proxy, a spoofed server, a
// compromised artifact host) can change what runs, what is downloaded (the SHA-256 is in
// the steps) or whom it is for. The payload:
//
//   {"v":1,"token_sha256":"<hex>","issued_at":<unix s>,"expires_at":<unix s>,"execution":{…}}
//
// `token_sha256` binds it to the device that asked: an agent refuses a manifest made for
// another device's token. `expires_at` bounds replay; agents also refuse payloads older than
// one they already accepted, and executions they have already finished.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

public struct ManifestSigner: Sendable {
    public let key: Ed25519.PrivateKey
    /// The key that will replace `key` (rotation): announced to agents, endorsed by `key`,
    /// never used to sign manifests until it becomes a server's `key`.
    public let next: Ed25519.PrivateKey?
    /// Seconds a signed manifest stays valid. A device acts on it at once; the bound is there
    /// so that a captured manifest cannot be replayed later.
    public let lifetime: Int

    public init(key: Ed25519.PrivateKey, next: Ed25519.PrivateKey? = nil, lifetime: Int = 3600) {
        self.key = key
        self.next = next
        self.lifetime = lifetime
    }

    public var keyID: String { Ed25519.keyID(key.publicKey) }

    /// `GET /api/v1/agent/signing-key`: what agents pin (configured, or fetched on first
    /// start), and during a rotation the next key with the current key's endorsement.
    var publicKeyJSON: JSON {
        var fields: [(String, JSON)] = [("alg", .string("ed25519")), ("key_id", .string(keyID)),
                                        ("public_key", .string(Base64URL.encode(key.publicKey)))]
        if let next, let endorsement = try? key.sign(ManifestKeyEndorsement.message(next: next.publicKey)) {
            fields.append(("next", .fields([
                ("key_id", .string(Ed25519.keyID(next.publicKey))), ("public_key", .string(Base64URL.encode(next.publicKey))),
                ("endorsement", .string(Base64URL.encode(endorsement))),
            ])))
        }
        return .fields(fields)
    }

    /// The `signed` member of a manifest for the device whose token hashes to `tokenHash`.
    public func sign(_ execution: JSON, tokenHash: [UInt8], now: Instant) throws -> JSON {
        let issued = Int(now.microseconds / 1_000_000)
        let payload = Array(JSON.fields([
            ("v", .int(1)), ("token_sha256", .string(hexString(tokenHash))),
            ("issued_at", .int(issued)), ("expires_at", .int(issued + lifetime)), ("execution", execution),
        ]).serialized.utf8)
        return .fields([
            ("alg", .string("ed25519")), ("key_id", .string(keyID)),
            ("payload", .string(Base64URL.encode(payload))), ("signature", .string(Base64URL.encode(try key.sign(payload)))),
        ])
    }
}
