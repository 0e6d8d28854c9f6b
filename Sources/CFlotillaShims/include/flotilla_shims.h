// C shims for what Swift cannot call directly: glibc functions hidden behind
// _GNU_SOURCE and OpenSSL "functions" that are really macros.
#ifndef FLOTILLA_SHIMS_H
#define FLOTILLA_SHIMS_H

#include <stddef.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC: one syscall instead of three.
int flotilla_accept_nonblocking(int fd, struct sockaddr *addr, socklen_t *len);

/// Errno lives in thread-local storage; Swift's `errno` works, but this is cheaper to reason about.
int flotilla_errno(void);

/// BIO_set_mem_eof_return(bio, -1): without it an empty memory BIO reads as EOF instead of "retry".
long flotilla_bio_set_mem_eof_return(BIO *bio, int value);

/// SSL_CTX_set_min_proto_version (a macro).
long flotilla_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version);

/// No TLS compression (CRIME), no renegotiation: SSL_CTX_set_options' flags are macros Swift cannot import.
void flotilla_ssl_ctx_harden(SSL_CTX *ctx);

/// SSL_set_tlsext_host_name (a macro): SNI for the client.
long flotilla_ssl_set_tlsext_host_name(SSL *ssl, const char *name);

/// Server-side ALPN: prefer "h2", then "http/1.1"; a client that offers neither gets no ALPN.
void flotilla_ssl_ctx_set_alpn_h2_http11(SSL_CTX *ctx);

/// Client-side ALPN offer "h2" only.
int flotilla_ssl_set_alpn_h2(SSL *ssl);

/// TLS 1.2 suites limited to ECDHE key exchange with AEAD ciphers (TLS 1.3's are all modern).
int flotilla_ssl_ctx_set_modern_ciphers(SSL_CTX *ctx);

/// Ask clients for a certificate signed by the CAs in `ca_path` (PEM). A client that sends
/// none still connects (the application decides); one whose certificate fails
/// verification does not. Returns 1 on success.
int flotilla_ssl_ctx_verify_clients(SSL_CTX *ctx, const char *ca_path);

/// The subject common name of the peer's certificate if it was presented and verified:
/// its length (0: verified, no CN); -1 when there is no verified peer certificate.
int flotilla_ssl_verified_peer_cn(SSL *ssl, char *buf, int len);

/// SSL_get_error's reason for the last failure as text (for error messages).
void flotilla_ssl_last_error(char *buf, size_t len);

#endif
