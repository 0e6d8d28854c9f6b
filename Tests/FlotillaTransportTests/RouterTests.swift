import FlotillaJSON
import XCTest
@testable import FlotillaTransport

final class RouterTests: XCTestCase {
    struct Boom: Error {}

    private func router() -> Router {
        var router = Router()
        router.get("/devices/{id}") { .json(200, #"{"param":"\#($0.pathParameters["id"]!)"}"#) }
        router.get("/devices/search") { _ in .json(200, #"{"literal":true}"#) }
        router.delete("/devices/{id}") { _ in HTTPResponse(status: 204) }
        router.get("/groups/{group}/devices/{id}") { .json(200, #"{"g":"\#($0.pathParameters["group"]!)","d":"\#($0.pathParameters["id"]!)"}"#) }
        router.get("/teapot") { _ in throw HTTPError(418, code: "teapot", message: "short and stout") }
        router.get("/boom") { _ in throw Boom() }
        return router
    }

    private func respond(_ method: String, _ target: String) async -> HTTPResponse {
        let (path, query) = HTTPRequest.splitTarget(target)
        return await router().respond(to: HTTPRequest(method: method, path: path, query: query))
    }

    func testParametersLiteralsAndDecoding() async {
        let cases: [(String, String, Int, String?)] = [
            ("GET", "/devices/cam%2F7", 200, #"{"param":"cam/7"}"#),
            ("GET", "/devices/search", 200, #"{"literal":true}"#),  // a literal beats a parameter
            ("GET", "/groups/site-berlin/devices/d1?x=1", 200, #"{"g":"site-berlin","d":"d1"}"#),
            ("GET", "/devices/a/", 200, nil),  // a trailing slash is the same path
            ("HEAD", "/devices/a", 200, nil),  // HEAD is served by GET
            ("GET", "/devices/%zz", 404, nil),  // a malformed escape matches nothing
        ]
        for (method, target, status, body) in cases {
            let response = await respond(method, target)
            XCTAssertEqual(response.status, status, target)
            if let body { XCTAssertEqual(response.bodyString, body, target) }
        }
    }

    /// The trie must backtrack: a literal branch that dead-ends falls back to the parameter
    /// branch, and of two routes with as many literals the first registered wins.
    func testBacktrackingAndTies() async {
        var router = Router()
        router.get("/a/b/x") { _ in .json(200, #""abx""#) }
        router.get("/a/{p}/c") { _ in .json(200, #""apc""#) }
        router.get("/a/b/{q}") { _ in .json(200, #""abq""#) }
        router.post("/a/{p}/{q}") { _ in .json(200, #""post""#) }
        for (method, path, status, body) in [("GET", "/a/b/x", 200, #""abx""#), ("GET", "/a/z/c", 200, #""apc""#),
                                             ("GET", "/a/b/c", 200, #""apc""#), ("GET", "/a/b/d", 200, #""abq""#),
                                             ("POST", "/a/b/x", 200, #""post""#), ("PUT", "/a/z/z", 405, nil), ("GET", "/a/b", 404, nil)] {
            let response = await router.respond(to: HTTPRequest(method: method, path: path))
            XCTAssertEqual(response.status, status, "\(method) \(path)")
            if let body { XCTAssertEqual(response.bodyString, body, "\(method) \(path)") }
        }
    }

    /// A memoized route answers from `attempt` on the spot when it can, else runs its handler.
    func testMemoizedRoutesAnswerAtOnceOrFallBack() async {
        var router = Router()
        router.memoized("GET", "/things/{id}", attempt: { $0.pathParameters["id"] == "hot" ? .json(200, #""memory""#) : nil }) { _ in
            .json(200, #""handler""#)
        }
        guard case .response(let answer) = router.route(HTTPRequest(method: "GET", path: "/things/hot")) else {
            return XCTFail("a hit is answered without a handler")
        }
        XCTAssertEqual(answer.bodyString, #""memory""#)
        guard case .handler = router.route(HTTPRequest(method: "GET", path: "/things/cold")) else {
            return XCTFail("a miss runs the handler")
        }
        let cold = await router.respond(to: HTTPRequest(method: "GET", path: "/things/cold"))
        XCTAssertEqual(cold.bodyString, #""handler""#)
    }

    func testNotFoundAndMethodNotAllowedAreJSON() async {
        let missing = await respond("GET", "/nope")
        XCTAssertEqual(missing.status, 404)
        XCTAssertEqual(missing.bodyString, #"{"error":{"code":"not_found","message":"no route for /nope"}}"#)
        XCTAssertEqual(missing.headers["content-type"], "application/json")
        let wrongMethod = await respond("POST", "/devices/7")
        XCTAssertEqual(wrongMethod.status, 405)
        XCTAssertEqual(wrongMethod.headers["allow"], "DELETE, GET, HEAD")
        XCTAssertTrue(wrongMethod.bodyString.contains(#""code":"method_not_allowed""#))
    }

    func testHandlerErrorsBecomeJSONWithoutLeakingInternals() async {
        let teapot = await respond("GET", "/teapot")
        XCTAssertEqual(teapot.status, 418)
        XCTAssertEqual(teapot.bodyString, #"{"error":{"code":"teapot","message":"short and stout"}}"#)
        let boom = await respond("GET", "/boom")
        XCTAssertEqual(boom.status, 500)
        XCTAssertFalse(boom.bodyString.contains("Boom"))
    }

    func testQueryParametersAndJSONEscaping() {
        let request = HTTPRequest(method: "GET", path: "/", query: "a=1&b=x+y%21&a=2&flag&e=%zz")
        XCTAssertEqual(request.queryParameters, ["a": "1", "b": "x y!", "flag": "", "e": "%zz"])
        XCTAssertEqual(jsonEscape("a\"b\\c\n\u{1}"), #"a\"b\\c\n\u0001"#)
    }
}

extension HTTPResponse {
    var bodyString: String { String(decoding: body, as: UTF8.self) }
}
