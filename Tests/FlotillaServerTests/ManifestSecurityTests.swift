import FlotillaAPI
import FlotillaCore
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import Synchronization
import XCTest

/// Signed manifests against the real agent process. The agent talks to a hostile server (a
/// real HTTP/2 server on loopback that answers polls with what each test crafts) and is
/// configured with the genuine server's public key, as enrollment would hand it out. Each
/// bad manifest must be refused, naming why, before the agent acts on anything in it.
final class ManifestSecurityTests: XCTestCase {
    let genuine = try! ManifestSigner(key: .generate())
    let token = "flt_d_" + String(repeating: "a", count: 43)
    /// What the hostile server answers polls with, and how many reports reached it.
    final class Script: Sendable {
        let answer = Mutex<String>("")
        let reports = Atomic<Int>(0)
        let reportBodies = Mutex<[String]>([])
        /// Statuses the next reports are answered with (then 200), for delivery tests.
        let refusals = Mutex<[Int]>([])
    }
    let script = Script()
    var hostile: HTTPServer!
    var port = 0
    var work = ""

    override func setUp() async throws {
        work = NSTemporaryDirectory() + "flotilla-manifests-\(UUID().uuidString)"
        var router = Router()
        router.get("/api/v1/agent/next") { [script] _ in .json(200, script.answer.withLock { $0 }) }
        router.add("POST", "/api/v1/agent/heartbeat") { _ in .json(200, #"{"poll_interval":1,"poll_jitter":0}"#) }
        router.add("POST", "/api/v1/agent/executions/{id}/reports") { [script] request in
            script.reportBodies.withLock { $0.append(String(decoding: request.body, as: UTF8.self)) }
            script.reports.add(1, ordering: .relaxed)
            if let status = script.refusals.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
                return .error(status, code: "rate_limited", message: "slow down", headers: ["retry-after": "1"])
            }
            return .json(200, #"{"directive":"stop","state":"canceled","step":0,"result":"accepted"}"#)
        }
        hostile = try HTTPServer(configuration: .init(host: "127.0.0.1", port: 0, loopCount: 1), router: router)
        port = try hostile.start().port
    }

    override func tearDown() async throws {
        await hostile.shutdown(gracePeriod: .seconds(1))
        try? FileManager.default.removeItem(atPath: work)
    }

    /// A manifest as the genuine server would make it, for this agent's token unless told otherwise.
    func manifest(version: String = "2.0", signer: ManifestSigner? = nil, token: String? = nil, issuedAgo: Int = 0,
                  steps: [JSON] = [.fields([("kind", .string("run")), ("name", .string("install")), ("script", .string("true"))])]) throws -> JSON {
        let execution = JSON.fields([
            ("id", .string("0d0d0d0d-0000-4000-8000-000000000001")), ("app", .string("hardhat-detector")),
            ("version", .string(version)), ("state", .string("queued")), ("step", .int(0)), ("seq", .int(0)),
            ("steps", .array(steps)),
            ("rollback", .fields([("snapshot", .array([]))])),
        ])
        let now = Instant(microseconds: Int64((Date().timeIntervalSince1970 - Double(issuedAgo)) * 1_000_000))
        let signed = try (signer ?? genuine).sign(execution, tokenHash: Secrets.sha256((token ?? self.token).utf8), now: now)
        return .fields([("execution", execution), ("signed", signed)])
    }

    /// Runs the agent against the hostile server until it says what it did with the manifest.
    func agentVerdict(_ body: JSON, seedTrust: JSON? = nil, awaitingReports: Int = 0) async throws -> String {
        script.answer.withLock { $0 = body.serialized }
        try FileManager.default.createDirectory(atPath: work + "/state", withIntermediateDirectories: true)
        if let seedTrust { try seedTrust.serialized.write(toFile: work + "/state/trust.json", atomically: true, encoding: .utf8) }
        let agent = try ChildProcess(productsDirectory.appendingPathComponent("flotilla-agent").path,
                                     ["run", "--config", work + "/none.conf", "--server", "http://127.0.0.1:\(port)", "--token", token,
                                      "--state-dir", work + "/state", "--poll-wait", "0", "--poll-min", "0", "--poll-max", "1",
                                      "--reboot-command", "exit",
                                      "--signing-key=" + Base64URL.encode(genuine.key.publicKey)])  // "=": a key may start with "-"
        let killer = DispatchWorkItem { agent.signal(SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 20, execute: killer)
        let verdict = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var seen = ""
                while let line = agent.readLine() {
                    seen += line
                    if line.contains("refusing the manifest") || line.contains("execution 0d0d0d0d") { break }
                }
                continuation.resume(returning: seen)
            }
        }
        if awaitingReports > 0 {
            try await eventually("the agent reported", seconds: 10) { [script] in script.reports.load(ordering: .relaxed) >= awaitingReports }
        }
        killer.cancel()
        agent.signal(SIGKILL)
        TestLog.append(agent.readToEnd())
        agent.wait()
        try? FileManager.default.removeItem(atPath: work + "/state")
        return verdict
    }

    func testTheAgentRefusesUnsignedTamperedForeignExpiredAndReplayedManifests() async throws {
        let good = try manifest()
        var unsigned = good.objectValue!
        unsigned["signed"] = nil
        var verdict = try await agentVerdict(.object(unsigned))
        XCTAssertTrue(verdict.contains("refusing the manifest: unsigned"), verdict)

        // Tampered: the payload says 6.6 now, under the signature made for 2.0.
        var tampered = good.objectValue!
        var signed = tampered["signed"]!.objectValue!
        let payload = String(decoding: Base64URL.decode(signed["payload"]!.stringValue!)!, as: UTF8.self)
        XCTAssertTrue(payload.contains(#""version":"2.0""#))
        signed["payload"] = .string(Base64URL.encode(Array(payload.replacingOccurrences(of: #""version":"2.0""#, with: #""version":"6.6""#).utf8)))
        tampered["signed"] = .object(signed)
        verdict = try await agentVerdict(.object(tampered))
        XCTAssertTrue(verdict.contains("refusing the manifest: bad signature"), verdict)

        // Well formed, but signed by a key that is not the server's.
        verdict = try await agentVerdict(try manifest(signer: ManifestSigner(key: .generate())))
        XCTAssertTrue(verdict.contains("refusing the manifest: bad signature"), verdict)

        verdict = try await agentVerdict(try manifest(token: "flt_d_" + String(repeating: "b", count: 43)))
        XCTAssertTrue(verdict.contains("refusing the manifest: replayed: made for another device's token"), verdict)

        verdict = try await agentVerdict(try manifest(issuedAgo: 3_700))  // signed lifetime: 3,600 s
        XCTAssertTrue(verdict.contains("refusing the manifest: expired"), verdict)

        // Genuine and unexpired, but older than one this agent already accepted.
        let now = Int(Date().timeIntervalSince1970)
        let trust = JSON.fields([("public_key", .string(Base64URL.encode(genuine.key.publicKey))), ("high_water", .int(now)),
                                 ("finished", .array([]))])
        verdict = try await agentVerdict(try manifest(issuedAgo: 600), seedTrust: trust)
        XCTAssertTrue(verdict.contains("refusing the manifest: replayed: issued at"), verdict)

        // An execution this agent already finished, handed out again.
        let finished = JSON.fields([("public_key", .string(Base64URL.encode(genuine.key.publicKey))), ("high_water", .int(0)),
                                    ("finished", .array([.string("0d0d0d0d-0000-4000-8000-000000000001")]))])
        verdict = try await agentVerdict(good, seedTrust: finished)
        XCTAssertTrue(verdict.contains("refusing the manifest: replayed: execution 0d0d0d0d-0000-4000-8000-000000000001 already finished"), verdict)
        XCTAssertEqual(script.reports.load(ordering: .relaxed), 0, "a refused manifest is never acted on")

        // The control: the same manifest, genuine and fresh, is accepted.
        verdict = try await agentVerdict(good)
        XCTAssertTrue(verdict.contains("execution 0d0d0d0d-0000-4000-8000-000000000001: hardhat-detector 2.0"), verdict)
    }

    /// A genuine manifest from a newer server, with a step kind this agent does not know: it
    /// must never run as anything else (an unknown kind once became `run`: a future `upload`
    /// step would have been executed as a shell script). The agent refuses it and tells the
    /// server, so the execution ends with the reason instead of coming back at every poll.
    func testAStepKindTheAgentDoesNotKnowIsRefusedAndReportedNeverRun() async throws {
        let marker = work + "/ran"
        let future = try manifest(steps: [.fields([("kind", .string("upload")), ("name", .string("send")), ("script", .string("touch \(marker)"))]),
                                          .fields([("kind", .string("verify")), ("name", .string("check"))])])
        let verdict = try await agentVerdict(future, awaitingReports: 1)
        XCTAssertTrue(verdict.contains("refusing the manifest: step 0 is of kind 'upload', which this agent does not know"), verdict)
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker), "the unknown step ran")
        let reports = script.reportBodies.withLock { $0 }
        XCTAssertEqual(reports.count, 1, "\(reports)")
        let report = try JSON.parse(Array((reports.first ?? "").utf8))
        XCTAssertEqual(report.objectValue?["event"], .string("step_failed"))
        XCTAssertEqual(report.objectValue?["step"], .int(0))
        XCTAssertEqual(report.objectValue?["seq"], .int(1))
        XCTAssertTrue(report.objectValue?["message"]?.stringValue?.contains("upgrade the agent") == true, report.serialized)
    }

    /// A report the server did not take (429, or 503) is kept and sent again, after the
    /// Retry-After, before anything later: a dropped step_started once left the server
    /// refusing every later report of the execution.
    func testAReportAnswered429IsSentAgainNotDropped() async throws {
        script.refusals.withLock { $0 = [429, 503] }
        let future = try manifest(steps: [.fields([("kind", .string("upload")), ("name", .string("send"))])])
        _ = try await agentVerdict(future, awaitingReports: 3)
        let reports = script.reportBodies.withLock { $0 }
        XCTAssertEqual(reports.count, 3, "sent, refused twice, heard the third time: \(reports)")
        XCTAssertEqual(Set(reports).count, 1, "the same report each time: \(reports)")
    }

    func testSignaturesVerifyOnlyForTheExactBytesAndKey() throws {
        let key = try Ed25519.PrivateKey.generate()
        let message = Array("manifest".utf8)
        let signature = try key.sign(message)
        XCTAssertTrue(Ed25519.verify(signature: signature, of: message, publicKey: key.publicKey))
        XCTAssertFalse(Ed25519.verify(signature: signature, of: Array("manifesT".utf8), publicKey: key.publicKey))
        XCTAssertFalse(Ed25519.verify(signature: signature, of: message, publicKey: try Ed25519.PrivateKey.generate().publicKey))
        XCTAssertFalse(Ed25519.verify(signature: Array(signature.dropLast()), of: message, publicKey: key.publicKey))
        XCTAssertEqual(try Ed25519.PrivateKey(seed: key.seed).publicKey, key.publicKey, "the seed file is the whole key")
        XCTAssertThrowsError(try Ed25519.PrivateKey(seed: [1, 2, 3]))
    }
}
