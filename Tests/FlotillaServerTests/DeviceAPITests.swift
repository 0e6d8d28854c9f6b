import FlotillaAPI
import FlotillaStore
import Foundation
import XCTest

/// Devices and groups through the real server and a real database, over HTTP/2 and HTTP/1.1.
final class DeviceAPITests: XCTestCase {
    var server: APIServer!

    override func setUp() async throws {
        server = try APIServer()
    }

    override func tearDown() async throws {
        await server.stop()
    }

    func client(_ wire: Wire) -> APIClient { APIClient(port: server.port, token: server.adminToken, wire: wire) }

    func testDeviceLifecycle() async throws {
        for wire in Wire.allCases {
            let api = client(wire)
            expect(try await api.call("POST", "/api/v1/groups", #"{"name":"site-berlin-\#(wire)"}"#), 201)
            let created = try await api.call("POST", "/api/v1/devices", """
                {"name":"cam-\(wire)","labels":{"site":"berlin","model":"pi4"},"attributes":{"serial":"X1","ram_mb":4096},
                 "groups":["site-berlin-\(wire)"]}
                """)
            expect(created, 201)
            let device = try XCTUnwrap(created.json["device"])
            let id = try XCTUnwrap(device["id"]?.stringValue)
            XCTAssertEqual(device["name"], .string("cam-\(wire)"))
            XCTAssertEqual(device["labels"]?["site"], .string("berlin"))
            XCTAssertEqual(device["attributes"]?["ram_mb"]?.intValue, 4096)
            XCTAssertEqual(device["groups"], .array([.string("site-berlin-\(wire)")]))
            XCTAssertEqual(device["installed"]?.count, 0)
            XCTAssertEqual(device["last_seen_at"], .null)
            XCTAssertNotNil(Timestamp(parsing: device["created_at"]?.stringValue ?? ""))
            let deviceToken = try XCTUnwrap(created.json["device_token"]?.stringValue)
            XCTAssertTrue(deviceToken.hasPrefix("flt_d_") && deviceToken.count == 49, deviceToken)

            // By id and by name; the token is never shown again.
            for ident in [id, "cam-\(wire)"] {
                let fetched = try await api.call("GET", "/api/v1/devices/\(ident)")
                expect(fetched, 200)
                XCTAssertEqual(fetched.json["id"]?.stringValue, id)
                XCTAssertFalse(fetched.text.contains(deviceToken))
                XCTAssertEqual(fetched.headers["etag"], "\"1\"")
            }

            // Labels are merge-patched (null removes), attributes replaced.
            let patched = try await api.call("PATCH", "/api/v1/devices/\(id)", #"{"labels":{"model":null,"zone":"a"},"attributes":{"serial":"X2"}}"#)
            expect(patched, 200)
            XCTAssertEqual(patched.json["labels"], .object(["site": .string("berlin"), "zone": .string("a")]))
            XCTAssertEqual(patched.json["attributes"], .object(["serial": .string("X2")]))
            XCTAssertEqual(patched.json["version"]?.intValue, 2)
            // A conditional write with a stale version is refused and changes nothing.
            expect(try await api.call("PATCH", "/api/v1/devices/\(id)", #"{"labels":{"zone":"b"}}"#, headers: ["if-match": "\"1\""]), 412, code: "version_mismatch")
            let current = try await api.call("PATCH", "/api/v1/devices/\(id)", #"{"labels":{"zone":"c"}}"#, headers: ["if-match": "\"2\""])
            expect(current, 200)
            XCTAssertEqual(current.json["labels"]?["zone"], .string("c"))

            expect(try await api.call("DELETE", "/api/v1/devices/\(id)"), 204)
            expect(try await api.call("GET", "/api/v1/devices/\(id)"), 404, code: "not_found")
            expect(try await api.call("DELETE", "/api/v1/devices/\(id)"), 404, code: "not_found")
            let group = try await api.call("GET", "/api/v1/groups/site-berlin-\(wire)")
            XCTAssertEqual(group.json["device_count"]?.intValue, 0, "a hard delete takes the memberships along")
            // The name is free again.
            expect(try await api.call("POST", "/api/v1/devices", #"{"name":"cam-\#(wire)"}"#), 201)
            await api.close()
        }
    }

    func testListFilters() async throws {
        let api = client(.h2)
        for group in ["berlin", "munich"] { expect(try await api.call("POST", "/api/v1/groups", #"{"name":"\#(group)"}"#), 201) }
        let devices: [(String, String, [String])] = [
            ("cam-01", #"{"site":"berlin","kind":"cam"}"#, ["berlin"]),
            ("cam-02", #"{"site":"berlin","kind":"cam"}"#, ["berlin", "munich"]),
            ("sensor-01", #"{"site":"munich","kind":"sensor"}"#, ["munich"]),
            ("sensor-02", #"{"site":"berlin","kind":"sensor"}"#, []),
        ]
        for (name, labels, groups) in devices {
            let groupList = groups.map { "\"\($0)\"" }.joined(separator: ",")
            expect(try await api.call("POST", "/api/v1/devices", #"{"name":"\#(name)","labels":\#(labels),"groups":[\#(groupList)]}"#), 201)
        }
        // last_seen_at is written by the device API (next issue); set it directly here.
        let conn = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        try conn.query("UPDATE devices SET last_seen_at = \(Timestamp(parsing: "2026-01-01T00:00:00Z")!) WHERE name IN ('cam-01', 'sensor-01')")
        try conn.query("UPDATE devices SET last_seen_at = \(Timestamp(parsing: "2026-06-01T00:00:00Z")!) WHERE name = 'cam-02'")

        func check(_ query: String, _ expected: [String], line: UInt = #line) async throws {
            let response = try await api.call("GET", "/api/v1/devices?\(query)")
            expect(response, 200, line: line)
            let names = (response.json["items"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
            XCTAssertEqual(names, expected, query, line: line)
        }
        try await check("", ["cam-01", "cam-02", "sensor-01", "sensor-02"])
        try await check("group=munich", ["cam-02", "sensor-01"])
        try await check("selector=site%3Dberlin", ["cam-01", "cam-02", "sensor-02"])
        try await check("selector=site=berlin,kind=sensor", ["sensor-02"])
        try await check("name_prefix=sensor", ["sensor-01", "sensor-02"])
        try await check("last_seen_before=2026-03-01T00:00:00Z", ["cam-01", "sensor-01"])
        try await check("last_seen_after=2026-03-01T00:00:00Z", ["cam-02"])
        try await check("group=berlin&selector=kind=cam&last_seen_after=2026-03-01T00:00:00Z", ["cam-02"])
        try await check("name_prefix=nothing", [])

        expect(try await api.call("GET", "/api/v1/devices?group=nowhere"), 422, code: "invalid")
        expect(try await api.call("GET", "/api/v1/devices?selector=site"), 422, code: "invalid")
        expect(try await api.call("GET", "/api/v1/devices?last_seen_before=yesterday"), 422, code: "invalid")
        expect(try await api.call("GET", "/api/v1/devices?limit=0"), 422, code: "invalid")
        expect(try await api.call("GET", "/api/v1/devices?limit=501"), 422, code: "invalid")
        expect(try await api.call("GET", "/api/v1/devices?cursor=not-a-cursor"), 422, code: "invalid")
        expect(try await api.call("GET", "/api/v1/devices?colour=red"), 400, code: "unknown_parameter")

        let groups = try await api.call("GET", "/api/v1/devices/cam-02/groups")
        XCTAssertEqual(groups.json["items"]?.arrayValue?.compactMap { $0["name"]?.stringValue }, ["berlin", "munich"])
        await api.close()
    }

    /// Keyset pagination while another client inserts rows: every row that existed before the
    /// walk is seen exactly once, in order, whatever lands between pages.
    func testPaginationWhileRowsAreInsertedConcurrently() async throws {
        let api = client(.h2)
        let conn = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        // 60 devices named dev-000, dev-002 … dev-118 (even numbers); the writer adds odd ones.
        for i in stride(from: 0, to: 120, by: 2) {
            try conn.query("""
                INSERT INTO devices (name, token_hash)
                VALUES (\(String(format: "dev-%03d", i)), \(Bytea(Secrets.sha256(Array("t\(i)".utf8)))))
                """)
        }
        let (port, token) = (server.port, server.adminToken)
        let writer = Task {
            let writerClient = APIClient(port: port, token: token, wire: .h1)
            for i in stride(from: 1, to: 120, by: 2) {
                _ = try await writerClient.call("POST", "/api/v1/devices", #"{"name":"\#(String(format: "dev-%03d", i))"}"#)
            }
        }
        var seen: [String] = []
        var cursor: String?
        repeat {
            let path = "/api/v1/devices?limit=7" + (cursor.map { "&cursor=\($0)" } ?? "")
            let page = try await api.call("GET", path)
            expect(page, 200)
            let items = page.json["items"]?.arrayValue ?? []
            XCTAssertLessThanOrEqual(items.count, 7)
            seen += items.compactMap { $0["name"]?.stringValue }
            cursor = page.json["next_cursor"]?.stringValue
        } while cursor != nil
        try await writer.value
        XCTAssertEqual(seen, seen.sorted(), "pages come in name order")
        XCTAssertEqual(Set(seen).count, seen.count, "no row is repeated")
        for i in stride(from: 0, to: 120, by: 2) {
            XCTAssertTrue(seen.contains(String(format: "dev-%03d", i)), "dev-\(i) was skipped")
        }
        await api.close()
    }

    func testGroups() async throws {
        for wire in Wire.allCases {
            let api = client(wire)
            let g = "fleet-\(wire)"
            let created = try await api.call("POST", "/api/v1/groups", #"{"name":"\#(g)"}"#)
            expect(created, 201)
            let groupID = try XCTUnwrap(created.json["id"]?.stringValue)
            expect(try await api.call("POST", "/api/v1/groups", #"{"name":"\#(g)"}"#), 409, code: "conflict")
            expect(try await api.call("POST", "/api/v1/groups", #"{"name":"other-\#(wire)"}"#), 201)

            var ids: [String] = []
            for i in 0..<5 {
                let device = try await api.call("POST", "/api/v1/devices", #"{"name":"m\#(i)-\#(wire)"}"#)
                ids.append(try XCTUnwrap(device.json["device"]?["id"]?.stringValue))
            }
            // Ids and names may be mixed; adding a member twice is fine.
            let added = try await api.call("POST", "/api/v1/groups/\(g)/devices", #"{"devices":["\#(ids[0])","m1-\#(wire)","m2-\#(wire)","m2-\#(wire)"]}"#)
            expect(added, 200)
            XCTAssertEqual(added.json["added"]?.intValue, 3)
            let again = try await api.call("POST", "/api/v1/groups/\(groupID)/devices", #"{"devices":["m1-\#(wire)","m3-\#(wire)"]}"#)
            XCTAssertEqual(again.json["added"]?.intValue, 1)
            let missing = try await api.call("POST", "/api/v1/groups/\(g)/devices", #"{"devices":["m4-\#(wire)","ghost"]}"#)
            expect(missing, 422, code: "invalid")
            XCTAssertEqual(missing.json["error"]?["details"]?[0]?["field"], .string("devices[1]"))
            let afterMissing = try await api.call("GET", "/api/v1/groups/\(g)")
            XCTAssertEqual(afterMissing.json["device_count"]?.intValue, 4, "nothing added on 422")

            // Members, page by page.
            let first = try await api.call("GET", "/api/v1/groups/\(g)/devices?limit=3")
            XCTAssertEqual(first.json["items"]?.arrayValue?.compactMap { $0["name"]?.stringValue }, ["m0-\(wire)", "m1-\(wire)", "m2-\(wire)"])
            let cursor = try XCTUnwrap(first.json["next_cursor"]?.stringValue)
            let second = try await api.call("GET", "/api/v1/groups/\(g)/devices?limit=3&cursor=\(cursor)")
            XCTAssertEqual(second.json["items"]?.arrayValue?.compactMap { $0["name"]?.stringValue }, ["m3-\(wire)"])
            XCTAssertEqual(second.json["next_cursor"], .null)

            // A device in two groups.
            expect(try await api.call("POST", "/api/v1/groups/other-\(wire)/devices", #"{"devices":["m1-\#(wire)"]}"#), 200)
            let memberships = try await api.call("GET", "/api/v1/devices/m1-\(wire)/groups")
            XCTAssertEqual(memberships.json["items"]?.arrayValue?.compactMap { $0["name"]?.stringValue }, [g, "other-\(wire)"])

            expect(try await api.call("DELETE", "/api/v1/groups/\(g)/devices/m1-\(wire)"), 204)
            expect(try await api.call("DELETE", "/api/v1/groups/\(g)/devices/m1-\(wire)"), 404, code: "not_found")

            let renamed = try await api.call("PATCH", "/api/v1/groups/\(g)", #"{"name":"renamed-\#(wire)"}"#)
            expect(renamed, 200)
            XCTAssertEqual(renamed.json["id"]?.stringValue, groupID)
            expect(try await api.call("PATCH", "/api/v1/groups/renamed-\(wire)", #"{"name":"other-\#(wire)"}"#), 409, code: "conflict")
            expect(try await api.call("GET", "/api/v1/groups/\(g)"), 404)

            let list = try await api.call("GET", "/api/v1/groups?name_prefix=renamed")
            XCTAssertEqual(list.json["items"]?.arrayValue?.compactMap { $0["name"]?.stringValue }, ["renamed-\(wire)"])

            expect(try await api.call("DELETE", "/api/v1/groups/renamed-\(wire)"), 204)
            expect(try await api.call("GET", "/api/v1/devices/m0-\(wire)"), 200, code: nil)
            let kept = try await api.call("GET", "/api/v1/devices/m0-\(wire)/groups")
            XCTAssertEqual(kept.json["items"]?.count, 0, "deleting a group keeps its devices")
            expect(try await api.call("DELETE", "/api/v1/groups/renamed-\(wire)"), 404)
            await api.close()
        }
    }
}
