/*
 * TLS for keel's connections: an I/O-free codec over OpenSSL (nghttp2's model).
 *
 * The caller owns the socket and the event loop. It feeds the bytes it read from the network
 * to keel_tls_conn_feed, takes the plaintext out with keel_tls_conn_read, hands plaintext to
 * keel_tls_conn_write, and sends whatever keel_tls_conn_take gives it. Nothing here reads or
 * writes a descriptor, blocks, or calls back: the same code serves keeld's client and peer
 * ports, libkeel and keel-gateway, on any loop, and a unit test drives two ends in memory.
 *
 * Policy, the same everywhere: TLS 1.2 or newer; for TLS 1.2 only ECDHE key exchange with AEAD
 * ciphers (forward secrecy, no CBC); TLS 1.3's default suites; no renegotiation, no
 * compression. A peer's certificate is checked against the configured CAs, its validity dates,
 * and (on a client) the name or IP address it was reached by (its subjectAltName).
 *
 * Errors: functions return 0 or a negative KEEL_E* code (err.h). A failed handshake or a
 * broken record is KEEL_ETLS; keel_tls_conn_error then says why in OpenSSL's words, e.g.
 * "certificate verify failed: unable to get local issuer certificate" or "peer did not return
 * a certificate". A connection that failed stays failed: the caller closes it (after sending
 * what keel_tls_conn_take still gives, which may carry the alert that tells the peer why).
 *
 * Threads: a context may be shared by connections on one thread; keel_tls_ctx_reload must run
 * on that thread too. A connection is used by one thread at a time.
 */
#ifndef KEEL_TLS_H
#define KEEL_TLS_H

#include <stdbool.h>
#include <stddef.h>

enum keel_tls_role { KEEL_TLS_SERVER, KEEL_TLS_CLIENT };

struct keel_tls_options {
    enum keel_tls_role role;
    /* PEM files. cert_file holds this end's certificate, then any intermediates; key_file its
     * private key. Required for a server; optional for a client (then it has no certificate to
     * show a server that asks for one). */
    const char *cert_file;
    const char *key_file;
    /* The CAs a peer's certificate must chain to (PEM, one or more). NULL: a client trusts the
     * system's default CAs; a server cannot verify clients (verify_peer must be false). */
    const char *ca_file;
    /* Server: require a client certificate that chains to ca_file (--client-cert-auth).
     * Client: verify the server's certificate and name; false only when the user asked
     * for it (--insecure-skip-tls-verify). */
    bool verify_peer;
    /* ALPN protocols this end speaks, comma-separated in order of preference ("h2" or
     * "h2,http/1.1"), or NULL for none. A server selects its first that the client offers and
     * goes on without ALPN when there is none; a client offers them all. Each name 1 to 32
     * bytes, the list at most 64 bytes in wire form (KEEL_EINVAL otherwise). */
    const char *alpn;
};

struct keel_tls_ctx;
struct keel_tls_conn;

/*
 * Make a context from o (the file names are copied: keel_tls_ctx_reload reads them again).
 * Every file is read and checked now: a missing or unreadable file, a key that does not match
 * its certificate, or an option the role cannot use gives KEEL_EINVAL (or KEEL_ENOMEM) with a
 * message naming the file and the reason in err. *out is owned by the caller:
 * keel_tls_ctx_free.
 */
int keel_tls_ctx_new(const struct keel_tls_options *o, struct keel_tls_ctx **out, char *err,
                     size_t errlen);

/*
 * Read the files again (certificates renewed on disk; SIGHUP). New connections use the new
 * certificates; connections already made keep the ones they started with. On an error the
 * context stays as it was and err says why (as keel_tls_ctx_new).
 */
int keel_tls_ctx_reload(struct keel_tls_ctx *c, char *err, size_t errlen);

/* Free c. Connections made from it may outlive it: each holds what it needs. NULL is fine. */
void keel_tls_ctx_free(struct keel_tls_ctx *c);

/*
 * A connection's TLS state, in c's role. peer_name (a client's): the DNS name or IPv4 address
 * the server was reached by, which its certificate must name; NULL skips the name check (only
 * with verify_peer false). A client's handshake starts at once: its first flight waits in
 * keel_tls_conn_take. 0, KEEL_EINVAL (a client without peer_name that verifies) or
 * KEEL_ENOMEM. *out is the caller's: keel_tls_conn_free.
 */
int keel_tls_conn_new(struct keel_tls_ctx *c, const char *peer_name, struct keel_tls_conn **out);

/* Free t without a goodbye (see keel_tls_conn_shutdown). NULL is fine. */
void keel_tls_conn_free(struct keel_tls_conn *t);

/*
 * Bytes read from the network, in order, any split. They are consumed whole: the handshake
 * advances and records are decrypted into plaintext kept for keel_tls_conn_read. 0, or
 * KEEL_ETLS when the peer failed the handshake or sent a bad record (keel_tls_conn_error),
 * KEEL_ECLOSED once the peer said goodbye (close_notify), KEEL_ENOMEM.
 */
int keel_tls_conn_feed(struct keel_tls_conn *t, const void *data, size_t len);

/*
 * Take up to cap bytes of decrypted plaintext into buf: *n is how many (0: none until more
 * is fed). 0 or the connection's error (as keel_tls_conn_feed).
 */
int keel_tls_conn_read(struct keel_tls_conn *t, void *buf, size_t cap, size_t *n);

/*
 * Plaintext to send. Before the handshake completes it is held (in memory the caller's own
 * output bounds account for: the caller writes only what it would have queued on a plain
 * socket) and encrypted once it does. 0, KEEL_ETLS / KEEL_ECLOSED (the connection failed or
 * was shut down), KEEL_ENOMEM.
 */
int keel_tls_conn_write(struct keel_tls_conn *t, const void *data, size_t len);

/* Bytes waiting to go to the network (handshake messages, records, alerts). */
size_t keel_tls_conn_pending(const struct keel_tls_conn *t);

/* Move up to cap of them into buf, in order; returns how many. */
size_t keel_tls_conn_take(struct keel_tls_conn *t, void *buf, size_t cap);

/* Queue a close_notify (to send with keel_tls_conn_take); later writes fail KEEL_ECLOSED. */
void keel_tls_conn_shutdown(struct keel_tls_conn *t);

/* True once the handshake has completed (the peer verified, as the context asks). */
bool keel_tls_conn_established(const struct keel_tls_conn *t);

/* Why the connection failed ("" while it has not). Valid until t is freed. */
const char *keel_tls_conn_error(const struct keel_tls_conn *t);

/*
 * The common name of the peer's verified certificate (a client certificate on a server: etcd's
 * authentication by certificate CN). 0, KEEL_ENOTFOUND (no verified certificate, or no CN), or
 * KEEL_EINVAL when it does not fit in cap (NUL included).
 */
int keel_tls_conn_peer_cn(const struct keel_tls_conn *t, char *buf, size_t cap);

/*
 * Whether the peer's verified certificate names host (an IPv4 address, matched against its IP
 * subjectAltNames; else a DNS name, matched against its DNS names, wildcards as RFC 6125). A
 * server asks this of a client certificate once it knows whom the client claims to be (a
 * member's peer address). False when no certificate was verified.
 */
bool keel_tls_conn_peer_names(const struct keel_tls_conn *t, const char *host);

/* The ALPN protocol agreed ("h2"), or "" when none. Valid until t is freed. */
const char *keel_tls_conn_alpn(const struct keel_tls_conn *t);

/* The protocol version agreed ("TLSv1.3"), or "" before the handshake. */
const char *keel_tls_conn_version(const struct keel_tls_conn *t);

#endif
