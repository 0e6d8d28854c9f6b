// Where the server is, who we are, and one call to the management API.
//
// Precedence: flags, then FLOTILLA_URL / FLOTILLA_TOKEN, then the config file written by
// `flotilla login` ($FLOTILLA_CONFIG, else $XDG_CONFIG_HOME/flotilla/config, else
// ~/.config/flotilla/config; JSON, mode 0600 because it holds a token).
//
// Every API error becomes a CLIError that says what to do: 401/403 exit 4, a 422 lists
// each field, an unreachable server names the URL it tried.

import ArgumentParser
import FlotillaJSON
import FlotillaTransport
import FlotillaWire
import Foundation

struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Server URL, e.g. https://flotilla.example:8443 (or FLOTILLA_URL).", valueName: "url"))
    var server: String?

    @Option(name: .long, help: ArgumentHelp("API token (or FLOTILLA_TOKEN).", valueName: "token"))
    var token: String?

    @Option(name: .customLong("ca-file"), help: ArgumentHelp("PEM file of the CA that signed the server's certificate.", valueName: "path"))
    var caFile: String?

    @Flag(name: .long, help: "Do not verify the server's TLS certificate (first contact with a self-signed server only).")
    var insecure = false

    /// Resolves flags, environment and config file into one target, or says what is missing.
    func resolve(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ClientConfig {
        let saved = (try? ClientConfig.load(from: ClientConfig.path(environment: environment))) ?? nil
        guard let url = server ?? environment["FLOTILLA_URL"] ?? saved?.server else {
            throw CLIError("no server given", hint: "pass --server URL, set FLOTILLA_URL, or run `flotilla login --server URL`", exitCode: ExitStatus.usage)
        }
        guard let token = token ?? environment["FLOTILLA_TOKEN"] ?? saved?.token else {
            throw CLIError("no API token given", hint: "pass --token, set FLOTILLA_TOKEN, or run `flotilla login`", exitCode: ExitStatus.auth)
        }
        return ClientConfig(server: url, token: token, caFile: caFile ?? saved?.caFile, insecure: insecure || (saved?.insecure ?? false))
    }

    func connect() async throws -> Session { try await Session.connect(try resolve()) }
}

/// What `flotilla login` saves and every command uses.
struct ClientConfig: Equatable {
    var server: String
    var token: String
    var caFile: String?
    var insecure = false

    static func path(environment: [String: String]) -> String {
        if let explicit = environment["FLOTILLA_CONFIG"], !explicit.isEmpty { return explicit }
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.config")
        return base + "/flotilla/config"
    }

    static func load(from path: String) throws -> ClientConfig? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let json = try JSON.parse(Array(data))
        guard let server = json["server"]?.stringValue, let token = json["token"]?.stringValue else {
            throw CLIError("\(path) is not a flotilla config (it needs server and token)", hint: "run `flotilla login` again")
        }
        return ClientConfig(server: server, token: token, caFile: json["ca_file"]?.stringValue, insecure: json["insecure"] == .bool(true))
    }

    /// Writes atomically with mode 0600 from the start (the token is never world-readable).
    func save(to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let json = JSON.fields([("server", .string(server)), ("token", .string(token)),
                                ("ca_file", caFile.map(JSON.string) ?? .null), ("insecure", .bool(insecure))])
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data((json.serialized + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw CLIError("cannot write \(temporary)", hint: "check that the directory is writable")
        }
        if rename(temporary, path) != 0 { throw CLIError("cannot replace \(path): \(String(cString: strerror(errno)))") }
    }
}

/// One HTTP/2 connection to the management API for the life of a command.
final class Session: Sendable {
    let client: HTTP2Client
    let config: ClientConfig

    private init(client: HTTP2Client, config: ClientConfig) {
        self.client = client
        self.config = config
    }

    static func connect(_ config: ClientConfig) async throws -> Session {
        let tls = TLSClientConfiguration(trustedCAPath: config.caFile, verifyPeer: !config.insecure)
        do {
            return Session(client: try await HTTP2Client.connect(to: config.server, tls: tls, timeout: .seconds(10)), config: config)
        } catch let error as HTTPClientError {
            throw CLIError("cannot reach the server at \(config.server): \(error)",
                           hint: "check the URL (http:// or https://, host and port) and that flotilla-server is running")
        }
    }

    func close() async { await client.close() }

    /// Sends one request; returns the JSON body of a 2xx (null for 204), throws CLIError otherwise.
    @discardableResult
    func call(_ method: String, _ path: String, _ body: JSON? = nil, headers: HTTPHeaders = [:],
              timeout: Duration = .seconds(60)) async throws -> JSON {
        var request = ClientRequest(method: method, path: path, headers: headers)
        request.headers.set("authorization", "Bearer \(config.token)")
        if let body {
            request.headers.set("content-type", "application/json")
            request.body = .bytes(Array(body.serialized.utf8))
        }
        return try await send(request, timeout: timeout)
    }

    /// `call` for one endpoint of the wire contract, its path parameters in order.
    @discardableResult
    func call(_ endpoint: Endpoint, _ parameters: String..., query: [(String, String?)] = [], body: JSON? = nil,
              headers: HTTPHeaders = [:], timeout: Duration = .seconds(60)) async throws -> JSON {
        try await call(endpoint.method, endpoint.path(parameters, query: query), body, headers: headers, timeout: timeout)
    }

    func send(_ request: ClientRequest, timeout: Duration = .seconds(60)) async throws -> JSON {
        var request = request
        if request.headers["authorization"] == nil { request.headers.set("authorization", "Bearer \(config.token)") }
        let response: ClientResponse
        do {
            response = try await client.send(request, timeout: timeout)
        } catch let error as HTTPClientError {
            throw CLIError("\(request.method) \(request.path) failed: \(error)", hint: "is the server at \(config.server) still running?")
        }
        return try Self.interpret(response, method: request.method, path: request.path)
    }

    /// A response as JSON, or the CLIError that explains it (pure: tested without a server).
    static func interpret(_ response: ClientResponse, method: String, path: String) throws -> JSON {
        let json = response.body.isEmpty ? JSON.null : ((try? JSON.parse(response.body)) ?? .string(response.bodyText))
        if (200..<300).contains(response.status) { return json }
        let error = json["error"]
        let message = error?["message"]?.stringValue ?? (response.bodyText.isEmpty ? "HTTP \(response.status)" : response.bodyText)
        switch response.status {
        case 401:
            throw CLIError("the server refused the token: \(message)",
                           hint: "check --token / FLOTILLA_TOKEN, or run `flotilla login` with a valid token", exitCode: ExitStatus.auth)
        case 403:
            throw CLIError("not allowed: \(message)", hint: "ask an admin for a token with the needed role", exitCode: ExitStatus.auth)
        case 422:
            let details = (error?["details"]?.arrayValue ?? []).map { item in
                "  \(item["field"]?.stringValue ?? "?"): \(item["message"]?.stringValue ?? "")"
            }
            let text = details.isEmpty ? message : "the server found \(details.count) problem\(details.count == 1 ? "" : "s"):\n" + details.joined(separator: "\n")
            throw CLIError(text)
        case 503:
            throw CLIError(message, hint: "the server's database is unavailable; retry in \(response.headers["retry-after"] ?? "a few") seconds")
        default:
            throw CLIError("\(message) (HTTP \(response.status) for \(method) \(path))")
        }
    }
}

extension JSON {
    /// A member of an object (nil for anything else).
    subscript(key: String) -> JSON? { objectValue?[key] }
}

/// Percent-encodes a query value or path segment (names may hold spaces or '&').
func encoded(_ text: String) -> String {
    let allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
}

/// `path?k=v&…` from the pairs whose value is set (`&…` when `path` has a query already).
func query(_ path: String, _ pairs: [(String, String?)]) -> String {
    let parts = pairs.compactMap { key, value in value.map { "\(key)=\(encoded($0))" } }
    return parts.isEmpty ? path : path + (path.contains("?") ? "&" : "?") + parts.joined(separator: "&")
}
