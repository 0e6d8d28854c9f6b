// Streaming request bodies and file responses, over HTTP/2 (our client) and HTTP/1.1
// (curl and raw sockets): bytes arrive intact, a slow reader throttles the sender instead
// of filling memory, limits answer 413, and a client that goes away breaks the body off.

import Foundation
import XCTest
@testable import FlotillaTransport

/// What a streaming test route saw, read by the test afterwards.
final class UploadProbe: @unchecked Sendable {
    private let lock = NSLock()
    private var largestPull = 0
    private var outcome: String?
    var largest: Int { lock.withLock { largestPull } }
    var result: String? { lock.withLock { outcome } }
    func pulled(_ count: Int) { lock.withLock { largestPull = max(largestPull, count) } }
    func ended(_ text: String) { lock.withLock { outcome = text } }
}

enum StreamingRoutes {
    static let uploadLimit = 64 << 20
    static let smallUploadLimit = 1 << 20

    static func router(probe: UploadProbe, file: String) -> Router {
        var router = TestRoutes.router()
        // Reads slowly, like a disk that cannot keep up: the transport must hold the client back.
        router.streaming("POST", "/upload-small", limit: smallUploadLimit) { request in
            while try await request.bodyStream?.next() != nil {}
            return .json(200, "{}")
        }
        router.streaming("POST", "/upload", limit: uploadLimit) { request in
            guard let body = request.bodyStream else { return .error(500, code: "no_stream", message: "no body stream") }
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            var total = 0
            do {
                while let chunk = try await body.next() {
                    probe.pulled(chunk.count)
                    for b in chunk { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
                    total += chunk.count
                    if request.queryParameters["slow"] != nil { try await Task.sleep(for: .milliseconds(2)) }
                }
            } catch let error as HTTPError {
                probe.ended("error \(error.status)")
                throw error
            }
            probe.ended("ok \(total)")
            return .json(200, #"{"length":\#(total),"checksum":"\#(hash)"}"#)
        }
        router.get("/file") { request in
            let whole = try HTTPFileBody(path: file)
            guard let range = request.queryParameters["range"]?.split(separator: "-").compactMap({ Int($0) }), range.count == 2 else {
                return HTTPResponse(status: 200, headers: ["content-type": "application/octet-stream"], file: whole)
            }
            return HTTPResponse(status: 206, file: whole.region(offset: range[0], length: range[1] - range[0]))
        }
        return router
    }
}

final class StreamingTests: XCTestCase {
    var server: TestServer!
    var probe: UploadProbe!
    var directory: URL!
    var bigFile: String { directory.appendingPathComponent("big.bin").path }
    var bigBytes: [UInt8] = []
    var expected = ""

    /// 4 MiB (four stream windows) and the route's answer for them; built once, debug builds are slow at it.
    static let fixture: ([UInt8], String) = {
        // Not random, but with no short period a misplaced chunk could hide in.
        let bytes = (0..<(4 << 20)).map { i in UInt8(truncatingIfNeeded: (i &* 2_654_435_761) >> 13 ^ i >> 20) }
        return (bytes, #"{"length":\#(bytes.count),"checksum":"\#(checksum(bytes))"}"#)
    }()

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-stream-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        (bigBytes, expected) = Self.fixture
        XCTAssertTrue(FileManager.default.createFile(atPath: bigFile, contents: Data(bigBytes)))
        probe = UploadProbe()
        var limits = HTTPServerLimits()
        limits.maxBodyBytes = 64 * 1024  // buffered routes stay small; the streaming route has its own limit
        limits.idleTimeout = .seconds(2)
        server = try TestServer(limits: limits, router: StreamingRoutes.router(probe: probe, file: bigFile))
    }

    override func tearDown() async throws {
        await server.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    func testHTTP2UploadFarBeyondTheBufferedLimitStreamsWithBackPressure() async throws {
        let client = try await HTTP2Client.connect(to: server.url)
        let response = try await client.send(ClientRequest(method: "POST", path: "/upload?slow=1", body: .file(path: bigFile)),
                                             timeout: .seconds(120))
        XCTAssertEqual(response.status, 200, response.bodyText)
        XCTAssertEqual(response.bodyText, expected)
        // The stream window (1 MiB) is only reopened as the handler reads: it never holds more.
        XCTAssertLessThanOrEqual(probe.largest, 1 << 20)
        XCTAssertGreaterThan(probe.largest, 0)
        // Buffered routes keep their small limit on the same server.
        let small = try await client.send(ClientRequest(method: "POST", path: "/echo", body: .bytes([UInt8](repeating: 1, count: 65 * 1024))))
        XCTAssertEqual(small.status, 413)
        await client.close()
    }

    func testHTTP1UploadsWithContentLengthAndChunkedStreamWithBackPressure() throws {
        for chunked in [false, true] {
            var arguments = ["-sS", "--max-time", "120", "-X", "POST", "--data-binary", "@\(bigFile)",
                             "-H", "content-type: application/octet-stream"]
            if chunked { arguments += ["-H", "transfer-encoding: chunked"] }
            let result = try runProcess(try XCTUnwrap(which("curl")), arguments + ["\(server.url)/upload?slow=1"])
            XCTAssertEqual(result.status, 0)
            XCTAssertEqual(result.output, expected, "chunked: \(chunked)")
            // Reading pauses past 1 MiB unread; one socket read more may already be in hand.
            XCTAssertLessThanOrEqual(probe.largest, (1 << 20) + (256 << 10), "chunked: \(chunked)")
        }
    }

    func testBodiesOverTheRouteLimitAre413() async throws {
        let socket = try RawSocket(port: server.port)
        socket.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: \(StreamingRoutes.uploadLimit + 1)\r\n\r\n")
        XCTAssertEqual(socket.readResponse()?.status, 413)

        let chunked = try RawSocket(port: server.port)
        // A chunk that would cross the limit is refused before its bytes are read.
        chunked.send("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n")
        chunked.send([UInt8](repeating: 7, count: 1 << 20))
        chunked.send("\r\n\(String(StreamingRoutes.uploadLimit, radix: 16))\r\n")
        XCTAssertEqual(chunked.readResponse()?.status, 413)

        let client = try await HTTP2Client.connect(to: server.url)
        let response = try await client.send(ClientRequest(method: "POST", path: "/upload-small", body: .file(path: bigFile)))
        XCTAssertEqual(response.status, 413)
        await client.close()
    }

    func testAClientThatGoesAwayMidUploadBreaksTheBodyOff() async throws {
        let socket = try RawSocket(port: server.port)
        socket.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        socket.send([UInt8](repeating: 1, count: 1000))
        shutdown(socket.fd, Int32(SHUT_RDWR))
        try await waitFor { self.probe.result != nil }
        XCTAssertEqual(probe.result, "error 400")

        // And one that stalls mid-body gets a 408 once the idle timeout passes.
        let stalled = try RawSocket(port: server.port)
        stalled.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")
        XCTAssertEqual(stalled.readResponse()?.status, 408)
    }

    func testFileResponsesOverBothProtocolsWithRegionsAndHead() async throws {
        let client = try await HTTP2Client.connect(to: server.url, maxResponseBytes: 32 << 20)
        let whole = try await client.get("/file", timeout: .seconds(60))
        XCTAssertEqual(whole.status, 200)
        XCTAssertEqual(whole.headers["content-length"], String(bigBytes.count))
        XCTAssertTrue(whole.body == bigBytes, "HTTP/2 file body differs")
        let part = try await client.get("/file?range=1000-5000")
        XCTAssertEqual(part.status, 206)
        XCTAssertTrue(part.body == Array(bigBytes[1000..<5000]))
        let head = try await client.send(ClientRequest(method: "HEAD", path: "/file"))
        XCTAssertEqual(head.headers["content-length"], String(bigBytes.count))
        XCTAssertTrue(head.body.isEmpty)
        await client.close()

        // HTTP/1.1: a file response, then a pipelined request behind it on the same connection.
        let output = directory.appendingPathComponent("out.bin").path
        let result = try runProcess(try XCTUnwrap(which("curl")),
                                    ["-sS", "--max-time", "60", "-o", output, "\(server.url)/file", "-o", "/dev/null", "\(server.url)/healthz",
                                     "-w", "%{http_code} %{num_connects}\\n"])
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(result.output, "200 1\n200 0\n")
        XCTAssertTrue(Array(try Data(contentsOf: URL(fileURLWithPath: output))) == bigBytes, "HTTP/1.1 file body differs")
    }
}

func waitFor(timeout: TimeInterval = 10, _ condition: @escaping () -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while !condition() {
        guard Date() < deadline else { return XCTFail("condition not met within \(timeout) s") }
        try await Task.sleep(for: .milliseconds(10))
    }
}
