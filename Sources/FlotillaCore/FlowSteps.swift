// The step kinds and the rollback section of a flow, normalized to flat objects with
// every default filled in, and the `${param}` templates inside them.

import FlotillaJSON

/// A week: no step may be given longer.
let maximumTimeout = 7 * 24 * 3600

extension FlowDefinition {
    static func parseStep(_ value: JSON, path: String, problems: inout ProblemList) -> JSON? {
        guard var outer = ObjectReader(value, path: path, problems: &problems) else { return nil }
        let name = outer.string("name", problems: &problems)
        let kinds = StepKind.allCases.filter { outer.members[$0.rawValue] != nil }
        guard kinds.count == 1, let kind = kinds.first else {
            problems.add(path, kinds.isEmpty ? "a step needs one of download, run, reboot, verify"
                                             : "a step has exactly one of download, run, reboot, verify")
            return nil
        }
        guard var body = ObjectReader(outer.value(kind.rawValue) ?? .object([:]), path: "\(path).\(kind.rawValue)", problems: &problems) else {
            return nil
        }
        outer.finish(problems: &problems)
        var step: [String: JSON] = ["kind": .string(kind.rawValue), "name": .string(name ?? kind.rawValue)]
        switch kind {
        case .download:
            let url = body.string("url", problems: &problems)
            let artifact = body.string("artifact", problems: &problems)
            if (url == nil) == (artifact == nil) { problems.add(body.path, "needs exactly one of url or artifact") }
            if let url, !url.hasPrefix("${"), !url.hasPrefix("https://"), !url.hasPrefix("http://") {
                problems.add(body.child("url"), "must be an http:// or https:// URL")
            }
            step["url"] = url.map(JSON.string)
            step["artifact"] = artifact.map(JSON.string)
            step["sha256"] = body.string("sha256", required: true, problems: &problems).map(JSON.string)
            if body.members["size"] != nil { step["size"] = body.integer("size", default: 0, range: 0...Int.max, problems: &problems) }
            step["destination"] = absolutePath(body.string("destination", required: true, problems: &problems),
                                               at: body.child("destination"), problems: &problems)
            step["timeout"] = body.integer("timeout", default: 3600, range: 0...maximumTimeout, problems: &problems)
        case .run, .verify:
            let script = body.string("script", problems: &problems)
            let file = body.string("path", problems: &problems)
            if (script == nil) == (file == nil) { problems.add(body.path, "needs exactly one of script (inline) or path (on the device)") }
            step["script"] = script.map(JSON.string)
            step["path"] = absolutePath(file, at: body.child("path"), problems: &problems)
            if kind == .run {
                step["env"] = .object(body.stringMap("env", problems: &problems).mapValues(JSON.string))
                step["timeout"] = body.integer("timeout", default: 600, range: 0...maximumTimeout, problems: &problems)
            } else {
                step["timeout"] = body.integer("timeout", default: 300, range: 0...maximumTimeout, problems: &problems)
                step["soak"] = body.integer("soak", default: 0, range: 0...maximumTimeout, problems: &problems)
                step["interval"] = body.integer("interval", default: 10, range: 1...3600, problems: &problems)
            }
        case .reboot:
            step["timeout"] = body.integer("deadline", default: 600, range: 0...maximumTimeout, problems: &problems)
        }
        body.finish(problems: &problems)
        return .object(step)
    }

    static func parseRollback(_ value: JSON?, required: Bool, problems: inout ProblemList) -> JSON {
        guard var body = ObjectReader(value, path: "rollback", problems: &problems) else {
            if required && value == nil {
                problems.add("rollback", "is required: a step can change the device, so say what to snapshot or run to restore it")
            }
            return .object(["snapshot": .array([]), "reboot": .bool(false), "timeout": .int(900)])
        }
        let snapshot = body.strings("snapshot", problems: &problems)
        for (index, path) in snapshot.enumerated() {
            _ = absolutePath(path, at: "rollback.snapshot[\(index)]", problems: &problems)
        }
        let script = body.string("script", problems: &problems)
        if snapshot.isEmpty && script == nil { problems.add("rollback", "needs snapshot paths, a script, or both") }
        var out: [String: JSON] = [
            "snapshot": .array(snapshot.map(JSON.string)),
            "reboot": .bool(body.bool("reboot", default: false, problems: &problems)),
            "timeout": body.integer("timeout", default: 900, range: 1...maximumTimeout, problems: &problems),
        ]
        out["script"] = script.map(JSON.string)
        body.finish(problems: &problems)
        return .object(out)
    }

    static func absolutePath(_ path: String?, at location: String, problems: inout ProblemList) -> JSON? {
        guard let path else { return nil }
        if !path.hasPrefix("/") && !path.hasPrefix("${") { problems.add(location, "must be an absolute path") }
        return .string(path)
    }
}

/// `${name}` references inside strings.
enum Template {
    /// The parameter names a string refers to, or what is malformed about it.
    static func references(in text: String) -> Result<[String], TemplateError> {
        var names: [String] = []
        switch walk(text, onText: { _ in }, onReference: { names.append($0) }) {
        case .success: return .success(names)
        case .failure(let error): return .failure(error)
        }
    }

    /// The string with each reference replaced by `value(name)`.
    static func substitute(_ text: String, _ value: (String) -> String) -> String {
        var out = ""
        _ = walk(text, onText: { out += $0 }, onReference: { out += value($0) })
        return out
    }

    private static func walk(_ text: String, onText: (Substring) -> Void, onReference: (String) -> Void) -> Result<Void, TemplateError> {
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            onText(rest[..<dollar])
            let after = rest[dollar...].dropFirst()
            if after.hasPrefix("${") {            // "$${" is a literal "${"
                onText("${")
                rest = after.dropFirst(2)
            } else if after.hasPrefix("{") {
                guard let close = after.firstIndex(of: "}") else { return .failure(TemplateError("'${' without a closing '}'")) }
                let name = String(after[after.index(after: after.startIndex)..<close])
                guard isFlowName(name) else { return .failure(TemplateError("'${\(name)}' is not a parameter reference")) }
                onReference(name)
                rest = after[after.index(after: close)...]
            } else {
                onText("$")
                rest = after
            }
        }
        onText(rest)
        return .success(())
    }
}

struct TemplateError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
