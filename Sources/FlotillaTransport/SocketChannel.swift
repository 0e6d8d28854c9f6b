// A non-blocking socket on one event loop, with an optional TLS session in front.
//
// Protocol handlers see plaintext only. Output is gathered in one buffer during an
// event and sent with one `send` at the end of it (`flush`), which is what keeps the
// syscall count per request low. Loop-confined: every method runs on `loop`.

#if canImport(Glibc)
import Glibc
#endif

public protocol ChannelHandler: AnyObject {
    /// The channel can carry application bytes (after the TLS handshake, if any).
    func channelActive(_ channel: SocketChannel)
    func channelRead(_ channel: SocketChannel, _ bytes: UnsafeRawBufferPointer)
    /// The current read event is over: a good moment to produce output; the channel flushes after.
    func channelReadComplete(_ channel: SocketChannel)
    /// The peer will send nothing more (EOF or TLS close_notify).
    func channelInputClosed(_ channel: SocketChannel)
    /// Everything queued has reached the kernel after a period of back-pressure.
    func channelWritabilityRestored(_ channel: SocketChannel)
    /// The fd is closed; the channel drops its handler after this call.
    func channelClosed(_ channel: SocketChannel, error: (any Error)?)
}

public final class SocketChannel: FDEventHandler, @unchecked Sendable {
    public let loop: any EventLoop
    let fd: Int32
    public let peer: SocketAddress?
    private var watch: (any FDWatch)?
    private(set) var handler: (any ChannelHandler)?
    private var tls: TLSSession?
    private var outbound = ByteBuffer()
    /// TLS only: plaintext gathered during an event and encrypted once at `flush`, so an event's
    /// many small HTTP/2 frames become a few full TLS records instead of one record each.
    private var plaintext = ByteBuffer()
    private var connecting: ((Result<Void, any Error>) -> Void)?
    private var writeBlocked = false
    private var closeWhenFlushed = false
    private var closeError: (any Error)?
    public private(set) var isClosed = false
    /// Monotonic time of the last byte received; the server's idle sweep reads it.
    public private(set) var lastReadAt = monotonicNanos()
    /// ALPN's choice once TLS is up; nil for plaintext.
    public var negotiatedProtocol: String? { tls?.negotiatedProtocol }
    public var isTLS: Bool { tls != nil }
    /// The CN of the client's verified certificate (mTLS), once the handshake is done.
    public var verifiedPeer: String? { tls?.verifiedPeer }
    /// The kernel's buffer is full; the write source will call back.
    public var isWriteBlocked: Bool { writeBlocked }
    /// Bytes queued but not yet accepted by the kernel.
    public var pendingOutboundBytes: Int { outbound.readableCount + plaintext.readableCount }

    init(fd: Int32, loop: any EventLoop, peer: SocketAddress?, tls: TLSSession?, handler: any ChannelHandler) {
        self.fd = fd
        self.loop = loop
        self.peer = peer
        self.tls = tls
        self.handler = handler
    }

    /// Registers with the loop. A server channel waits for bytes; a client channel still connecting
    /// waits for writability first, then starts its TLS handshake.
    func start(connecting: ((Result<Void, any Error>) -> Void)? = nil) {
        loop.assertInLoop()
        watch = loop.watch(fd: fd, handler: self)
        if let connecting {
            self.connecting = connecting
            watch?.setWriteInterest(true)
        } else if tls == nil {
            becomeActive()
        }
    }

    private func becomeActive() {
        handler?.channelActive(self)
    }

    // MARK: Output

    /// Queues plaintext; it is encrypted (if TLS) and sent at the next `flush`.
    public func write(_ bytes: UnsafeRawBufferPointer) {
        loop.assertInLoop()
        guard !isClosed else { return }
        if tls != nil { plaintext.append(bytes) } else { outbound.append(bytes) }
    }

    private func encryptPending() {
        guard let tls else { return }
        if !plaintext.isEmpty {
            do {
                try plaintext.withReadableBytes { try tls.send($0) }
            } catch {
                close(error: error)
                return
            }
            plaintext.consume(plaintext.readableCount)
        }
        tls.drain(into: &outbound)
    }

    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Sends what is queued with as few syscalls as the kernel allows.
    public func flush() {
        loop.assertInLoop()
        guard !isClosed else { return }
        encryptPending()
        guard !isClosed, !writeBlocked else { return }
        while !outbound.isEmpty {
            let sent = outbound.withReadableBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent > 0 {
                outbound.consume(sent)
                continue
            }
            let code = errno
            if sent < 0 && code == EINTR { continue }
            if sent < 0 && (code == EAGAIN || code == EWOULDBLOCK) {
                writeBlocked = true
                watch?.setWriteInterest(true)
                return
            }
            close(error: SocketError("send", code: code))
            return
        }
        if closeWhenFlushed { close(error: closeError) }
    }

    // MARK: Input control

    /// Stops or resumes reading (back-pressure: too many requests queued behind a slow response).
    public func setReading(_ on: Bool) {
        guard !isClosed else { return }
        watch?.setReadInterest(on)
    }

    // MARK: Closing

    /// Sends what is queued, then closes.
    public func closeAfterFlush(error: (any Error)? = nil) {
        guard !isClosed else { return }
        encryptPending()  // close_notify must follow the last response, not precede it
        tls?.shutdown()
        closeWhenFlushed = true
        closeError = error
        setReading(false)
        flush()
    }

    /// Closes now, dropping anything queued. `channelClosed` follows once the fd is released.
    public func close(error: (any Error)? = nil) {
        loop.assertInLoop()
        guard !isClosed else { return }
        isClosed = true
        closeError = error
        outbound.removeAll()
        plaintext.removeAll()
        if let connecting {
            self.connecting = nil
            connecting(.failure(error ?? SocketError("connect", code: ECONNABORTED)))
        }
        if let watch {
            watch.cancel()  // fdReleased() closes the fd
        } else {
            fdReleased()
        }
    }

    // MARK: FDEventHandler

    public func fdReadable() {
        guard !isClosed else { return }
        let buffer = loop.readBuffer
        // A short read means the socket is drained; a full one may mean more is waiting.
        for _ in 0..<4 {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n > 0 {
                lastReadAt = monotonicNanos()
                deliver(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                if isClosed || n < buffer.count { break }
                continue
            }
            if n == 0 {
                // EOF. A half-closed socket stays readable forever: stop watching reads.
                watch?.setReadInterest(false)
                handler?.channelInputClosed(self)
                break
            }
            let code = errno
            if code == EAGAIN || code == EWOULDBLOCK || code == EINTR { break }
            close(error: SocketError("read", code: code))
            return
        }
        guard !isClosed else { return }
        handler?.channelReadComplete(self)
        flush()
    }

    private func deliver(_ bytes: UnsafeRawBufferPointer) {
        guard let tls else {
            handler?.channelRead(self, bytes)
            return
        }
        do {
            try tls.receive(bytes, onEvent: { event in
                switch event {
                case .handshakeCompleted: becomeActive()
                case .peerClosed:
                    watch?.setReadInterest(false)
                    handler?.channelInputClosed(self)
                }
            }, deliver: { plaintext in
                guard !isClosed else { return }
                handler?.channelRead(self, plaintext)
            })
        } catch {
            close(error: error)
        }
    }

    public func fdWritable() {
        guard !isClosed else { return }
        if let connecting {
            self.connecting = nil
            let code = Socket.pendingError(fd)
            watch?.setWriteInterest(false)
            guard code == 0 else {
                let error = SocketError("connect", code: code)
                connecting(.failure(error))
                close(error: error)
                return
            }
            connecting(.success(()))
            if let tls {
                do { try tls.advanceHandshake() } catch { close(error: error); return }
            } else {
                becomeActive()
            }
            flush()
            return
        }
        writeBlocked = false
        watch?.setWriteInterest(false)
        flush()
        if !writeBlocked && !isClosed { handler?.channelWritabilityRestored(self) }
    }

    public func fdReleased() {
        Glibc.close(fd)
        watch = nil
        tls = nil
        let handler = self.handler
        self.handler = nil
        handler?.channelClosed(self, error: closeError)
    }
}
