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
        kill(postmaster, SIGKILL)
        for _ in 0..<100 where kill(postmaster, 0) == 0 { try await Task.sleep(for: .milliseconds(50)) }
        try await Task.sleep(for: .milliseconds(300))  // its children notice and exit
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

        TestCluster.shared.stop()
        for _ in 0..<3 {
            let during = try await api.call("GET", "/api/v1/devices/before")
            expect(during, 503, code: "database_unavailable")
            XCTAssertEqual(during.headers["retry-after"], "1")
        }
        let health = try await api.call("GET", "/healthz")
        XCTAssertEqual(health.status, 200, "the server itself is alive")

        try TestCluster.shared.start()
        var recovered: APIResponse?
        for _ in 0..<50 {
            let response = try await api.call("GET", "/api/v1/devices/before")
            if response.status == 200 { recovered = response; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertEqual(recovered?.json["name"], .string("before"))
        expect(try await api.call("POST", "/api/v1/devices", #"{"name":"after"}"#), 201)
        await api.close()
        await server.stop()
    }
}
