// Starting a child process the one way Flotilla does it: posix_spawn, stdin from
// /dev/null, stdout and stderr on one pipe the parent reads, the environment given whole.
// The agent's scripts (in a process group of their own, so a timeout or a crash can kill
// all of what they started) and ChildProcess (initdb, pg_ctl, the tests' servers) both
// start here. Not Foundation's Process: on this toolchain its exit monitoring missed the
// exit of `pg_ctl start` (whose daemon outlives it) and waitUntilExit() hung forever.

#if canImport(Glibc)
import Glibc
#endif

public struct SpawnError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

public struct Spawned: Sendable {
    public let pid: pid_t
    /// The read end of the child's stdout and stderr; the caller closes it.
    public let output: Int32
}

/// Starts `command` (argv[0] an absolute path) with `environment` (KEY=value each). With
/// `processGroup`, the child leads a new process group whose id is its pid.
public func spawn(_ command: [String], environment: [String], processGroup: Bool = false) throws(SpawnError) -> Spawned {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw SpawnError(description: "pipe: \(String(nulTerminated: strerror(errno)))") }
    // Only the child's stdout/stderr may hold the write end, or reading never sees EOF.
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
    if processGroup {
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
    }
    var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, command[0], &actions, &attributes, &argv, &envp)
    close(fds[1])
    guard rc == 0 else {
        close(fds[0])
        throw SpawnError(description: "cannot start \(command[0]): \(String(nulTerminated: strerror(rc)))")
    }
    return Spawned(pid: pid, output: fds[0])
}

extension String {
    /// The text of a C string (strerror) without the deprecated init(cString:).
    init(nulTerminated pointer: UnsafePointer<CChar>?) {
        guard let pointer else { self = ""; return }
        self.init(decoding: UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)), as: UTF8.self)
    }
}
