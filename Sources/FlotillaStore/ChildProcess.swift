// A child process started by FlotillaSystem's spawn and reaped with waitpid: the embedded
// PostgreSQL's initdb/pg_ctl, and the tests' flotilla-server processes.

import FlotillaSystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private let output: Int32
    private var buffered: [UInt8] = []
    private var exitStatus: Int32?

    /// Starts `executable` with stdout and stderr on one pipe and stdin from /dev/null;
    /// in `directory` when given (through `env -C`: posix_spawn's chdir action is a GNU
    /// extension Swift does not import).
    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                directory: String? = nil) throws {
        let command = directory.map { ["/usr/bin/env", "-C", $0, executable] } ?? [executable]
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let child: Spawned
        do {
            child = try spawn(command + arguments, environment: env)
        } catch {
            throw ChildProcessError(error.description)
        }
        pid = child.pid
        output = child.output
    }

    /// Runs a command to completion: its exit status and combined output.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                           directory: String? = nil) throws -> (status: Int32, output: String) {
        let child = try ChildProcess(executable, arguments, environment: environment, directory: directory)
        let output = child.readToEnd()
        return (child.wait(), output)
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            _ = wait()
        }
        close(output)
    }

    /// The next line of output (with its newline); nil at end of output.
    public func readLine() -> String? {
        while true {
            if let newline = buffered.firstIndex(of: 10) {
                let line = String(decoding: buffered[...newline], as: UTF8.self)
                buffered.removeFirst(newline + 1)
                return line
            }
            guard fill() else {
                defer { buffered = [] }
                return buffered.isEmpty ? nil : String(decoding: buffered, as: UTF8.self)
            }
        }
    }

    /// Everything left until the child (and anything holding its output) closes it.
    public func readToEnd() -> String {
        while fill() {}
        defer { buffered = [] }
        return String(decoding: buffered, as: UTF8.self)
    }

    public func signal(_ number: Int32) { kill(pid, number) }

    /// Waits for the exit; 128+N for death by signal N.
    @discardableResult
    public func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        exitStatus = code
        return code
    }

    public var isRunning: Bool {
        guard exitStatus == nil else { return false }
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        if rc == pid {
            exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            return false
        }
        return true
    }

    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(output, $0.baseAddress, $0.count) }
            if count > 0 { buffered += chunk[0..<count]; return true }
            if count < 0 && errno == EINTR { continue }
            return false
        }
    }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
