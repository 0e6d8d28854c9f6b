// `flotilla-agent enroll`: trade an enrollment token for this device's own token.
//
// The server answers with the device token and the manifest-signing key; both are written
// into the configuration file (atomically, mode 0600), so the next `run` uses them and pins
// the key from a channel the operator chose rather than on first use. Other lines of the
// file are kept as they were. A file that already holds a device token is left alone
// unless `--force`: enrolling again would use up another enrollment and orphan the old device.

import ArgumentParser
import FlotillaJSON
import FlotillaTransport
import FlotillaWire
import Foundation

struct Enroll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Enroll this device: get its own device token with an enrollment token, and write it to the configuration file.",
        discussion: "Prints whether the device is accepted or waits for an operator's approval; `run` keeps polling until it is accepted.")

    @OptionGroup var options: AgentOptions

    @Option(help: "Enrollment token (flt_e_…) from `flotilla enrollment-tokens create`. Env: FLOTILLA_ENROLLMENT_TOKEN.")
    var enrollmentToken: String?

    @Option(help: "The device's name (default: the host name).")
    var name: String?

    @Option(name: .customLong("label"), help: "A label key=value for the device; repeatable.")
    var labels: [String] = []

    @Flag(help: "Enroll even though the configuration file already has a device token.")
    var force = false

    func run() async throws {
        let config = try options.resolve(needToken: false)
        if !config.token.isEmpty && !force {
            throw ValidationError("\(options.config) already has a device token; pass --force to enroll again")
        }
        guard let secret = enrollmentToken ?? ProcessInfo.processInfo.environment["FLOTILLA_ENROLLMENT_TOKEN"], !secret.isEmpty else {
            throw ValidationError("no enrollment token: --enrollment-token or FLOTILLA_ENROLLMENT_TOKEN")
        }
        var labelMap: [String: JSON] = [:]
        for label in labels {
            let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--label must be key=value, got '\(label)'") }
            labelMap[parts[0]] = .string(parts[1])
        }
        // Before an enrollment use is spent: the token the server issues must have somewhere to go.
        do {
            try Self.update(options.config, with: [:])
        } catch {
            throw ValidationError("cannot write \(options.config) (\(error)); nothing was enrolled. Run as a user who may write it, or pass --config")
        }
        let deviceName = name ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "device"
        let body = JSON.object(["name": .string(deviceName), "labels": .object(labelMap)]).serialized
        let client = try await HTTP2Client.connect(to: config.server, tls: config.tls,
                                                   timeout: .seconds(10))
        let response = try await client.send(ClientRequest(
            method: DeviceRoutes.enroll.method, path: DeviceRoutes.enroll.path(),
            headers: ["authorization": "Bearer \(secret)", "content-type": "application/json"], body: .bytes(Array(body.utf8))),
            timeout: .seconds(30))
        await client.close()
        let answer = (try? JSON.parse(response.body))?.objectValue ?? [:]
        guard response.status == 201, let token = answer["device_token"]?.stringValue,
              let key = answer["signing_key"]?.objectValue?["public_key"]?.stringValue else {
            let message = answer["error"]?.objectValue?["message"]?.stringValue ?? response.bodyText
            throw ValidationError("enrollment refused (\(response.status)): \(message)")
        }
        do {
            try Self.update(options.config, with: ["server": config.server, "token": token, "signing_key": key])
        } catch {
            // The server issued the token once; losing it would orphan the device. Say it here.
            print("enrolled, but \(options.config) could not be written (\(error)). Keep these lines for it:")
            print("server = \(config.server)\ntoken = \(token)\nsigning_key = \(key)")
            throw ExitCode(1)
        }
        let status = answer["status"]?.stringValue ?? "?"
        print("enrolled as \(deviceName): \(status == "pending" ? "pending, waiting for an operator to accept it" : status); wrote \(options.config)")
    }

    /// Sets `keys` in the key = value file at `path` (created if missing), keeping every other line.
    static func update(_ path: String, with keys: [String: String]) throws {
        let old = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        var remaining = keys
        var lines: [String] = []
        for line in old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let key = line.split(separator: "=", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            if !line.trimmingCharacters(in: .whitespaces).hasPrefix("#"), let value = remaining.removeValue(forKey: key) {
                lines.append("\(key) = \(value)")
            } else {
                lines.append(line)
            }
        }
        while lines.last == "" { lines.removeLast() }
        for key in remaining.keys.sorted() { lines.append("\(key) = \(remaining[key]!)") }
        try AgentFiles.writeAtomically(bytes: Array((lines.joined(separator: "\n") + "\n").utf8), to: path)
    }
}
