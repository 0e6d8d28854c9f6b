// The live view of one deployment, for `deployments watch` and `deploy --wait`.
//
// On a terminal the frame (summary, progress bar, counts, newest failures) is redrawn in
// place; on a pipe a plain line is printed whenever the counts change (and at least once a
// minute), so logs stay readable. It returns when the deployment is no longer active, and
// the exit code says how it ended: 0 every device succeeded, 8 anything else.

import FlotillaJSON
import FlotillaWire
import Foundation

enum Watch {
    /// Polls until the deployment ends; returns the final deployment.
    static func run(_ session: Session, id: String, style: Style, json: Bool, interval: Double, timeout: Double?) async throws -> JSON {
        let started = Date()
        var drawnLines = 0
        var lastLine = ""
        var lastPrinted = Date.distantPast
        while true {
            let deployment = try await session.call(ManagementRoutes.deployment, id)
            let active = deployment["status"]?.stringValue == "active"
            if json {
                if !active { return deployment }
            } else if style.tty {
                let failures = try await session.call(ManagementRoutes.deploymentFailures, id, query: [("newest", "5")])
                var now = style
                now.now = Date()
                let frame = Views.watchFrame(deployment, failures: failures, now)
                // Move to the first line of the previous frame and clear down, then draw.
                emit((drawnLines > 0 ? "\u{1B}[\(drawnLines)F\u{1B}[J" : "") + frame)
                drawnLines = frame.split(separator: "\n", omittingEmptySubsequences: false).count - 1
            } else {
                let line = Views.watchLine(deployment)
                if line != lastLine || Date().timeIntervalSince(lastPrinted) >= 60 || !active {
                    emit("\(Views.timestamp(Date())) \(line)\n")
                    lastLine = line
                    lastPrinted = Date()
                }
            }
            if !active { return deployment }
            if let timeout, Date().timeIntervalSince(started) >= timeout {
                throw CLIError("deployment \(id) is still active after \(Int(timeout))s", hint: "watch it again with `flotilla deployments watch \(id)`")
            }
            try await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
    }

    /// 0 when every targeted device succeeded, 8 otherwise (failed, rolled back, canceled).
    static func exitCode(for deployment: JSON) -> Int32 {
        deployment["outcome"]?.stringValue == "succeeded" ? ExitStatus.ok : ExitStatus.deploymentFailed
    }
}

extension Views {
    /// The terminal frame: summary, bar and counts, and the newest failures.
    static func watchFrame(_ deployment: JSON, failures: JSON, _ style: Style) -> String {
        var out = summaryLine(deployment, style) + "\n" + counts(deployment, style)
        let newest = failures["newest"]?.arrayValue ?? []
        if !newest.isEmpty {
            out += style.paint("newest failures", .bold) + "\n"
            for execution in newest {
                let step = execution["failure"]?["step"]?.intValue.map { "step \($0)" } ?? "-"
                out += "  \(execution["device_name"]?.stringValue ?? "?")  \(style.state(execution["state"]?.stringValue ?? "?"))  "
                    + "\(step): \(execution["failure"]?["message"]?.stringValue ?? "")\n"
            }
        }
        return out
    }

    /// The pipe line: `active 37/100 done: queued 50, downloading 5, succeeded 30, rolled_back 5`.
    static func watchLine(_ deployment: JSON) -> String {
        let total = deployment["devices_targeted"]?.intValue ?? 0
        let parts = stateOrder.compactMap { state -> String? in
            guard let count = deployment["counts"]?[state]?.intValue, count > 0 else { return nil }
            return "\(state) \(count)"
        }
        var line = "\(deployment["status"]?.stringValue ?? "?") \(finishedCount(deployment))/\(total) done"
        if !parts.isEmpty { line += ": " + parts.joined(separator: ", ") }
        if deployment["status"]?.stringValue != "active" { line += " (outcome \(deployment["outcome"]?.stringValue ?? "?"))" }
        return line
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}
