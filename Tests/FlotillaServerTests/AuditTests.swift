// The audit log through the real server: each management mutation is recorded with its
// token, path, status and client address — refused ones too — reads are not, only admins
// may read it, following with `after` sees only newer entries, and the table refuses to
// be rewritten.

import FlotillaAPI
import FlotillaStore
import XCTest

final class AuditTests: ServerTestCase {
    func testMutationsAreRecordedAndTheLogIsAppendOnly() async throws {
        let viewerAnswer = try await admin.call("POST", "/api/v1/tokens", #"{"name":"dashboard","role":"viewer"}"#)
        expect(viewerAnswer, 201)
        let viewerSecret = try XCTUnwrap(viewerAnswer.json["secret"]?.stringValue)
        let viewerID = try XCTUnwrap(viewerAnswer.json["token"]?["id"]?.stringValue)
        let viewer = APIClient(port: server.port, token: viewerSecret, wire: .h1)
        defer { Task { await viewer.close() } }
        let stranger = APIClient(port: server.port, token: "flt_a_not-a-token", wire: .h1)
        defer { Task { await stranger.close() } }

        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"site-berlin"}"#), 201)
        expect(try await admin.call("GET", "/api/v1/groups"), 200)                         // a read: not audited
        expect(try await viewer.call("POST", "/api/v1/groups", #"{"name":"nope"}"#), 403)   // refused: audited
        expect(try await stranger.call("DELETE", "/api/v1/groups/site-berlin"), 401)      // unknown token: audited
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"site-berlin"}"#), 409)

        let log = try await admin.call("GET", "/api/v1/audit")
        expect(log, 200)
        let items = try XCTUnwrap(log.json["items"]?.arrayValue)
        let summary = items.map { "\($0["method"]?.stringValue ?? "") \($0["path"]?.stringValue ?? "") \($0["status"]?.intValue ?? 0)" }
        XCTAssertEqual(summary, ["POST /api/v1/tokens 201", "POST /api/v1/groups 201", "POST /api/v1/groups 403",
                                 "DELETE /api/v1/groups/site-berlin 401", "POST /api/v1/groups 409"])
        XCTAssertEqual(items[1]["token_name"], .string("bootstrap admin"))
        XCTAssertEqual(items[2]["token_id"], .string(viewerID))
        XCTAssertEqual(items[3]["token_id"], .null, "a refused token is not attributed to anyone")
        XCTAssertEqual(items[1]["remote_addr"], .string("127.0.0.1"))
        XCTAssertFalse(log.text.contains(viewerSecret), "no secret in the audit log")

        // Following: nothing newer, then exactly the next mutation.
        let last = try XCTUnwrap(log.json["last_id"]?.intValue)
        let none = try await admin.call("GET", "/api/v1/audit?after=\(last)")
        XCTAssertEqual(none.json["items"]?.arrayValue?.count, 0)
        expect(try await admin.call("DELETE", "/api/v1/groups/site-berlin"), 204)
        let next = try await admin.call("GET", "/api/v1/audit?after=\(last)")
        XCTAssertEqual(next.json["items"]?[0]?["path"], .string("/api/v1/groups/site-berlin"))
        let byViewer = try await admin.call("GET", "/api/v1/audit?token=\(viewerID)")
        XCTAssertEqual(byViewer.json["items"]?.arrayValue?.count, 1)

        expect(try await viewer.call("GET", "/api/v1/audit"), 403)
        expect(try await admin.call("GET", "/api/v1/audit?after=-1"), 422)

        // The table refuses rewriting, whoever asks.
        let conn = try PGConnection(PGConnectionOptions(conninfo: server.conninfo))
        XCTAssertThrowsError(try conn.query("DELETE FROM audit_log")) { XCTAssertTrue("\($0)".contains("append-only"), "\($0)") }
        XCTAssertThrowsError(try conn.query("UPDATE audit_log SET status = 200")) { XCTAssertTrue("\($0)".contains("append-only"), "\($0)") }
        XCTAssertThrowsError(try conn.query("TRUNCATE audit_log")) { XCTAssertTrue("\($0)".contains("append-only"), "\($0)") }
    }
}
