// `flotilla-agent`: the device side. `run` is the daemon that carries out update flows on
// the device (AgentDaemon), `status` reads its state directory, `simulate` runs many
// virtual devices against a server for demos and load tests.

import ArgumentParser
import FlotillaCore

@main
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-agent",
        abstract: "The Flotilla device agent: polls the server and runs update flows with rollback.",
        discussion: "`run` is the on-device daemon (see the README for its systemd unit); `status` shows what it is doing; `simulate` runs many virtual devices against a real server (demos, load tests).",
        version: FlotillaVersion.current,
        subcommands: [Run.self, Enroll.self, RotateToken.self, Status.self, Simulate.self])
}
