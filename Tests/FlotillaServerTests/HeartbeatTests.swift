// What a heartbeat changes of a device is a change like any other: new attributes move the
// device's version, so its ETag (and an If-Match on it) tells the body changed; the same
// attributes again change nothing.

import FlotillaAPI
import XCTest

final class HeartbeatTests: ServerTestCase {
    func testNewAttributesMoveTheDevicesVersionAndETag() async throws {
        let device = try await ScriptedDevice(server: server, admin: admin, name: "cam-1")
        let before = try await admin.call("GET", "/api/v1/devices/cam-1")
        XCTAssertEqual(before.headers["etag"], "\"1\"")

        expect(try await device.client.call("POST", "/api/v1/agent/heartbeat", #"{"attributes":{"firmware":"7.2"}}"#), 200)
        let after = try await admin.call("GET", "/api/v1/devices/cam-1")
        XCTAssertEqual(after.json["attributes"]?["firmware"], .string("7.2"))
        XCTAssertEqual(after.headers["etag"], "\"2\"", "the body changed, so the version did")
        // An operator's write conditional on the old version is refused: it did not see 7.2.
        expect(try await admin.call("PATCH", "/api/v1/devices/cam-1", #"{"labels":{"site":"berlin"}}"#, headers: ["if-match": "\"1\""]), 412)

        expect(try await device.client.call("POST", "/api/v1/agent/heartbeat", #"{"attributes":{"firmware":"7.2"}}"#), 200)
        let again = try await admin.call("GET", "/api/v1/devices/cam-1")
        XCTAssertEqual(again.headers["etag"], "\"2\"", "the same attributes again change nothing")
        await device.client.close()
    }
}
