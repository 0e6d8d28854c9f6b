// HTTP/1.1 on one connection: keep-alive, pipelining (responses leave in request
// order whatever order the handlers finish in), 100-continue, and error answers that
// close the connection once the framing can no longer be trusted.
//
// Streaming routes get their body as it arrives; socket reads pause while more than
// `bodyHighWater` bytes wait unread by the handler. File bodies go out one chunk at a
// time, the next read only once the socket took the last one.

final class HTTP1ServerHandler: ServerProtocolHandler, @unchecked Sendable {
    private struct Slot {
        let id: Int
        let method: String
        var keepAlive: Bool
        let minorVersion: Int
        var response: HTTPResponse?
    }

    private static let bodyHighWater = 1 << 20

    private let channel: SocketChannel
    private let context: ServerContext
    private var parser: HTTP1RequestParser
    private var queue: [Slot] = []
    private var nextID = 0
    /// No further requests will be read: an error broke the framing, the client said close, or shutdown.
    private var stopReading = false
    private var inputEnded = false
    private var headStartedAt: UInt64?
    /// The route of the request whose head was just parsed (decided before its body is read).
    private var pendingRoute: Router.Routed?
    /// The streaming request whose body is arriving now.
    private var streaming: (slot: Int, body: HTTPBodyStream)?
    private var bodyPaused = false
    /// A file response being sent: nothing behind it may be written until it is done.
    private var fileInFlight: (file: HTTPFileBody, position: Int, close: Bool)?
    private var fileReadPending = false

    init(channel: SocketChannel, context: ServerContext) {
        self.channel = channel
        self.context = context
        parser = HTTP1RequestParser(limits: .init(
            maxHeadBytes: context.limits.maxHeaderBytes,
            maxRequestLineBytes: min(8 * 1024, context.limits.maxHeaderBytes),
            maxBodyBytes: context.limits.maxBodyBytes))
        parser.bodyPolicy = { [unowned self] head in
            let routed = context.route(makeRequest(head))
            pendingRoute = routed
            if case .streaming = routed { return HTTP1BodyPolicy(limit: context.bodyLimit(routed), streaming: true) }
            return HTTP1BodyPolicy(limit: context.limits.maxBodyBytes, streaming: false)
        }
    }

    func received(_ bytes: UnsafeRawBufferPointer) {
        guard !stopReading else { return }
        parser.feed(bytes)
        parseAvailable()
    }

    func readComplete() {}

    private func parseAvailable() {
        // Paused for a streaming body's reader: bytes already read stay in the parser until
        // the handler takes what it has (bodyCredited), so the unread part stays bounded.
        while !stopReading && !bodyPaused && queue.count < context.limits.maxPipelinedRequests {
            let event: HTTP1ParseEvent?
            do {
                event = try parser.next()
            } catch {
                streaming?.body.fail(HTTPError(error.status, code: error.code, message: error.message))
                streaming = nil
                enqueueFinal(.error(error.status, code: error.code, message: error.message))
                break
            }
            guard let event else { break }
            switch event {
            case .head(let head, _):
                // Only when nothing is ahead of it, or the 100 would jump the response queue.
                if head.expectsContinue && queue.isEmpty && head.minorVersion == 1 {
                    channel.write(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8))
                }
                if case .streaming(_, _, let limit)? = pendingRoute { startStreaming(head, limit: limit) }
            case .bodyPart(let bytes):
                if let streaming, streaming.body.yield(bytes) > Self.bodyHighWater { bodyPaused = true }
            case .request(let head, let body):
                if let streaming {
                    streaming.body.finish()
                    self.streaming = nil
                    // The last request of a `Connection: close` (or HTTP/1.0) exchange: nothing
                    // after its body is read.
                    if !head.keepAlive { stopReading = true }
                } else {
                    enqueue(head, body: body, bodyStream: nil)
                }
            }
        }
        // Back-pressure: a client pipelining faster than we answer waits in its socket buffer,
        // and so does an upload faster than its handler writes it.
        channel.setReading(!stopReading && !bodyPaused && queue.count < context.limits.maxPipelinedRequests)
        headStartedAt = parser.isInsideHead ? (headStartedAt ?? monotonicNanos()) : nil
    }

    private func makeRequest(_ head: HTTP1RequestHead) -> HTTPRequest {
        let (path, query) = HTTPRequest.splitTarget(head.target)
        var request = HTTPRequest(method: head.method, path: path, query: query, headers: head.headers,
                                  httpVersion: head.minorVersion == 1 ? "1.1" : "1.0", remoteAddress: channel.peer?.host)
        request.clientCertificate = channel.verifiedPeer
        return request
    }

    private func startStreaming(_ head: HTTP1RequestHead, limit: Int) {
        let loop = channel.loop
        let body = HTTPBodyStream(limit: limit) { [weak self] _ in
            guard let handler = self else { return }
            loop.execute { handler.bodyCredited() }
        }
        streaming = (nextID, body)
        enqueue(head, body: [], bodyStream: body)
    }

    /// The handler read what was buffered: resume reading the socket if we had paused.
    private func bodyCredited() {
        guard bodyPaused else { return }
        bodyPaused = false
        parseAvailable()
    }

    private func enqueue(_ head: HTTP1RequestHead, body: [UInt8], bodyStream: HTTPBodyStream?) {
        let id = nextID
        nextID += 1
        queue.append(Slot(id: id, method: head.method, keepAlive: head.keepAlive, minorVersion: head.minorVersion))
        // A streaming request is enqueued when its head arrives: its body still has to be
        // read, so reading stops only at its end (above). Stopping here left such an upload
        // unread until the 408, and nothing stored.
        if !head.keepAlive && bodyStream == nil { stopReading = true }
        let routed = pendingRoute ?? context.route(makeRequest(head))
        pendingRoute = nil
        let immediate = context.run(routed, body: body, bodyStream: bodyStream, on: channel.loop) { response in
            self.complete(id, response)
        }
        if let immediate {
            // Inside a read event: the channel flushes once at its end.
            queue[queue.count - 1].response = immediate
            writeReadyResponses()
        }
    }

    /// Queues an answer the transport itself gives (400, 408, 413, 431…) and stops reading:
    /// after a framing error the rest of the byte stream cannot be trusted.
    private func enqueueFinal(_ response: HTTPResponse) {
        stopReading = true
        queue.append(Slot(id: nextID, method: "GET", keepAlive: false, minorVersion: 1, response: response))
        nextID += 1
        writeReadyResponses()
        channel.flush()
    }

    private func complete(_ id: Int, _ response: HTTPResponse) {
        guard !channel.isClosed, let index = queue.firstIndex(where: { $0.id == id }) else { return }
        queue[index].response = response
        if let streaming, streaming.slot == id {
            // Answered before its body ended (an error): the rest of the body is never read,
            // so the connection cannot carry another request.
            streaming.body.fail(HTTPBodyStream.brokenOff)
            self.streaming = nil
            queue[index].keepAlive = false
            stopReading = true
        }
        writeReadyResponses()
        if !stopReading {
            parseAvailable()  // requests that waited behind a full pipeline
        }
        channel.flush()
    }

    private func writeReadyResponses() {
        while fileInFlight == nil, let slot = queue.first, let response = slot.response {
            queue.removeFirst()
            let close = !slot.keepAlive || (queue.isEmpty && (stopReading || inputEnded))
            channel.write(serializeHead(response, for: slot, close: close))
            let bodyAllowed = response.status >= 200 && response.status != 204 && response.status != 304
            if bodyAllowed && slot.method != "HEAD" {
                if let file = response.file, file.length > 0 {
                    fileInFlight = (file, 0, close)
                    return pumpFile()
                }
                channel.write(response.body)
            }
            if close { return closeAfterLastResponse() }
        }
    }

    private func closeAfterLastResponse() {
        queue.removeAll()
        channel.closeAfterFlush()
    }

    /// Sends the file response chunk by chunk; the socket's writability resumes it.
    private func pumpFile() {
        guard let (file, position, close) = fileInFlight, !fileReadPending, !channel.isClosed else { return }
        if position >= file.length {
            fileInFlight = nil
            if close { return closeAfterLastResponse() }
            writeReadyResponses()
            if !stopReading { parseAvailable() }
            channel.flush()
            return
        }
        guard !channel.isWriteBlocked else { return }
        fileReadPending = true
        file.readChunk(at: position, on: channel.loop) { [self] result in
            fileReadPending = false
            guard !channel.isClosed, fileInFlight != nil else { return }
            // The head promised this many bytes: if the disk fails us, only closing is honest.
            guard case .success(let bytes) = result else { return channel.close() }
            channel.write(bytes)
            channel.flush()
            fileInFlight?.position += bytes.count
            pumpFile()
        }
    }

    private func serializeHead(_ response: HTTPResponse, for slot: Slot, close: Bool) -> [UInt8] {
        var head = "HTTP/1.1 \(response.status) \(reasonPhrase(response.status))\r\n"
        for (name, value) in response.headers where !name.caseInsensitiveEquals("content-length") {
            // A CR or LF in a value would let a handler's input split the response.
            head += "\(name): \(value.filter { $0 != "\r" && $0 != "\n" })\r\n"
        }
        let bodyAllowed = response.status >= 200 && response.status != 204 && response.status != 304
        if bodyAllowed { head += "content-length: \(response.contentLength)\r\n" }
        head += "date: \(HTTPDate.now)\r\nserver: flotilla\r\n"
        if close {
            head += "connection: close\r\n"
        } else if slot.minorVersion == 0 {
            head += "connection: keep-alive\r\n"
        }
        head += "\r\n"
        return Array(head.utf8)
    }

    private var idle: Bool { queue.isEmpty && fileInFlight == nil }

    func inputClosed() {
        inputEnded = true
        stopReading = true
        streaming?.body.fail(HTTPBodyStream.brokenOff)
        streaming = nil
        // A half-closed client still gets the answers to what it sent.
        if idle { channel.closeAfterFlush() }
    }

    func writabilityRestored() { pumpFile() }

    func connectionClosed() {
        streaming?.body.fail(HTTPBodyStream.brokenOff)
        streaming = nil
        fileInFlight = nil
    }

    func tick(now: UInt64) {
        let silent = now &- channel.lastReadAt > context.idleTimeoutNanos
        if let started = headStartedAt, now &- started > context.headTimeoutNanos {
            headStartedAt = nil
            enqueueFinal(.error(408, code: "request_timeout", message: "the request head did not arrive in time"))
        } else if let streaming, silent && !bodyPaused {
            // An upload that stalled mid-body would hold its handler forever.
            streaming.body.fail(HTTPError(408, code: "request_timeout", message: "the request body stopped arriving"))
        } else if idle && !parser.isInsideHead && silent {
            channel.close()
        }
    }

    func beginGracefulShutdown() {
        stopReading = true
        channel.setReading(false)
        if idle { channel.closeAfterFlush() }
    }
}
