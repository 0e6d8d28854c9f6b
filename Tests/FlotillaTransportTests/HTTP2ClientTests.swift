import XCTest
@testable import FlotillaTransport

final class HTTP2ClientTests: XCTestCase {
    func testH2cRequestThroughOurClient() async throws {
        let server = try TestServer()
        let client = try await HTTP2Client.connect(to: server.url)
        let response = try await client.get("/healthz")
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.bodyText, #"{"status":"ok"}"#)
        XCTAssertEqual(response.headers["content-type"], "application/json")
        await client.close()
        await server.stop()
    }
}

final class HTTP2MultiplexingTests: XCTestCase {
    func testTLSWithALPNh2AndCertificateVerification() async throws {
        let server = try TestServer(tls: TestCertificate.server)
        XCTAssertTrue(server.url.hasPrefix("https://"))
        let client = try await HTTP2Client.connect(to: "https://localhost:\(server.port)",
                                                   tls: .init(trustedCAPath: TestCertificate.caPath))
        let response = try await client.get("/devices/cam-7")
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.bodyText, #"{"id":"cam-7"}"#)
        await client.close()

        // Without trusting our CA, verification must fail instead of silently connecting.
        do {
            _ = try await HTTP2Client.connect(to: "https://localhost:\(server.port)")
            XCTFail("connected to an untrusted certificate")
        } catch let error as HTTPClientError {
            guard case .connectFailed = error else { return XCTFail("unexpected \(error)") }
        }
        await server.stop()
    }

    func testHundredConcurrentStreamsOnOneConnectionAndNoMore() async throws {
        let probe = ConcurrencyProbe()
        let server = try TestServer(router: TestRoutes.router(probe: probe))
        let client = try await HTTP2Client.connect(to: server.url)
        // 150 slow requests at once: the server advertises 100 streams, so 100 run and 50 queue.
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<150 { group.addTask { try await client.get("/slow?ms=300").status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        XCTAssertEqual(statuses, Array(repeating: 200, count: 150))
        XCTAssertEqual(probe.peak, 100, "MAX_CONCURRENT_STREAMS should cap handlers running for one connection")
        XCTAssertEqual(server.server.acceptedConnectionCount, 1, "all streams must share one connection")
        await client.close()
        await server.stop()
    }

    func testPerRequestTimeoutLeavesConnectionUsable() async throws {
        let server = try TestServer()
        let client = try await HTTP2Client.connect(to: server.url)
        do {
            _ = try await client.get("/slow?ms=2000", timeout: .milliseconds(100))
            XCTFail("expected a timeout")
        } catch let error as HTTPClientError {
            XCTAssertEqual(error, .timedOut)
        }
        let response = try await client.get("/healthz", timeout: .seconds(5))
        XCTAssertEqual(response.status, 200)
        await client.close()
        await server.stop()
    }

    func testRequestBodyStreamedFromFile() async throws {
        var limits = HTTPServerLimits()
        limits.maxBodyBytes = 16 << 20
        let server = try TestServer(limits: limits)
        let path = NSTemporaryDirectory() + "upload-\(UUID().uuidString)"
        // 1.5 MiB: several 256 KiB file chunks and more than one flow-control window.
        let bytes = (0..<(3 << 19)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let client = try await HTTP2Client.connect(to: server.url)
        let response = try await client.send(ClientRequest(method: "POST", path: "/echo", body: .file(path: path)))
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.headers["x-body-length"], String(bytes.count))
        XCTAssertEqual(response.headers["x-body-checksum"], String(checksum(bytes)))
        XCTAssertEqual(response.body.count, bytes.count)

        do {
            _ = try await client.send(ClientRequest(method: "POST", path: "/echo", body: .file(path: "/nonexistent")))
            XCTFail("expected a body read error")
        } catch let error as HTTPClientError {
            guard case .bodyReadFailed = error else { return XCTFail("unexpected \(error)") }
        }
        await client.close()
        await server.stop()
    }

    func testConnectErrorsAreClear() async throws {
        // A port nobody listens on: bind one, close it, connect.
        let fd = try Socket.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
        let port = try Socket.localAddress(fd).port
        close(fd)
        do {
            _ = try await HTTP2Client.connect(to: "http://127.0.0.1:\(port)")
            XCTFail("connected to a closed port")
        } catch let error as HTTPClientError {
            XCTAssertTrue("\(error)".contains("Connection refused"), "\(error)")
        }
        do {
            _ = try await HTTP2Client.connect(to: "ftp://x")
            XCTFail("accepted a bad URL")
        } catch let error as HTTPClientError {
            XCTAssertEqual(error, .invalidURL("ftp://x"))
        }
    }

    func testServerClosingFailsPendingRequests() async throws {
        let server = try TestServer()
        let client = try await HTTP2Client.connect(to: server.url)
        async let slow = client.get("/slow?ms=3000")
        try await waitFor { server.probe.running == 1 }
        await server.server.shutdown(gracePeriod: .milliseconds(100))
        do {
            _ = try await slow
            XCTFail("request survived a forced close")
        } catch is HTTPClientError {}
        do {
            _ = try await client.get("/healthz")
            XCTFail("request on a closed connection succeeded")
        } catch let error as HTTPClientError {
            guard case .connectionClosed = error else { return XCTFail("unexpected \(error)") }
        }
    }
}

final class HTTP2ClientLifetimeTests: XCTestCase {
    func testADroppedClientClosesItsConnection() async throws {
        let server = try TestServer()
        do {
            let client = try await HTTP2Client.connect(to: server.url)
            _ = try await client.get("/healthz")
            XCTAssertEqual(server.server.openConnectionCount, 1)
        }  // dropped without close()
        try await server.waitForNoConnections()
        await server.stop()
    }
}
