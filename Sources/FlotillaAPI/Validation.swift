// What a valid name, label or attribute set is. The rules are strict on purpose: names and
// labels end up in shell scripts on devices, in CLI tables and in label selectors.
//
//   name        1–128 of [A-Za-z0-9._-], starting with a letter or digit
//   label key   1–63 of [A-Za-z0-9._/-], starting with a letter or digit
//   label value a string of at most 255 characters (may be empty)
//   attributes  any JSON object, at most 64 KiB serialized

enum Rules {
    static let nameHelp = "must be 1 to 128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
    /// Flow versions are PostgreSQL `int`s: past this a lookup would fail in the database.
    static let flowVersions = 1...Int(Int32.max)
    static let keyHelp = "label keys are 1 to 63 characters of A-Z a-z 0-9 . _ / -, starting with a letter or digit"

    static func isName(_ text: String) -> Bool { check(text, max: 128, extra: [UInt8(ascii: ".") , UInt8(ascii: "_"), UInt8(ascii: "-")]) }
    static func isLabelKey(_ text: String) -> Bool {
        check(text, max: 63, extra: [UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "/")])
    }

    private static func check(_ text: String, max: Int, extra: [UInt8]) -> Bool {
        let bytes = text.utf8
        guard (1...max).contains(bytes.count), let first = bytes.first, isAlnum(first) else { return false }
        return bytes.allSatisfy { isAlnum($0) || extra.contains($0) }
    }

    private static func isAlnum(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte)
    }

    static func checkLabel(key: String, value: String, field: String, problems: inout [Problem]) {
        if !isLabelKey(key) { problems.append(Problem(field: field, message: keyHelp)) }
        if value.count > 255 { problems.append(Problem(field: field, message: "label values are at most 255 characters")) }
    }
}

extension BodyReader {
    mutating func validName(_ key: String, required: Bool = false) -> String? {
        guard let name = string(key, required: required) else { return nil }
        guard Rules.isName(name) else { problem(key, Rules.nameHelp); return nil }
        return name
    }

    /// A labels map: every value a string.
    mutating func labels(_ key: String) -> [String: String]? {
        guard let object = object(key) else { return nil }
        var labels: [String: String] = [:]
        var problems: [Problem] = []
        for (name, value) in object {
            guard let text = value.stringValue else {
                problems.append(Problem(field: "\(key).\(name)", message: "label values must be strings, got \(value.kindName)"))
                continue
            }
            Rules.checkLabel(key: name, value: text, field: "\(key).\(name)", problems: &problems)
            labels[name] = text
        }
        problems.forEach { problem($0.field, $0.message) }
        return problems.isEmpty ? labels : nil
    }

    /// A JSON merge patch of labels: a string sets a label, null removes it.
    mutating func labelPatch(_ key: String) -> (set: [String: String], remove: [String])? {
        guard let object = object(key) else { return nil }
        var set: [String: String] = [:], remove: [String] = []
        var problems: [Problem] = []
        for (name, value) in object {
            switch value {
            case .null:
                remove.append(name)
            case .string(let text):
                Rules.checkLabel(key: name, value: text, field: "\(key).\(name)", problems: &problems)
                set[name] = text
            default:
                problems.append(Problem(field: "\(key).\(name)", message: "must be a string (set) or null (remove), got \(value.kindName)"))
            }
        }
        problems.forEach { problem($0.field, $0.message) }
        return problems.isEmpty ? (set, remove.sorted()) : nil
    }

    /// Free-form attributes (any JSON object), returned serialized for a jsonb column.
    mutating func attributes(_ key: String) -> String? {
        guard let object = object(key) else { return nil }
        let text = JSON.object(object).serialized
        guard text.utf8.count <= 64 * 1024 else { problem(key, "must be at most 64 KiB of JSON"); return nil }
        return text
    }
}

extension QueryReader {
    /// `k=v[,k=v…]`: devices whose labels contain every pair.
    mutating func labelSelector(_ text: String) -> [String: String]? {
        var found: [Problem] = []
        let pairs = Rules.labelSelector(text, field: "selector", problems: &found)
        for problem in found { self.problem(problem.field, problem.message) }
        return pairs
    }
}

extension Rules {
    /// Parses a label selector `k=v[,k=v…]`; nil (with a problem recorded) when malformed.
    static func labelSelector(_ text: String, field: String, problems: inout [Problem]) -> [String: String]? {
        var pairs: [String: String] = [:]
        for term in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = term.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                problems.append(Problem(field: field, message: "'\(term)' is not key=value (a selector is k=v[,k=v…])"))
                return nil
            }
            let key = String(parts[0]), value = String(parts[1])
            var found: [Problem] = []
            checkLabel(key: key, value: value, field: field, problems: &found)
            guard found.isEmpty, pairs[key] == nil else {
                problems.append(Problem(field: field, message: found.first?.message ?? "label '\(key)' appears twice"))
                return nil
            }
            pairs[key] = value
        }
        return pairs
    }
}
