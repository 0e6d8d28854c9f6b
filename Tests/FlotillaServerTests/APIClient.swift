// A small client for the management API over either protocol: HTTP/2 through the
// project's own client (what agents and the CLI use), HTTP/1.1 over a raw keep-alive
// socket (what curl and Python `requests` send).

import FlotillaAPI
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

enum Wire: String, CaseIterable {
    case h2, h1
}

struct APIResponse {
    let status: Int
    let headers: [String: String]
    let text: String
    var json: JSON { (try? JSON.parse(Array(text.utf8))) ?? .null }
    var errorCode: String? { json["error"]?["code"]?.stringValue }
}

final class APIClient: @unchecked Sendable {
    let wire: Wire
    var token: String?
    private let port: Int
    private var h2: HTTP2Client?
    private var h1: RawSocket?

    /// HTTP/2 over TLS to localhost instead of h2c (a server started with TLS).
    var tls: TLSClientConfiguration?

    init(port: Int, token: String?, wire: Wire, tls: TLSClientConfiguration? = nil) {
        self.port = port
        self.token = token
        self.wire = wire
        self.tls = tls
    }

    func call(_ method: String, _ path: String, _ body: String? = nil, headers extra: [String: String] = [:]) async throws -> APIResponse {
        var headers: [String: String] = extra
        if let token { headers["authorization"] = "Bearer \(token)" }
        if body != nil { headers["content-type"] = "application/json" }
        switch wire {
        case .h2:
            if h2 == nil {
                if let tls {
                    h2 = try await HTTP2Client.connect(to: "https://localhost:\(port)", tls: tls)
                } else {
                    h2 = try await HTTP2Client.connect(to: "http://127.0.0.1:\(port)")
                }
            }
            let response = try await h2!.send(ClientRequest(
                method: method, path: path, headers: HTTPHeaders(headers.map { ($0.key, $0.value) }),
                body: body.map { .bytes(Array($0.utf8)) } ?? .none))
            var flat: [String: String] = [:]
            for field in response.headers { flat[field.name.lowercased()] = field.value }
            return APIResponse(status: response.status, headers: flat, text: response.bodyText)
        case .h1:
            if h1 == nil { h1 = try RawSocket(port: port) }
            var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            for (name, value) in headers { head += "\(name): \(value)\r\n" }
            let bytes = Array((body ?? "").utf8)
            if body != nil || method == "POST" || method == "PATCH" { head += "Content-Length: \(bytes.count)\r\n" }
            h1!.send(Array((head + "\r\n").utf8) + bytes)
            guard let response = h1!.readResponse(isHead: method == "HEAD") else {
                h1 = nil
                throw SocketError("read")
            }
            if response.headers["connection"] == "close" { h1 = nil }
            return APIResponse(status: response.status, headers: response.headers, text: response.body)
        }
    }

    func close() async {
        await h2?.close()
        h2 = nil
        h1 = nil
    }
}

extension JSON {
    subscript(key: String) -> JSON? { objectValue?[key] }
    subscript(index: Int) -> JSON? {
        guard let items = arrayValue, items.indices.contains(index) else { return nil }
        return items[index]
    }
    var count: Int { arrayValue?.count ?? objectValue?.count ?? 0 }
}

/// Asserts a status (and an error code), printing the body when it differs.
func expect(_ response: APIResponse, _ status: Int, code: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(response.status, status, response.text, file: file, line: line)
    if let code { XCTAssertEqual(response.errorCode, code, response.text, file: file, line: line) }
    if status >= 400 {
        XCTAssertEqual(response.headers["content-type"], "application/json", file: file, line: line)
        XCTAssertNotNil(response.json["error"]?["message"]?.stringValue, "every error has a message: \(response.text)", file: file, line: line)
    }
}
