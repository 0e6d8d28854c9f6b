// Renderers: API JSON in, text out, nothing else. Each takes a Style (terminal or pipe)
// so the tests can render both without a terminal.

import FlotillaJSON

enum Views {
    static func devices(_ items: [JSON], _ style: Style) -> String {
        var table = Table(["NAME", "GROUPS", "LABELS", "INSTALLED", "LAST SEEN"])
        for device in items {
            let groups = device["groups"]?.arrayValue?.compactMap(\.stringValue).joined(separator: ",") ?? ""
            // Only the exceptions are marked: a pending, rejected or pre-authorized device, a revoked token.
            var name = device["name"]?.stringValue ?? "?"
            if let status = device["status"]?.stringValue, status != "accepted" { name += " (\(status))" }
            if device["token_revoked_at"]?.stringValue != nil { name += " (token revoked)" }
            table.add([name, groups.isEmpty ? "-" : groups, inline(device["labels"]),
                       inline(device["installed"]), style.time(device["last_seen_at"])])
        }
        return items.isEmpty ? "no devices\n" : table.render(style)
    }

    /// One device: identity, groups, per-app installed and known-good, recent executions.
    static func device(_ device: JSON, executions: [JSON], _ style: Style) -> String {
        var out = style.paint(device["name"]?.stringValue ?? "?", .bold) + "  " + (device["id"]?.stringValue ?? "") + "\n"
        let groups = device["groups"]?.arrayValue?.compactMap(\.stringValue) ?? []
        out += "  groups:     \(groups.isEmpty ? "-" : groups.joined(separator: ", "))\n"
        out += "  labels:     \(inline(device["labels"]))\n"
        out += "  last seen:  \(style.time(device["last_seen_at"]))\n"
        out += "  registered: \(style.time(device["created_at"]))\n"
        let installed = device["installed"]?.objectValue ?? [:]
        let knownGood = device["known_good"]?.objectValue ?? [:]
        let apps = Set(installed.keys).union(knownGood.keys).sorted()
        out += "\n"
        if apps.isEmpty {
            out += "no apps installed yet\n"
        } else {
            var table = Table(["APP", "INSTALLED", "KNOWN-GOOD"])
            for app in apps { table.add([app, installed[app]?.stringValue ?? "-", knownGood[app]?.stringValue ?? "-"]) }
            out += table.render(style)
        }
        out += "\n"
        if executions.isEmpty { return out + "no executions yet\n" }
        var table = Table(["DEPLOYMENT", "APP", "VERSION", "STATE", "STEP", "UPDATED", "FAILURE"])
        for execution in executions {
            table.add([shortID(execution["deployment_id"]), execution["app"]?.stringValue ?? "?",
                       execution["app_version"]?.stringValue ?? "?", style.state(execution["state"]?.stringValue ?? "?"),
                       execution["step_name"]?.stringValue ?? "-", style.time(execution["updated_at"]),
                       execution["failure"]?["message"]?.stringValue ?? ""])
        }
        return out + table.render(style)
    }

    static func groups(_ items: [JSON], _ style: Style) -> String {
        var table = Table(["NAME", "DEVICES", "CREATED"])
        for group in items {
            table.add([group["name"]?.stringValue ?? "?", String(group["device_count"]?.intValue ?? 0), style.time(group["created_at"])])
        }
        return items.isEmpty ? "no groups\n" : table.render(style)
    }

    static func flows(_ items: [JSON], _ style: Style) -> String {
        var table = Table(["NAME", "VERSION", "APP", "STEPS", "CREATED"])
        for flow in items {
            table.add([flow["name"]?.stringValue ?? "?", String(flow["version"]?.intValue ?? 0), flow["app"]?.stringValue ?? "?",
                       String(flow["definition"]?["steps"]?.arrayValue?.count ?? 0), style.time(flow["created_at"])])
        }
        return items.isEmpty ? "no flows\n" : table.render(style)
    }

    /// A flow: parameters (type, required or default) and the steps in order.
    static func flow(_ flow: JSON, _ style: Style) -> String {
        let definition = flow["definition"] ?? .null
        var out = style.paint("\(flow["name"]?.stringValue ?? "?") v\(flow["version"]?.intValue ?? 0)", .bold)
        out += "  app \(flow["app"]?.stringValue ?? "?")  created \(style.time(flow["created_at"]))\n"
        if let description = definition["description"]?.stringValue { out += "  \(description)\n" }
        let parameters = definition["parameters"]?.objectValue ?? [:]
        out += "\n"
        if !parameters.isEmpty {
            var table = Table(["PARAMETER", "TYPE", "REQUIRED", "DEFAULT"])
            for name in parameters.keys.sorted() {
                let spec = parameters[name] ?? .null
                let fallback = spec["default"]
                table.add([name, spec["type"]?.stringValue ?? "string", spec["required"] == .bool(true) && fallback == nil ? "yes" : "no",
                           fallback.map { $0.stringValue ?? $0.serialized } ?? "-"])
            }
            out += table.render(style) + "\n"
        }
        var steps = Table(["#", "STEP", "KIND"])
        for (index, step) in (definition["steps"]?.arrayValue ?? []).enumerated() {
            steps.add([String(index), step["name"]?.stringValue ?? "-", step["kind"]?.stringValue ?? "?"])
        }
        return out + steps.render(style)
    }

    static func artifacts(_ items: [JSON], _ style: Style) -> String {
        var table = Table(["SHA256", "NAME", "SIZE", "CREATED"])
        for artifact in items {
            table.add([artifact["sha256"]?.stringValue ?? "?", artifact["name"]?.stringValue ?? "?",
                       byteCount(artifact["size"]?.intValue ?? 0), style.time(artifact["created_at"])])
        }
        return items.isEmpty ? "no artifacts\n" : table.render(style)
    }

    static func deployments(_ items: [JSON], _ style: Style) -> String {
        var table = Table(["ID", "FLOW", "APP", "VERSION", "STATUS", "OUTCOME", "DONE", "CREATED"])
        for deployment in items {
            table.add([deployment["id"]?.stringValue ?? "?",
                       "\(deployment["flow"]?["name"]?.stringValue ?? "?")@\(deployment["flow"]?["version"]?.intValue ?? 0)",
                       deployment["app"]?.stringValue ?? "?", deployment["app_version"]?.stringValue ?? "?",
                       style.state(deployment["status"]?.stringValue ?? "?"), outcome(deployment, style),
                       "\(finishedCount(deployment))/\(deployment["devices_targeted"]?.intValue ?? 0)", style.time(deployment["created_at"])])
        }
        return items.isEmpty ? "no deployments\n" : table.render(style)
    }

    /// A deployment: what, where, counts per state and the failures grouped by step and message.
    static func deployment(_ deployment: JSON, failures: JSON, _ style: Style) -> String {
        var out = summaryLine(deployment, style) + "\n"
        out += "  created \(style.time(deployment["created_at"]))"
        if deployment["finished_at"]?.stringValue != nil { out += ", finished \(style.time(deployment["finished_at"]))" }
        if deployment["canceled_at"]?.stringValue != nil { out += ", canceled \(style.time(deployment["canceled_at"]))" }
        out += "\n  target \(deployment["target"]?.serialized ?? "{}")\n  params \(deployment["params"]?.serialized ?? "{}")\n\n"
        out += counts(deployment, style) + "\n"
        return out + failureGroups(failures, style)
    }

    static func failureGroups(_ failures: JSON, _ style: Style) -> String {
        let groups = failures["groups"]?.arrayValue ?? []
        if groups.isEmpty { return "no failures\n" }
        var table = Table(["DEVICES", "ENDED", "STEP", "MESSAGE"])
        for group in groups {
            let step = group["step_name"]?.stringValue ?? group["step"]?.intValue.map { "step \($0)" } ?? "-"
            table.add([String(group["count"]?.intValue ?? 0), style.state(group["state"]?.stringValue ?? "?"), step,
                       group["message"]?.stringValue ?? ""])
        }
        return style.paint("failures by step and message", .bold) + "\n" + table.render(style)
    }

    static func executions(_ items: [JSON], _ style: Style) -> String {
        var table = Table(["DEVICE", "STATE", "STEP", "ATTEMPT", "UPDATED", "FAILURE"])
        for execution in items {
            table.add([execution["device_name"]?.stringValue ?? "?", style.state(execution["state"]?.stringValue ?? "?"),
                       execution["step_name"]?.stringValue ?? "-", String(execution["attempt"]?.intValue ?? 0),
                       style.time(execution["updated_at"]), execution["failure"]?["message"]?.stringValue ?? ""])
        }
        return items.isEmpty ? "no executions\n" : table.render(style)
    }

    static func tokens(_ items: [JSON], _ style: Style) -> String {
        var table = Table(["ID", "NAME", "ROLE", "SCOPE", "LAST USED", "EXPIRES", "REVOKED"])
        func time(_ value: JSON?) -> String { value?.stringValue == nil ? "-" : style.time(value) }
        for token in items {
            let scope = [("flows", token["flows"]), ("groups", token["groups"])].compactMap { name, list in
                list?.arrayValue.map { "\(name) " + $0.compactMap(\.stringValue).joined(separator: ",") }
            }.joined(separator: "; ")
            table.add([token["id"]?.stringValue ?? "?", token["name"]?.stringValue ?? "?", token["role"]?.stringValue ?? "?",
                       scope.isEmpty ? "-" : scope, time(token["last_used_at"]), time(token["expires_at"]), time(token["revoked_at"])])
        }
        return items.isEmpty ? "no tokens\n" : table.render(style)
    }

    /// One event log line: time, device, app, from → to, cause.
    static func event(_ event: JSON, _ style: Style) -> String {
        let to = event["to"]?.stringValue ?? "?"
        return "\(style.time(event["at"]))  \(event["device_name"]?.stringValue ?? "?")  \(event["app"]?.stringValue ?? "?")  "
            + "\(event["from"]?.stringValue ?? "?") → \(style.state(to))  \(event["cause"]?.stringValue ?? "")\n"
    }

    // MARK: - Pieces shared by show and watch

    static let endStates = ["succeeded", "failed", "rolled_back", "rollback_failed", "canceled"]
    static let stateOrder = ["queued", "downloading", "installing", "rebooting", "verifying", "rolling_back"] + endStates

    static func finishedCount(_ deployment: JSON) -> Int {
        endStates.reduce(0) { $0 + (deployment["counts"]?[$1]?.intValue ?? 0) }
    }

    static func outcome(_ deployment: JSON, _ style: Style) -> String {
        let word = deployment["outcome"]?.stringValue ?? "?"
        return word == "pending" ? style.paint(word, .dim) : style.state(word)
    }

    /// `3f2a… hardhat-model@2 → hardhat-detector 1.4  active`
    static func summaryLine(_ deployment: JSON, _ style: Style) -> String {
        let flow = "\(deployment["flow"]?["name"]?.stringValue ?? "?")@\(deployment["flow"]?["version"]?.intValue ?? 0)"
        return style.paint("deployment \(deployment["id"]?.stringValue ?? "?")", .bold)
            + "  \(flow) → \(deployment["app"]?.stringValue ?? "?") \(deployment["app_version"]?.stringValue ?? "?")  "
            + "\(style.state(deployment["status"]?.stringValue ?? "?")), outcome \(outcome(deployment, style))"
    }

    /// Non-zero counts in state order: `succeeded 30  rolled_back 5  queued 50`.
    static func counts(_ deployment: JSON, _ style: Style) -> String {
        let total = deployment["devices_targeted"]?.intValue ?? 0
        let done = finishedCount(deployment)
        var out = "\(progressBar(done, of: total)) \(done)/\(total) done\n"
        let parts = stateOrder.compactMap { state -> String? in
            guard let count = deployment["counts"]?[state]?.intValue, count > 0 else { return nil }
            return "\(style.state(state)) \(count)"
        }
        out += parts.isEmpty ? "no executions\n" : parts.joined(separator: "  ") + "\n"
        return out
    }

    static func shortID(_ value: JSON?) -> String {
        guard let text = value?.stringValue else { return "-" }
        return String(text.prefix(8))
    }
}
