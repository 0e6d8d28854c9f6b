import XCTest
@testable import FlotillaTransport

/// The parser on its own: every smuggling and framing case from RFC 9112, as a table.
final class HTTP1ParserTests: XCTestCase {
    private func parse(_ text: String, limits: HTTP1RequestParser.Limits = .init(maxHeadBytes: 1024, maxRequestLineBytes: 256, maxBodyBytes: 100))
        -> Result<[(HTTP1RequestHead, [UInt8])], HTTP1ParseError> {
        var parser = HTTP1RequestParser(limits: limits)
        Array(text.utf8).withUnsafeBytes { parser.feed($0) }
        var requests: [(HTTP1RequestHead, [UInt8])] = []
        do {
            while let event = try parser.next() {
                if case .request(let head, let body) = event { requests.append((head, body)) }
            }
            return .success(requests)
        } catch {
            return .failure(error)
        }
    }

    private func status(_ text: String) -> Int? {
        if case .failure(let error) = parse(text) { return error.status }
        return nil
    }

    func testRefusedInputs() {
        let cases: [(String, Int, String)] = [
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "CL + TE"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, "TE + CL"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "conflicting CL"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd", 400, "conflicting CL list"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "negative CL"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400, "hex CL"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc", 400, "space before colon"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400, "TE not ending in chunked"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "chunked twice"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "unsupported coding"),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "TE in HTTP/1.0"),
            ("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, "obs-fold"),
            ("GET / HTTP/1.1\r\n\r\n", 400, "no Host"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "two Hosts"),
            ("GET / HTTP/1.1\r\nHost: x\r\nX: a\u{1}b\r\n\r\n", 400, "control character"),
            ("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "double space"),
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2.0 request line"),
            ("GET / FOO\r\nHost: x\r\n\r\n", 400, "bad version"),
            ("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad method"),
            ("\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}\u{3}\u{3}", 400, "TLS on plaintext, no newline"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad chunk size"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400, "chunk without CRLF"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400, "chunk size overflow"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", 413, "CL over limit"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + String(repeating: "a", count: 64) + "\r\n40\r\n", 413, "chunked over limit"),
            ("GET /" + String(repeating: "a", count: 300) + " HTTP/1.1\r\n", 414, "long request line"),
            ("GET / HTTP/1.1\r\nHost: x\r\n" + String(repeating: "X-A: b\r\n", count: 200), 431, "headers over limit"),
        ]
        for (input, expected, name) in cases {
            XCTAssertEqual(status(input), expected, name)
        }
    }

    /// A later minor version of HTTP/1 is taken as 1.1 (RFC 9110 §2.5); another major is 505.
    func testALaterHTTP1MinorVersionIsAnsweredAs11() throws {
        let requests = try parse("GET / HTTP/1.2\r\nHost: x\r\n\r\n").get()
        XCTAssertEqual(requests.map(\.0.minorVersion), [1])
        XCTAssertEqual(status("GET / HTTP/3.0\r\nHost: x\r\n\r\n"), 505)
    }

    func testAcceptedInputs() throws {
        let requests = try parse("""
        \r\nGET /a?b=c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc\
        POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
        GET /d HTTP/1.0\n\n
        """).get()
        XCTAssertEqual(requests.map(\.0.target), ["/a?b=c", "/b", "/c", "/d"])
        XCTAssertEqual(requests.map { String(decoding: $0.1, as: UTF8.self) }, ["", "abc", "hi", ""])
        XCTAssertEqual(requests.map(\.0.keepAlive), [false, true, true, false])
        XCTAssertEqual(requests[1].0.headers["CONTENT-LENGTH"], "3")
    }

    func testBodyArrivingInPieces() throws {
        var parser = HTTP1RequestParser(limits: .init())
        var events: [HTTP1ParseEvent] = []
        XCTAssertFalse(parser.isInsideHead)
        for byte in "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n".utf8 {
            [byte].withUnsafeBytes { parser.feed($0) }
            while let event = try parser.next() { events.append(event) }
            // The slowloris clock runs exactly while the head is incomplete.
            XCTAssertEqual(parser.isInsideHead, events.isEmpty)
        }
        guard events.count == 2, case .request(_, let body) = events[1] else { return XCTFail("\(events)") }
        XCTAssertEqual(body, Array("wiki".utf8))
    }
}
