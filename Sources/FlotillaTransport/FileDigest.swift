// The SHA-256 of a body file, read in 1 MiB pieces (never whole in memory): the agent
// checks a downloaded artifact with it, the CLI sends it with an upload so the server
// verifies the bytes end to end (X-Checksum-SHA256).

import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

public struct FileDigestError: Error, CustomStringConvertible {
    public let description: String
}

/// The file's SHA-256 in lowercase hex.
public func sha256Hex(ofFile path: String) throws(FileDigestError) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileDigestError(description: "cannot read \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard let context = EVP_MD_CTX_new() else { throw FileDigestError(description: "EVP_MD_CTX_new failed") }
    defer { EVP_MD_CTX_free(context) }
    EVP_DigestInit_ex(context, EVP_sha256(), nil)
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count >= 0 else { throw FileDigestError(description: "cannot read \(path): \(String(cString: strerror(errno)))") }
        if count == 0 { break }
        _ = buffer.withUnsafeBytes { EVP_DigestUpdate(context, $0.baseAddress, count) }
    }
    var digest = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    EVP_DigestFinal_ex(context, &digest, &length)
    return lowercaseHex(digest)
}

/// The SHA-256 of `bytes` in lowercase hex.
public func sha256Hex(_ bytes: [UInt8]) -> String {
    var digest = [UInt8](repeating: 0, count: 32)
    _ = SHA256(bytes, bytes.count, &digest)
    return lowercaseHex(digest)
}

func lowercaseHex(_ bytes: [UInt8]) -> String {
    let hex = Array("0123456789abcdef".utf8)
    return String(decoding: bytes.flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 15)]] }, as: UTF8.self)
}
