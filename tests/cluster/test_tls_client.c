/*
 * TLS on the client port (issue 16), real keeld processes with certificates from
 * scripts/gen-certs.sh: `test_tls_client <group>`.
 *
 * refusals  members run --cert-file, --trusted-ca-file and --client-cert-auth (and one more, on
 *           its own, with a certificate that names another address). keelctl is refused, with
 *           the endpoint and OpenSSL's reason on stderr, without the CA, with another CA, without
 *           a client certificate, with a client certificate of another CA, and at the member
 *           whose certificate names another address; a plaintext keelctl is told the port needs
 *           TLS. Half-open and garbage connections stay open meanwhile; every member stays up
 *           and serves a client with the right files, and logs why it refused.
 * plain     a plaintext member: keelctl and libkeel with TLS options are told it does not
 *           answer in TLS; a half-sent TLS handshake does not stall it for plaintext clients.
 * works     with the right CA and certificate: put, get, txn, endpoint status and snapshot
 *           save through keelctl (https:// and --cacert; a snapshot refused for another CA),
 *           and put, get, txn, a watch and a 1 MiB value through libkeel, on three
 *           members (libkeel verifies each member it learns of by its advertised address); the
 *           members log the client certificate's CN (keel_sessions_peer_cn's source).
 * checkpoint  a member that fell behind a raft snapshot catches up from a checkpoint while
 *           the client port speaks TLS and requires client certificates: the checkpoint comes
 *           from the leader's peer port (README "Checkpoint fetch"), which that does not touch.
 * sighup    certificates renewed on disk are served to new connections after SIGHUP while an
 *           open connection (a watch, a client) keeps working; a reload that fails (a key that
 *           does not match) keeps the old certificates and logs the file and why.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "keel/keel.h"
#include "testutil.h"

#ifndef KEELCTL_PATH
#error "KEELCTL_PATH must name the keelctl binary"
#endif
#ifndef KEEL_SOURCE_DIR
#error "KEEL_SOURCE_DIR must name the source tree"
#endif

#define OUT_MAX 8192

/* Certificates: CA "a" (the cluster's) and CA "b" (another), under the cluster's root; the
 * files clients use, from each. */
struct certs {
    char a[600], b[600];
    char ca[700], cert[700], key[700];       /* a's */
    char ca_b[700], cert_b[700], key_b[700]; /* b's */
};

/* k's file names, once k->a and k->b are set. */
static void name_files(struct certs *k)
{
    snprintf(k->ca, sizeof(k->ca), "%s/ca.pem", k->a);
    snprintf(k->cert, sizeof(k->cert), "%s/client-root.pem", k->a);
    snprintf(k->key, sizeof(k->key), "%s/client-root-key.pem", k->a);
    snprintf(k->ca_b, sizeof(k->ca_b), "%s/ca.pem", k->b);
    snprintf(k->cert_b, sizeof(k->cert_b), "%s/client-root.pem", k->b);
    snprintf(k->key_b, sizeof(k->key_b), "%s/client-root-key.pem", k->b);
}

static char path_buf[16][700];
static int path_next;

/* dir/name, in a rotating set of buffers: for a call's arguments, not to keep. */
static const char *P(const char *dir, const char *name)
{
    char *p = path_buf[path_next++ % 16];
    snprintf(p, sizeof(path_buf[0]), "%s/%s", dir, name);
    return p;
}

static void gen(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd),
             "%s/scripts/gen-certs.sh %s --members 3 --clients root,alice >/dev/null",
             KEEL_SOURCE_DIR, dir);
    if (system(cmd) != 0)
        fail_msg("gen-certs.sh %s failed", dir);
}

/* n members with TLS on the client port; member i shows member cert_of[i]'s certificate (0:
 * its own). Not started. */
static void tls_cluster(struct tc_cluster *c, struct certs *k, int n, const char *tag,
                        bool client_auth, const int *cert_of, const char *more)
{
    tc_cluster_init(c, n, tag);
    snprintf(k->a, sizeof(k->a), "%s/a", c->root);
    snprintf(k->b, sizeof(k->b), "%s/b", c->root);
    gen(k->a);
    gen(k->b);
    name_files(k);
    snprintf(c->extra, sizeof(c->extra), "--trusted-ca-file %s%s %s", P(k->a, "ca.pem"),
             client_auth ? " --client-cert-auth" : "", more ? more : "");
    for (int i = 1; i <= n; i++) {
        int j = cert_of && cert_of[i] ? cert_of[i] : i;
        char cert[32], key[32];
        snprintf(cert, sizeof(cert), "member-%d.pem", j);
        snprintf(key, sizeof(key), "member-%d-key.pem", j);
        int w = snprintf(c->m[i].extra, sizeof(c->m[i].extra), "--cert-file %s --key-file %s",
                         P(k->a, cert), P(k->a, key));
        assert_true(w > 0 && (size_t)w < sizeof(c->m[i].extra));
    }
}

static void expect_in(const char *what, const char *got, const char *want)
{
    if (strstr(got, want) == NULL)
        fail_msg("%s: '%s' does not say '%s'", what, got, want);
}

/* A keelctl command refused with reason on stderr, naming the endpoint. */
static void expect_refused(const struct tc_cluster *c, const char *what, const char *endpoint,
                           const char *reason, int rv, const char *out)
{
    if (rv == 0)
        fail_msg("%s: keelctl succeeded: %s", what, out);
    expect_in(what, out, reason);
    expect_in(what, out, strstr(endpoint, "://") ? strstr(endpoint, "://") + 3 : endpoint);
    (void)c;
}

/* Every member still runs. */
static void all_up(const struct tc_cluster *c)
{
    for (int i = 1; i <= c->n; i++)
        if (c->m[i].pid == 0 || kill(c->m[i].pid, 0) != 0 ||
            waitpid(c->m[i].pid, NULL, WNOHANG) != 0)
            fail_msg("member %d is not running", i);
}

/* A put and a get through keelctl with the right files at member i, retried while the cluster
 * elects (bounded). */
static void good_ctl(const struct tc_cluster *c, const struct certs *k, int i, const char *key,
                     const char *val)
{
    char out[OUT_MAX], ep[64];
    tc_endpoints(c, i, ep, sizeof(ep));
    int rv = -1;
    for (long long end = tc_now_ms() + 30000; rv != 0 && tc_now_ms() < end;) {
        rv = tc_keelctl(c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "--cacert", k->ca,
                        "--cert", k->cert, "--key", k->key, "--timeout", "3s", "put", key, val,
                        NULL);
        if (rv != 0)
            tu_sleep_ms(100);
    }
    if (rv != 0)
        fail_msg("put %s at member %d: %s", key, i, out);
    rv = tc_keelctl(c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "--cacert", k->ca, "--cert",
                    k->cert, "--key", k->key, "get", key, "--print-value-only", NULL);
    assert_int_equal(rv, 0);
    expect_in("get", out, val);
}

/* A TCP connection to addr ("a.b.c.d:port"); -1 when none. */
static int dial(const char *addr)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char host[32];
    snprintf(host, sizeof(host), "%s", addr);
    *strrchr(host, ':') = '\0';
    sa.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

/* ---- refusals ---- */

static void refusals(void **state)
{
    (void)state;
    struct tc_cluster c, c2;
    struct certs k, k2;
    tls_cluster(&c, &k, 3, "tls-refuse", true, NULL, NULL);
    tc_start_all(&c);
    /* A member of its own showing member 2's certificate, which does not name 127.0.1.1 (not in
     * c: a leader whose certificate does not name it could take no write). */
    int cert_of[2] = {0, 2};
    tls_cluster(&c2, &k2, 1, "tls-name", true, cert_of, NULL);
    tc_start_all(&c2);
    good_ctl(&c, &k, 1, "k", "v1");

    /* Connections that never finish a handshake, held open throughout. */
    int idle = dial(c.m[1].client), junk = dial(c.m[1].client), half = dial(c.m[2].client);
    assert_true(idle >= 0 && junk >= 0 && half >= 0);
    /* A TLS record header promising more than it sends. */
    static const uint8_t partial[] = {22, 3, 1, 0x02, 0x00, 1, 0, 1};
    assert_int_equal(send(half, partial, sizeof(partial), MSG_NOSIGNAL), (ssize_t)sizeof(partial));
    assert_int_equal(send(junk, "GET / HTTP/1.1\r\n\r\n", 18, MSG_NOSIGNAL), 18);

    char out[OUT_MAX], ep1[64], ep3[64], https1[80];
    tc_endpoints(&c, 1, ep1, sizeof(ep1));
    tc_endpoints(&c2, 1, ep3, sizeof(ep3));
    snprintf(https1, sizeof(https1), "https://%s", ep1);
    const char *ca = k.ca, *cert = k.cert, *key = k.key;

    /* No CA: the system's do not know this one. */
    int rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", https1, "--cert", cert,
                        "--key", key, "get", "k", NULL);
    expect_refused(&c, "no CA", ep1,
                   "certificate verify failed: unable to get local issuer certificate", rv, out);
    /* Another CA. */
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep1, "--cacert", k.ca_b,
                    "--cert", cert, "--key", key, "get", "k", NULL);
    expect_refused(&c, "wrong CA", ep1,
                   "certificate verify failed: unable to get local issuer certificate", rv, out);
    /* No client certificate where one is required. */
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep1, "--cacert", ca, "get", "k",
                    NULL);
    expect_refused(&c, "no client certificate", ep1, "certificate required", rv, out);
    /* A client certificate of another CA. */
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep1, "--cacert", ca, "--cert",
                    k.cert_b, "--key", k.key_b, "get", "k", NULL);
    expect_refused(&c, "client certificate of another CA", ep1, "unknown ca", rv, out);
    expect_in("client certificate of another CA", out, "does not trust this client");
    /* A server certificate that does not name the address dialled. */
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep3, "--cacert", k2.ca, "--cert",
                    k2.cert, "--key", k2.key, "get", "k", NULL);
    expect_refused(&c, "name mismatch", ep3, "certificate verify failed: IP address mismatch", rv,
                   out);
    /* Plaintext against the TLS port. */
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep1, "get", "k", NULL);
    expect_refused(&c, "plaintext client", ep1, "TLS", rv, out);
    /* A client file that does not load is a usage error naming it. */
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep1, "--cacert",
                    P(k.a, "nonexistent.pem"), "get", "k", NULL);
    assert_int_equal(rv, 2);
    expect_in("missing CA file", out, "nonexistent.pem");

    /* The members logged why, and serve a good client while the stragglers hang on. */
    assert_true(tc_log_contains(&c, 1, "TLS handshake failed: peer did not return a certificate"));
    assert_true(tc_log_contains(&c, 1, "TLS handshake failed: certificate verify failed"));
    assert_true(tc_log_contains(&c, 1, "TLS handshake failed: wrong version number") ||
                tc_log_contains(&c, 1, "TLS handshake failed: http request"));
    all_up(&c);
    good_ctl(&c, &k, 1, "k", "v2");
    good_ctl(&c, &k, 2, "k", "v3");

    /* libkeel says the same as keelctl (keel_errmsg). */
    struct keel_options o = {.endpoints = ep1,
                             .ca_file = k.ca_b,
                             .cert_file = cert,
                             .key_file = key,
                             .request_timeout_ms = 3000,
                             .dial_timeout_ms = 1000};
    struct keel *kl = NULL;
    assert_int_equal(keel_open(&kl, &o), 0);
    rv = keel_put(kl, "k", 1, "x", 1, NULL, NULL);
    assert_int_not_equal(rv, 0);
    expect_in("libkeel, wrong CA", keel_errmsg(),
              "certificate verify failed: unable to get local issuer certificate");
    expect_in("libkeel, wrong CA", keel_errmsg(), ep1);
    keel_close(kl);
    o.ca_file = P(k.a, "nonexistent.pem");
    assert_int_equal(keel_open(&kl, &o), KEEL_EINVAL);
    expect_in("libkeel, missing CA", keel_errmsg(), "nonexistent.pem");

    close(idle);
    close(junk);
    close(half);
    all_up(&c);
    all_up(&c2);
    tc_cluster_close(&c2);
    tc_cluster_close(&c);
}

/* ---- a plaintext member ---- */

static void plain_member(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 1, "tls-plain");
    struct certs k;
    snprintf(k.a, sizeof(k.a), "%s/a", c.root);
    gen(k.a);
    tc_start_all(&c);
    char out[OUT_MAX], ep[64];
    tc_endpoints(&c, 1, ep, sizeof(ep));
    int rv = -1;
    for (long long end = tc_now_ms() + 30000; rv != 0 && tc_now_ms() < end;) {
        rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "--timeout", "3s", "put",
                        "k", "v", NULL);
        if (rv != 0)
            tu_sleep_ms(100);
    }
    assert_int_equal(rv, 0);
    /* A TLS client half-way through its handshake holds nothing up. */
    int half = dial(c.m[1].client);
    static const uint8_t hello[] = {22, 3, 1, 0x02, 0x00, 1, 0, 1, 0xfc, 3, 3};
    assert_true(half >= 0);
    assert_int_equal(send(half, hello, sizeof(hello), MSG_NOSIGNAL), (ssize_t)sizeof(hello));

    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "--cacert", P(k.a, "ca.pem"),
                    "get", "k", NULL);
    expect_refused(&c, "TLS client, plaintext member", ep, "does not answer in TLS", rv, out);
    char https[80];
    snprintf(https, sizeof(https), "https://%s", ep);
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", https,
                    "--insecure-skip-tls-verify", "get", "k", NULL);
    expect_refused(&c, "https:// endpoint, plaintext member", ep, "does not answer in TLS", rv,
                   out);

    struct keel_options o = {.endpoints = ep,
                             .ca_file = P(k.a, "ca.pem"),
                             .request_timeout_ms = 3000,
                             .dial_timeout_ms = 1000};
    struct keel *kl = NULL;
    assert_int_equal(keel_open(&kl, &o), 0);
    assert_int_not_equal(keel_put(kl, "k", 1, "x", 1, NULL, NULL), 0);
    expect_in("libkeel TLS, plaintext member", keel_errmsg(), "does not answer in TLS");
    keel_close(kl);

    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "get", "k",
                    "--print-value-only", NULL);
    assert_int_equal(rv, 0);
    expect_in("plaintext get", out, "v");
    close(half);
    all_up(&c);
    tc_cluster_close(&c);
}

/* ---- what must work ---- */

struct seen {
    int events;
    char last[64];
};

static void on_watch(struct keel_watch *w, int status, const Keel__Event *const *events,
                     size_t n_events, int64_t revision, void *data)
{
    (void)w;
    (void)revision;
    struct seen *s = data;
    if (status != 0)
        return;
    for (size_t i = 0; i < n_events; i++) {
        const Keel__KeyValue *kv = events[i]->kv;
        snprintf(s->last, sizeof(s->last), "%.*s", (int)kv->value.len,
                 (const char *)kv->value.data);
        __atomic_add_fetch(&s->events, 1, __ATOMIC_SEQ_CST);
    }
}

static bool wait_events(struct seen *s, int n, int timeout_ms)
{
    for (long long end = tc_now_ms() + timeout_ms; tc_now_ms() < end;) {
        if (__atomic_load_n(&s->events, __ATOMIC_SEQ_CST) >= n)
            return true;
        tu_sleep_ms(20);
    }
    return false;
}

static void put_retry(struct keel *kl, const char *key, const void *val, size_t vlen)
{
    int rv = -1;
    for (int tries = 0; tries < 50 && rv != 0; tries++) {
        rv = keel_put(kl, key, strlen(key), val, vlen, NULL, NULL);
        if (rv != 0)
            tu_sleep_ms(100);
    }
    if (rv != 0)
        fail_msg("put %s: %s", key, keel_errmsg());
}

static void works(void **state)
{
    (void)state;
    struct tc_cluster c;
    struct certs k;
    tls_cluster(&c, &k, 3, "tls-works", true, NULL, "--log-level debug");
    tc_start_all(&c);
    const char *ca = k.ca, *cert = k.cert, *key = k.key;
    char out[OUT_MAX], eps[256], https[300];
    tc_endpoints(&c, 0, eps, sizeof(eps));
    good_ctl(&c, &k, 2, "a", "1");
    /* https:// endpoints, a txn. */
    snprintf(https, sizeof(https), "https://%s", strchr(eps, ',') + 1);
    int rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", https, "--cacert", ca,
                        "--cert", cert, "--key", key, "txn", "--compare", "value(\"a\") = \"1\"",
                        "--then", "put a 2", "--else", "put a 3", NULL);
    if (rv != 0)
        fail_msg("txn: %s", out);
    expect_in("txn", out, "SUCCESS");
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", https, "--cacert", ca, "--cert",
                    cert, "--key", key, "get", "a", "--print-value-only", NULL);
    assert_int_equal(rv, 0);
    expect_in("get after txn", out, "2");
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", eps, "--cacert", ca, "--cert",
                    cert, "--key", key, "endpoint", "status", NULL);
    if (rv != 0)
        fail_msg("endpoint status: %s", out);
    /* A snapshot over TLS (a blocking download of its own), and one refused. */
    char ep2[64], snap[700];
    tc_endpoints(&c, 2, ep2, sizeof(ep2));
    snprintf(snap, sizeof(snap), "%s/snap.db", c.root);
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep2, "--cacert", ca, "--cert",
                    cert, "--key", key, "snapshot", "save", snap, NULL);
    if (rv != 0)
        fail_msg("snapshot save over TLS: %s", out);
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "snapshot", "status", snap, NULL);
    if (rv != 0)
        fail_msg("snapshot status: %s", out);
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep2, "--cacert", k.ca_b,
                    "--cert", cert, "--key", key, "snapshot", "save", snap, NULL);
    expect_refused(&c, "snapshot, wrong CA", ep2,
                   "certificate verify failed: unable to get local issuer certificate", rv, out);

    /* libkeel: every member, reached by the addresses the cluster advertises. */
    struct keel_options o = {.endpoints = eps,
                             .ca_file = ca,
                             .cert_file = cert,
                             .key_file = key,
                             .request_timeout_ms = 5000,
                             .dial_timeout_ms = 2000};
    struct keel *kl = NULL;
    assert_int_equal(keel_open(&kl, &o), 0);
    struct seen seen = {0};
    struct keel_watch *w = NULL;
    rv = -1;
    for (int tries = 0; tries < 50 && rv != 0; tries++)
        if ((rv = keel_watch_open(kl, "w", 1, NULL, on_watch, &seen, &w)) != 0)
            tu_sleep_ms(100);
    assert_int_equal(rv, 0);
    put_retry(kl, "w", "one", 3);
    size_t big = 1u << 20;
    uint8_t *val = malloc(big);
    assert_non_null(val);
    for (size_t i = 0; i < big; i++)
        val[i] = (uint8_t)(i * 7 + 3);
    put_retry(kl, "big", val, big);
    struct keel_get_opts go = {.serializable = true};
    for (int m = 0; m < 3; m++) {
        /* Serializable reads go to any member: read until each has it (bounded). */
        Keel__RangeResponse *r = NULL;
        rv = -1;
        for (int tries = 0; tries < 50 && rv != 0; tries++) {
            rv = keel_get(kl, "big", 3, m == 0 ? NULL : &go, &r);
            if (rv == 0 && (r->n_kvs != 1 || r->kvs[0]->value.len != big)) {
                keel_free(r);
                r = NULL;
                rv = -1;
            }
            if (rv != 0)
                tu_sleep_ms(100);
        }
        assert_int_equal(rv, 0);
        assert_memory_equal(r->kvs[0]->value.data, val, big);
        keel_free(r);
    }
    free(val);
    /* A txn through libkeel. */
    Keel__Compare cmp = KEEL__COMPARE__INIT;
    cmp.result = KEEL__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = KEEL__COMPARE__COMPARE_TARGET__VALUE;
    cmp.key.data = (uint8_t *)"w";
    cmp.key.len = 1;
    cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
    cmp.value.data = (uint8_t *)"one";
    cmp.value.len = 3;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)"w";
    put.key.len = 1;
    put.value.data = (uint8_t *)"two";
    put.value.len = 3;
    Keel__RequestOp op = KEEL__REQUEST_OP__INIT;
    op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &put;
    Keel__Compare *cmps = &cmp;
    Keel__RequestOp *ops = &op;
    Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
    txn.n_compare = 1;
    txn.compare = &cmps;
    txn.n_success = 1;
    txn.success = &ops;
    Keel__TxnResponse *tr = NULL;
    assert_int_equal(keel_txn(kl, &txn, &tr), 0);
    assert_true(tr->succeeded);
    keel_free(tr);
    if (!wait_events(&seen, 2, 10000))
        fail_msg("the watch saw %d events of 2", seen.events);
    assert_string_equal(seen.last, "two");
    keel_watch_close(kl, w);
    keel_close(kl);

    /* Each member saw the client certificate's CN at the handshake (keel_sessions_peer_cn). */
    bool cn = false;
    for (int i = 1; i <= 3; i++)
        cn = cn || tc_log_contains(&c, i, "established, client certificate CN root");
    assert_true(cn);
    all_up(&c);
    tc_cluster_close(&c);
}

/* ---- a checkpoint while the client port speaks TLS ---- */

/* Whether member i's own store (a serializable read there) has key = val within timeout_ms. */
static bool wait_value(const struct tc_cluster *c, const struct certs *k, int i, const char *key,
                       const char *val, int timeout_ms)
{
    char ep[64];
    tc_endpoints(c, i, ep, sizeof(ep));
    struct keel_options o = {.endpoints = ep,
                             .ca_file = k->ca,
                             .cert_file = k->cert,
                             .key_file = k->key,
                             .request_timeout_ms = 2000,
                             .dial_timeout_ms = 1000,
                             .max_retries = -1};
    struct keel *kl = NULL;
    assert_int_equal(keel_open(&kl, &o), 0);
    struct keel_get_opts go = {.serializable = true};
    bool ok = false;
    for (long long end = tc_now_ms() + timeout_ms; !ok && tc_now_ms() < end;) {
        Keel__RangeResponse *r = NULL;
        if (keel_get(kl, key, strlen(key), &go, &r) == 0)
            ok = r->n_kvs == 1 && r->kvs[0]->value.len == strlen(val) &&
                 memcmp(r->kvs[0]->value.data, val, strlen(val)) == 0;
        keel_free(r);
        if (!ok)
            tu_sleep_ms(50);
    }
    keel_close(kl);
    return ok;
}

/* A member that fell behind a raft snapshot catches up from a checkpoint while every client
 * port speaks TLS and requires a client certificate: members fetch on the peer port (plaintext
 * here), so the client port's TLS and its certificate rule are no obstacle. */
static void checkpoint_over_tls(void **state)
{
    (void)state;
    struct tc_cluster c;
    struct certs k;
    tls_cluster(&c, &k, 3, "tls-ckpt", true, NULL, NULL);
    c.snapshot_threshold = 64;
    c.snapshot_trailing = 32;
    tc_start_all(&c);
    char eps[256];
    tc_endpoints(&c, 0, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps,
                             .ca_file = k.ca,
                             .cert_file = k.cert,
                             .key_file = k.key,
                             .request_timeout_ms = 5000,
                             .dial_timeout_ms = 2000};
    struct keel *kl = NULL;
    assert_int_equal(keel_open(&kl, &o), 0);
    put_retry(kl, "k/before", "1", 1);
    int leader = tc_find_leader(&c, kl, 0, 10000);
    assert_true(leader > 0);
    int victim = leader == 3 ? 2 : 3;
    assert_true(wait_value(&c, &k, victim, "k/before", "1", 10000));
    tc_stop(&c, victim, SIGKILL);
    /* Far more than threshold + trailing entries while it is down. */
    for (int i = 0; i < 400; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k/%04d", i);
        put_retry(kl, key, "while-down", 10);
    }
    put_retry(kl, "k/last", "done", 4);
    assert_int_equal(tc_start(&c, victim), 0);
    if (!wait_value(&c, &k, victim, "k/last", "done", 30000))
        fail_msg("member %d did not catch up", victim);
    assert_true(tc_log_contains(&c, victim, "checkpoint restored"));
    keel_close(kl);
    all_up(&c);
    tc_cluster_close(&c);
}

/* ---- SIGHUP ---- */

static void copy_file(const char *from, const char *to)
{
    char cmd[1600];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    if (system(cmd) != 0)
        fail_msg("%s failed", cmd);
}

/* Wait (bounded) until member i's log has had needle n times. */
static bool wait_log(const struct tc_cluster *c, int i, const char *needle, int n)
{
    for (long long end = tc_now_ms() + 10000; tc_now_ms() < end;) {
        FILE *f = fopen(c->m[i].log, "r");
        int count = 0;
        char line[4096];
        while (f != NULL && fgets(line, sizeof(line), f) != NULL)
            count += strstr(line, needle) != NULL;
        if (f != NULL)
            fclose(f);
        if (count >= n)
            return true;
        tu_sleep_ms(20);
    }
    return false;
}

static void sighup(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 1, "tls-hup");
    struct certs k;
    snprintf(k.a, sizeof(k.a), "%s/a", c.root);
    gen(k.a);
    char live[600];
    snprintf(live, sizeof(live), "%s/live", c.root);
    assert_int_equal(mkdir(live, 0700), 0);
    copy_file(P(k.a, "member-1.pem"), P(live, "cert.pem"));
    copy_file(P(k.a, "member-1-key.pem"), P(live, "key.pem"));
    snprintf(c.extra, sizeof(c.extra), "--cert-file %s --key-file %s", P(live, "cert.pem"),
             P(live, "key.pem"));
    tc_start_all(&c);

    char ep[64], out[OUT_MAX];
    tc_endpoints(&c, 1, ep, sizeof(ep));
    char ca[700];
    snprintf(ca, sizeof(ca), "%s/ca.pem", k.a);
    struct keel_options o = {
        .endpoints = ep, .ca_file = ca, .request_timeout_ms = 5000, .dial_timeout_ms = 2000};
    struct keel *kl = NULL;
    assert_int_equal(keel_open(&kl, &o), 0);
    struct seen seen = {0};
    struct keel_watch *w = NULL;
    int rv = -1;
    for (int tries = 0; tries < 50 && rv != 0; tries++)
        if ((rv = keel_watch_open(kl, "w", 1, NULL, on_watch, &seen, &w)) != 0)
            tu_sleep_ms(100);
    assert_int_equal(rv, 0);
    put_retry(kl, "w", "before", 6);

    /* Member 2's certificate (it names 127.0.2.1, not this member's 127.0.1.1) replaces this
     * member's files: once reloaded, new connections are refused for the name, which shows
     * the new certificate is what they get. */
    copy_file(P(k.a, "member-2.pem"), P(live, "cert.pem"));
    copy_file(P(k.a, "member-2-key.pem"), P(live, "key.pem"));
    assert_int_equal(kill(c.m[1].pid, SIGHUP), 0);
    assert_true(wait_log(&c, 1, "SIGHUP: client port certificates reloaded", 1));
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "--cacert", ca, "get", "w",
                    NULL);
    expect_refused(&c, "after the reload", ep, "certificate verify failed: IP address mismatch", rv,
                   out);
    /* The open connection carries on: the client's put (it cannot dial anew: that would be
     * refused as above) and the watch on it. */
    assert_int_equal(keel_put(kl, "w", 1, "after", 5, NULL, NULL), 0);
    if (!wait_events(&seen, 2, 10000))
        fail_msg("the watch saw %d events of 2", seen.events);
    assert_string_equal(seen.last, "after");

    /* Back to this member's own certificate: new connections work again. */
    copy_file(P(k.a, "member-1.pem"), P(live, "cert.pem"));
    copy_file(P(k.a, "member-1-key.pem"), P(live, "key.pem"));
    assert_int_equal(kill(c.m[1].pid, SIGHUP), 0);
    assert_true(wait_log(&c, 1, "SIGHUP: client port certificates reloaded", 2));
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "--cacert", ca, "get", "w",
                    "--print-value-only", NULL);
    if (rv != 0)
        fail_msg("get after the second reload: %s", out);
    expect_in("get after the second reload", out, "after");

    /* A key that does not match: the reload fails, says which files, and keeps what it had. */
    copy_file(P(k.a, "member-3-key.pem"), P(live, "key.pem"));
    assert_int_equal(kill(c.m[1].pid, SIGHUP), 0);
    assert_true(wait_log(&c, 1, "client port certificates not reloaded, the old ones stay", 1));
    assert_true(tc_log_contains(&c, 1, "does not match certificate file"));
    assert_true(tc_log_contains(&c, 1, P(live, "key.pem")));
    rv = tc_keelctl(&c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "--cacert", ca, "get", "w",
                    "--print-value-only", NULL);
    if (rv != 0)
        fail_msg("get after the failed reload: %s", out);
    expect_in("get after the failed reload", out, "after");
    assert_int_equal(keel_put(kl, "w", 1, "end", 3, NULL, NULL), 0);
    keel_watch_close(kl, w);
    keel_close(kl);
    all_up(&c);
    tc_cluster_close(&c);
}

/* keelctl at member 1 as the client certificate NAME of CA a (no --user: the certificate's CN
 * is the user once auth is on); out gets what it printed. */
static int ctl_as(const struct tc_cluster *c, const struct certs *k, const char *name, char *out,
                  const char *a1, const char *a2, const char *a3, const char *a4, const char *a5,
                  const char *a6)
{
    char ep[64], cert[64], key[64];
    tc_endpoints(c, 1, ep, sizeof(ep));
    snprintf(cert, sizeof(cert), "client-%s.pem", name);
    snprintf(key, sizeof(key), "client-%s-key.pem", name);
    return tc_keelctl(c, KEELCTL_PATH, out, OUT_MAX, "--endpoints", ep, "--cacert", k->ca, "--cert",
                      P(k->a, cert), "--key", P(k->a, key), "--timeout", "5s", a1, a2, a3, a4, a5,
                      a6, NULL);
}

/* etcd's authentication by client certificate: with --client-cert-auth and auth enabled, a
 * request without a token speaks for the user its certificate's CN names. alice (CN alice) may
 * write only under b/; root's certificate (CN root) may do anything; no password is given. */
static void cert_auth(void **state)
{
    (void)state;
    struct tc_cluster c;
    struct certs k;
    tls_cluster(&c, &k, 1, "tls-cn", true, NULL, NULL);
    assert_int_equal(tc_start(&c, 1), 0);
    good_ctl(&c, &k, 1, "pre", "v");
    char out[OUT_MAX];
    const char *setup[][4] = {
        {"user", "add", "root:rootpw", NULL},  {"user", "grant-role", "root", "root"},
        {"role", "add", "rb", NULL},           {"user", "add", "alice:alicepw", NULL},
        {"user", "grant-role", "alice", "rb"}, {"auth", "enable", NULL, NULL}};
    for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]); i++) {
        int rv = ctl_as(&c, &k, "root", out, setup[i][0], setup[i][1], setup[i][2], setup[i][3],
                        NULL, NULL);
        if (rv != 0)
            fail_msg("%s %s: %s", setup[i][0], setup[i][1], out);
    }
    /* Auth is on: root by its certificate alone grants alice b/. */
    int rv = ctl_as(&c, &k, "root", out, "role", "grant-permission", "--prefix", "rb", "readwrite",
                    "b/");
    if (rv != 0)
        fail_msg("root grants by its certificate: %s", out);
    rv = ctl_as(&c, &k, "alice", out, "put", "b/1", "x", NULL, NULL, NULL);
    if (rv != 0)
        fail_msg("alice puts inside b/ by her certificate: %s", out);
    rv = ctl_as(&c, &k, "alice", out, "put", "c/1", "x", NULL, NULL, NULL);
    if (rv == 0)
        fail_msg("alice put outside b/: %s", out);
    expect_in("alice outside b/", out, "permission denied");
    rv = ctl_as(&c, &k, "alice", out, "user", "list", NULL, NULL, NULL, NULL);
    if (rv == 0)
        fail_msg("alice listed users: %s", out);
    expect_in("alice is no root", out, "permission denied");
    rv = ctl_as(&c, &k, "root", out, "get", "b/1", "--print-value-only", NULL, NULL, NULL);
    if (rv != 0)
        fail_msg("root reads by its certificate: %s", out);
    expect_in("root reads b/1", out, "x");
    all_up(&c);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        printf("SKIPPED: the openssl command (scripts/gen-certs.sh) is missing\n");
        return 77;
    }
    const struct CMUnitTest refusals_t[] = {cmocka_unit_test(refusals)};
    const struct CMUnitTest plain_t[] = {cmocka_unit_test(plain_member)};
    const struct CMUnitTest works_t[] = {cmocka_unit_test(works)};
    const struct CMUnitTest sighup_t[] = {cmocka_unit_test(sighup)};
    const struct CMUnitTest checkpoint_t[] = {cmocka_unit_test(checkpoint_over_tls)};
    const struct CMUnitTest cert_auth_t[] = {cmocka_unit_test(cert_auth)};
    const struct tu_group groups[] = {
        {"refusals", refusals_t, 1},     {"plain", plain_t, 1},
        {"works", works_t, 1},           {"sighup", sighup_t, 1},
        {"checkpoint", checkpoint_t, 1}, {"cert_auth", cert_auth_t, 1}};
    return tu_run_groups("test_tls_client", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
