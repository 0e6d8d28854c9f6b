// Downloads from external artifact hosts (Artifactory, S3, a CDN): a download step whose
// `url` is http(s):// rather than one of the server's own artifacts. These hosts speak
// HTTP/1.1 (sometimes HTTP/2), redirect (Artifactory to S3), and sit behind proxies, so the
// agent uses libcurl for them, as SWUpdate does; the server's artifacts keep going through
// our own HTTP/2 client.
//
// One call is one attempt: it appends to the partial file from its current size (`Range:
// bytes=N-`), so an attempt cut short is continued by the next, after a dropped link or a
// restart alike. A host that ignores the range (200) starts the file over; 416 on a
// non-empty partial file means it is complete already. The SHA-256 check decides in the end.

import CCurl
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct ExternalDownloadError: Error {
    var message: String
    /// Worth another attempt (network trouble, 5xx, 429), as opposed to 404, a TLS failure…
    var transient: Bool
}

enum ExternalDownload {
    private static let initialized: Bool = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK }()

    /// Bytes written by libcurl's callback into the partial file.
    private final class Sink {
        let fd: Int32
        let curl: UnsafeMutableRawPointer
        var resumedFrom: Int64
        /// Bytes in the partial file so far, and the most it may hold (the signed size).
        var size: Int64
        let limit: Int64?
        var checked = false
        var failure: String?
        init(fd: Int32, curl: UnsafeMutableRawPointer, resumedFrom: Int64, limit: Int64?) {
            self.fd = fd
            self.curl = curl
            self.resumedFrom = resumedFrom
            size = resumedFrom
            self.limit = limit
        }
    }

    /// Fetches the rest of `url` into `partial`. Blocking: call it off the cooperative pool.
    /// `limit`: the size the signed manifest gives; a host sending more is cut off (a
    /// compromised host must not fill the disk before the checksum can refuse its bytes).
    /// `stall`: seconds under 1 byte/s before the attempt is given up.
    static func fetch(_ url: String, into partial: String, caFile: String?, limit: Int64? = nil,
                      stall: Int = 60) throws(ExternalDownloadError) {
        guard initialized, let curl = curl_easy_init() else { throw ExternalDownloadError(message: "libcurl failed to start", transient: false) }
        defer { curl_easy_cleanup(curl) }
        let fd = open(partial, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ExternalDownloadError(message: "cannot open \(partial): \(String(cString: strerror(errno)))", transient: false) }
        defer { close(fd) }
        var status = stat()
        fstat(fd, &status)
        let sink = Sink(fd: fd, curl: curl, resumedFrom: Int64(status.st_size), limit: limit)
        let context = Unmanaged.passRetained(sink)
        defer { context.release() }

        flotilla_curl_set_string(curl, CURLOPT_URL, url)
        flotilla_curl_set_string(curl, CURLOPT_PROTOCOLS_STR, "http,https")
        flotilla_curl_set_string(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
        flotilla_curl_set_long(curl, CURLOPT_FOLLOWLOCATION, 1)
        flotilla_curl_set_long(curl, CURLOPT_MAXREDIRS, 5)
        flotilla_curl_set_long(curl, CURLOPT_FAILONERROR, 1)
        flotilla_curl_set_long(curl, CURLOPT_NOSIGNAL, 1)
        flotilla_curl_set_long(curl, CURLOPT_CONNECTTIMEOUT, 30)
        flotilla_curl_set_long(curl, CURLOPT_LOW_SPEED_LIMIT, 1)
        flotilla_curl_set_long(curl, CURLOPT_LOW_SPEED_TIME, stall)
        flotilla_curl_set_string(curl, CURLOPT_USERAGENT, "flotilla-agent")
        // A private CA adds to the system's (/etc/ssl/certs stays the CA path).
        if let caFile { flotilla_curl_set_string(curl, CURLOPT_CAINFO, caFile) }
        if sink.resumedFrom > 0 { flotilla_curl_set_string(curl, CURLOPT_RANGE, "\(sink.resumedFrom)-") }
        flotilla_curl_set_pointer(curl, CURLOPT_WRITEDATA, context.toOpaque())
        flotilla_curl_set_write(curl) { data, size, count, opaque in
            let sink = Unmanaged<Sink>.fromOpaque(opaque!).takeUnretainedValue()
            if !sink.checked {
                sink.checked = true
                // The host ignored the range and sends the whole file: start it over.
                if sink.resumedFrom > 0 && flotilla_curl_response_code(sink.curl) == 200 {
                    guard ftruncate(sink.fd, 0) == 0 else { sink.failure = "cannot truncate the partial file"; return 0 }
                    sink.resumedFrom = 0
                    sink.size = 0
                }
            }
            var offset = 0
            let total = size * count
            if let limit = sink.limit, sink.size + Int64(total) > limit {
                sink.failure = "the host sent more than the \(limit) bytes the manifest says"
                return 0
            }
            sink.size += Int64(total)
            while offset < total {
                let written = Glibc.write(sink.fd, data! + offset, total - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { sink.failure = "cannot write the partial file: \(String(cString: strerror(errno)))"; return 0 }
                offset += written
            }
            return total
        }
        // libcurl writes its error text here during perform: the buffer must outlive the call.
        let message = UnsafeMutableBufferPointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        message.initialize(repeating: 0)
        defer { message.deallocate() }
        flotilla_curl_set_pointer(curl, CURLOPT_ERRORBUFFER, message.baseAddress)
        let result = curl_easy_perform(curl)
        if result == CURLE_OK { return }
        let code = flotilla_curl_response_code(curl)
        if result == CURLE_HTTP_RETURNED_ERROR && code == 416 && sink.resumedFrom > 0 { return }  // nothing left to fetch
        let detail = sink.failure ?? String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let text = detail.isEmpty ? String(cString: curl_easy_strerror(result)) : detail
        switch result {
        case CURLE_HTTP_RETURNED_ERROR:
            throw ExternalDownloadError(message: "\(url) answered \(code)", transient: code >= 500 || code == 429 || code == 408)
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_RECV_ERROR, CURLE_SEND_ERROR,
             CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING, CURLE_SSL_CONNECT_ERROR:
            throw ExternalDownloadError(message: "download from \(url) interrupted: \(text)", transient: true)
        default:
            throw ExternalDownloadError(message: "download from \(url) failed: \(text)", transient: false)
        }
    }
}
