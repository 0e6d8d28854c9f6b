// TLS as a security boundary: certificate reload without dropping connections, client
// certificates (mTLS) verified against a CA, and the protocol and cipher floor, each
// against real sockets on loopback (and the openssl CLI as an independent client).

import Foundation
import XCTest
@testable import FlotillaTransport
import FlotillaTestSupport

final class TLSSecurityTests: XCTestCase {
    var directory: String!

    override func setUp() {
        directory = NSTemporaryDirectory() + "flotilla-tls-test-" + UUID().uuidString
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func install(_ issued: (certificate: String, key: String)) throws {
        for (from, to) in [(issued.certificate, "/live.pem"), (issued.key, "/live.key")] {
            try? FileManager.default.removeItem(atPath: directory + to)
            try FileManager.default.copyItem(atPath: from, toPath: directory + to)
        }
    }

    func testReloadServesTheNewCertificateToNewConnectionsAndKeepsOpenOnes() async throws {
        let first = try TestPKI(directory: directory, name: "first"), second = try TestPKI(directory: directory, name: "second")
        try install(try first.issue("localhost", server: true))
        let server = try TestServer(tls: TLSServerConfiguration(certificatePath: directory + "/live.pem", privateKeyPath: directory + "/live.key"))
        let url = "https://localhost:\(server.port)"
        let old = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: first.caPath))
        let answer1 = try await old.get("/healthz")
        XCTAssertEqual(answer1.status, 200)

        try install(try second.issue("localhost", server: true))
        try server.server.reloadTLS()
        let answer2 = try await old.get("/healthz")
        XCTAssertEqual(answer2.status, 200, "an open connection survives the reload")
        let fresh = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: second.caPath))
        let answer3 = try await fresh.get("/healthz")
        XCTAssertEqual(answer3.status, 200, "new connections get the new certificate")
        do {
            _ = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: first.caPath))
            XCTFail("the old certificate is still served to new connections")
        } catch is HTTPClientError {}

        // A broken file: the reload fails and the current certificate stays in use.
        try "not a certificate".write(toFile: directory + "/live.pem", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try server.server.reloadTLS())
        let after = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: second.caPath))
        let answer4 = try await after.get("/healthz")
        XCTAssertEqual(answer4.status, 200)
        for client in [old, fresh, after] { await client.close() }
        await server.stop()
    }

    func testClientCertificatesAreVerifiedAndNamed() async throws {
        let devices = try TestPKI(directory: directory, name: "devices"), rogue = try TestPKI(directory: directory, name: "rogue")
        let camera = try devices.issue("cam-1"), impostor = try rogue.issue("cam-1")
        var router = Router()
        router.get("/whoami") { request in .json(200, #"{"cn":"\#(request.clientCertificate ?? "none")"}"#) }
        var tls = TestCertificate.server
        tls.clientCAPath = devices.caPath
        let server = try TestServer(tls: tls, router: router)
        let url = "https://localhost:\(server.port)"

        let genuine = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: TestCertificate.caPath,
                                                                        certificatePath: camera.certificate, privateKeyPath: camera.key))
        let answer5 = try await genuine.get("/whoami")
        XCTAssertEqual(answer5.bodyText, #"{"cn":"cam-1"}"#)
        let anonymous = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: TestCertificate.caPath))
        let answer6 = try await anonymous.get("/whoami")
        XCTAssertEqual(answer6.bodyText, #"{"cn":"none"}"#, "no certificate: connects, unnamed")
        do {
            let forged = try await HTTP2Client.connect(to: url, tls: .init(trustedCAPath: TestCertificate.caPath,
                                                                          certificatePath: impostor.certificate, privateKeyPath: impostor.key))
            _ = try await forged.get("/whoami")
            XCTFail("a certificate from another CA was accepted")
        } catch is HTTPClientError {}
        await genuine.close()
        await anonymous.close()
        await server.stop()
    }

    func testOnlyTLS12AndUpWithForwardSecretAEADCiphers() async throws {
        let server = try TestServer(tls: TestCertificate.server)
        func handshake(_ options: [String]) throws -> Int32 {
            try runProcess(which("openssl") ?? "/usr/bin/openssl",
                           ["s_client", "-connect", "127.0.0.1:\(server.port)", "-servername", "localhost"] + options + ["-no_ign_eof"]).status
        }
        XCTAssertEqual(try handshake(["-tls1_3"]), 0)
        XCTAssertEqual(try handshake(["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]), 0)
        XCTAssertNotEqual(try handshake(["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"]), 0, "CBC suites are refused")
        // The client's own default already refuses TLS 1.1; at security level 0 it offers it
        // (it then connects to a server that allows it), so only our server can refuse here.
        XCTAssertNotEqual(try handshake(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]), 0, "TLS 1.1 is refused")
        await server.stop()
    }
}
