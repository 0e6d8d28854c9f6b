// The artifact store through the real server and PostgreSQL: streamed uploads over HTTP/2
// (our client) and HTTP/1.1 (curl), content addressing, checksums and limits, downloads
// with Range / If-Range / ETag / HEAD, a device resuming a download with curl -C -, and
// deployments that pin the artifacts they download.

import FlotillaAPI
import FlotillaStore
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

final class ArtifactTests: XCTestCase {
    var server: APIServer!
    var admin: APIClient!
    var directory: URL!
    var modelPath: String { directory.appendingPathComponent("model.zip").path }
    var model: [UInt8] = []
    var modelSHA = ""

    /// 3 MiB of binary (every byte value), a few times larger than a stream window.
    static let fixture: ([UInt8], String) = {
        let bytes = (0..<(3 << 20)).map { i in UInt8(truncatingIfNeeded: (i &* 2_654_435_761) >> 11) }
        return (bytes, hexString(Secrets.sha256(bytes)))
    }()

    override func setUp() async throws {
        server = try APIServer(maxArtifactBytes: 4 << 20)
        admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-artifacts-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        (model, modelSHA) = Self.fixture
        XCTAssertTrue(FileManager.default.createFile(atPath: modelPath, contents: Data(model)))
    }

    override func tearDown() async throws {
        await admin.close()
        await server.stop()
        try? FileManager.default.removeItem(at: directory)
        try? FileManager.default.removeItem(atPath: server.artifactDirectory)
    }

    private func upload(_ path: String, name: String = "model.zip", checksum: String? = nil) async throws -> ClientResponse {
        let client = try await HTTP2Client.connect(to: server.url)
        defer { Task { await client.close() } }
        var headers: HTTPHeaders = ["authorization": "Bearer \(server.adminToken)", "content-type": "application/zip"]
        if let checksum { headers.add("x-checksum-sha256", checksum) }
        return try await client.send(ClientRequest(method: "POST", path: "/api/v1/artifacts?name=\(name)", headers: headers,
                                                   body: .file(path: path)), timeout: .seconds(60))
    }

    private func curl(_ arguments: [String]) throws -> String {
        let result = try runProcess(try XCTUnwrap(which("curl")), ["-sS", "--max-time", "60"] + arguments)
        XCTAssertEqual(result.status, 0, result.output)
        return result.output
    }

    private func storedFiles() -> [String] {
        let root = server.artifactDirectory
        let shards = (try? FileManager.default.contentsOfDirectory(atPath: root + "/sha256")) ?? []
        return shards.flatMap { (try? FileManager.default.contentsOfDirectory(atPath: root + "/sha256/" + $0)) ?? [] }
    }

    func testUploadOverBothProtocolsIsContentAddressedAndDownloadsHonourRanges() async throws {
        let first = try await upload(modelPath, checksum: modelSHA.uppercased())
        XCTAssertEqual(first.status, 201, first.bodyText)
        let record = try JSON.parse(first.body)
        XCTAssertEqual(record["sha256"]?.stringValue, modelSHA)
        XCTAssertEqual(record["size"]?.intValue, model.count)
        XCTAssertEqual(record["content_type"]?.stringValue, "application/zip")

        // The same bytes again over HTTP/1.1 (what a pipeline's curl sends): one file, the first record.
        let again = try curl(["-w", "\n%{http_code}", "-H", "authorization: Bearer \(server.adminToken)",
                              "--data-binary", "@\(modelPath)", "\(server.url)/api/v1/artifacts?name=other.zip"])
        XCTAssertTrue(again.hasSuffix("\n200"), again)
        XCTAssertTrue(again.contains(#""name":"model.zip""#), again)
        XCTAssertEqual(storedFiles(), [modelSHA])
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: server.artifactDirectory + "/incoming")) ?? ["?"], [])

        let list = try await admin.call("GET", "/api/v1/artifacts")
        expect(list, 200)
        XCTAssertEqual(list.json["items"]?[0]?["sha256"]?.stringValue, modelSHA)
        let one = try await admin.call("GET", "/api/v1/artifacts/\(modelSHA)")
        expect(one, 200)
        XCTAssertEqual(one.json["live_deployments"], .array([]))
        expect(try await admin.call("GET", "/api/v1/artifacts/\(String(repeating: "0", count: 64))"), 404, code: "not_found")
        expect(try await admin.call("GET", "/api/v1/artifacts/not-a-sha"), 404, code: "not_found")

        let client = try await HTTP2Client.connect(to: server.url, maxResponseBytes: 16 << 20)
        let auth: HTTPHeaders = ["authorization": "Bearer \(server.adminToken)"]
        let path = "/api/v1/artifacts/\(modelSHA)/content"
        let whole = try await client.send(ClientRequest(path: path, headers: auth))
        XCTAssertEqual(whole.status, 200)
        XCTAssertTrue(whole.body == model, "downloaded bytes differ")
        XCTAssertEqual(whole.headers["etag"], "\"\(modelSHA)\"")
        XCTAssertEqual(whole.headers["accept-ranges"], "bytes")
        XCTAssertEqual(whole.headers["content-type"], "application/zip")

        func get(_ extra: [(String, String)]) async throws -> ClientResponse {
            var headers = auth
            for (name, value) in extra { headers.add(name, value) }
            return try await client.send(ClientRequest(path: path, headers: headers))
        }
        let middle = try await get([("range", "bytes=1000-1999")])
        XCTAssertEqual(middle.status, 206)
        XCTAssertEqual(middle.headers["content-range"], "bytes 1000-1999/\(model.count)")
        XCTAssertTrue(middle.body == Array(model[1000..<2000]))
        let tail = try await get([("range", "bytes=-10")])
        XCTAssertTrue(tail.status == 206 && tail.body == Array(model.suffix(10)))
        let rest = try await get([("range", "bytes=\(model.count - 5)-"), ("if-range", "\"\(modelSHA)\"")])
        XCTAssertTrue(rest.status == 206 && rest.body == Array(model.suffix(5)))
        // A resume against a different file gets the whole (new) file instead of a splice.
        let changed = try await get([("range", "bytes=10-"), ("if-range", "\"\(String(repeating: "1", count: 64))\"")])
        XCTAssertEqual(changed.status, 200)
        XCTAssertEqual(changed.body.count, model.count)
        let beyond = try await get([("range", "bytes=\(model.count)-")])
        XCTAssertEqual(beyond.status, 416)
        XCTAssertEqual(beyond.headers["content-range"], "bytes */\(model.count)")
        let cached = try await get([("if-none-match", "\"\(modelSHA)\"")])
        XCTAssertTrue(cached.status == 304 && cached.body.isEmpty)
        let head = try await client.send(ClientRequest(method: "HEAD", path: path, headers: auth))
        XCTAssertTrue(head.status == 200 && head.body.isEmpty && head.headers["content-length"] == String(model.count))
        await client.close()
    }

    func testBadUploadsStoreNothing() async throws {
        let mismatch = try await upload(modelPath, checksum: String(repeating: "0", count: 64))
        XCTAssertEqual(mismatch.status, 422)
        XCTAssertTrue(mismatch.bodyText.contains("checksum_mismatch"), mismatch.bodyText)
        expect(try await admin.call("POST", "/api/v1/artifacts", ""), 422, code: "invalid")
        expect(try await admin.call("POST", "/api/v1/artifacts?name=a/b", "x"), 422, code: "invalid")
        expect(try await admin.call("POST", "/api/v1/artifacts", "x", headers: ["x-checksum-sha256": "abc"]), 422, code: "invalid")
        expect(try await admin.call("POST", "/api/v1/artifacts?colour=red", "x"), 400, code: "unknown_parameter")

        // Over the limit (4 MiB here): refused from Content-Length, before any byte is read.
        let big = directory.appendingPathComponent("big.bin").path
        XCTAssertTrue(FileManager.default.createFile(atPath: big, contents: Data(count: 5 << 20)))
        let tooLarge = try await upload(big)
        XCTAssertEqual(tooLarge.status, 413)
        // Chunked over HTTP/1.1 has no length up front: refused once it crosses the limit.
        let chunked = try runProcess(try XCTUnwrap(which("curl")), ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "transfer-encoding: chunked",
                                                                 "-H", "authorization: Bearer \(server.adminToken)", "--data-binary", "@\(big)",
                                                                 "\(server.url)/api/v1/artifacts"])
        XCTAssertTrue(chunked.output == "413" || chunked.status != 0, "chunked upload over the limit: \(chunked)")

        let viewer = try await admin.call("POST", "/api/v1/tokens", #"{"name":"watcher","role":"viewer"}"#)
        let viewerClient = APIClient(port: server.port, token: viewer.json["secret"]?.stringValue, wire: .h1)
        expect(try await viewerClient.call("POST", "/api/v1/artifacts", "x"), 403, code: "forbidden")
        expect(try await viewerClient.call("GET", "/api/v1/artifacts"), 200)
        let anonymous = APIClient(port: server.port, token: nil, wire: .h2)
        expect(try await anonymous.call("POST", "/api/v1/artifacts", "x"), 401)

        let list = try await admin.call("GET", "/api/v1/artifacts")
        XCTAssertEqual(list.json["items"], .array([]))
        XCTAssertEqual(storedFiles(), [])
        try await waitForIncomingToEmpty()
    }

    private func waitForIncomingToEmpty() async throws {
        // The 413 answers before the handler has given up its temporary file.
        for _ in 0..<200 {
            if ((try? FileManager.default.contentsOfDirectory(atPath: server.artifactDirectory + "/incoming")) ?? []).isEmpty { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTFail("temporary upload files left behind")
    }

    func testDeploymentsPinTheirArtifactsAndDevicesDownloadOnlyTheirOwn() async throws {
        _ = try await admin.applyFlowFile("hardhat-model.yaml")
        expect(try await admin.call("POST", "/api/v1/groups", #"{"name":"site-berlin"}"#), 201)
        let cam = try await ScriptedDevice(server: server, admin: admin, name: "cam-1", groups: ["site-berlin"])
        let outsider = try await ScriptedDevice(server: server, admin: admin, name: "cam-2")
        func body(_ sha: String, size: Int) -> String {
            #"{"flow":{"name":"hardhat-model"},"target":{"groups":["site-berlin"]},"params":{"version":"1.4","artifact":"\#(sha)","size":\#(size)}}"#
        }
        let missing = try await admin.call("POST", "/api/v1/deployments", body(modelSHA, size: model.count))
        expect(missing, 422, code: "invalid")
        XCTAssertEqual(missing.json["error"]?["details"]?[0]?["field"]?.stringValue, "steps[0].artifact")

        let uploaded = try await upload(modelPath)
        XCTAssertEqual(uploaded.status, 201)
        let wrongSize = try await admin.call("POST", "/api/v1/deployments", body(modelSHA, size: 5))
        expect(wrongSize, 422, code: "invalid")
        XCTAssertEqual(wrongSize.json["error"]?["details"]?[0]?["field"]?.stringValue, "steps[0].size")

        let created = try await admin.call("POST", "/api/v1/deployments", body(modelSHA, size: model.count))
        expect(created, 201)
        let deployment = try XCTUnwrap(created.json["id"]?.stringValue)
        let execution = try await cam.next()
        let url = try XCTUnwrap(execution?["steps"]?[0]?["url"]?.stringValue)
        XCTAssertEqual(url, "/api/v1/agent/artifacts/\(modelSHA)")

        // A device on a flaky link: half the file, then curl resumes from where it stopped.
        let partial = directory.appendingPathComponent("download.part").path
        XCTAssertTrue(FileManager.default.createFile(atPath: partial, contents: Data(model[0..<(model.count / 2)])))
        let code = try curl(["-o", partial, "-C", "-", "-w", "%{http_code}", "-H", "authorization: Bearer \(cam.token)", server.url + url])
        XCTAssertEqual(code, "206")
        XCTAssertTrue(Array(try Data(contentsOf: URL(fileURLWithPath: partial))) == model, "resumed download differs")

        expect(try await outsider.client.call("GET", url), 404, code: "not_found")
        expect(try await cam.client.call("GET", "/api/v1/agent/artifacts/\(String(repeating: "0", count: 64))"), 404)
        expect(try await APIClient(port: server.port, token: server.adminToken, wire: .h2).call("GET", url), 401)

        let inUse = try await admin.call("DELETE", "/api/v1/artifacts/\(modelSHA)")
        expect(inUse, 409, code: "artifact_in_use")
        XCTAssertEqual(inUse.json["error"]?["details"]?["deployments"], .array([.string(deployment)]))
        let pinned = try await admin.call("GET", "/api/v1/artifacts/\(modelSHA)")
        XCTAssertEqual(pinned.json["live_deployments"], .array([.string(deployment)]))

        // Once nothing live needs it, it can go: record, file and downloads.
        expect(try await admin.call("POST", "/api/v1/deployments/\(deployment)/cancel"), 200)
        try await cam.report(execution!["id"]!.stringValue!, "step_failed", step: 0, extra: #","detail":{"message":"canceled"}"#)
        expect(try await admin.call("DELETE", "/api/v1/artifacts/\(modelSHA)"), 204)
        XCTAssertEqual(storedFiles(), [])
        expect(try await cam.client.call("GET", url), 404)
        expect(try await admin.call("DELETE", "/api/v1/artifacts/\(modelSHA)"), 404)
    }

    /// A file no row names (an upload whose commit failed after the rename) and a crashed
    /// upload's leftover are collected; a stored artifact and a fresh upload file are not.
    func testOrphanedFilesAreCollected() async throws {
        let stored = try await admin.call("POST", "/api/v1/artifacts?name=model.zip", sampleArtifact)
        expect(stored, 201)
        let orphan = hexString(Secrets.sha256(Array("lost in a failed commit".utf8)))
        let orphanPath = server.artifactDirectory + "/sha256/\(orphan.prefix(2))/\(orphan)"
        try FileManager.default.createDirectory(atPath: (orphanPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try "lost in a failed commit".write(toFile: orphanPath, atomically: true, encoding: .utf8)
        let crashed = server.artifactDirectory + "/incoming/crashed-upload", live = server.artifactDirectory + "/incoming/live-upload"
        for path in [crashed, live] { XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data("partial".utf8))) }
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-2 * 86_400)], ofItemAtPath: crashed)

        let removed = try await server.api.collectOrphanArtifacts()
        XCTAssertEqual(removed, [orphan])
        XCTAssertFalse(FileManager.default.fileExists(atPath: orphanPath))
        XCTAssertFalse(FileManager.default.fileExists(atPath: crashed))
        XCTAssertTrue(FileManager.default.fileExists(atPath: live), "an upload still being written stays")
        let content = try await admin.call("GET", "/api/v1/artifacts/\(sampleSHA)/content")
        XCTAssertEqual(content.text, sampleArtifact, "the stored artifact is untouched")
        let again = try await server.api.collectOrphanArtifacts()
        XCTAssertEqual(again, [])
    }
}
