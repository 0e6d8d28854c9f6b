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
//   empty) until it reconnects. Entries also expire after 60 s, a last resort.
// Unknown devices (404) are never cached. The mechanism is NotifiedCache's; this file holds
// what is particular to devices.

import FlotillaWire
import Synchronization

/// The answer to `GET /api/v1/devices/{device}`, ready to send.
struct DeviceAnswer: Sendable {
    let deviceID: String
    let body: [UInt8]
    let etag: String
}

/// Keyed by the path's `{device}` as the client spelled it (an id or a name), tagged with the
/// device id that notifications name.
typealias DeviceCache = NotifiedCache<String, DeviceAnswer>

extension NotifiedCache where Key == String, Value == DeviceAnswer {
    static func devices() -> DeviceCache { DeviceCache(ttlSeconds: 60, capacity: 50_000, tag: { $0.deviceID }) }

    /// `payload` is what followed `devices:` in a notification: `*`, or ids separated by commas.
    func invalidate(payload: Substring) {
        guard !deafForTesting.load(ordering: .relaxed) else {
            ignoredForTesting.add(1, ordering: .relaxed)
            return
        }
        if payload == "*" { invalidateAll() } else { invalidate(tags: payload.split(separator: ",")) }
    }
}

extension APIContext {
    /// For tests: whether `GET /api/v1/devices/{key}` would be answered from the cache now.
    public func cachesDeviceForTesting(_ key: String) -> Bool { deviceCache.lookup(key) != nil }
    /// For tests: drop (true) or heed (false) the device notifications this replica hears.
    public func ignoreDeviceNotificationsForTesting(_ ignore: Bool) { deviceCache.deafForTesting.store(ignore, ordering: .relaxed) }
    /// For tests: how many device notifications a deaf cache has dropped so far.
    public var ignoredDeviceNotificationsForTesting: Int { deviceCache.ignoredForTesting.load(ordering: .relaxed) }
}
