// `flotilla tokens create|list|revoke` and `flotilla events [--follow]`.

import ArgumentParser
import FlotillaJSON
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
        @Option(help: "admin or viewer.") var role: String = "viewer"

        func run() async throws {
            let created = try await withSession(connection) {
                try await $0.call("POST", "/api/v1/tokens", .object(["name": .string(name), "role": .string(role)]))
            }
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
            let items = try await withSession(connection) { try await $0.call("GET", "/api/v1/tokens")["items"]?.arrayValue ?? [] }
            if output.json { emitJSON(.array(items)) } else { emit(Views.tokens(items, output.style)) }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id (effective at once).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "Token id (from `flotilla tokens list`).") var id: String

        func run() async throws {
            try await withSession(connection) { try await $0.call("POST", "/api/v1/tokens/\(encoded(id))/revoke") }
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
    @Option(help: "How many recent events to show first (1-500).") var limit: Int = 50
    @Flag(help: "Keep running and print new events as they happen (Ctrl-C to stop).") var follow = false
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
                let path = query("/api/v1/events", [("deployment", deployment), ("device", device),
                                                    ("after", after.map(String.init)), ("limit", String(after == nil ? limit : 500))])
                let answer = try await session.call("GET", path)
                for event in answer["items"]?.arrayValue ?? [] {
                    // One JSON object per line with --json, so a follower's output is a stream.
                    emit(output.json ? event.serialized + "\n" : Views.event(event, style))
                }
                after = answer["last_id"]?.intValue ?? after ?? 0
                if follow { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
            } while follow
        }
    }
}
