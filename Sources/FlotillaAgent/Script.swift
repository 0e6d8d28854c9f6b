// Runs a flow's shell script: `/bin/sh -c SCRIPT` in a process group of its own, with the
// flow's parameters in its environment and a timeout after which the whole group is
// killed (an install script that started a daemon or a pipeline must not outlive it).
// Only the tail of its combined output is kept, for the report.

import FlotillaSystem
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
        // A new process group led by the shell, so the timeout can kill all of it.
        let environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }.map { "\($0.key)=\($0.value)" }
        let child: Spawned
        do {
            child = try spawn(command, environment: environment, processGroup: true)
        } catch {
            throw AgentError.io(error.description)
        }
        let pid = child.pid
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
            let n = buffer.withUnsafeMutableBytes { read(child.output, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            tail.append(contentsOf: buffer[0..<n])
            if tail.count > 2 * tailBytes { tail.removeFirst(tail.count - tailBytes) }
        }
        close(child.output)
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
