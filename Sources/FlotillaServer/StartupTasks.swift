// What the server does beside serving: apply the flow files at start-up, sweep deadlines.

import ArgumentParser
import FlotillaAPI
import FlotillaFlowFiles
import FlotillaStore
import Foundation
import Logging

extension Serve {
    /// Applies every flow file: a changed file becomes the flow's next version, an
    /// unchanged one is a no-op. A bad file stops the start with each problem's location.
    func applyFlowFiles(_ options: PGConnectionOptions) throws {
        let directory = flows ?? environment("FLOTILLA_FLOWS") ?? "./flows"
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            if flows != nil { throw ValidationError("--flows \(directory) is not a directory") }
            return
        }
        let connection = try PGConnection(options)
        for (file, flow) in try FlowFiles.load(directory: directory) {
            let (json, created) = try ManagementAPI.applyFlow(connection, flow)
            if created { say("applied flow \(flow.name) version \(json.objectValue?["version"]?.serialized ?? "?") from \(file)") }
        }
    }

    /// Acts on overdue executions every --sweep-interval seconds until canceled.
    func startSweeper(_ context: APIContext) -> Task<Void, Never> {
        let interval = Duration.milliseconds(Int(sweepInterval * 1000))
        let logger = Logger(label: "flotilla.sweeper")
        return Task {
            var nextCollection = ContinuousClock.now
            while !Task.isCancelled {
                do {
                    // A full batch means more are overdue: sweep again at once.
                    while try await context.sweepDeadlines() == 500 {}
                } catch {
                    logger.warning("deadline sweep failed", metadata: ["error": .string(String(describing: error))])
                }
                // At start, then hourly: artifact files that a failed upload left behind.
                if ContinuousClock.now >= nextCollection {
                    nextCollection = ContinuousClock.now + .seconds(3600)
                    do { try await context.collectOrphanArtifacts() } catch {
                        logger.warning("artifact collection failed", metadata: ["error": .string(String(describing: error))])
                    }
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
