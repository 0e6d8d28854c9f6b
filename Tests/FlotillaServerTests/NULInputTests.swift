// U+0000 never reaches PostgreSQL. libpq takes parameters as C strings, so a NUL would end
// one early: `victim%00x` would name the device `victim`, a flow named `config-file\u0000-test`
// would pass a `*-test` scope and deploy `config-file`. Every door refuses it before any
// lookup (path, query, JSON, device API), and SQL.refuseNUL is the net under the doors.

import FlotillaAPI
import FlotillaStore
import XCTest

final class NULInputTests: ServerTestCase {
    func testANULInThePathOrQueryNeverNamesAnotherObject() async throws {
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"g"}"#), 201)
        expect(try await admin.call("POST", "/api/v1/devices", #"{"name":"victim"}"#), 201)
        for wire in Wire.allCases {
            let api = APIClient(port: server.port, token: server.adminToken, wire: wire)
            for (method, path) in [("DELETE", "/api/v1/devices/victim%00x"), ("GET", "/api/v1/devices/victim%00"),
                                   ("GET", "/api/v1/groups/g%00x"), ("DELETE", "/api/v1/groups/g%00x"),
                                   ("GET", "/api/v1/flows/hardhat-model%00x"), ("GET", "/api/v1/devices?name_prefix=vic%00"),
                                   ("GET", "/api/v1/devices?label%00=x")] {
                let response = try await api.call(method, path)
                expect(response, 400, code: "nul_character")
                XCTAssertTrue(response.text.contains("%00"), response.text)
            }
            await api.close()
        }
        expect(try await admin.call("GET", "/api/v1/devices/victim"), 200)
        expect(try await admin.call("GET", "/api/v1/groups/g"), 200)
    }

    func testANULInJSONIsRefusedWhereverItStands() async throws {
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"g"}"#), 201)
        for body in [#"{"name":"a\u0000b"}"#, #"{"name":"ok","labels":{"site":"x\u0000"}}"#,
                     #"{"name":"ok","labels":{"si\u0000te":"x"}}"#, #"{"name":"ok","attributes":{"free":["\u0000"]}}"#] {
            let response = try await admin.call("POST", "/api/v1/devices", body)
            expect(response, 400, code: "nul_character")
        }
        expect(try await admin.call("POST", "/api/v1/tokens", #"{"name":"ci\u0000-x","role":"viewer"}"#), 400, code: "nul_character")
        expect(try await admin.call("POST", "/api/v1/enrollment-tokens", #"{"name":"day\u0000","group":"g"}"#), 400, code: "nul_character")
        // Nothing was stored half: the only device is none, the only token the admin's.
        let devices = try await admin.call("GET", "/api/v1/devices")
        XCTAssertEqual(devices.json["items"]?.arrayValue?.count, 0, devices.text)
        let tokens = try await admin.call("GET", "/api/v1/tokens")
        XCTAssertEqual(tokens.json["items"]?.arrayValue?.count, 1, tokens.text)

        // The device API: a heartbeat's boot id.
        let device = try await ScriptedDevice(server: server, admin: admin, name: "cam-1")
        expect(try await device.client.call("POST", "/api/v1/agent/heartbeat", #"{"booted":true,"boot_id":"b\u0000x"}"#), 400, code: "nul_character")
        await device.client.close()
    }

    func testAScopedDeployerCannotReachAnotherFlowThroughANUL() async throws {
        try await admin.prepareHardhatModel()
        let configVersion = try await admin.applyFlowFile("config-file.yaml")
        XCTAssertEqual(configVersion, 1)
        let created = try await admin.call("POST", "/api/v1/tokens", #"{"name":"ci","role":"deployer","flows":["*-test"],"groups":["site-*"]}"#)
        expect(created, 201)
        let pipeline = APIClient(port: server.port, token: try XCTUnwrap(created.json["secret"]?.stringValue), wire: .h1)
        let smuggled = #"{"flow":{"name":"config-file\u0000-test"},"target":{"groups":["site-berlin"]},"params":{}}"#
        expect(try await pipeline.call("POST", "/api/v1/deployments", smuggled), 400, code: "nul_character")
        let deployments = try await admin.call("GET", "/api/v1/deployments")
        XCTAssertEqual(deployments.json["items"]?.arrayValue?.count, 0, deployments.text)
        await pipeline.close()
    }

    /// The net under the doors: a statement with a NUL in a parameter is never sent, and it
    /// fails as a data exception (422 through the API), through the pool and on a connection.
    func testTheStoreRefusesAParameterHoldingNUL() async throws {
        let text = "victim\u{0}x"
        do {
            _ = try await server.pool.query("SELECT \(text)::text AS t")
            XCTFail("a NUL parameter was sent")
        } catch let error as PGError {
            XCTAssertTrue(error.isDataException, error.description)
        }
        let rows = try await server.pool.withConnection { conn in
            XCTAssertThrowsError(try conn.query("SELECT \(text)::text AS t")) { XCTAssertTrue(($0 as? PGError)?.isDataException == true) }
            XCTAssertThrowsError(try conn.pipeline(["SELECT 1", "SELECT \(text)::text"])) { XCTAssertTrue(($0 as? PGError)?.isDataException == true) }
            return try conn.query("SELECT 'still usable' AS t")
        }
        XCTAssertEqual(try rows.first?.decode(String.self, column: "t"), "still usable")
    }
}

/// Values the JSON or the path can spell but PostgreSQL's columns cannot hold are refused as
/// the caller's mistake (4xx), never reached as a 500.
final class InputRangeTests: ServerTestCase {
    func testValuesPastWhatTheColumnsHoldAreRefused() async throws {
        try await admin.prepareHardhatModel()
        expect(try await admin.call("GET", "/api/v1/flows/hardhat-model/versions/2147483648"), 422, code: "invalid")
        expect(try await admin.call("GET", "/api/v1/flows/hardhat-model/versions/2147483647"), 404, code: "not_found")
        let tooNew = #"{"flow":{"name":"hardhat-model","version":2147483648},"target":{"groups":["site-berlin"]},"params":{}}"#
        let refused = try await admin.call("POST", "/api/v1/deployments", tooNew)
        expect(refused, 422, code: "invalid")
        XCTAssertTrue(refused.text.contains("flow.version"), refused.text)

        for time in ["0000-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "10000-01-01T00:00:00Z"] {
            expect(try await admin.call("GET", "/api/v1/devices?last_seen_before=\(time)"), 422, code: "invalid")
        }
        expect(try await admin.call("GET", "/api/v1/devices?last_seen_before=0001-01-01T00:00:00Z"), 200)
        expect(try await admin.call("GET", "/api/v1/devices?last_seen_after=9999-12-31T23:59:59Z"), 200)

        // A number no column can hold, in free-form JSON: the caller's value, a 4xx.
        let huge = try await admin.call("POST", "/api/v1/devices", #"{"name":"cam-1","attributes":{"x":1e999999}}"#)
        XCTAssertEqual(huge.status / 100, 4, huge.text)
        XCTAssertNotNil(huge.errorCode, huge.text)
        expect(try await admin.call("GET", "/api/v1/devices/cam-1"), 404)
    }
}
