// Update flows: a versioned, immutable definition of what a device does to install an
// app version. Written as YAML in `flows/` (the server converts it to JSON) or sent as
// JSON. `FlowDefinition.parse` checks everything it can before any device sees it:
//
//   name, app            [a-z0-9][a-z0-9._-]*
//   app_version          the version this flow installs, usually "${version}"
//   parameters           name → {type: string|integer|boolean, required (true), default, description}
//   steps (≥ 1, in order) each {name?, download|run|reboot|verify: {…}}
//     download           url or artifact (a server-hosted artifact's sha256), sha256, size?, destination, timeout (3600)
//     run                script (inline) or path (on the device), env, timeout (600)
//     reboot             deadline (600): seconds for the device to come back
//     verify             script or path, timeout (300), soak (0): the device must stay healthy this long
//   rollback             snapshot (paths saved before installing), script, reboot (false), timeout (900);
//                        required once a step can change the device (anything but a download)
//
// `${name}` in any string is a parameter reference, `$${` a literal `${`. A reference to
// an undeclared parameter, an empty step list, or a step that can never be reached (one
// after a step with timeout 0) is rejected with the path of each problem.

import FlotillaJSON

public struct FlowInvalid: Error, Sendable, Equatable {
    public var problems: [FlowProblem]
}

public struct FlowParameter: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case string, integer, boolean }
    public var name: String
    public var kind: Kind
    public var required: Bool
    public var defaultValue: JSON?
}

public struct FlowDefinition: Sendable, Equatable {
    public var name: String
    public var app: String
    public var parameters: [FlowParameter]
    /// The definition with defaults filled in and steps flattened to `{"kind": …, …}`:
    /// what is stored, compared (same canonical text → same version) and rendered.
    public var canonical: JSON

    public static func parse(_ document: JSON) throws(FlowInvalid) -> FlowDefinition {
        var problems = ProblemList()
        guard var root = ObjectReader(document, path: "", problems: &problems) else { throw FlowInvalid(problems: problems.items) }
        let name = root.string("name", required: true, problems: &problems)
        let app = root.string("app", required: true, problems: &problems)
        for (field, value) in [("name", name), ("app", app)] {
            if let value, !isFlowName(value) { problems.add(field, "must match [a-z0-9][a-z0-9._-]* (at most 63)") }
        }
        let appVersion = root.string("app_version", required: true, problems: &problems)
        let description = root.string("description", problems: &problems)
        let parameters = parseParameters(root.value("parameters"), problems: &problems)

        var steps: [JSON] = []
        var changesDevice = false
        if let list = root.value("steps") {
            if let items = list.arrayValue {
                if items.isEmpty { problems.add("steps", "a flow needs at least one step") }
                for (index, item) in items.enumerated() {
                    // A placeholder keeps later indices (and so problem paths) right.
                    guard let step = parseStep(item, path: "steps[\(index)]", problems: &problems) else { steps.append(.null); continue }
                    if step.objectValue?["kind"] != .string("download") { changesDevice = true }
                    steps.append(step)
                }
                checkReachable(steps, problems: &problems)
            } else {
                problems.add("steps", "must be an array of steps")
            }
        } else {
            problems.add("steps", "a flow needs at least one step")
        }
        let rollback = parseRollback(root.value("rollback"), required: changesDevice, problems: &problems)
        root.finish(problems: &problems)

        var canonical: [String: JSON] = [
            "name": .string(name ?? ""), "app": .string(app ?? ""), "app_version": .string(appVersion ?? ""),
            "parameters": .object(Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.json) })),
            "steps": .array(steps), "rollback": rollback,
        ]
        if let description { canonical["description"] = .string(description) }
        let declared = Set(parameters.map(\.name))
        // On the document as written, so paths are the author's (`steps[0].download.sha256`).
        for key in ["app_version", "steps", "rollback"] {
            if let value = root.members[key] { checkReferences(value, path: key, declared: declared, problems: &problems) }
        }
        guard problems.items.isEmpty, let name, let app else { throw FlowInvalid(problems: problems.items) }
        return FlowDefinition(name: name, app: app, parameters: parameters, canonical: .object(canonical))
    }

    static func parseParameters(_ value: JSON?, problems: inout ProblemList) -> [FlowParameter] {
        guard let value else { return [] }
        guard let members = value.objectValue else {
            problems.add("parameters", "must be an object: name → {type, required, default}")
            return []
        }
        var out: [FlowParameter] = []
        for key in members.keys.sorted() {
            let path = "parameters.\(key)"
            if !isFlowName(key) || key.contains("-") || key.contains(".") {
                problems.add(path, "parameter names are [a-z0-9][a-z0-9_]*")
            }
            guard var reader = ObjectReader(members[key], path: path, problems: &problems) else { continue }
            let typeName = reader.string("type", problems: &problems) ?? "string"
            let kind = FlowParameter.Kind(rawValue: typeName)
            if kind == nil { problems.add("\(path).type", "must be string, integer or boolean") }
            let required = reader.bool("required", default: true, problems: &problems)
            let fallback = reader.value("default")
            _ = reader.string("description", problems: &problems)
            reader.finish(problems: &problems)
            if let fallback, let kind, !kind.accepts(fallback) {
                problems.add("\(path).default", "must be \(kind.noun), got \(fallback.kindName)")
            }
            out.append(FlowParameter(name: key, kind: kind ?? .string, required: required && fallback == nil, defaultValue: fallback))
        }
        return out
    }

    /// Steps after one that can never finish are unreachable.
    static func checkReachable(_ steps: [JSON], problems: inout ProblemList) {
        guard let blocker = steps.firstIndex(where: { $0.objectValue?["timeout"] == .int(0) }) else { return }
        problems.add("steps[\(blocker)].timeout", "0 means this step can never finish")
        for index in steps.indices where index > blocker {
            problems.add("steps[\(index)]", "unreachable: steps[\(blocker)] can never finish")
        }
    }

    /// Every `${name}` must name a declared parameter.
    static func checkReferences(_ value: JSON, path: String, declared: Set<String>, problems: inout ProblemList) {
        switch value {
        case .string(let text):
            switch Template.references(in: text) {
            case .success(let names):
                for name in names where !declared.contains(name) {
                    problems.add(path, "refers to undefined parameter '\(name)'")
                }
            case .failure(let error):
                problems.add(path, error.description)
            }
        case .array(let items):
            for (index, item) in items.enumerated() {
                checkReferences(item, path: "\(path)[\(index)]", declared: declared, problems: &problems)
            }
        case .object, .fields:
            let members = value.objectValue ?? [:]
            for key in members.keys.sorted() {
                checkReferences(members[key]!, path: "\(path).\(key)", declared: declared, problems: &problems)
            }
        case .null, .bool, .number, .raw:
            break
        }
    }
}

extension FlowParameter {
    var json: JSON {
        var fields: [String: JSON] = ["type": .string(kind.rawValue), "required": .bool(required)]
        if let defaultValue { fields["default"] = defaultValue }
        return .object(fields)
    }
}

extension FlowParameter.Kind {
    func accepts(_ value: JSON) -> Bool {
        switch (self, value) {
        case (.string, .string), (.boolean, .bool): true
        case (.integer, .number): value.intValue != nil
        case (.string, _), (.integer, _), (.boolean, _): false
        }
    }

    var noun: String {
        switch self {
        case .string: "a string"
        case .integer: "an integer"
        case .boolean: "true or false"
        }
    }
}
