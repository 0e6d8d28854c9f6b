// `flotilla groups list|show|create|delete|add|remove`.

import ArgumentParser
import FlotillaJSON
import FlotillaWire

struct Groups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage groups of devices (a device can be in many).",
        subcommands: [List.self, Show.self, Create.self, Delete.self, Add.self, Remove.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List groups with their member counts.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @OptionGroup var paging: PagingOptions

        func run() async throws {
            let items = try await withSession(connection) { try await paging.fetch($0, ManagementRoutes.listGroups.path()) }
            if output.json { emitJSON(.array(items)) } else { emit(Views.groups(items, output.style)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A group and its members.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @OptionGroup var paging: PagingOptions
        @Argument(help: "Group name or id.") var group: String

        func run() async throws {
            let (found, members) = try await withSession(connection) { session in
                (try await session.call(ManagementRoutes.group, group),
                 try await paging.fetch(session, ManagementRoutes.groupDevices.path(group)))
            }
            if output.json {
                var fields = found.objectValue ?? [:]
                fields["members"] = .array(members)
                emitJSON(.object(fields))
            } else {
                let style = output.style
                emit(style.paint("group \(found["name"]?.stringValue ?? group)", .bold)
                     + "  \(found["device_count"]?.intValue ?? 0) devices, created \(style.time(found["created_at"]))\n\n"
                     + Views.devices(members, style))
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a group.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The new group's name.") var name: String

        func run() async throws {
            let created = try await withSession(connection) { try await $0.call(ManagementRoutes.createGroup, body: .object(["name": .string(name)])) }
            if output.json { emitJSON(created) } else { emit("created group \(created["name"]?.stringValue ?? name)\n") }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a group (its devices stay).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "Group name or id.") var group: String

        func run() async throws {
            try await withSession(connection) { try await $0.call(ManagementRoutes.deleteGroup, group) }
            emit("deleted group \(group)\n")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add devices (names or ids) to a group.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "Group name or id.") var group: String
        @Argument(help: "Device names or ids.") var devices: [String]

        func validate() throws {
            if devices.isEmpty { throw ValidationError("name at least one device to add") }
        }

        func run() async throws {
            let answer = try await withSession(connection) {
                try await $0.call(ManagementRoutes.addGroupDevices, group, body: .object(["devices": .array(devices.map(JSON.string))]))
            }
            let added = answer["added"]?.intValue ?? 0
            emit("added \(added) device\(added == 1 ? "" : "s") to \(group)\(added < devices.count ? " (\(devices.count - added) already members)" : "")\n")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove devices from a group.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "Group name or id.") var group: String
        @Argument(help: "Device names or ids.") var devices: [String]

        func validate() throws {
            if devices.isEmpty { throw ValidationError("name at least one device to remove") }
        }

        func run() async throws {
            try await withSession(connection) { session in
                for device in devices {
                    try await session.call(ManagementRoutes.removeGroupDevice, group, device)
                }
            }
            emit("removed \(devices.count) device\(devices.count == 1 ? "" : "s") from \(group)\n")
        }
    }
}
