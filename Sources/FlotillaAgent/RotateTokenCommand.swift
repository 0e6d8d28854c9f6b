// `flotilla-agent rotate-token`: the device replaces its own token (POST /api/v1/agent/token)
// and writes the new one into its configuration file; a running `flotilla-agent run` picks
// it up at its next poll. Safe to repeat and to interrupt: the server keeps the old token
// valid until the new one is used (DeviceTokenRotation.swift). Run it from a timer to
// rotate regularly.

import ArgumentParser
import FlotillaJSON
import FlotillaTransport
import FlotillaWire
import Foundation

struct RotateToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-token",
        abstract: "Replace this device's token with a new one and write it to the configuration file.",
        discussion: "The running agent switches at its next poll; the old token stops working once the new one has been used.")

    @OptionGroup var options: AgentOptions

    func run() async throws {
        // One rotation at a time on this device (a timer and a hand-run one could overlap):
        // the second must start from the token the first saved, or it could save a token
        // the server has already replaced.
        let lock = open(options.config + ".lock", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0, flock(lock, LOCK_EX) == 0 else { throw ValidationError("cannot lock \(options.config).lock") }
        defer { close(lock) }
        let config = try options.resolve()
        guard config.tokenFile != nil else {
            throw ValidationError("the token must come from the configuration file (\(options.config)) so the new one can be saved there")
        }
        let client = try await HTTP2Client.connect(to: config.server, tls: config.tls, timeout: .seconds(10))
        let response = try await client.send(ClientRequest(
            method: DeviceRoutes.rotateToken.method, path: DeviceRoutes.rotateToken.path(), headers: ["authorization": "Bearer \(config.token)"]), timeout: .seconds(30))
        await client.close()
        let answer = (try? JSON.parse(response.body))?.objectValue ?? [:]
        guard response.status == 200, let token = answer["device_token"]?.stringValue else {
            let message = answer["error"]?.objectValue?["message"]?.stringValue ?? response.bodyText
            throw ValidationError("rotation refused (\(response.status)): \(message)")
        }
        try Enroll.update(options.config, with: ["token": token])
        print("rotated the device token; wrote \(options.config) (a running agent switches at its next poll)")
    }
}
