// The answers of `GET /api/v1/devices/{device}`, kept so that reading a device does not cost a
// database round trip (the query joins four tables; a cached answer costs a dictionary lookup).
//
// Why it cannot serve a stale device for longer than a notification takes to arrive:
// - Every change to what a device's answer is built from sends `devices:<ids>` (or
//   `devices:*`) on the `flotilla_changes` channel when it commits. Triggers send it
//   (migrations/0010), so no write path can forget, psql sessions included. Every replica's
//   PGListener then drops those devices' entries.
// - A management write on this replica also flushes this cache before it answers, so a client
//   reads its own writes here without waiting for the notification.
// - A read that began before an invalidation never stores its answer after it: each store
//   carries the generation it was read under, and every invalidation starts a new one.
// - While the listener is disconnected notifications may be lost, so the cache is off (and
//   empty) until it reconnects. Entries also expire after `ttlSeconds`, a last resort.
// Unknown devices (404) are never cached.

import FlotillaTransport
import Synchronization

final class DeviceCache: Sendable {
    struct Entry: Sendable {
        let deviceID: String
        let body: [UInt8]
        let etag: String
    }

    private struct State {
        /// Keyed by the path's `{device}` as the client spelled it (an id or a name).
        var entries: [String: (entry: Entry, expires: UInt64)] = [:]
        /// Device id → the keys its entries are stored under, to invalidate by id.
        var keys: [String: [String]] = [:]
        var generation: UInt64 = 0
        var enabled = false

        mutating func removeAll() {
            generation &+= 1
            entries.removeAll()
            keys.removeAll()
        }
    }

    private let state = Mutex(State())
    /// Tests set this to drop the notifications this replica hears, to see what the cache
    /// does without them (a write made here must still be read here at once).
    let deafForTesting = Atomic(false)
    private let ttlNanos: UInt64
    private let capacity: Int

    init(ttlSeconds: UInt64 = 60, capacity: Int = 50_000) {
        ttlNanos = ttlSeconds * 1_000_000_000
        self.capacity = capacity
    }

    func lookup(_ key: String) -> Entry? {
        let now = monotonicNanos()
        return state.withLock { state in
            guard state.enabled, let cached = state.entries[key] else { return nil }
            guard cached.expires >= now else { return nil }  // replaced by the next store
            return cached.entry
        }
    }

    /// Take this before asking the database; nil means "do not cache the answer".
    func currentGeneration() -> UInt64? {
        state.withLock { $0.enabled ? $0.generation : nil }
    }

    func store(_ key: String, _ entry: Entry, generation: UInt64?) {
        guard let generation else { return }
        let expires = monotonicNanos() + ttlNanos
        state.withLock { state in
            guard state.enabled, state.generation == generation else { return }
            // Full: start again rather than track recency; a refill costs one query per device.
            if state.entries.count >= capacity { state.removeAll(); return }
            let previous = state.entries.updateValue((entry, expires), forKey: key)
            // A name can move to another device (deleted, registered again): index it under both
            // until the old one is invalidated; dropping too much is harmless, too little is not.
            if previous?.entry.deviceID != entry.deviceID {
                state.keys[entry.deviceID, default: []].append(key)
            }
        }
    }

    /// `payload` is what followed `devices:` in a notification: `*`, or ids separated by commas.
    func invalidate(payload: Substring) {
        if payload == "*" { return invalidateAll() }
        state.withLock { state in
            state.generation &+= 1
            for id in payload.split(separator: ",") {
                guard let keys = state.keys.removeValue(forKey: String(id)) else { continue }
                for key in keys { state.entries[key] = nil }
            }
        }
    }

    func invalidateAll() {
        state.withLock { $0.removeAll() }
    }

    /// Follows the listener: caching only while notifications can reach us.
    func setEnabled(_ enabled: Bool) {
        state.withLock { state in
            state.enabled = enabled
            state.removeAll()
        }
    }

    var count: Int { state.withLock { $0.entries.count } }
}

extension ManagementAPI {
    /// For tests: whether `GET /api/v1/devices/{key}` would be answered from the cache now.
    public func cachesDeviceForTesting(_ key: String) -> Bool { deviceCache.lookup(key) != nil }
    /// For tests: drop (true) or heed (false) the device notifications this replica hears.
    public func ignoreDeviceNotificationsForTesting(_ ignore: Bool) { deviceCache.deafForTesting.store(ignore, ordering: .relaxed) }
}
