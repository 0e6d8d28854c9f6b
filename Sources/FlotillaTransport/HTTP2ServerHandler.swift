// HTTP/2 on one server connection, with nghttp2 as a sans-I/O framing engine
// (modelled on nghttp2's examples/libevent-server.c, classic 1.52 API).
//
// nghttp2 calls back into this object through `user_data` (an unretained pointer:
// the connection owns both the session and this handler). `nghttp2_session_del`
// does not call on_stream_close, so stream state is owned here, on the Swift side.
//
// Flow control is ours (NO_AUTO_WINDOW_UPDATE): a buffered body's bytes are consumed as
// they arrive, a streaming route's only when its handler has read them, so an upload
// to a slow disk is throttled by the stream window instead of piling up in memory.

import CNghttp2

final class HTTP2ServerHandler: ServerProtocolHandler, @unchecked Sendable {
    final class Stream {
        let id: Int32
        let startedAt: UInt64
        var method = ""
        var path = ""
        var authority: String?
        var headers = HTTPHeaders()
        var headerBytes = 0
        var headersComplete = false
        var body: [UInt8] = []
        /// Decided when the head is in; run when the body is (unless it streams).
        var routed: Router.Routed?
        /// A streaming route's body, fed as DATA arrives.
        var bodyStream: HTTPBodyStream?
        var bodyReceived = 0
        /// DATA bytes handed to `bodyStream` that its reader has not taken yet (not yet credited).
        var unconsumed = 0
        var lastDataAt: UInt64 = 0
        var responseFile: FileBodySource?
        /// Already answered (a handler's response or a transport error); later input is ignored.
        var responded = false
        var responseBody = OutgoingBody()
        init(id: Int32, startedAt: UInt64) {
            self.id = id
            self.startedAt = startedAt
        }
    }

    private let channel: SocketChannel
    private let context: ServerContext
    private var session: OpaquePointer?
    private var streams: [Int32: Stream] = [:]
    private var flushScheduled = false

    init(channel: SocketChannel, context: ServerContext) {
        self.channel = channel
        self.context = context
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        nghttp2_option_set_stream_reset_rate_limit(option, UInt64(context.limits.streamResetBurst),
                                                   UInt64(context.limits.streamResetRatePerSecond))
        nghttp2_option_set_no_auto_window_update(option, 1)
        var session: OpaquePointer?
        nghttp2_session_server_new2(&session, serverCallbacks.pointer, Unmanaged.passUnretained(self).toOpaque(), option)
        nghttp2_option_del(option)
        self.session = session
        let settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                   value: UInt32(context.limits.maxConcurrentStreams)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                                   value: UInt32(context.limits.maxHeaderBytes)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: 1 << 20),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), settings, settings.count)
        // Let uploads on many streams share a larger connection window than the default 64 KiB.
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 16 << 20)
    }

    deinit {
        nghttp2_session_del(session)
    }

    func connectionClosed() {
        for stream in streams.values {
            stream.bodyStream?.fail(HTTPBodyStream.brokenOff)
            stream.responseFile?.close()
        }
    }

    // MARK: Bytes from the socket

    func received(_ bytes: UnsafeRawBufferPointer) {
        guard let session else { return }
        let rc = nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        if rc < 0 {
            // Fatal (bad preface, flood, protocol violation): nghttp2 queued a GOAWAY if it could.
            _ = channel.drainAndFlush(session: session, maxQueued: .max)
            channel.closeAfterFlush()
            self.session = nil
            nghttp2_session_del(session)
        }
    }

    func readComplete() { sendPending() }

    func inputClosed() { channel.closeAfterFlush() }

    func writabilityRestored() { sendPending() }

    /// Sends all pending frames; closes when the session is done.
    private func sendPending() {
        guard let session, !channel.isClosed else { return }
        guard channel.drainAndFlush(session: session, maxQueued: context.limits.maxQueuedOutputBytes) else {
            channel.closeAfterFlush()
            return
        }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            channel.closeAfterFlush()
        }
    }

    /// Responses finishing close together share one `send`: the flush runs after the
    /// completions already queued on the loop.
    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        channel.loop.execute {
            self.flushScheduled = false
            self.sendPending()
        }
    }

    // MARK: Timeouts and shutdown

    func tick(now: UInt64) {
        guard let session else { return }
        // An upload that stalled mid-body (while we were not the ones holding it back) would
        // hold its handler forever: its handler answers 408.
        for stream in streams.values where stream.unconsumed == 0 && now &- stream.lastDataAt > context.idleTimeoutNanos {
            stream.bodyStream?.fail(HTTPError(408, code: "request_timeout", message: "the request body stopped arriving"))
        }
        if streams.values.contains(where: { !$0.headersComplete && now &- $0.startedAt > context.headTimeoutNanos }) {
            // A stalled header block blocks the whole connection (nothing may interleave with it).
            nghttp2_session_terminate_session(session, UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue))
            sendPending()
            channel.closeAfterFlush()
        } else if streams.isEmpty && now &- channel.lastReadAt > context.idleTimeoutNanos {
            nghttp2_session_terminate_session(session, UInt32(NGHTTP2_NO_ERROR.rawValue))
            sendPending()
            channel.closeAfterFlush()
        }
    }

    func beginGracefulShutdown() {
        guard let session else { return }
        // Streams up to the last one we saw still complete; nghttp2 refuses newer ones.
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
                              nghttp2_session_get_last_proc_stream_id(session),
                              UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
        sendPending()
    }

    // MARK: Requests

    fileprivate func beginHeaders(_ streamID: Int32) {
        streams[streamID] = Stream(id: streamID, startedAt: monotonicNanos())
    }

    fileprivate func header(_ streamID: Int32, name: String, value: String) {
        guard let stream = streams[streamID], !stream.responded else { return }
        // RFC 9113 §6.5.2: name + value + 32 per field.
        stream.headerBytes += name.utf8.count + value.utf8.count + 32
        if stream.headerBytes > context.limits.maxHeaderBytes { return }  // answered 431 at END_HEADERS
        switch name {
        case ":method": stream.method = value
        case ":path": stream.path = value
        case ":authority": stream.authority = value
        case ":scheme": break
        default: stream.headers.add(name, value)
        }
    }

    fileprivate func headersComplete(_ streamID: Int32, endStream: Bool) {
        guard let stream = streams[streamID] else { return }
        stream.headersComplete = true
        if stream.headerBytes > context.limits.maxHeaderBytes {
            return respondWithError(stream, 431, code: "headers_too_large",
                                    message: "request headers exceed \(context.limits.maxHeaderBytes) bytes")
        }
        let routed = context.route(makeRequest(stream))
        let limit = context.bodyLimit(routed)
        let length = stream.headers["content-length"].flatMap(Int.init)
        if let length, length > limit {
            return respondWithError(stream, 413, code: "body_too_large", message: "request body exceeds \(limit) bytes")
        }
        stream.routed = routed
        if endStream {
            dispatch(stream)
        } else if case .streaming = routed {
            let loop = channel.loop
            stream.lastDataAt = monotonicNanos()
            stream.bodyStream = HTTPBodyStream(limit: limit) { [weak self] count in
                guard let handler = self else { return }
                loop.execute { handler.credit(streamID, count) }
            }
            dispatch(stream)
        }
    }

    fileprivate func data(_ streamID: Int32, _ bytes: UnsafeRawBufferPointer) {
        guard let stream = streams[streamID], !stream.responded else { return consume(streamID, bytes.count) }
        stream.bodyReceived += bytes.count
        if let body = stream.bodyStream {
            stream.lastDataAt = monotonicNanos()
            guard stream.bodyReceived <= body.limit else {
                body.fail(HTTPBodyStream.tooLarge(body.limit))  // its handler answers 413
                return consume(streamID, bytes.count)
            }
            guard !body.isFinished else { return consume(streamID, bytes.count) }
            stream.unconsumed += bytes.count
            body.yield(Array(bytes))
            return
        }
        consume(streamID, bytes.count)
        guard stream.bodyReceived <= context.limits.maxBodyBytes else {
            return respondWithError(stream, 413, code: "body_too_large",
                                    message: "request body exceeds \(context.limits.maxBodyBytes) bytes")
        }
        stream.body.append(contentsOf: bytes)
    }

    /// Lets the peer send `count` more bytes on the stream (and the connection).
    private func consume(_ streamID: Int32, _ count: Int) {
        guard let session, count > 0 else { return }
        nghttp2_session_consume(session, streamID, count)
    }

    /// A streaming handler read `count` bytes: open the window by as much.
    private func credit(_ streamID: Int32, _ count: Int) {
        guard let stream = streams[streamID] else { return }
        let count = min(count, stream.unconsumed)
        stream.unconsumed -= count
        consume(streamID, count)
        scheduleFlush()
    }

    fileprivate func endOfRequest(_ streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        if let body = stream.bodyStream { return body.finish() }
        if !stream.responded { dispatch(stream) }
    }

    fileprivate func streamClosed(_ streamID: Int32) {
        // A handler still running for it finds no stream and its response is dropped.
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.bodyStream?.fail(HTTPBodyStream.brokenOff)
        stream.responseFile?.close()
        // Bytes its reader never took still count against the connection window.
        if let session, stream.unconsumed > 0 { nghttp2_session_consume_connection(session, stream.unconsumed) }
    }

    private func makeRequest(_ stream: Stream) -> HTTPRequest {
        let (path, query) = HTTPRequest.splitTarget(stream.path)
        var headers = stream.headers
        if let authority = stream.authority { headers.add("host", authority) }
        var request = HTTPRequest(method: stream.method, path: path, query: query, headers: headers,
                                  httpVersion: "2", remoteAddress: channel.peer?.host)
        request.clientCertificate = channel.verifiedPeer
        return request
    }

    private func dispatch(_ stream: Stream) {
        guard let routed = stream.routed else { return }
        let body = stream.body
        stream.body = []
        stream.routed = nil
        let id = stream.id
        let immediate = context.run(routed, body: body, bodyStream: stream.bodyStream, on: channel.loop) { response in
            guard let stream = self.streams[id], !stream.responded else { return }
            self.submit(response, on: stream)
            self.scheduleFlush()
        }
        // Inside a read event: readComplete sends it with everything else.
        if let immediate { submit(immediate, on: stream) }
    }

    private func respondWithError(_ stream: Stream, _ status: Int, code: String, message: String) {
        submit(.error(status, code: code, message: message), on: stream)
        // nghttp2 resets the stream (NO_ERROR) once the response is out and the request is not (RFC 9113 §8.1).
    }

    private func submit(_ response: HTTPResponse, on stream: Stream) {
        guard let session else { return }
        stream.responded = true
        let bodyAllowed = response.status >= 200 && response.status != 204 && response.status != 304
        var fields: [(name: String, value: String)] = []
        fields.reserveCapacity(response.headers.count + 4)
        fields.append((":status", String(response.status)))
        for (name, value) in response.headers {
            // HTTP/2 field names are lowercase; most already are, so lowercase only when needed.
            let lower = name.utf8.contains(where: { $0 >= 65 && $0 <= 90 }) ? name.lowercased() : name
            guard !isConnectionSpecificHeader(lower), lower != "content-length" else { continue }
            fields.append((lower, value))
        }
        if bodyAllowed { fields.append(("content-length", String(response.contentLength))) }
        fields.append(("date", HTTPDate.now))
        fields.append(("server", "flotilla"))
        let sendsBody = bodyAllowed && stream.method != "HEAD" && response.contentLength > 0
        if sendsBody, let file = response.file {
            stream.responseFile = FileBodySource(file)
        } else {
            stream.responseBody = OutgoingBody(sendsBody ? response.body : [])
        }
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readResponseBody)
        let rc = withNGHTTP2Headers(fields) { nva, count in
            sendsBody ? nghttp2_submit_response(session, stream.id, nva, count, &provider)
                      : nghttp2_submit_response(session, stream.id, nva, count, nil)
        }
        if rc != 0 { nghttp2_submit_rst_stream(session, 0, stream.id, UInt32(NGHTTP2_INTERNAL_ERROR.rawValue)) }
    }

    fileprivate func readBody(_ streamID: Int32, into buffer: UnsafeMutablePointer<UInt8>, capacity: Int,
                              flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let stream = streams[streamID] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        guard let file = stream.responseFile else {
            return stream.responseBody.read(into: buffer, capacity: capacity, flags: flags)
        }
        return file.read(into: buffer, capacity: capacity, flags: flags, loop: channel.loop) { [weak self] result in
            // Back on the loop with the next chunk: let nghttp2 ask again (or give up on the stream).
            guard let self, let session = self.session, self.streams[streamID] != nil else { return }
            if case .failure = result {
                nghttp2_submit_rst_stream(session, 0, streamID, UInt32(NGHTTP2_INTERNAL_ERROR.rawValue))
            } else {
                nghttp2_session_resume_data(session, streamID)
            }
            self.sendPending()
        }
    }
}

// MARK: nghttp2 callbacks (C functions: they capture nothing, context comes through user_data)

@inline(__always)
private func handler(_ userData: UnsafeMutableRawPointer?) -> HTTP2ServerHandler {
    Unmanaged<HTTP2ServerHandler>.fromOpaque(userData!).takeUnretainedValue()
}

private let serverCallbacks = NGHTTP2Callbacks { callbacks in
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
        guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
              frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else { return 0 }
        handler(userData).beginHeaders(frame.pointee.hd.stream_id)
        return 0
    }
    nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, userData in
        guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) else { return 0 }
        handler(userData).header(frame.pointee.hd.stream_id, name: stringFrom(name, nameLength),
                                 value: stringFrom(value, valueLength))
        return 0
    }
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
        guard let frame else { return 0 }
        let hd = frame.pointee.hd
        let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch UInt32(hd.type) {
        case NGHTTP2_HEADERS.rawValue where frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST:
            handler(userData).headersComplete(hd.stream_id, endStream: endStream)
        case NGHTTP2_DATA.rawValue where endStream, NGHTTP2_HEADERS.rawValue where endStream:
            handler(userData).endOfRequest(hd.stream_id)  // DATA's or trailers' END_STREAM
        default:
            break
        }
        return 0
    }
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, userData in
        handler(userData).data(streamID, UnsafeRawBufferPointer(start: data, count: length))
        return 0
    }
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, _, userData in
        handler(userData).streamClosed(streamID)
        return 0
    }
}

private let readResponseBody: nghttp2_data_source_read_callback = { _, streamID, buffer, length, flags, _, userData in
    handler(userData).readBody(streamID, into: buffer!, capacity: length, flags: flags!)
}
