// The device cache (GET /api/v1/devices/{device} answered from memory) against every kind of
// write that changes a device's answer: a replica holding the device cached must see each one,
// whichever replica, device or psql session made it. See Sources/FlotillaAPI/DeviceCache.swift.

import FlotillaAPI
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

final class DeviceCacheTests: ServerTestCase {
    /// GETs the device on `client` until `replica` answers it from its cache.
    private func warm(_ replica: APIServer, _ client: APIClient, _ key: String,
                      file: StaticString = #filePath, line: UInt = #line) async throws {
        try await eventually("\(key) cached", file: file, line: line) {
            expect(try await client.call("GET", "/api/v1/devices/\(key)"), 200, file: file, line: line)
            return replica.api.cachesDeviceForTesting(key)
        }
    }

    func testEveryKindOfChangeReachesAnotherReplicasCache() async throws {
        let replica = try APIServer(sharing: server)
        try await server.waitUntilListening()
        try await replica.waitUntilListening()
        let there = APIClient(port: replica.port, token: server.adminToken, wire: .h1)
        let device = try await ScriptedDevice(server: server, admin: admin, name: "cam-1")
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"site-a"}"#), 201)
        let sql = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))

        // Each change is made away from the replica; the replica must come to answer with it.
        let changes: [(String, () async throws -> Void, (JSON) -> Bool)] = [
            ("labels patched", { expect(try await self.admin.call("PATCH", "/api/v1/devices/cam-1", #"{"labels":{"zone":"n"}}"#), 200) },
             { $0["labels"]?["zone"] == .string("n") }),
            ("added to a group", { expect(try await self.admin.call("POST", "/api/v1/groups/site-a/devices", #"{"devices":["cam-1"]}"#), 200) },
             { $0["groups"] == .array([.string("site-a")]) }),
            ("its group renamed", { expect(try await self.admin.call("PATCH", "/api/v1/groups/site-a", #"{"name":"site-b"}"#), 200) },
             { $0["groups"] == .array([.string("site-b")]) }),
            ("a heartbeat (installed versions, attributes, last seen)", {
                expect(try await device.client.call("POST", "/api/v1/agent/heartbeat", #"{"installed":{"model":"1.0"},"attributes":{"fw":"7"}}"#), 200)
            }, { $0["installed"]?["model"] == .string("1.0") && $0["attributes"]?["fw"] == .string("7") && $0["last_seen_at"] != .null }),
            ("a newer installed version", {
                expect(try await device.client.call("POST", "/api/v1/agent/heartbeat", #"{"installed":{"model":"1.1"}}"#), 200)
            }, { $0["installed"]?["model"] == .string("1.1") }),
            ("its token revoked", { expect(try await self.admin.call("POST", "/api/v1/devices/cam-1/revoke-token"), 200) },
             { $0["token_revoked_at"] != .null }),
            ("rejected", { expect(try await self.admin.call("POST", "/api/v1/devices/cam-1/reject"), 200) },
             { $0["status"] == .string("rejected") }),
            ("a psql session's update", { _ = try sql.query("UPDATE devices SET attributes = '{\"by\":\"psql\"}' WHERE name = 'cam-1'") },
             { $0["attributes"]?["by"] == .string("psql") }),
            ("removed from its group", { expect(try await self.admin.call("DELETE", "/api/v1/groups/site-b/devices/cam-1"), 204) },
             { $0["groups"] == .array([]) }),
            ("added again", { expect(try await self.admin.call("POST", "/api/v1/groups/site-b/devices", #"{"devices":["cam-1"]}"#), 200) },
             { $0["groups"] == .array([.string("site-b")]) }),
            ("its group deleted", { expect(try await self.admin.call("DELETE", "/api/v1/groups/site-b"), 204) },
             { $0["groups"] == .array([]) }),
        ]
        for (what, change, holds) in changes {
            for key in ["cam-1", device.id] {
                try await warm(replica, there, key)
                let before = try await there.call("GET", "/api/v1/devices/\(key)").json
                XCTAssertFalse(holds(before), "before: \(what)")
            }
            try await change()
            for key in ["cam-1", device.id] {
                try await eventually("the replica sees: \(what) (by \(key))") {
                    holds(try await there.call("GET", "/api/v1/devices/\(key)").json)
                }
            }
        }

        try await warm(replica, there, "cam-1")
        expect(try await admin.call("DELETE", "/api/v1/devices/cam-1"), 204)
        try await eventually("the replica forgets a deleted device") {
            try await there.call("GET", "/api/v1/devices/cam-1").status == 404
        }
        XCTAssertFalse(replica.api.cachesDeviceForTesting("cam-1"), "a 404 is never cached")
        await there.close()
        await device.client.close()
        await replica.stop()
    }

    /// The replica that made a change answers with it at once: it does not wait for its own
    /// notification. With this replica deaf to notifications, a psql write stays unseen (so
    /// the cache really answers), yet every write through the API is read back at once.
    func testAWriterReadsItsOwnWritesAtOnce() async throws {
        try await server.waitUntilListening()
        expect(try await admin.call("POST", "/api/v1/devices", #"{"name":"cam-2"}"#), 201)
        let sql = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        server.api.ignoreDeviceNotificationsForTesting(true)
        try await warm(server, admin, "cam-2")
        let ignored = server.api.ignoredDeviceNotificationsForTesting
        _ = try sql.query("UPDATE devices SET attributes = '{\"by\":\"psql\"}' WHERE name = 'cam-2'")
        // The notification arrived (and was dropped): from here a fresh answer could only come
        // from somewhere other than the cache.
        try await eventually("the replica heard the change") { server.api.ignoredDeviceNotificationsForTesting > ignored }
        let stale = try await admin.call("GET", "/api/v1/devices/cam-2").json
        XCTAssertEqual(stale["attributes"], .object([:]), "deaf: served from the cache")
        for round in 1...3 {
            try await warm(server, admin, "cam-2")
            expect(try await admin.call("PATCH", "/api/v1/devices/cam-2", #"{"labels":{"round":"\#(round)"}}"#), 200)
            let read = try await admin.call("GET", "/api/v1/devices/cam-2")
            XCTAssertEqual(read.json["labels"]?["round"], .string("\(round)"), "round \(round)")
            XCTAssertEqual(read.json["attributes"]?["by"], .string("psql"))
            XCTAssertEqual(read.headers["etag"], "\"\(read.json["version"]?.intValue ?? -1)\"")
        }
        server.api.ignoreDeviceNotificationsForTesting(false)
    }

    /// One statement touching many devices: 300 go out as two notifications of ids (a payload
    /// holds 200), 1,500 as one "flush everything".
    func testAStatementTouchingManyDevicesReachesEveryCachedOne() async throws {
        let replica = try APIServer(sharing: server, limits: .off)  // it takes ~1,000 GETs to fill
        try await replica.waitUntilListening()
        let there = APIClient(port: replica.port, token: server.adminToken, wire: .h2)
        let sql = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        _ = try sql.query("""
            INSERT INTO devices (name, token_hash) SELECT format('bulk-%s', lpad(i::text, 4, '0')), sha256(i::text::bytea)
            FROM generate_series(1, 1500) AS i
            """)
        let ids = try sql.query("SELECT id::text FROM devices WHERE name <= 'bulk-0300' ORDER BY id").map { try $0.decode(String.self) }
        XCTAssertEqual(ids.count, 300)
        for (batch, touched) in [(1, "name <= 'bulk-0300'"), (2, "true")] {
            for id in ids { try await warm(replica, there, id) }
            _ = try sql.query("UPDATE devices SET labels = jsonb_build_object('batch', \(String(batch))::text) WHERE \(unsafe: touched)")
            try await eventually("batch \(batch) reached all 300 cached devices") {
                ids.allSatisfy { !replica.api.cachesDeviceForTesting($0) }
            }
            for id in [ids.first!, ids.last!] {
                let read = try await there.call("GET", "/api/v1/devices/\(id)").json
                XCTAssertEqual(read["labels"]?["batch"], .string("\(batch)"))
            }
        }
        await there.close()
        await replica.stop()
    }
}
