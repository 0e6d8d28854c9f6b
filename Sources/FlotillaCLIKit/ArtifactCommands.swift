// `flotilla artifacts push|list`. A push streams the file (never whole in memory) with its
// SHA-256, computed here first, in X-Checksum-SHA256: the server refuses the upload if the
// bytes it stored differ, so what devices get is what the operator pushed.

import ArgumentParser
import FlotillaJSON
import FlotillaTransport
import FlotillaWire
import Foundation
import Synchronization

struct Artifacts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push artifacts to the server's store and list them.",
        subcommands: [Push.self, List.self])

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Upload a file (progress bar on a terminal); prints its SHA-256 for `deploy --param`.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The file to upload.") var file: String
        @Option(help: "The name stored with it (default: the file's name).") var name: String?

        func run() async throws {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), !isDirectory.boolValue else {
                throw CLIError("\(file): no such file", exitCode: ExitStatus.usage)
            }
            let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
            let sha: String
            do { sha = try sha256Hex(ofFile: file) } catch { throw CLIError(error.description) }
            let style = output.style
            let storedName = name ?? (file as NSString).lastPathComponent
            let bar = ProgressLine(total: size, label: storedName, enabled: style.tty && !output.json)
            var request = ClientRequest(method: ManagementRoutes.uploadArtifact.method, path: ManagementRoutes.uploadArtifact.path(query: [("name", storedName)]),
                                        headers: ["content-type": "application/octet-stream", "x-checksum-sha256": sha],
                                        body: .file(path: file))
            request.bodyProgress = { sent in bar.update(sent) }
            // Slow links: allow a minute per 8 MiB on top of the base minute.
            let timeout = Duration.seconds(60 + size / (8 << 20) * 60)
            let stored = try await withSession(connection) { try await $0.send(request, timeout: timeout) }
            bar.finish()
            if output.json { emitJSON(stored); return }
            emit("\(stored["name"]?.stringValue ?? storedName)  \(byteCount(stored["size"]?.intValue ?? size))\nsha256 \(stored["sha256"]?.stringValue ?? sha)\n")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List stored artifacts, newest first.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @OptionGroup var paging: PagingOptions

        func run() async throws {
            let items = try await withSession(connection) { try await paging.fetch($0, ManagementRoutes.listArtifacts.path()) }
            if output.json { emitJSON(.array(items)) } else { emit(Views.artifacts(items, output.style)) }
        }
    }
}

/// One line on stderr redrawn in place: `model.zip [#####-----] 42% 20.1 MiB/48.0 MiB`.
/// Updates arrive per DATA frame from the connection's loop; at most one redraw per percent.
final class ProgressLine: Sendable {
    private let total: Int
    private let label: String
    private let enabled: Bool
    private let lastPercent = Mutex(-1)

    init(total: Int, label: String, enabled: Bool) {
        self.total = total
        self.label = label
        self.enabled = enabled
    }

    func update(_ sent: Int) {
        guard enabled, total > 0 else { return }
        let percent = min(100, sent * 100 / total)
        let changed = lastPercent.withLock { last in
            defer { last = percent }
            return last != percent
        }
        if changed {
            let line = "\r\(label) \(progressBar(sent, of: total)) \(percent)% \(byteCount(min(sent, total)))/\(byteCount(total))\u{1B}[K"
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
