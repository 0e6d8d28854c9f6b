// Runs a flow's shell script: `/bin/sh -c SCRIPT` in a process group of its own, with the
// flow's parameters in its environment and a timeout after which the whole group is
// killed (an install script that started a daemon or a pipeline must not outlive it).
// Only the tail of its combined output is kept, for the report.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct ScriptResult: Sendable {
    var exitCode: Int
    var timedOut: Bool
    var tail: String
    var succeeded: Bool { exitCode == 0 && !timedOut }
}

enum Script {
    static let tailBytes = 4096

    static func run(_ script: String, environment extra: [String: String], timeout: Double) throws -> ScriptResult {
        try execute(["/bin/sh", "-c", script], environment: extra, timeout: timeout)
    }

    /// Runs a program (argv[0] is an absolute path) the same way: own process group, timeout, tail.
    static func execute(_ command: [String], environment extra: [String: String] = [:], timeout: Double) throws -> ScriptResult {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw AgentError.io("pipe: \(String(cString: strerror(errno)))") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A new process group led by the shell, so the timeout can kill all of it.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, command[0], &actions, &attributes, &argv, &envp)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw AgentError.io("cannot start \(command[0]): \(String(cString: strerror(rc)))")
        }
        // The watchdog: past the deadline, SIGKILL the group; the read below then sees EOF.
        let timedOut = TimeoutFlag(false)
        let watchdog = DispatchWorkItem {
            timedOut.set()
            kill(-pid, SIGKILL)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        var tail: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            tail.append(contentsOf: buffer[0..<n])
            if tail.count > 2 * tailBytes { tail.removeFirst(tail.count - tailBytes) }
        }
        close(fds[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        watchdog.cancel()
        // Whatever the shell left behind in its group goes with it.
        kill(-pid, SIGKILL)
        if tail.count > tailBytes { tail.removeFirst(tail.count - tailBytes) }
        // The server refuses NUL in every string (PostgreSQL cannot store it): a script that
        // printed one must not leave a report the server will never take.
        tail.removeAll { $0 == 0 }
        let exited = (status & 0x7f) == 0
        let code = exited ? Int((status >> 8) & 0xff) : 128 + Int(status & 0x7f)
        return ScriptResult(exitCode: code, timedOut: timedOut.value, tail: String(decoding: tail, as: UTF8.self))
    }
}

/// A flag set from the watchdog's thread and read after waitpid.
final class TimeoutFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag: Bool
    init(_ value: Bool) { flag = value }
    func set() { lock.lock(); flag = true; lock.unlock() }
    var value: Bool { lock.lock(); defer { lock.unlock() }; return flag }
}
