// Answering a GET or HEAD for a file the way download clients expect (RFC 9110 §13, §14):
// an ETag, `If-None-Match` → 304, one byte range → 206 with Content-Range (so a device on a
// flaky link resumes instead of starting over), `If-Range` so a resumed download never
// splices two different files, and 416 for a range the file does not have.
// Several ranges in one request are answered with the whole file, which the RFC allows.

public enum ByteRange: Equatable, Sendable {
    case from(Int, through: Int?)   // bytes=a-b, bytes=a-
    case suffix(Int)                // bytes=-n: the last n bytes

    /// The single range a `Range` value asks for; nil when it is absent, not bytes, malformed or several.
    public static func parse(_ value: String) -> ByteRange? {
        let text = value.filter { $0 != " " && $0 != "\t" }
        guard text.hasPrefix("bytes="), !text.contains(",") else { return nil }
        let spec = text.dropFirst(6)
        guard let dash = spec.firstIndex(of: "-") else { return nil }
        let first = spec[..<dash], last = spec[spec.index(after: dash)...]
        func number(_ digits: Substring) -> Int? {
            guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
            return Int(digits)
        }
        if first.isEmpty { return number(last).map(ByteRange.suffix) }
        guard let start = number(first) else { return nil }
        if last.isEmpty { return .from(start, through: nil) }
        guard let end = number(last), end >= start else { return nil }
        return .from(start, through: end)
    }

    /// Offset and length within a file of `size` bytes; nil when unsatisfiable (416).
    public func resolve(size: Int) -> (offset: Int, length: Int)? {
        switch self {
        case .from(let start, let end):
            guard start < size else { return nil }
            return (start, min(end ?? (size - 1), size - 1) - start + 1)
        case .suffix(let count):
            guard count > 0, size > 0 else { return nil }
            let length = min(count, size)
            return (size - length, length)
        }
    }
}

extension HTTPResponse {
    /// The response to a GET or HEAD of `file`, whose content `etag` (a quoted entity tag) names.
    public static func file(_ file: HTTPFileBody, for request: HTTPRequest, etag: String,
                            headers: HTTPHeaders = [:]) -> HTTPResponse {
        var headers = headers
        headers.set("etag", etag)
        headers.set("accept-ranges", "bytes")
        if let match = request.headers["if-none-match"],
           match.split(separator: ",").contains(where: { tag in
               let tag = tag.trimmingSpaces
               return tag == "*" || tag == etag || tag == "W/" + etag
           }) {
            return HTTPResponse(status: 304, headers: headers)
        }
        // If-Range: resume only if the file is still the one the client has half of.
        let rangeApplies = request.headers["if-range"].map { $0.trimmingCharacters() == etag } ?? true
        guard rangeApplies, let value = request.headers["range"], let range = ByteRange.parse(value) else {
            return HTTPResponse(status: 200, headers: headers, file: file)
        }
        guard let (offset, length) = range.resolve(size: file.length) else {
            headers.set("content-range", "bytes */\(file.length)")
            return .error(416, code: "range_not_satisfiable",
                          message: "the file has \(file.length) bytes; the requested range is outside it", headers: headers)
        }
        headers.set("content-range", "bytes \(offset)-\(offset + length - 1)/\(file.length)")
        return HTTPResponse(status: 206, headers: headers,
                            file: file.region(offset: file.offset + offset, length: length))
    }
}

private extension String {
    func trimmingCharacters() -> String { Substring(self).trimmingSpaces }
}
