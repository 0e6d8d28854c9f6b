// The client side of one HTTP/2 connection: an nghttp2 client session fed by a
// SocketChannel. Loop-confined; reached from `HTTP2Client` through `loop.execute`.
//
// Every continuation is resumed exactly once: by the response, by its timeout, by a
// stream reset or by the connection closing — whichever comes first removes the stream.

import CNghttp2
#if canImport(Glibc)
import Glibc
#endif

final class HTTP2ClientConnection: ChannelHandler, @unchecked Sendable {
    final class Stream {
        let continuation: CheckedContinuation<ClientResponse, any Error>
        var timer: (any Cancellable)?
        var status = 0
        var headers = HTTPHeaders()
        var body: [UInt8] = []
        var requestBody = OutgoingBody()
        var file: FileBodySource?
        var progress: (@Sendable (Int) -> Void)?
        var sent = 0
        var failure: HTTPClientError?
        init(continuation: CheckedContinuation<ClientResponse, any Error>) { self.continuation = continuation }
    }

    let loop: any EventLoop
    private let scheme: String
    private let authority: String
    private let maxResponseBytes: Int
    private var channel: SocketChannel?
    private var session: OpaquePointer?
    private var streams: [Int32: Stream] = [:]
    private var connecting: CheckedContinuation<Void, any Error>?
    private var connectTimer: (any Cancellable)?
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var closedReason: String?

    init(loop: any EventLoop, scheme: String, authority: String, maxResponseBytes: Int) {
        self.loop = loop
        self.scheme = scheme
        self.authority = authority
        self.maxResponseBytes = maxResponseBytes
    }

    deinit { nghttp2_session_del(session) }

    // MARK: Connecting

    func connect(to address: SocketAddress, tls: TLSContext?, serverName: String, timeout: Duration,
                 continuation: CheckedContinuation<Void, any Error>) {
        connecting = continuation
        do {
            let (fd, _) = try Socket.startConnect(to: address)
            let session = try tls.map { try TLSSession(context: $0, isServer: false, serverName: serverName) }
            let channel = SocketChannel(fd: fd, loop: loop, peer: address, tls: session, handler: self)
            self.channel = channel
            connectTimer = loop.schedule(after: timeout) { [self] in
                failConnect(.connectFailed("timed out after \(timeout)"))
                channel.close()
            }
            channel.start { [self] result in
                if case .failure(let error) = result { failConnect(.connectFailed("\(error)")) }
            }
        } catch let error as TLSError {
            failConnect(.tlsFailed(error.description))
        } catch {
            failConnect(.connectFailed("\(error)"))
        }
    }

    private func failConnect(_ error: HTTPClientError) {
        connectTimer?.cancel()
        guard let connecting else { return }
        self.connecting = nil
        closedReason = error.description
        connecting.resume(throwing: error)
    }

    func channelActive(_ channel: SocketChannel) {
        if channel.isTLS && channel.negotiatedProtocol != "h2" {
            failConnect(.tlsFailed("the server did not agree to HTTP/2 (ALPN)"))
            channel.close()
            return
        }
        var session: OpaquePointer?
        nghttp2_session_client_new(&session, clientCallbacks.pointer, Unmanaged.passUnretained(self).toOpaque())
        self.session = session
        let settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: 1 << 20),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), settings, settings.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 16 << 20)
        sendPending()
        connectTimer?.cancel()
        connecting?.resume()
        connecting = nil
    }

    // MARK: Requests

    func start(_ request: ClientRequest, timeout: Duration, continuation: CheckedContinuation<ClientResponse, any Error>) {
        guard let session, let channel, !channel.isClosed else {
            continuation.resume(throwing: HTTPClientError.connectionClosed(closedReason ?? "not connected"))
            return
        }
        let stream = Stream(continuation: continuation)
        stream.progress = request.bodyProgress
        var fields: [(name: String, value: String)] = [
            (":method", request.method), (":scheme", scheme), (":authority", authority), (":path", request.path),
        ]
        for (name, value) in request.headers {
            let lower = name.lowercased()
            if !isConnectionSpecificHeader(lower) && lower != "content-length" { fields.append((lower, value)) }
        }
        switch request.body {
        case .none:
            break
        case .bytes(let bytes):
            stream.requestBody = OutgoingBody(bytes)
            fields.append(("content-length", String(bytes.count)))
        case .file(let path):
            do {
                let file = try FileBodySource(path: path)
                stream.file = file
                fields.append(("content-length", String(file.size)))
            } catch {
                continuation.resume(throwing: error)
                return
            }
        }
        let hasBody: Bool
        switch request.body {
        case .none: hasBody = false
        case .bytes(let bytes): hasBody = !bytes.isEmpty
        case .file: hasBody = true
        }
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readRequestBody)
        let streamID = withNGHTTP2Headers(fields) { nva, count in
            hasBody ? nghttp2_submit_request(session, nil, nva, count, &provider, nil)
                    : nghttp2_submit_request(session, nil, nva, count, nil, nil)
        }
        guard streamID > 0 else {
            let reason = String(cString: nghttp2_strerror(streamID))
            continuation.resume(throwing: HTTPClientError.connectionClosed(reason))
            return
        }
        streams[streamID] = stream
        stream.timer = loop.schedule(after: timeout) { [self] in
            guard let stream = streams[streamID], let session = self.session else { return }
            stream.failure = .timedOut
            // The reset comes back through on_stream_close, which resumes the continuation.
            nghttp2_submit_rst_stream(session, 0, streamID, UInt32(NGHTTP2_CANCEL.rawValue))
            finish(streamID, errorCode: UInt32(NGHTTP2_CANCEL.rawValue))
            sendPending()
        }
        sendPending()
        channel.flush()
    }

    private func sendPending() {
        guard let session, let channel, !channel.isClosed else { return }
        guard channel.drainAndFlush(session: session, maxQueued: 1 << 20) else {
            channel.close(error: HTTPClientError.connectionClosed("HTTP/2 session error"))
            return
        }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            channel.closeAfterFlush()
        }
    }

    fileprivate func finish(_ streamID: Int32, errorCode: UInt32) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.timer?.cancel()
        stream.file?.close()
        if let failure = stream.failure {
            stream.continuation.resume(throwing: failure)
        } else if errorCode != 0 || stream.status == 0 {
            stream.continuation.resume(throwing: HTTPClientError.streamReset(errorCode: errorCode))
        } else {
            stream.continuation.resume(returning: ClientResponse(status: stream.status, headers: stream.headers, body: stream.body))
        }
    }

    fileprivate func header(_ streamID: Int32, name: String, value: String) {
        guard let stream = streams[streamID] else { return }
        if name == ":status" {
            stream.status = Int(value) ?? 0
            if (100..<200).contains(stream.status) { stream.headers = HTTPHeaders() }  // interim: wait for the final
        } else {
            stream.headers.add(name, value)
        }
    }

    fileprivate func data(_ streamID: Int32, _ bytes: UnsafeRawBufferPointer) {
        guard let stream = streams[streamID], let session else { return }
        guard stream.body.count + bytes.count <= maxResponseBytes else {
            stream.failure = .responseTooLarge(maxResponseBytes)
            nghttp2_submit_rst_stream(session, 0, streamID, UInt32(NGHTTP2_CANCEL.rawValue))
            return
        }
        stream.body.append(contentsOf: bytes)
    }

    fileprivate func readBody(_ streamID: Int32, into buffer: UnsafeMutablePointer<UInt8>, capacity: Int,
                              flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let stream = streams[streamID] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        let count = readBodyChunk(stream, streamID, into: buffer, capacity: capacity, flags: flags)
        if count > 0, let progress = stream.progress {
            stream.sent += count
            progress(stream.sent)
        }
        return count
    }

    private func readBodyChunk(_ stream: Stream, _ streamID: Int32, into buffer: UnsafeMutablePointer<UInt8>, capacity: Int,
                               flags: UnsafeMutablePointer<UInt32>) -> Int {
        if let file = stream.file {
            return file.read(into: buffer, capacity: capacity, flags: flags, loop: loop) { [self] result in
                // Back on the loop with the next chunk (or an error): let nghttp2 ask again.
                guard let session, let stream = streams[streamID] else { return }
                if case .failure(let error) = result {
                    stream.failure = .bodyReadFailed(error.description)
                    nghttp2_submit_rst_stream(session, 0, streamID, UInt32(NGHTTP2_CANCEL.rawValue))
                } else {
                    nghttp2_session_resume_data(session, streamID)
                }
                sendPending()
            }
        }
        return stream.requestBody.read(into: buffer, capacity: capacity, flags: flags)
    }

    // MARK: Channel events

    func channelRead(_ channel: SocketChannel, _ bytes: UnsafeRawBufferPointer) {
        guard let session else { return }
        if nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count) < 0 {
            channel.close(error: HTTPClientError.connectionClosed("HTTP/2 protocol error from the server"))
        }
    }

    func channelReadComplete(_ channel: SocketChannel) { sendPending() }
    func channelInputClosed(_ channel: SocketChannel) { channel.close() }
    func channelWritabilityRestored(_ channel: SocketChannel) { sendPending() }

    func channelClosed(_ channel: SocketChannel, error: (any Error)?) {
        let reason = closedReason ?? error.map { "\($0)" } ?? "closed by the server"
        closedReason = reason
        failConnect(.connectFailed(reason))
        for (id, stream) in streams {
            if stream.failure == nil { stream.failure = .connectionClosed(reason) }
            finish(id, errorCode: 0)
        }
        nghttp2_session_del(session)
        session = nil
        self.channel = nil
        for waiter in closeWaiters { waiter.resume() }
        closeWaiters = []
    }

    func close(_ waiter: CheckedContinuation<Void, Never>?) {
        guard let channel else {
            waiter?.resume()
            return
        }
        closedReason = closedReason ?? "closed by the client"
        if let waiter { closeWaiters.append(waiter) }
        if let session {
            nghttp2_session_terminate_session(session, UInt32(NGHTTP2_NO_ERROR.rawValue))
            _ = channel.drainAndFlush(session: session, maxQueued: .max)
        }
        channel.closeAfterFlush()
    }
}

// MARK: nghttp2 callbacks

@inline(__always)
private func connection(_ userData: UnsafeMutableRawPointer?) -> HTTP2ClientConnection {
    Unmanaged<HTTP2ClientConnection>.fromOpaque(userData!).takeUnretainedValue()
}

private let clientCallbacks = NGHTTP2Callbacks { callbacks in
    nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, userData in
        guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) else { return 0 }
        connection(userData).header(frame.pointee.hd.stream_id, name: stringFrom(name, nameLength),
                                    value: stringFrom(value, valueLength))
        return 0
    }
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, userData in
        connection(userData).data(streamID, UnsafeRawBufferPointer(start: data, count: length))
        return 0
    }
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
        connection(userData).finish(streamID, errorCode: errorCode)
        return 0
    }
}

private let readRequestBody: nghttp2_data_source_read_callback = { _, streamID, buffer, length, flags, _, userData in
    connection(userData).readBody(streamID, into: buffer!, capacity: length, flags: flags!)
}
