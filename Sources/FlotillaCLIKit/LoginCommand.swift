// `flotilla login`: checks a server URL and token work, then saves them (mode 0600) so
// later commands need neither flag.

import ArgumentParser
import FlotillaJSON
import FlotillaWire
import Foundation

struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Save the server URL and API token for later commands (checked first).",
        discussion: "With no --token, the token is read from standard input (not echoed on a terminal).")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        var options = connection
        let environment = ProcessInfo.processInfo.environment
        if options.server == nil { options.server = environment["FLOTILLA_URL"] }
        guard options.server != nil else {
            throw CLIError("no server given", hint: "flotilla login --server https://flotilla.example:8443", exitCode: ExitStatus.usage)
        }
        if options.token == nil { options.token = environment["FLOTILLA_TOKEN"] ?? readToken() }
        guard let token = options.token, !token.isEmpty else {
            throw CLIError("no token given", hint: "pass --token, or type it when asked", exitCode: ExitStatus.usage)
        }
        options.token = token
        let config = try options.resolve(environment: [:])
        // Any route a viewer may read proves the URL and the token.
        _ = try await withSession(options) { try await $0.call(ManagementRoutes.listGroups, query: [("limit", "1")]) }
        let path = ClientConfig.path(environment: environment)
        try config.save(to: path)
        emit("logged in to \(config.server); saved to \(path)\n")
    }

    private func readToken() -> String? {
        if isatty(STDIN_FILENO) == 1 {
            guard let typed = getpass("API token: ") else { return nil }
            return String(cString: typed)
        }
        return readLine()?.trimmingCharacters(in: .whitespaces)
    }
}
