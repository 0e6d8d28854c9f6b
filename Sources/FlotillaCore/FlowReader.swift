// Reading a JSON tree field by field while collecting every problem with its path
// (`steps[1].run.timeout`), so one validation run reports all of them at once.
// Used for flow definitions (YAML files are converted to JSON first) and parameters.

import FlotillaJSON

/// One thing wrong with a definition, and where.
public struct FlowProblem: Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var message: String

    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}

/// Problems found so far; readers append, the caller decides when to fail.
struct ProblemList {
    var items: [FlowProblem] = []
    mutating func add(_ path: String, _ message: String) { items.append(FlowProblem(path, message)) }
}

/// The members of one JSON object, read by key; `finish` flags keys nobody asked for.
struct ObjectReader {
    let path: String
    let members: [String: JSON]
    private var used: Set<String> = []

    init?(_ value: JSON?, path: String, problems: inout ProblemList) {
        guard let value else { return nil }
        guard let members = value.objectValue else {
            problems.add(path, "must be an object, got \(value.kindName)")
            return nil
        }
        self.path = path
        self.members = members
    }

    func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    mutating func value(_ key: String) -> JSON? {
        used.insert(key)
        guard let value = members[key], value != .null else { return nil }
        return value
    }

    mutating func string(_ key: String, required: Bool = false, problems: inout ProblemList) -> String? {
        guard let value = value(key) else {
            if required { problems.add(child(key), "is required") }
            return nil
        }
        guard let text = value.stringValue else {
            problems.add(child(key), "must be a string, got \(value.kindName)")
            return nil
        }
        return text
    }

    /// An integer, or a string that is only a parameter reference (checked after rendering).
    mutating func integer(_ key: String, default fallback: Int, range: ClosedRange<Int>, problems: inout ProblemList) -> JSON {
        guard let value = value(key) else { return .int(fallback) }
        if let text = value.stringValue, text.hasPrefix("${") { return value }
        guard let number = value.intValue, range.contains(number) else {
            problems.add(child(key), "must be an integer from \(range.lowerBound) to \(range.upperBound)")
            return .int(fallback)
        }
        return .int(number)
    }

    mutating func bool(_ key: String, default fallback: Bool, problems: inout ProblemList) -> Bool {
        guard let value = value(key) else { return fallback }
        guard case .bool(let flag) = value else {
            problems.add(child(key), "must be true or false, got \(value.kindName)")
            return fallback
        }
        return flag
    }

    mutating func strings(_ key: String, problems: inout ProblemList) -> [String] {
        guard let value = value(key) else { return [] }
        guard let items = value.arrayValue else {
            problems.add(child(key), "must be an array of strings, got \(value.kindName)")
            return []
        }
        var out: [String] = []
        for (index, item) in items.enumerated() {
            if let text = item.stringValue { out.append(text) } else { problems.add("\(child(key))[\(index)]", "must be a string") }
        }
        return out
    }

    mutating func stringMap(_ key: String, problems: inout ProblemList) -> [String: String] {
        guard let value = value(key) else { return [:] }
        guard let object = value.objectValue else {
            problems.add(child(key), "must be an object of strings, got \(value.kindName)")
            return [:]
        }
        var out: [String: String] = [:]
        for (name, item) in object {
            if let text = item.stringValue { out[name] = text } else { problems.add("\(child(key)).\(name)", "must be a string") }
        }
        return out
    }

    func finish(problems: inout ProblemList) {
        for key in members.keys.sorted() where !used.contains(key) {
            problems.add(child(key), "unknown field (known: \(used.sorted().joined(separator: ", ")))")
        }
    }
}

/// `[a-z0-9]` then up to 62 of `[a-z0-9._-]`: flow, app and parameter names.
func isFlowName(_ text: String) -> Bool {
    let bytes = Array(text.utf8)
    guard let first = bytes.first, bytes.count <= 63, isLowerAlnum(first) else { return false }
    return bytes.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
}

private func isLowerAlnum(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
}
