// An incremental HTTP/1.1 request parser (RFC 9112), strict where leniency enables
// request smuggling: both Content-Length and Transfer-Encoding, conflicting or
// malformed Content-Lengths, a Transfer-Encoding not ending in chunked, obs-fold,
// whitespace before a colon and bare CRs are all refused with 400.
//
// Bodies are buffered whole, up to `maxBodyBytes`, unless the body policy (asked once
// per request head: the connection routes it) says the route streams: then the body
// comes out as `.bodyPart`s, up to that route's own limit.

struct HTTP1RequestHead {
    var method: String
    var target: String
    var minorVersion: Int
    var headers: HTTPHeaders
    var keepAlive: Bool
    var expectsContinue: Bool
}

struct HTTP1ParseError: Error, Equatable {
    let status: Int
    let code: String
    let message: String
}

enum HTTP1ParseEvent {
    /// The head is in; the body (if any) is still coming. Lets the connection send `100 Continue`.
    case head(HTTP1RequestHead, bodyLength: Int?)
    /// Some bytes of a streaming request's body.
    case bodyPart([UInt8])
    /// The request is complete (a streaming request's `body` is empty: it went out in parts).
    case request(HTTP1RequestHead, body: [UInt8])
}

struct HTTP1BodyPolicy {
    var limit: Int
    var streaming: Bool
}

struct HTTP1RequestParser {
    struct Limits {
        var maxHeadBytes = 32 * 1024
        var maxRequestLineBytes = 8 * 1024
        var maxBodyBytes = 8 * 1024 * 1024
    }

    private enum State {
        case head(scanned: Int)
        case fixed(HTTP1RequestHead, remaining: Int)
        case chunkSize(HTTP1RequestHead)
        case chunkData(HTTP1RequestHead, remaining: Int)
        case chunkEnd(HTTP1RequestHead)
        case trailers(HTTP1RequestHead, scanned: Int)
        case failed
    }

    let limits: Limits
    private var input = ByteBuffer()
    private var state = State.head(scanned: 0)
    private var body: [UInt8] = []
    private var received = 0
    /// Asked for every request head; without it, bodies are buffered up to `limits.maxBodyBytes`.
    var bodyPolicy: ((HTTP1RequestHead) -> HTTP1BodyPolicy)?
    private var policy: HTTP1BodyPolicy

    init(limits: Limits) {
        self.limits = limits
        policy = HTTP1BodyPolicy(limit: limits.maxBodyBytes, streaming: false)
    }

    /// True while part of a request has arrived but not all of it (the slowloris clock runs).
    var isInsideHead: Bool {
        if case .head = state { return !input.isEmpty }
        return false
    }

    mutating func feed(_ bytes: UnsafeRawBufferPointer) { input.append(bytes) }

    /// Parses as far as the buffered bytes allow; nil means "need more bytes".
    mutating func next() throws(HTTP1ParseError) -> HTTP1ParseEvent? {
        do {
            return try step()
        } catch {
            state = .failed
            input.removeAll()
            throw error
        }
    }

    private mutating func step() throws(HTTP1ParseError) -> HTTP1ParseEvent? {
        while true {
            switch state {
            case .failed:
                return nil
            case .head(let scanned):
                skipLeadingNewlines()
                guard let end = findBlankLine(from: scanned) else {
                    try checkHeadSize()
                    state = .head(scanned: max(0, input.readableCount - 3))
                    return nil
                }
                let head = try input.withReadableBytes { raw in
                    Result { () throws(HTTP1ParseError) in try parseHead(UnsafeRawBufferPointer(rebasing: raw[0..<end.headEnd])) }
                }.get()
                input.consume(end.next)
                policy = bodyPolicy?(head) ?? HTTP1BodyPolicy(limit: limits.maxBodyBytes, streaming: false)
                received = 0
                let length = try bodyFraming(head)
                body = []
                switch length {
                case .none:
                    state = .head(scanned: 0)
                    return .request(head, body: [])
                case .fixed(let count):
                    state = .fixed(head, remaining: count)
                    if !policy.streaming { body.reserveCapacity(count) }
                    return .head(head, bodyLength: count)
                case .chunked:
                    state = .chunkSize(head)
                    return .head(head, bodyLength: nil)
                }
            case .fixed(let head, let remaining):
                if remaining == 0 {
                    state = .head(scanned: 0)
                    defer { body = [] }
                    return .request(head, body: body)
                }
                let take = min(remaining, input.readableCount)
                guard take > 0 else { return nil }
                let part = absorb(take)
                state = .fixed(head, remaining: remaining - take)
                if let part { return .bodyPart(part) }
            case .chunkSize(let head):
                guard let line = try takeLine(limit: 1024) else { return nil }
                let size = try parseChunkSize(line)
                guard received + size <= policy.limit else {
                    throw HTTP1ParseError(status: 413, code: "body_too_large",
                                          message: "request body exceeds \(policy.limit) bytes")
                }
                state = size == 0 ? .trailers(head, scanned: 0) : .chunkData(head, remaining: size)
            case .chunkData(let head, let remaining):
                let take = min(remaining, input.readableCount)
                guard take > 0 else { return nil }
                let part = absorb(take)
                state = take < remaining ? .chunkData(head, remaining: remaining - take) : .chunkEnd(head)
                if let part { return .bodyPart(part) }
            case .chunkEnd(let head):
                guard let line = try takeLine(limit: 2) else { return nil }
                guard line.isEmpty else { throw bad("chunk data is not followed by CRLF") }
                state = .chunkSize(head)
            case .trailers(let head, _):
                // Trailer fields are read and dropped: nothing here needs them.
                guard let line = try takeLine(limit: limits.maxHeadBytes) else { return nil }
                if line.isEmpty {
                    state = .head(scanned: 0)
                    defer { body = [] }
                    return .request(head, body: body)
                }
                state = .trailers(head, scanned: 0)
            }
        }
    }

    /// Takes `count` body bytes from the input: buffered, or returned as a part when streaming.
    private mutating func absorb(_ count: Int) -> [UInt8]? {
        received += count
        defer { input.consume(count) }
        if policy.streaming { return input.withReadableBytes { Array($0[0..<count]) } }
        input.withReadableBytes { body.append(contentsOf: $0[0..<count]) }
        return nil
    }

    // MARK: Head

    private mutating func skipLeadingNewlines() {
        // RFC 9112 §2.2: ignore at least one empty line before the request line.
        var skip = 0
        input.withReadableBytes { raw in
            while skip < raw.count && (raw[skip] == 13 || raw[skip] == 10) { skip += 1 }
        }
        if skip > 0 { input.consume(skip) }
    }

    /// Finds the empty line that ends the head: "\n\r\n" or "\n\n".
    private func findBlankLine(from start: Int) -> (headEnd: Int, next: Int)? {
        input.withReadableBytes { raw in
            var i = max(start, 0)
            while i < raw.count {
                if raw[i] == 10 {
                    if i + 1 < raw.count && raw[i + 1] == 10 { return (i + 1, i + 2) }
                    if i + 2 < raw.count && raw[i + 1] == 13 && raw[i + 2] == 10 { return (i + 1, i + 3) }
                }
                i += 1
            }
            return nil
        }
    }

    private func checkHeadSize() throws(HTTP1ParseError) {
        // Bytes that cannot start a request line (a TLS ClientHello on the plaintext port,
        // random garbage) are refused at once instead of waiting for a newline that never comes.
        let looksLikeMethod = input.withReadableBytes { raw in
            raw.prefix(32).prefix { $0 != 32 }.allSatisfy(isTokenByte)
        }
        guard looksLikeMethod else { throw bad("not an HTTP request") }
        let count = input.readableCount
        let requestLineLength = input.withReadableBytes { $0.firstIndex(of: 10) ?? $0.count }
        if requestLineLength > limits.maxRequestLineBytes {
            throw HTTP1ParseError(status: 414, code: "uri_too_long", message: "request line exceeds \(limits.maxRequestLineBytes) bytes")
        }
        if count > limits.maxHeadBytes {
            throw HTTP1ParseError(status: 431, code: "headers_too_large", message: "request headers exceed \(limits.maxHeadBytes) bytes")
        }
    }

    private func parseHead(_ raw: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> HTTP1RequestHead {
        guard raw.count <= limits.maxHeadBytes else {
            throw HTTP1ParseError(status: 431, code: "headers_too_large", message: "request headers exceed \(limits.maxHeadBytes) bytes")
        }
        var lines: [UnsafeRawBufferPointer] = []
        var start = 0
        for i in 0..<raw.count where raw[i] == 10 {
            var end = i
            if end > start && raw[end - 1] == 13 { end -= 1 }
            lines.append(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
            start = i + 1
        }
        guard let requestLine = lines.first else { throw bad("missing request line") }
        let (method, target, minor) = try parseRequestLine(requestLine)
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            let (name, value) = try parseHeaderLine(line)
            headers.add(name, value)
        }
        if minor == 1 && headers.values("host").count != 1 {
            throw bad("HTTP/1.1 requires exactly one Host header")
        }
        let connection = headers.values("connection").joined(separator: ",").lowercased()
        let tokens = connection.split(separator: ",").map { $0.trimmingSpaces }
        let keepAlive = minor == 1 ? !tokens.contains("close") : tokens.contains("keep-alive")
        let expects = headers["expect"]?.lowercased() == "100-continue"
        return HTTP1RequestHead(method: method, target: target, minorVersion: minor, headers: headers,
                                keepAlive: keepAlive, expectsContinue: expects)
    }

    private func parseRequestLine(_ line: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> (String, String, Int) {
        guard line.count <= limits.maxRequestLineBytes else {
            throw HTTP1ParseError(status: 414, code: "uri_too_long", message: "request line exceeds \(limits.maxRequestLineBytes) bytes")
        }
        let parts = line.split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw bad("malformed request line") }
        guard !parts[0].isEmpty, parts[0].allSatisfy(isTokenByte) else { throw bad("malformed method") }
        guard !parts[1].isEmpty, parts[1].allSatisfy({ $0 > 32 && $0 < 127 }) else { throw bad("malformed request target") }
        let version = String(decoding: parts[2], as: UTF8.self)
        let minor: Int
        switch version {
        case "HTTP/1.1": minor = 1
        case "HTTP/1.0": minor = 0
        case _ where version.hasPrefix("HTTP/1.") && version.count == 8 && version.last!.isASCII && version.last!.isNumber:
            // A later HTTP/1 minor version is answered as the highest we speak (RFC 9110
            // §2.5): only another major version is 505.
            minor = 1
        case _ where version.hasPrefix("HTTP/") && version.count == 8:
            throw HTTP1ParseError(status: 505, code: "http_version_not_supported", message: "\(version) is not supported")
        default: throw bad("malformed HTTP version")
        }
        let target = String(decoding: parts[1], as: UTF8.self)
        guard target.hasPrefix("/") || target == "*" || target.hasPrefix("http://") || target.hasPrefix("https://") else {
            throw bad("malformed request target")
        }
        return (String(decoding: parts[0], as: UTF8.self), target, minor)
    }

    private func parseHeaderLine(_ line: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> (String, String) {
        guard let first = line.first else { throw bad("empty header line") }
        guard first != 32 && first != 9 else { throw bad("obsolete line folding is not allowed") }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw bad("header line without a colon") }
        let name = line[line.startIndex..<colon]
        guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
            throw bad("malformed header name (whitespace before the colon is not allowed)")
        }
        var value = line[(colon + 1)...]
        while let b = value.first, b == 32 || b == 9 { value = value.dropFirst() }
        while let b = value.last, b == 32 || b == 9 { value = value.dropLast() }
        guard value.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
            throw bad("control character in header value")
        }
        return (String(decoding: name, as: UTF8.self).lowercased(), String(decoding: value, as: UTF8.self))
    }

    // MARK: Body framing

    private enum BodyLength { case none, fixed(Int), chunked }

    private func bodyFraming(_ head: HTTP1RequestHead) throws(HTTP1ParseError) -> BodyLength {
        let lengths = head.headers.values("content-length")
        let encodings = head.headers.values("transfer-encoding")
        if !encodings.isEmpty {
            guard lengths.isEmpty else { throw bad("both Content-Length and Transfer-Encoding: refused (request smuggling)") }
            guard head.minorVersion == 1 else { throw bad("Transfer-Encoding in an HTTP/1.0 request") }
            let codings = encodings.joined(separator: ",").split(separator: ",").map { $0.trimmingSpaces.lowercased() }
            guard codings.last == "chunked", codings.filter({ $0 == "chunked" }).count == 1 else {
                throw bad("Transfer-Encoding must end with a single chunked")
            }
            guard codings.count == 1 else {
                throw HTTP1ParseError(status: 501, code: "not_implemented", message: "only the chunked transfer coding is supported")
            }
            return .chunked
        }
        guard !lengths.isEmpty else { return .none }
        // Several Content-Length values are allowed only if they are all the same number.
        let values = lengths.joined(separator: ",").split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingSpaces }
        guard let first = values.first, values.allSatisfy({ $0 == first }) else {
            throw bad("conflicting Content-Length values: refused (request smuggling)")
        }
        guard !first.isEmpty, first.count <= 18, first.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let count = Int(first) else {
            throw bad("malformed Content-Length")
        }
        guard count <= policy.limit else {
            throw HTTP1ParseError(status: 413, code: "body_too_large", message: "request body exceeds \(policy.limit) bytes")
        }
        return count == 0 ? .none : .fixed(count)
    }

    private mutating func takeLine(limit: Int) throws(HTTP1ParseError) -> [UInt8]? {
        let found: [UInt8]?? = input.withReadableBytes { raw in
            guard let lf = raw.firstIndex(of: 10) else { return raw.count > limit ? .some(nil) : nil }
            guard lf > 0, raw[lf - 1] == 13 else { return .some(nil) }
            return .some(Array(raw[0..<(lf - 1)]))
        }
        switch found {
        case .none: return nil
        case .some(.none): throw bad("malformed chunked encoding")
        case .some(.some(let line)):
            input.consume(line.count + 2)
            return line
        }
    }

    private func parseChunkSize(_ line: [UInt8]) throws(HTTP1ParseError) -> Int {
        // chunk-size [ ; extensions ]: extensions are ignored.
        let digits = line.prefix { $0 != UInt8(ascii: ";") }
        guard !digits.isEmpty, digits.count <= 15 else { throw bad("malformed chunk size") }
        var size = 0
        for byte in digits {
            guard let value = hexValue(byte) else { throw bad("malformed chunk size") }
            size = size << 4 | Int(value)
        }
        return size
    }

    private func bad(_ message: String) -> HTTP1ParseError {
        HTTP1ParseError(status: 400, code: "bad_request", message: message)
    }
}

/// RFC 9110 token characters.
@inline(__always)
func isTokenByte(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    default:
        return "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
