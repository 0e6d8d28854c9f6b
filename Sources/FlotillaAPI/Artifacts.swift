// The artifact store's API: what pipelines upload models to and devices download them from.
//
//   POST   /api/v1/artifacts?name=…          upload (streamed to disk, hashed on the way;
//                                            `X-Checksum-SHA256` is verified when sent)
//   GET    /api/v1/artifacts                 list, newest first
//   GET    /api/v1/artifacts/{sha256}        metadata, and the live deployments using it
//   GET    /api/v1/artifacts/{sha256}/content    the bytes (Range, ETag, If-Range, HEAD)
//   DELETE /api/v1/artifacts/{sha256}        refused (409) while a live deployment uses it
//   GET    /api/v1/agent/artifacts/{sha256}  a device's download, with its own token, of an
//                                            artifact one of its executions names
//
// Artifacts are content-addressed: uploading bytes that are already stored is a 200 with
// the existing record. A per-artifact advisory lock orders an upload's commit against a
// delete of the same bytes, so a row never outlives its file or the other way round.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

public struct ArtifactStore: Sendable {
    public let files: ArtifactFiles
    public let maxBytes: Int

    public init(directory: String, maxBytes: Int = 4 << 30) throws {
        files = try ArtifactFiles(directory: directory)
        self.maxBytes = maxBytes
    }
}

extension ManagementAPI {
    func registerArtifactRoutes(on router: inout Router) {
        route(&router, ManagementRoutes.uploadArtifact, role: .deployer, streamingLimit: artifacts.maxBytes) { request, _ in
            var query = try QueryReader(request, allowed: ["name"])
            let name = query["name"] ?? "artifact"
            if name.utf8.count > 255 || name.contains("/") || name.unicodeScalars.contains(where: { $0.value < 32 || $0.value == 127 }) {
                query.problem("name", "must be a file name: at most 255 bytes, no '/' or control characters")
            }
            let expected = request.headers["x-checksum-sha256"]?.lowercased()
            if let expected, !isSHA256(expected) { query.problem("X-Checksum-SHA256", "must be 64 hex digits") }
            let contentType = request.headers["content-type"] ?? "application/octet-stream"
            if contentType.utf8.count > 255 { query.problem("Content-Type", "must be at most 255 bytes") }
            try query.finish()
            guard let body = request.bodyStream else { throw APIError.invalid("body", "send the artifact's bytes as the body") }

            let upload = try artifacts.files.beginUpload()
            while let chunk = try await body.next() { try upload.write(chunk) }
            guard upload.size > 0 else { throw APIError.invalid("body", "an artifact cannot be empty") }
            let sha256 = try await upload.finish()
            if let expected, expected != sha256 {
                throw HTTPError(422, code: .checksumMismatch,
                                message: "the body's SHA-256 is \(sha256), not the \(expected) announced; nothing was stored")
            }
            let (row, created) = try await db.transaction { conn -> (PGRow, Bool) in
                try ArtifactStore.lock(conn, sha256)
                try artifacts.files.commit(upload, as: sha256)
                if let row = try conn.query("""
                    INSERT INTO artifacts (sha256, size, name, content_type) VALUES (\(sha256), \(upload.size), \(name), \(contentType))
                    ON CONFLICT (sha256) DO NOTHING RETURNING \(unsafe: Self.artifactColumns)
                    """).first {
                    return (row, true)
                }
                return (try conn.query("SELECT \(unsafe: Self.artifactColumns) FROM artifacts WHERE sha256 = \(sha256)")[0], false)
            }
            return .json(created ? 201 : 200, try Self.artifactJSON(row).serialized,
                         headers: ["location": ManagementRoutes.artifact.path(sha256)])
        }

        route(&router, ManagementRoutes.listArtifacts, role: .viewer) { request, _ in
            var query = try QueryReader(request, allowed: ["limit", "cursor"])
            let limit = query.limit()
            let after = query.newestFirstCursor(isKey: isSHA256)
            try query.finish()
            let rows = try await db.query("""
                SELECT \(unsafe: Self.artifactColumns) FROM artifacts
                WHERE (\(after.time)::timestamptz IS NULL OR (created_at, sha256) < (\(after.time)::timestamptz, \(after.key)))
                ORDER BY created_at DESC, sha256 DESC LIMIT \(limit + 1)
                """)
            return try newestFirstPage(rows, limit: limit, key: "sha256", Self.artifactJSON)
        }

        route(&router, ManagementRoutes.artifact, role: .viewer) { request, _ in
            let sha256 = try Self.artifactID(request)
            guard let row = try await db.query("SELECT \(unsafe: Self.artifactColumns) FROM artifacts WHERE sha256 = \(sha256)").first else {
                throw APIError.notFound("no artifact \(sha256)")
            }
            let live = try await db.query(Self.liveUsers(sha256)).map { JSON.string(try $0.decode(String.self)) }
            var json = try Self.artifactJSON(row).objectValue ?? [:]
            json["live_deployments"] = .array(live)
            return .json(200, JSON.object(json).serialized)
        }

        route(&router, ManagementRoutes.artifactContent, role: .viewer) { request, _ in
            let sha256 = try Self.artifactID(request)
            guard let row = try await db.query("SELECT content_type FROM artifacts WHERE sha256 = \(sha256)").first else {
                throw APIError.notFound("no artifact \(sha256)")
            }
            return try serveArtifact(sha256, contentType: try row.decode(String.self), for: request)
        }

        route(&router, ManagementRoutes.deleteArtifact, role: .admin) { request, _ in
            let sha256 = try Self.artifactID(request)
            try await db.transaction { conn in
                try ArtifactStore.lock(conn, sha256)
                guard try !conn.query("SELECT 1 FROM artifacts WHERE sha256 = \(sha256) FOR UPDATE").isEmpty else {
                    throw APIError.notFound("no artifact \(sha256)")
                }
                let live = try conn.query(Self.liveUsers(sha256)).map { try $0.decode(String.self) }
                if !live.isEmpty {
                    throw HTTPError(409, code: .artifactInUse,
                                    message: "deployment \(live[0]) still has devices to update with this artifact; cancel it or wait for it to finish",
                                    details: JSON.object(["deployments": .array(live.map(JSON.string))]).serialized)
                }
                _ = try conn.query("DELETE FROM artifacts WHERE sha256 = \(sha256)")
                // Under the lock, so a concurrent upload of the same bytes cannot slip in between.
                artifacts.files.remove(sha256)
            }
            return HTTPResponse(status: 204)
        }
    }
}

extension APIAudience {
    func serveArtifact(_ sha256: String, contentType: String, for request: HTTPRequest) throws -> HTTPResponse {
        let file: HTTPFileBody
        do {
            file = try HTTPFileBody(path: artifacts.files.path(of: sha256))
        } catch {
            logger.error("artifact file missing", metadata: ["sha256": .string(sha256), "error": .string(error.description)])
            throw HTTPError(500, code: .artifactMissing, message: "the artifact \(sha256) is recorded but its file is missing from the store")
        }
        // Content-addressed: the bytes behind this URL never change, so caches may keep them.
        return .file(file, for: request, etag: "\"\(sha256)\"",
                     headers: ["content-type": contentType, "cache-control": "private, max-age=31536000, immutable"])
    }

    static func artifactID(_ request: HTTPRequest) throws -> String {
        let sha256 = request.pathParameters["sha256"]!
        guard isSHA256(sha256) else { throw APIError.notFound("no artifact '\(sha256)' (artifacts are named by their SHA-256: 64 lowercase hex digits)") }
        return sha256
    }

}

extension ArtifactStore {
    /// Orders uploads, deletes and the collector's removals of the same bytes (any replica).
    static func lock(_ conn: PGConnection, _ sha256: String) throws {
        _ = try conn.query("SELECT pg_advisory_xact_lock(\(lockSpace), hashtext(\(sha256)))")
    }

    static let lockSpace = 0x41_52_54  // "ART"
}

extension ManagementAPI {
    /// Deployments that use the artifact and still have devices to update (counting targets
    /// not handed out yet, even superseded ones: refusing is the safe side).
    static func liveUsers(_ sha256: String) -> SQL {
        """
        SELECT da.deployment_id::text FROM deployment_artifacts da
        WHERE da.sha256 = \(sha256) AND (EXISTS (SELECT 1 FROM executions e WHERE e.deployment_id = da.deployment_id
              AND e.state NOT IN (\(unsafe: ExecutionState.terminalSQLList)))
           OR EXISTS (SELECT 1 FROM deployment_targets t JOIN deployments d ON d.id = t.deployment_id
                      WHERE t.deployment_id = da.deployment_id AND d.canceled_at IS NULL))
        ORDER BY da.deployment_id LIMIT 20
        """
    }

    static let artifactColumns = "sha256, size, name, content_type, created_at"

    static func artifactJSON(_ row: PGRow) throws -> JSON {
        let (sha256, size, name, contentType, created) = try row.decode(String.self, Int.self, String.self, String.self, Timestamp.self)
        return .fields([
            ("sha256", .string(sha256)), ("size", .int(size)), ("name", .string(name)), ("content_type", .string(contentType)),
            ("created_at", .string(created.rfc3339)), ("content_url", .string(ManagementRoutes.artifactContent.path(sha256))),
            ("device_url", .string(DeviceRoutes.artifact.path(sha256))),
        ])
    }
}

/// A download step of a deployment that fetches a server-hosted artifact.
struct ArtifactDownload {
    let step: Int
    let sha256: String
    let size: Int?
}

extension ManagementAPI {
    /// Finds the rendered download steps that name a server-hosted artifact and gives each the
    /// URL devices fetch it from (relative: this server, with the device's own token).
    static func artifactDownloads(_ steps: inout [JSON]) throws -> [ArtifactDownload] {
        var found: [ArtifactDownload] = []
        var problems: [Problem] = []
        for (index, step) in steps.enumerated() {
            guard var fields = step.objectValue, let sha256 = fields["artifact"]?.stringValue else { continue }
            if fields["sha256"]?.stringValue != sha256 {
                problems.append(Problem(field: "steps[\(index)].sha256", message: "must equal the artifact's SHA-256 (\(sha256)): artifacts are named by their content"))
            }
            fields["url"] = .string(DeviceRoutes.artifact.path(sha256))
            steps[index] = .object(fields)
            found.append(ArtifactDownload(step: index, sha256: sha256, size: fields["size"]?.intValue))
        }
        if !problems.isEmpty { throw APIError.invalid(problems) }
        return found
    }

    /// Every artifact the deployment downloads must be stored (with the size the flow says).
    /// FOR SHARE holds them until the deployment is committed: a concurrent delete waits, then sees it.
    static func checkArtifactsExist(_ conn: PGConnection, _ downloads: [ArtifactDownload]) throws {
        guard !downloads.isEmpty else { return }
        let rows = try conn.query("""
            SELECT sha256, size FROM artifacts WHERE sha256 = ANY(\(PGTextArray(downloads.map(\.sha256)))::text[]) FOR SHARE
            """)
        var sizes: [String: Int] = [:]
        for row in rows {
            let (sha256, size) = try row.decode(String.self, Int.self)
            sizes[sha256] = size
        }
        var problems: [Problem] = []
        for download in downloads {
            guard let size = sizes[download.sha256] else {
                problems.append(Problem(field: "steps[\(download.step)].artifact",
                                        message: "no artifact \(download.sha256) in the store; upload it first (POST /api/v1/artifacts)"))
                continue
            }
            if let declared = download.size, declared != size {
                problems.append(Problem(field: "steps[\(download.step)].size", message: "is \(declared) but the stored artifact has \(size) bytes"))
            }
        }
        if !problems.isEmpty { throw APIError.invalid(problems) }
    }
}
