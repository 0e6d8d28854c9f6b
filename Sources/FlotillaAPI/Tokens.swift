// API tokens: who may call the management API, and with which role.
//
// A token's secret is `flt_a_` + 32 random bytes (base64url). Only its SHA-256 is stored;
// a presented secret is hashed, looked up by hash, and the stored hash compared again in
// constant time. Verified tokens are cached for a few seconds (TokenCache); revoking
// flushes that cache here at once and on every other replica through NOTIFY.
//
// Roles: `viewer` may read; `deployer` may also apply flows, upload artifacts and create
// and cancel deployments, within its scope (FlotillaCore/TokenScope.swift: flow and group
// globs); `admin` may do everything. A token may expire. `last_used_at` is written when a
// request had to look the token up (a cache miss), at most once a minute, so it is exact
// to about a minute and costs no write on the hot path.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

public enum Role: String, Sendable, CaseIterable {
    case viewer, deployer, admin

    public func allows(_ needed: Role) -> Bool {
        switch (self, needed) {
        case (.admin, _), (.deployer, .deployer), (.deployer, .viewer), (.viewer, .viewer): true
        case (.deployer, .admin), (.viewer, .deployer), (.viewer, .admin): false
        }
    }
}

struct Caller: Sendable {
    let tokenID: String
    let role: Role
    let scope: TokenScope
    let expiresAt: Timestamp?

    /// 403 unless deploying `flow` to this target is within the token's scope.
    func checkScope(flow: String, groups: [String] = [], devices: [String] = [], selector: Bool = false) throws {
        if let reason = scope.refusal(flow: flow, groups: groups, devices: devices, selector: selector) {
            throw HTTPError(403, code: .outOfScope, message: reason)
        }
    }
}

extension ManagementAPI {
    func authenticate(_ request: HTTPRequest) async throws -> Caller {
        let hash = try Self.bearerHash(request, prefix: "", what: "an API token", example: "<token>")
        if let cached = cachedCaller(hash: hash) { return cached }
        let now = Timestamp(engine.clock.now())
        let generation = tokens.currentGeneration()
        // Looks the token up and notes its use, at most once a minute (one round trip).
        let found = try await db.query("""
            WITH t AS (SELECT id, role, secret_hash, flows, groups, expires_at FROM api_tokens
                       WHERE secret_hash = \(Bytea(hash)) AND revoked_at IS NULL),
            used AS (UPDATE api_tokens a SET last_used_at = \(now) FROM t
                     WHERE a.id = t.id AND (a.last_used_at IS NULL OR a.last_used_at < \(now)::timestamptz - interval '1 minute'))
            SELECT id::text, role, secret_hash, to_jsonb(flows), to_jsonb(groups), expires_at FROM t
            """).first.map { try $0.decode(String.self, String.self, Bytea.self, JSONText?.self, JSONText?.self, Timestamp?.self) }
        guard let (id, roleName, stored, flows, groups, expires) = found, Secrets.constantTimeEquals(stored.bytes, hash),
              let role = Role(rawValue: roleName) else {
            throw Self.invalidToken(.invalidToken, "the API token is unknown or revoked")
        }
        if let expires, expires <= now {
            throw Self.invalidToken(.tokenExpired, "the API token expired at \(expires.rfc3339)")
        }
        let caller = Caller(tokenID: id, role: role, scope: TokenScope(flows: Self.strings(flows), groups: Self.strings(groups)), expiresAt: expires)
        tokens.store(hash, caller, generation: generation)
        return caller
    }

    func registerTokenRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.createToken, role: .admin) { request, _ in
            var body = try BodyReader(request)
            let name = body.string("name", required: true)
            if let name, !(1...100).contains(name.count) { body.problem("name", "must be 1 to 100 characters") }
            let roleName = body.string("role", required: true)
            let role = roleName.flatMap(Role.init(rawValue:))
            if roleName != nil, role == nil {
                body.problem("role", "must be one of \(Role.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let flows = body.patterns("flows"), groups = body.patterns("groups")
            if role != .deployer, role != nil, flows != nil || groups != nil {
                body.problem(flows != nil ? "flows" : "groups", "only a deployer token can be scoped")
            }
            let expiresIn = body.int("expires_in", range: 60...315_360_000)
            try body.finish()
            let secret = Secrets.newToken(prefix: "flt_a_")
            let expires = expiresIn.map { Timestamp(engine.clock.now().adding(seconds: $0)) }
            let row = try await db.withConnection { [name, role] conn in
                try conn.query("""
                    INSERT INTO api_tokens (name, role, secret_hash, flows, groups, expires_at)
                    VALUES (\(name!), \(role!.rawValue), \(Bytea(Secrets.sha256(secret.utf8))), \(flows.map(PGTextArray.init))::text[],
                            \(groups.map(PGTextArray.init))::text[], \(expires)::timestamptz)
                    RETURNING \(unsafe: Self.tokenColumns)
                    """)[0]
            }
            return .json(201, JSON.object(["token": try Self.tokenJSON(row), "secret": .string(secret)]).serialized)
        }

        route(&router, ManagementRoutes.listTokens, role: .admin) { request, _ in
            try QueryReader(request, allowed: []).finish()
            let rows = try await db.query("SELECT \(unsafe: Self.tokenColumns) FROM api_tokens ORDER BY created_at, id")
            return .json(200, JSON.object(["items": .array(try rows.map(Self.tokenJSON))]).serialized)
        }

        // Revoking is an event, not a state write; repeating it changes nothing.
        route(&router, ManagementRoutes.revokeToken, role: .admin) { request, _ in
            let id = request.pathParameters["id"]!
            guard isUUID(id) else { throw APIError.notFound("no token with id \(id)") }
            let row = try await db.transaction { conn -> PGRow? in
                // Serialize revocations so two concurrent ones cannot both pass the last-admin check.
                try conn.query("SELECT pg_advisory_xact_lock(\(Self.tokenLockKey))")
                // Active: not revoked and not expired. Expired admin tokens cannot let anyone back
                // in, so they neither count as the other admin nor need protecting as the last.
                let now = Timestamp(engine.clock.now())
                let active: SQL = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > \(now)::timestamptz)"
                guard let token = try conn.query("SELECT role, \(active) FROM api_tokens WHERE id = \(id)::uuid").first else {
                    return nil
                }
                let (role, isActive) = try token.decode(String.self, Bool.self)
                if isActive, role == Role.admin.rawValue {
                    let admins = try conn.query("SELECT count(*) FROM api_tokens WHERE role = 'admin' AND \(active)")[0]
                    if try admins.decode(Int.self) <= 1 {
                        throw APIError.conflict("this is the last active admin token; create another admin token before revoking it")
                    }
                }
                // Every replica flushes its token cache when this commits.
                try conn.query("SELECT pg_notify(\(APIContext.changeChannel), \(id))")
                return try conn.query("""
                    UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = \(id)::uuid
                    RETURNING \(unsafe: Self.tokenColumns)
                    """).first
            }
            // And this one before it answers: the very next request is refused.
            tokens.invalidateAll()
            guard let row else { throw APIError.notFound("no token with id \(id)") }
            return .json(200, try Self.tokenJSON(row).serialized)
        }
    }

    static let tokenLockKey = 0x466c_6f75
    static let tokenColumns = "id::text, name, role, created_at, revoked_at, to_jsonb(flows), to_jsonb(groups), expires_at, last_used_at"

    /// A `to_jsonb(text[])` column: nil stays nil (unrestricted).
    static func strings(_ column: JSONText?) -> [String]? {
        column.flatMap { try? JSON.parse(Array($0.text.utf8)) }?.arrayValue?.compactMap(\.stringValue)
    }

    static func tokenJSON(_ row: PGRow) throws -> JSON {
        let (id, name, role, created, revoked, flows, groups, expires, used) = try row.decode(
            String.self, String.self, String.self, Timestamp.self, Timestamp?.self, JSONText?.self, JSONText?.self,
            Timestamp?.self, Timestamp?.self)
        func time(_ value: Timestamp?) -> JSON { value.map { .string($0.rfc3339) } ?? .null }
        func list(_ value: JSONText?) -> JSON { strings(value).map { .array($0.map(JSON.string)) } ?? .null }
        return .fields([
            ("id", .string(id)), ("name", .string(name)), ("role", .string(role)), ("flows", list(flows)), ("groups", list(groups)),
            ("created_at", .string(created.rfc3339)), ("expires_at", time(expires)), ("last_used_at", time(used)),
            ("revoked_at", time(revoked)),
        ])
    }

    /// On a database without any API token, creates the first admin token and returns its
    /// secret (nil when tokens exist already). Safe when several servers start at once.
    public static func bootstrapAdminToken(_ conn: PGConnection) throws -> String? {
        try conn.transaction { conn in
            try conn.query("SELECT pg_advisory_xact_lock(\(tokenLockKey))")
            guard try conn.query("SELECT 1 FROM api_tokens LIMIT 1").isEmpty else { return nil }
            let secret = Secrets.newToken(prefix: "flt_a_")
            try conn.query("""
                INSERT INTO api_tokens (name, role, secret_hash)
                VALUES ('bootstrap admin', 'admin', \(Bytea(Secrets.sha256(secret.utf8))))
                """)
            return secret
        }
    }
}

extension APIAudience {
    /// The SHA-256 of the secret in `Authorization: Bearer <secret>` (which must start with
    /// `prefix`): what every kind of token is looked up by. 401 when the header is missing
    /// or malformed, naming `what` the route wants.
    static func bearerHash(_ request: HTTPRequest, prefix: String, what: String, example: String) throws -> [UInt8] {
        // Byte by byte: String.split and lowercased() walk Characters, and this runs for
        // every authenticated request.
        let header = (request.headers["authorization"] ?? "").utf8
        let scheme = header.prefix(7)
        let secret = header.dropFirst(7)
        guard scheme.count == 7, scheme.last == UInt8(ascii: " "),
              zip(scheme.dropLast(), "bearer".utf8).allSatisfy({ $0 | 0x20 == $1 }),
              !secret.isEmpty, secret.count <= 256, secret.starts(with: prefix.utf8) else {
            throw HTTPError(401, code: .unauthorized, message: "send \(what): Authorization: Bearer \(example)",
                            headers: ["www-authenticate": "Bearer"])
        }
        return Secrets.sha256(secret)
    }

    /// A 401 for a token that was presented but is not (or no longer) good.
    static func invalidToken(_ code: ErrorCode, _ message: String) -> HTTPError {
        HTTPError(401, code: code, message: message, headers: ["www-authenticate": #"Bearer error="invalid_token""#])
    }
}

/// 8-4-4-4-12 hex digits: a malformed id is simply an unknown one (404), and checking
/// here keeps PostgreSQL's "invalid input syntax for type uuid" from becoming a 500.
func isUUID(_ text: String) -> Bool {
    let bytes = Array(text.utf8)
    guard bytes.count == 36 else { return false }
    for (index, byte) in bytes.enumerated() {
        if [8, 13, 18, 23].contains(index) {
            guard byte == UInt8(ascii: "-") else { return false }
        } else {
            guard hexDigitValue(byte) != nil else { return false }
        }
    }
    return true
}
