// `flotilla audit [--follow]`: the server's append-only log of management mutations.

import ArgumentParser
import FlotillaJSON

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Who changed what, when, from where (admin): recent management mutations, oldest first; --follow for new ones.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .customLong("by-token"), help: "Only this token's mutations (its id, from `flotilla tokens list`).") var token: String?
    @Option(help: "How many recent entries to show first (1-500).") var limit: Int = 50
    @Flag(help: "Keep running and print new entries as they are appended (Ctrl-C to stop).") var follow = false
    @Option(help: "Seconds between polls with --follow.") var interval: Double = 1

    func validate() throws {
        guard (1...500).contains(limit) else { throw ValidationError("--limit must be from 1 to 500") }
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 seconds") }
    }

    func run() async throws {
        let style = output.style
        try await withSession(connection) { session in
            var after: Int?
            repeat {
                let path = query("/api/v1/audit", [("token", token), ("after", after.map(String.init)),
                                                   ("limit", String(after == nil ? limit : 500))])
                let answer = try await session.call("GET", path)
                for entry in answer["items"]?.arrayValue ?? [] {
                    emit(output.json ? entry.serialized + "\n" : Views.auditEntry(entry, style))
                }
                after = answer["last_id"]?.intValue ?? after ?? 0
                if follow { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
            } while follow
        }
    }
}

extension Views {
    /// `2026-11-21T19:30:43Z  ci-pipeline  POST /api/v1/deployments  201  10.0.0.7`
    static func auditEntry(_ entry: JSON, _ style: Style) -> String {
        let status = entry["status"]?.intValue ?? 0
        let statusText = status < 400 ? style.paint(String(status), .green) : style.paint(String(status), .red)
        let who = entry["token_name"]?.stringValue ?? entry["token_id"]?.stringValue ?? "(refused token)"
        return "\(style.time(entry["at"]))  \(who)  \(entry["method"]?.stringValue ?? "?") \(entry["path"]?.stringValue ?? "?")  "
            + "\(statusText)  \(entry["remote_addr"]?.stringValue ?? "-")\n"
    }
}
