// The agent's network plumbing, apart from the executor in AgentDaemon.swift: one HTTP/2
// connection (made on demand, dropped on error), the heartbeat, and the backoff.

import FlotillaJSON
import FlotillaTransport
import FlotillaWire
import Foundation

extension AgentDaemon {
    func connection() async throws -> HTTP2Client {
        if let client { return client }
        let fresh = try await HTTP2Client.connect(to: config.server, tls: config.tls,
                                                  timeout: .seconds(10), maxResponseBytes: 64 << 20)
        client = fresh
        return fresh
    }

    func dropConnection() async {
        await client?.close()
        client = nil
    }

    func heartbeat() async {
        let body = JSON.fields([("installed", .object(files.installed().mapValues(JSON.string)))])
        _ = try? await connection().send(ClientRequest(method: DeviceRoutes.heartbeat.method, path: DeviceRoutes.heartbeat.path(), headers: auth,
                                                       body: .bytes(Array(body.serialized.utf8))), timeout: .seconds(10))
    }

    /// Exponential backoff with jitter while the server cannot be reached: never a tight loop.
    /// `atLeast`: the server's Retry-After, honoured up to `poll_max` (the longest this
    /// device is configured to wait; the server refuses again if that was too soon).
    func pause(atLeast minimum: Double? = nil) async {
        let asked = min(minimum ?? 0, config.pollMaximum)
        try? await Task.sleep(for: .seconds(max(asked, backoff * Double.random(in: 0.5...1.5))))
        backoff = min(backoff * 2, config.pollMaximum)
    }

    /// Picks up a token `flotilla-agent rotate-token` wrote into the configuration file (only
    /// when the token came from that file). Between polls, so a poll never mixes tokens; a
    /// manifest already received stays bound to the token it was fetched with, which the
    /// server keeps valid until this new one is first used.
    func followTokenFile() {
        guard let path = config.tokenFile, let fresh = (try? AgentOptions.readFile(path))?["token"], !fresh.isEmpty, fresh != token else { return }
        token = fresh
        log("using the device token rotated into \(path)")
    }

    func log(_ message: String) {
        FileHandle.standardError.write(Data("flotilla-agent: \(message)\n".utf8))
    }
}
