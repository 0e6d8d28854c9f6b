// `flotilla-agent run`: a real device under the one runner (AgentRunner.swift). This file
// wires them: the configuration, the state directory (DeviceBody over AgentFiles), one
// HTTP/2 connection made on demand (AgentDaemon+Network.swift), and the manifest key pinned
// before the first poll (AgentDaemon+Trust.swift).
//
//   start → pin the key from what is on disk → resume the journal → heartbeat
//         → pin the key (asking the server if need be) → poll and work until killed

import FlotillaCore
import FlotillaJSON
import FlotillaTransport
import Foundation

final class AgentDaemon: @unchecked Sendable {
    let config: AgentConfig
    let files: AgentFiles
    let body: DeviceBody
    private(set) var runner: AgentRunner!
    var client: HTTP2Client?
    /// When the server's signing-key document was last read (an announced next key).
    var trustRefreshedAt = Date.distantPast

    /// The device token in use: the configured one, or a newer one `rotate-token` wrote
    /// into the configuration file since (see followTokenFile).
    var token: String

    /// What makes a manifest believable (ManifestTrust.swift); set before the first poll.
    var trust: ManifestTrust? {
        get { runner.trust }
        set { runner.trust = newValue }
    }

    init(config: AgentConfig) throws {
        self.config = config
        token = config.token
        files = try AgentFiles(root: config.stateDirectory)
        let log: @Sendable (String) -> Void = { AgentDaemon.log($0) }
        body = DeviceBody(files: files, config: config, log: log)
        let network = AgentRunner.Network(connection: { [unowned self] in try await connection() },
                                          drop: { [unowned self] in await dropConnection() },
                                          auth: { [unowned self] in auth }, token: { [unowned self] in token })
        body.network = network
        runner = AgentRunner(body: body, machine: try files.loadMachine(), manifest: try AgentFiles.read(files.manifestPath),
                             network: network,
                             polling: .init(wait: config.pollWait, minimum: config.pollMinimum, maximum: config.pollMaximum),
                             trust: nil, log: log)
        runner.beforePoll = { [unowned self] in
            followTokenFile()
            await refreshTrust()
        }
        runner.afterEnd = { [unowned self] in await heartbeat() }
    }

    var auth: HTTPHeaders { ["authorization": "Bearer \(token)", "content-type": "application/json"] }

    func run() async throws {
        log("flotilla-agent \(FlotillaVersion.current) starting; state in \(config.stateDirectory); phase \(runner.machine.journal.objectValue?["phase"]?.stringValue ?? "?")")
        await loadTrust(offline: true)
        await runner.resume()
        await heartbeat()
        await loadTrust()
        await runner.run()
    }

    func pause(atLeast minimum: Double? = nil) async { await runner.pause(atLeast: minimum) }
}
