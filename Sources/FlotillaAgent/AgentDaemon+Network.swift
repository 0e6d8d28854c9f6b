// The agent's network plumbing, apart from the runner: one HTTP/2 connection (made on
// demand, dropped on error), the heartbeat, and a token rotated into the config file.

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

    /// Picks up a token `flotilla-agent rotate-token` wrote into the configuration file (only
    /// when the token came from that file). Between polls, so a poll never mixes tokens; a
    /// manifest already received stays bound to the token it was fetched with, which the
    /// server keeps valid until this new one is first used.
    func followTokenFile() {
        guard let path = config.tokenFile, let fresh = (try? AgentOptions.readFile(path))?["token"], !fresh.isEmpty, fresh != token else { return }
        token = fresh
        log("using the device token rotated into \(path)")
    }

    func log(_ message: String) { Self.log(message) }

    static func log(_ message: String) {
        FileHandle.standardError.write(Data("flotilla-agent: \(message)\n".utf8))
    }
}
