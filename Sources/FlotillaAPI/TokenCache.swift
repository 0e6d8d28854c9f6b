// Verified tokens (API tokens and device tokens), remembered for a few seconds so that a
// request does not need a database round trip just to learn who is calling.
//
// Revocation stays immediate: the revoking server flushes its own cache before answering,
// and every other replica flushes on the `flotilla_changes` notification its PGListener
// receives (milliseconds later). While the listener is disconnected notifications may be
// lost, so the cache is off until it is back. A lookup that started before a flush never
// re-inserts its (possibly stale) answer after it: entries are stored only if the
// generation they were read under is still current. Unknown tokens are never cached.

import FlotillaStore
import FlotillaTransport
import Synchronization

final class TokenCache<Value: Sendable>: Sendable {
    private struct State {
        var entries: [[UInt8]: (caller: Value, expires: UInt64)] = [:]
        var generation: UInt64 = 0
        var enabled = false
    }

    private let state = Mutex(State())
    private let ttlNanos: UInt64
    private let capacity: Int

    init(ttlSeconds: UInt64 = 10, capacity: Int = 10_000) {
        ttlNanos = ttlSeconds * 1_000_000_000
        self.capacity = capacity
    }

    /// The cached caller for this secret hash, if any and fresh.
    func lookup(_ hash: [UInt8]) -> Value? {
        let now = monotonicNanos()
        return state.withLock { state in
            guard state.enabled, let entry = state.entries[hash] else { return nil }
            if entry.expires < now {
                state.entries[hash] = nil
                return nil
            }
            return entry.caller
        }
    }

    /// Take this before asking the database; nil means "do not cache the answer".
    func currentGeneration() -> UInt64? {
        state.withLock { $0.enabled ? $0.generation : nil }
    }

    func store(_ hash: [UInt8], _ caller: Value, generation: UInt64?) {
        guard let generation else { return }
        let expires = monotonicNanos() + ttlNanos
        state.withLock { state in
            guard state.enabled, state.generation == generation else { return }
            if state.entries.count >= capacity { state.entries.removeAll(keepingCapacity: true) }
            state.entries[hash] = (caller, expires)
        }
    }

    func invalidateAll() {
        state.withLock { state in
            state.generation &+= 1
            state.entries.removeAll()
        }
    }

    /// Follows the listener: caching only while notifications can reach us.
    func setEnabled(_ enabled: Bool) {
        state.withLock { state in
            state.enabled = enabled
            state.generation &+= 1
            state.entries.removeAll()
        }
    }
}

extension ManagementAPI {
    /// For tests: whether the token cache is on (its listener is connected).
    public var cacheIsEnabledForTesting: Bool { tokens.currentGeneration() != nil }
    /// For tests: whether this secret is in the cache now.
    public func cachesTokenForTesting(_ secret: String) -> Bool { tokens.lookup(Secrets.sha256(secret.utf8)) != nil }
    /// For tests: whether this device token is in the cache now.
    public func cachesDeviceTokenForTesting(_ secret: String) -> Bool { deviceTokens.lookup(Secrets.sha256(secret.utf8)) != nil }
}
