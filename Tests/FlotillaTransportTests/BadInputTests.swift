import Foundation
import XCTest
@testable import FlotillaTransport

/// Hostile and broken clients. After each, the server must still serve others and hold no extra fds.
final class BadInputTests: XCTestCase {
    var server: TestServer!
    var fdsBefore = Set<String>()

    override func setUp() async throws {
        var limits = HTTPServerLimits()
        limits.maxBodyBytes = 64 * 1024
        limits.maxHeaderBytes = 4 * 1024
        limits.requestHeadTimeout = .milliseconds(400)
        limits.idleTimeout = .seconds(30)
        limits.streamResetBurst = 50
        limits.streamResetRatePerSecond = 10
        server = try TestServer(limits: limits)
        // Warm up lazily created descriptors (Dispatch's own) before counting.
        let client = try await HTTP2Client.connect(to: server.url)
        _ = try await client.get("/healthz")
        await client.close()
        try await Task.sleep(for: .milliseconds(1))  // Dispatch creates a timer fd per clock on first use
        try await server.waitForNoConnections()
        fdsBefore = openFDs()
    }

    override func tearDown() async throws {
        // Still serving, over both protocols…
        let client = try await HTTP2Client.connect(to: server.url)
        let h2 = try await client.get("/healthz")
        XCTAssertEqual(h2.status, 200)
        await client.close()
        do {
            let socket = try RawSocket(port: server.port)
            socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            XCTAssertEqual(socket.readResponse()?.status, 200)
        }
        // …and nothing leaked once every connection is gone.
        try await server.waitForNoConnections()
        // Sockets this test opened and never closed; descriptors other suites in this process
        // close meanwhile (servers and clients winding down) do not count either way.
        let leaked = openFDs().subtracting(fdsBefore).filter { $0.contains("socket:") }
        XCTAssertEqual(leaked, [], "file descriptors leaked")
        await server.stop()
    }

    func testGarbageInsteadOfPreface() throws {
        let socket = try RawSocket(port: server.port)
        socket.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
        let response = try XCTUnwrap(socket.readResponse())
        XCTAssertEqual(response.status, 400)
        XCTAssertTrue(response.body.contains(#""code":"bad_request""#), response.body)
        XCTAssertTrue(socket.isClosedByPeer())
    }

    func testOversizedHeadersHTTP1() throws {
        let socket = try RawSocket(port: server.port)
        socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 5000))\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.status, 431)
        XCTAssertTrue(socket.isClosedByPeer())
    }

    func testOversizedHeadersHTTP2() async throws {
        let client = try await HTTP2Client.connect(to: server.url)
        let response = try await client.get("/headers", headers: ["x-big": String(repeating: "a", count: 5000)])
        XCTAssertEqual(response.status, 431)
        XCTAssertTrue(response.bodyText.contains("headers_too_large"))
        // The connection survives a stream-level refusal.
        let ok = try await client.get("/headers", headers: ["x-test": "small"])
        XCTAssertTrue(ok.bodyText.contains(#""x-test":"small""#), ok.bodyText)
        await client.close()
    }

    func testOversizedBody() async throws {
        let big = String(repeating: "a", count: 70 * 1024)
        do {
            let socket = try RawSocket(port: server.port)
            socket.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \(big.utf8.count)\r\n\r\n")
            XCTAssertEqual(socket.readResponse()?.status, 413)
            XCTAssertTrue(socket.isClosedByPeer())
        }
        do {
            let socket = try RawSocket(port: server.port)
            socket.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(String(big.utf8.count, radix: 16))\r\n\(big)\r\n0\r\n\r\n")
            XCTAssertEqual(socket.readResponse()?.status, 413)
        }
        let client = try await HTTP2Client.connect(to: server.url)
        let response = try await client.send(ClientRequest(method: "POST", path: "/echo", body: .bytes(Array(big.utf8))))
        XCTAssertEqual(response.status, 413)
        XCTAssertTrue(response.bodyText.contains("body_too_large"))
        await client.close()
    }

    func testBrokenChunkedEncodingAndSmuggling() throws {
        let attempts = [
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /devices/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /devices/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        for attempt in attempts {
            let socket = try RawSocket(port: server.port)
            socket.send(attempt)
            XCTAssertEqual(socket.readResponse()?.status, 400, attempt)
            // The smuggled request after it must never be answered.
            XCTAssertTrue(socket.isClosedByPeer(), attempt)
        }
    }

    func testSlowlorisGets408AndIsClosed() throws {
        let socket = try RawSocket(port: server.port)
        socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")  // and never the blank line
        // 408 is the head deadline's answer; the idle timeout (30 s here) would close silently.
        XCTAssertEqual(socket.readResponse()?.status, 408)
        XCTAssertTrue(socket.isClosedByPeer())
    }

    func testStalledHTTP2PrefaceAndHeaderBlockAreClosed() throws {
        let half = try RawSocket(port: server.port)
        half.send(Array(H2Frame.preface.prefix(10)))
        XCTAssertTrue(half.isClosedByPeer())

        // A HEADERS frame without END_HEADERS whose CONTINUATION never comes.
        let stalled = try RawSocket(port: server.port)
        stalled.send(H2Frame.preface + H2Frame(type: H2Frame.headers, flags: 0x1, stream: 1, payload: [0x82, 0x86]).bytes)
        let frames = H2Frame.parse(stalled.readAll())
        XCTAssertEqual(frames.last?.type, H2Frame.goaway)
    }

    func testServerAdvertisesItsLimits() throws {
        let socket = try RawSocket(port: server.port)
        socket.send(H2Frame.preface)
        let settings = try XCTUnwrap(H2Frame.parse(socket.readSome()).first { $0.type == H2Frame.settings && $0.flags == 0 })
        XCTAssertEqual(settings.settingsValues[0x3], 100, "SETTINGS_MAX_CONCURRENT_STREAMS")
        XCTAssertEqual(settings.settingsValues[0x6], 4096, "SETTINGS_MAX_HEADER_LIST_SIZE")
    }

    func testRapidResetIsCutOffWithGoaway() throws {
        let socket = try RawSocket(port: server.port)
        var burst = H2Frame.preface
        for i in 0..<200 {
            let stream = UInt32(2 * i + 1)
            burst += H2Frame.get(stream: stream, endStream: false).bytes + H2Frame.reset(stream: stream).bytes
        }
        socket.send(burst)
        let frames = H2Frame.parse(socket.readAll())  // returns at EOF: the server hung up
        let goaway = try XCTUnwrap(frames.first { $0.type == H2Frame.goaway })
        // nghttp2's limiter tears the connection down with INTERNAL_ERROR once the bucket (50) is empty,
        // long before the 200th stream.
        XCTAssertEqual(goaway.errorCode, 2)
        let lastStreamID = UInt32(goaway.payload[0] & 0x7f) << 24 | UInt32(goaway.payload[1]) << 16
            | UInt32(goaway.payload[2]) << 8 | UInt32(goaway.payload[3])
        XCTAssertLessThan(lastStreamID, 150)
    }

    func testAbruptDisconnectsMidRequestAndMidResponse() async throws {
        do {
            let socket = try RawSocket(port: server.port)
            socket.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly a part")
        }  // closed here, body unfinished
        do {
            let socket = try RawSocket(port: server.port)
            socket.send("GET /bytes?n=20000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = socket.readSome()
        }  // closed with most of 20 MB unread
        do {
            let socket = try RawSocket(port: server.port)
            socket.send(H2Frame.preface + H2Frame.get(stream: 1).bytes)
            _ = socket.readSome()
        }
        do {
            let socket = try RawSocket(port: server.port)
            var linger = linger(l_onoff: 1, l_linger: 0)  // close with RST, not FIN
            setsockopt(socket.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            socket.send("GET /slow?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n")
        }
        let probe = server.probe
        try await waitFor { probe.finished >= 1 }  // the slow handler finished into a dead socket
    }

    func testIdleConnectionIsClosed() async throws {
        var limits = HTTPServerLimits()
        limits.idleTimeout = .milliseconds(300)
        let idle = try TestServer(limits: limits)
        let h1 = try RawSocket(port: idle.port)
        let h2 = try RawSocket(port: idle.port)
        h2.send(H2Frame.preface)
        // Both within the sockets' 5 s receive timeout, far below the 10 s head timeout.
        XCTAssertTrue(h1.isClosedByPeer())
        XCTAssertTrue(H2Frame.parse(h2.readAll()).contains { $0.type == H2Frame.goaway })
        try await idle.waitForNoConnections()
        await idle.stop()
    }
}
