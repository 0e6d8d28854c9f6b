// (method, path pattern with `{params}`) → handler.
//
// Handlers are async and run on Swift's cooperative pool, never on an I/O queue.
// Two exceptions answer on the event loop itself, with no thread hop (what nghttpd
// does for a static file), and both must be synchronous and constant-time:
// - an *immediate* route (health probes) always answers there;
// - a *memoized* route first asks `attempt` for an answer already in memory (a cache
//   hit: a dictionary lookup under a lock held for nanoseconds); on nil, its async
//   handler runs as usual. The thread hop there and back costs more than the lookup.
// Anything that touches a database, a disk, or a lock that can be held for long is an
// ordinary async route.
//
// Matching walks a trie of path segments (a literal child by hash lookup, then the
// parameter child), so a request costs one lookup per segment, not a comparison with
// every route: perf showed the earlier linear scan at a fifth of a cached GET's CPU.
// Every route the path matches is collected; a literal segment beats a parameter when
// both match (the route with more literals wins), so `/devices/search` wins over `/devices/{id}`.

public typealias HTTPHandler = @Sendable (HTTPRequest) async throws -> HTTPResponse
public typealias ImmediateHandler = @Sendable (HTTPRequest) -> HTTPResponse

public enum RouteHandler: Sendable {
    case async(HTTPHandler)
    case immediate(ImmediateHandler)
    /// Runs as soon as the request head is in; the body arrives through `request.bodyStream`,
    /// up to `limit` bytes (instead of the server-wide buffered-body limit).
    case streaming(HTTPHandler, limit: Int)
    /// `attempt` runs on the event loop; nil means "not in memory": run `handler`.
    case memoized(attempt: ImmediateAttempt, handler: HTTPHandler)
}

public typealias ImmediateAttempt = @Sendable (HTTPRequest) -> HTTPResponse?

public struct Router: Sendable {
    enum Segment: Sendable, Equatable {
        case literal(String)
        case parameter(String)
    }

    struct Route: Sendable {
        let method: String
        let pattern: String
        let segments: [Segment]
        let handler: RouteHandler
        let literalCount: Int

        init(method: String, pattern: String, segments: [Segment], handler: RouteHandler) {
            self.method = method
            self.pattern = pattern
            self.segments = segments
            self.handler = handler
            literalCount = segments.filter { if case .literal = $0 { true } else { false } }.count
        }
    }

    public enum Match: Sendable {
        case found(RouteHandler, parameters: [String: String])
        case methodNotAllowed(allowed: [String])
        case notFound
    }

    /// A trie node: children by literal segment, the `{parameter}` child, and the routes
    /// (indices into `routes`) whose patterns end here.
    struct Node: Sendable {
        var literals: [Substring: Int] = [:]
        var parameter: Int?
        var routes: [Int] = []
    }

    private var routes: [Route] = []
    /// `nodes[0]` is the root.
    private var nodes: [Node] = [Node()]
    /// Routes without parameters, by exact path: most requests are answered by one hash lookup.
    private var literalRoutes: [String: [String: RouteHandler]] = [:]

    /// Sees every 404 and 405 the router answers by itself (on the event loop) and may amend
    /// it: the API adds a request id and logs the line every request gets.
    public var unmatched: (@Sendable (HTTPRequest, HTTPResponse) -> HTTPResponse)?

    public init() {}

    /// Registers a route. Patterns are absolute paths whose `{name}` segments capture one segment each.
    public mutating func add(_ method: String, _ pattern: String, _ handler: @escaping HTTPHandler) {
        add(method, pattern, handler: .async(handler))
    }

    /// A synchronous, constant-time route answered on the event loop (probes only; see the top of this file).
    public mutating func immediate(_ method: String, _ pattern: String, _ handler: @escaping ImmediateHandler) {
        add(method, pattern, handler: .immediate(handler))
    }

    /// A route answered on the event loop when `attempt` can (see the top of this file), else by `handler`.
    public mutating func memoized(_ method: String, _ pattern: String, attempt: @escaping ImmediateAttempt,
                                  _ handler: @escaping HTTPHandler) {
        add(method, pattern, handler: .memoized(attempt: attempt, handler: handler))
    }

    /// A route whose body is streamed to the handler rather than buffered (uploads).
    public mutating func streaming(_ method: String, _ pattern: String, limit: Int, _ handler: @escaping HTTPHandler) {
        add(method, pattern, handler: .streaming(handler, limit: limit))
    }

    private mutating func add(_ method: String, _ pattern: String, handler: RouteHandler) {
        let segments: [Segment] = Router.split(pattern).map { part in
            part.hasPrefix("{") && part.hasSuffix("}") ? .parameter(String(part.dropFirst().dropLast())) : .literal(String(part))
        }
        precondition(!routes.contains { $0.method == method && $0.segments == segments },
                     "duplicate route \(method) \(pattern)")
        routes.append(Route(method: method, pattern: pattern, segments: segments, handler: handler))
        var node = 0
        for segment in segments {
            let existing: Int?
            switch segment {
            case .literal(let text): existing = nodes[node].literals[Substring(text)]
            case .parameter: existing = nodes[node].parameter
            }
            let next = existing ?? nodes.count
            if existing == nil {
                nodes.append(Node())
                switch segment {
                case .literal(let text): nodes[node].literals[Substring(text)] = next
                case .parameter: nodes[node].parameter = next
                }
            }
            node = next
        }
        nodes[node].routes.append(routes.count - 1)
        if !segments.contains(where: { if case .parameter = $0 { true } else { false } }) {
            let path = "/" + segments.map { if case .literal(let s) = $0 { s } else { "" } }.joined(separator: "/")
            literalRoutes[path, default: [:]][method] = handler
        }
    }

    public mutating func get(_ pattern: String, _ handler: @escaping HTTPHandler) { add("GET", pattern, handler) }
    public mutating func post(_ pattern: String, _ handler: @escaping HTTPHandler) { add("POST", pattern, handler) }
    public mutating func put(_ pattern: String, _ handler: @escaping HTTPHandler) { add("PUT", pattern, handler) }
    public mutating func patch(_ pattern: String, _ handler: @escaping HTTPHandler) { add("PATCH", pattern, handler) }
    public mutating func delete(_ pattern: String, _ handler: @escaping HTTPHandler) { add("DELETE", pattern, handler) }

    /// Every (method, pattern) known, for the OpenAPI consistency test.
    public var routeTable: [(method: String, pattern: String)] { routes.map { ($0.method, $0.pattern) } }

    public func match(method: String, path: String) -> Match {
        // Fast path: an exact literal route for this method. (405 and HEAD-as-GET take the slow path.)
        if let byMethod = literalRoutes[path], let handler = byMethod[method] {
            return .found(handler, parameters: [:])
        }
        let parts = Router.split(path)
        // Find every route the path matches, then decode parameters only for the winner.
        var matched: [Int] = []
        collect(node: 0, parts[...], into: &matched)
        matched.sort()  // of routes with as many literals, the first registered wins
        var best: Route?
        var allowed: [String] = []
        for index in matched {
            let route = routes[index]
            // HEAD is answered by the GET handler; the transport drops the body.
            if route.method == method || (method == "HEAD" && route.method == "GET") {
                if best == nil || route.literalCount > best!.literalCount { best = route }
            } else if !allowed.contains(route.method) {
                allowed.append(route.method)
            }
        }
        if let best {
            guard let parameters = Router.bind(best.segments, to: parts) else { return .notFound }
            return .found(best.handler, parameters: parameters)
        }
        if allowed.isEmpty { return .notFound }
        if allowed.contains("GET") { allowed.append("HEAD") }
        return .methodNotAllowed(allowed: allowed.sorted())
    }

    /// Every route under `node` that the remaining `parts` match, literal children first.
    private func collect(node: Int, _ parts: ArraySlice<Substring>, into matched: inout [Int]) {
        guard let part = parts.first else { return matched.append(contentsOf: nodes[node].routes) }
        if let next = nodes[node].literals[part] { collect(node: next, parts.dropFirst(), into: &matched) }
        if let next = nodes[node].parameter { collect(node: next, parts.dropFirst(), into: &matched) }
    }

    /// Splits on "/" byte by byte: String.split walks grapheme clusters, which made it the
    /// costliest step of routing (perf showed ~6% of a database-backed request).
    private static func split(_ path: String) -> [Substring] {
        path.utf8.split(separator: UInt8(ascii: "/")).map { Substring($0) }
    }

    private static func bind(_ segments: [Segment], to parts: [Substring]) -> [String: String]? {
        guard segments.count == parts.count else { return nil }
        var parameters: [String: String] = [:]
        for (segment, part) in zip(segments, parts) {
            switch segment {
            case .literal(let text):
                guard part == text else { return nil }
            case .parameter(let name):
                guard let value = percentDecode(String(part)), !value.isEmpty else { return nil }
                parameters[name] = value
            }
        }
        return parameters
    }

    public enum Routed: Sendable {
        /// Answered already: an immediate route, 404 or 405.
        case response(HTTPResponse)
        /// An async handler to run (off the event loop), with the request's path parameters filled in.
        case handler(HTTPHandler, HTTPRequest)
        /// A streaming handler: start it at once and feed it the body as it arrives.
        case streaming(HTTPHandler, HTTPRequest, limit: Int)
    }

    /// Matches `request` without running anything async: cheap enough for the event loop.
    public func route(_ request: HTTPRequest) -> Routed {
        // A NUL can only arrive percent-encoded (raw control bytes are refused by both parsers);
        // decoded, it would end a C string in the database and name another object.
        if Self.containsEncodedNUL(request.path) || request.query.map(Self.containsEncodedNUL) == true {
            let response = HTTPResponse.error(400, code: "nul_character",
                                              message: "the request target contains %00 (NUL), which no name or parameter may hold")
            return .response(unmatched?(request, response) ?? response)
        }
        switch match(method: request.method, path: request.path) {
        case .found(let handler, let parameters):
            var request = request
            request.pathParameters = parameters
            switch handler {
            case .immediate(let body): return .response(body(request))
            case .async(let body): return .handler(body, request)
            case .streaming(let body, let limit): return .streaming(body, request, limit: limit)
            case .memoized(let attempt, let body):
                if let answer = attempt(request) { return .response(answer) }
                return .handler(body, request)
            }
        case .methodNotAllowed(let allowed):
            let response = HTTPResponse.error(405, code: "method_not_allowed",
                                              message: "\(request.method) is not allowed on \(request.path)",
                                              headers: ["allow": allowed.joined(separator: ", ")])
            return .response(unmatched?(request, response) ?? response)
        case .notFound:
            let response = HTTPResponse.error(404, code: "not_found", message: "no route for \(request.path)")
            return .response(unmatched?(request, response) ?? response)
        }
    }

    static func containsEncodedNUL(_ text: String) -> Bool {
        let zero = UInt8(ascii: "0")
        var previous: (UInt8, UInt8) = (0, 0)
        for byte in text.utf8 {
            if previous == (UInt8(ascii: "%"), zero) && byte == zero { return true }
            previous = (previous.1, byte)
        }
        return false
    }

    /// Runs an async handler; never throws: errors become JSON error responses.
    public static func run(_ handler: HTTPHandler, _ request: HTTPRequest) async -> HTTPResponse {
        do {
            return try await handler(request)
        } catch let error as HTTPError {
            return error.response
        } catch {
            // Never leak internals (SQL text, stack traces) to the client.
            return .error(500, code: "internal", message: "internal server error")
        }
    }

    /// Routes `request` and runs its handler, whatever kind it is.
    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        switch route(request) {
        case .response(let response): return response
        case .handler(let handler, let request): return await Router.run(handler, request)
        case .streaming(let handler, var request, let limit):
            if request.bodyStream == nil { request.bodyStream = .complete(request.body, limit: limit) }
            request.body = []
            return await Router.run(handler, request)
        }
    }
}
