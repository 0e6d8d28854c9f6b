import Foundation
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import XCTest

/// The real `flotilla-server` executable, as users and scripts run it.
final class ServerProcessTests: XCTestCase {
    final class ServerProcess {
        let child: ChildProcess
        let port: Int
        var pid: Int32 { child.pid }

        /// What the server printed before `listening on`.
        private(set) var startup = ""

        /// Without `dataDir`, the server uses a fresh database of the test cluster (DATABASE_URL);
        /// with it, no DATABASE_URL is set and the server runs its own embedded PostgreSQL there.
        init(_ arguments: [String], environment: [String: String] = [:], dataDir: String? = nil) throws {
            var env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            var arguments = arguments
            if let dataDir {
                env["DATABASE_URL"] = nil
                arguments += ["--data-dir", dataDir]
            } else {
                if env["DATABASE_URL"] == nil { env["DATABASE_URL"] = try TestCluster.freshDatabase().conninfo }
                arguments += ["--data-dir", NSTemporaryDirectory() + "flotilla-unused-\(getpid())"]
            }
            child = try ChildProcess(productsDirectory.appendingPathComponent("flotilla-server").path, arguments, environment: env)
            // The contract with scripts: a line `listening on http://HOST:PORT`, after any start-up lines.
            while let line = child.readLine() {
                if let match = line.firstMatch(of: /^listening on https?:\/\/[^ ]+:(\d+)\n$/) {
                    port = Int(match.1)!
                    return
                }
                startup += line
            }
            throw ChildProcessError("flotilla-server printed no listening line; output: \(startup)")
        }

        func terminate(_ signal: Int32 = SIGTERM) -> (status: Int32, output: String) {
            child.signal(signal)
            let rest = child.readToEnd()
            TestLog.append(rest)  // the log after start-up (which prints the admin token once, on purpose)
            return (child.wait(), rest)
        }
    }

    func testListensPrintsItsAddressAndStopsCleanlyOnSIGTERM() async throws {
        let server = try ServerProcess(["--listen", "127.0.0.1:0"])
        let client = try await HTTP2Client.connect(to: "http://127.0.0.1:\(server.port)")
        let health = try await client.get("/healthz")
        XCTAssertEqual(health.bodyText, #"{"status":"ok"}"#)
        let version = try await client.get("/version")
        XCTAssertTrue(version.bodyText.contains(#""version":"0.1.0""#), version.bodyText)
        let idle = try RawSocket(port: server.port)  // an idle keep-alive connection must not hold shutdown up
        idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(idle.readResponse()?.status, 200)

        let (status, output) = server.terminate(SIGTERM)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("received SIGTERM"), output)
        XCTAssertTrue(output.hasSuffix("stopped\n"), output)
        XCTAssertTrue(idle.isClosedByPeer())
        await client.close()
    }

    /// One structured line per request, unknown paths included; never a secret.
    func testEveryRequestIsLoggedOnceWithoutSecrets() async throws {
        let server = try ServerProcess(["--listen", "127.0.0.1:0", "--log-level", "info"])
        let secret = try XCTUnwrap(server.startup.firstMatch(of: /admin token [^:]*: (flt_a_[A-Za-z0-9_-]+)/)?.1)
        let socket = try RawSocket(port: server.port)
        socket.send("GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(secret)\r\nX-Request-ID: listing-1\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.status, 200)
        socket.send("GET /api/v1/devics HTTP/1.1\r\nHost: x\r\nX-Request-ID: typo-2\r\n\r\n")
        let typo = try XCTUnwrap(socket.readResponse())
        XCTAssertEqual(typo.status, 404)
        XCTAssertEqual(typo.headers["x-request-id"], "typo-2")
        socket.send("DELETE /api/v1/devices HTTP/1.1\r\nHost: x\r\nX-Request-ID: verb-3\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.status, 405)
        socket.send("POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer flt_a_wrong\r\nX-Request-ID: denied-4\r\nContent-Length: 2\r\n\r\n{}")
        XCTAssertEqual(socket.readResponse()?.status, 401)
        // No wait: a stopping server writes every request line still waiting (RequestLog).

        let (status, output) = server.terminate(SIGTERM)
        XCTAssertEqual(status, 0)
        let lines = output.split(separator: "\n").filter { $0.contains("request_id=") }
        for (id, path, code) in [("listing-1", "/api/v1/devices", 200), ("typo-2", "/api/v1/devics", 404),
                                 ("verb-3", "/api/v1/devices", 405), ("denied-4", "/api/v1/devices", 401)] {
            let mine = lines.filter { $0.contains("request_id=\(id)") }
            XCTAssertEqual(mine.count, 1, "one line for \(id): \(lines)")
            XCTAssertTrue(mine.first.map { $0.contains("path=\(path)") && $0.contains("status=\(code)") && $0.contains("duration_ms=") } ?? false,
                          String(mine.first ?? "no line"))
        }
        XCTAssertFalse(lines.first { $0.contains("listing-1") }?.contains("caller=-") ?? true, "the token id is logged")
        XCTAssertFalse(output.contains(secret), "a secret reached the log")
        XCTAssertFalse(output.contains("flt_a_wrong"), "a presented (bad) secret reached the log")
    }

    /// SIGTERM with agents long-polling: their polls answer 204 with a short retry interval at
    /// once (they used to wait out the drain and get 503 "the pool is closed").
    func testAStoppingServerAnswersWaitingPollsFirst() async throws {
        let server = try ServerProcess(["--listen", "127.0.0.1:0", "--shutdown-grace", "20"])
        let secret = String(try XCTUnwrap(server.startup.firstMatch(of: /admin token [^:]*: (flt_a_[A-Za-z0-9_-]+)/)?.1))
        let admin = APIClient(port: server.port, token: secret, wire: .h2)
        let created = try await admin.call("POST", "/api/v1/devices", #"{"name":"cam-1"}"#)
        let device = APIClient(port: server.port, token: try XCTUnwrap(created.json["device_token"]?.stringValue), wire: .h2)
        let started = Date()
        async let poll = device.call("GET", "/api/v1/agent/next?wait=30")
        // Not observable from outside the process: give the poll a moment to park. (Were it
        // not parked yet, a stopping server would still answer it 204 without waiting.)
        try await Task.sleep(for: .milliseconds(300))
        server.child.signal(SIGTERM)
        let answer = try await poll
        XCTAssertEqual(answer.status, 204, answer.text)
        XCTAssertEqual(answer.headers["x-poll-interval"], "5")
        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "answered at the start of the drain, not after it")
        let (status, output) = server.terminate(SIGTERM)
        XCTAssertEqual(status, 0, output)
        await device.close()
        await admin.close()
    }

    func testSIGINTAndTheEnvironmentVariable() throws {
        let server = try ServerProcess([], environment: ["FLOTILLA_LISTEN": "127.0.0.1:0"])
        let socket = try RawSocket(port: server.port)
        socket.send("GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.status, 200)
        XCTAssertEqual(server.terminate(SIGINT).status, 0)
    }

    func testBadFlagsFailWithAClearMessage() throws {
        let binary = productsDirectory.appendingPathComponent("flotilla-server").path
        let bad = try runProcess(binary, ["--listen", "nonsense"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("--listen wants HOST:PORT"), bad.output)
        let missingKey = try runProcess(binary, ["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem"])
        XCTAssertNotEqual(missingKey.status, 0)
        XCTAssertTrue(missingKey.output.contains("--tls-cert and --tls-key go together"), missingKey.output)
        let unreadable = try runProcess(binary, ["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"])
        XCTAssertNotEqual(unreadable.status, 0)
        XCTAssertTrue(unreadable.output.contains("loading certificate /nonexistent.pem"), unreadable.output)
    }

    func testTLSFromTheCommandLine() async throws {
        let server = try ServerProcess(["--listen", "127.0.0.1:0", "--tls-cert", TestCertificate.server.certificatePath,
                                        "--tls-key", TestCertificate.server.privateKeyPath])
        let client = try await HTTP2Client.connect(to: "https://localhost:\(server.port)",
                                                   tls: .init(trustedCAPath: TestCertificate.caPath))
        let response = try await client.get("/healthz")
        XCTAssertEqual(response.status, 200)
        await client.close()
        XCTAssertEqual(server.terminate().status, 0)
    }

    /// SIGHUP reloads the certificate files: new connections get the new certificate, the
    /// open one carries on, and the server keeps running.
    func testSIGHUPReloadsTheCertificate() async throws {
        let directory = NSTemporaryDirectory() + "flotilla-sighup-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try TestPKI(directory: directory, name: "first"), second = try TestPKI(directory: directory, name: "second")
        func install(_ issued: (certificate: String, key: String)) throws {
            for (from, to) in [(issued.certificate, "/live.pem"), (issued.key, "/live.key")] {
                try? FileManager.default.removeItem(atPath: directory + to)
                try FileManager.default.copyItem(atPath: from, toPath: directory + to)
            }
        }
        try install(try first.issue("localhost", server: true))
        let server = try ServerProcess(["--listen", "127.0.0.1:0", "--tls-cert", directory + "/live.pem", "--tls-key", directory + "/live.key"])
        let url = "https://localhost:\(server.port)"
        let old = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: first.caPath))
        let before = try await old.get("/healthz")
        XCTAssertEqual(before.status, 200)

        try install(try second.issue("localhost", server: true))
        server.child.signal(SIGHUP)
        let line = server.child.readLine() ?? ""
        XCTAssertTrue(line.contains("reloaded the TLS certificate"), line)
        let fresh = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: second.caPath))
        let after = try await fresh.get("/healthz")
        XCTAssertEqual(after.status, 200)
        let kept = try await old.get("/healthz")
        XCTAssertEqual(kept.status, 200, "the connection opened before the reload still works")
        await old.close()
        await fresh.close()
        XCTAssertEqual(server.terminate().status, 0)
    }

    /// The server process's own descriptors, counted from /proc, come back to where they were
    /// after a round of hostile clients.
    func testNoDescriptorLeaksInTheServerProcess() async throws {
        let server = try ServerProcess(["--listen", "127.0.0.1:0", "--header-timeout", "0.3", "--max-body-bytes", "1024"])
        // Warm up every lazily created descriptor (timers, TLS-free paths) once.
        do {
            let socket = try RawSocket(port: server.port)
            socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")
            XCTAssertEqual(socket.readResponse()?.status, 408)
        }
        try await waitForFDs(of: server.pid, toSettle: nil)
        let before = openFDCount(pid: server.pid)

        for request in [
            "\u{16}\u{3}\u{1}garbage",
            "GET /healthz HTTP/1.1\r\nHost: x\r\n",  // slowloris
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  // then vanish
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX: \(String(repeating: "y", count: 40000))\r\n\r\n",
        ] {
            let socket = try RawSocket(port: server.port, receiveTimeout: 0.1)
            socket.send(request)
            _ = socket.readSome()
        }
        let url = "http://127.0.0.1:\(server.port)"
        let clients = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    let client = try await HTTP2Client.connect(to: url)
                    let status = try await client.get("/healthz").status
                    await client.close()
                    return status
                }
            }
            return try await group.reduce(0) { $0 + ($1 == 200 ? 1 : 0) }
        }
        XCTAssertEqual(clients, 20)
        try await waitForFDs(of: server.pid, toSettle: before)
        XCTAssertEqual(openFDCount(pid: server.pid), before)
        XCTAssertEqual(server.terminate().status, 0)
    }

    private func waitForFDs(of pid: Int32, toSettle target: Int?) async throws {
        let deadline = Date().addingTimeInterval(5)
        var last = -1
        while Date() < deadline {
            let now = openFDCount(pid: pid)
            if let target, now == target { return }
            if target == nil && now == last { return }
            last = now
            try await Task.sleep(for: .milliseconds(400))
        }
    }
}
