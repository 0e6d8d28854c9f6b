// Answers given on the event loop, without a thread hop, when everything a request needs is
// already in memory: its API token in the token cache and its answer in a cache (a device in
// DeviceCache). Perf showed the hop to the cooperative pool and back costing more than the
// rest of a cached GET. See Router's `memoized` routes.
//
// It is the same request as on the async path, only shorter: the same token check (cached
// tokens only; expiry included), role check, rate limit, request id and log line. Anything
// else, including every refusal but a 429, goes the async way, which answers it in full:
// the 401s and the 403s are written in one place.

import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension ManagementAPI {
    /// The caller of `request` if its token is in the cache and has not expired; nil otherwise
    /// (unknown, not cached, malformed: the async path will tell which).
    func cachedCaller(_ request: HTTPRequest) -> Caller? {
        (try? Self.bearerHash(request, prefix: "", what: "an API token", example: "<token>")).flatMap(cachedCaller(hash:))
    }

    /// The cached caller for this token hash, unless it has expired.
    func cachedCaller(hash: [UInt8]) -> Caller? {
        guard let caller = tokens.lookup(hash) else { return nil }
        if let expires = caller.expiresAt, expires <= Timestamp(engine.clock.now()) { return nil }
        return caller
    }

    /// `answer`'s response for `request` if the token and the answer are both in memory.
    func answerFromMemory(_ request: HTTPRequest, _ endpoint: Endpoint, role: Role,
                          _ answer: (HTTPRequest, Caller) -> HTTPResponse?) -> HTTPResponse? {
        let started = monotonicNanos()
        // An address refused too often is answered 429 by the async path, whatever it sends.
        guard !refusals.isExhausted(request.remoteAddress ?? "-", limits.refusedAuthentication, at: RateLimiter.now()),
              let caller = cachedCaller(request), caller.role.allows(role),
              var response = answer(request, caller) else { return nil }
        if case .limited(let wait) = limiter.request(caller.tokenID, limits.token, at: RateLimiter.now()) {
            response = APIContext.rateLimited(wait).response
        }
        let requestID = APIContext.requestID(from: request)
        response.headers.set("x-request-id", requestID)
        context.observe(RequestRecord(requestID: requestID, method: request.method, path: request.path, route: endpoint.pattern,
                                           caller: caller.tokenID, status: response.status, nanos: monotonicNanos() - started))
        return response
    }
}
