// A download step whose url is an external artifact host (Artifactory, S3): the real agent
// against a real HTTP/1.1 server on loopback (Python's http.server, a separate process)
// that redirects, drops the connection halfway through the first transfer, and then
// answers the agent's `Range` request with the rest. A 404 fails at once, and a host
// sending more than the signed size is cut off.

import FlotillaAPI
import FlotillaFlowFiles
import FlotillaStore
import FlotillaTestSupport
import Foundation
import XCTest

final class ExternalDownloadTests: XCTestCase {
    /// Serves `/model.bin` (Range-aware), `/redirect` (302 to it) and 404 otherwise; the first
    /// transfer of the file stops halfway and the connection is cut. Prints its port, logs
    /// "path range" per request.
    static let host = #"""
        import http.server, sys
        data = open(sys.argv[1], 'rb').read()
        log = open(sys.argv[2], 'a')
        state = {'dropped': False}
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *args): pass
            def do_GET(self):
                rng = self.headers.get('Range')
                log.write(f"{self.path} {rng}\n"); log.flush()
                if self.path == '/redirect':
                    self.send_response(302); self.send_header('Location', '/model.bin'); self.send_header('Content-Length', '0'); self.end_headers(); return
                if self.path == '/huge':
                    body = data * 4
                    self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
                    self.wfile.write(body); return
                if self.path != '/model.bin':
                    self.send_response(404); self.send_header('Content-Length', '0'); self.end_headers(); return
                start = int(rng.split('=')[1].split('-')[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng: self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                self.send_header('Content-Length', str(len(body))); self.end_headers()
                if not state['dropped']:
                    state['dropped'] = True
                    self.wfile.write(body[:len(body) // 2]); self.wfile.flush()
                    self.connection.shutdown(2); self.close_connection = True
                    return
                self.wfile.write(body)
        server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """#

    func testRedirectDropAndResumeThenA404() async throws {
        let server = try APIServer()
        let admin = APIClient(port: server.port, token: server.adminToken, wire: .h2)
        // The agent-test flow, downloading from a URL instead of the server's store.
        let flow = AgentTests.flow.replacingOccurrences(of: #"artifact: "${artifact}""#, with: #"url: "${url}""#)
            .replacingOccurrences(of: "  artifact: {type: string}", with: "  artifact: {type: string}\n  url: {type: string}")
        let rig = try await AgentRig.make(admin: admin, flow: flow)
        defer { rig.remove() }
        let work = rig.work
        try sampleArtifact.write(toFile: work + "/model.bin", atomically: true, encoding: .utf8)
        let device = try await ScriptedDevice(server: server, admin: admin, name: "camera-1")

        let host = try ChildProcess("/usr/bin/python3", ["-c", Self.host, work + "/model.bin", work + "/host.log"])
        defer { host.signal(SIGKILL); _ = host.readToEnd(); _ = host.wait() }
        let port = try XCTUnwrap(host.readLine().flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) })

        func run(_ version: String, path: String) async throws -> JSON {
            let created = try await admin.call("POST", "/api/v1/deployments",
                                               rig.deployment(version: version, params: #""url":"http://127.0.0.1:\#(port)\#(path)""#))
            expect(created, 201)
            let deployment = try XCTUnwrap(created.json["id"]?.stringValue)
            return try await rig.supervise(deployment, admin: admin) {
                try rig.startAgent(["--config", work + "/none.conf", "--server", server.url, "--token", device.token])
            }.execution
        }

        let succeeded = try await run("2.0", path: "/redirect")
        XCTAssertEqual(succeeded["state"], .string("succeeded"), succeeded.serialized)
        XCTAssertEqual(try String(contentsOfFile: work + "/device/models/current.bin", encoding: .utf8), sampleArtifact)
        let requests = try String(contentsOfFile: work + "/host.log", encoding: .utf8).split(separator: "\n").map(String.init)
        let half = (sampleArtifact.utf8.count) / 2
        XCTAssertEqual(requests, ["/redirect None", "/model.bin None", "/redirect bytes=\(half)-", "/model.bin bytes=\(half)-"],
                       "redirected, cut off halfway, then only the rest asked for")

        let missing = try await run("3.0", path: "/nothing-here")
        XCTAssertEqual(missing["state"], .string("failed"), "a 404 fails at once: nothing on the device changed")
        XCTAssertTrue(missing["failure"]?["message"]?.stringValue?.contains("answered 404") ?? false, missing.serialized)

        // A host sending more than the signed size is cut off before it can fill the disk.
        let flood = try await run("4.0", path: "/huge")
        XCTAssertEqual(flood["state"], .string("failed"), flood.serialized)
        XCTAssertTrue(flood["failure"]?["message"]?.stringValue?.contains("more than the \(sampleArtifact.utf8.count) bytes") ?? false,
                      flood.serialized)
        await device.client.close()
        await admin.close()
        await server.stop()
    }
}
