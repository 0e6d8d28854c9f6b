// The router for everything the server serves: the probes and /version here, then each
// audience of the API over one shared context (APIContext): DeviceAPI, ManagementAPI
// (and the hawkBit DDI routes, when they come, as a third).

@_exported import FlotillaJSON  // JSON is part of the API's vocabulary (handlers and tests use it)
import FlotillaCore
import FlotillaTransport
import FlotillaWire

public enum FlotillaAPI {
    /// The router for everything the server serves: the probes, plus the API's audiences
    /// when a database is attached.
    public static func makeRouter(context: APIContext? = nil) -> Router {
        var router = Router()
        registerSystemRoutes(on: &router)
        if let context {
            // Readiness, beside liveness: false while the database cannot be reached, so a load
            // balancer sends traffic elsewhere (/healthz stays "the process is alive").
            router.get("/readyz") { _ in
                do {
                    _ = try await context.db.query("SELECT 1")
                    return .json(200, #"{"status":"ready"}"#)
                } catch {
                    return .error(503, code: .databaseUnavailable, message: "the database is not reachable right now",
                                  headers: ["retry-after": "1"])
                }
            }
            DeviceAPI(context: context).register(on: &router)
            ManagementAPI(context: context).register(on: &router)
            router.unmatched = { request, response in context.observeUnmatched(request, response) }
        }
        return router
    }

    static func registerSystemRoutes(on router: inout Router) {
        // A probe answered on the event loop (an immediate route): load balancers poll it hard,
        // and it must say "alive" even when the handler pool is saturated.
        let health = HTTPResponse.json(200, #"{"status":"ok"}"#)
        router.immediate("GET", "/healthz") { _ in health }

        // An ordinary async route: a fixed answer, off the event loop like the API's routes.
        let version = HTTPResponse.json(200, #"{"name":"flotilla","version":"\#(FlotillaVersion.current)","api":"\#(FlotillaVersion.apiVersion)"}"#)
        router.get("/version") { _ in version }
    }
}
