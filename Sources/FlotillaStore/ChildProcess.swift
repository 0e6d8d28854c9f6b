// A child process started with posix_spawn and reaped with waitpid: the embedded
// PostgreSQL's initdb/pg_ctl, and the tests' flotilla-server processes.
//
// Not Foundation's Process: on this toolchain its exit monitoring missed the exit of
// `pg_ctl start` (whose daemon outlives it) and waitUntilExit() hung forever.

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
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ChildProcessError("pipe: \(String(cString: strerror(errno)))") }
        // Only the child's stdout/stderr may hold the write end, or reading never sees EOF.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        let command = directory.map { ["/usr/bin/env", "-C", $0, executable] } ?? [executable]
        var argv: [UnsafeMutablePointer<CChar>?] = (command + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        var envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, command[0], &actions, nil, &argv, &envp)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw ChildProcessError("cannot run \(executable): \(String(cString: strerror(rc)))")
        }
        pid = child
        output = fds[0]
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
