/*
 * Client sessions over TLS (server/session.h, keel_sessions_set_tls) on a real loop and real
 * sockets on 127.0.0.1; the client end is the TLS codec (tls/tls.h) over a plain socket, driven
 * by the test between turns of the loop. Certificates come from scripts/gen-certs.sh.
 *
 *   cn_and_big_answer  the session's verified client certificate CN (keel_sessions_peer_cn),
 *                      what it says for a short buffer and an unknown session; a 1 MiB answer
 *                      arrives whole through TLS, and once written the output the sessions hold
 *                      is back to an idle session's buffers (the ciphertext was counted and
 *                      released like plaintext output)
 *   no_client_cert     without --client-cert-auth a session has no CN
 *   plaintext_client   a plaintext Hello on the TLS port: the session closes, nothing is handed
 *                      up, and a TLS client served after it is unaffected
 *
 * Every wait is bounded in loop turns and milliseconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "frame.h"
#include "session.h"
#include "testutil.h"
#include "tls.h"

#define MIB (1u << 20)

static char *certs; /* gen-certs.sh output, for the whole run */

struct fx {
    uv_loop_t loop;
    struct keel_config cfg;
    struct keel_sessions *ss;
    struct keel_tls_ctx *server;
    struct keel_responder out;
    size_t handed;
    uint64_t last_session;
    int cn_rv;     /* keel_sessions_peer_cn's result, at the last request */
    char cn[64];   /* ... and the CN */
    size_t answer; /* bytes of value in each answer */
    size_t closed;
    int fd;
};

static const char *P(const char *name)
{
    static char buf[8][600];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 600, "%s/%s", certs, name);
    return p;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void h_hello(void *data, uint64_t session, const Keel__Hello *h)
{
    (void)data;
    (void)session;
    (void)h;
}

static void h_request(void *data, uint64_t session, Keel__Request *req)
{
    struct fx *f = data;
    f->handed++;
    f->last_session = session;
    f->cn_rv = keel_sessions_peer_cn(f->ss, session, f->cn, sizeof(f->cn));
    uint8_t *value = calloc(1, f->answer + 1);
    assert_non_null(value);
    Keel__KeyValue kv = KEEL__KEY_VALUE__INIT;
    kv.value.data = value;
    kv.value.len = f->answer;
    Keel__KeyValue *kvs = &kv;
    Keel__RangeResponse rr = KEEL__RANGE_RESPONSE__INIT;
    rr.n_kvs = 1;
    rr.kvs = &kvs;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_RANGE;
    resp.range = &rr;
    assert_int_equal(f->out.send(f->out.ctx, session, &resp.base, KEEL_RESPOND_ANSWER), 0);
    free(value);
    keel__request__free_unpacked(req, NULL);
}

static void h_refuse(void *data, uint64_t session, int err, const char *msg)
{
    (void)data;
    (void)session;
    (void)err;
    (void)msg;
}

static void h_closed(void *data, uint64_t session)
{
    struct fx *f = data;
    (void)session;
    f->closed++;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static struct fx *fx_new(bool client_auth)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->fd = -1;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(f->cfg.listen_client, sizeof(f->cfg.listen_client), "127.0.0.1:%d", free_port());
    f->cfg.max_request_bytes = 64 * 1024;
    f->cfg.max_inflight = 100;
    f->cfg.max_inflight_total = 100;
    f->cfg.max_connections = 16;
    f->cfg.max_output_bytes = 64 * MIB;
    struct keel_tls_options o = {.role = KEEL_TLS_SERVER,
                                 .cert_file = P("member-1.pem"),
                                 .key_file = P("member-1-key.pem"),
                                 .ca_file = P("ca.pem"),
                                 .verify_peer = client_auth};
    char err[256];
    assert_int_equal(keel_tls_ctx_new(&o, &f->server, err, sizeof(err)), 0);
    assert_int_equal(keel_sessions_new(&f->loop, &f->cfg, &f->ss), 0);
    assert_int_equal(keel_sessions_set_tls(f->ss, f->server), 0);
    keel_sessions_responder(f->ss, &f->out);
    struct keel_session_handler h = {
        .data = f, .hello = h_hello, .request = h_request, .refuse = h_refuse, .closed = h_closed};
    assert_int_equal(keel_sessions_listen(f->ss, &h), 0);
    return f;
}

static void fx_free(struct fx *f)
{
    if (f->fd >= 0)
        close(f->fd);
    keel_sessions_stop(f->ss, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    keel_sessions_free(f->ss);
    keel_tls_ctx_free(f->server);
    free(f);
}

static int dial(struct fx *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port =
                                 htons((uint16_t)atoi(strrchr(f->cfg.listen_client, ':') + 1))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Hello and one Range request (id 1), framed, into buf; the length. */
static size_t hello_and_request(uint8_t *buf, size_t cap)
{
    Keel__Hello h = KEEL__HELLO__INIT;
    h.protocol_version = 1;
    Keel__RangeRequest rr = KEEL__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)"k";
    rr.key.len = 1;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = 1;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &rr;
    assert_true(keel_frame_size(&h.base) + keel_frame_size(&req.base) <= cap);
    size_t n = keel_frame_pack(&h.base, buf);
    return n + keel_frame_pack(&req.base, buf + n);
}

/* One step of the client: the loop turns, what TLS has goes out, what came in is fed. False
 * once the server closed the connection. */
static bool client_step(struct fx *f, struct keel_tls_conn *t)
{
    static uint8_t buf[64 * 1024];
    uv_run(&f->loop, UV_RUN_NOWAIT);
    size_t n;
    while ((n = keel_tls_conn_take(t, buf, sizeof(buf))) > 0)
        assert_int_equal(send(f->fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    ssize_t r = recv(f->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r == 0)
        return false;
    if (r > 0)
        (void)keel_tls_conn_feed(t, buf, (size_t)r);
    else
        tu_sleep_ms(1);
    return true;
}

/* A TLS client (its certificate: client-root's when with_cert) that sends a Hello and a request
 * and reads the answer's frame whole: the answer's payload size, within ms. */
static size_t tls_exchange(struct fx *f, bool with_cert, int ms)
{
    struct keel_tls_options o = {.role = KEEL_TLS_CLIENT,
                                 .cert_file = with_cert ? P("client-root.pem") : NULL,
                                 .key_file = with_cert ? P("client-root-key.pem") : NULL,
                                 .ca_file = P("ca.pem"),
                                 .verify_peer = true};
    struct keel_tls_ctx *cc = NULL;
    struct keel_tls_conn *t = NULL;
    char err[256];
    assert_int_equal(keel_tls_ctx_new(&o, &cc, err, sizeof(err)), 0);
    assert_int_equal(keel_tls_conn_new(cc, "127.0.0.1", &t), 0);
    f->fd = dial(f);
    uint8_t req[256];
    assert_int_equal(keel_tls_conn_write(t, req, hello_and_request(req, sizeof(req))), 0);
    size_t cap = 2 * MIB, got = 0, want = 0;
    uint8_t *in = malloc(cap);
    assert_non_null(in);
    for (long long end = now_ms() + ms; now_ms() < end && (want == 0 || got < want);) {
        if (!client_step(f, t))
            fail_msg("the server closed the connection: %s", keel_tls_conn_error(t));
        size_t n;
        do {
            assert_int_equal(keel_tls_conn_read(t, in + got, cap - got, &n), 0);
            got += n;
        } while (n > 0 && got < cap);
        if (want == 0 && got >= 4)
            want = 4 + ((size_t)in[0] << 24 | (size_t)in[1] << 16 | (size_t)in[2] << 8 | in[3]);
    }
    if (want == 0 || got < want)
        fail_msg("no whole answer within %d ms (%zu bytes)", ms, got);
    free(in);
    keel_tls_conn_free(t);
    keel_tls_ctx_free(cc);
    return want - 4;
}

static void cn_and_big_answer(void **state)
{
    (void)state;
    struct fx *f = fx_new(true);
    f->answer = MIB;
    size_t n = tls_exchange(f, true, 10000);
    assert_true(n > MIB);
    assert_int_equal(f->handed, 1);
    assert_int_equal(f->cn_rv, 0);
    assert_string_equal(f->cn, "root");
    char small[4];
    assert_int_equal(keel_sessions_peer_cn(f->ss, f->last_session, small, sizeof(small)),
                     KEEL_EINVAL);
    assert_int_equal(keel_sessions_peer_cn(f->ss, f->last_session + 100, small, sizeof(small)),
                     KEEL_ENOTFOUND);
    /* Written whole: the session keeps no more than an idle one's buffers. */
    struct keel_sessions_stat st;
    for (long long end = now_ms() + 5000; now_ms() < end;) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        keel_sessions_stat(f->ss, &st);
        if (st.output_bytes <= 32 * 1024)
            break;
        tu_sleep_ms(1);
    }
    keel_sessions_stat(f->ss, &st);
    assert_true(st.output_bytes <= 32 * 1024);
    assert_int_equal(st.sessions, 1);
    fx_free(f);
}

static void no_client_cert(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    f->answer = 10;
    tls_exchange(f, false, 10000);
    assert_int_equal(f->handed, 1);
    assert_int_equal(f->cn_rv, KEEL_ENOTFOUND);
    fx_free(f);
}

static void plaintext_client(void **state)
{
    (void)state;
    struct fx *f = fx_new(true);
    f->answer = 10;
    int fd = dial(f);
    uint8_t req[256];
    size_t n = hello_and_request(req, sizeof(req));
    assert_int_equal(send(fd, req, n, MSG_NOSIGNAL), (ssize_t)n);
    /* The session closes (its handler hears of it); nothing was handed up. */
    for (long long end = now_ms() + 5000; now_ms() < end && f->closed == 0;) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        tu_sleep_ms(1);
    }
    assert_int_equal(f->closed, 1);
    assert_int_equal(f->handed, 0);
    /* The client sees the end of the stream (after an alert, maybe), or a reset. */
    bool ended = false;
    for (long long end = now_ms() + 5000; now_ms() < end && !ended;) {
        uint8_t b[64];
        ssize_t r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        ended = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        if (r < 0 && !ended)
            tu_sleep_ms(1);
    }
    assert_true(ended);
    close(fd);
    /* A TLS client after it is served. */
    tls_exchange(f, true, 10000);
    assert_int_equal(f->handed, 1);
    fx_free(f);
}

static int setup(void **state)
{
    (void)state;
    certs = tu_mkdtemp("session-tls");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/scripts/gen-certs.sh %s --members 1 --clients root >/dev/null",
             KEEL_SOURCE_DIR, certs);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmdir(certs);
    free(certs);
    return 0;
}

int main(void)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        printf("SKIPPED: the openssl command (scripts/gen-certs.sh) is missing\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cn_and_big_answer),
        cmocka_unit_test(no_client_cert),
        cmocka_unit_test(plaintext_client),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
