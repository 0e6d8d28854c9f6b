// Flow files: YAML (or JSON) definitions in `flows/`, converted to the JSON the API takes.
// The server applies every file at start-up; the tests check every shipped file.

import FlotillaCore
import FlotillaStore
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
}
