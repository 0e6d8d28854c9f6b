// How results look: aligned tables, colour and humanized times on a terminal; plain text
// and RFC 3339 on a pipe; the API's own JSON with --json. Renderers are pure functions of
// (data, Style) so the tests check each mode without a terminal.

import ArgumentParser
import FlotillaJSON
import Foundation

struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print the API's JSON instead of a table.")
    var json = false

    @Flag(name: .customLong("no-color"), help: "No colour, even on a terminal (NO_COLOR does the same).")
    var noColor = false

    var style: Style { Style.detect(noColor: noColor) }
}

/// The output mode: terminal (colour, humanized times, redraw in place) or pipe.
struct Style: Equatable, Sendable {
    var tty: Bool
    var color: Bool
    /// "Now", for "3m ago"; fixed in tests.
    var now: Date

    static let pipe = Style(tty: false, color: false, now: Date(timeIntervalSince1970: 0))

    static func detect(noColor: Bool, environment: [String: String] = ProcessInfo.processInfo.environment) -> Style {
        let tty = isatty(STDOUT_FILENO) == 1
        let color = tty && !noColor && environment["NO_COLOR"] == nil && environment["TERM"] != "dumb"
        return Style(tty: tty, color: color, now: Date())
    }

    enum Tone: String { case bold = "1", dim = "2", red = "31", green = "32", yellow = "33", blue = "34", cyan = "36" }

    func paint(_ text: String, _ tone: Tone) -> String {
        color && !text.isEmpty ? "\u{1B}[\(tone.rawValue)m\(text)\u{1B}[0m" : text
    }

    /// A state word in its colour: green ends well, red ends badly, yellow is in flight.
    func state(_ name: String) -> String {
        switch name {
        case "succeeded", "completed", "active_ok": paint(name, .green)
        case "failed", "rolled_back", "rollback_failed": paint(name, .red)
        case "canceled", "queued": paint(name, .dim)
        default: paint(name, .yellow)
        }
    }

    /// An RFC 3339 time from the API: "3m ago" on a terminal, unchanged on a pipe.
    func time(_ value: JSON?) -> String {
        guard let text = value?.stringValue else { return "-" }
        guard tty, let date = parseRFC3339(text) else { return text }
        return humanize(now.timeIntervalSince(date))
    }
}

/// "just now", "42s ago", "5m ago", "3h ago", "2d ago"; "in 5m" for the future.
func humanize(_ seconds: TimeInterval) -> String {
    let future = seconds < 0
    let value = Int(abs(seconds))
    let text: String
    switch value {
    case ..<2: return "just now"
    case ..<60: text = "\(value)s"
    case ..<3600: text = "\(value / 60)m"
    case ..<86400: text = "\(value / 3600)h"
    default: text = "\(value / 86400)d"
    }
    return future ? "in \(text)" : "\(text) ago"
}

func parseRFC3339(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return date }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text)
}

/// Columns padded to their widest cell (measured without colour codes); the last column is not padded.
struct Table {
    var headers: [String]
    var rows: [[String]] = []

    init(_ headers: [String]) { self.headers = headers }

    mutating func add(_ cells: [String]) { rows.append(cells) }

    func render(_ style: Style) -> String {
        let all = [headers] + rows
        var widths = Array(repeating: 0, count: headers.count)
        for row in all { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], visibleWidth(cell)) } }
        var out = ""
        for (number, row) in all.enumerated() {
            var line = ""
            for (index, cell) in row.enumerated() {
                let text = number == 0 ? style.paint(cell, .bold) : cell
                line += text
                if index < row.count - 1 { line += String(repeating: " ", count: widths[index] - visibleWidth(cell) + 2) }
            }
            out += line + "\n"
        }
        return out
    }
}

/// Characters a terminal shows (ANSI escape sequences take no room).
func visibleWidth(_ text: String) -> Int {
    var width = 0
    var escaping = false
    for character in text {
        if escaping { if character.isLetter { escaping = false }; continue }
        if character == "\u{1B}" { escaping = true; continue }
        width += 1
    }
    return width
}

/// `[#########-----------]` for `done` of `total`.
func progressBar(_ done: Int, of total: Int, width: Int = 30) -> String {
    let filled = total > 0 ? min(width, done * width / total) : width
    return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]"
}

/// Human sizes: 512 B, 1.5 KiB, 46.0 MiB.
func byteCount(_ bytes: Int) -> String {
    if bytes < 1024 { return "\(bytes) B" }
    let units = ["KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes) / 1024
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return String(format: "%.1f", value) + " " + units[unit]
}

/// Prints `text` as is (renderers end their lines themselves).
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Any JSON for --json: the API's value, one document per command.
func emitJSON(_ value: JSON) { emit(value.serialized + "\n") }

/// A compact one-line text for a JSON value in a table cell (labels, installed versions).
func inline(_ value: JSON?) -> String {
    guard let members = value?.objectValue, !members.isEmpty else { return "-" }
    return members.keys.sorted().map { "\($0)=\(members[$0]?.stringValue ?? members[$0]!.serialized)" }.joined(separator: ",")
}
