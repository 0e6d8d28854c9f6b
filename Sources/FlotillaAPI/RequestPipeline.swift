// The one request pipeline. Every API request, whichever audience it belongs to and
// whether it runs as an async handler, is answered from memory on the event loop, or is
// refused by the router (404, 405, a NUL), ends as one `RequestRecord` handed to
// `observe`: the one place that writes the request's log line (and, with metrics, its
// counters). The steps of an async request, in `serve`:
//   1. a request id (the client's `X-Request-ID` when it is sane),
//   2. authentication (401; refusals are rate-limited per client address),
//   3. the caller's rate limit (429 + Retry-After),
//   4. the handler; database trouble becomes 503 + Retry-After, a value PostgreSQL cannot
//      store 422, anything else a 500 whose body names only the request id,
//   5. for audited routes, a mutation's row in the audit log, whatever the status,
//   6. the record.
// Handlers see an authenticated caller and know nothing about sockets.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire
import Synchronization

/// One request as the pipeline saw it. The route is the pattern, never the raw path (a
/// metric label must not carry ids); the path is in the log line, as operators search it.
struct RequestRecord: Sendable {
    var requestID: String
    var method: String
    var path: String
    var route: String
    var caller: String?
    var status: Int
    var nanos: UInt64
}

extension APIContext {
    /// The end of every request: its record goes to the log (RequestLog.swift), and with
    /// metrics to their counters. Cheap enough for the event loop: an append under a lock.
    func observe(_ record: RequestRecord) {
        RequestLog.shared.append(record, to: logger)
    }

    /// A 404, 405 or 400 the router gave by itself still gets a request id and its record.
    /// Called on the event loop.
    func observeUnmatched(_ request: HTTPRequest, _ response: HTTPResponse) -> HTTPResponse {
        let requestID = Self.requestID(from: request)
        var response = response
        response.headers.set("x-request-id", requestID)
        observe(RequestRecord(requestID: requestID, method: request.method, path: request.path, route: "-",
                                   caller: nil, status: response.status, nanos: 0))
        return response
    }

    /// The client's id if it is short and plain (safe to log and echo), else a fresh one.
    static func requestID(from request: HTTPRequest) -> String {
        if let given = request.headers["x-request-id"], (1...64).contains(given.utf8.count),
           given.utf8.allSatisfy({ isIDByte($0) }) {
            return given
        }
        // Unique, not secret: a per-process random prefix and a counter (RAND_bytes per
        // request cost ~5% of a database-backed request).
        let count = requestCounter.add(1, ordering: .relaxed).newValue
        return requestIDPrefix + String(UInt32(truncatingIfNeeded: count), radix: 16)
    }

    private static let requestIDPrefix = hexString(Secrets.randomBytes(4)) + "-"
    private static let requestCounter = Atomic<UInt64>(0)

    static func isIDByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            true
        default:
            false
        }
    }

    static func rateLimited(_ wait: Int) -> HTTPError {
        HTTPError(429, code: .rateLimited, message: "too many requests for this token; retry in \(wait) s",
                  headers: ["retry-after": String(wait)])
    }

    /// Methods that change something; everything else is a read and is not audited.
    static func isMutation(_ method: String) -> Bool { method != "GET" && method != "HEAD" }
}

extension APIAudience {
    /// Registers `handler` on `endpoint` inside the pipeline: authentication, the caller's
    /// rate limit, error mapping, the audit log (when `audited`) and the record. `limitKey`
    /// gives the route a bucket of its own beside the caller's (a device's downloads).
    func serve<Who: Sendable>(_ router: inout Router, _ endpoint: Endpoint, streamingLimit: Int? = nil,
                              fromMemory: ImmediateAttempt? = nil,
                              authenticate: @escaping @Sendable (HTTPRequest) async throws -> Who,
                              logName: @escaping @Sendable (Who) -> String, limit: RateLimit, limitKey: String = "",
                              audited: Bool = false,
                              _ handler: @escaping @Sendable (HTTPRequest, Who) async throws -> HTTPResponse) {
        let context = context
        let wrapped: HTTPHandler = { request in
            let started = monotonicNanos()
            let requestID = APIContext.requestID(from: request)
            var caller: Who?
            var response: HTTPResponse
            do {
                let authenticated = try await context.authenticateLimited(request, authenticate)
                caller = authenticated
                if case .limited(let wait) = context.limiter.request(logName(authenticated) + limitKey, limit, at: RateLimiter.now()) {
                    throw APIContext.rateLimited(wait)
                }
                response = try await handler(request, authenticated)
            } catch {
                response = context.response(for: error, requestID: requestID)
            }
            response.headers.set("x-request-id", requestID)
            if audited && APIContext.isMutation(request.method) {
                await context.appendAudit(request, tokenID: caller.map(logName), status: response.status, requestID: requestID)
            }
            context.observe(RequestRecord(requestID: requestID, method: request.method, path: request.path, route: endpoint.pattern,
                                          caller: caller.map(logName), status: response.status, nanos: monotonicNanos() - started))
            return response
        }
        if let streamingLimit {
            router.streaming(endpoint.method, endpoint.pattern, limit: streamingLimit, wrapped)
        } else if let fromMemory {
            router.memoized(endpoint.method, endpoint.pattern, attempt: fromMemory, wrapped)
        } else {
            router.add(endpoint.method, endpoint.pattern, wrapped)
        }
    }
}

extension APIContext {
    /// What a handler's error means for the client.
    func response(for error: any Error, requestID: String) -> HTTPResponse {
        switch error {
        case let error as HTTPError:
            return error.response
        case let error as PGError where error.isUnavailable || error.isTimeout:
            logger.warning("database unavailable", metadata: ["request_id": .string(requestID), "error": .string(error.description)])
            return .error(503, code: .databaseUnavailable, message: "the database is not reachable right now; retry shortly",
                          headers: ["retry-after": "1"])
        case let error as PGError where error.isDataException:
            // A safety net: input checks should have refused the value before any SQL ran.
            logger.warning("database refused a value", metadata: ["request_id": .string(requestID), "error": .string(error.description)])
            return .error(422, code: .invalidValue, message: "a value in this request cannot be stored (\(error.sqlState ?? "22000"))")
        default:
            // Never leak SQL or internals to the client; the log has them.
            logger.error("request failed", metadata: ["request_id": .string(requestID), "error": .string(String(describing: error))])
            return .error(500, code: .internal, message: "internal server error (request id \(requestID))")
        }
    }

    /// Authenticates, counting refusals (401) per client address: an address that keeps
    /// presenting bad tokens is answered 429 before any lookup (each costs a query), until
    /// its bucket refills — guessing is slowed, and so is a flood aimed at the database.
    func authenticateLimited<Who>(_ request: HTTPRequest, _ authenticate: (HTTPRequest) async throws -> Who) async throws -> Who {
        let key = request.remoteAddress ?? "-"
        if refusals.isExhausted(key, limits.refusedAuthentication, at: RateLimiter.now()) {
            throw HTTPError(429, code: .rateLimited, message: "too many refused tokens from this address; retry in a few seconds",
                            headers: ["retry-after": "5"])
        }
        do {
            return try await authenticate(request)
        } catch let error as HTTPError where error.status == 401 {
            _ = refusals.request(key, limits.refusedAuthentication, at: RateLimiter.now())
            throw error
        }
    }
}
