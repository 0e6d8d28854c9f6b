// `flotilla-agent`: the device side. This build has the fleet simulator (virtual devices
// that speak the real device API); the daemon that runs flows on a real device arrives
// with the rest of the agent issue.

import ArgumentParser
import FlotillaCore

@main
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-agent",
        abstract: "The Flotilla device agent: polls the server and runs update flows with rollback.",
        discussion: "`simulate` runs many virtual devices against a real server (demos, load tests). The on-device daemon (`run`, `status`) is not implemented yet.",
        version: FlotillaVersion.current,
        subcommands: [Simulate.self])
}
