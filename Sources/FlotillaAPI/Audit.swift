// The audit log: every management mutation, appended by the request path (`serve` calls
// `appendAudit` after the handler, whatever the outcome, 401 and 403 included) and read by
// admins through GET /api/v1/audit. The table itself refuses UPDATE, DELETE and TRUNCATE
// (migration 0005). An enrollment (POST /agent/enroll) is audited under the enrollment
// token's id, a device rotating its token (POST /agent/token) under the device's. Other
// device-API traffic (polls, reports) is not audited: it is not an
// operator's action, and its own transitions are in the execution event log.
//
// The path is logged without its query (queries never carry mutations' data here), and
// never a body or a header: secrets do not reach the audit log.

import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension APIContext {
    /// Appends one row. A failure to append is logged loudly but does not change the
    /// client's answer: the mutation already happened (or was refused) by then.
    func appendAudit(_ request: HTTPRequest, tokenID: String?, status: Int, requestID: String) async {
        do {
            _ = try await db.query("""
                INSERT INTO audit_log (token_id, method, path, status, remote_addr, request_id)
                VALUES (\(tokenID)::uuid, \(request.method), \(request.path), \(status), \(request.remoteAddress), \(requestID))
                """)
        } catch {
            logger.error("audit log append failed", metadata: ["request_id": .string(requestID), "error": .string(String(describing: error))])
        }
    }

}

extension ManagementAPI {
    func registerAuditRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.audit, role: .admin) { request, _ in
            var query = try QueryReader(request, allowed: ["after", "limit", "token"])
            let limit = query.limit()
            let after = query.afterID()
            let token = query["token"]
            if let token, !isUUID(token) { query.problem("token", "must be a token id") }
            try query.finish()
            // Like the event log: newest `limit` without `after`, then oldest first after it,
            // each walking the primary key from its end.
            let since: SQL = after.map { "a.id > \($0)::bigint" } ?? "true"
            let order: SQL = after == nil ? "a.id DESC" : "a.id"
            let rows = try await db.query("""
                SELECT * FROM (
                    SELECT a.id, a.at, a.token_id::text, coalesce(t.name, 'enrollment token ' || et.name, 'device ' || dv.name),
                           a.method, a.path, a.status, a.remote_addr, a.request_id
                    FROM audit_log a LEFT JOIN api_tokens t ON t.id = a.token_id
                    LEFT JOIN enrollment_tokens et ON et.id = a.token_id
                    LEFT JOIN devices dv ON dv.id = a.token_id
                    WHERE \(since) AND (\(token)::uuid IS NULL OR a.token_id = \(token)::uuid)
                    ORDER BY \(order) LIMIT \(limit)
                ) page ORDER BY id
                """)
            let items = try rows.map { row -> JSON in
                let (id, at, tokenID, tokenName, method, path, status, address, requestID) = try row.decode(
                    Int.self, Timestamp.self, String?.self, String?.self, String.self, String.self, Int.self, String?.self, String.self)
                return .fields([
                    ("id", .int(id)), ("at", .string(at.rfc3339)), ("token_id", tokenID.map(JSON.string) ?? .null),
                    ("token_name", tokenName.map(JSON.string) ?? .null), ("method", .string(method)), ("path", .string(path)),
                    ("status", .int(status)), ("remote_addr", address.map(JSON.string) ?? .null), ("request_id", .string(requestID)),
                ])
            }
            let last = try rows.last.map { try $0.decode(Int.self, column: "id") } ?? after
            return .json(200, JSON.fields([("items", .array(items)), ("last_id", last.map(JSON.int) ?? .null)]).serialized)
        }
    }
}
