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
