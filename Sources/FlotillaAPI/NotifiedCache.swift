// Answers remembered for a few seconds so that a request needs no database round trip:
// verified tokens (API and device tokens), idle devices, device answers (DeviceCache).
//
// A change stays visible at once: the server that makes it flushes its own cache before
// answering, and every other replica flushes on the `flotilla_changes` notification its
// PGListener receives (milliseconds later). While the listener is disconnected notifications
// may be lost, so the cache is off until it is back. A lookup that started before a flush
// never re-inserts its (possibly stale) answer after it: entries are stored only if the
// generation they were read under is still current. Unknown tokens and devices are never
// cached.
//
// With `tag`, entries can also be dropped by tag rather than all at once: a device's answers
// (stored under its id and under its name) are tagged with its id, which is what a
// notification names.

import FlotillaStore
import FlotillaTransport
import FlotillaWire
import Synchronization

final class NotifiedCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct State {
        var entries: [Key: (value: Value, expires: UInt64)] = [:]
        /// Tag → the keys stored under it (only with `tag`).
        var tagged: [String: [Key]] = [:]
        var generation: UInt64 = 0
        var enabled = false

        mutating func removeAll() {
            entries.removeAll()
            tagged.removeAll()
        }
    }

    private let state = Mutex(State())
    private let ttlNanos: UInt64
    private let capacity: Int
    private let tag: (@Sendable (Value) -> String)?
    /// Tests set this to ignore the notifications this replica hears (see
    /// `invalidate(payload:)`), to see what the cache does without them.
    let deafForTesting = Atomic(false)
    /// Notifications a deaf cache dropped: a test waits for one instead of sleeping.
    let ignoredForTesting = Atomic(0)

    init(ttlSeconds: UInt64 = 10, capacity: Int = 10_000, tag: (@Sendable (Value) -> String)? = nil) {
        ttlNanos = ttlSeconds * 1_000_000_000
        self.capacity = capacity
        self.tag = tag
    }

    /// The cached value for `key`, if any and fresh.
    func lookup(_ key: Key) -> Value? {
        let now = monotonicNanos()
        return state.withLock { state in
            guard state.enabled, let entry = state.entries[key] else { return nil }
            if entry.expires < now {
                state.entries[key] = nil  // its tag's list keeps the key until the next store or flush
                return nil
            }
            return entry.value
        }
    }

    /// Take this before asking the database; nil means "do not cache the answer".
    func currentGeneration() -> UInt64? {
        state.withLock { $0.enabled ? $0.generation : nil }
    }

    func store(_ key: Key, _ value: Value, generation: UInt64?) {
        guard let generation else { return }
        let expires = monotonicNanos() + ttlNanos
        state.withLock { state in
            guard state.enabled, state.generation == generation else { return }
            // Full: start again rather than track recency (not a change: no new generation).
            if state.entries.count >= capacity { state.removeAll() }
            state.entries[key] = (value, expires)
            // A name can move to another device (deleted, registered again): the key then sits
            // under both tags until the old one is dropped; dropping too much is harmless.
            if let tag = tag?(value), !(state.tagged[tag]?.contains(key) ?? false) {
                state.tagged[tag, default: []].append(key)
            }
        }
    }

    /// Drops the entries stored under these tags.
    func invalidate<Tags: Sequence>(tags: Tags) where Tags.Element: StringProtocol {
        state.withLock { state in
            state.generation &+= 1
            for tag in tags {
                guard let keys = state.tagged.removeValue(forKey: String(tag)) else { continue }
                for key in keys { state.entries[key] = nil }
            }
        }
    }

    func invalidateAll() {
        state.withLock { state in
            state.generation &+= 1
            state.removeAll()
        }
    }

    /// Follows the listener: caching only while notifications can reach us.
    func setEnabled(_ enabled: Bool) {
        state.withLock { state in
            state.enabled = enabled
            state.generation &+= 1
            state.removeAll()
        }
    }
}

typealias TokenCache<Value: Sendable> = NotifiedCache<[UInt8], Value>

extension APIContext {
    /// For tests: whether the token cache is on (its listener is connected).
    public var cacheIsEnabledForTesting: Bool { tokens.currentGeneration() != nil }
    /// For tests: whether this secret is in the cache now.
    public func cachesTokenForTesting(_ secret: String) -> Bool { tokens.lookup(Secrets.sha256(secret.utf8)) != nil }
    /// For tests: whether this device token is in the cache now.
    public func cachesDeviceTokenForTesting(_ secret: String) -> Bool { deviceTokens.lookup(Secrets.sha256(secret.utf8)) != nil }
}
