/*
 * The TLS codec (tls/tls.h), both ends in memory: real certificates from scripts/gen-certs.sh
 * (two unrelated CAs), plus an expired and a self-signed one made here with OpenSSL's API
 * (the openssl command cannot backdate a certificate). Every refusal the security issue names
 * is checked on the side that must refuse, with the reason it gives:
 *   no CA / another CA / an expired or self-signed server certificate / the wrong name or IP,
 *   no client certificate where one is required / a client certificate of another CA,
 *   TLS 1.1, garbage instead of records;
 * and what must work: a handshake with client authentication and ALPN, data both ways fed in
 * random pieces, plaintext written before the handshake, the client's CN, close_notify,
 * a reload that changes the certificate for new connections only and a failed reload that
 * changes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "err.h"
#include "testutil.h"
#include "tls.h"

static char *dir_a, *dir_b; /* two CAs' worth of certificates */
static char path_buf[16][512];
static int path_next;

/* dir/name, in a rotating set of buffers (a test uses a few at once). */
static const char *P(const char *dir, const char *name)
{
    char *p = path_buf[path_next++ % 16];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void gen(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/scripts/gen-certs.sh %s --members 2 --clients root >/dev/null",
             KEEL_SOURCE_DIR, dir);
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "gen-certs.sh failed (%d)\n", rc);
        abort();
    }
}

/* A certificate for cn signed by the CA in ca_dir (or by its own key when self is set), valid
 * from not_before to not_after days from now, naming IP 127.0.0.1; written to dir/name.pem and
 * dir/name-key.pem. */
static void make_cert(const char *ca_dir, bool self, const char *dir, const char *name,
                      const char *cn, long not_before, long not_after)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_gmtime_adj(X509_getm_notBefore(x), not_before * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), not_after * 86400);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    EVP_PKEY *signer = key;
    X509 *ca = NULL;
    if (!self) {
        FILE *f = fopen(P(ca_dir, "ca.pem"), "r");
        assert_non_null(f);
        ca = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        f = fopen(P(ca_dir, "ca-key.pem"), "r");
        assert_non_null(f);
        signer = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        assert_non_null(ca);
        assert_non_null(signer);
        X509_set_issuer_name(x, X509_get_subject_name(ca));
    } else {
        X509_set_issuer_name(x, n);
    }
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca != NULL ? ca : x, x, NULL, NULL, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
    assert_non_null(san);
    X509_add_ext(x, san, -1);
    X509_EXTENSION_free(san);
    assert_true(X509_sign(x, signer, EVP_sha256()) > 0);
    char file[600];
    snprintf(file, sizeof(file), "%s/%s.pem", dir, name);
    FILE *f = fopen(file, "w");
    PEM_write_X509(f, x);
    fclose(f);
    snprintf(file, sizeof(file), "%s/%s-key.pem", dir, name);
    f = fopen(file, "w");
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    if (signer != key)
        EVP_PKEY_free(signer);
    X509_free(ca);
    X509_free(x);
    EVP_PKEY_free(key);
}

static int setup(void **state)
{
    (void)state;
    dir_a = tu_mkdtemp("tls-a");
    dir_b = tu_mkdtemp("tls-b");
    gen(dir_a);
    gen(dir_b);
    make_cert(dir_a, false, dir_a, "expired", "expired", -30, -1);
    make_cert(dir_a, true, dir_a, "selfsigned", "selfsigned", -1, 30);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmdir(dir_a);
    tu_rmdir(dir_b);
    free(dir_a);
    free(dir_b);
    return 0;
}

static struct keel_tls_ctx *ctx_or_die(const struct keel_tls_options *o)
{
    char err[256] = "";
    struct keel_tls_ctx *c = NULL;
    int rc = keel_tls_ctx_new(o, &c, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "ctx: %s\n", err);
    assert_int_equal(rc, 0);
    return c;
}

/* The member server of dir: member-1's certificate, clients verified against dir's CA. */
static struct keel_tls_ctx *server_ctx(const char *dir, bool client_auth)
{
    struct keel_tls_options o = {.role = KEEL_TLS_SERVER,
                                 .cert_file = P(dir, "member-1.pem"),
                                 .key_file = P(dir, "member-1-key.pem"),
                                 .ca_file = P(dir, "ca.pem"),
                                 .verify_peer = client_auth,
                                 .alpn = "h2"};
    return ctx_or_die(&o);
}

static struct keel_tls_ctx *client_ctx(const char *ca_dir, const char *cert_dir)
{
    struct keel_tls_options o = {.role = KEEL_TLS_CLIENT,
                                 .cert_file = cert_dir ? P(cert_dir, "client-root.pem") : NULL,
                                 .key_file = cert_dir ? P(cert_dir, "client-root-key.pem") : NULL,
                                 .ca_file = ca_dir ? P(ca_dir, "ca.pem") : NULL,
                                 .verify_peer = true,
                                 .alpn = "h2"};
    return ctx_or_die(&o);
}

/* Move every pending byte from one end to the other, in pieces of random size, until neither
 * has anything to send. Returns the first error each end's feed gave (0: none). */
struct pair {
    struct keel_tls_conn *c, *s;
    int cerr, serr;
};

static void move(struct keel_tls_conn *from, struct keel_tls_conn *to, int *err, uint64_t *rng)
{
    uint8_t buf[17000];
    size_t n;
    while ((n = keel_tls_conn_take(from, buf, 1 + tu_rand(rng) % sizeof(buf))) > 0) {
        int e = keel_tls_conn_feed(to, buf, n);
        if (e != 0 && *err == 0)
            *err = e;
    }
}

static void pump(struct pair *p, uint64_t *rng)
{
    for (int i = 0; i < 64; i++) {
        if (keel_tls_conn_pending(p->c) == 0 && keel_tls_conn_pending(p->s) == 0)
            return;
        move(p->c, p->s, &p->serr, rng);
        move(p->s, p->c, &p->cerr, rng);
    }
    fail_msg("the two ends kept talking for 64 rounds");
}

/* Read what has arrived at t (after feeding) into buf; returns the byte count, *err the
 * read's result. */
static size_t drain(struct keel_tls_conn *t, uint8_t *buf, size_t cap, int *err)
{
    size_t total = 0, n;
    *err = 0;
    do {
        *err = keel_tls_conn_read(t, buf + total, cap - total, &n);
        total += n;
    } while (*err == 0 && n > 0 && total < cap);
    return total;
}

static struct pair connect_pair(struct keel_tls_ctx *cc, const char *name, struct keel_tls_ctx *sc,
                                uint64_t *rng)
{
    struct pair p = {0};
    assert_int_equal(keel_tls_conn_new(cc, name, &p.c), 0);
    assert_int_equal(keel_tls_conn_new(sc, NULL, &p.s), 0);
    pump(&p, rng);
    /* A TLS 1.3 client learns of the server's refusal from the alert: read to see it. */
    uint8_t b[64];
    int e;
    drain(p.c, b, sizeof(b), &e);
    if (e != 0 && p.cerr == 0)
        p.cerr = e;
    drain(p.s, b, sizeof(b), &e);
    if (e != 0 && p.serr == 0)
        p.serr = e;
    return p;
}

static void pair_free(struct pair *p)
{
    keel_tls_conn_free(p->c);
    keel_tls_conn_free(p->s);
}

static void expect_contains(const char *what, const char *got, const char *want)
{
    if (strstr(got, want) == NULL)
        fail_msg("%s: '%s' does not say '%s'", what, got, want);
}

/* ---- what must work ---- */

static void test_mutual_auth_and_data(void **state)
{
    (void)state;
    uint64_t rng = tu_seed("tls");
    struct keel_tls_ctx *sc = server_ctx(dir_a, true), *cc = client_ctx(dir_a, dir_a);
    struct pair p = {0};
    assert_int_equal(keel_tls_conn_new(cc, "127.0.1.1", &p.c), 0);
    assert_int_equal(keel_tls_conn_new(sc, NULL, &p.s), 0);
    /* Written before the handshake: held, then sent once it completes. */
    assert_int_equal(keel_tls_conn_write(p.c, "early", 5), 0);
    assert_false(keel_tls_conn_established(p.c));
    pump(&p, &rng);
    assert_int_equal(p.cerr, 0);
    assert_int_equal(p.serr, 0);
    assert_true(keel_tls_conn_established(p.c));
    assert_true(keel_tls_conn_established(p.s));
    assert_string_equal(keel_tls_conn_alpn(p.s), "h2");
    assert_string_equal(keel_tls_conn_alpn(p.c), "h2");
    assert_string_equal(keel_tls_conn_version(p.s), "TLSv1.3");
    char cn[64];
    assert_int_equal(keel_tls_conn_peer_cn(p.s, cn, sizeof(cn)), 0);
    assert_string_equal(cn, "root");
    assert_int_equal(keel_tls_conn_peer_cn(p.s, cn, 4), KEEL_EINVAL);
    /* The client certificate (gen-certs.sh's client-root) names no address; a member's does. */
    assert_false(keel_tls_conn_peer_names(p.s, "127.0.0.1"));
    assert_false(keel_tls_conn_peer_names(p.s, "localhost"));
    /* The server's, seen by the client: member-1 names 127.0.1.1, 127.0.0.1 and localhost. */
    assert_true(keel_tls_conn_peer_names(p.c, "127.0.1.1"));
    assert_true(keel_tls_conn_peer_names(p.c, "localhost"));
    assert_false(keel_tls_conn_peer_names(p.c, "127.0.2.1"));
    assert_false(keel_tls_conn_peer_names(p.c, "nosuch.example"));
    assert_false(keel_tls_conn_peer_names(p.c, ""));

    /* 1 MiB each way, fed in random pieces, arrives whole and in order. */
    size_t big = 1u << 20;
    uint8_t *out = malloc(big), *in = malloc(big + 5);
    for (size_t i = 0; i < big; i++)
        out[i] = (uint8_t)tu_rand(&rng);
    assert_int_equal(keel_tls_conn_write(p.c, out, big), 0);
    assert_int_equal(keel_tls_conn_write(p.s, out, big), 0);
    size_t got_s = 0, got_c = 0;
    for (int round = 0; round < 1000 && (got_s < big + 5 || got_c < big); round++) {
        move(p.c, p.s, &p.serr, &rng);
        move(p.s, p.c, &p.cerr, &rng);
        int e;
        got_s += drain(p.s, in + got_s, big + 5 - got_s, &e);
        assert_int_equal(e, 0);
        if (got_s == big + 5) {
            assert_memory_equal(in, "early", 5);
            assert_memory_equal(in + 5, out, big);
            got_s++; /* checked */
        }
        uint8_t *back = in; /* reuse once the server's copy is checked */
        if (got_s > big + 5) {
            got_c += drain(p.c, back + got_c, big - got_c, &e);
            assert_int_equal(e, 0);
        }
    }
    assert_int_equal(got_c, big);
    assert_memory_equal(in, out, big);
    assert_int_equal(p.cerr, 0);
    assert_int_equal(p.serr, 0);

    /* close_notify: the other end's read says closed, and writes after it fail. */
    keel_tls_conn_shutdown(p.c);
    assert_int_equal(keel_tls_conn_write(p.c, "x", 1), KEEL_ECLOSED);
    move(p.c, p.s, &p.serr, &rng);
    int e;
    drain(p.s, in, 16, &e);
    assert_int_equal(e, KEEL_ECLOSED);
    free(out);
    free(in);
    pair_free(&p);
    keel_tls_ctx_free(sc);
    keel_tls_ctx_free(cc);
}

static void test_names(void **state)
{
    (void)state;
    uint64_t rng = 7;
    struct keel_tls_ctx *sc = server_ctx(dir_a, false), *cc = client_ctx(dir_a, NULL);
    const char *good[] = {"127.0.1.1", "127.0.0.1", "localhost"};
    for (size_t i = 0; i < 3; i++) {
        struct pair p = connect_pair(cc, good[i], sc, &rng);
        assert_int_equal(p.cerr, 0);
        assert_true(keel_tls_conn_established(p.c));
        /* No client certificate was asked for: no CN to authenticate with. */
        char cn[64];
        assert_int_equal(keel_tls_conn_peer_cn(p.s, cn, sizeof(cn)), KEEL_ENOTFOUND);
        pair_free(&p);
    }
    struct {
        const char *name, *reason;
    } bad[] = {{"127.0.2.1", "IP address mismatch"}, {"nosuch.example", "hostname mismatch"}};
    for (size_t i = 0; i < 2; i++) {
        struct pair p = connect_pair(cc, bad[i].name, sc, &rng);
        assert_int_equal(p.cerr, KEEL_ETLS);
        expect_contains(bad[i].name, keel_tls_conn_error(p.c), bad[i].reason);
        assert_false(keel_tls_conn_established(p.c));
        assert_int_equal(keel_tls_conn_write(p.c, "x", 1), KEEL_ETLS);
        pair_free(&p);
    }
    /* A verifying client must say whom it connects to. */
    struct keel_tls_conn *t = NULL;
    assert_int_equal(keel_tls_conn_new(cc, NULL, &t), KEEL_EINVAL);
    assert_null(t);
    keel_tls_ctx_free(sc);
    keel_tls_ctx_free(cc);
}

/* ---- what must be refused ---- */

static void test_server_certificate_refused(void **state)
{
    (void)state;
    uint64_t rng = 11;
    struct keel_tls_ctx *sc = server_ctx(dir_a, false);
    /* No CA given: the system's CAs do not know the test CA. Another CA: the same. */
    struct keel_tls_ctx *clients[] = {client_ctx(NULL, NULL), client_ctx(dir_b, NULL)};
    for (size_t i = 0; i < 2; i++) {
        struct pair p = connect_pair(clients[i], "127.0.1.1", sc, &rng);
        assert_int_equal(p.cerr, KEEL_ETLS);
        expect_contains("unknown CA", keel_tls_conn_error(p.c),
                        "certificate verify failed: unable to get local issuer certificate");
        /* The server hears why (an alert), and fails too. */
        assert_int_equal(p.serr, KEEL_ETLS);
        expect_contains("server side", keel_tls_conn_error(p.s), "unknown ca");
        pair_free(&p);
        keel_tls_ctx_free(clients[i]);
    }
    keel_tls_ctx_free(sc);

    struct {
        const char *cert, *reason;
    } certs[] = {{"expired", "certificate has expired"}, {"selfsigned", "self-signed certificate"}};
    struct keel_tls_ctx *cc = client_ctx(dir_a, NULL);
    for (size_t i = 0; i < 2; i++) {
        char c[64], k[64];
        snprintf(c, sizeof(c), "%s.pem", certs[i].cert);
        snprintf(k, sizeof(k), "%s-key.pem", certs[i].cert);
        struct keel_tls_options o = {
            .role = KEEL_TLS_SERVER, .cert_file = P(dir_a, c), .key_file = P(dir_a, k)};
        sc = ctx_or_die(&o);
        struct pair p = connect_pair(cc, "127.0.0.1", sc, &rng);
        assert_int_equal(p.cerr, KEEL_ETLS);
        expect_contains(certs[i].cert, keel_tls_conn_error(p.c), certs[i].reason);
        pair_free(&p);
        keel_tls_ctx_free(sc);
    }
    keel_tls_ctx_free(cc);

    /* --insecure-skip-tls-verify: the same self-signed server is accepted when asked. */
    struct keel_tls_options io = {.role = KEEL_TLS_CLIENT, .verify_peer = false};
    cc = ctx_or_die(&io);
    struct keel_tls_options so = {.role = KEEL_TLS_SERVER,
                                  .cert_file = P(dir_a, "selfsigned.pem"),
                                  .key_file = P(dir_a, "selfsigned-key.pem")};
    sc = ctx_or_die(&so);
    struct pair p = connect_pair(cc, NULL, sc, &rng);
    assert_int_equal(p.cerr, 0);
    assert_true(keel_tls_conn_established(p.c));
    pair_free(&p);
    keel_tls_ctx_free(sc);
    keel_tls_ctx_free(cc);
}

static void test_client_certificate_refused(void **state)
{
    (void)state;
    uint64_t rng = 13;
    struct keel_tls_ctx *sc = server_ctx(dir_a, true);
    /* No client certificate. */
    struct keel_tls_ctx *cc = client_ctx(dir_a, NULL);
    struct pair p = connect_pair(cc, "127.0.1.1", sc, &rng);
    assert_int_equal(p.serr, KEEL_ETLS);
    expect_contains("no client cert", keel_tls_conn_error(p.s),
                    "peer did not return a certificate");
    assert_false(keel_tls_conn_established(p.s));
    assert_int_equal(p.cerr, KEEL_ETLS); /* told by the alert */
    expect_contains("client side", keel_tls_conn_error(p.c), "certificate required");
    pair_free(&p);
    keel_tls_ctx_free(cc);
    /* A client certificate of another CA. */
    cc = client_ctx(dir_a, dir_b);
    p = connect_pair(cc, "127.0.1.1", sc, &rng);
    assert_int_equal(p.serr, KEEL_ETLS);
    expect_contains("other CA", keel_tls_conn_error(p.s),
                    "certificate verify failed: unable to get local issuer certificate");
    char cn[64];
    assert_int_equal(keel_tls_conn_peer_cn(p.s, cn, sizeof(cn)), KEEL_ENOTFOUND);
    pair_free(&p);
    keel_tls_ctx_free(cc);
    keel_tls_ctx_free(sc);
}

/* One handshake between a client made with OpenSSL directly (versions and ciphers keel's own
 * cannot be told to use) and keel's server sc: its result on the server, and the version. */
static int raw_client(struct keel_tls_ctx *sc, int min, int max, const char *ciphers, char *reason,
                      size_t cap, char *version, size_t vcap)
{
    SSL_CTX *rc = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(rc, 0);
    SSL_CTX_set_min_proto_version(rc, min);
    SSL_CTX_set_max_proto_version(rc, max);
    if (ciphers != NULL)
        assert_int_equal(SSL_CTX_set_cipher_list(rc, ciphers), 1);
    SSL *ssl = SSL_new(rc);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
    struct keel_tls_conn *s = NULL;
    assert_int_equal(keel_tls_conn_new(sc, NULL, &s), 0);
    int rv = 0;
    uint8_t buf[16384];
    for (int i = 0; i < 8 && rv == 0; i++) {
        SSL_do_handshake(ssl);
        int n;
        while (rv == 0 && (n = BIO_read(out, buf, sizeof(buf))) > 0)
            rv = keel_tls_conn_feed(s, buf, (size_t)n);
        size_t m;
        while ((m = keel_tls_conn_take(s, buf, sizeof(buf))) > 0)
            BIO_write(in, buf, (int)m);
    }
    snprintf(reason, cap, "%s", keel_tls_conn_error(s));
    snprintf(version, vcap, "%s", keel_tls_conn_version(s));
    if (rv == 0 && !keel_tls_conn_established(s))
        rv = -1;
    keel_tls_conn_free(s);
    SSL_free(ssl);
    SSL_CTX_free(rc);
    return rv;
}

static void test_tls12(void **state)
{
    (void)state;
    struct keel_tls_ctx *sc = server_ctx(dir_a, false);
    char reason[256], version[32];
    /* TLS 1.2 with ECDHE and AES-GCM: accepted. */
    assert_int_equal(raw_client(sc, TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256",
                                reason, sizeof(reason), version, sizeof(version)),
                     0);
    assert_string_equal(version, "TLSv1.2");
    /* TLS 1.2 with a CBC cipher and no forward secrecy: no shared cipher. */
    assert_int_equal(raw_client(sc, TLS1_2_VERSION, TLS1_2_VERSION,
                                "AES128-SHA:ECDHE-ECDSA-AES128-SHA", reason, sizeof(reason),
                                version, sizeof(version)),
                     KEEL_ETLS);
    expect_contains("CBC", reason, "no shared cipher");
    /* TLS 1.0 and 1.1: refused. */
    assert_int_equal(raw_client(sc, TLS1_VERSION, TLS1_1_VERSION, NULL, reason, sizeof(reason),
                                version, sizeof(version)),
                     KEEL_ETLS);
    expect_contains("TLS 1.1", reason, "unsupported protocol");
    keel_tls_ctx_free(sc);
}

static void test_old_protocol_and_garbage(void **state)
{
    (void)state;
    struct keel_tls_ctx *sc = server_ctx(dir_a, false);
    /* A TLS 1.1 client, made with OpenSSL directly (keel's own cannot be told to). */
    SSL_CTX *old = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(old, 0);
    SSL_CTX_set_min_proto_version(old, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION);
    SSL *ssl = SSL_new(old);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
    SSL_do_handshake(ssl);
    struct keel_tls_conn *s = NULL;
    assert_int_equal(keel_tls_conn_new(sc, NULL, &s), 0);
    uint8_t buf[4096];
    int n = BIO_read(out, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(keel_tls_conn_feed(s, buf, (size_t)n), KEEL_ETLS);
    expect_contains("TLS 1.1", keel_tls_conn_error(s), "unsupported protocol");
    keel_tls_conn_free(s);
    SSL_free(ssl);
    SSL_CTX_free(old);

    /* Plain text where records belong (a plaintext client on a TLS port). */
    assert_int_equal(keel_tls_conn_new(sc, NULL, &s), 0);
    const char *http = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(keel_tls_conn_feed(s, http, strlen(http)), KEEL_ETLS);
    assert_true(strlen(keel_tls_conn_error(s)) > 0);
    /* Failed stays failed. */
    assert_int_equal(keel_tls_conn_feed(s, "x", 1), KEEL_ETLS);
    size_t got;
    assert_int_equal(keel_tls_conn_read(s, buf, sizeof(buf), &got), KEEL_ETLS);
    assert_int_equal(got, 0);
    keel_tls_conn_free(s);
    keel_tls_ctx_free(sc);
}

/* ---- contexts ---- */

static void copy_file(const char *from, const char *to)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* ALPN lists (keel-gateway offers "h2,http/1.1"): the server picks its first that the client
 * offers, or goes on without ALPN; a list that cannot go on the wire is refused by name. */
static const char *negotiate(const char *server_alpn, const char *client_alpn, uint64_t *rng)
{
    static char got[2][40];
    struct keel_tls_options so = {.role = KEEL_TLS_SERVER,
                                  .cert_file = P(dir_a, "member-1.pem"),
                                  .key_file = P(dir_a, "member-1-key.pem"),
                                  .alpn = server_alpn};
    struct keel_tls_options co = {.role = KEEL_TLS_CLIENT,
                                  .ca_file = P(dir_a, "ca.pem"),
                                  .verify_peer = true,
                                  .alpn = client_alpn};
    struct keel_tls_ctx *sc = ctx_or_die(&so), *cc = ctx_or_die(&co);
    struct pair p = connect_pair(cc, "localhost", sc, rng);
    assert_int_equal(p.cerr, 0);
    assert_int_equal(p.serr, 0);
    snprintf(got[0], sizeof(got[0]), "%s", keel_tls_conn_alpn(p.s));
    snprintf(got[1], sizeof(got[1]), "%s", keel_tls_conn_alpn(p.c));
    assert_string_equal(got[0], got[1]); /* both ends agree */
    pair_free(&p);
    keel_tls_ctx_free(sc);
    keel_tls_ctx_free(cc);
    return got[0];
}

static void test_alpn_list(void **state)
{
    (void)state;
    uint64_t rng = tu_seed("tls-alpn");
    assert_string_equal(negotiate("h2,http/1.1", "h2", &rng), "h2");
    assert_string_equal(negotiate("h2,http/1.1", "http/1.1", &rng), "http/1.1");
    /* The server's order wins. */
    assert_string_equal(negotiate("h2,http/1.1", "http/1.1,h2", &rng), "h2");
    assert_string_equal(negotiate("h2,http/1.1", "spdy/3", &rng), "");
    assert_string_equal(negotiate("h2,http/1.1", NULL, &rng), "");

    char err[256];
    const char *bad[] = {"",
                         "h2,",
                         ",h2",
                         "h2,,http/1.1",
                         "this-protocol-name-is-longer-than-32-bytes",
                         "aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb,cccccccccccccccc,dddddddddddddddd"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct keel_tls_options o = {.role = KEEL_TLS_CLIENT, .alpn = bad[i]};
        struct keel_tls_ctx *c = NULL;
        err[0] = '\0';
        assert_int_equal(keel_tls_ctx_new(&o, &c, err, sizeof(err)), KEEL_EINVAL);
        assert_null(c);
        expect_contains(bad[i], err, "ALPN list");
    }
}

static void test_ctx_errors_and_reload(void **state)
{
    (void)state;
    char err[512];
    struct keel_tls_ctx *c = NULL;
    struct keel_tls_options o = {.role = KEEL_TLS_SERVER};
    assert_int_equal(keel_tls_ctx_new(&o, &c, err, sizeof(err)), KEEL_EINVAL);
    expect_contains("no cert", err, "needs a certificate file");
    o.cert_file = P(dir_a, "member-1.pem");
    o.key_file = P(dir_a, "nosuch-key.pem");
    assert_int_equal(keel_tls_ctx_new(&o, &c, err, sizeof(err)), KEEL_EINVAL);
    expect_contains("missing key", err, "nosuch-key.pem: No such file or directory");
    o.key_file = P(dir_a, "member-2-key.pem");
    assert_int_equal(keel_tls_ctx_new(&o, &c, err, sizeof(err)), KEEL_EINVAL);
    expect_contains("mismatch", err, "does not match certificate file");
    o.key_file = P(dir_a, "member-1-key.pem");
    o.verify_peer = true;
    assert_int_equal(keel_tls_ctx_new(&o, &c, err, sizeof(err)), KEEL_EINVAL);
    expect_contains("client auth without CA", err, "needs a trusted CA file");
    o.ca_file = P(dir_a, "member-1-key.pem"); /* not a certificate */
    assert_int_equal(keel_tls_ctx_new(&o, &c, err, sizeof(err)), KEEL_EINVAL);
    expect_contains("bad CA file", err, "member-1-key.pem");
    assert_null(c);

    /* Reload: a server whose certificate files are replaced on disk. */
    char *d = tu_mkdtemp("tls-reload");
    copy_file(P(dir_a, "member-1.pem"), P(d, "cert.pem"));
    copy_file(P(dir_a, "member-1-key.pem"), P(d, "key.pem"));
    struct keel_tls_options so = {
        .role = KEEL_TLS_SERVER, .cert_file = P(d, "cert.pem"), .key_file = P(d, "key.pem")};
    struct keel_tls_ctx *sc = ctx_or_die(&so);
    struct keel_tls_ctx *cc = client_ctx(dir_a, NULL);
    uint64_t rng = 17;
    /* member-1's certificate names 127.0.1.1, not 127.0.2.1. */
    struct pair before = connect_pair(cc, "127.0.1.1", sc, &rng);
    assert_int_equal(before.cerr, 0);
    struct pair p = connect_pair(cc, "127.0.2.1", sc, &rng);
    assert_int_equal(p.cerr, KEEL_ETLS);
    pair_free(&p);
    /* A half-written renewal (the key missing) is refused and changes nothing. */
    copy_file(P(dir_a, "member-2.pem"), P(d, "cert.pem"));
    assert_int_equal(keel_tls_ctx_reload(sc, err, sizeof(err)), KEEL_EINVAL);
    expect_contains("reload mismatch", err, "does not match");
    p = connect_pair(cc, "127.0.1.1", sc, &rng);
    assert_int_equal(p.cerr, 0);
    pair_free(&p);
    copy_file(P(dir_a, "member-2-key.pem"), P(d, "key.pem"));
    assert_int_equal(keel_tls_ctx_reload(sc, err, sizeof(err)), 0);
    p = connect_pair(cc, "127.0.2.1", sc, &rng);
    assert_int_equal(p.cerr, 0);
    assert_true(keel_tls_conn_established(p.c));
    pair_free(&p);
    /* The connection made before the reload still works, with its old certificate. */
    assert_int_equal(keel_tls_conn_write(before.c, "ping", 4), 0);
    move(before.c, before.s, &before.serr, &rng);
    uint8_t b[8];
    int e;
    assert_int_equal(drain(before.s, b, sizeof(b), &e), 4);
    assert_memory_equal(b, "ping", 4);
    /* ... and outlives its context. */
    keel_tls_ctx_free(sc);
    assert_int_equal(keel_tls_conn_write(before.s, "pong", 4), 0);
    move(before.s, before.c, &before.cerr, &rng);
    assert_int_equal(drain(before.c, b, sizeof(b), &e), 4);
    assert_memory_equal(b, "pong", 4);
    pair_free(&before);
    keel_tls_ctx_free(cc);
    tu_rmdir(d);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutual_auth_and_data),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_server_certificate_refused),
        cmocka_unit_test(test_client_certificate_refused),
        cmocka_unit_test(test_tls12),
        cmocka_unit_test(test_old_protocol_and_garbage),
        cmocka_unit_test(test_ctx_errors_and_reload),
        cmocka_unit_test(test_alpn_list),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
