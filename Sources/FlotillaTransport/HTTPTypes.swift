// The HTTP vocabulary shared by HTTP/1.1, HTTP/2, the router and the handlers.
// Deliberately Foundation-free: this sits on the hot path of every request.

import FlotillaJSON

/// An ordered list of header fields; lookups ignore case (HTTP/2 names are lowercase anyway).
public struct HTTPHeaders: Sendable, Sequence, ExpressibleByDictionaryLiteral {
    public private(set) var fields: [(name: String, value: String)]

    public init(_ fields: [(name: String, value: String)] = []) { self.fields = fields }
    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { (name: $0.0, value: $0.1) }
    }

    public subscript(name: String) -> String? {
        fields.first { $0.name.caseInsensitiveEquals(name) }?.value
    }

    public func values(_ name: String) -> [String] {
        fields.filter { $0.name.caseInsensitiveEquals(name) }.map(\.value)
    }

    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    public mutating func set(_ name: String, _ value: String) {
        remove(name)
        fields.append((name, value))
    }

    public mutating func remove(_ name: String) {
        fields.removeAll { $0.name.caseInsensitiveEquals(name) }
    }

    public var count: Int { fields.count }
    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }
}

public struct HTTPRequest: Sendable {
    public var method: String
    /// The path, percent-encoded as received, without the query.
    public var path: String
    /// The raw query string after `?`, if any.
    public var query: String?
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// A streaming route's body, arriving while its handler runs (`body` is then empty).
    public var bodyStream: HTTPBodyStream?
    /// Values of the route's `{name}` segments, percent-decoded.
    public var pathParameters: [String: String] = [:]
    /// "1.0", "1.1" or "2".
    public var httpVersion: String
    public var remoteAddress: String?
    /// The subject CN of the client certificate the TLS handshake verified (mTLS; "" when it
    /// has no CN); nil without TLS, without client verification, or without a certificate.
    public var clientCertificate: String?

    public init(method: String, path: String, query: String? = nil, headers: HTTPHeaders = [:],
                body: [UInt8] = [], httpVersion: String = "2", remoteAddress: String? = nil) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.httpVersion = httpVersion
        self.remoteAddress = remoteAddress
    }

    /// Splits a request target ("/a/b?x=1") into path and query.
    static func splitTarget(_ target: String) -> (path: String, query: String?) {
        let utf8 = target.utf8
        guard let mark = utf8.firstIndex(of: UInt8(ascii: "?")) else { return (target, nil) }
        return (String(target[..<mark]), String(target[utf8.index(after: mark)...]))
    }

    /// Query parameters, percent-decoded; a repeated name keeps its first value.
    public var queryParameters: [String: String] {
        var result: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = percentDecode(String(parts[0]), plusAsSpace: true) ?? String(parts[0])
            let value = parts.count > 1 ? (percentDecode(String(parts[1]), plusAsSpace: true) ?? String(parts[1])) : ""
            if result[name] == nil { result[name] = value }
        }
        return result
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// When set, the body is this file region, streamed from disk (`body` is ignored).
    public var file: HTTPFileBody?

    public init(status: Int, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public init(status: Int, headers: HTTPHeaders = [:], file: HTTPFileBody) {
        self.status = status
        self.headers = headers
        self.body = []
        self.file = file
    }

    /// The Content-Length this response announces.
    var contentLength: Int { file?.length ?? body.count }

    /// A JSON response from already-serialized JSON text.
    public static func json(_ status: Int, _ text: String, headers: HTTPHeaders = [:]) -> HTTPResponse {
        var headers = headers
        headers.set("content-type", "application/json")
        return HTTPResponse(status: status, headers: headers, body: Array(text.utf8))
    }

    /// The one error shape of the whole product: `{"error":{"code":"…","message":"…","details":…}}`;
    /// `details` (serialized JSON) is present only when given.
    public static func error(_ status: Int, code: String, message: String, headers: HTTPHeaders = [:],
                             details: String? = nil) -> HTTPResponse {
        let extra = details.map { #","details":"# + $0 } ?? ""
        return json(status, #"{"error":{"code":"\#(jsonEscape(code))","message":"\#(jsonEscape(message))"\#(extra)}}"#, headers: headers)
    }
}

/// Thrown by handlers to answer with an error status; anything else thrown becomes a 500.
public struct HTTPError: Error, Sendable {
    public var status: Int
    public var code: String
    public var message: String
    public var headers: HTTPHeaders
    /// Serialized JSON for the error's `details` member (per-field problems), if any.
    public var details: String?

    public init(_ status: Int, code: String, message: String, headers: HTTPHeaders = [:], details: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details
    }

    public var response: HTTPResponse { .error(status, code: code, message: message, headers: headers, details: details) }
}


/// Decodes %XX escapes; nil when an escape is malformed or the result is not UTF-8.
public func percentDecode(_ text: String, plusAsSpace: Bool = false) -> String? {
    guard text.utf8.contains(where: { $0 == UInt8(ascii: "%") || (plusAsSpace && $0 == UInt8(ascii: "+")) }) else {
        return text
    }
    var bytes: [UInt8] = []
    var iterator = text.utf8.makeIterator()
    while let byte = iterator.next() {
        if byte == UInt8(ascii: "+") && plusAsSpace {
            bytes.append(UInt8(ascii: " "))
        } else if byte == UInt8(ascii: "%") {
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            bytes.append(high << 4 | low)
        } else {
            bytes.append(byte)
        }
    }
    return String(validating: bytes, as: UTF8.self)
}

func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}

extension String {
    func caseInsensitiveEquals(_ other: String) -> Bool {
        let a = utf8, b = other.utf8
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { x, y in
            let lower = x | 0x20
            return x == y || (lower >= UInt8(ascii: "a") && lower <= UInt8(ascii: "z") && lower == y | 0x20)
        }
    }
}

/// Reason phrases for HTTP/1.1 status lines.
func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 100: "Continue"
    case 200: "OK"
    case 201: "Created"
    case 202: "Accepted"
    case 204: "No Content"
    case 206: "Partial Content"
    case 304: "Not Modified"
    case 400: "Bad Request"
    case 401: "Unauthorized"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 408: "Request Timeout"
    case 409: "Conflict"
    case 411: "Length Required"
    case 413: "Content Too Large"
    case 414: "URI Too Long"
    case 416: "Range Not Satisfiable"
    case 422: "Unprocessable Content"
    case 429: "Too Many Requests"
    case 431: "Request Header Fields Too Large"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 503: "Service Unavailable"
    case 505: "HTTP Version Not Supported"
    default: "Status \(status)"
    }
}
