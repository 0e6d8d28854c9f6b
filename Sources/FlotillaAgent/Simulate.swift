// `flotilla-agent simulate`: N virtual devices in one process, for demos and load tests.
// They register through the management API, then each polls the device API and walks
// every manifest it gets through its steps, reporting like a real agent (seq numbers,
// reboots reported as `booted`, rollbacks when told to) but running no scripts: a step
// takes `--step-time` seconds and fails with the probability given by `--fail`.
//
// A live line per second on stderr, a final summary on stdout (`--json` for scripts).

import ArgumentParser
import FlotillaJSON
import FlotillaTransport
import FlotillaWire
import Foundation
import Synchronization

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run virtual devices against a real server.",
        discussion: """
            Example: flotilla-agent simulate --server http://127.0.0.1:8080 --token "$(cat .flotilla/admin-token)" \\
                       --devices 1000 --group site-berlin --fail run=0.05 --fail verify=0.02
            Then deploy a flow to the group; the simulator prints what its devices did.
            """)

    @Option(help: "Server URL. Env: FLOTILLA_URL.")
    var server: String?

    @Option(help: "Admin API token, to register the devices. Env: FLOTILLA_TOKEN.")
    var token: String?

    @Option(help: "How many virtual devices.")
    var devices = 100

    @Option(help: "Put every device in this group (created if missing).")
    var group: String?

    @Option(help: "Device name prefix (default: sim-<random>-).")
    var prefix: String?

    @Option(help: "Seconds each step takes.")
    var stepTime: Double = 0.5

    @Option(name: .customLong("fail"), help: "KIND=P: a step of that kind (download, run, reboot, verify, rollback) fails with probability P. Repeatable.")
    var failures: [String] = []

    @Option(help: "Seconds a poll waits on the server when there is nothing to do.")
    var pollWait = 30

    @Option(help: "HTTP/2 connections shared by the devices (default: one per 50 devices).")
    var connections: Int?

    @Option(help: "Stop after this many seconds.")
    var duration: Double?

    @Option(help: "Stop once this many executions have ended (succeeded, failed, rolled back…).")
    var executions: Int?

    @Flag(help: "Print the final summary as JSON.")
    var json = false

    func validate() throws {
        guard devices > 0 else { throw ValidationError("--devices must be at least 1") }
        guard stepTime >= 0 else { throw ValidationError("--step-time cannot be negative") }
        _ = try FailureRates(failures)
    }

    func run() async throws {
        let url = server ?? ProcessInfo.processInfo.environment["FLOTILLA_URL"] ?? "http://127.0.0.1:8080"
        guard let adminToken = token ?? ProcessInfo.processInfo.environment["FLOTILLA_TOKEN"] else {
            throw ValidationError("an admin token is needed to register devices: --token or FLOTILLA_TOKEN")
        }
        let count = connections ?? max(1, min(200, (devices + 49) / 50))
        var clients: [HTTP2Client] = []
        do {
            for _ in 0..<count { clients.append(try await HTTP2Client.connect(to: url)) }
        } catch {
            throw ValidationError("cannot reach \(url): \(error)")
        }
        var shared: [SharedConnection] = []
        for client in clients { shared.append(SharedConnection(url: url, client: client)) }
        // Virtual devices check manifest signatures as agents do, against the server's key.
        let keyAnswer = try await clients[0].send(ClientRequest(path: DeviceRoutes.signingKey.path()))
        guard keyAnswer.status == 200, let keyText = (try? JSON.parse(keyAnswer.body))?.objectValue?["public_key"]?.stringValue,
              let signingKey = Base64URL.decode(keyText), signingKey.count == 32 else {
            throw ValidationError("\(DeviceRoutes.signingKey) answered \(keyAnswer.status)")
        }
        let namePrefix = prefix ?? "sim-\(String(UInt16.random(in: 0...UInt16.max), radix: 16))-"
        let started = Date()
        let registered = try await Registrar(client: clients[0], token: adminToken)
            .register(devices, prefix: namePrefix, group: group, connections: shared)
        log("registered \(registered.count) devices (\(namePrefix)*) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s over \(count) connections")

        let stats = SimulatorStats()
        let behaviour = VirtualDevice.Behaviour(stepTime: stepTime, failures: try FailureRates(failures), pollWait: pollWait,
                                                signingKey: signingKey)
        let runStarted = Date()
        let connected = shared
        // ^C ends the run like --duration does: the summary is printed all the same.
        Self.stopOnInterrupt(stats)
        await withTaskGroup(of: Void.self) { tasks in
            for device in registered {
                tasks.addTask { await VirtualDevice(device, behaviour: behaviour, stats: stats).run() }
            }
            tasks.addTask {
                var last = stats.snapshot
                while !Task.isCancelled && !stats.stopped {
                    try? await Task.sleep(for: .seconds(1))
                    let now = stats.snapshot
                    log(now.line(since: runStarted, previous: last))
                    last = now
                    if let duration, Date().timeIntervalSince(runStarted) >= duration { break }
                    if let executions, now.ended >= executions { break }
                }
                stats.stop()
                // Closing the connections ends the polls still held open on the server.
                for connection in connected { await connection.close() }
            }
            await tasks.next()  // the reporter: it ends the run
            tasks.cancelAll()
        }
        let final = stats.snapshot
        print(json ? final.json(seconds: Date().timeIntervalSince(runStarted)).serialized
                   : final.summary(seconds: Date().timeIntervalSince(runStarted)))
    }

    /// SIGINT stops the virtual devices (their summary still prints). Created outside any
    /// actor: a Dispatch signal source must not capture main-actor state.
    nonisolated static func stopOnInterrupt(_ stats: SimulatorStats) {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { stats.stop() }
        source.resume()
        interrupt.source = source  // kept for the life of the process
    }

    /// Written once, at start, before any device runs.
    private final class Interrupt: @unchecked Sendable { var source: (any DispatchSourceSignal)? }
    private static let interrupt = Interrupt()
}

func log(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// `--fail KIND=P` values.
struct FailureRates: Sendable {
    var rates: [String: Double] = [:]

    init(_ specs: [String]) throws {
        let kinds = ["download", "run", "reboot", "verify", "rollback"]
        for spec in specs {
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, kinds.contains(parts[0]), let p = Double(parts[1]), (0...1).contains(p) else {
                throw ValidationError("--fail \(spec): expected KIND=P with KIND one of \(kinds.joined(separator: ", ")) and P from 0 to 1")
            }
            rates[parts[0]] = p
        }
    }

    func fails(_ kind: String) -> Bool { Double.random(in: 0..<1) < (rates[kind] ?? 0) }
}

/// Registers the virtual devices through the management API, 32 at a time.
struct Registrar {
    let client: HTTP2Client
    let token: String
    private static let warned = Mutex(false)

    /// Sends, waiting out 429s: a server with default limits lets one token register about
    /// 50 devices a second (start it with `--rate-limit-token off` for big simulations).
    func sendRetrying(_ request: ClientRequest) async throws -> ClientResponse {
        while true {
            let response = try await client.send(request)
            guard response.status == 429 else { return response }
            if !Self.warned.withLock({ let was = $0; $0 = true; return was }) {
                FileHandle.standardError.write(Data("the server rate-limits this token (429); registering more slowly. For big simulations start it with --rate-limit-token off\n".utf8))
            }
            try await Task.sleep(for: .seconds(Double(response.headers["retry-after"] ?? "") ?? 1))
        }
    }

    func register(_ count: Int, prefix: String, group: String?, connections: [SharedConnection]) async throws -> [VirtualDevice.Identity] {
        let auth: HTTPHeaders = ["authorization": "Bearer \(token)", "content-type": "application/json"]
        if let group {
            let body = JSON.object(["name": .string(group)]).serialized
            let created = try await client.send(ClientRequest(method: ManagementRoutes.createGroup.method, path: ManagementRoutes.createGroup.path(), headers: auth, body: .bytes(Array(body.utf8))))
            guard [201, 409].contains(created.status) else { throw ValidationError("creating group \(group): \(created.status) \(created.bodyText)") }
        }
        var identities: [VirtualDevice.Identity] = []
        for batch in stride(from: 0, to: count, by: 32) {
            let made = try await withThrowingTaskGroup(of: VirtualDevice.Identity.self) { tasks in
                for index in batch..<min(count, batch + 32) {
                    tasks.addTask {
                        let name = prefix + String(format: "%06d", index)
                        var device: [String: JSON] = ["name": .string(name), "labels": .object(["simulated": .string("true")])]
                        if let group { device["groups"] = .array([.string(group)]) }
                        let body = JSON.object(device).serialized
                        let response = try await sendRetrying(ClientRequest(method: ManagementRoutes.createDevice.method, path: ManagementRoutes.createDevice.path(), headers: auth,
                                                                            body: .bytes(Array(body.utf8))))
                        guard response.status == 201, let parsed = try? JSON.parse(response.body),
                              let secret = parsed.objectValue?["device_token"]?.stringValue else {
                            throw ValidationError("registering \(name): \(response.status) \(response.bodyText)")
                        }
                        return VirtualDevice.Identity(name: name, token: secret, connection: connections[index % connections.count])
                    }
                }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
            identities += made
        }
        return identities
    }
}
