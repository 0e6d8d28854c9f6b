// mTLS for devices through the real server: with a client CA configured, the device API
// and enrollment need a verified certificate whose CN is the device's name — so a stolen
// device token is useless without that device's key — while the management API still
// works with a token alone.

import FlotillaAPI
import FlotillaTestSupport
import FlotillaTransport
import Foundation
import XCTest

final class DeviceCertificateTests: XCTestCase {
    func testTheDeviceAPINeedsTheDevicesOwnCertificate() async throws {
        let directory = NSTemporaryDirectory() + "flotilla-mtls-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pki = try TestPKI(directory: directory, name: "factory")
        let cam1 = try pki.issue("cam-1"), cam2 = try pki.issue("cam-2")
        var tls = TestCertificate.server
        tls.clientCAPath = pki.caPath
        let server = try APIServer(tls: tls)
        let url = "https://localhost:\(server.port)"
        func connect(_ identity: (certificate: String, key: String)?) async throws -> HTTP2Client {
            try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: TestCertificate.caPath, certificatePath: identity?.certificate,
                                                             privateKeyPath: identity?.key))
        }
        func call(_ client: HTTP2Client, _ method: String, _ path: String, token: String, body: String? = nil) async throws -> ClientResponse {
            try await client.send(ClientRequest(method: method, path: path,
                                                headers: ["authorization": "Bearer \(token)", "content-type": "application/json"],
                                                body: body.map { .bytes(Array($0.utf8)) } ?? .none))
        }
        func code(_ response: ClientResponse) -> String? {
            (try? JSON.parse(response.body))?.objectValue?["error"]?.objectValue?["code"]?.stringValue
        }

        // The management API: a token is enough, no certificate needed.
        let admin = try await connect(nil)
        let registered = try await call(admin, "POST", "/api/v1/devices", token: server.adminToken, body: #"{"name":"cam-1"}"#)
        XCTAssertEqual(registered.status, 201, registered.bodyText)
        let token = try XCTUnwrap((try JSON.parse(registered.body)).objectValue?["device_token"]?.stringValue)

        let own = try await connect(cam1), other = try await connect(cam2)
        let polled = try await call(own, "GET", "/api/v1/agent/next", token: token)
        XCTAssertEqual(polled.status, 204, polled.bodyText)
        let bare = try await call(admin, "GET", "/api/v1/agent/next", token: token)
        XCTAssertEqual(bare.status, 403)
        XCTAssertEqual(code(bare), "client_certificate_required")
        let stolen = try await call(other, "GET", "/api/v1/agent/next", token: token)
        XCTAssertEqual(stolen.status, 403, "cam-1's token over cam-2's certificate")
        XCTAssertEqual(code(stolen), "client_certificate_mismatch")
        let again = try await call(own, "GET", "/api/v1/agent/next", token: token)
        XCTAssertEqual(again.status, 204, "the token cache does not skip the certificate check")

        // Enrollment: under the name the certificate carries.
        let group = try await call(admin, "POST", "/api/v1/groups", token: server.adminToken, body: #"{"name":"field"}"#)
        XCTAssertEqual(group.status, 201)
        let created = try await call(admin, "POST", "/api/v1/enrollment-tokens", token: server.adminToken,
                                     body: #"{"name":"day","group":"field","max_uses":3}"#)
        let secret = try XCTUnwrap((try JSON.parse(created.body)).objectValue?["secret"]?.stringValue)
        let wrongName = try await call(other, "POST", "/api/v1/agent/enroll", token: secret, body: #"{"name":"cam-9"}"#)
        XCTAssertEqual(code(wrongName), "client_certificate_mismatch")
        let enrolled = try await call(other, "POST", "/api/v1/agent/enroll", token: secret, body: #"{"name":"cam-2"}"#)
        XCTAssertEqual(enrolled.status, 201, enrolled.bodyText)
        for client in [admin, own, other] { await client.close() }
        await server.stop()
    }
}
