// `flotilla flows apply|list|show|validate`. Validation runs offline with the server's own
// checks (FlotillaFlowFiles), so `validate` needs no server and `apply` sends nothing
// unless every file is valid.

import ArgumentParser
import FlotillaFlowFiles
import FlotillaWire
import Foundation

struct Flows: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply, list, show and validate update flows.",
        subcommands: [Apply.self, List.self, Show.self, Validate.self])

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply flow files (a file or every *.yaml/*.yml/*.json in a directory); shows the new versions and what changed.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "Flow files or directories.") var paths: [String]

        func validate() throws {
            if paths.isEmpty { throw ValidationError("name a flow file or a directory of them") }
        }

        func run() async throws {
            let files = try flowFiles(paths)
            var documents: [(file: String, name: String, document: JSON)] = []
            var problems: [String] = []
            for file in files {
                switch FlowFiles.validate(atPath: file) {
                case .valid(let flow, let document): documents.append((file, flow.name, document))
                case .invalid(let found): problems += found.map { Flows.describe($0, file: file) }
                }
            }
            guard problems.isEmpty else {
                throw CLIError("nothing applied; fix these first:\n" + problems.joined(separator: "\n"))
            }
            let results = try await withSession(connection) { session in
                var results: [JSON] = []
                for entry in documents {
                    let before = try? await session.call(ManagementRoutes.flow, entry.name)
                    let answer = try await session.call(ManagementRoutes.applyFlow, body: entry.document)
                    let flow = answer["flow"] ?? .null
                    let changed = before.map { changedPaths($0["definition"] ?? .null, flow["definition"] ?? .null) }
                    results.append(.fields([("file", .string(entry.file)), ("flow", flow), ("created", answer["created"] ?? .bool(false)),
                                            ("previous_version", before?["version"] ?? .null),
                                            ("changed", changed.map { .array($0.map(JSON.string)) } ?? .null)]))
                }
                return results
            }
            if output.json { emitJSON(.array(results)); return }
            let style = output.style
            for result in results {
                let name = result["flow"]?["name"]?.stringValue ?? "?"
                let version = result["flow"]?["version"]?.intValue ?? 0
                if result["created"] != .bool(true) {
                    emit("\(name): unchanged (v\(version))\n")
                } else if let previous = result["previous_version"]?.intValue {
                    let changed = result["changed"]?.arrayValue?.compactMap(\.stringValue) ?? []
                    emit("\(name): \(style.paint("v\(previous) → v\(version)", .green))  changed: \(changed.isEmpty ? "-" : changed.joined(separator: ", "))\n")
                } else {
                    emit("\(name): \(style.paint("v\(version)", .green)) (new flow)\n")
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List flows (latest version of each).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @OptionGroup var paging: PagingOptions

        func run() async throws {
            let items = try await withSession(connection) { try await paging.fetch($0, ManagementRoutes.listFlows.path()) }
            if output.json { emitJSON(.array(items)) } else { emit(Views.flows(items, output.style)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A flow's parameters and steps: NAME (latest) or NAME@VERSION.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: ArgumentHelp("The flow.", valueName: "name[@version]")) var flow: String
        @Flag(help: "Print only the flow as a document to edit and apply again (flotilla flows apply FILE.json).")
        var document = false

        func run() async throws {
            let (name, version) = try flowReference(flow)
            let path = version.map { ManagementRoutes.flowVersion.path(name, String($0)) } ?? ManagementRoutes.flow.path(name)
            let found = try await withSession(connection) { try await $0.call("GET", path) }
            if document { emitJSON(found["document"] ?? .null); return }
            if output.json { emitJSON(found) } else { emit(Views.flow(found, output.style)) }
        }
    }

    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check flow files offline with the server's checks; every problem with its line.",
            discussion: "Exit code 0 when every file is valid, 1 otherwise. Needs no server.")
        @Argument(help: "Flow files or directories.") var paths: [String]

        func validate() throws {
            if paths.isEmpty { throw ValidationError("name a flow file or a directory of them") }
        }

        func run() async throws {
            var bad = 0
            for file in try flowFiles(paths) {
                switch FlowFiles.validate(atPath: file) {
                case .valid(let flow, _):
                    emit("\(file): ok (\(flow.name), \(flow.canonical["steps"]?.arrayValue?.count ?? 0) steps)\n")
                case .invalid(let problems):
                    bad += 1
                    emit(problems.map { Flows.describe($0, file: file) + "\n" }.joined())
                }
            }
            if bad > 0 { throw CLIError("\(bad) file\(bad == 1 ? " is" : "s are") invalid") }
        }
    }

    /// `flows/x.yaml:12: steps[1].run.timeout: must be …` (the compiler-style form editors jump to).
    static func describe(_ problem: FlowFiles.LocatedProblem, file: String) -> String {
        "\(file):\(problem.line.map { "\($0):" } ?? "") \(problem.path.isEmpty ? "" : problem.path + ": ")\(problem.message)"
    }
}

/// Files named, and the flow files inside directories named (sorted).
func flowFiles(_ paths: [String]) throws -> [String] {
    var files: [String] = []
    for path in paths {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CLIError("\(path): no such file or directory", exitCode: ExitStatus.usage)
        }
        if isDirectory.boolValue {
            let names = try FileManager.default.contentsOfDirectory(atPath: path)
                .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") || $0.hasSuffix(".json") }.sorted()
            if names.isEmpty { throw CLIError("\(path) holds no *.yaml, *.yml or *.json files", exitCode: ExitStatus.usage) }
            files += names.map { path + "/" + $0 }
        } else {
            files.append(path)
        }
    }
    return files
}

/// `hardhat-model@3` → ("hardhat-model", 3); `hardhat-model` → (…, nil).
func flowReference(_ text: String) throws -> (name: String, version: Int?) {
    guard let at = text.lastIndex(of: "@") else { return (text, nil) }
    guard let version = Int(text[text.index(after: at)...]), version >= 1, at > text.startIndex else {
        throw ValidationError("\(text): expected NAME or NAME@VERSION (a positive integer)")
    }
    return (String(text[..<at]), version)
}

/// The paths where two JSON documents differ: `steps[1].run.script`, `app_version`.
func changedPaths(_ old: JSON, _ new: JSON, at path: String = "") -> [String] {
    switch (old.objectValue, new.objectValue, old.arrayValue, new.arrayValue) {
    case (let a?, let b?, _, _):
        return Set(a.keys).union(b.keys).sorted().flatMap { key -> [String] in
            let child = path.isEmpty ? key : "\(path).\(key)"
            switch (a[key], b[key]) {
            case (let x?, let y?): return changedPaths(x, y, at: child)
            case (nil, nil): return []
            case (nil, _), (_, nil): return [child]
            }
        }
    case (_, _, let a?, let b?) where a.count == b.count:
        return zip(a, b).enumerated().flatMap { changedPaths($1.0, $1.1, at: "\(path)[\($0)]") }
    default:
        return old == new ? [] : [path.isEmpty ? "(whole document)" : path]
    }
}
