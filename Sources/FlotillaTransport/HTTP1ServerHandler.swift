// HTTP/1.1 on one connection: keep-alive, pipelining (responses leave in request
// order whatever order the handlers finish in), 100-continue, and error answers that
// close the connection once the framing can no longer be trusted.

final class HTTP1ServerHandler: ServerProtocolHandler, @unchecked Sendable {
    private struct Slot {
        let id: Int
        let method: String
        let keepAlive: Bool
        let minorVersion: Int
        var response: HTTPResponse?
    }

    private let channel: SocketChannel
    private let context: ServerContext
    private var parser: HTTP1RequestParser
    private var queue: [Slot] = []
    private var nextID = 0
    /// No further requests will be read: an error broke the framing, the client said close, or shutdown.
    private var stopReading = false
    private var inputEnded = false
    private var headStartedAt: UInt64?

    init(channel: SocketChannel, context: ServerContext) {
        self.channel = channel
        self.context = context
        parser = HTTP1RequestParser(limits: .init(
            maxHeadBytes: context.limits.maxHeaderBytes,
            maxRequestLineBytes: min(8 * 1024, context.limits.maxHeaderBytes),
            maxBodyBytes: context.limits.maxBodyBytes))
    }

    func received(_ bytes: UnsafeRawBufferPointer) {
        guard !stopReading else { return }
        parser.feed(bytes)
        parseAvailable()
    }

    func readComplete() {}

    private func parseAvailable() {
        while !stopReading && queue.count < context.limits.maxPipelinedRequests {
            let event: HTTP1ParseEvent?
            do {
                event = try parser.next()
            } catch {
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
            case .request(let head, let body):
                enqueue(head, body: body)
            }
        }
        // Back-pressure: a client pipelining faster than we answer waits in its socket buffer.
        channel.setReading(!stopReading && queue.count < context.limits.maxPipelinedRequests)
        headStartedAt = parser.isInsideHead ? (headStartedAt ?? monotonicNanos()) : nil
    }

    private func enqueue(_ head: HTTP1RequestHead, body: [UInt8]) {
        let id = nextID
        nextID += 1
        queue.append(Slot(id: id, method: head.method, keepAlive: head.keepAlive, minorVersion: head.minorVersion))
        if !head.keepAlive { stopReading = true }
        let (path, query) = HTTPRequest.splitTarget(head.target)
        let request = HTTPRequest(method: head.method, path: path, query: query, headers: head.headers, body: body,
                                  httpVersion: head.minorVersion == 1 ? "1.1" : "1.0",
                                  remoteAddress: channel.peer?.host)
        let immediate = context.dispatch(request, on: channel.loop) { response in
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
        writeReadyResponses()
        if !stopReading {
            parseAvailable()  // requests that waited behind a full pipeline
        }
        channel.flush()
    }

    private func writeReadyResponses() {
        while let slot = queue.first, let response = slot.response {
            queue.removeFirst()
            let close = !slot.keepAlive || (queue.isEmpty && (stopReading || inputEnded))
            channel.write(serialize(response, for: slot, close: close))
            if close {
                queue.removeAll()
                channel.closeAfterFlush()
                return
            }
        }
    }

    private func serialize(_ response: HTTPResponse, for slot: Slot, close: Bool) -> [UInt8] {
        var head = "HTTP/1.1 \(response.status) \(reasonPhrase(response.status))\r\n"
        for (name, value) in response.headers where !name.caseInsensitiveEquals("content-length") {
            // A CR or LF in a value would let a handler's input split the response.
            head += "\(name): \(value.filter { $0 != "\r" && $0 != "\n" })\r\n"
        }
        let bodyAllowed = response.status >= 200 && response.status != 204 && response.status != 304
        if bodyAllowed { head += "content-length: \(response.body.count)\r\n" }
        head += "date: \(HTTPDate.now)\r\nserver: flotilla\r\n"
        if close {
            head += "connection: close\r\n"
        } else if slot.minorVersion == 0 {
            head += "connection: keep-alive\r\n"
        }
        head += "\r\n"
        var bytes = Array(head.utf8)
        if bodyAllowed && slot.method != "HEAD" { bytes += response.body }
        return bytes
    }

    func inputClosed() {
        inputEnded = true
        stopReading = true
        // A half-closed client still gets the answers to what it sent.
        if queue.isEmpty { channel.closeAfterFlush() }
    }

    func writabilityRestored() {}

    func tick(now: UInt64) {
        if let started = headStartedAt, now &- started > context.headTimeoutNanos {
            headStartedAt = nil
            enqueueFinal(.error(408, code: "request_timeout", message: "the request head did not arrive in time"))
        } else if queue.isEmpty && !parser.isInsideHead && now &- channel.lastReadAt > context.idleTimeoutNanos {
            channel.close()
        }
    }

    func beginGracefulShutdown() {
        stopReading = true
        channel.setReading(false)
        if queue.isEmpty { channel.closeAfterFlush() }
    }
}
