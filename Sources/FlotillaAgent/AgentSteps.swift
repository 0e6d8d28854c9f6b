// What each agent action does on the device. Each returns nil on success or the failure
// (message, exit code, output tail) the machine reports; none decides what happens next.

import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct StepFailure: Error {
    var message: String
    var exitCode: Int?
    var logTail: String?
    /// A download that may succeed if tried again (the link dropped, the host answered 5xx).
    var transient = false
    /// The server's Retry-After (a 429 or 503): wait that long, not the backoff's guess.
    var retryAfter: Double?
}

struct AgentSteps {
    let files: AgentFiles
    let manifest: JSON
    let client: @Sendable () async throws -> HTTP2Client
    let auth: HTTPHeaders
    /// The private CA (if any) that external artifact hosts may also use.
    var caFile: String?
    var log: @Sendable (String) -> Void = { _ in }
    /// Forgets the server connection, so the next attempt makes a fresh one.
    var dropClient: @Sendable () async -> Void = {}

    var execution: [String: JSON] { manifest.objectValue ?? [:] }
    func step(_ index: Int) -> [String: JSON] { execution["steps"]?.arrayValue?[index].objectValue ?? [:] }
    var rollback: [String: JSON] { execution["rollback"]?.objectValue ?? [:] }
    var snapshotPaths: [String] { (rollback["snapshot"]?.arrayValue ?? []).compactMap(\.stringValue) }

    /// FLOTILLA_* variables plus each deployment parameter as FLOTILLA_PARAM_<NAME>, plus the step's own env.
    func environment(_ step: [String: JSON]) -> [String: String] {
        var env = ["FLOTILLA_EXECUTION": execution["id"]?.stringValue ?? "", "FLOTILLA_APP": execution["app"]?.stringValue ?? "",
                   "FLOTILLA_VERSION": execution["version"]?.stringValue ?? "",
                   "FLOTILLA_KNOWN_GOOD": execution["known_good"]?.stringValue ?? ""]
        for (name, value) in execution["params"]?.objectValue ?? [:] {
            let key = "FLOTILLA_PARAM_" + String(name.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
            env[key] = value.stringValue ?? value.serialized
        }
        for (name, value) in step["env"]?.objectValue ?? [:] { env[name] = value.stringValue ?? value.serialized }
        return env
    }

    // MARK: - download

    /// Fetches into downloads/<sha256>.part, from the server's artifact store (our HTTP/2
    /// client, Range requests of `chunk` bytes) or from an external host (libcurl,
    /// ExternalDownload.swift), so a dropped link or a restart continues from what is on disk.
    /// A transient failure (the link, a 5xx) is retried with backoff for up to 90% of the
    /// step's timeout — a flaky site link should slow an update down, not fail it. The
    /// SHA-256 is checked before the file moves to its destination; nothing outside the
    /// state directory is touched before that.
    func download(_ index: Int, chunk: Int = 4 << 20) async throws(StepFailure) {
        let step = step(index)
        guard let sha = step["sha256"]?.stringValue, isSHA256(sha), let url = step["url"]?.stringValue,
              let destination = step["destination"]?.stringValue else {
            throw StepFailure(message: "the download step lacks sha256, url or destination")
        }
        let size = step["size"]?.intValue
        let partial = "\(files.downloads)/\(sha).part"
        if let size, let free = freeBytes(files.downloads), free < Int64(size) + (16 << 20) {
            throw StepFailure(message: "not enough disk space: \(size) bytes needed, \(free) free")
        }
        let budget = Date().addingTimeInterval(Double(step["timeout"]?.intValue ?? 3600) * 0.9)
        var wait = 1.0
        while true {
            let before = fileSize(partial)
            do throws(StepFailure) {
                if url.hasPrefix("/") {
                    try await fetchFromServer(url, into: partial, size: size, chunk: chunk)
                } else {
                    try await fetchExternal(url, into: partial, limit: size.map(Int64.init))
                }
                break
            } catch where error.transient && Date().addingTimeInterval(error.retryAfter ?? wait) < budget {
                // Bytes arrived since the last attempt: the link works, so the backoff starts over.
                if fileSize(partial) > before { wait = 1 }
                let pause = error.retryAfter ?? wait
                log("\(error.message); retrying in \(Int(pause.rounded(.up))) s")
                if error.retryAfter == nil { await dropClient() }  // a refusal with Retry-After keeps a good connection
                try? await Task.sleep(for: .seconds(pause))
                wait = min(wait * 2, 30)
            }
        }
        guard let digest = try? sha256Hex(ofFile: partial), digest == sha else {
            // A corrupt partial file must not poison the next attempt.
            try? FileManager.default.removeItem(atPath: partial)
            throw StepFailure(message: "checksum mismatch: expected \(sha)")
        }
        do {
            try FileManager.default.createDirectory(atPath: (destination as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            try? FileManager.default.removeItem(atPath: destination)
            try FileManager.default.copyItem(atPath: partial, toPath: destination)
            try FileManager.default.removeItem(atPath: partial)
        } catch {
            throw StepFailure(message: "cannot place the download at \(destination): \(error.localizedDescription)")
        }
    }

    /// The server's artifact, `chunk` bytes per Range request.
    private func fetchFromServer(_ url: String, into partial: String, size: Int?, chunk: Int) async throws(StepFailure) {
        do {
            let client = try await client()
            var have = fileSize(partial)
            var total = size
            while total == nil || have < total! {
                let end = have + chunk - 1
                var headers = auth
                headers.set("range", "bytes=\(have)-\(total.map { min(end, $0 - 1) } ?? end)")
                let response = try await client.send(ClientRequest(path: url, headers: headers), timeout: .seconds(120))
                switch response.status {
                case 206:
                    if let range = response.headers["content-range"], let slash = range.lastIndex(of: "/") {
                        total = Int(range[range.index(after: slash)...])
                    }
                case 200:  // the whole file in one answer: start over with it
                    have = 0
                    total = response.body.count
                    try? FileManager.default.removeItem(atPath: partial)
                case 416 where total == nil || have >= total!:
                    total = have
                    continue
                default:
                    throw StepFailure(message: "download answered \(response.status): \(response.bodyText.prefix(200))",
                                      transient: response.status >= 500 || response.status == 429,
                                      retryAfter: Double(response.headers["retry-after"] ?? ""))
                }
                guard !response.body.isEmpty || have == total else { throw StepFailure(message: "download returned no bytes") }
                try append(response.body, to: partial)
                have += response.body.count
            }
        } catch let failure as StepFailure {
            throw failure
        } catch {
            throw StepFailure(message: "download interrupted: \(error)", transient: true)
        }
    }

    /// An external host's file, through libcurl on a thread of its own (it blocks).
    private func fetchExternal(_ url: String, into partial: String, limit: Int64?) async throws(StepFailure) {
        let caFile = caFile
        let result: Result<Void, ExternalDownloadError> = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                do throws(ExternalDownloadError) {
                    try ExternalDownload.fetch(url, into: partial, caFile: caFile, limit: limit)
                    continuation.resume(returning: .success(()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        if case .failure(let error) = result { throw StepFailure(message: error.message, transient: error.transient) }
    }

    // MARK: - scripts

    func runScript(_ index: Int) throws(StepFailure) {
        let step = step(index)
        try script(step["script"]?.stringValue, timeout: step["timeout"]?.intValue ?? 300, env: environment(step), what: "install script")
    }

    /// The verify step's health check; with `soak`, it must keep passing every `interval`
    /// seconds for `soak` seconds.
    func healthCheck(_ index: Int, soak: Bool = true) throws(StepFailure) {
        let step = step(index)
        let timeout = step["timeout"]?.intValue ?? 120
        try script(step["script"]?.stringValue, timeout: timeout, env: environment(step), what: "health check")
        guard soak, let seconds = step["soak"]?.intValue, seconds > 0 else { return }
        let interval = Double(max(1, step["interval"]?.intValue ?? 15))
        let end = Date().addingTimeInterval(Double(seconds))
        while Date() < end {
            Thread.sleep(forTimeInterval: min(interval, max(0, end.timeIntervalSinceNow)))
            try script(step["script"]?.stringValue, timeout: timeout, env: environment(step), what: "health check (soak)")
        }
    }

    func rollbackScript() throws(StepFailure) {
        try script(rollback["script"]?.stringValue, timeout: rollback["timeout"]?.intValue ?? 900, env: environment([:]),
                   what: "rollback script")
    }

    private func script(_ text: String?, timeout: Int, env: [String: String], what: String) throws(StepFailure) {
        guard let text, !text.isEmpty else { return }
        let result: ScriptResult
        do { result = try Script.run(text, environment: env, timeout: Double(timeout)) } catch {
            throw StepFailure(message: "\(what) could not start: \(error)")
        }
        if result.timedOut {
            throw StepFailure(message: "\(what) timed out after \(timeout) s", exitCode: result.exitCode, logTail: result.tail)
        }
        if result.exitCode != 0 {
            throw StepFailure(message: "\(what) exited with \(result.exitCode)", exitCode: result.exitCode, logTail: result.tail)
        }
    }
}

func fileSize(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : 0
}

func freeBytes(_ path: String) -> Int64? {
    var info = statvfs()
    guard statvfs(path, &info) == 0 else { return nil }
    return Int64(info.f_bavail) * Int64(info.f_frsize)
}

private func append(_ bytes: [UInt8], to path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw AgentError.io("cannot open \(path)") }
    defer { close(fd) }
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw AgentError.io("cannot write \(path)") }
        offset += n
    }
    // What is on disk is what a resumed download continues from: make it true.
    guard fdatasync(fd) == 0 else { throw AgentError.io("fdatasync \(path) failed") }
}
