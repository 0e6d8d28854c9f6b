// Reading what a client sent: JSON bodies, query parameters, cursors, and the errors
// that say exactly what was wrong.
//
//   malformed JSON          → 400 malformed_json, with line and column
//   a field we do not know  → 400 unknown_field (a typo must not be silently ignored)
//   wrong type or value     → 422 invalid, details: [{"field": "labels.site", "message": "…"}]
//
// Readers collect every problem before failing, so one round trip shows them all.

import FlotillaStore
import FlotillaTransport
import FlotillaWire

struct Problem: Sendable {
    var field: String
    var message: String
}

/// The API's errors speak the contract's codes (FlotillaWire's ErrorCode): a code the
/// contract does not list cannot be sent from here.
extension HTTPError {
    init(_ status: Int, code: ErrorCode, message: String, headers: HTTPHeaders = [:], details: String? = nil) {
        self.init(status, code: code.rawValue, message: message, headers: headers, details: details)
    }
}

extension HTTPResponse {
    static func error(_ status: Int, code: ErrorCode, message: String, headers: HTTPHeaders = [:], details: String? = nil) -> HTTPResponse {
        error(status, code: code.rawValue, message: message, headers: headers, details: details)
    }
}

enum APIError {
    static func invalid(_ problems: [Problem]) -> HTTPError {
        let details = JSON.array(problems.map { .object(["field": .string($0.field), "message": .string($0.message)]) })
        let summary = problems.count == 1 ? "\(problems[0].field): \(problems[0].message)" : "\(problems.count) fields are invalid"
        return HTTPError(422, code: .invalid, message: summary, details: details.serialized)
    }

    static func invalid(_ field: String, _ message: String) -> HTTPError { invalid([Problem(field: field, message: message)]) }

    static func notFound(_ what: String) -> HTTPError { HTTPError(404, code: .notFound, message: what) }

    static func conflict(_ message: String) -> HTTPError { HTTPError(409, code: .conflict, message: message) }
}

/// The body as any JSON value (400 with line and column when malformed).
func parseBody(_ request: HTTPRequest) throws -> JSON {
    guard !request.body.isEmpty else { throw HTTPError(400, code: .missingBody, message: "this request needs a JSON body") }
    do {
        return try JSON.parse(request.body)
    } catch let error as JSON.ParseError where error.refusesNUL {
        throw HTTPError(400, code: .nulCharacter, message: "\(error.description): no field may contain U+0000",
                        details: JSON.object(["line": .int(error.line), "column": .int(error.column)]).serialized)
    } catch let error as JSON.ParseError {
        throw HTTPError(400, code: .malformedJson, message: "malformed JSON: \(error.description)",
                        details: JSON.object(["line": .int(error.line), "column": .int(error.column)]).serialized)
    }
}

/// The fields of a JSON object body, read one by one; `finish()` reports what was wrong.
struct BodyReader {
    private let members: [String: JSON]
    private var used: Set<String> = []
    private(set) var problems: [Problem] = []

    init(_ request: HTTPRequest) throws {
        let value = try parseBody(request)
        guard let members = value.objectValue else {
            throw APIError.invalid("(body)", "must be a JSON object, got \(value.kindName)")
        }
        self.members = members
    }

    mutating func problem(_ field: String, _ message: String) {
        problems.append(Problem(field: field, message: message))
    }

    /// The raw value; records the key as known.
    mutating func value(_ key: String, required: Bool) -> JSON? {
        used.insert(key)
        guard let value = members[key], value != .null else {
            if required { problem(key, "is required") }
            return nil
        }
        return value
    }

    mutating func string(_ key: String, required: Bool = false) -> String? {
        guard let value = value(key, required: required) else { return nil }
        guard let text = value.stringValue else { problem(key, "must be a string, got \(value.kindName)"); return nil }
        return text
    }

    mutating func bool(_ key: String) -> Bool? {
        guard let value = value(key, required: false) else { return nil }
        guard case .bool(let flag) = value else { problem(key, "must be true or false, got \(value.kindName)"); return nil }
        return flag
    }

    /// A token scope: 1 to 50 glob patterns of 1 to 100 characters.
    mutating func patterns(_ key: String) -> [String]? {
        guard let items = stringArray(key, maxCount: 50) else { return nil }
        if items.isEmpty || items.contains(where: { !(1...100).contains($0.count) }) {
            problem(key, "must hold 1 to 50 patterns of 1 to 100 characters (`*` and `?` are wildcards)")
            return nil
        }
        return items
    }

    mutating func object(_ key: String, required: Bool = false) -> [String: JSON]? {
        guard let value = value(key, required: required) else { return nil }
        guard let object = value.objectValue else { problem(key, "must be an object, got \(value.kindName)"); return nil }
        return object
    }

    mutating func int(_ key: String, required: Bool = false, range: ClosedRange<Int>) -> Int? {
        guard let value = value(key, required: required) else { return nil }
        guard let number = value.intValue, range.contains(number) else {
            problem(key, "must be an integer from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return number
    }

    mutating func stringArray(_ key: String, required: Bool = false, maxCount: Int = 1000) -> [String]? {
        guard let value = value(key, required: required) else { return nil }
        guard let items = value.arrayValue else { problem(key, "must be an array of strings, got \(value.kindName)"); return nil }
        guard items.count <= maxCount else { problem(key, "has \(items.count) entries; at most \(maxCount) per request"); return nil }
        var strings: [String] = []
        for (index, item) in items.enumerated() {
            guard let text = item.stringValue else { problem("\(key)[\(index)]", "must be a string, got \(item.kindName)"); continue }
            strings.append(text)
        }
        return strings.count == items.count ? strings : nil
    }

    /// Throws 400 for unknown fields, then 422 for every problem recorded.
    func finish() throws {
        let unknown = members.keys.filter { !used.contains($0) }.sorted()
        if !unknown.isEmpty {
            throw HTTPError(400, code: .unknownField,
                            message: "unknown field\(unknown.count > 1 ? "s" : "") \(unknown.map { "'\($0)'" }.joined(separator: ", ")); known: \(used.sorted().joined(separator: ", "))",
                            details: JSON.array(unknown.map { .string($0) }).serialized)
        }
        if !problems.isEmpty { throw APIError.invalid(problems) }
    }
}

/// Query parameters with the same rules: unknown names are refused (400), bad values are 422.
struct QueryReader {
    private let parameters: [String: String]
    private(set) var problems: [Problem] = []

    init(_ request: HTTPRequest, allowed: Set<String>) throws {
        parameters = request.queryParameters
        let unknown = parameters.keys.filter { !allowed.contains($0) }.sorted()
        if !unknown.isEmpty {
            throw HTTPError(400, code: .unknownParameter,
                            message: "unknown query parameter\(unknown.count > 1 ? "s" : "") \(unknown.joined(separator: ", ")); known: \(allowed.sorted().joined(separator: ", "))")
        }
    }

    subscript(name: String) -> String? { parameters[name].flatMap { $0.isEmpty ? nil : $0 } }

    mutating func problem(_ field: String, _ message: String) { problems.append(Problem(field: field, message: message)) }

    mutating func timestamp(_ name: String) -> Timestamp? {
        guard let text = self[name] else { return nil }
        guard let value = Timestamp(parsing: text) else {
            problem(name, "must be an RFC 3339 time from year 0001 to 9999, such as 2026-11-21T16:04:05Z")
            return nil
        }
        return value
    }

    /// `limit`: 1…500, default 50.
    mutating func limit() -> Int {
        guard let text = self["limit"] else { return 50 }
        guard let value = Int(text), (1...500).contains(value) else {
            problem("limit", "must be an integer from 1 to 500")
            return 50
        }
        return value
    }

    /// `after`: an id of an append-only log (events, audit); only later entries are wanted.
    mutating func afterID() -> Int? {
        guard let text = self["after"] else { return nil }
        guard let value = Int(text), value >= 0 else { problem("after", "must be an entry id (a non-negative integer)"); return nil }
        return value
    }

    /// The opaque keyset cursor a previous page returned.
    mutating func cursor() -> String? {
        guard let text = self["cursor"] else { return nil }
        guard let key = Cursor.decode(text) else { problem("cursor", "is not a cursor this server returned"); return nil }
        return key
    }

    /// The cursor of a newest-first list: the last row's "created_at|key", split (nils on the
    /// first page). `isKey` checks the key's form, so a forged cursor is a 422, not a bad query.
    mutating func newestFirstCursor(isKey: (String) -> Bool) -> (time: String?, key: String?) {
        guard let after = cursor() else { return (nil, nil) }
        let parts = after.split(separator: "|", maxSplits: 1).map(String.init)
        guard parts.count == 2, Timestamp(parsing: parts[0]) != nil, isKey(parts[1]) else {
            problem("cursor", "is not a cursor this server returned")
            return (nil, nil)
        }
        return (parts[0], parts[1])
    }

    func finish() throws {
        if !problems.isEmpty { throw APIError.invalid(problems) }
    }
}

/// Keyset pagination: a page ends at a sort key (a name, unique), and the next page starts
/// strictly after it. Rows inserted meanwhile never shift a page or repeat a row. The
/// cursor is opaque to clients (versioned base64url) so the key can change later.
enum Cursor {
    static func encode(_ key: String) -> String { Secrets.base64URL(Array(("v1:" + key).utf8)) }

    static func decode(_ text: String) -> String? {
        guard let bytes = Secrets.decodeBase64URL(text), let value = String(validating: bytes, as: UTF8.self),
              value.hasPrefix("v1:") else { return nil }
        return String(value.dropFirst(3))
    }
}

/// A page of a newest-first list, whose cursor is the last row's "created_at|<key column>".
func newestFirstPage(_ rows: PGRows, limit: Int, key: String, _ json: (PGRow) throws -> JSON) throws -> HTTPResponse {
    try page(try rows.map(json), limit: limit) { index in
        "\(try rows[index].decode(Timestamp.self, column: "created_at").rfc3339)|\(try rows[index].decode(String.self, column: key))"
    }
}

/// A page of items plus where the next one starts (`key(i)`: the sort key of item i).
func page(_ items: [JSON], limit: Int, key: (Int) throws -> String) rethrows -> HTTPResponse {
    let next: JSON = items.count > limit ? .string(Cursor.encode(try key(limit - 1))) : .null
    return .json(200, JSON.object(["items": .array(Array(items.prefix(limit))), "next_cursor": next]).serialized)
}
