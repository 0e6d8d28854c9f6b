// `flotilla deploy` and `flotilla deployments list|show|devices|watch|cancel`.
//
// `--param k=v` values are typed by the flow's own parameter declarations (integer,
// boolean, string), fetched first, so `--param size=48213331` arrives as a number.

import ArgumentParser
import FlotillaJSON
import FlotillaWire

struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deploy a flow to groups, devices or a label selector.",
        discussion: """
            Example: flotilla deploy hardhat-model --group site-berlin --param version=1.4 --param artifact=<sha256> --wait
            With --wait the exit code is 0 when every device succeeded and 8 otherwise.
            """)
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: ArgumentHelp("The flow (latest version unless @VERSION).", valueName: "flow[@version]")) var flow: String
    @Option(help: "Target group (repeatable).") var group: [String] = []
    @Option(help: "Target device name or id (repeatable).") var device: [String] = []
    @Option(help: ArgumentHelp("Target label selector k=v[,k=v…].", valueName: "k=v")) var selector: [String] = []
    @Option(help: ArgumentHelp("A flow parameter (repeatable).", valueName: "k=v")) var param: [String] = []
    @Option(name: .customLong("idempotency-key"), help: "Retrying with the same key returns the same deployment.") var idempotencyKey: String?
    @OptionGroup var watch: WatchOptions

    func validate() throws {
        _ = try flowReference(flow)
        if group.isEmpty && device.isEmpty && selector.isEmpty {
            throw ValidationError("give a target: --group, --device or --selector")
        }
        for pair in param { _ = try keyValue(pair, option: "--param") }
        _ = try selectorText(selector)
    }

    func run() async throws {
        let (name, version) = try flowReference(flow)
        let style = output.style
        let final: JSON? = try await withSession(connection) { session in
            let definition = try await session.call("GET", version.map { ManagementRoutes.flowVersion.path(name, String($0)) } ?? ManagementRoutes.flow.path(name))["definition"] ?? .null
            let params = try typedParams(param, declared: definition["parameters"]?.objectValue ?? [:])
            var target: [(String, JSON)] = []
            if !group.isEmpty { target.append(("groups", .array(group.map(JSON.string)))) }
            if !device.isEmpty { target.append(("devices", .array(device.map(JSON.string)))) }
            if let text = try selectorText(selector) { target.append(("selector", .string(text))) }
            let body = JSON.fields([
                ("flow", .fields([("name", .string(name))] + (version.map { [("version", JSON.int($0))] } ?? []))),
                ("target", .fields(target)), ("params", .object(params)),
            ])
            var headers: [String: String] = [:]
            if let idempotencyKey { headers["idempotency-key"] = idempotencyKey }
            let created = try await session.call(ManagementRoutes.createDeployment, body: body, headers: .init(headers.map { ($0.key, $0.value) }))
            let id = created["id"]?.stringValue ?? "?"
            if !watch.wait {
                if output.json { emitJSON(created) } else {
                    emit("deployment \(id): \(created["devices_targeted"]?.intValue ?? 0) devices targeted"
                         + ((created["superseded"]?.intValue ?? 0) > 0 ? ", \(created["superseded"]!.intValue!) queued executions superseded" : "") + "\n")
                }
                return nil
            }
            if !output.json { emit("deployment \(id): \(created["devices_targeted"]?.intValue ?? 0) devices targeted\n") }
            return try await Watch.run(session, id: id, style: style, json: output.json, interval: watch.interval, timeout: watch.timeout)
        }
        guard let final else { return }
        if output.json { emitJSON(final) }
        let code = Watch.exitCode(for: final)
        if code != ExitStatus.ok {
            if !output.json { printError("deployment ended \(final["outcome"]?.stringValue ?? "?"): not every device succeeded") }
            throw ExitCode(code)
        }
    }
}

/// `--wait` / `watch` settings.
struct WatchOptions: ParsableArguments {
    @Flag(help: "Wait for the deployment to end, showing progress; the exit code says how it ended.") var wait = false
    @Option(help: "Seconds between refreshes.") var interval: Double = 1
    @Option(help: "Give up waiting after this many seconds (exit 1; the deployment goes on).") var timeout: Double?

    func validate() throws {
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 seconds") }
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be positive") }
    }
}

/// `k=v` strings typed by the flow's declarations; an unknown or ill-typed one is a usage
/// error naming the parameter (the server would refuse it with 422 anyway).
func typedParams(_ pairs: [String], declared: [String: JSON]) throws -> [String: JSON] {
    var params: [String: JSON] = [:]
    for pair in pairs {
        let (key, value) = try keyValue(pair, option: "--param")
        guard let spec = declared[key] else {
            let known = declared.keys.sorted().joined(separator: ", ")
            throw CLIError("the flow has no parameter '\(key)'", hint: "its parameters: \(known.isEmpty ? "none" : known)", exitCode: ExitStatus.usage)
        }
        switch spec["type"]?.stringValue ?? "string" {
        case "integer":
            guard let number = Int(value) else { throw CLIError("--param \(key)=\(value): '\(key)' is an integer", exitCode: ExitStatus.usage) }
            params[key] = .int(number)
        case "boolean":
            guard value == "true" || value == "false" else {
                throw CLIError("--param \(key)=\(value): '\(key)' is true or false", exitCode: ExitStatus.usage)
            }
            params[key] = .bool(value == "true")
        default:
            params[key] = .string(value)
        }
    }
    return params
}

struct Deployments: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, inspect, watch and cancel deployments.",
        subcommands: [List.self, Show.self, DevicesCommand.self, WatchCommand.self, Cancel.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List deployments, newest first.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @OptionGroup var paging: PagingOptions

        func run() async throws {
            let items = try await withSession(connection) { try await paging.fetch($0, ManagementRoutes.listDeployments.path()) }
            if output.json { emitJSON(.array(items)) } else { emit(Views.deployments(items, output.style)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Counts per state and failures grouped by step and message.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Deployment id.") var id: String

        func run() async throws {
            let (deployment, failures) = try await withSession(connection) { session in
                (try await session.call(ManagementRoutes.deployment, id),
                 try await session.call(ManagementRoutes.deploymentFailures, id, query: [("newest", "0")]))
            }
            if output.json {
                var fields = deployment.objectValue ?? [:]
                fields["failures"] = failures["groups"] ?? .array([])
                emitJSON(.object(fields))
            } else {
                emit(Views.deployment(deployment, failures: failures, output.style))
            }
        }
    }

    struct DevicesCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "devices", abstract: "Each targeted device's execution.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @OptionGroup var paging: PagingOptions
        @Argument(help: "Deployment id.") var id: String
        @Option(help: "Only executions in this state (e.g. rolled_back).") var state: String?

        func run() async throws {
            let path = ManagementRoutes.deploymentDevices.path(id, query: [("state", state)])
            let items = try await withSession(connection) { try await paging.fetch($0, path) }
            if output.json { emitJSON(.array(items)) } else { emit(Views.executions(items, output.style)) }
        }
    }

    struct WatchCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "watch", abstract: "Follow a deployment until it ends (exit 0: every device succeeded; 8: otherwise).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Deployment id.") var id: String
        @Option(help: "Seconds between refreshes.") var interval: Double = 1
        @Option(help: "Give up after this many seconds (exit 1).") var timeout: Double?

        func validate() throws {
            guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 seconds") }
        }

        func run() async throws {
            let final = try await withSession(connection) { session in
                try await Watch.run(session, id: id, style: output.style, json: output.json, interval: interval, timeout: timeout)
            }
            if output.json { emitJSON(final) }
            let code = Watch.exitCode(for: final)
            if code != ExitStatus.ok { throw ExitCode(code) }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel: queued executions end, started ones stop or roll back.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Deployment id.") var id: String

        func run() async throws {
            let answer = try await withSession(connection) { try await $0.call(ManagementRoutes.cancelDeployment, id) }
            if output.json { emitJSON(answer); return }
            emit("canceled deployment \(id): \(answer["canceled_queued"]?.intValue ?? 0) queued executions canceled, "
                 + "\(answer["stopped_in_flight"]?.intValue ?? 0) in flight stopped or rolling back\n")
        }
    }
}
