// Pieces every command uses: a session for the length of one command, paging through a
// list, `k=v` pairs.

import ArgumentParser
import Foundation
import FlotillaJSON

/// Connects, runs `body`, and always closes the connection.
@discardableResult
func withSession<T>(_ options: ConnectionOptions, _ body: (Session) async throws -> T) async throws -> T {
    let session = try await options.connect()
    do {
        let result = try await body(session)
        await session.close()
        return result
    } catch {
        await session.close()
        throw error
    }
}

/// How many items a list command shows.
struct PagingOptions: ParsableArguments {
    @Option(help: "Show at most this many items.")
    var limit: Int = 100

    @Flag(help: "Show every item (follows the server's pages to the end).")
    var all = false

    func validate() throws {
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1") }
    }

    /// Follows `next_cursor` from `path` (which may already hold a query) until enough items.
    func fetch(_ session: Session, _ path: String) async throws -> [JSON] {
        var items: [JSON] = []
        var cursor: String?
        repeat {
            let wanted = all ? 500 : min(500, limit - items.count)
            let page = query(path, [("limit", String(wanted)), ("cursor", cursor)])
            let answer = try await session.call("GET", page)
            items += answer["items"]?.arrayValue ?? []
            cursor = answer["next_cursor"]?.stringValue
        } while cursor != nil && (all || items.count < limit)
        // Never a silent cut: the listing says there is more (on stderr, so --json stays clean).
        if !all && (cursor != nil || items.count > limit) {
            FileHandle.standardError.write(Data("(the first \(limit) shown; more exist: --limit N or --all)\n".utf8))
        }
        return all ? items : Array(items.prefix(limit))
    }
}

/// `k=v` → (k, v); a usage error names the argument otherwise.
func keyValue(_ text: String, option: String) throws -> (String, String) {
    guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
        throw ValidationError("\(option) \(text): expected KEY=VALUE")
    }
    return (String(text[..<equals]), String(text[text.index(after: equals)...]))
}

/// `site=berlin,kind=cam` or several `--selector` options → one selector text for the API.
func selectorText(_ pairs: [String]) throws -> String? {
    let parts = pairs.flatMap { $0.split(separator: ",").map(String.init) }
    for part in parts { _ = try keyValue(part, option: "--selector") }
    return parts.isEmpty ? nil : parts.joined(separator: ",")
}

/// `--limit`, `--follow`, `--interval` of the append-only logs (events, audit).
struct FollowOptions: ParsableArguments {
    @Option(help: "How many recent entries to show first (1-500).") var limit: Int = 50
    @Flag(help: "Keep running and print new entries as they are appended (Ctrl-C to stop).") var follow = false
    @Option(help: "Seconds between polls with --follow.") var interval: Double = 1

    func validate() throws {
        guard (1...500).contains(limit) else { throw ValidationError("--limit must be from 1 to 500") }
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 seconds") }
    }

    /// Prints the newest `limit` entries of `path` (a log route taking `after` and
    /// `limit`), then, with --follow, every later one as it appears. With --json each
    /// entry is one line, so a follower's output is a stream.
    func tail(_ connection: ConnectionOptions, _ path: String, json: Bool, render: @escaping (JSON) -> String) async throws {
        try await withSession(connection) { session in
            var after: Int?
            repeat {
                let page = FlotillaCLIKit.query(path, [("after", after.map(String.init)), ("limit", String(after == nil ? limit : 500))])
                let answer = try await session.call("GET", page)
                for entry in answer["items"]?.arrayValue ?? [] { emit(json ? entry.serialized + "\n" : render(entry)) }
                after = answer["last_id"]?.intValue ?? after ?? 0
                if follow { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
            } while follow
        }
    }
}
