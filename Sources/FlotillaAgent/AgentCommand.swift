// `flotilla-agent`: the device side. For now it only describes itself; the
// polling daemon, the flow runner and the simulator arrive with the agent issue.

import ArgumentParser
import FlotillaCore

@main
struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-agent",
        abstract: "The Flotilla device agent: polls the server and runs update flows with rollback.",
        discussion: "Not implemented yet: this build only prints help.",
        version: FlotillaVersion.current)
}
