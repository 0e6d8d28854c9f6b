#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/objects.h>
#include "flotilla_shims.h"

int flotilla_accept_nonblocking(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int flotilla_errno(void) { return errno; }

long flotilla_bio_set_mem_eof_return(BIO *bio, int value) {
    return BIO_set_mem_eof_return(bio, value);
}

long flotilla_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}

void flotilla_ssl_ctx_harden(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
}

long flotilla_ssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

// Wire format: length-prefixed protocol names, in our order of preference.
static const unsigned char server_protos[] = "\x02h2\x08http/1.1";

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, outlen, server_protos, sizeof(server_protos) - 1,
                              in, inlen) != OPENSSL_NPN_NEGOTIATED) {
        // No overlap: continue without ALPN (the connection is then HTTP/1.1 or preface-sniffed).
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

void flotilla_ssl_ctx_set_alpn_h2_http11(SSL_CTX *ctx) {
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
}

int flotilla_ssl_set_alpn_h2(SSL *ssl) {
    static const unsigned char protos[] = "\x02h2";
    return SSL_set_alpn_protos(ssl, protos, sizeof(protos) - 1);
}

void flotilla_ssl_last_error(char *buf, size_t len) {
    unsigned long err = ERR_get_error();
    if (err == 0) {
        strncpy(buf, "unknown TLS error", len);
        if (len) buf[len - 1] = 0;
        return;
    }
    ERR_error_string_n(err, buf, len);
    ERR_clear_error();
}

int flotilla_ssl_ctx_set_modern_ciphers(SSL_CTX *ctx) {
    return SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
}

int flotilla_ssl_ctx_verify_clients(SSL_CTX *ctx, const char *ca_path) {
    if (SSL_CTX_load_verify_locations(ctx, ca_path, NULL) != 1) return 0;
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_path);
    if (names == NULL) return 0;
    SSL_CTX_set_client_CA_list(ctx, names);  /* ctx owns the list now */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Session resumption with client verification needs a context id. */
    static const unsigned char id[] = "flotilla";
    SSL_CTX_set_session_id_context(ctx, id, sizeof(id) - 1);
    return 1;
}

int flotilla_ssl_verified_peer_cn(SSL *ssl, char *buf, int len) {
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert == NULL) return -1;
    if (SSL_get_verify_result(ssl) != X509_V_OK) {
        X509_free(cert);
        return -1;
    }
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, len);
    X509_free(cert);
    return n < 0 ? 0 : n;
}
