import FlotillaJSON
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

/// The README's promise: `flotilla-server` with no configuration creates, starts and stops
/// its own PostgreSQL, survives its own crash, and keeps data across restarts.
final class EmbeddedDatabaseTests: XCTestCase {
    func testStartStopRestartAndKill9() async throws {
        let dataDir = NSTemporaryDirectory() + "flotilla-embedded-\(UUID().uuidString.prefix(8))"
        addTeardownBlock {
            _ = try? runProcess("/bin/sh", ["-c", "runuser -u postgres -- /usr/lib/postgresql/*/bin/pg_ctl stop -D \(dataDir)/postgres -m immediate || /usr/lib/postgresql/*/bin/pg_ctl stop -D \(dataDir)/postgres -m immediate"])
            try? FileManager.default.removeItem(atPath: dataDir)
        }
        typealias Server = ServerProcessTests.ServerProcess
        let pidFile = dataDir + "/postgres/postmaster.pid"

        // First start: creates the cluster, prints the admin token once, saves it 0600.
        var server: Server? = try Server(["--listen", "127.0.0.1:0"], dataDir: dataDir)
        XCTAssertTrue(server!.startup.contains("creating a PostgreSQL cluster"), server!.startup)
        let token = try String(contentsOfFile: dataDir + "/admin-token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(server!.startup.contains("admin token (shown once, saved to \(dataDir)/admin-token): \(token)"), server!.startup)
        let mode = try FileManager.default.attributesOfItem(atPath: dataDir + "/admin-token")[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dataDir + "/run/.s.PGSQL.5432"), "a unix socket, no TCP port")

        // The manifest-signing key: made on first start, secret (0600), the one the API serves.
        let keyMode = try FileManager.default.attributesOfItem(atPath: dataDir + "/signing-key")[.posixPermissions] as? Int
        XCTAssertEqual(keyMode, 0o600)
        XCTAssertTrue(server!.startup.contains("created the manifest-signing key"), server!.startup)
        var api = APIClient(port: server!.port, token: token, wire: .h1)
        let published = try await api.call("GET", "/api/v1/agent/signing-key").json["public_key"]?.stringValue
        let seed = try XCTUnwrap(Base64URL.decode(String(contentsOfFile: dataDir + "/signing-key", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        XCTAssertEqual(published, Base64URL.encode(try Ed25519.PrivateKey(seed: seed).publicKey))
        expect(try await api.call("POST", "/api/v1/devices", #"{"name":"survivor"}"#), 201)

        // SIGTERM stops the cluster too.
        let stopped = server!.terminate(SIGTERM)
        XCTAssertEqual(stopped.status, 0, stopped.output)
        XCTAssertTrue(stopped.output.contains("stopped the embedded PostgreSQL"), stopped.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: pidFile), "postgres is down")

        // Second start: same data, no new token.
        server = try Server(["--listen", "127.0.0.1:0"], dataDir: dataDir)
        XCTAssertFalse(server!.startup.contains("admin token"), server!.startup)
        XCTAssertFalse(server!.startup.contains("creating"), server!.startup)
        api = APIClient(port: server!.port, token: token, wire: .h2)
        expect(try await api.call("GET", "/api/v1/devices/survivor"), 200)
        let samePublished = try await api.call("GET", "/api/v1/agent/signing-key").json["public_key"]?.stringValue
        XCTAssertEqual(samePublished, published, "a restart keeps the key agents pinned")
        await api.close()

        // kill -9: the server cannot stop postgres, so the next start adopts the running cluster.
        _ = server!.terminate(SIGKILL)
        XCTAssertTrue(FileManager.default.fileExists(atPath: pidFile), "postgres outlived the killed server")
        server = try Server(["--listen", "127.0.0.1:0"], dataDir: dataDir)
        XCTAssertTrue(server!.startup.contains("adopting"), server!.startup)
        api = APIClient(port: server!.port, token: token, wire: .h2)
        expect(try await api.call("GET", "/api/v1/devices/survivor"), 200)
        await api.close()
        _ = server!.terminate(SIGKILL)

        // A crash of postgres itself leaves a stale postmaster.pid behind; the next start copes.
        let postmaster = try XCTUnwrap(Int32(String(contentsOfFile: pidFile, encoding: .utf8).split(separator: "\n")[0]))
        let backends = children(of: postmaster)
        XCTAssertFalse(backends.isEmpty, "a running cluster has its background processes")
        kill(postmaster, SIGKILL)
        for _ in 0..<100 where kill(postmaster, 0) == 0 { try await Task.sleep(for: .milliseconds(50)) }
        // Its children notice and exit; until they have, the data directory is still in use.
        try await eventually("the dead postmaster's children exited", seconds: 10) { !backends.contains(where: isAlive) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: pidFile), "the pid file is stale now")
        server = try Server(["--listen", "127.0.0.1:0"], dataDir: dataDir)
        api = APIClient(port: server!.port, token: token, wire: .h1)
        expect(try await api.call("GET", "/api/v1/devices/survivor"), 200)
        XCTAssertEqual(server!.terminate(SIGINT).status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: pidFile))
    }
}

/// The database goes away under a running server: requests get 503 + Retry-After, never a
/// hang or a crash, and service resumes by itself once it is back.
final class DatabaseOutageTests: XCTestCase {
    func testRequestsDuringAnOutageGet503ThenRecover() async throws {
        let server = try APIServer()
        let api = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        expect(try await api.call("POST", "/api/v1/devices", #"{"name":"before"}"#), 201)
        expect(try await api.call("GET", "/readyz"), 200)

        TestCluster.shared.stop()
        for _ in 0..<3 {
            let during = try await api.call("GET", "/api/v1/devices/before")
            expect(during, 503, code: "database_unavailable")
            XCTAssertEqual(during.headers["retry-after"], "1")
        }
        let health = try await api.call("GET", "/healthz")
        XCTAssertEqual(health.status, 200, "the server itself is alive")
        let ready = try await api.call("GET", "/readyz")
        expect(ready, 503, code: "database_unavailable")  // but not ready: send traffic elsewhere

        try TestCluster.shared.start()
        var recovered: APIResponse?
        for _ in 0..<50 {
            let response = try await api.call("GET", "/api/v1/devices/before")
            if response.status == 200 { recovered = response; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertEqual(recovered?.json["name"], .string("before"))
        expect(try await api.call("POST", "/api/v1/devices", #"{"name":"after"}"#), 201)
        expect(try await api.call("GET", "/readyz"), 200)
        await api.close()
        await server.stop()
    }
}

/// One server per data directory: a second one refuses to start, naming the first, and
/// leaves the first one's cluster running (it used to adopt it, then stop it on its way out).
final class DataDirectoryLockTests: XCTestCase {
    func testASecondServerOnTheSameDataDirectoryRefusesAndStopsNothing() async throws {
        let dataDir = NSTemporaryDirectory() + "flotilla-locked-\(UUID().uuidString.prefix(8))"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dataDir) }
        let first = try ServerProcessTests.ServerProcess(["--listen", "127.0.0.1:0"], dataDir: dataDir)
        let token = try String(contentsOfFile: dataDir + "/admin-token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)

        let second = try runProcess(productsDirectory.appendingPathComponent("flotilla-server").path,
                                    ["--listen", "127.0.0.1:0", "--data-dir", dataDir],
                                    environment: ProcessInfo.processInfo.environment.filter { $0.key != "DATABASE_URL" })
        XCTAssertNotEqual(second.status, 0, second.output)
        XCTAssertTrue(second.output.contains("another flotilla-server (pid \(first.pid)) is using the data directory"), second.output)
        XCTAssertFalse(second.output.contains("adopting"), second.output)

        // The first server's database is still there and serving.
        let api = APIClient(port: first.port, token: token, wire: .h2)
        expect(try await api.call("GET", "/api/v1/devices"), 200)
        await api.close()
        let stopped = first.terminate(SIGTERM)
        XCTAssertEqual(stopped.status, 0, stopped.output)

        // Once the first is gone, the directory is free again.
        let third = try ServerProcessTests.ServerProcess(["--listen", "127.0.0.1:0"], dataDir: dataDir)
        XCTAssertEqual(third.terminate(SIGTERM).status, 0)
    }
}

/// Pids of `parent`'s children, read from /proc (each /proc/PID/stat names its parent).
func children(of parent: Int32) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry in
        guard let pid = Int32(entry), let stat = FileManager.default.contents(atPath: "/proc/\(entry)/stat") else { return nil }
        // "pid (comm) state ppid …": the command may hold spaces and parentheses; the last ')' ends it.
        let text = String(decoding: stat, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 1 && Int32(fields[1]) == parent ? pid : nil
    }
}

/// Running, not a zombie waiting for whoever adopted it to reap it.
func isAlive(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0, let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return false }
    let text = String(decoding: stat, as: UTF8.self)
    guard let close = text.lastIndex(of: ")") else { return false }
    return text[text.index(after: close)...].split(separator: " ").first != "Z"
}
