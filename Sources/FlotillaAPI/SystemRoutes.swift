// Routes that say whether the server is alive and what it is. More audiences (the
// device API, the management API) will register their routes next to these.

@_exported import FlotillaJSON  // JSON is part of the API's vocabulary (handlers and tests use it)
import FlotillaCore
import FlotillaTransport

public enum FlotillaAPI {
    /// The router for everything the server serves: the probes, plus the management API
    /// when a database is attached.
    public static func makeRouter(management: ManagementAPI? = nil) -> Router {
        var router = Router()
        registerSystemRoutes(on: &router)
        management?.register(on: &router)
        if let management {
            router.unmatched = { request, response in management.logUnmatched(request, response) }
        }
        return router
    }

    static func registerSystemRoutes(on router: inout Router) {
        // A probe answered on the event loop (an immediate route): load balancers poll it hard,
        // and it must say "alive" even when the handler pool is saturated.
        let health = HTTPResponse.json(200, #"{"status":"ok"}"#)
        router.immediate("GET", "/healthz") { _ in health }

        // An ordinary async route, like every API route to come.
        let version = HTTPResponse.json(200, #"{"name":"flotilla","version":"\#(FlotillaVersion.current)","api":"\#(FlotillaVersion.apiVersion)"}"#)
        router.get("/version") { _ in version }
    }
}
