// Routes that say whether the server is alive and what it is. More audiences (the
// device API, the management API) will register their routes next to these.

import FlotillaCore
import FlotillaTransport

public enum FlotillaAPI {
    /// The router for everything the server serves.
    public static func makeRouter() -> Router {
        var router = Router()
        registerSystemRoutes(on: &router)
        return router
    }

    static func registerSystemRoutes(on router: inout Router) {
        // Built once: these answer load balancers and benchmarks, so they stay allocation-light.
        let health = HTTPResponse.json(200, #"{"status":"ok"}"#)
        router.get("/healthz") { _ in health }

        let version = HTTPResponse.json(200, #"{"name":"flotilla","version":"\#(FlotillaVersion.current)","api":"\#(FlotillaVersion.apiVersion)"}"#)
        router.get("/version") { _ in version }
    }
}
