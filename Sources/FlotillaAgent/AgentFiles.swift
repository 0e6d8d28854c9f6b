// The agent's state directory, every file of which survives a SIGKILL or a power cut:
//
//   journal.json      the machine (AgentMachine+Journal), rewritten before every side effect
//   manifest.json     the manifest of the execution in progress (the steps' concrete values)
//   installed.json    app → installed version, advanced when an execution succeeds
//   outbox/NNNNNNNNNN.json   reports not yet delivered, sent in name order
//   snapshot/         the known-good copies of the paths the flow names
//   downloads/        partial and finished downloads, by SHA-256
//
// Each JSON file is replaced atomically: write a temporary file, fsync it, rename it over
// the old one, fsync the directory. A reader sees the old file or the new one, never half.

import FlotillaCore
import FlotillaJSON
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct AgentFiles: Sendable {
    let root: String

    var journalPath: String { root + "/journal.json" }
    var manifestPath: String { root + "/manifest.json" }
    var installedPath: String { root + "/installed.json" }
    var outbox: String { root + "/outbox" }
    var snapshots: String { root + "/snapshot" }
    var downloads: String { root + "/downloads" }

    init(root: String) throws {
        self.root = root
        for directory in [root, root + "/outbox", root + "/downloads"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
    }

    // MARK: - Atomic JSON files

    static func writeAtomically(_ value: JSON, to path: String) throws {
        try writeAtomically(bytes: Array(value.serialized.utf8), to: path)
    }

    /// Temp file (mode 0600), fsync, rename, fsync of the directory.
    static func writeAtomically(bytes: [UInt8], to path: String) throws {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AgentError.io("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { close(fd); throw AgentError.io("cannot write \(temporary): \(String(cString: strerror(errno)))") }
            written += n
        }
        guard fsync(fd) == 0 else { close(fd); throw AgentError.io("fsync \(temporary) failed") }
        close(fd)
        guard rename(temporary, path) == 0 else { throw AgentError.io("cannot rename \(temporary): \(String(cString: strerror(errno)))") }
        try syncDirectory(of: path)
    }

    static func syncDirectory(of path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw AgentError.io("cannot open \(directory)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw AgentError.io("fsync \(directory) failed") }
    }

    static func read(_ path: String) throws -> JSON? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do { return try JSON.parse(Array(data)) } catch { throw AgentError.io("\(path) is not valid JSON: \(error)") }
    }

    static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw AgentError.io("cannot remove \(path)") }
        try syncDirectory(of: path)
    }

    // MARK: - Journal, manifest, installed versions

    func loadMachine() throws -> AgentMachine {
        guard let journal = try Self.read(journalPath) else { return AgentMachine() }
        do { return try AgentMachine(journal: journal) } catch {
            throw AgentError.io("\(journalPath): \(error.description); move it aside to start over")
        }
    }

    func save(_ machine: AgentMachine) throws { try Self.writeAtomically(machine.journal, to: journalPath) }

    func installed() -> [String: String] {
        ((try? Self.read(installedPath))?.objectValue ?? [:]).compactMapValues(\.stringValue)
    }

    func setInstalled(app: String, version: String) throws {
        var versions = installed()
        versions[app] = version
        try Self.writeAtomically(.object(versions.mapValues(JSON.string)), to: installedPath)
    }

    // MARK: - Outbox

    /// Queues a report; delivered in seq order by `pendingReports`.
    func enqueue(_ report: OutgoingReport) throws {
        let entry = JSON.fields([("execution", .string(report.execution)), ("body", report.body.json)])
        // Sequence numbers only grow within an execution; a global counter orders across them.
        // Zero-padded to a fixed width so that name order is number order. (Not
        // String(format: "%d"): that takes a 32-bit int and mangled 64-bit numbers.)
        let number = String(nextOutboxNumber())
        let name = String(repeating: "0", count: max(0, 16 - number.count)) + number
        try Self.writeAtomically(entry, to: "\(outbox)/\(name).json")
    }

    func pendingReports() -> [(path: String, execution: String, body: JSON)] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: outbox)) ?? [])
            .filter { $0.hasSuffix(".json") }.sorted()
        return names.compactMap { name in
            let path = "\(outbox)/\(name)"
            guard let entry = (try? Self.read(path))?.objectValue, let execution = entry["execution"]?.stringValue,
                  let body = entry["body"] else { return nil }
            return (path, execution, body)
        }
    }

    private func nextOutboxNumber() -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: outbox)) ?? []
        let last = names.compactMap { Int($0.prefix(while: \.isNumber)) }.max() ?? 0
        // Delivered files are gone: the wall clock keeps numbers growing once the outbox is
        // empty, the highest pending number while it is not (even if the clock steps back).
        return max(last, Int(Date().timeIntervalSince1970 * 1000)) + 1
    }
}

enum AgentError: Error, CustomStringConvertible {
    case io(String)
    case config(String)

    var description: String {
        switch self {
        case .io(let message), .config(let message): message
        }
    }
}
