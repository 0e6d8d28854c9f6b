// Swift values ⇄ PostgreSQL's text format.
//
// Text format keeps the layer small and the SQL readable; the session runs with
// TimeZone=UTC and DateStyle=ISO (set at connect), so timestamps come back in one
// known shape: "2026-11-21 16:04:05.123456+00".

/// A value that can be bound as a query parameter.
public protocol PGEncodable: Sendable {
    var pgText: String { get }
}

/// A value that can be read from a result column (text format).
public protocol PGDecodable {
    /// `text` is nil for SQL NULL.
    static func decode(pgText text: String?, column: String) throws -> Self
}

extension PGDecodable {
    static func require(_ text: String?, _ column: String) throws -> String {
        guard let text else { throw PGError.decoding(column: column, message: "unexpected NULL") }
        return text
    }
}

extension String: PGEncodable, PGDecodable {
    public var pgText: String { self }
    public static func decode(pgText text: String?, column: String) throws -> String { try require(text, column) }
}

extension Int: PGEncodable, PGDecodable {
    public var pgText: String { String(self) }
    public static func decode(pgText text: String?, column: String) throws -> Int {
        guard let value = Int(try require(text, column)) else {
            throw PGError.decoding(column: column, message: "not an integer: \(text!)")
        }
        return value
    }
}

extension Bool: PGEncodable, PGDecodable {
    public var pgText: String { self ? "t" : "f" }
    public static func decode(pgText text: String?, column: String) throws -> Bool {
        switch try require(text, column) {
        case "t": return true
        case "f": return false
        case let other: throw PGError.decoding(column: column, message: "not a boolean: \(other)")
        }
    }
}

extension Double: PGEncodable, PGDecodable {
    public var pgText: String { String(self) }
    public static func decode(pgText text: String?, column: String) throws -> Double {
        guard let value = Double(try require(text, column)) else {
            throw PGError.decoding(column: column, message: "not a number: \(text!)")
        }
        return value
    }
}

extension Optional: PGDecodable where Wrapped: PGDecodable {
    public static func decode(pgText text: String?, column: String) throws -> Wrapped? {
        guard let text else { return nil }
        return try Wrapped.decode(pgText: text, column: column)
    }
}

/// JSON text passed through untouched (a `jsonb` column or parameter).
public struct JSONText: PGEncodable, PGDecodable, Equatable, CustomStringConvertible {
    public var text: String
    public init(_ text: String) { self.text = text }
    public var pgText: String { text }
    public var description: String { text }
    public static func decode(pgText text: String?, column: String) throws -> JSONText {
        JSONText(try require(text, column))
    }
}

/// `bytea`, exchanged in PostgreSQL's hex format (`\x0a1b…`).
public struct Bytea: PGEncodable, PGDecodable, Equatable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var pgText: String { "\\x" + hexString(bytes) }
    public static func decode(pgText text: String?, column: String) throws -> Bytea {
        let text = try require(text, column)
        guard text.hasPrefix("\\x"), let bytes = hexBytes(text.dropFirst(2)) else {
            throw PGError.decoding(column: column, message: "not hex bytea")
        }
        return Bytea(bytes)
    }
}

/// A `text[]` parameter, for `= ANY(\(array)::uuid[])` and friends.
public struct PGTextArray: PGEncodable {
    public var elements: [String]
    public init(_ elements: [String]) { self.elements = elements }
    public var pgText: String {
        "{" + elements.map { element in
            var quoted = "\""
            for character in element {
                if character == "\"" || character == "\\" { quoted.append("\\") }
                quoted.append(character)
            }
            return quoted + "\""
        }.joined(separator: ",") + "}"
    }
}

public func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

public func hexBytes<S: StringProtocol>(_ text: S) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(utf8.count / 2)
    var index = 0
    while index < utf8.count {
        guard let high = hexDigitValue(utf8[index]), let low = hexDigitValue(utf8[index + 1]) else { return nil }
        out.append(high << 4 | low)
        index += 2
    }
    return out
}

/// The value of one hex digit (either case), nil for anything else.
public func hexDigitValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}
