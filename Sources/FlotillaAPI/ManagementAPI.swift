// The management API (`/api/v1/…`, openapi/management.yaml): what pipelines, operators and
// the CLI call with an API token. Every route declares the role it needs (`route(…, role:)`)
// and runs in the request pipeline (RequestPipeline.swift); mutations are audited.
//
// Its routes live beside the use cases they call: tokens (Tokens.swift), devices
// (Devices.swift, DeviceAccess.swift), enrollment tokens (EnrollmentTokens.swift), groups,
// flows, deployments (Deployments.swift; the use cases in DeploymentCreation.swift and
// ExecutionEngine+Sets.swift), artifacts, activity and the audit log.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire
import Synchronization

public struct ManagementAPI: APIAudience {
    let context: APIContext

    public init(context: APIContext) { self.context = context }

    public func register(on router: inout Router) {
        registerTokenRoutes(on: &router)
        registerDeviceRoutes(on: &router)
        registerDeviceAccessRoutes(on: &router)
        registerEnrollmentTokenRoutes(on: &router)
        registerGroupRoutes(on: &router)
        registerFlowRoutes(on: &router)
        registerDeploymentRoutes(on: &router)
        registerArtifactRoutes(on: &router)
        registerActivityRoutes(on: &router)
        registerAuditRoutes(on: &router)
    }

    typealias Handler = @Sendable (HTTPRequest, Caller) async throws -> HTTPResponse

    /// Registers a management `handler` behind token authentication and a role check.
    /// With `streamingLimit`, the body is not buffered: it streams in through `request.bodyStream`.
    /// With `fromMemory`, a request whose token and answer are both in memory is answered on
    /// the event loop (see answerFromMemory); `handler` must give the same answer.
    func route(_ router: inout Router, _ endpoint: Endpoint, role: Role, streamingLimit: Int? = nil,
               fromMemory: (@Sendable (HTTPRequest, Caller) -> HTTPResponse?)? = nil, _ handler: @escaping Handler) {
        context.routeRoles.add(endpoint.method, endpoint.pattern, role)
        let attempt = fromMemory.map { answer -> ImmediateAttempt in { [self] request in answerFromMemory(request, endpoint, role: role, answer) } }
        // The role is checked after authentication, so a 403 is logged and audited under the
        // token that was refused (a 401 has no token to name).
        serve(&router, endpoint, streamingLimit: streamingLimit, fromMemory: attempt, authenticate: { [self] request in
            try await authenticate(request)
        }, logName: { $0.tokenID }, limit: limits.token, audited: true) { [deviceCache] request, caller in
            guard caller.role.allows(role) else {
                throw HTTPError(403, code: .forbidden, message: "this needs a token with the \(role.rawValue) role; yours is \(caller.role.rawValue)")
            }
            // A write may have changed devices: this replica forgets its cached ones before it
            // answers, so the caller reads its own write here (other replicas hear the NOTIFY).
            defer { if APIContext.isMutation(endpoint.method) { deviceCache.invalidateAll() } }
            return try await handler(request, caller)
        }
    }
}

final class RouteRoles: Sendable {
    private let entries = Mutex<[(method: String, pattern: String, role: Role)]>([])
    func add(_ method: String, _ pattern: String, _ role: Role) { entries.withLock { $0.append((method, pattern, role)) } }
    var all: [(method: String, pattern: String, role: Role)] { entries.withLock { $0 } }
}

/// Maps the constraint a unique violation names to a 409 message, or rethrows.
func conflictOnDuplicate<T>(_ message: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as PGError where error.isUniqueViolation {
        throw APIError.conflict(message())
    }
}
