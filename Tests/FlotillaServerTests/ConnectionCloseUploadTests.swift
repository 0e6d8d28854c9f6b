// An upload on a connection that ends after it (`Connection: close`, which Python's urllib
// sends, or HTTP/1.0) is read to its end and stored: streaming routes are started when the
// head arrives, and reading must not stop before their body is in.

import FlotillaAPI
import FlotillaStore
import FlotillaTestSupport
import XCTest

final class ConnectionCloseUploadTests: ServerTestCase {
    func testAnUploadOnAClosingConnectionIsReadAndStored() async throws {
        for (version, connection) in [("HTTP/1.1", "Connection: close\r\n"), ("HTTP/1.0", "")] {
            let content = "weights for \(version)\n" + String(repeating: "x", count: 200_000)
            let socket = try RawSocket(port: server.port)
            socket.send("POST /api/v1/artifacts?name=model.zip \(version)\r\nHost: x\r\nAuthorization: Bearer \(server.adminToken)\r\n"
                        + "Content-Type: application/zip\r\nContent-Length: \(content.utf8.count)\r\n\(connection)\r\n")
            socket.send(content)
            let response = try XCTUnwrap(socket.readResponse(), version)
            XCTAssertEqual(response.status, 201, "\(version): \(response.body)")
            let sha = hexString(Secrets.sha256(content.utf8))
            XCTAssertTrue(response.body.contains(sha), "\(version): \(response.body)")
            XCTAssertTrue(socket.isClosedByPeer(), "\(version): the connection ends after the answer")
            expect(try await admin.call("GET", "/api/v1/artifacts/\(sha)"), 200)
        }
    }
}
