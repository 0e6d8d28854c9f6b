// The root command and the one place errors become messages and exit codes.
//
// Exit codes (also in `flotilla --help`): 0 ok, 1 error, 2 usage, 4 auth (401/403),
// 8 a watched deployment ended without every device succeeding. ArgumentParser's own
// usage code is 64 (EX_USAGE); operators' scripts are told 2, so we map it here.

import ArgumentParser
import FlotillaCore
import Foundation

public struct Flotilla: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "flotilla",
        abstract: "Operate a Flotilla fleet: devices, groups, flows, artifacts, deployments.",
        discussion: """
            The server and token come from --server/--token, else FLOTILLA_URL/FLOTILLA_TOKEN, \
            else the file `flotilla login` writes (~/.config/flotilla/config).

            Read commands print aligned tables (colour on a terminal) or, with --json, the API's JSON.

            EXIT CODES
              0  ok
              1  error (unreachable server, refused request, …)
              2  usage (bad arguments)
              4  authentication or permission (bad token, role too low)
              8  a watched deployment ended without every device succeeding (failed, rolled back, canceled)
            """,
        version: FlotillaVersion.current,
        subcommands: [
            Login.self, Devices.self, Groups.self, Flows.self, Artifacts.self, Deploy.self, Deployments.self,
            Tokens.self, EnrollmentTokens.self, Events.self, Audit.self,
        ])

    public init() {}
}

/// What went wrong, how to fix it, and the exit code it means.
public struct CLIError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public var hint: String?
    public var exitCode: Int32

    public init(_ message: String, hint: String? = nil, exitCode: Int32 = ExitStatus.error) {
        self.message = message
        self.hint = hint
        self.exitCode = exitCode
    }

    public var description: String { hint.map { "\(message)\n  hint: \($0)" } ?? message }
}

public enum ExitStatus {
    public static let ok: Int32 = 0
    public static let error: Int32 = 1
    public static let usage: Int32 = 2
    public static let auth: Int32 = 4
    public static let deploymentFailed: Int32 = 8
}

public enum CLIMain {
    /// Parses `arguments`, runs the command and returns the exit code. Never throws or traps
    /// on bad input: every error is printed as one message (plus a hint) on stderr.
    public static func run(_ arguments: [String]) async -> Int32 {
        do {
            var command = try Flotilla.parseAsRoot(arguments)
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
            return ExitStatus.ok
        } catch let error as CLIError {
            printError("error: \(error)")
            return error.exitCode
        } catch let code as ExitCode {
            return code.rawValue
        } catch {
            let code = Flotilla.exitCode(for: error)
            let message = Flotilla.fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }  // --help, --version
                return ExitStatus.ok
            }
            if code == .validationFailure {
                printError(message)
                return ExitStatus.usage
            }
            printError("error: \(message)")
            return ExitStatus.error
        }
    }
}

func printError(_ text: String) {
    var line = text
    if !line.hasSuffix("\n") { line += "\n" }
    FileHandle.standardError.write(Data(line.utf8))
}
