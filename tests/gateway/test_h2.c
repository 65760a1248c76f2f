/*
 * keel-gateway's gRPC transport on the wire: a real keel-gateway process in front of a real
 * 3-member keel cluster, driven by nghttp2's client API over a real TCP socket, so that every
 * frame the gateway sends is seen as a client sees it.
 *
 * In order (one gateway for all; the last test stops it):
 *   settings_first      the server's SETTINGS is the first frame, without waiting for ours to be
 * acked ping_acked          a PING comes back ACKed with its data, no GOAWAY put_ok              a
 * Put answers HEADERS, one message, trailers grpc-status 0 unknown_path        Trailers-Only
 * grpc-status 12 "unknown method <path>", no DATA bad_content_type    HTTP 415, the connection
 * still serves bad_timeout         a malformed grpc-timeout ends the stream with an error status
 *   oversize            a message announced over 1.5 MiB: grpc-status 3, etcd's message,
 *                       RST_STREAM(NO_ERROR) since we had not ended; the connection still serves
 *   malformed           a body that is not a PutRequest, a truncated message, two messages on a
 *                       unary call, a compressed one: error statuses; the next stream is served
 *   sniff               the preface a byte at a time is HTTP/2; a GET, or "PRI * HTTP/1.1", is
 *                       HTTP/1.1 on the same port
 *   garbage             garbage after the preface: the connection is closed; a new one is served
 *   cancel              a watch reset by the client, a watch and a half-sent Put on connections
 *                       cut: released (LSan at the gateway's exit), the gateway still serves
 *   goaway_on_sigterm   SIGTERM: GOAWAY(NO_ERROR) on an open connection, its watch ended with
 *                       grpc-status 14, then exit 0 (ASan/LSan clean)
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
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
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "cluster.h"
#include "etcd.pb-c.h"
#include "keel/keel.h"

#define MAX_REQUEST (1536 * 1024) /* keel-gateway's default, etcd's --max-request-bytes */

static struct tc_cluster cl;
static pid_t gw_pid;
static int gw_port;
static char gw_log[600];

/* ---- a small nghttp2 client ---- */

struct cstream {
    int32_t id;
    /* request body */
    const uint8_t *body;
    size_t body_len, body_off;
    bool end_stream;
    /* response */
    int header_frames;
    int status;      /* :status */
    int grpc_status; /* -1: none */
    char grpc_message[512];
    char ctype[64];
    uint8_t data[65536];
    size_t data_len;
    bool closed, rst;
    uint32_t rst_code;
    bool headers_ended_stream; /* the first HEADERS carried END_STREAM (Trailers-Only) */
};

struct h2c {
    int fd;
    nghttp2_session *ng;
    int frames;
    int first_type;
    bool first_is_ack;
    uint32_t max_streams; /* from the server's SETTINGS */
    bool ping_acked;
    uint8_t ping_data[8];
    bool goaway;
    uint32_t goaway_code;
    bool eof;
};

static ssize_t c_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ng, (void)flags;
    struct h2c *c = ud;
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            c->eof = true;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        off += (size_t)n;
    }
    return (ssize_t)len;
}

static int c_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2c *c = ud;
    if (c->frames++ == 0) {
        c->first_type = f->hd.type;
        c->first_is_ack = f->hd.flags & NGHTTP2_FLAG_ACK;
    }
    struct cstream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    switch (f->hd.type) {
    case NGHTTP2_SETTINGS:
        for (size_t i = 0; !(f->hd.flags & NGHTTP2_FLAG_ACK) && i < f->settings.niv; i++)
            if (f->settings.iv[i].settings_id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
                c->max_streams = f->settings.iv[i].value;
        break;
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK) {
            c->ping_acked = true;
            memcpy(c->ping_data, f->ping.opaque_data, 8);
        }
        break;
    case NGHTTP2_GOAWAY:
        c->goaway = true;
        c->goaway_code = f->goaway.error_code;
        break;
    case NGHTTP2_HEADERS:
        if (s) {
            if (s->header_frames++ == 0)
                s->headers_ended_stream = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
        }
        break;
    case NGHTTP2_RST_STREAM:
        if (s) {
            s->rst = true;
            s->rst_code = f->rst_stream.error_code;
        }
        break;
    default:
        break;
    }
    return 0;
}

static int c_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags, (void)ud;
    struct cstream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s)
        return 0;
    char v[512];
    snprintf(v, sizeof(v), "%.*s", (int)vlen, (const char *)value);
    if (nlen == 7 && memcmp(name, ":status", 7) == 0)
        s->status = atoi(v);
    else if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0)
        s->grpc_status = atoi(v);
    else if (nlen == 12 && memcmp(name, "grpc-message", 12) == 0)
        snprintf(s->grpc_message, sizeof(s->grpc_message), "%s", v);
    else if (nlen == 12 && memcmp(name, "content-type", 12) == 0)
        snprintf(s->ctype, sizeof(s->ctype), "%.63s", v);
    return 0;
}

static int c_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                  void *ud)
{
    (void)flags, (void)ud;
    struct cstream *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s && s->data_len + len <= sizeof(s->data)) {
        memcpy(s->data + s->data_len, data, len);
        s->data_len += len;
    }
    return 0;
}

static int c_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    (void)code, (void)ud;
    struct cstream *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s)
        s->closed = true;
    return 0;
}

static ssize_t c_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                      nghttp2_data_source *src, void *ud)
{
    (void)ng, (void)id, (void)ud;
    struct cstream *s = src->ptr;
    size_t n = s->body_len - s->body_off;
    if (n > length)
        n = length;
    memcpy(buf, s->body + s->body_off, n);
    s->body_off += n;
    if (s->body_off == s->body_len) {
        if (s->end_stream)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0)
            return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)gw_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void h2c_open(struct h2c *c)
{
    memset(c, 0, sizeof(*c));
    c->first_type = -1;
    c->fd = tcp_connect();
    assert_true(c->fd >= 0);
    nghttp2_session_callbacks *cbs;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, c_send);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, c_frame_recv);
    nghttp2_session_callbacks_set_on_header_callback(cbs, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, c_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, c_close);
    assert_int_equal(nghttp2_session_client_new(&c->ng, cbs, c), 0);
    nghttp2_session_callbacks_del(cbs);
    /* An empty SETTINGS, as etcdctl sends. */
    assert_int_equal(nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, NULL, 0), 0);
}

static void h2c_close(struct h2c *c)
{
    nghttp2_session_del(c->ng);
    close(c->fd);
}

/* One round: send what is queued, wait up to ms for bytes, feed them. */
static void h2c_step(struct h2c *c, int ms)
{
    if (!c->eof && nghttp2_session_send(c->ng) != 0)
        c->eof = true;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (c->eof || poll(&p, 1, ms) <= 0)
        return;
    uint8_t buf[65536];
    ssize_t n = read(c->fd, buf, sizeof(buf));
    if (n <= 0) {
        c->eof = true;
        return;
    }
    if (nghttp2_session_mem_recv(c->ng, buf, (size_t)n) < 0)
        c->eof = true;
}

#define RUN_UNTIL(c, cond, ms)                                                                     \
    do {                                                                                           \
        long long deadline_ = tc_now_ms() + (ms);                                                  \
        while (!(cond) && !(c)->eof && tc_now_ms() < deadline_)                                    \
            h2c_step((c), 20);                                                                     \
    } while (0)

/* Start a gRPC call on path with body (length-prefixed already); end_stream: half-close after. */
static void call_start(struct h2c *c, struct cstream *s, const char *path, const char *ctype,
                       const char *timeout, const uint8_t *body, size_t len, bool end_stream)
{
    memset(s, 0, sizeof(*s));
    s->grpc_status = -1;
    s->body = body;
    s->body_len = len;
    s->end_stream = end_stream;
    char auth[32];
    snprintf(auth, sizeof(auth), "127.0.0.1:%d", gw_port);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", path),
        NV(":authority", auth),
        NV("content-type", ctype),
        NV("te", "trailers"),
        NV("grpc-timeout", timeout ? timeout : "5S"),
    };
#undef NV
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = c_body};
    s->id = nghttp2_submit_request(c->ng, NULL, nva, sizeof(nva) / sizeof(nva[0]), &prd, s);
    assert_true(s->id > 0);
}

/* A gRPC message: 5-byte prefix + packed msg, into buf. */
static size_t grpc_frame(uint8_t *buf, size_t cap, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    assert_true(n + 5 <= cap);
    buf[0] = 0;
    buf[1] = (uint8_t)(n >> 24);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 8);
    buf[4] = (uint8_t)n;
    protobuf_c_message_pack(msg, buf + 5);
    return n + 5;
}

/* A Put of key=value through c: the whole exchange is checked. unavailable_ok: a put the
 * cluster answers UNAVAILABLE (no leader yet) returns false instead of failing. */
static bool put_checked(struct h2c *c, const char *key, const char *value, bool unavailable_ok);

static void put_ok(struct h2c *c, const char *key, const char *value)
{
    (void)put_checked(c, key, value, false);
}

static bool put_checked(struct h2c *c, const char *key, const char *value, bool unavailable_ok)
{
    Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
    req.key.data = (uint8_t *)key;
    req.key.len = strlen(key);
    req.value.data = (uint8_t *)value;
    req.value.len = strlen(value);
    uint8_t body[256];
    size_t len = grpc_frame(body, sizeof(body), &req.base);
    struct cstream s;
    call_start(c, &s, "/etcdserverpb.KV/Put", "application/grpc", NULL, body, len, true);
    RUN_UNTIL(c, s.closed, 15000);
    assert_true(s.closed);
    assert_int_equal(s.status, 200);
    if (s.grpc_status == 14 && unavailable_ok)
        return false;
    if (s.grpc_status != 0)
        fail_msg("Put: grpc-status %d '%s'", s.grpc_status, s.grpc_message);
    assert_string_equal(s.ctype, "application/grpc");
    assert_int_equal(s.header_frames, 2); /* response headers, then trailers */
    assert_true(s.data_len >= 5);
    size_t mlen =
        (size_t)s.data[1] << 24 | (size_t)s.data[2] << 16 | (size_t)s.data[3] << 8 | s.data[4];
    assert_int_equal(s.data[0], 0);
    assert_int_equal(mlen + 5, s.data_len);
    Etcdserverpb__PutResponse *r = etcdserverpb__put_response__unpack(NULL, mlen, s.data + 5);
    assert_non_null(r);
    assert_non_null(r->header);
    assert_true(r->header->revision > 0);
    etcdserverpb__put_response__free_unpacked(r, NULL);
    return true;
}

/* ---- the gateway process ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t al = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

static int setup(void **state)
{
    (void)state;
    if (access(KEEL_GATEWAY_PATH, X_OK) != 0) {
        fprintf(stderr, "SKIPPED: %s not built\n", KEEL_GATEWAY_PATH);
        exit(77);
    }
    tc_cluster_init(&cl, 3, "gwh2");
    tc_start_all(&cl);
    char eps[512];
    tc_endpoints(&cl, 0, eps, sizeof(eps));
    struct keel *k = NULL;
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 4000};
    if (keel_open(&k, &o) != 0 || tc_find_leader(&cl, k, 0, 15000) == 0) {
        fprintf(stderr, "no keel leader\n");
        return -1;
    }
    keel_close(k);
    gw_port = free_port();
    snprintf(gw_log, sizeof(gw_log), "%s/gateway.log", cl.root);
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", gw_port);
    gw_pid = fork();
    if (gw_pid == 0) {
        int fd = open(gw_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(KEEL_GATEWAY_PATH, "keel-gateway", "--listen", listen, "--endpoints", eps,
              "--log-level", "debug", (char *)NULL);
        _exit(127);
    }
    /* Up once it accepts (bounded). */
    for (int i = 0; i < 100; i++) {
        int fd = tcp_connect();
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        usleep(50000);
    }
    fprintf(stderr, "keel-gateway did not listen on %s\n", listen);
    return -1;
}

static void dump_log(void)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "tail -n 30 '%s' >&2", gw_log);
    if (system(cmd) != 0)
        fprintf(stderr, "(no gateway log)\n");
}

static int teardown(void **state)
{
    (void)state;
    if (gw_pid > 0) {
        kill(gw_pid, SIGKILL);
        waitpid(gw_pid, NULL, 0);
        dump_log();
    }
    tc_cluster_close(&cl);
    return 0;
}

/* ---- tests ---- */

static void test_settings_first(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    RUN_UNTIL(&c, c.frames > 0, 5000);
    assert_int_equal(c.first_type, NGHTTP2_SETTINGS);
    assert_false(c.first_is_ack);
    assert_true(c.max_streams >= 100); /* a bound, and one that lets clients multiplex */
    h2c_close(&c);
}

static void test_ping_acked(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    const uint8_t data[8] = {0x02, 0x04, 0x10, 0x10, 0x09, 0x0e, 0x07, 0x07}; /* grpc-go's BDP */
    for (int i = 0; i < 5; i++) {
        c.ping_acked = false;
        assert_int_equal(nghttp2_submit_ping(c.ng, NGHTTP2_FLAG_NONE, data), 0);
        RUN_UNTIL(&c, c.ping_acked, 5000);
        assert_true(c.ping_acked);
        assert_memory_equal(c.ping_data, data, 8);
    }
    assert_false(c.goaway);
    h2c_close(&c);
}

static void test_put_ok(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    put_ok(&c, "h2-key", "v1");
    put_ok(&c, "h2-key", "v2");
    h2c_close(&c);
}

static void test_unknown_path(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    static const uint8_t empty[5] = {0};
    struct cstream s;
    call_start(&c, &s, "/etcdserverpb.Nope/Nope", "application/grpc", NULL, empty, 5, true);
    RUN_UNTIL(&c, s.closed, 5000);
    assert_true(s.closed);
    assert_int_equal(s.header_frames, 1);
    assert_true(s.headers_ended_stream); /* Trailers-Only */
    assert_int_equal(s.status, 200);
    assert_string_equal(s.ctype, "application/grpc");
    assert_int_equal(s.grpc_status, 12);
    assert_string_equal(s.grpc_message, "unknown method /etcdserverpb.Nope/Nope");
    assert_int_equal(s.data_len, 0);
    put_ok(&c, "h2-after-unknown", "x");
    h2c_close(&c);
}

static void test_bad_content_type(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    static const uint8_t empty[5] = {0};
    struct cstream s;
    call_start(&c, &s, "/etcdserverpb.KV/Put", "application/json", NULL, empty, 5, true);
    RUN_UNTIL(&c, s.closed, 5000);
    assert_true(s.closed);
    assert_int_equal(s.status, 415);
    assert_true(s.grpc_status > 0);
    put_ok(&c, "h2-after-ctype", "x");
    h2c_close(&c);
}

static void test_bad_timeout(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    static const uint8_t empty[5] = {0};
    struct cstream s;
    call_start(&c, &s, "/etcdserverpb.KV/Range", "application/grpc", "12x", empty, 5, true);
    RUN_UNTIL(&c, s.closed, 5000);
    assert_true(s.closed);
    assert_int_equal(s.grpc_status, 13);
    assert_non_null(strstr(s.grpc_message, "grpc-timeout"));
    h2c_close(&c);
}

static void test_oversize(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    /* Announce MAX_REQUEST + 1 bytes, send a few, keep the stream open. */
    static uint8_t body[5 + 1000];
    uint32_t n = MAX_REQUEST + 1;
    body[0] = 0;
    body[1] = (uint8_t)(n >> 24);
    body[2] = (uint8_t)(n >> 16);
    body[3] = (uint8_t)(n >> 8);
    body[4] = (uint8_t)n;
    struct cstream s;
    call_start(&c, &s, "/etcdserverpb.KV/Put", "application/grpc", NULL, body, sizeof(body), false);
    RUN_UNTIL(&c, s.closed, 5000);
    assert_true(s.closed);
    assert_int_equal(s.status, 200);
    assert_int_equal(s.grpc_status, 3);
    assert_string_equal(s.grpc_message, "etcdserver: request is too large");
    assert_true(s.rst); /* we had not ended our side */
    assert_int_equal(s.rst_code, NGHTTP2_NO_ERROR);
    /* The connection still serves. */
    put_ok(&c, "h2-after-oversize", "x");
    h2c_close(&c);
}

static void test_malformed(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    /* Field 1 (key), length-delimited, announcing 100 bytes where 2 follow. */
    static const uint8_t body[] = {0, 0, 0, 0, 4, 0x0a, 0x64, 'a', 'b'};
    struct cstream s;
    call_start(&c, &s, "/etcdserverpb.KV/Put", "application/grpc", NULL, body, sizeof(body), true);
    RUN_UNTIL(&c, s.closed, 5000);
    assert_true(s.closed);
    assert_true(s.grpc_status == 13 || s.grpc_status == 3);
    assert_non_null(strstr(s.grpc_message, "unmarshal"));
    /* A message truncated by the end of the stream. */
    static const uint8_t cut[] = {0, 0, 0, 0, 9, 0x0a, 0x01};
    call_start(&c, &s, "/etcdserverpb.KV/Put", "application/grpc", NULL, cut, sizeof(cut), true);
    RUN_UNTIL(&c, s.closed, 5000);
    assert_true(s.closed);
    assert_true(s.grpc_status > 0);
    /* Two messages on a unary call. */
    static const uint8_t two[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    call_start(&c, &s, "/etcdserverpb.KV/Range", "application/grpc", NULL, two, sizeof(two), true);
    RUN_UNTIL(&c, s.closed, 5000);
    assert_true(s.closed);
    assert_true(s.grpc_status > 0);
    /* A compressed message: we announced no compression. */
    static const uint8_t comp[] = {1, 0, 0, 0, 0};
    call_start(&c, &s, "/etcdserverpb.KV/Put", "application/grpc", NULL, comp, sizeof(comp), true);
    RUN_UNTIL(&c, s.closed, 5000);
    assert_true(s.closed);
    assert_int_equal(s.grpc_status, 12);
    put_ok(&c, "h2-after-malformed", "x");
    assert_false(c.goaway);
    h2c_close(&c);
}

/* Prepend the varint of v before *pos (moving it back). */
static void prepend_varint(uint8_t **pos, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    *pos -= n;
    memcpy(*pos, tmp, n);
}

/* A Txn nesting 100,000 Txns (success -> request_txn -> ...) in under 1 MiB: protobuf-c unpacks
 * recursively, so without a depth check before unpacking it takes the gateway's stack down. */
static void test_deep_nesting(void **state)
{
    (void)state;
    enum { LEVELS = 100000, CAP = 1 << 20 };
    uint8_t *buf = malloc(CAP);
    assert_non_null(buf);
    uint8_t *pos = buf + CAP;
    uint64_t len = 0; /* the innermost TxnRequest is empty */
    for (int i = 0; i < LEVELS; i++) {
        prepend_varint(&pos, len); /* RequestOp.request_txn = 4, length-delimited */
        *--pos = 0x22;
        len = (uint64_t)(buf + CAP - pos);
        prepend_varint(&pos, len); /* TxnRequest.success = 2, length-delimited */
        *--pos = 0x12;
        len = (uint64_t)(buf + CAP - pos);
    }
    assert_true(pos - buf >= 5);
    pos -= 5;
    pos[0] = 0;
    pos[1] = (uint8_t)(len >> 24), pos[2] = (uint8_t)(len >> 16);
    pos[3] = (uint8_t)(len >> 8), pos[4] = (uint8_t)len;
    struct h2c c;
    h2c_open(&c);
    struct cstream s;
    call_start(&c, &s, "/etcdserverpb.KV/Txn", "application/grpc", NULL, pos, (size_t)(len + 5),
               true);
    RUN_UNTIL(&c, s.closed, 10000);
    assert_true(s.closed);
    assert_int_equal(s.grpc_status, 13);
    assert_non_null(strstr(s.grpc_message, "nested"));
    put_ok(&c, "h2-after-deep", "x");
    h2c_close(&c);
    free(buf);
}

/* Read from fd until want bytes or EOF (bounded by ms); the count read. */
static size_t read_some(int fd, uint8_t *buf, size_t want, int ms)
{
    size_t got = 0;
    long long deadline = tc_now_ms() + ms;
    while (got < want && tc_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t n = read(fd, buf + got, want - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

/* The protocol is told apart byte by byte: the HTTP/2 preface one byte per write still means
 * HTTP/2 (the server's SETTINGS comes back); a request that starts like it ("PRI * HTTP/1.1")
 * or a plain GET means HTTP/1.1 on the same port. */
static void test_sniff(void **state)
{
    (void)state;
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    int fd = tcp_connect();
    assert_true(fd >= 0);
    for (size_t i = 0; i < 24; i++) {
        assert_int_equal(send(fd, preface + i, 1, MSG_NOSIGNAL), 1);
        usleep(2000);
    }
    static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    assert_int_equal(send(fd, settings, 9, MSG_NOSIGNAL), 9);
    uint8_t hdr[9];
    assert_int_equal(read_some(fd, hdr, 9, 5000), 9);
    assert_int_equal(hdr[3], NGHTTP2_SETTINGS);
    assert_int_equal(hdr[4] & NGHTTP2_FLAG_ACK, 0);
    close(fd);

    static const char *const http1[] = {
        "GET /version HTTP/1.1\r\nHost: x\r\n\r\n",
        "PRI * HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    for (size_t k = 0; k < 2; k++) {
        fd = tcp_connect();
        assert_true(fd >= 0);
        size_t len = strlen(http1[k]);
        /* A byte at a time across the sniffing. The server may answer (and close: "PRI" is no
         * HTTP/1.1 method, a 400) before the last byte: what it answered is read below. */
        size_t sent = 0;
        while (sent < len && send(fd, http1[k] + sent, 1, MSG_NOSIGNAL) == 1)
            sent++;
        assert_true(sent >= 12); /* "PRI * HTTP/1" tells it from the HTTP/2 preface */
        uint8_t resp[9] = {0};
        assert_int_equal(read_some(fd, resp, 9, 5000), 9);
        assert_memory_equal(resp, "HTTP/1.1 ", 9);
        close(fd);
    }
}

static void test_garbage(void **state)
{
    (void)state;
    int fd = tcp_connect();
    assert_true(fd >= 0);
    static const char junk[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                               "\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage garbage garbage";
    assert_int_equal(send(fd, junk, sizeof(junk) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(junk) - 1);
    /* The gateway closes: read reaches EOF (after a GOAWAY perhaps) within 5 s. */
    long long deadline = tc_now_ms() + 5000;
    bool closed = false;
    while (!closed && tc_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof(buf));
        closed = n == 0 || (n < 0 && errno == ECONNRESET);
    }
    close(fd);
    assert_true(closed);
    /* The gateway still serves. */
    struct h2c c;
    h2c_open(&c);
    put_ok(&c, "h2-after-garbage", "x");
    h2c_close(&c);
}

/* Open a watch on key through c and wait for its `created`. body must outlive the stream. */
static void watch_open(struct h2c *c, struct cstream *s, uint8_t *body, size_t cap, const char *key)
{
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key.data = (uint8_t *)key;
    cr.key.len = strlen(key);
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    size_t len = grpc_frame(body, cap, &wr.base);
    call_start(c, s, "/etcdserverpb.Watch/Watch", "application/grpc", NULL, body, len, false);
    RUN_UNTIL(c, s->data_len >= 5 || s->closed, 10000);
    assert_false(s->closed);
    assert_int_equal(s->status, 200);
    assert_true(s->data_len >= 5);
    size_t mlen =
        (size_t)s->data[1] << 24 | (size_t)s->data[2] << 16 | (size_t)s->data[3] << 8 | s->data[4];
    assert_true(s->data_len >= 5 + mlen);
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, mlen, s->data + 5);
    assert_non_null(r);
    assert_true(r->created);
    etcdserverpb__watch_response__free_unpacked(r, NULL);
}

/* Streams that go away while their handler holds the call: a reset, then a connection cut. The
 * gateway must release both (the last test's clean exit under LSan says it did). */
static void test_cancel(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    uint8_t b1[128], b2[128];
    struct cstream s1, s2;
    watch_open(&c, &s1, b1, sizeof(b1), "h2-cancel-1");
    assert_int_equal(nghttp2_submit_rst_stream(c.ng, NGHTTP2_FLAG_NONE, s1.id, NGHTTP2_CANCEL), 0);
    RUN_UNTIL(&c, s1.closed, 5000);
    assert_true(s1.closed);
    watch_open(&c, &s2, b2, sizeof(b2), "h2-cancel-2");
    h2c_close(&c); /* cut with the watch open */
    /* A unary call half-sent, then the connection cut. */
    h2c_open(&c);
    static const uint8_t half[] = {0, 0, 0, 0, 40, 0x0a};
    call_start(&c, &s1, "/etcdserverpb.KV/Put", "application/grpc", NULL, half, sizeof(half),
               false);
    RUN_UNTIL(&c, false, 200);
    h2c_close(&c);
    h2c_open(&c);
    put_ok(&c, "h2-after-cancel", "x");
    h2c_close(&c);
}

/* A unary call reset by the client while its keel request is in flight, then the connection cut,
 * then the keel request completes: the handler's finish then reaches a stream whose connection is
 * gone, and must touch nothing of it (it once updated the freed connection's byte count). The
 * members are stopped so that the request stays in flight; it ends at its 2 s deadline. */
static void test_reset_then_cut(void **state)
{
    (void)state;
    for (int i = 1; i <= cl.n; i++)
        assert_int_equal(kill(cl.m[i].pid, SIGSTOP), 0);
    struct h2c c;
    h2c_open(&c);
    Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
    req.key.data = (uint8_t *)"h2-reset-cut";
    req.key.len = strlen("h2-reset-cut");
    uint8_t body[64];
    size_t len = grpc_frame(body, sizeof(body), &req.base);
    struct cstream s;
    call_start(&c, &s, "/etcdserverpb.KV/Put", "application/grpc", "2S", body, len, true);
    RUN_UNTIL(&c, false, 300); /* the gateway has sent the keel request by now */
    assert_false(s.closed);
    assert_int_equal(nghttp2_submit_rst_stream(c.ng, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_CANCEL), 0);
    RUN_UNTIL(&c, false, 100);
    h2c_close(&c);
    usleep(3000 * 1000); /* past the request's deadline: the handler has finished */
    for (int i = 1; i <= cl.n; i++)
        kill(cl.m[i].pid, SIGCONT);
    assert_int_equal(waitpid(gw_pid, NULL, WNOHANG), 0); /* the gateway is still running */
    /* Serving again: once the thawed members have elected a leader (every one of them was
     * stopped past its election timeout; on a busy machine that can take longer than one
     * put's deadline, which is not what this test is about), bounded to 30 s. */
    h2c_open(&c);
    bool served = false;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        served = put_checked(&c, "h2-after-reset-cut", "x", true);
        if (!served)
            usleep(500 * 1000);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (!served && t.tv_sec - t0.tv_sec < 30);
    assert_true(served);
    h2c_close(&c);
}

/* A client that keeps asking without reading (its stream windows shut at 0) gets
 * ResourceExhausted once the connection has 64 MiB of replies queued, instead of the gateway
 * queueing one more reply per request without bound; other connections are served. */
static void test_unread_replies(void **state)
{
    (void)state;
    enum { VALUE = 1 << 20, MAX_CALLS = 200 };
    struct h2c c;
    h2c_open(&c);
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)"h2-big";
    put.key.len = strlen("h2-big");
    uint8_t *value = calloc(1, VALUE), *body = malloc(VALUE + 64);
    assert_non_null(value);
    assert_non_null(body);
    put.value.data = value;
    put.value.len = VALUE;
    size_t len = grpc_frame(body, VALUE + 64, &put.base);
    struct cstream *s = calloc(MAX_CALLS, sizeof(*s));
    assert_non_null(s);
    call_start(&c, &s[0], "/etcdserverpb.KV/Put", "application/grpc", NULL, body, len, true);
    RUN_UNTIL(&c, s[0].closed, 15000);
    assert_int_equal(s[0].grpc_status, 0);
    h2c_close(&c);

    h2c_open(&c);
    nghttp2_settings_entry no_window = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0};
    assert_int_equal(nghttp2_submit_settings(c.ng, NGHTTP2_FLAG_NONE, &no_window, 1), 0);
    Etcdserverpb__RangeRequest range = ETCDSERVERPB__RANGE_REQUEST__INIT;
    range.key = put.key;
    uint8_t rbody[64];
    size_t rlen = grpc_frame(rbody, sizeof(rbody), &range.base);
    int refused = -1;
    for (int i = 0; i < MAX_CALLS && refused < 0; i++) {
        call_start(&c, &s[i], "/etcdserverpb.KV/Range", "application/grpc", "30S", rbody, rlen,
                   true);
        /* Its reply is queued (response headers sent) or it is refused (closed). */
        RUN_UNTIL(&c, s[i].header_frames > 0 || s[i].closed, 15000);
        assert_true(s[i].header_frames > 0 || s[i].closed);
        if (s[i].closed) {
            assert_int_equal(s[i].grpc_status, 8);
            assert_non_null(strstr(s[i].grpc_message, "too many requests"));
            refused = i;
        }
    }
    /* Refused only once 64 MiB of 1 MiB replies were queued, and then refused. */
    assert_true(refused >= 64);
    h2c_close(&c);
    free(s);
    free(body);
    free(value);
    h2c_open(&c);
    put_ok(&c, "h2-after-unread", "x");
    h2c_close(&c);
}

static void test_goaway_on_sigterm(void **state)
{
    (void)state;
    struct h2c c;
    h2c_open(&c);
    put_ok(&c, "h2-before-stop", "x");
    uint8_t body[128];
    struct cstream w;
    watch_open(&c, &w, body, sizeof(body), "h2-stop");
    assert_int_equal(kill(gw_pid, SIGTERM), 0);
    RUN_UNTIL(&c, c.goaway, 5000);
    assert_true(c.goaway);
    assert_int_equal(c.goaway_code, NGHTTP2_NO_ERROR);
    /* The open watch ends Unavailable: clients retry elsewhere. */
    RUN_UNTIL(&c, w.closed, 5000);
    assert_true(w.closed);
    assert_int_equal(w.grpc_status, 14);
    /* Then the connection closes and the process exits 0 (bounded). */
    RUN_UNTIL(&c, c.eof, 10000);
    assert_true(c.eof);
    h2c_close(&c);
    int st = 0;
    pid_t r = 0;
    for (int i = 0; i < 200 && r == 0; i++) {
        r = waitpid(gw_pid, &st, WNOHANG);
        if (r == 0)
            usleep(50000);
    }
    assert_int_equal(r, gw_pid);
    gw_pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    dump_log();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settings_first),
        cmocka_unit_test(test_ping_acked),
        cmocka_unit_test(test_put_ok),
        cmocka_unit_test(test_unknown_path),
        cmocka_unit_test(test_bad_content_type),
        cmocka_unit_test(test_bad_timeout),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_reset_then_cut),
        cmocka_unit_test(test_unread_replies),
        cmocka_unit_test(test_goaway_on_sigterm),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
