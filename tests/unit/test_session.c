/*
 * Client sessions (server/session.h) on a real loop and real sockets on 127.0.0.1, with a
 * handler that records what is handed up and answers only when the test says so (issue 9, holes
 * 8 and 10). Each test writes many requests in one write and checks how many are handed up:
 *
 *   max_inflight per session         -> exactly that many, the rest wait in the read buffer
 *   max_inflight_total               -> the same across sessions
 *   the pressure hook (apply backlog) -> nothing while it is high, everything once it is low
 *   output of all sessions past half  -> a client that reads nothing stops being read; one that
 *                                        reads is served
 *   output past max_output_bytes     -> the session with the most unread is cut off, not from
 *                                        inside the send; the others carry on
 *
 * Every wait is bounded in loop turns and milliseconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
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

#define MAX_HANDED 256
#define MIB        (1u << 20)

struct handed {
    uint64_t session;
    uint64_t id;
    bool answered;
};

struct fx {
    uv_loop_t loop;
    struct keel_config cfg;
    struct keel_sessions *ss;
    struct keel_responder out;
    struct handed handed[MAX_HANDED];
    size_t n_handed;
    size_t answer_bytes; /* non-zero: answer each request at once with this many bytes */
    uint64_t closed[16];
    size_t n_closed;
    size_t refused;
    uint64_t pressure; /* what the pressure hook reports */
    int fds[8];
    size_t n_fds;
    uint8_t *value; /* answers' value bytes */
    size_t value_len;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Answer client id of session with a Response carrying a value of `bytes` bytes. */
static int answer(struct fx *f, uint64_t session, uint64_t id, size_t bytes)
{
    if (f->value_len < bytes) {
        free(f->value);
        f->value = calloc(1, bytes);
        assert_non_null(f->value);
        f->value_len = bytes;
    }
    Keel__KeyValue kv = KEEL__KEY_VALUE__INIT;
    kv.value.data = f->value;
    kv.value.len = bytes;
    Keel__KeyValue *kvs = &kv;
    Keel__RangeResponse rr = KEEL__RANGE_RESPONSE__INIT;
    rr.n_kvs = bytes ? 1 : 0;
    rr.kvs = &kvs;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = id;
    resp.body_case = KEEL__RESPONSE__BODY_RANGE;
    resp.range = &rr;
    return f->out.send(f->out.ctx, session, &resp.base, KEEL_RESPOND_ANSWER);
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
    assert_true(f->n_handed < MAX_HANDED);
    f->handed[f->n_handed++] = (struct handed){.session = session, .id = req->id};
    keel__request__free_unpacked(req, NULL);
    if (f->answer_bytes > 0) {
        answer(f, session, f->handed[f->n_handed - 1].id, f->answer_bytes);
        f->handed[f->n_handed - 1].answered = true;
    }
}

static void h_refuse(void *data, uint64_t session, int err, const char *msg)
{
    struct fx *f = data;
    (void)session;
    (void)err;
    (void)msg;
    f->refused++;
}

static void h_closed(void *data, uint64_t session)
{
    struct fx *f = data;
    assert_true(f->n_closed < sizeof(f->closed) / sizeof(f->closed[0]));
    f->closed[f->n_closed++] = session;
}

static uint64_t fake_pressure(void *data)
{
    return ((struct fx *)data)->pressure;
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

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(f->cfg.listen_client, sizeof(f->cfg.listen_client), "127.0.0.1:%d", free_port());
    f->cfg.max_request_bytes = 64 * 1024;
    f->cfg.max_inflight = 1000;
    f->cfg.max_inflight_total = 1000;
    f->cfg.max_connections = 16;
    f->cfg.max_output_bytes = 64 * MIB;
    assert_int_equal(keel_sessions_new(&f->loop, &f->cfg, &f->ss), 0);
    keel_sessions_responder(f->ss, &f->out);
    struct keel_session_handler h = {
        .data = f, .hello = h_hello, .request = h_request, .refuse = h_refuse, .closed = h_closed};
    assert_int_equal(keel_sessions_listen(f->ss, &h), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < f->n_fds; i++)
        close(f->fds[i]);
    keel_sessions_stop(f->ss, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    keel_sessions_free(f->ss);
    free(f->value);
    free(f);
    return 0;
}

/* Run the loop for ms milliseconds. */
static void spin(struct fx *f, int ms)
{
    long long end = now_ms() + ms;
    for (int turns = 0; turns < 100000 && now_ms() < end; turns++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        tu_sleep_ms(1);
    }
}

/* Run the loop until at least n requests were handed up, for at most ms milliseconds. */
static bool until_handed(struct fx *f, size_t n, int ms)
{
    long long end = now_ms() + ms;
    for (int turns = 0; turns < 100000; turns++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (f->n_handed >= n)
            return true;
        if (now_ms() >= end)
            return false;
        tu_sleep_ms(1);
    }
    return false;
}

/* A client connected to the sessions, optionally with a small receive buffer (a client that
 * reads nothing then holds little in its kernel). The test closes it at teardown. */
static int dial(struct fx *f, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    char host[KEEL_ADDR_MAX];
    snprintf(host, sizeof(host), "%s", f->cfg.listen_client);
    char *colon = strrchr(host, ':');
    *colon = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_true(f->n_fds < sizeof(f->fds) / sizeof(f->fds[0]));
    f->fds[f->n_fds++] = fd;
    return fd;
}

/* Hello (when hello) and n Status requests with ids first.., in one write. */
static void send_requests(int fd, bool hello, uint64_t first, size_t n)
{
    uint8_t buf[16384];
    size_t len = 0;
    if (hello) {
        Keel__Hello h = KEEL__HELLO__INIT;
        h.protocol_version = 1;
        len += keel_frame_pack(&h.base, buf + len);
    }
    Keel__StatusRequest sr = KEEL__STATUS_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &sr;
    for (size_t i = 0; i < n; i++) {
        req.id = first + i;
        assert_true(len + keel_frame_size(&req.base) <= sizeof(buf));
        len += keel_frame_pack(&req.base, buf + len);
    }
    assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Read one whole frame on fd while running the loop, within ms; its payload size. */
static size_t read_frame(struct fx *f, int fd, int ms)
{
    static uint8_t sink[65536];
    uint8_t hdr[4];
    size_t hgot = 0, payload = 0, pgot = 0;
    long long end = now_ms() + ms;
    for (int turns = 0; turns < 1000000 && now_ms() < end; turns++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        ssize_t r;
        if (hgot < 4) {
            r = recv(fd, hdr + hgot, 4 - hgot, MSG_DONTWAIT);
        } else {
            size_t room = payload - pgot;
            r = recv(fd, sink, room < sizeof(sink) ? room : sizeof(sink), MSG_DONTWAIT);
        }
        if (r == 0)
            fail_msg("the connection closed");
        if (r < 0) {
            tu_sleep_ms(1);
            continue;
        }
        if (hgot < 4) {
            hgot += (size_t)r;
            if (hgot == 4) {
                payload =
                    (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
                if (payload == 0)
                    return 0;
            }
        } else if ((pgot += (size_t)r) == payload) {
            return payload;
        }
    }
    fail_msg("no whole frame within %d ms", ms);
    return 0;
}

static size_t outstanding(const struct fx *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n_handed; i++)
        n += !f->handed[i].answered;
    return n;
}

/* Answer every request handed up and not answered yet, with a small answer. */
static void answer_all(struct fx *f)
{
    for (size_t i = 0; i < f->n_handed; i++) {
        if (!f->handed[i].answered) {
            answer(f, f->handed[i].session, f->handed[i].id, 0);
            f->handed[i].answered = true;
        }
    }
}

static bool was_closed(const struct fx *f, uint64_t session)
{
    for (size_t i = 0; i < f->n_closed; i++)
        if (f->closed[i] == session)
            return true;
    return false;
}

/* Hole 10: a read holding many requests used to be handed up whole, past max_inflight. Now
 * exactly max_inflight are, the rest wait in the buffer and follow as answers go out, in order;
 * the client's end of stream is seen only after its last whole frame. */
static void max_inflight_is_hard(void **state)
{
    struct fx *f = *state;
    f->cfg.max_inflight = 4;
    int fd = dial(f, 0);
    send_requests(fd, true, 1, 40);
    shutdown(fd, SHUT_WR);
    assert_true(until_handed(f, 4, 2000));
    spin(f, 100);
    assert_int_equal(f->n_handed, 4);
    struct keel_sessions_stat st;
    keel_sessions_stat(f->ss, &st);
    assert_int_equal(st.inflight, 4);
    assert_int_equal(st.blocked, 1);

    /* One answer: one more request, no more. */
    answer(f, f->handed[0].session, f->handed[0].id, 0);
    f->handed[0].answered = true;
    assert_true(until_handed(f, 5, 2000));
    spin(f, 50);
    assert_int_equal(f->n_handed, 5);

    for (int round = 0; round < 100 && f->n_handed < 40; round++) {
        assert_true(outstanding(f) <= 4);
        size_t before = f->n_handed;
        answer_all(f);
        assert_true(until_handed(f, before + 1, 2000));
    }
    assert_int_equal(f->n_handed, 40);
    for (size_t i = 0; i < 40; i++)
        assert_int_equal(f->handed[i].id, i + 1);
    answer_all(f);
    /* Everything handed up, the end of stream is read: no truncated frame, the session ends. */
    for (int i = 0; i < 2000 && f->n_closed == 0; i++)
        spin(f, 1);
    assert_int_equal(f->n_closed, 1);
    assert_int_equal(f->refused, 0);
}

/* Hole 10: in flight across sessions, max_inflight_total holds too. */
static void max_inflight_total_is_global(void **state)
{
    struct fx *f = *state;
    f->cfg.max_inflight = 100;
    f->cfg.max_inflight_total = 6;
    int a = dial(f, 0);
    int b = dial(f, 0);
    send_requests(a, true, 1, 20);
    send_requests(b, true, 1, 20);
    assert_true(until_handed(f, 6, 2000));
    spin(f, 100);
    assert_int_equal(f->n_handed, 6);
    for (int round = 0; round < 100 && f->n_handed < 40; round++) {
        assert_true(outstanding(f) <= 6);
        size_t before = f->n_handed;
        answer_all(f);
        assert_true(until_handed(f, before + 1, 2000));
        spin(f, 5);
    }
    assert_int_equal(f->n_handed, 40);
    assert_true(outstanding(f) <= 6);
    /* Each session's requests in its own order. */
    uint64_t next[2] = {1, 1};
    uint64_t first = f->handed[0].session;
    for (size_t i = 0; i < 40; i++) {
        int which = f->handed[i].session == first ? 0 : 1;
        assert_int_equal(f->handed[i].id, next[which]++);
    }
}

/* Hole 8: while the work the sessions yield to (the apply backlog, in keeld) is at its high mark
 * no session hands anything up; between the marks it stays held; at the low mark every session
 * is read again. */
static void pressure_holds_every_session(void **state)
{
    struct fx *f = *state;
    struct keel_sessions_pressure p = {
        .bytes = fake_pressure, .data = f, .high = 100 * MIB, .low = 50 * MIB};
    keel_sessions_set_pressure(f->ss, &p);
    f->pressure = 100 * MIB;
    int a = dial(f, 0);
    send_requests(a, true, 1, 5);
    spin(f, 100);
    assert_int_equal(f->n_handed, 0);
    struct keel_sessions_stat st;
    keel_sessions_stat(f->ss, &st);
    assert_true(st.held);
    f->pressure = 60 * MIB;
    spin(f, 100);
    assert_int_equal(f->n_handed, 0);
    f->pressure = 50 * MIB;
    assert_true(until_handed(f, 5, 2000));
    /* Under the high mark and not held: read at once. */
    f->pressure = 99 * MIB;
    int b = dial(f, 0);
    send_requests(b, true, 1, 3);
    assert_true(until_handed(f, 8, 2000));
    keel_sessions_stat(f->ss, &st);
    assert_false(st.held);
}

/* Hole 10: past half of max_output_bytes, a client that reads nothing is not read any more (it
 * used to be read until its own 256 MiB), while a client that reads is served. */
static void unread_output_stops_reading(void **state)
{
    struct fx *f = *state;
    f->cfg.max_output_bytes = 8 * MIB;
    f->answer_bytes = MIB;
    int a = dial(f, 4096);
    send_requests(a, true, 1, 32);
    spin(f, 300);
    uint64_t sa = f->handed[0].session;
    size_t handed_a = f->n_handed;
    assert_true(handed_a >= 1);
    assert_true(handed_a < 32);
    size_t unread = 0;
    assert_int_equal(f->out.backlog(f->out.ctx, sa, &unread), 0);
    assert_true(unread <= 8 * MIB);
    struct keel_sessions_stat st;
    keel_sessions_stat(f->ss, &st);
    assert_true(st.output_bytes <= 8 * MIB);

    /* Another client reads its answers: served, one after the other. */
    int b = dial(f, 0);
    send_requests(b, true, 1, 1);
    assert_true(read_frame(f, b, 3000) > MIB);
    send_requests(b, false, 2, 1);
    assert_true(read_frame(f, b, 3000) > MIB);
    spin(f, 50);
    assert_int_equal(f->n_handed, handed_a + 2);
    assert_int_equal(f->n_closed, 0);
    keel_sessions_stat(f->ss, &st);
    assert_true(st.output_bytes <= 8 * MIB);
}

/* Hole 10: answers to requests already in flight can still pass max_output_bytes; then the
 * session with the most unread is cut off (told to its handler from the close callback, never
 * from inside the send), and the bound holds after every send. */
static void output_bound_cuts_off_the_biggest(void **state)
{
    struct fx *f = *state;
    f->cfg.max_output_bytes = 8 * MIB;
    int a = dial(f, 4096);
    int c = dial(f, 4096);
    send_requests(a, true, 1, 12);
    assert_true(until_handed(f, 12, 2000));
    send_requests(c, true, 1, 1);
    assert_true(until_handed(f, 13, 2000));
    uint64_t sa = f->handed[0].session, sc = f->handed[12].session;
    struct keel_sessions_stat st;
    size_t cut_at = 0;
    for (size_t i = 0; i < 12; i++) {
        int rv = answer(f, sa, f->handed[i].id, MIB);
        f->handed[i].answered = true;
        keel_sessions_stat(f->ss, &st);
        assert_true(st.output_bytes <= 8 * MIB);
        if (rv == KEEL_ECLOSED && cut_at == 0)
            cut_at = i;
    }
    assert_true(cut_at > 0); /* the later answers found the session gone */
    size_t unread;
    assert_int_equal(f->out.backlog(f->out.ctx, sa, &unread), KEEL_ECLOSED);
    assert_int_equal(f->n_closed, 0); /* not from inside the send */
    assert_int_equal(answer(f, sc, f->handed[12].id, MIB), 0);
    f->handed[12].answered = true;
    keel_sessions_stat(f->ss, &st);
    assert_true(st.output_bytes <= 8 * MIB);
    assert_int_equal(st.inflight, 0);
    spin(f, 50);
    assert_int_equal(f->n_closed, 1);
    assert_true(was_closed(f, sa));
    assert_int_equal(f->out.backlog(f->out.ctx, sc, &unread), 0); /* the other one lives */
    assert_true(unread <= 8 * MIB);

    /* A client that reads is still served. */
    f->answer_bytes = 1024;
    int b = dial(f, 0);
    send_requests(b, true, 1, 1);
    assert_true(read_frame(f, b, 3000) > 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(max_inflight_is_hard, setup, teardown),
        cmocka_unit_test_setup_teardown(max_inflight_total_is_global, setup, teardown),
        cmocka_unit_test_setup_teardown(pressure_holds_every_session, setup, teardown),
        cmocka_unit_test_setup_teardown(unread_output_stops_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(output_bound_cuts_off_the_biggest, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
