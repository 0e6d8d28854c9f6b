// `flotilla devices list|show|label|delete` (register, accept, reject, revoke-token and rotate-token are in
// EnrollmentCommands.swift).

import ArgumentParser
import FlotillaJSON
import FlotillaWire

struct Devices: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, inspect, label, register, admit and delete devices.",
        subcommands: [List.self, Show.self, Label.self, Register.self, Accept.self, Reject.self, RevokeToken.self, RotateToken.self, Delete.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List devices by name, with filters.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @OptionGroup var paging: PagingOptions
        @Option(help: "Only members of this group.") var group: String?
        @Option(help: ArgumentHelp("Label selector k=v[,k=v…]; every pair must match.", valueName: "k=v")) var selector: [String] = []
        @Option(help: "Only devices whose latest execution is in this state (e.g. rolled_back).") var state: String?
        @Option(help: "Only devices with this admission status: pending, accepted, rejected or preauthorized.") var status: String?
        @Option(name: .customLong("name-prefix"), help: "Only names starting with this.") var namePrefix: String?
        @Option(name: .customLong("seen-before"), help: ArgumentHelp("Last seen before this RFC 3339 time.", valueName: "time")) var seenBefore: String?
        @Option(name: .customLong("seen-after"), help: ArgumentHelp("Last seen after this RFC 3339 time.", valueName: "time")) var seenAfter: String?

        func run() async throws {
            let path = ManagementRoutes.listDevices.path(query: [
                ("group", group), ("selector", try selectorText(selector)), ("state", state), ("status", status), ("name_prefix", namePrefix),
                ("last_seen_before", seenBefore), ("last_seen_after", seenAfter),
            ])
            let items = try await withSession(connection) { try await paging.fetch($0, path) }
            if output.json { emitJSON(.array(items)) } else { emit(Views.devices(items, output.style)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One device: groups, installed and known-good versions, recent executions.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Device name or id.") var device: String

        func run() async throws {
            let (found, executions) = try await withSession(connection) { session in
                (try await session.call(ManagementRoutes.device, device),
                 try await session.call(ManagementRoutes.deviceExecutions, device, query: [("limit", "10")]))
            }
            let items = executions["items"]?.arrayValue ?? []
            if output.json {
                var fields = found.objectValue ?? [:]
                fields["recent_executions"] = .array(items)
                emitJSON(.object(fields))
            } else {
                emit(Views.device(found, executions: items, output.style))
            }
        }
    }

    struct Label: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set or remove labels: `site=berlin` sets, `site-` removes.",
            discussion: "Example: flotilla devices label cam-017 site=berlin rack- ")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Device name or id.") var device: String
        @Argument(help: ArgumentHelp("k=v to set, k- to remove.", valueName: "label")) var changes: [String]

        func validate() throws {
            guard !changes.isEmpty else { throw ValidationError("give at least one label change (k=v or k-)") }
            _ = try patch()
        }

        /// The API's label merge patch: `{"labels": {"site": "berlin", "rack": null}}`.
        func patch() throws -> JSON {
            var labels: [String: JSON] = [:]
            for change in changes {
                if change.hasSuffix("-") && !change.contains("=") {
                    labels[String(change.dropLast())] = .null
                } else {
                    let (key, value) = try keyValue(change, option: "label")
                    labels[key] = .string(value)
                }
            }
            return .object(["labels": .object(labels)])
        }

        func run() async throws {
            let body = try patch()
            let updated = try await withSession(connection) { try await $0.call(ManagementRoutes.updateDevice, device, body: body) }
            if output.json { emitJSON(updated) } else { emit("\(updated["name"]?.stringValue ?? device): labels \(inline(updated["labels"]))\n") }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a device (its token stops working at once).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "Device name or id.") var device: String

        func run() async throws {
            try await withSession(connection) { try await $0.call(ManagementRoutes.deleteDevice, device) }
            emit("deleted device \(device)\n")
        }
    }
}
