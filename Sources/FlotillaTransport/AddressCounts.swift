// Open connections per client address, for the per-address cap (HTTPServerLimits
// .maxConnectionsPerAddress): one client cannot take every socket the server has. Taken on
// the accept queue, given back on the connection's loop when it closes.

import Synchronization

final class AddressCounts: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    /// Counts one more connection from `host`, unless it has `cap` already (0: no cap).
    func tryAcquire(_ host: String, cap: Int) -> Bool {
        counts.withLock { counts in
            let current = counts[host, default: 0]
            if cap > 0 && current >= cap { return false }
            counts[host] = current + 1
            return true
        }
    }

    func release(_ host: String) {
        counts.withLock { counts in
            let remaining = counts[host, default: 1] - 1
            counts[host] = remaining > 0 ? remaining : nil
        }
    }
}
