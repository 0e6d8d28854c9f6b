// The device's side of the artifact store: an agent downloads what one of its own
// executions names (Range requests resume; Artifacts.swift serves the file).

import FlotillaStore
import FlotillaTransport
import FlotillaWire

extension DeviceAPI {
    func registerArtifactRoute(on router: inout Router) {
        // The ranges of one download are not API calls: they get a bucket of their own, 20 times
        // the device's, so a 1 GB artifact in 4 MiB chunks is not throttled by the poll limit
        // (and downloading never starves the device's polls and reports of theirs).
        deviceRoute(&router, DeviceRoutes.artifact, limit: limits.device.scaled(by: 20), limitKey: ":download") { request, device in
            let sha256 = try Self.artifactID(request)
            // Only what one of the device's own executions tells it to download.
            guard let row = try await db.query("""
                SELECT a.content_type FROM artifacts a
                WHERE a.sha256 = \(sha256) AND EXISTS (
                    SELECT 1 FROM deployment_artifacts da JOIN executions e ON e.deployment_id = da.deployment_id
                    WHERE da.sha256 = a.sha256 AND e.device_id = \(device.id)::uuid)
                """).first else {
                throw APIError.notFound("no artifact \(sha256) for this device")
            }
            return try serveArtifact(sha256, contentType: try row.decode(String.self), for: request)
        }
    }
}
