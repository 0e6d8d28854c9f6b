// Files in the artifact store that no row names: an upload renames its file into place
// and inserts the row in one transaction, so a commit that fails after the rename (the
// database went away) leaves a file behind; so does a crash mid-upload in incoming/.
// The collector removes them. Each candidate is checked again under the artifact's
// advisory lock, which an upload holds from the rename to its commit: a file whose upload
// is still committing is never taken for an orphan.

import FlotillaStore
import FlotillaWire

extension APIContext {
    /// Removes store files without an `artifacts` row and day-old leftovers of crashed
    /// uploads. Returns the hashes removed. Safe to run on every replica at once.
    @discardableResult
    public func collectOrphanArtifacts(incomingAge: Int = 86_400) async throws -> [String] {
        artifacts.files.removeStaleIncoming(olderThan: incomingAge)
        let stored = artifacts.files.storedHashes()
        guard !stored.isEmpty else { return [] }
        let candidates = try await db.query("""
            SELECT s FROM unnest(\(PGTextArray(stored))::text[]) AS s WHERE NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = s)
            """).map { try $0.decode(String.self) }
        var removed: [String] = []
        for sha256 in candidates {
            let orphan = try await db.transaction { [artifacts] conn -> Bool in
                try ArtifactStore.lock(conn, sha256)
                guard try conn.query("SELECT 1 FROM artifacts WHERE sha256 = \(sha256)").isEmpty else { return false }
                artifacts.files.remove(sha256)
                return true
            }
            if orphan { removed.append(sha256) }
        }
        if !removed.isEmpty {
            logger.warning("removed artifact files no row names (an upload whose commit failed)", metadata: ["count": .stringConvertible(removed.count)])
        }
        return removed
    }
}
