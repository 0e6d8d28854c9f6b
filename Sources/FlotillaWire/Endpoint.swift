// FlotillaWire: the one wire contract between the server, the agent and the CLI — paths,
// report events and answers, the manifest, execution states and error codes. The server's
// router registers these endpoints and the clients build their requests from the same
// values, so a path renamed in one place is renamed for all three (and the OpenAPI test
// checks every one of them against openapi/*.yaml).
//
// Pure like FlotillaCore: it depends only on FlotillaJSON (scripts/test checks).

/// One route of the API: its method and its path pattern with `{parameters}`.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public let method: String
    public let pattern: String

    public init(_ method: String, _ pattern: String) {
        self.method = method
        self.pattern = pattern
    }

    public var description: String { "\(method) \(pattern)" }

    /// The names of the pattern's parameters, in order.
    public var parameterNames: [String] {
        pattern.split(separator: "/").compactMap { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? String(segment.dropFirst().dropLast()) : nil
        }
    }

    /// The path for these parameter values (in the pattern's order, each percent-encoded as
    /// one segment) and the query pairs whose value is set. A wrong number of values is a
    /// programming error, not input: it traps.
    public func path(_ values: String..., query: [(String, String?)] = []) -> String {
        path(values, query: query)
    }

    public func path(_ values: [String], query: [(String, String?)] = []) -> String {
        var remaining = values[...]
        var out = ""
        for segment in pattern.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            out += "/"
            if segment.hasPrefix("{") && segment.hasSuffix("}") {
                guard let value = remaining.popFirst() else { preconditionFailure("\(self) needs \(parameterNames.count) values") }
                out += percentEncoded(value)
            } else {
                out += segment
            }
        }
        precondition(remaining.isEmpty, "\(self) takes \(parameterNames.count) values, not \(values.count)")
        let pairs = query.compactMap { key, value in value.map { percentEncoded(key) + "=" + percentEncoded($0) } }
        return pairs.isEmpty ? out : out + "?" + pairs.joined(separator: "&")
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a name with a
/// space, '/', '?' or '&' stays one segment or one value.
public func percentEncoded(_ text: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count)
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            out.append(byte)
        default:
            out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0f)]]
        }
    }
    return String(decoding: out, as: UTF8.self)
}
