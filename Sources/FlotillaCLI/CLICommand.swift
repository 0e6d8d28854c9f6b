// `flotilla`: the operators' CLI. For now it only describes itself; the
// `flotilla <noun> <verb>` commands arrive with the CLI issue.

import ArgumentParser
import FlotillaCore

@main
struct CLICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla",
        abstract: "Operate a Flotilla fleet: devices, groups, flows, deployments.",
        discussion: "Not implemented yet: this build only prints help.",
        version: FlotillaVersion.current)
}
