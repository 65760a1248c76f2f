/*
 * TLS codec (see tls.h): an SSL object between two memory BIOs. `in` holds what the network
 * sent and OpenSSL has not consumed; `out` what OpenSSL produced for the network. Both are
 * OpenSSL's growable memory BIOs, drained by the caller (keel_tls_conn_take) and filled only as
 * fast as the caller reads its socket, so neither grows past what the caller chose to hold.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "err.h"

/* TLS 1.2: ECDHE key exchange and AEAD ciphers only. TLS 1.3: OpenSSL's three default suites
 * (all AEAD with forward secrecy), AES-128-GCM first as Go (etcd) orders them: as strong for
 * this use and cheaper per record than AES-256 (keel's replies are many small records). */
#define TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"
#define TLS13_SUITES  "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define ALPN_MAX      32 /* bytes of one protocol name */
#define ALPN_WIRE_MAX 64 /* bytes of the whole list in wire form */

struct keel_tls_ctx {
    enum keel_tls_role role;
    bool verify_peer;
    char *cert_file, *key_file, *ca_file;
    unsigned char alpn[ALPN_WIRE_MAX]; /* wire form: per name a length byte, then the name */
    size_t alpn_len;                   /* 0: no ALPN */
    SSL_CTX *ssl;
};

struct keel_tls_conn {
    SSL *ssl;
    BIO *in, *out; /* owned by ssl */
    enum keel_tls_role role;
    bool verify_peer;
    bool established, shut;
    int state;     /* 0, KEEL_ETLS or KEEL_ECLOSED: sticky */
    uint8_t *held; /* plaintext written before the handshake completed */
    size_t held_len, held_cap;
    char err[256];
    char alpn[ALPN_MAX + 1];
};

/* OpenSSL's error queue must be empty before an SSL call for SSL_get_error to be right.
 * ERR_clear_error walks the whole queue; on the per-record path (read, write, take) a peek, which
 * finds it empty almost always, costs less. */
static void errq_clean(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return KEEL_EINVAL;
}

/* OpenSSL's reason for the oldest error queued on this thread, then the queue emptied. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    return r != NULL ? r : "unknown reason";
}

/* A file the context needs must be readable: say so by name before OpenSSL does less clearly. */
static int check_file(const char *what, const char *path, char *err, size_t errlen)
{
    if (access(path, R_OK) != 0)
        return fail(err, errlen, "%s %s: %s", what, path, strerror(errno));
    return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct keel_tls_ctx *c = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, c->alpn, (unsigned)c->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* the client does not speak ours: go on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* A new SSL_CTX from c's settings and files, or NULL with err set. */
static SSL_CTX *build(struct keel_tls_ctx *c, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *s =
        SSL_CTX_new(c->role == KEEL_TLS_SERVER ? TLS_server_method() : TLS_client_method());
    if (s == NULL) {
        fail(err, errlen, "TLS: cannot make a context: %s", ssl_reason());
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(s, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(s, TLS13_SUITES) != 1) {
        fail(err, errlen, "TLS: cannot set the protocol policy: %s", ssl_reason());
        goto bad;
    }
    SSL_CTX_set_options(s, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their record buffers back: a member holds thousands. The chain
     * sent is the certificate file's, as etcd sends it: not one OpenSSL completes from the
     * trusted CAs (a peer must not learn to trust a root from the one it checks). */
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
    /* Take every record the memory BIO holds in one read, not a header and a body per record:
     * a turn's bytes hold many small records. What is read ahead stays in the codec until
     * keel_tls_conn_read takes it, as it did in the BIO. */
    SSL_CTX_set_read_ahead(s, 1);
    if (c->cert_file != NULL) {
        if (check_file("certificate file", c->cert_file, err, errlen) != 0 ||
            check_file("key file", c->key_file, err, errlen) != 0)
            goto bad;
        if (SSL_CTX_use_certificate_chain_file(s, c->cert_file) != 1) {
            fail(err, errlen, "certificate file %s: %s", c->cert_file, ssl_reason());
            goto bad;
        }
        if (SSL_CTX_use_PrivateKey_file(s, c->key_file, SSL_FILETYPE_PEM) != 1) {
            if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
                ERR_clear_error();
                fail(err, errlen, "key file %s does not match certificate file %s", c->key_file,
                     c->cert_file);
            } else {
                fail(err, errlen, "key file %s: %s", c->key_file, ssl_reason());
            }
            goto bad;
        }
        if (SSL_CTX_check_private_key(s) != 1) {
            fail(err, errlen, "key file %s does not match certificate file %s: %s", c->key_file,
                 c->cert_file, ssl_reason());
            goto bad;
        }
    }
    if (c->ca_file != NULL) {
        if (check_file("trusted CA file", c->ca_file, err, errlen) != 0)
            goto bad;
        if (SSL_CTX_load_verify_locations(s, c->ca_file, NULL) != 1) {
            fail(err, errlen, "trusted CA file %s: %s", c->ca_file, ssl_reason());
            goto bad;
        }
        if (c->role == KEEL_TLS_SERVER && c->verify_peer) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca_file);
            if (names == NULL) {
                fail(err, errlen, "trusted CA file %s: no certificate in it", c->ca_file);
                goto bad;
            }
            SSL_CTX_set_client_CA_list(s, names);
        }
    } else if (c->role == KEEL_TLS_CLIENT && c->verify_peer) {
        if (SSL_CTX_set_default_verify_paths(s) != 1) {
            fail(err, errlen, "TLS: cannot load the system's CAs: %s", ssl_reason());
            goto bad;
        }
    }
    int mode = SSL_VERIFY_NONE;
    if (c->verify_peer)
        mode = c->role == KEEL_TLS_SERVER ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                          : SSL_VERIFY_PEER;
    SSL_CTX_set_verify(s, mode, NULL);
    if (c->alpn_len > 0) {
        if (c->role == KEEL_TLS_SERVER) {
            SSL_CTX_set_alpn_select_cb(s, alpn_select, c);
        } else if (SSL_CTX_set_alpn_protos(s, c->alpn, (unsigned)c->alpn_len) != 0) {
            /* (0 is success for this one call) */
            fail(err, errlen, "TLS: cannot set ALPN: %s", ssl_reason());
            goto bad;
        }
    }
    return s;
bad:
    SSL_CTX_free(s);
    return NULL;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *oom = true;
    return d;
}

int keel_tls_ctx_new(const struct keel_tls_options *o, struct keel_tls_ctx **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (o->role == KEEL_TLS_SERVER && o->cert_file == NULL)
        return fail(err, errlen, "TLS: a server needs a certificate file and a key file");
    if ((o->cert_file == NULL) != (o->key_file == NULL))
        return fail(err, errlen,
                    "TLS: a certificate file needs its key file, and a key file "
                    "its certificate file");
    if (o->role == KEEL_TLS_SERVER && o->verify_peer && o->ca_file == NULL)
        return fail(err, errlen,
                    "TLS: client certificate authentication needs a trusted CA "
                    "file");
    /* "h2,http/1.1" -> "\x02h2\x08http/1.1", in the order given. */
    unsigned char wire[ALPN_WIRE_MAX];
    size_t wlen = 0;
    for (const char *a = o->alpn; a != NULL;) {
        const char *comma = strchr(a, ',');
        size_t n = comma != NULL ? (size_t)(comma - a) : strlen(a);
        if (n == 0 || n > ALPN_MAX || wlen + 1 + n > sizeof(wire))
            return fail(err, errlen,
                        "TLS: ALPN list '%s': each protocol name must be 1 to %d bytes, and the "
                        "list at most %d bytes on the wire",
                        o->alpn, ALPN_MAX, ALPN_WIRE_MAX);
        wire[wlen] = (unsigned char)n;
        memcpy(wire + wlen + 1, a, n);
        wlen += 1 + n;
        a = comma != NULL ? comma + 1 : NULL;
    }
    struct keel_tls_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return KEEL_ENOMEM;
    bool oom = false;
    c->role = o->role;
    c->verify_peer = o->verify_peer;
    c->cert_file = dup_or_null(o->cert_file, &oom);
    c->key_file = dup_or_null(o->key_file, &oom);
    c->ca_file = dup_or_null(o->ca_file, &oom);
    memcpy(c->alpn, wire, wlen);
    c->alpn_len = wlen;
    if (oom) {
        keel_tls_ctx_free(c);
        return KEEL_ENOMEM;
    }
    c->ssl = build(c, err, errlen);
    if (c->ssl == NULL) {
        keel_tls_ctx_free(c);
        return KEEL_EINVAL;
    }
    *out = c;
    return 0;
}

int keel_tls_ctx_reload(struct keel_tls_ctx *c, char *err, size_t errlen)
{
    SSL_CTX *s = build(c, err, errlen);
    if (s == NULL)
        return KEEL_EINVAL;
    /* Each connection holds a reference to the SSL_CTX it was made from. */
    SSL_CTX_free(c->ssl);
    c->ssl = s;
    return 0;
}

void keel_tls_ctx_free(struct keel_tls_ctx *c)
{
    if (c == NULL)
        return;
    SSL_CTX_free(c->ssl);
    free(c->cert_file);
    free(c->key_file);
    free(c->ca_file);
    free(c);
}

/* ---- connections ---- */

static bool is_ipv4(const char *s)
{
    struct in_addr a;
    return inet_pton(AF_INET, s, &a) == 1;
}

int keel_tls_conn_new(struct keel_tls_ctx *c, const char *peer_name, struct keel_tls_conn **out)
{
    *out = NULL;
    if (c->role == KEEL_TLS_CLIENT && c->verify_peer && (peer_name == NULL || *peer_name == 0))
        return KEEL_EINVAL;
    struct keel_tls_conn *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return KEEL_ENOMEM;
    t->role = c->role;
    t->verify_peer = c->verify_peer;
    ERR_clear_error();
    t->ssl = SSL_new(c->ssl);
    t->in = BIO_new(BIO_s_mem());
    t->out = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->in == NULL || t->out == NULL) {
        BIO_free(t->in);
        BIO_free(t->out);
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return KEEL_ENOMEM;
    }
    SSL_set_bio(t->ssl, t->in, t->out);
    int ok = 1;
    if (c->role == KEEL_TLS_SERVER) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (peer_name != NULL && *peer_name != 0) {
            if (is_ipv4(peer_name)) {
                ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), peer_name);
            } else {
                /* SNI names the server we want; the certificate must name it too. */
                ok = SSL_set_tlsext_host_name(t->ssl, peer_name) == 1 &&
                     SSL_set1_host(t->ssl, peer_name) == 1;
            }
        }
        if (ok) {
            /* The ClientHello goes out at once: it waits in `out` for the caller. */
            int r = SSL_do_handshake(t->ssl);
            int e = SSL_get_error(t->ssl, r);
            ok = r == 1 || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
        }
    }
    ERR_clear_error();
    if (!ok) {
        keel_tls_conn_free(t);
        return KEEL_EINVAL;
    }
    *out = t;
    return 0;
}

void keel_tls_conn_free(struct keel_tls_conn *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl); /* and its BIOs */
    free(t->held);
    free(t);
}

/* The connection failed: remember why (the first reason only) and stay failed. */
static int broken(struct keel_tls_conn *t, int ssl_err)
{
    if (t->state != 0)
        return t->state;
    long v = SSL_get_verify_result(t->ssl);
    if (t->verify_peer && v != X509_V_OK) {
        snprintf(t->err, sizeof(t->err), "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
    } else if (ERR_peek_error() != 0) {
        snprintf(t->err, sizeof(t->err), "%s", ssl_reason());
    } else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_SSL) {
        snprintf(t->err, sizeof(t->err), "TLS protocol error");
    } else {
        snprintf(t->err, sizeof(t->err), "TLS error %d", ssl_err);
    }
    t->state = KEEL_ETLS;
    return t->state;
}

/* Encrypt what was written before the handshake completed. */
static int flush_held(struct keel_tls_conn *t)
{
    if (t->held_len == 0)
        return 0;
    size_t w = 0;
    if (SSL_write_ex(t->ssl, t->held, t->held_len, &w) != 1 || w != t->held_len)
        return broken(t, SSL_get_error(t->ssl, 0));
    free(t->held);
    t->held = NULL;
    t->held_len = t->held_cap = 0;
    return 0;
}

/* Drive the handshake with what has been fed. */
static int advance(struct keel_tls_conn *t)
{
    if (t->established)
        return 0;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->established = true;
        const unsigned char *p = NULL;
        unsigned n = 0;
        SSL_get0_alpn_selected(t->ssl, &p, &n);
        if (p != NULL && n <= ALPN_MAX) {
            memcpy(t->alpn, p, n);
            t->alpn[n] = 0;
        }
        return t->shut ? 0 : flush_held(t);
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    return broken(t, e);
}

int keel_tls_conn_feed(struct keel_tls_conn *t, const void *data, size_t len)
{
    if (t->state != 0)
        return t->state;
    if (len > 0) {
        size_t w = 0;
        if (BIO_write_ex(t->in, data, len, &w) != 1 || w != len) {
            ERR_clear_error();
            return KEEL_ENOMEM;
        }
    }
    return advance(t);
}

int keel_tls_conn_read(struct keel_tls_conn *t, void *buf, size_t cap, size_t *n)
{
    *n = 0;
    if (t->state != 0)
        return t->state;
    if (!t->established || cap == 0)
        return 0;
    errq_clean();
    if (SSL_read_ex(t->ssl, buf, cap, n) == 1)
        return 0;
    *n = 0;
    int e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN) {
        snprintf(t->err, sizeof(t->err), "the peer closed the TLS session");
        t->state = KEEL_ECLOSED;
        return t->state;
    }
    return broken(t, e);
}

int keel_tls_conn_write(struct keel_tls_conn *t, const void *data, size_t len)
{
    if (t->state != 0)
        return t->state;
    if (t->shut)
        return KEEL_ECLOSED;
    if (len == 0)
        return 0;
    if (!t->established) {
        if (t->held_len + len > t->held_cap) {
            size_t cap = t->held_cap ? t->held_cap : 4096;
            while (cap < t->held_len + len)
                cap *= 2;
            uint8_t *h = realloc(t->held, cap);
            if (h == NULL)
                return KEEL_ENOMEM;
            t->held = h;
            t->held_cap = cap;
        }
        memcpy(t->held + t->held_len, data, len);
        t->held_len += len;
        return 0;
    }
    errq_clean();
    size_t w = 0;
    if (SSL_write_ex(t->ssl, data, len, &w) != 1 || w != len)
        return broken(t, SSL_get_error(t->ssl, 0));
    return 0;
}

size_t keel_tls_conn_pending(const struct keel_tls_conn *t)
{
    return BIO_ctrl_pending(t->out);
}

size_t keel_tls_conn_take(struct keel_tls_conn *t, void *buf, size_t cap)
{
    size_t n = 0;
    if (cap == 0 || BIO_read_ex(t->out, buf, cap, &n) != 1)
        n = 0;
    errq_clean();
    return n;
}

void keel_tls_conn_shutdown(struct keel_tls_conn *t)
{
    if (t->shut)
        return;
    t->shut = true;
    if (t->state == 0 && t->established) {
        (void)SSL_shutdown(t->ssl); /* queues close_notify; the peer's answer is not awaited */
        ERR_clear_error();
    }
}

bool keel_tls_conn_established(const struct keel_tls_conn *t)
{
    return t->established && t->state == 0;
}

const char *keel_tls_conn_error(const struct keel_tls_conn *t)
{
    return t->err;
}

int keel_tls_conn_peer_cn(const struct keel_tls_conn *t, char *buf, size_t cap)
{
    if (!t->established || !t->verify_peer || SSL_get_verify_result(t->ssl) != X509_V_OK)
        return KEEL_ENOTFOUND;
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    if (x == NULL)
        return KEEL_ENOTFOUND;
    X509_NAME *name = X509_get_subject_name(x);
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i < 0)
        return KEEL_ENOTFOUND;
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    const unsigned char *p = ASN1_STRING_get0_data(s);
    int len = ASN1_STRING_length(s);
    if (p == NULL || len <= 0 || memchr(p, 0, (size_t)len) != NULL)
        return KEEL_ENOTFOUND; /* an empty CN, or one hiding a NUL, names no user */
    if ((size_t)len + 1 > cap)
        return KEEL_EINVAL;
    memcpy(buf, p, (size_t)len);
    buf[len] = 0;
    return 0;
}

bool keel_tls_conn_peer_names(const struct keel_tls_conn *t, const char *host)
{
    if (!t->established || !t->verify_peer || SSL_get_verify_result(t->ssl) != X509_V_OK)
        return false;
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    if (x == NULL || host == NULL || host[0] == '\0')
        return false;
    int rc = is_ipv4(host) ? X509_check_ip_asc(x, host, 0) : X509_check_host(x, host, 0, 0, NULL);
    ERR_clear_error();
    return rc == 1;
}

const char *keel_tls_conn_alpn(const struct keel_tls_conn *t)
{
    return t->alpn;
}

const char *keel_tls_conn_version(const struct keel_tls_conn *t)
{
    return t->established ? SSL_get_version(t->ssl) : "";
}
