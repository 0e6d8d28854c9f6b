// `flotilla-agent run` and `flotilla-agent status`, and where their settings come from:
// flags, else the configuration file (`--config`, default /etc/flotilla/agent.conf), else
// defaults. The file has one `key = value` per line, `#` comments:
//
//   server = https://flotilla.example.com:8443
//   token = flt_d_…
//   state_dir = /var/lib/flotilla-agent
//   ca_file = /etc/flotilla/ca.pem
//   client_cert = /etc/flotilla/device.pem   (mTLS: CN = the device's name)
//   client_key = /etc/flotilla/device.key
//   signing_key = <the server's manifest key, base64url>   (else pinned at first start)
//   poll_min = 5
//   poll_max = 300
//   poll_wait = 30
//   reboot_command = systemctl reboot      (or: reboot = exit)

import ArgumentParser
import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import Foundation

struct AgentConfig: Sendable {
    enum Reboot: Sendable, Equatable {
        /// Exit and let the supervisor (systemd, a test) start the agent again.
        case exit
        case command(String)
    }

    var server: String
    var token: String
    /// The configuration file the token came from (nil: a flag or the environment): the
    /// daemon follows it, so `flotilla-agent rotate-token` takes effect at the next poll.
    var tokenFile: String?
    var stateDirectory: String
    var caFile: String?
    /// mTLS: this device's certificate and key (PEM), for a server started with --tls-client-ca.
    var clientCert: String?
    var clientKey: String?
    /// The server's manifest-signing public key (base64url); nil: pin the server's on first start.
    var signingKey: String?
    var pollMinimum: Double
    var pollMaximum: Double
    var pollWait: Int
    var reboot: Reboot

    var tls: TLSClientConfiguration { TLSClientConfiguration(trustedCAPath: caFile, certificatePath: clientCert, privateKeyPath: clientKey) }
}

struct AgentOptions: ParsableArguments {
    @Option(help: "Configuration file (key = value lines).")
    var config = "/etc/flotilla/agent.conf"

    @Option(help: "Server URL (http:// for h2c, https:// for TLS). File key: server.")
    var server: String?

    @Option(help: "Device token (flt_d_…). File key: token. Env: FLOTILLA_DEVICE_TOKEN.")
    var token: String?

    @Option(help: "Directory for the journal, outbox, snapshots and downloads. File key: state_dir.")
    var stateDir: String?

    @Option(help: "PEM file of CA certificates to trust for https. File key: ca_file.")
    var caFile: String?

    @Option(help: "PEM client certificate for mTLS (its CN is the device's name). File key: client_cert.")
    var clientCert: String?

    @Option(help: "PEM private key of --client-cert (default: the same file). File key: client_key.")
    var clientKey: String?

    @Option(help: "The server's manifest-signing public key (base64url; GET /api/v1/agent/signing-key). Without it the agent pins the server's key on first start. File key: signing_key.")
    var signingKey: String?

    @Option(help: "Fewest seconds between polls. File key: poll_min.")
    var pollMin: Double?

    @Option(help: "Most seconds between polls, and the longest backoff. File key: poll_max.")
    var pollMax: Double?

    @Option(help: "Seconds each long poll waits on the server. File key: poll_wait.")
    var pollWait: Int?

    @Option(help: "Command that reboots the device, or 'exit' to exit and be restarted by a supervisor. File key: reboot_command.")
    var rebootCommand: String?

    func resolve(needToken: Bool = true) throws -> AgentConfig {
        let file = try Self.readFile(config)
        let known: Set = ["server", "token", "state_dir", "ca_file", "client_cert", "client_key", "signing_key", "poll_min", "poll_max", "poll_wait", "reboot_command"]
        if let unknown = file.keys.first(where: { !known.contains($0) }) {
            throw ValidationError("\(config): unknown key '\(unknown)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        func number(_ flag: Double?, _ key: String, _ fallback: Double) throws -> Double {
            if let flag { return flag }
            guard let text = file[key] else { return fallback }
            guard let value = Double(text), value >= 0 else { throw ValidationError("\(config): \(key) must be a number of seconds") }
            return value
        }
        let given = token ?? ProcessInfo.processInfo.environment["FLOTILLA_DEVICE_TOKEN"]
        let token = given ?? file["token"]
        if needToken && (token ?? "").isEmpty { throw ValidationError("no device token: --token, FLOTILLA_DEVICE_TOKEN or 'token =' in \(config)") }
        let minimum = try number(pollMin, "poll_min", 5), maximum = try number(pollMax, "poll_max", 300)
        guard minimum <= maximum, maximum >= 1 else { throw ValidationError("poll_min must not exceed poll_max, and poll_max must be at least 1") }
        let rebootText = rebootCommand ?? file["reboot_command"] ?? "systemctl reboot"
        return AgentConfig(
            server: server ?? file["server"] ?? "http://127.0.0.1:8080", token: token ?? "",
            tokenFile: given == nil && file["token"] != nil ? config : nil,
            stateDirectory: stateDir ?? file["state_dir"] ?? "/var/lib/flotilla-agent", caFile: caFile ?? file["ca_file"],
            clientCert: clientCert ?? file["client_cert"], clientKey: clientKey ?? file["client_key"], signingKey: signingKey ?? file["signing_key"],
            pollMinimum: minimum, pollMaximum: maximum, pollWait: Int(try number(pollWait.map(Double.init), "poll_wait", 30)),
            reboot: rebootText == "exit" ? .exit : .command(rebootText))
    }
}

extension AgentOptions {
    /// The `key = value` lines of a configuration file ([:] when there is none).
    static func readFile(_ path: String) throws -> [String: String] {
        var file: [String: String] = [:]
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return file }
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw ValidationError("\(path):\(number + 1): expected key = value")
            }
            file[trimmed[..<equals].trimmingCharacters(in: .whitespaces)] = trimmed[trimmed.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        }
        return file
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the agent: poll the server and carry out update flows, with rollback.",
        discussion: "Runs until stopped. Safe to kill at any moment: the next start continues from the journal in the state directory.")

    @OptionGroup var options: AgentOptions

    func run() async throws {
        let daemon = try AgentDaemon(config: try options.resolve())
        try await daemon.run()
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what the agent is doing, its last result and installed versions.")

    @OptionGroup var options: AgentOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let config = try options.resolve(needToken: false)
        // A status looks; it never makes the state directory a first `run` would.
        guard FileManager.default.fileExists(atPath: config.stateDirectory) else {
            if json {
                print(JSON.fields([("phase", .null), ("state_directory", .string(config.stateDirectory)), ("agent_state", .bool(false))]).serialized)
            } else {
                print("no agent state in \(config.stateDirectory): the agent has not run here (or uses another --state-dir)")
            }
            throw ExitCode(1)
        }
        let files = try AgentFiles(root: config.stateDirectory)
        let machine = try files.loadMachine()
        let manifest = try AgentFiles.read(files.manifestPath)?.objectValue
        let last = try AgentFiles.read(files.root + "/last-result.json")
        let queued = files.pendingReports().count
        let status = JSON.fields([
            ("phase", machine.journal.objectValue?["phase"] ?? .null), ("step", machine.journal.objectValue?["step"] ?? .null),
            ("execution", machine.job.map { .string($0.executionID) } ?? .null),
            ("app", machine.job.map { .string($0.app) } ?? .null), ("version", machine.job.map { .string($0.version) } ?? .null),
            ("step_name", manifest.flatMap { m in
                machine.journal.objectValue?["step"]?.intValue.flatMap { m["steps"]?.arrayValue?[$0].objectValue?["name"] } } ?? .null),
            ("reports_queued", .int(queued)),
            ("last_result", last ?? .null),
            ("installed", .object(files.installed().mapValues(JSON.string))),
        ])
        if json { print(status.serialized); return }
        let fields = status.objectValue ?? [:]
        if let execution = machine.job {
            print("working on execution \(execution.executionID): \(execution.app) \(execution.version), \(fields["phase"]?.stringValue ?? "?")"
                  + (fields["step"]?.intValue.map { " step \($0)" } ?? ""))
        } else {
            print("idle")
        }
        if let last = last?.objectValue {
            print("last result: \(last["outcome"]?.stringValue ?? "?") (\(last["app"]?.stringValue ?? "?") \(last["version"]?.stringValue ?? "?"), \(last["at"]?.stringValue ?? "?"))")
        }
        print("reports waiting for the server: \(queued)")
        let installed = files.installed()
        print(installed.isEmpty ? "installed: nothing yet" : "installed:")
        for (app, version) in installed.sorted(by: { $0.key < $1.key }) { print("  \(app) \(version)") }
    }
}
