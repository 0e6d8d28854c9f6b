import Foundation
import XCTest
@testable import FlotillaTransport

final class HTTP1Tests: XCTestCase {
    var server: TestServer!

    override func setUp() async throws {
        var limits = HTTPServerLimits()
        limits.maxBodyBytes = 64 * 1024
        limits.maxHeaderBytes = 4 * 1024
        limits.requestHeadTimeout = .milliseconds(500)
        server = try TestServer(limits: limits)
    }

    override func tearDown() async throws {
        await server.stop()
    }

    func testKeepAliveServesSeveralRequestsOnOneConnection() throws {
        let socket = try RawSocket(port: server.port)
        for path in ["/healthz", "/devices/a%20b", "/healthz"] {
            socket.send("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n")
            let response = try XCTUnwrap(socket.readResponse())
            XCTAssertEqual(response.status, 200)
            XCTAssertNil(response.headers["connection"])
        }
        XCTAssertEqual(server.server.acceptedConnectionCount, 1)
    }

    func testPipelinedRequestsAreAnsweredInOrder() throws {
        let socket = try RawSocket(port: server.port)
        // The first is slow, the others fast: their responses must still wait their turn.
        socket.send("GET /slow?ms=200 HTTP/1.1\r\nHost: x\r\n\r\nGET /devices/2 HTTP/1.1\r\nHost: x\r\n\r\nGET /devices/3 HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.body, #"{"slept":200}"#)
        XCTAssertEqual(socket.readResponse()?.body, #"{"id":"2"}"#)
        XCTAssertEqual(socket.readResponse()?.body, #"{"id":"3"}"#)
    }

    func testContentLengthAndChunkedBodies() throws {
        let socket = try RawSocket(port: server.port)
        socket.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        XCTAssertEqual(socket.readResponse()?.body, "hello")
        socket.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: t\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.body, "hello, world")
    }

    func testExpectContinue() throws {
        let socket = try RawSocket(port: server.port)
        socket.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        XCTAssertEqual(String(decoding: socket.readSome(), as: UTF8.self), "HTTP/1.1 100 Continue\r\n\r\n")
        socket.send("ok")
        XCTAssertEqual(socket.readResponse()?.body, "ok")
    }

    func testHeadAndConnectionClose() throws {
        let socket = try RawSocket(port: server.port)
        socket.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let head = try XCTUnwrap(socket.readResponse(isHead: true))
        XCTAssertEqual(head.headers["content-length"], "15")  // GET's length, no body follows
        XCTAssertEqual(head.body, "")
        socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.headers["connection"], "close")
        XCTAssertTrue(socket.isClosedByPeer())
    }

    func testHTTP10ClosesUnlessKeepAlive() throws {
        let socket = try RawSocket(port: server.port)
        socket.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.headers["connection"], "keep-alive")
        socket.send("GET /healthz HTTP/1.0\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.status, 200)
        XCTAssertTrue(socket.isClosedByPeer())
    }

    func testHalfClosedClientStillGetsItsAnswer() throws {
        let socket = try RawSocket(port: server.port)
        socket.send("GET /slow?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n")
        shutdown(socket.fd, Int32(SHUT_WR))
        XCTAssertEqual(socket.readResponse()?.status, 200)
        XCTAssertTrue(socket.isClosedByPeer())
    }

    func testPythonRequestsSessionReusesTheConnection() throws {
        // Never a silent skip: scripts/setup installs requests for the python3 on PATH.
        guard let python = which("python3"), (try? runProcess(python, ["-c", "import requests"]))?.status == 0 else {
            return XCTFail("python3 with requests is not installed: run ./scripts/setup")
        }
        let script = """
        import requests, sys
        s = requests.Session()
        for i in range(5):
            r = s.get("http://127.0.0.1:\(server.port)/devices/%d" % i)
            assert r.status_code == 200 and r.json() == {"id": str(i)}, r.text
        r = s.post("http://127.0.0.1:\(server.port)/echo", data=b"x" * 1000)
        assert r.status_code == 200 and len(r.content) == 1000
        r = s.get("http://127.0.0.1:\(server.port)/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        print("ok")
        """
        let result = try runProcess(python, ["-c", script])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(server.server.acceptedConnectionCount, 1, "requests.Session should keep one connection alive")
    }
}

/// curl is the reference client users will try first.
final class CurlTests: XCTestCase {
    func testCurlOverH2cHTTP11AndTLS() async throws {
        guard let curl = which("curl") else { return XCTFail("curl is not installed: run ./scripts/setup") }
        let plain = try TestServer()
        let secure = try TestServer(tls: TestCertificate.server)
        let format = ["-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"]
        XCTAssertEqual(try runProcess(curl, format + ["--http2-prior-knowledge", "\(plain.url)/healthz"]).output, "2 200")
        XCTAssertEqual(try runProcess(curl, format + ["--http1.1", "\(plain.url)/healthz"]).output, "1.1 200")
        XCTAssertEqual(try runProcess(curl, format + ["-k", "\(secure.url)/healthz"]).output, "2 200")
        XCTAssertEqual(try runProcess(curl, format + ["-k", "--http1.1", "\(secure.url)/healthz"]).output, "1.1 200")
        XCTAssertEqual(try runProcess(curl, format + ["--cacert", TestCertificate.caPath, "https://localhost:\(secure.port)/healthz"]).output, "2 200")
        let body = try runProcess(curl, ["-s", "--http2-prior-knowledge", "-X", "DELETE", "\(plain.url)/healthz", "-D", "-"]).output
        XCTAssertTrue(body.contains("HTTP/2 405"), body)
        XCTAssertTrue(body.contains("allow: GET, HEAD"), body)
        XCTAssertTrue(body.contains(#"{"error":{"code":"method_not_allowed""#), body)
        await plain.stop()
        await secure.stop()
    }
}
