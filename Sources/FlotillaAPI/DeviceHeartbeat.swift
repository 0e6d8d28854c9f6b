// A device's heartbeat (POST /api/v1/agent/heartbeat): what it runs (installed versions),
// its attributes, and "I just booted" with the boot's id. A boot is how a reboot step
// completes, or how the server learns a device fell back on its own, so each started
// execution of a reported app is fed `deviceBooted` through the executor.

import FlotillaCore
import FlotillaStore
import FlotillaTransport
import FlotillaWire

struct Heartbeat: Sendable {
    /// App → version, as the device reports them.
    var installed: [String: String]
    /// The attributes object as JSON text, when sent.
    var attributes: String?
    var booted: Bool
    var bootID: String?
}

extension DeviceAPI {
    static func readHeartbeat(_ request: HTTPRequest) throws -> Heartbeat {
        var body = try BodyReader(request)
        let installed = body.object("installed") ?? [:]
        let attributes = body.attributes("attributes")
        let booted = body.value("booted", required: false)
        let bootID = body.string("boot_id")
        try body.finish()
        var versions: [String: String] = [:]
        var problems: [Problem] = []
        for (app, value) in installed {
            if let text = value.stringValue, !text.isEmpty, text.utf8.count <= 128, Rules.isName(app) { versions[app] = text } else {
                problems.append(Problem(field: "installed.\(app)", message: "app names are names; versions are strings of 1 to 128 bytes"))
            }
        }
        if let booted, booted != .bool(true) && booted != .bool(false) { problems.append(Problem(field: "booted", message: "must be true or false")) }
        if let bootID, !(1...64).contains(bootID.utf8.count) { problems.append(Problem(field: "boot_id", message: "must be 1 to 64 bytes")) }
        if !problems.isEmpty { throw APIError.invalid(problems) }
        return Heartbeat(installed: versions, attributes: attributes, booted: booted == .bool(true), bootID: bootID)
    }

    func recordHeartbeat(_ beat: Heartbeat, from device: String) async throws {
        let now = Timestamp(engine.clock.now())
        let apps = beat.installed.keys.sorted()
        let appVersions = apps.map { beat.installed[$0]! }
        // A boot is news only once: with a boot_id, a retried heartbeat about the same boot
        // changes nothing (the conditional write below updates no row).
        let newBootID = beat.booted ? beat.bootID : nil
        let attributes = beat.attributes
        // Only what changed is written: each write to a device tells every replica's device
        // cache (migrations/0010), and a notifying commit is a third dearer. Last seen keeps
        // the 10 s grain the report path gives it. New attributes change the device's answer,
        // so they move its version (its ETag) like any other change of the body.
        let results = try await db.withConnection { conn in
            try conn.pipeline([
                """
                UPDATE devices SET last_seen_at = \(now)::timestamptz, attributes = coalesce(\(attributes)::jsonb, attributes),
                    version = version + CASE WHEN attributes IS DISTINCT FROM coalesce(\(attributes)::jsonb, attributes) THEN 1 ELSE 0 END
                WHERE id = \(device)::uuid
                  AND (last_seen_at IS NULL OR last_seen_at < \(now)::timestamptz - interval '10 seconds'
                       OR attributes IS DISTINCT FROM coalesce(\(attributes)::jsonb, attributes))
                """,
                """
                UPDATE devices SET last_boot_id = \(newBootID) WHERE id = \(device)::uuid
                  AND \(newBootID)::text IS NOT NULL AND last_boot_id IS DISTINCT FROM \(newBootID)::text
                """,
                """
                INSERT INTO installed_versions (device_id, app, version, updated_at)
                SELECT \(device)::uuid, a, v, \(now)::timestamptz
                FROM unnest(\(PGTextArray(apps))::text[], \(PGTextArray(appVersions))::text[]) AS x(a, v)
                ON CONFLICT (device_id, app) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at
                WHERE installed_versions.version IS DISTINCT FROM excluded.version
                """,
                """
                SELECT id::text, app FROM executions WHERE device_id = \(device)::uuid
                AND state IN (\(unsafe: ExecutionState.inFlightSQLList))
                """,
            ])
        }
        let inFlight = try results[3].map { try $0.decode(String.self, String.self) }
        let newBoot = beat.bootID == nil || results[1].affectedRows == 1
        // "I just booted": each started execution learns which version the device came back with.
        guard beat.booted && newBoot else { return }
        // An app the heartbeat does not mention tells us nothing: leave its execution alone.
        for (execution, app) in inFlight {
            guard let version = beat.installed[app] else { continue }
            _ = try await engine.apply(execution, device: device) { machine, now in machine.deviceBooted(version: version, at: now) }
        }
    }
}
