// A private PostgreSQL cluster under the server's data directory, so that
// `flotilla-server` runs with no configuration at all. The test suite uses the same code.
//
//     <data-dir>/postgres/   the cluster (PGDATA), created by initdb on first start
//     <data-dir>/run/        its unix socket; it listens on no TCP port
//
// PostgreSQL refuses to run as root, so when we are root the binaries run as the
// `postgres` user (runuser), which then owns postgres/ and run/. If that user cannot
// reach the data directory (it sits under /root), the cluster goes to
// /var/lib/flotilla/<hash of the data directory> instead, and the log line says so.
//
// After a crash: a cluster still running from an earlier server (kill -9 leaves the
// postmaster alive) is adopted, not started twice; a postmaster.pid whose process is
// gone or is not a postgres is removed before starting.
//
// One server per data directory: `<data-dir>/server.lock` is held (flock) for the life of
// the process that started or adopted the cluster. A second server on the same directory
// refuses to start, naming the first; it never adopts, and so never stops, a cluster it
// does not own. The kernel drops the lock when its holder dies, kill -9 included.

import Foundation

public enum EmbeddedPostgresError: Error, CustomStringConvertible {
    case binariesNotFound
    case commandFailed(String, output: String)
    case setup(String)

    public var description: String {
        switch self {
        case .binariesNotFound:
            "no PostgreSQL server binaries found (looked at `pg_config --bindir` and /usr/lib/postgresql/*/bin); install the `postgresql` package or set DATABASE_URL"
        case .commandFailed(let command, let output): "`\(command)` failed: \(output.trimmingTrailingWhitespace)"
        case .setup(let message): message
        }
    }
}

public final class EmbeddedPostgres: @unchecked Sendable {
    public let dataDirectory: String
    public let binDirectory: String
    /// false: fsync off, for throwaway test clusters only.
    public let durable: Bool
    public let databaseName = "flotilla"
    let runAsPostgres = geteuid() == 0
    private var running = false
    /// The open, locked `<data-dir>/server.lock` while this process owns the cluster.
    private var lockFD: Int32 = -1

    /// Where postgres/ and run/ live: the data directory, unless we are root and the
    /// `postgres` user cannot reach it (a data directory under /root, say); then a
    /// directory of its own under /var/lib/flotilla, named after the data directory.
    public let clusterBase: String
    public var clusterDirectory: String { clusterBase + "/postgres" }
    public var socketDirectory: String { clusterBase + "/run" }

    public init(dataDirectory: String, durable: Bool = true) throws {
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        guard let absolute = realpath(dataDirectory, nil) else {
            throw EmbeddedPostgresError.setup("cannot resolve \(dataDirectory)")
        }
        self.dataDirectory = String(cString: absolute)
        free(absolute)
        self.durable = durable
        binDirectory = try EmbeddedPostgres.findBinaries()
        if runAsPostgres {
            chmod(self.dataDirectory, 0o711)  // postgres passes through; it cannot list or read
            let reachable = (try? ChildProcess.run("/usr/sbin/runuser", ["-u", "postgres", "--", "/usr/bin/test", "-x", self.dataDirectory]))?.status == 0
            clusterBase = reachable ? self.dataDirectory
                : "/var/lib/flotilla/" + hexString(Secrets.sha256(self.dataDirectory.utf8)).prefix(16)
            try FileManager.default.createDirectory(atPath: clusterBase, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o711])
        } else {
            clusterBase = self.dataDirectory
        }
        guard (socketDirectory + "/.s.PGSQL.5432").utf8.count < 108 else {
            throw EmbeddedPostgresError.setup("the data directory path is too long for a unix socket (\(socketDirectory)); choose a shorter --data-dir")
        }
    }

    /// The connection string for one database of this cluster.
    public func conninfo(database: String? = nil) -> String {
        "host=\(socketDirectory) port=5432 user=flotilla dbname=\(database ?? databaseName)"
    }

    /// Creates the cluster if needed, then starts it (or adopts a running one) and makes
    /// sure the `flotilla` database exists. `log` hears what happens, one line each.
    public func start(log: (String) -> Void = { _ in }) throws {
        try lockDataDirectory()
        try prepareDirectories()
        if !FileManager.default.fileExists(atPath: clusterDirectory + "/PG_VERSION") {
            log("creating a PostgreSQL cluster in \(clusterDirectory)")
            try run("initdb", ["-D", clusterDirectory, "-U", "flotilla", "-A", "trust", "-E", "UTF8",
                               "--no-locale", "--no-instructions"] + (durable ? [] : ["--no-sync"]))
        }
        if isRunning() {
            log("adopting the PostgreSQL cluster left running in \(clusterDirectory)")
        } else {
            removeStalePidFile(log: log)
            var settings = "-c listen_addresses='' -k '\(socketDirectory)' -c unix_socket_permissions=0700 -p 5432"
            if !durable { settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off" }
            try run("pg_ctl", ["start", "-D", clusterDirectory, "-w", "-t", "60", "-s",
                               "-l", clusterDirectory + "/server.log", "-o", settings])
        }
        running = true
        let admin = try PGConnection(PGConnectionOptions(conninfo: conninfo(database: "postgres")))
        if try admin.query("SELECT 1 FROM pg_database WHERE datname = \(databaseName)").isEmpty {
            try admin.execute(unsafe: "CREATE DATABASE \(databaseName)")
        }
    }

    /// Stops the cluster (fast mode: open sessions are closed, nothing is lost).
    public func stop() {
        guard running else { return }
        running = false
        _ = try? run("pg_ctl", ["stop", "-D", clusterDirectory, "-m", "fast", "-w", "-s"])
        if lockFD >= 0 {
            close(lockFD)  // the data directory is free for the next server
            lockFD = -1
        }
    }

    /// Stops a cluster this process did not start (one left behind by a killed process).
    public func stopIfRunning() {
        if isRunning() {
            _ = try? run("pg_ctl", ["stop", "-D", clusterDirectory, "-m", "immediate", "-w", "-s"])
        }
    }

    public func isRunning() -> Bool {
        // pg_ctl status: 0 running, 3 not running, 4 no cluster.
        (try? run("pg_ctl", ["status", "-D", clusterDirectory])) != nil
    }

    // MARK: - Internals

    private func prepareDirectories() throws {
        let manager = FileManager.default
        for directory in [clusterDirectory, socketDirectory] where !manager.fileExists(atPath: directory) {
            try manager.createDirectory(atPath: directory, withIntermediateDirectories: false,
                                        attributes: [.posixPermissions: 0o700])
        }
        guard runAsPostgres else { return }
        guard let user = getpwnam("postgres") else {
            throw EmbeddedPostgresError.setup("running as root, but there is no `postgres` user to run PostgreSQL as")
        }
        for directory in [clusterDirectory, socketDirectory] {
            chown(directory, user.pointee.pw_uid, user.pointee.pw_gid)
        }
        guard (try? run("/usr/bin/test", ["-x", clusterBase])) != nil else {
            throw EmbeddedPostgresError.setup("the postgres user cannot reach \(clusterBase): every parent directory needs o+x, or pick another --data-dir")
        }
    }

    private func removeStalePidFile(log: (String) -> Void) {
        let pidFile = clusterDirectory + "/postmaster.pid"
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8) else { return }
        let pid = text.split(separator: "\n").first.map(String.init) ?? ""
        let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingTrailingWhitespace
        if comm != "postgres" {
            log("removing the stale \(pidFile) (process \(pid) is gone)")
            try? FileManager.default.removeItem(atPath: pidFile)
        }
    }

    @discardableResult
    private func run(_ tool: String, _ arguments: [String]) throws -> String {
        let executable = tool.hasPrefix("/") ? tool : binDirectory + "/" + tool
        let argv = runAsPostgres ? ["/usr/sbin/runuser", "-u", "postgres", "--", executable] + arguments : [executable] + arguments
        // In "/": postgres must be able to stand in its working directory.
        let (status, output) = try ChildProcess.run(argv[0], Array(argv.dropFirst()), directory: "/")
        guard status == 0 else {
            throw EmbeddedPostgresError.commandFailed(([tool] + arguments).joined(separator: " "), output: output)
        }
        return output
    }

    /// `pg_config --bindir` when it has the server binaries, else the newest /usr/lib/postgresql/N/bin.
    static func findBinaries() throws -> String {
        let manager = FileManager.default
        if let (status, output) = try? ChildProcess.run("/usr/bin/env", ["pg_config", "--bindir"]), status == 0 {
            let directory = output.trimmingTrailingWhitespace
            if manager.isExecutableFile(atPath: directory + "/initdb") { return directory }
        }
        let versions = ((try? manager.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .compactMap(Int.init).sorted(by: >)
        for version in versions where manager.isExecutableFile(atPath: "/usr/lib/postgresql/\(version)/bin/initdb") {
            return "/usr/lib/postgresql/\(version)/bin"
        }
        throw EmbeddedPostgresError.binariesNotFound
    }

    /// Takes `<data-dir>/server.lock`, or says which process holds it.
    private func lockDataDirectory() throws {
        guard lockFD < 0 else { return }
        let path = dataDirectory + "/server.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw EmbeddedPostgresError.setup("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingTrailingWhitespace ?? ""
            close(fd)
            throw EmbeddedPostgresError.setup("another flotilla-server\(holder.isEmpty ? "" : " (pid \(holder))") is using the data directory \(dataDirectory); stop it first, or give this one its own --data-dir")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        lockFD = fd
    }
}
