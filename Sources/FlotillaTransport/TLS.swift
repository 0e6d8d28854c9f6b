// TLS through OpenSSL memory BIOs: the socket code moves ciphertext, OpenSSL never
// touches the fd. That keeps TLS on the same event loop, the same buffers and the
// same "one send per event" rule as plaintext connections.

import COpenSSL
import CFlotillaShims

public struct TLSError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ what: String) {
        var buffer = [CChar](repeating: 0, count: 256)
        flotilla_ssl_last_error(&buffer, buffer.count)
        description = "\(what): \(String(nulTerminated: buffer))"
    }
    init(message: String) { description = message }
}

public struct TLSServerConfiguration: Sendable {
    public var certificatePath: String
    public var privateKeyPath: String
    /// PEM file of the CAs whose client certificates are accepted (mTLS). Clients are asked
    /// for a certificate; one that fails verification cannot connect, one without a
    /// certificate can, and the application decides (`HTTPRequest.clientCertificate`).
    public var clientCAPath: String?
    public init(certificatePath: String, privateKeyPath: String, clientCAPath: String? = nil) {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.clientCAPath = clientCAPath
    }
}

public struct TLSClientConfiguration: Sendable {
    /// PEM file of the certificate authorities to trust; nil means the system's store.
    public var trustedCAPath: String?
    /// Off only for tests and first contact with a self-signed server (`curl -k`).
    public var verifyPeer: Bool
    /// A client certificate and its key (PEM), for servers that verify clients (mTLS).
    public var certificatePath: String?
    public var privateKeyPath: String?
    public init(trustedCAPath: String? = nil, verifyPeer: Bool = true, certificatePath: String? = nil, privateKeyPath: String? = nil) {
        self.trustedCAPath = trustedCAPath
        self.verifyPeer = verifyPeer
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
    }
}

/// An SSL_CTX. Immutable after creation, so it is shared by every loop.
final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer

    private init(method: OpaquePointer?) throws {
        guard let ctx = SSL_CTX_new(method) else { throw TLSError("SSL_CTX_new") }
        self.ctx = ctx
        // TLS 1.2 is the floor, and its suites are ECDHE + AEAD only (forward secrecy, no CBC).
        flotilla_ssl_ctx_set_min_proto_version(ctx, TLS1_2_VERSION)
        flotilla_ssl_ctx_harden(ctx)
        guard flotilla_ssl_ctx_set_modern_ciphers(ctx) == 1 else { throw TLSError("setting the cipher list") }
    }

    static func server(_ config: TLSServerConfiguration) throws -> TLSContext {
        let context = try TLSContext(method: TLS_server_method())
        guard SSL_CTX_use_certificate_chain_file(context.ctx, config.certificatePath) == 1 else {
            throw TLSError("loading certificate \(config.certificatePath)")
        }
        guard SSL_CTX_use_PrivateKey_file(context.ctx, config.privateKeyPath, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError("loading private key \(config.privateKeyPath)")
        }
        guard SSL_CTX_check_private_key(context.ctx) == 1 else {
            throw TLSError("certificate and private key do not match")
        }
        if let ca = config.clientCAPath, flotilla_ssl_ctx_verify_clients(context.ctx, ca) != 1 {
            throw TLSError("loading client CA \(ca)")
        }
        flotilla_ssl_ctx_set_alpn_h2_http11(context.ctx)
        return context
    }

    static func client(_ config: TLSClientConfiguration) throws -> TLSContext {
        let context = try TLSContext(method: TLS_client_method())
        if config.verifyPeer {
            SSL_CTX_set_verify(context.ctx, SSL_VERIFY_PEER, nil)
            if let ca = config.trustedCAPath {
                guard SSL_CTX_load_verify_locations(context.ctx, ca, nil) == 1 else {
                    throw TLSError("loading trusted CA \(ca)")
                }
            } else {
                SSL_CTX_set_default_verify_paths(context.ctx)
            }
        } else {
            SSL_CTX_set_verify(context.ctx, SSL_VERIFY_NONE, nil)
        }
        if let certificate = config.certificatePath {
            guard SSL_CTX_use_certificate_chain_file(context.ctx, certificate) == 1 else {
                throw TLSError("loading client certificate \(certificate)")
            }
            let key = config.privateKeyPath ?? certificate
            guard SSL_CTX_use_PrivateKey_file(context.ctx, key, SSL_FILETYPE_PEM) == 1, SSL_CTX_check_private_key(context.ctx) == 1 else {
                throw TLSError("loading client key \(key)")
            }
        }
        return context
    }

    deinit { SSL_CTX_free(ctx) }
}

/// One TLS connection's engine. Loop-confined.
final class TLSSession {
    private let ssl: OpaquePointer
    private let rbio: OpaquePointer
    private let wbio: OpaquePointer
    private(set) var handshakeComplete = false
    /// The subject CN of the peer's verified certificate ("" when it has no CN); nil when
    /// the peer presented none. Set when the handshake completes.
    private(set) var verifiedPeer: String?

    enum Event { case handshakeCompleted, peerClosed }

    init(context: TLSContext, isServer: Bool, serverName: String? = nil) throws {
        guard let ssl = SSL_new(context.ctx) else { throw TLSError("SSL_new") }
        guard let rbio = BIO_new(BIO_s_mem()), let wbio = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError("BIO_new")
        }
        // Without this an empty read BIO means EOF instead of "no data yet".
        flotilla_bio_set_mem_eof_return(rbio, -1)
        flotilla_bio_set_mem_eof_return(wbio, -1)
        SSL_set_bio(ssl, rbio, wbio)  // ssl owns both BIOs now
        self.ssl = ssl
        self.rbio = rbio
        self.wbio = wbio
        if isServer {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            flotilla_ssl_set_alpn_h2(ssl)
            if let name = serverName {
                flotilla_ssl_set_tlsext_host_name(ssl, name)
                SSL_set1_host(ssl, name)
            }
        }
    }

    deinit { SSL_free(ssl) }

    /// The protocol ALPN chose ("h2", "http/1.1"), if any.
    var negotiatedProtocol: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// Starts or continues the handshake (a client calls this first to produce its ClientHello).
    @discardableResult
    func advanceHandshake() throws -> Bool {
        guard !handshakeComplete else { return true }
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            handshakeComplete = true
            var name = [CChar](repeating: 0, count: 256)
            let length = flotilla_ssl_verified_peer_cn(ssl, &name, Int32(name.count))
            if length >= 0 { verifiedPeer = String(decoding: name.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            return true
        }
        let error = SSL_get_error(ssl, rc)
        guard error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE else {
            throw TLSError("TLS handshake failed")
        }
        return false
    }

    /// Feeds ciphertext from the socket; plaintext comes out through `deliver`.
    func receive(_ ciphertext: UnsafeRawBufferPointer, onEvent: (Event) -> Void,
                 deliver: (UnsafeRawBufferPointer) -> Void) throws {
        if ciphertext.count > 0 {
            BIO_write(rbio, ciphertext.baseAddress, Int32(ciphertext.count))
        }
        if !handshakeComplete {
            guard try advanceHandshake() else { return }
            onEvent(.handshakeCompleted)
        }
        try withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 16) { buffer in
            while true {
                let n = SSL_read(ssl, buffer.baseAddress, Int32(buffer.count))
                if n > 0 {
                    deliver(UnsafeRawBufferPointer(rebasing: buffer[0..<Int(n)]))
                    continue
                }
                switch SSL_get_error(ssl, n) {
                case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                    return
                case SSL_ERROR_ZERO_RETURN:
                    onEvent(.peerClosed)
                    return
                default:
                    throw TLSError("TLS read failed")
                }
            }
        }
    }

    /// Encrypts plaintext; the ciphertext waits in the write BIO until `drain`.
    func send(_ plaintext: UnsafeRawBufferPointer) throws {
        guard plaintext.count > 0 else { return }
        // A memory BIO grows as needed, so SSL_write takes everything in one call.
        guard SSL_write(ssl, plaintext.baseAddress, Int32(plaintext.count)) == Int32(plaintext.count) else {
            throw TLSError("TLS write failed")
        }
    }

    /// Sends close_notify (best effort; the socket is about to close anyway).
    func shutdown() { SSL_shutdown(ssl) }

    /// Moves the pending ciphertext into `buffer`.
    func drain(into buffer: inout ByteBuffer) {
        while true {
            let pending = Int(BIO_ctrl_pending(wbio))
            guard pending > 0 else { return }
            buffer.appendWithUnsafeSpace(upTo: pending) { space in
                max(0, Int(BIO_read(wbio, space.baseAddress, Int32(space.count))))
            }
        }
    }
}
