// What a scoped API token may deploy where (SECURITY.md): a pipeline's token that may
// deploy `hardhat-model` to groups `site-*` and nothing else.
//
// Patterns are globs: `*` is any run of characters, `?` one character, anything else
// itself. `nil` means unrestricted. A token restricted to groups may target groups only:
// device names and label selectors could reach any device, so they are refused.

public struct TokenScope: Sendable, Equatable {
    public let flows: [String]?
    public let groups: [String]?

    public static let unrestricted = TokenScope(flows: nil, groups: nil)

    public init(flows: [String]?, groups: [String]?) {
        self.flows = flows
        self.groups = groups
    }

    public var isRestricted: Bool { flows != nil || groups != nil }

    public func allowsFlow(_ name: String) -> Bool {
        flows.map { patterns in patterns.contains { globMatches($0, name) } } ?? true
    }

    /// Why deploying `flow` to this target is out of scope, or nil when it is allowed.
    public func refusal(flow: String, groups targetGroups: [String], devices: [String], selector: Bool) -> String? {
        if !allowsFlow(flow) {
            return "this token may deploy only flows matching \(flows!.joined(separator: ", ")); not '\(flow)'"
        }
        guard let groups else { return nil }
        if !devices.isEmpty || selector {
            return "this token may target only groups (matching \(groups.joined(separator: ", "))), not devices or label selectors"
        }
        if let outside = targetGroups.first(where: { group in !groups.contains { globMatches($0, group) } }) {
            return "this token may deploy only to groups matching \(groups.joined(separator: ", ")); not '\(outside)'"
        }
        return nil
    }
}

/// Whether `text` matches the glob `pattern` (`*` any run, `?` any one character).
public func globMatches(_ pattern: String, _ text: String) -> Bool {
    let p = Array(pattern.unicodeScalars), t = Array(text.unicodeScalars)
    var i = 0, j = 0
    var star: Int?, resume = 0
    while j < t.count {
        if i < p.count && (p[i] == "?" || (p[i] != "*" && p[i] == t[j])) {
            i += 1
            j += 1
        } else if i < p.count && p[i] == "*" {
            star = i
            resume = j
            i += 1
        } else if let star {
            // Let the last `*` swallow one more character and try again from there.
            i = star + 1
            resume += 1
            j = resume
        } else {
            return false
        }
    }
    while i < p.count && p[i] == "*" { i += 1 }
    return i == p.count
}
