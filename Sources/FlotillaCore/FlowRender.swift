// Rendering a flow for a deployment: the pipeline's parameters are checked against the
// flow's declarations, substituted into every step, and the result is checked again
// (a sha256 parameter must now be 64 hex digits, a timeout an integer). The rendered
// steps are what every targeted device receives, unchanged, in its manifest.

import FlotillaJSON

public struct RenderedFlow: Sendable, Equatable {
    public var appVersion: String
    /// Concrete steps, `{"kind": …, "name": …, "timeout": …, …}`.
    public var steps: [JSON]
    public var rollback: JSON
    /// The parameters as used: given ones plus defaults.
    public var params: [String: JSON]
    /// What the state machine needs: each step's kind and deadline, the rollback's.
    public var plans: [StepPlan]
    public var rollbackTimeout: Int
}

extension FlowDefinition {
    /// Renders a stored canonical definition with `params`; every problem is reported,
    /// under `params.<name>` or the rendered field's path.
    public static func render(canonical: JSON, params given: [String: JSON]) throws(FlowInvalid) -> RenderedFlow {
        var problems = ProblemList()
        let definition = canonical.objectValue ?? [:]
        let declared = definition["parameters"]?.objectValue ?? [:]
        var params: [String: JSON] = [:]
        for name in given.keys.sorted() where declared[name] == nil {
            problems.add("params.\(name)", "unknown parameter (the flow declares: \(declared.keys.sorted().joined(separator: ", ")))")
        }
        for name in declared.keys.sorted() {
            let spec = declared[name]?.objectValue ?? [:]
            let kind = FlowParameter.Kind(rawValue: spec["type"]?.stringValue ?? "") ?? .string
            if let value = given[name], value != .null {
                if kind.accepts(value) { params[name] = value } else {
                    problems.add("params.\(name)", "must be \(kind.noun), got \(value.kindName)")
                }
            } else if let fallback = spec["default"] {
                params[name] = fallback
            } else if spec["required"] == .bool(true) {
                problems.add("params.\(name)", "is required")
            }
        }
        guard problems.items.isEmpty else { throw FlowInvalid(problems: problems.items) }

        let appVersion = substitute(definition["app_version"] ?? .string(""), params).stringValue ?? ""
        if appVersion.isEmpty { problems.add("app_version", "renders empty; give the flow's version parameter") }
        let steps = (definition["steps"]?.arrayValue ?? []).map { substitute($0, params) }
        let rollback = substitute(definition["rollback"] ?? .object([:]), params)
        var plans: [StepPlan] = []
        for (index, step) in steps.enumerated() {
            plans.append(checkRendered(step, path: "steps[\(index)]", problems: &problems))
        }
        let rollbackTimeout = rollback.objectValue?["timeout"]?.intValue ?? 900
        guard problems.items.isEmpty else { throw FlowInvalid(problems: problems.items) }
        return RenderedFlow(appVersion: appVersion, steps: steps, rollback: rollback, params: params,
                            plans: plans, rollbackTimeout: rollbackTimeout)
    }

    /// A string that is exactly one reference takes the parameter's value and type;
    /// any other string has references replaced by their text.
    static func substitute(_ value: JSON, _ params: [String: JSON]) -> JSON {
        switch value {
        case .string(let text):
            if text.hasPrefix("${"), text.hasSuffix("}"), case .success(let names) = Template.references(in: text),
               names.count == 1, text == "${\(names[0])}", let whole = params[names[0]] {
                return whole
            }
            return .string(Template.substitute(text) { name in
                switch params[name] {
                case .string(let s): s
                case .number(let n): n
                case .bool(let b): b ? "true" : "false"
                case .none, .null, .array, .object, .fields, .raw: ""
                }
            })
        case .array(let items): return .array(items.map { substitute($0, params) })
        case .object, .fields: return .object((value.objectValue ?? [:]).mapValues { substitute($0, params) })
        case .null, .bool, .number, .raw: return value
        }
    }

    /// The checks only concrete values allow; returns the step's plan.
    static func checkRendered(_ step: JSON, path: String, problems: inout ProblemList) -> StepPlan {
        let fields = step.objectValue ?? [:]
        let kind = StepKind(rawValue: fields["kind"]?.stringValue ?? "") ?? .run
        var timeout = fields["timeout"]?.intValue ?? 0
        if !(1...maximumTimeout).contains(timeout) {
            problems.add("\(path).timeout", "must be an integer from 1 to \(maximumTimeout) once rendered")
        }
        if kind == .verify { timeout += fields["soak"]?.intValue ?? 0 }
        if kind == .download {
            for key in ["sha256", "artifact"] {
                if let text = fields[key]?.stringValue, !isSHA256(text) {
                    problems.add("\(path).\(key)", "'\(text)' is not a SHA-256 (64 lowercase hex digits)")
                }
            }
            if let size = fields["size"], (size.intValue ?? -1) < 0 { problems.add("\(path).size", "must be a non-negative integer") }
            if let url = fields["url"]?.stringValue, !url.hasPrefix("https://"), !url.hasPrefix("http://") {
                problems.add("\(path).url", "must be an http:// or https:// URL")
            }
        }
        for key in ["destination", "path"] {
            if let text = fields[key]?.stringValue, !text.hasPrefix("/") { problems.add("\(path).\(key)", "must be an absolute path") }
        }
        return StepPlan(kind, timeout: timeout)
    }
}

public func isSHA256(_ text: String) -> Bool {
    text.utf8.count == 64 && text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
}

extension FlowDefinition {
    /// A canonical definition (what is stored and served) back in the shape authors write
    /// and `POST /api/v1/flows` accepts, so a flow fetched from the server can be edited and
    /// applied again; unchanged, applying it is a no-op (the same canonical text).
    public static func document(fromCanonical canonical: JSON) -> JSON {
        guard var fields = canonical.objectValue else { return canonical }
        if fields["app_version"] == .string("") { fields["app_version"] = nil }
        if let steps = fields["steps"]?.arrayValue {
            fields["steps"] = .array(steps.map { step in
                guard var body = step.objectValue, let kind = body.removeValue(forKey: "kind")?.stringValue else { return step }
                let name = body.removeValue(forKey: "name")
                // A reboot step's `deadline` is stored as its timeout, like every other step's.
                if kind == StepKind.reboot.rawValue, let timeout = body.removeValue(forKey: "timeout") { body["deadline"] = timeout }
                var out: [String: JSON] = [kind: .object(body.filter { $0.value != .null })]
                out["name"] = name
                return .object(out)
            })
        }
        if let rollback = fields["rollback"]?.objectValue {
            let kept = rollback.filter { $0.value != .null }
            // A flow that changes nothing on the device was stored with an empty rollback.
            let empty = kept["script"] == nil && (kept["snapshot"]?.arrayValue ?? []).isEmpty
            fields["rollback"] = empty ? nil : .object(kept)
        }
        return .object(fields)
    }
}
