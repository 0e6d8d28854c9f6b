// The artifact store's files: content-addressed (`<dir>/sha256/ab/abcdef…`), written
// through `<dir>/incoming/` so a file under its name is always complete: an upload is
// hashed while it streams in, fsynced, then renamed into place (and the directory fsynced).
// Two uploads of the same bytes end as one file. Directory layout and durability live
// here; which rows point at which file is the API's business.

import COpenSSL
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct ArtifactFiles: Sendable {
    public let directory: String

    public init(directory: String) throws {
        for sub in ["", "/incoming", "/sha256"] {
            try FileManager.default.createDirectory(atPath: directory + sub, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o750])
        }
        self.directory = directory
    }

    public func path(of sha256: String) -> String {
        "\(directory)/sha256/\(sha256.prefix(2))/\(sha256)"
    }

    public func exists(_ sha256: String) -> Bool { access(path(of: sha256), F_OK) == 0 }

    public func beginUpload() throws -> ArtifactUpload {
        try ArtifactUpload(path: "\(directory)/incoming/\(hexString(Secrets.randomBytes(12)))")
    }

    /// Moves a finished upload under its content address (a no-op if those bytes are there already).
    public func commit(_ upload: ArtifactUpload, as sha256: String) throws {
        let target = path(of: sha256)
        let parent = String(target[..<target.lastIndex(of: "/")!])
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        if exists(sha256) {
            upload.discard()
            return
        }
        guard rename(upload.path, target) == 0 else { throw ArtifactFileError.io("rename", errno) }
        upload.committed = true
        try Self.fsyncDirectory(parent)
    }

    public func remove(_ sha256: String) {
        unlink(path(of: sha256))
    }

    /// Every content address with a file (for the orphan collector).
    public func storedHashes() -> [String] {
        let root = directory + "/sha256"
        var hashes: [String] = []
        for prefix in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: root + "/" + prefix)) ?? [] where name.hasPrefix(prefix) {
                hashes.append(name)
            }
        }
        return hashes.sorted()
    }

    /// Removes upload files left in incoming/ by a crash, once older than `seconds`
    /// (a live upload writes to its file all the time). Returns how many went.
    @discardableResult
    public func removeStaleIncoming(olderThan seconds: Int) -> Int {
        let incoming = directory + "/incoming"
        let now = time(nil)
        var removed = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: incoming)) ?? [] {
            var info = stat()
            guard stat(incoming + "/" + name, &info) == 0, now - info.st_mtim.tv_sec > seconds else { continue }
            if unlink(incoming + "/" + name) == 0 { removed += 1 }
        }
        return removed
    }

    static func fsyncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ArtifactFileError.io("open \(path)", errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ArtifactFileError.io("fsync \(path)", errno) }
    }
}

public struct ArtifactFileError: Error, CustomStringConvertible {
    public let description: String
    static func io(_ what: String, _ code: Int32) -> ArtifactFileError {
        ArtifactFileError(description: "\(what): \(String(cString: strerror(code)))")
    }
}

/// One upload in progress: bytes go to a temporary file and into a SHA-256 as they arrive.
/// Dropped without `commit`, its temporary file is removed.
public final class ArtifactUpload: @unchecked Sendable {
    let path: String
    private var fd: Int32
    private let digest: OpaquePointer
    public private(set) var size = 0
    var committed = false

    init(path: String) throws {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw ArtifactFileError.io("create \(path)", errno) }
        self.path = path
        digest = EVP_MD_CTX_new()
        EVP_DigestInit_ex(digest, EVP_sha256(), nil)
    }

    /// Appends bytes. Writes land in the page cache (fast); the one slow call, fsync, is in `finish`.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw ArtifactFileError.io("write", errno) }
                offset += n
            }
            EVP_DigestUpdate(digest, raw.baseAddress, raw.count)
        }
        size += bytes.count
    }

    /// Flushes the bytes to disk (off the cooperative pool) and returns their SHA-256 in hex.
    public func finish() async throws -> String {
        let fd = self.fd
        let code: Int32 = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: fsync(fd) == 0 ? 0 : errno) }
        }
        guard code == 0 else { throw ArtifactFileError.io("fsync", code) }
        var output = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(digest, &output, &length)
        return hexString(output)
    }

    public func discard() {
        guard !committed else { return }
        committed = true
        unlink(path)
    }

    deinit {
        close(fd)
        EVP_MD_CTX_free(digest)
        if !committed { unlink(path) }
    }
}
