// `flotilla enrollment-tokens create|list|revoke`, and the device-access commands
// `flotilla devices register|accept|reject|revoke-token|rotate-token` (SECURITY.md).

import ArgumentParser
import FlotillaJSON
import FlotillaWire

struct EnrollmentTokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enrollment-tokens",
        abstract: "Create, list and revoke enrollment tokens: devices enroll themselves into a group with one (admin).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an enrollment token; its secret is printed once.",
            discussion: "On the device: flotilla-agent enroll --server URL --enrollment-token <secret>")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "A name saying what it is for (e.g. berlin-install-day).") var name: String
        @Option(help: "The group enrolled devices join.") var group: String
        @Option(name: .customLong("max-uses"), help: "How many devices may enroll with it.") var maxUses = 1
        @Option(name: .customLong("expires-in"), help: ArgumentHelp("How long it is valid: 90s, 30m, 12h or 7d.", valueName: "duration"))
        var expiresIn = "7d"
        @Flag(name: .customLong("require-approval"), help: "Enrolled devices wait as pending until `flotilla devices accept`.")
        var requireApproval = false

        func validate() throws { _ = try seconds(expiresIn) }

        func run() async throws {
            let body = JSON.object([
                "name": .string(name), "group": .string(group), "max_uses": .int(maxUses),
                "expires_in": .int(try seconds(expiresIn)), "require_approval": .bool(requireApproval),
            ])
            let created = try await withSession(connection) { try await $0.call(ManagementRoutes.createEnrollmentToken, body: body) }
            if output.json { emitJSON(created); return }
            let token = created["enrollment_token"]
            emit("created enrollment token \(token?["id"]?.stringValue ?? "?") for group \(group): \(maxUses) use(s), "
                 + "expires \(token?["expires_at"]?.stringValue ?? "?")\(requireApproval ? ", needs approval" : "")\n")
            emit("secret (shown once, store it now): \(created["secret"]?.stringValue ?? "?")\n")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List enrollment tokens (never their secrets).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let items = try await withSession(connection) { try await $0.call(ManagementRoutes.listEnrollmentTokens)["items"]?.arrayValue ?? [] }
            if output.json { emitJSON(.array(items)); return }
            var table = Table(["ID", "NAME", "GROUP", "USES", "APPROVAL", "EXPIRES", "REVOKED"])
            for token in items {
                table.add([token["id"]?.stringValue ?? "?", token["name"]?.stringValue ?? "?", token["group"]?.stringValue ?? "?",
                           "\(token["uses"]?.intValue ?? 0)/\(token["max_uses"]?.intValue ?? 0)",
                           token["require_approval"] == .bool(true) ? "yes" : "no", output.style.time(token["expires_at"]),
                           token["revoked_at"]?.stringValue == nil ? "-" : output.style.time(token["revoked_at"])])
            }
            emit(items.isEmpty ? "no enrollment tokens\n" : table.render(output.style))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an enrollment token by id (refused from its next use).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "Enrollment token id (from `flotilla enrollment-tokens list`).") var id: String

        func run() async throws {
            try await withSession(connection) { try await $0.call(ManagementRoutes.revokeEnrollmentToken, id) }
            emit("revoked enrollment token \(id)\n")
        }
    }
}

/// "90s", "30m", "12h", "7d" or plain seconds.
func seconds(_ text: String) throws -> Int {
    let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
    if let unit = text.last, let factor = units[unit], let count = Int(text.dropLast()), count > 0 { return count * factor }
    if let count = Int(text), count > 0 { return count }
    throw ValidationError("a duration is a number with s, m, h or d (e.g. 7d), got '\(text)'")
}

extension Devices {
    struct Register: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register a device by hand and print its token once; or --preauthorize it to enroll itself later.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The device's name.") var name: String
        @Option(help: "A group to put it in; repeatable.") var group: [String] = []
        @Flag(help: "No token now: the device enrolls itself and is accepted even if the enrollment token needs approval.")
        var preauthorize = false

        func run() async throws {
            let body = JSON.object(["name": .string(name), "groups": .array(group.map(JSON.string)), "preauthorize": .bool(preauthorize)])
            let created = try await withSession(connection) { try await $0.call(ManagementRoutes.createDevice, body: body) }
            if output.json { emitJSON(created); return }
            if preauthorize {
                emit("pre-authorized device \(name): it is accepted when it enrolls\n")
            } else {
                emit("registered device \(name)\ndevice token (shown once, store it now): \(created["device_token"]?.stringValue ?? "?")\n")
            }
        }
    }

    struct Accept: DeviceAccessCommand {
        static let configuration = CommandConfiguration(abstract: "Accept a pending (or rejected) device: it may poll from now on.")
        static let endpoint = ManagementRoutes.acceptDevice
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Device name or id.") var device: String
    }

    struct Reject: DeviceAccessCommand {
        static let configuration = CommandConfiguration(abstract: "Reject a device: it is refused from its next request.")
        static let endpoint = ManagementRoutes.rejectDevice
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Device name or id.") var device: String
    }

    struct RevokeToken: DeviceAccessCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke-token", abstract: "Revoke a device's token: refused from now on, until rotate-token makes a new one.")
        static let endpoint = ManagementRoutes.revokeDeviceToken
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Device name or id.") var device: String
    }

    struct RotateToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-token", abstract: "Give a device a new token (printed once); its old token is refused at once.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Device name or id.") var device: String

        func run() async throws {
            let rotated = try await withSession(connection) { try await $0.call(ManagementRoutes.rotateDeviceToken, device) }
            if output.json { emitJSON(rotated); return }
            emit("new device token for \(device) (shown once, store it now): \(rotated["device_token"]?.stringValue ?? "?")\n")
        }
    }
}

/// accept, reject, revoke-token: one POST each, printing the device's status after it.
protocol DeviceAccessCommand: AsyncParsableCommand {
    static var endpoint: Endpoint { get }
    var connection: ConnectionOptions { get }
    var output: OutputOptions { get }
    var device: String { get }
}

extension DeviceAccessCommand {
    func run() async throws {
        let updated = try await withSession(connection) { try await $0.call(Self.endpoint, device) }
        if output.json { emitJSON(updated); return }
        let revoked = updated["token_revoked_at"]?.stringValue != nil
        emit("\(updated["name"]?.stringValue ?? device): \(updated["status"]?.stringValue ?? "?")\(revoked ? ", token revoked" : "")\n")
    }
}
