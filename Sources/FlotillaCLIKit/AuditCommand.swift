// `flotilla audit [--follow]`: the server's append-only log of management mutations.

import ArgumentParser
import FlotillaJSON
import FlotillaWire

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Who changed what, when, from where (admin): recent management mutations, oldest first; --follow for new ones.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .customLong("by-token"), help: "Only this token's mutations (its id, from `flotilla tokens list`).") var token: String?
    @OptionGroup var log: FollowOptions

    func run() async throws {
        let style = output.style
        try await log.tail(connection, ManagementRoutes.audit.path(query: [("token", token)]), json: output.json) { Views.auditEntry($0, style) }
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
