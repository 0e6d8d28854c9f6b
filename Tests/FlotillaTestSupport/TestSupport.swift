// Test helpers shared by every test target: raw sockets, child processes, a throwaway
// TLS certificate, the built products. Real parts only: nothing here is a mock.

import Foundation
import FlotillaStore
import FlotillaTransport
#if canImport(Glibc)
import Glibc
import Synchronization
#endif

public func openFDCount(pid: Int32? = nil) -> Int {
    let dir = pid.map { "/proc/\($0)/fd" } ?? "/proc/self/fd"
    return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).count
}

/// The process's open descriptors as "fd -> target" (readlink of /proc/…/fd/N), e.g.
/// "12 -> socket:[4711]": a leak check can compare sets, so descriptors that other parts of
/// a shared test process close meanwhile are not mistaken for anything.
public func openFDs(pid: Int32? = nil) -> Set<String> {
    let dir = pid.map { "/proc/\($0)/fd" } ?? "/proc/self/fd"
    var out = Set<String>()
    for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
        let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + name)) ?? "?"
        out.insert("\(name) -> \(target)")
    }
    return out
}

/// A blocking TCP socket for speaking raw bytes at the server.
public final class RawSocket {
    public let fd: Int32

    public init(port: Int, receiveTimeout: TimeInterval = 5) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw SocketError("connect") }
        var tv = timeval(tv_sec: Int(receiveTimeout), tv_usec: Int((receiveTimeout - Double(Int(receiveTimeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { Glibc.close(fd) }

    public func send(_ text: String) { send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Reads until EOF, timeout or `limit` bytes.
    public func readAll(limit: Int = 1 << 24) -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while result.count < limit {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            result += buffer[0..<n]
        }
        return result
    }

    /// Reads some bytes (one recv); empty on EOF or timeout.
    public func readSome() -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? Array(buffer[0..<n]) : []
    }

    /// Reads exactly one HTTP/1.1 response (Content-Length framed).
    private var pending: [UInt8] = []
    public func readResponse(isHead: Bool = false) -> (status: Int, headers: [String: String], body: String)? {
        while true {
            if let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
                var lines = head.components(separatedBy: "\r\n")
                let status = Int(lines.removeFirst().split(separator: " ")[1]) ?? 0
                var headers: [String: String] = [:]
                for line in lines {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces)
                }
                let length = isHead ? 0 : Int(headers["content-length"] ?? "0") ?? 0
                let bodyStart = end.upperBound
                if pending.count - bodyStart >= length {
                    let body = String(decoding: pending[bodyStart..<(bodyStart + length)], as: UTF8.self)
                    pending.removeFirst(bodyStart + length)
                    return (status, headers, body)
                }
            }
            let more = readSome()
            if more.isEmpty { return nil }
            pending += more
        }
    }

    /// True when the server has closed the connection (EOF) within the receive timeout.
    public func isClosedByPeer() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }
}

/// Runs a command to completion and returns its exit status and output.
@discardableResult
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
    try ChildProcess.run(executable, arguments, environment: environment)
}

public func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// A self-signed certificate for localhost/127.0.0.1, made once per test run with the openssl CLI.
public enum TestCertificate {
    public static let directory: String = {
        let dir = NSTemporaryDirectory() + "flotilla-tls-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let result = try? runProcess(which("openssl") ?? "/usr/bin/openssl", [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        precondition(result?.status == 0, "openssl failed: \(result?.output ?? "not found")")
        return dir
    }()
    public static var server: TLSServerConfiguration {
        TLSServerConfiguration(certificatePath: directory + "/cert.pem", privateKeyPath: directory + "/key.pem")
    }
    public static var caPath: String { directory + "/cert.pem" }
}

/// The directory with the built executables (next to the test bundle).
public var productsDirectory: URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

/// A private CA and certificates it signs, made with the openssl CLI in `directory`: for
/// mTLS tests (device certificates) and certificate reloads.
public struct TestPKI {
    public let directory: String
    public let name: String
    public var caPath: String { "\(directory)/\(name)-ca.pem" }

    /// A new CA called `name` (its key and certificate in `directory`).
    public init(directory: String, name: String) throws {
        self.directory = directory
        self.name = name
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", "\(directory)/\(name)-ca.key", "-out", caPath, "-days", "2", "-subj", "/CN=\(name) test CA"])
    }

    /// A certificate for `commonName` signed by this CA: (certificate, key) paths. A server
    /// certificate also names localhost and 127.0.0.1.
    public func issue(_ commonName: String, server: Bool = false) throws -> (certificate: String, key: String) {
        let base = "\(directory)/\(name)-\(commonName)"
        try Self.openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/CN=\(commonName)"])
        let extensions = base + ".ext"
        try (server ? "subjectAltName=DNS:localhost,IP:127.0.0.1\n" : "extendedKeyUsage=clientAuth\n")
            .write(toFile: extensions, atomically: true, encoding: .utf8)
        try Self.openssl(["x509", "-req", "-in", base + ".csr", "-CA", caPath, "-CAkey", "\(directory)/\(name)-ca.key",
                          "-CAcreateserial", "-out", base + ".pem", "-days", "2", "-extfile", extensions])
        return (base + ".pem", base + ".key")
    }

    private static func openssl(_ arguments: [String]) throws {
        let (status, output) = try runProcess(which("openssl") ?? "/usr/bin/openssl", arguments)
        guard status == 0 else { throw SocketError("openssl \(arguments.first ?? ""): \(output)") }
    }
}

/// The log of a whole test run, for `scripts/test`'s secret scan: the in-process servers'
/// log lines and the agent processes' output go to `$FLOTILLA_TEST_LOG`, and secrets that
/// have no recognizable prefix (signing keys) to `$FLOTILLA_TEST_LOG.secrets`. Without the
/// variable (a bare `swift test`) nothing is written and servers log only critical lines.
public enum TestLog {
    public static let path = ProcessInfo.processInfo.environment["FLOTILLA_TEST_LOG"].flatMap { $0.isEmpty ? nil : $0 }
    private static let lock = Mutex(())

    public static func append(_ text: String) {
        guard let path, !text.isEmpty else { return }
        write(text.hasSuffix("\n") ? text : text + "\n", to: path)
    }

    /// A secret that must never appear in the log, whatever it looks like.
    public static func recordSecret(_ secret: String) {
        guard let path else { return }
        write(secret + "\n", to: path + ".secrets")
    }

    private static func write(_ text: String, to file: String) {
        lock.withLock { _ in
            let fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return }
            let bytes = Array(text.utf8)
            _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
    }
}
