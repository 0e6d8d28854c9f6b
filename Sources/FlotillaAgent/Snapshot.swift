// The known-good: copies of the paths a flow names, taken before anything is installed,
// restored exactly on rollback (contents, modes, symlinks; files the update added vanish,
// files it deleted come back, a path that did not exist is removed again).
//
//   snapshot/index.json        [{"path": "/var/lib/hardhat/models/current", "present": true}, …]
//   snapshot/0, snapshot/1 …   `cp -a` copies of each present path
//
// The snapshot is built in snapshot.tmp and renamed into place once complete and synced,
// so a crash while taking it leaves either no snapshot or a whole one.

import COpenSSL
import FlotillaJSON
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum Snapshot {
    static func take(_ paths: [String], files: AgentFiles) throws(StepFailure) {
        let building = files.snapshots + ".tmp"
        do {
            try? FileManager.default.removeItem(atPath: building)
            try FileManager.default.createDirectory(atPath: building, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            var index: [JSON] = []
            for (n, path) in paths.enumerated() {
                var info = stat()
                let present = lstat(path, &info) == 0
                if present { try tool(["/bin/cp", "-a", "--", path, "\(building)/\(n)"]) }
                index.append(.fields([("path", .string(path)), ("present", .bool(present))]))
            }
            try AgentFiles.writeAtomically(.array(index), to: "\(building)/index.json")
            try syncFilesystem(building)
            try? FileManager.default.removeItem(atPath: files.snapshots)
            guard rename(building, files.snapshots) == 0 else { throw AgentError.io("cannot rename \(building)") }
            try AgentFiles.syncDirectory(of: files.snapshots)
        } catch let failure as StepFailure {
            throw failure
        } catch {
            throw StepFailure(message: "cannot snapshot the known-good: \(error)")
        }
    }

    /// Puts every snapshotted path back as it was. Safe to run again after a crash.
    static func restore(files: AgentFiles) throws(StepFailure) {
        guard let entries = (try? AgentFiles.read("\(files.snapshots)/index.json"))?.arrayValue else {
            // No snapshot was completed, so nothing was installed over the known-good.
            return
        }
        do {
            for (n, entry) in entries.enumerated() {
                guard let path = entry.objectValue?["path"]?.stringValue else { continue }
                try tool(["/bin/rm", "-rf", "--", path])
                if entry.objectValue?["present"] == .bool(true) {
                    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                            withIntermediateDirectories: true)
                    try tool(["/bin/cp", "-a", "--", "\(files.snapshots)/\(n)", path])
                }
                try syncFilesystem((path as NSString).deletingLastPathComponent)
            }
        } catch let failure as StepFailure {
            throw failure
        } catch {
            throw StepFailure(message: "cannot restore the known-good: \(error)")
        }
    }

    /// After a rollback: every snapshotted path is back as it was (contents, symlinks, and
    /// absent paths absent), so the rollback script did not undo the restore.
    static func verify(files: AgentFiles) throws(StepFailure) {
        guard let entries = (try? AgentFiles.read("\(files.snapshots)/index.json"))?.arrayValue else { return }
        for (n, entry) in entries.enumerated() {
            guard let path = entry.objectValue?["path"]?.stringValue else { continue }
            var info = stat()
            let exists = lstat(path, &info) == 0
            if entry.objectValue?["present"] == .bool(true) {
                guard exists else { throw StepFailure(message: "after the rollback \(path) is missing") }
                let result = try? Script.execute(["/usr/bin/diff", "-r", "--no-dereference", "-q", "\(files.snapshots)/\(n)", path], timeout: 600)
                guard result?.succeeded == true else {
                    throw StepFailure(message: "after the rollback \(path) differs from the known-good", logTail: result?.tail)
                }
            } else if exists {
                throw StepFailure(message: "after the rollback \(path) exists, but it did not before the update")
            }
        }
    }

    static func drop(files: AgentFiles) {
        try? FileManager.default.removeItem(atPath: files.snapshots)
    }

    private static func tool(_ command: [String]) throws {
        let result = try Script.execute(command, timeout: 3600)
        guard result.succeeded else {
            throw StepFailure(message: "\(command.joined(separator: " ")) failed (\(result.exitCode)): \(result.tail)")
        }
    }

    /// Everything copied is on disk before the snapshot (or restore) counts as done.
    /// (`sync -f` is syncfs(2), which Swift's Glibc module does not import.)
    private static func syncFilesystem(_ path: String) throws {
        try tool(["/bin/sync", "-f", path])
    }
}
