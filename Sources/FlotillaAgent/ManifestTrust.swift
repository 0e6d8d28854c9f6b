// Why the agent believes a manifest (SECURITY.md; the server side is ManifestSigner.swift in
// FlotillaAPI). It acts only on `signed.payload`, and only when:
//   - the Ed25519 signature over those bytes checks against the pinned server key;
//   - `token_sha256` is the SHA-256 of this agent's own token (not another device's manifest);
//   - `expires_at` has not passed;
//   - it is not older than a manifest already accepted (60 s allowed for replicas' clocks);
//   - its execution is not one this agent already finished.
// The key is pinned in <state>/trust.json: the configured one (`signing_key`, handed out at
// enrollment), else the one pinned before, else fetched once from the server (trust on
// first use). The high-water mark and the finished executions live in the same file.
//
// Rotation: the server announces its next key with the current key's signature over it
// (`next.endorsement`). The agent keeps a next key only if that endorsement checks against
// the key it already pins; a manifest signed by the next key then makes it the pinned key
// (the old one is remembered as rotated away, so a configuration still naming it does not
// undo the rotation at the next start).

import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import Foundation

struct ManifestTrust {
    let path: String
    private(set) var publicKey: [UInt8]
    /// The server's endorsed next key, during a rotation.
    private(set) var nextKey: [UInt8]?
    /// Keys this agent rotated away from (base64url).
    private(set) var retired: [String] = []
    private(set) var highWater: Int
    private(set) var finished: [String]
    static let skew = 60, remembered = 64

    init(path: String, publicKey: [UInt8], highWater: Int = 0, finished: [String] = []) {
        self.path = path
        self.publicKey = publicKey
        self.highWater = highWater
        self.finished = finished
    }

    /// Loads the pinned state; `configured` (base64url) replaces a pinned key, `fetch` is
    /// called only when there is neither.
    static func load(root: String, configured: String?, fetch: () async throws -> [UInt8]) async throws -> (ManifestTrust, String) {
        let path = root + "/trust.json"
        let saved = (try? AgentFiles.read(path))?.objectValue ?? [:]
        let pinned = saved["public_key"]?.stringValue.flatMap(Base64URL.decode)
        let retired = saved["retired"]?.arrayValue?.compactMap(\.stringValue) ?? []
        var key: [UInt8], how: String
        if let configured, !(retired.contains(configured) && pinned?.count == 32) {
            guard let bytes = Base64URL.decode(configured), bytes.count == 32 else {
                throw AgentError.io("signing_key must be the server's 32-byte Ed25519 public key in base64url")
            }
            (key, how) = (bytes, "configured")
        } else if let pinned, pinned.count == 32 {
            (key, how) = (pinned, "pinned earlier")
        } else {
            (key, how) = (try await fetch(), "fetched from the server and pinned (trust on first use)")
        }
        var trust = ManifestTrust(path: path, publicKey: key, highWater: saved["high_water"]?.intValue ?? 0,
                                  finished: saved["finished"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        trust.retired = retired
        if pinned == key { trust.nextKey = saved["next_key"]?.stringValue.flatMap(Base64URL.decode) }
        if pinned != key { try trust.save() }
        return (trust, "manifest key \(Ed25519.keyID(key)) \(how)")
    }

    /// Adopts the server's announced next key (GET /api/v1/agent/signing-key) if the key
    /// pinned now endorses it. Returns what changed, for the log; nil when nothing did.
    mutating func learn(_ document: JSON) throws -> String? {
        guard let next = document.objectValue?["next"]?.objectValue,
              let key = next["public_key"]?.stringValue.flatMap(Base64URL.decode), key.count == 32, key != publicKey, key != nextKey else {
            return nil
        }
        guard let endorsement = next["endorsement"]?.stringValue.flatMap(Base64URL.decode),
              Ed25519.verify(signature: endorsement, of: ManifestKeyEndorsement.message(next: key), publicKey: publicKey) else {
            return "ignoring an announced next manifest key \(Ed25519.keyID(key)): not endorsed by the pinned key"
        }
        nextKey = key
        try save()
        return "the server announced its next manifest key \(Ed25519.keyID(key)), endorsed by the pinned one"
    }

    /// The execution to act on and when it was issued, or why the manifest is refused.
    /// `byNext`: it was signed by the announced next key (accepting it completes the rotation).
    func check(_ body: JSON, token: String, now: Int) -> Result<(execution: JSON, issuedAt: Int, byNext: Bool), Refusal> {
        guard let signed = body.objectValue?["signed"]?.objectValue else { return .failure(.init("unsigned")) }
        guard signed["alg"]?.stringValue == "ed25519", let payload = signed["payload"]?.stringValue.flatMap(Base64URL.decode),
              let signature = signed["signature"]?.stringValue.flatMap(Base64URL.decode) else {
            return .failure(.init("bad signature (not signed by key \(Ed25519.keyID(publicKey)))"))
        }
        let byNext: Bool
        if Ed25519.verify(signature: signature, of: payload, publicKey: publicKey) {
            byNext = false
        } else if let nextKey, Ed25519.verify(signature: signature, of: payload, publicKey: nextKey) {
            byNext = true
        } else {
            return .failure(.init("bad signature (not signed by key \(Ed25519.keyID(publicKey)))"))
        }
        guard let fields = (try? JSON.parse(payload))?.objectValue, fields["v"]?.intValue == 1,
              let issued = fields["issued_at"]?.intValue, let expires = fields["expires_at"]?.intValue,
              let execution = fields["execution"], let id = execution.objectValue?["id"]?.stringValue else {
            return .failure(.init("signed, but not a version-1 manifest payload"))
        }
        guard fields["token_sha256"]?.stringValue == sha256Hex(Array(token.utf8)) else {
            return .failure(.init("replayed: made for another device's token"))
        }
        if now > expires { return .failure(.init("expired at \(expires) (now \(now))")) }
        if issued < highWater - Self.skew { return .failure(.init("replayed: issued at \(issued), before one already accepted (\(highWater))")) }
        if finished.contains(id) { return .failure(.init("replayed: execution \(id) already finished here")) }
        return .success((execution, issued, byNext))
    }

    mutating func accepted(issuedAt: Int, byNext: Bool = false) throws {
        if byNext, let nextKey {
            // The server signs with the next key now: it is the pinned key from here on.
            retired = Array((retired + [Base64URL.encode(publicKey)]).suffix(8))
            publicKey = nextKey
            self.nextKey = nil
        } else {
            guard issuedAt > highWater else { return }
        }
        highWater = max(highWater, issuedAt)
        try save()
    }

    mutating func markFinished(_ execution: String) throws {
        finished = Array((finished + [execution]).suffix(Self.remembered))
        try save()
    }

    private func save() throws {
        guard !path.isEmpty else { return }  // held in memory only (the simulator's devices)
        var fields: [(String, JSON)] = [("public_key", .string(Base64URL.encode(publicKey))), ("high_water", .int(highWater)),
                                        ("finished", .array(finished.map(JSON.string))), ("retired", .array(retired.map(JSON.string)))]
        if let nextKey { fields.append(("next_key", .string(Base64URL.encode(nextKey)))) }
        try AgentFiles.writeAtomically(.fields(fields), to: path)
    }

    struct Refusal: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
