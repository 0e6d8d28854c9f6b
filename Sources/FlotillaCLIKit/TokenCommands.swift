// `flotilla tokens create|list|revoke` and `flotilla events [--follow]`.

import ArgumentParser
import FlotillaJSON
import FlotillaWire
import Foundation

struct Tokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and revoke API tokens (admin).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a token; its secret is printed once.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "A name saying who uses it (e.g. ci-pipeline).") var name: String
        @Option(help: "viewer, deployer or admin.") var role: String = "viewer"
        @Option(help: ArgumentHelp("Deployer only: a flow it may apply and deploy (glob, e.g. 'hardhat-*'); repeatable.", valueName: "glob"))
        var flow: [String] = []
        @Option(help: ArgumentHelp("Deployer only: a group it may deploy to (glob, e.g. 'site-*'); repeatable.", valueName: "glob"))
        var group: [String] = []
        @Option(name: .customLong("expires-in"), help: ArgumentHelp("Expire after 90s, 30m, 12h or 7d (default: never).", valueName: "duration"))
        var expiresIn: String?

        func validate() throws { _ = try expiresIn.map(seconds) }

        func run() async throws {
            var body: [String: JSON] = ["name": .string(name), "role": .string(role)]
            if !flow.isEmpty { body["flows"] = .array(flow.map(JSON.string)) }
            if !group.isEmpty { body["groups"] = .array(group.map(JSON.string)) }
            if let expiresIn { body["expires_in"] = .int(try seconds(expiresIn)) }
            let created = try await withSession(connection) { [body] in try await $0.call(ManagementRoutes.createToken, body: .object(body)) }
            if output.json { emitJSON(created); return }
            emit("created \(created["token"]?["role"]?.stringValue ?? role) token \(created["token"]?["id"]?.stringValue ?? "?") (\(name))\n")
            emit("secret (shown once, store it now): \(created["secret"]?.stringValue ?? "?")\n")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (never their secrets).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let items = try await withSession(connection) { try await $0.call(ManagementRoutes.listTokens)["items"]?.arrayValue ?? [] }
            if output.json { emitJSON(.array(items)) } else { emit(Views.tokens(items, output.style)) }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id (effective at once).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "Token id (from `flotilla tokens list`).") var id: String

        func run() async throws {
            try await withSession(connection) { try await $0.call(ManagementRoutes.revokeToken, id) }
            emit("revoked token \(id)\n")
        }
    }
}

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recent state transitions of executions, oldest first; --follow keeps printing new ones.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "Only this deployment's events.") var deployment: String?
    @Option(help: "Only this device's events (name or id).") var device: String?
    @OptionGroup var log: FollowOptions

    func run() async throws {
        let style = output.style
        try await log.tail(connection, ManagementRoutes.events.path(query: [("deployment", deployment), ("device", device)]), json: output.json) {
            Views.event($0, style)
        }
    }
}
