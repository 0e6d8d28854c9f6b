// Flow files: YAML (or JSON) definitions in `flows/`, converted to the JSON the API takes.
// The server applies every file at start-up; the tests check every shipped file; the CLI
// validates files offline with the same checks, pointing each problem at its line.

@_exported import FlotillaCore
@_exported import FlotillaJSON
import Foundation
import Yams

public enum FlowFiles {
    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    /// `*.yaml`, `*.yml` and `*.json` in `directory`, sorted, each parsed and validated.
    /// Throws one error naming every bad file and each problem's location.
    public static func load(directory: String) throws -> [(file: String, flow: FlowDefinition)] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") || $0.hasSuffix(".json") }.sorted()
        var flows: [(String, FlowDefinition)] = []
        var errors: [String] = []
        var seen: [String: String] = [:]
        for name in names {
            let path = directory + "/" + name
            do {
                let flow = try FlowDefinition.parse(try document(atPath: path))
                if let other = seen[flow.name] { errors.append("\(path): flow '\(flow.name)' is also defined in \(other)") }
                seen[flow.name] = path
                flows.append((path, flow))
            } catch let invalid as FlowInvalid {
                errors += invalid.problems.map { "\(path): \($0)" }
            } catch {
                errors.append("\(path): \(error)")
            }
        }
        if !errors.isEmpty { throw LoadError(description: errors.joined(separator: "\n")) }
        return flows
    }

    /// A YAML or JSON file as a JSON value.
    public static func document(atPath path: String) throws -> JSON {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        if path.hasSuffix(".json") { return try JSON.parse(Array(text.utf8)) }
        guard let node = try Yams.compose(yaml: text) else { throw LoadError(description: "the file is empty") }
        return try json(node)
    }

    /// YAML → JSON keeping YAML's own typing: `timeout: 60` is a number, `"1.4"` a string.
    static func json(_ node: Node) throws -> JSON {
        switch node {
        case .scalar(let scalar):
            // `any` resolves the tag: quoted text stays a string, `60` is an Int, `true` a Bool.
            switch node.any {
            case let flag as Bool: return .bool(flag)
            case let number as Int: return .int(number)
            case let number as Double: return .number(String(number))
            case is NSNull: return .null
            case let text as String: return .string(text)
            default: return .string(scalar.string)  // other YAML types (timestamps, binary) as written
            }
        case .sequence(let sequence):
            return .array(try sequence.map(json))
        case .mapping(let mapping):
            var members: [String: JSON] = [:]
            for (key, value) in mapping {
                guard let name = key.string else { throw LoadError(description: "a mapping key is not a string") }
                members[name] = try json(value)
            }
            return .object(members)
        case .alias:
            throw LoadError(description: "YAML aliases are not supported in flow files")
        }
    }

    /// One problem of a file, with the line of the YAML node it is about (the nearest
    /// enclosing node that exists when the problem is a missing key). Lines count from 1.
    public struct LocatedProblem: Sendable, Equatable, CustomStringConvertible {
        public var path: String
        public var message: String
        public var line: Int?
        public var description: String { "\(line.map { "line \($0): " } ?? "")\(path.isEmpty ? "" : path + ": ")\(message)" }
    }

    /// Validates one file the way the server does: the flow and its document, or every problem.
    public enum Validation {
        case valid(FlowDefinition, document: JSON)
        case invalid([LocatedProblem])
    }

    public static func validate(atPath path: String) -> Validation {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            return .invalid([LocatedProblem(path: "", message: "cannot read the file: \(error.localizedDescription)", line: nil)])
        }
        var root: Node?
        let document: JSON
        do {
            if path.hasSuffix(".json") {
                document = try JSON.parse(Array(text.utf8))
            } else {
                root = try Yams.compose(yaml: text)
                guard let root else { return .invalid([LocatedProblem(path: "", message: "the file is empty", line: nil)]) }
                document = try json(root)
            }
        } catch let error as YamlError {
            return .invalid([LocatedProblem(path: "", message: "not valid YAML: \(error)", line: nil)])
        } catch {
            return .invalid([LocatedProblem(path: "", message: "\(error)", line: nil)])
        }
        do {
            return .valid(try FlowDefinition.parse(document), document: document)
        } catch {
            return .invalid(error.problems.map { problem in
                LocatedProblem(path: problem.path, message: problem.message, line: root.flatMap { line(of: problem.path, in: $0) })
            })
        }
    }

    /// The line of `steps[1].run.timeout` in `root`, or of its deepest ancestor present.
    static func line(of path: String, in root: Node) -> Int? {
        var node = root
        var line = root.mark?.line
        for component in components(of: path) {
            let next: Node?
            switch component {
            case .key(let key): next = node.mapping != nil ? node[key] : nil
            case .index(let index): next = node.sequence.flatMap { index < $0.count ? $0[index] : nil }
            }
            guard let next else { break }
            node = next
            // A mapping's own mark is its first key; the key's line reads better for a value.
            line = next.mark?.line ?? line
        }
        return line
    }

    enum PathComponent: Equatable { case key(String), index(Int) }

    /// `steps[1].run.timeout` → key steps, index 1, key run, key timeout.
    static func components(of path: String) -> [PathComponent] {
        var result: [PathComponent] = []
        for part in path.split(separator: ".") {
            var rest = Substring(part)
            if let bracket = rest.firstIndex(of: "[") {
                if bracket > rest.startIndex { result.append(.key(String(rest[..<bracket]))) }
                rest = rest[bracket...]
                while rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
                    if let index = Int(rest[rest.index(after: rest.startIndex)..<close]) { result.append(.index(index)) }
                    rest = rest[rest.index(after: close)...]
                }
            } else {
                result.append(.key(String(rest)))
            }
        }
        return result
    }
}
