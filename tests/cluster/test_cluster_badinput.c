/*
 * Bad input on the client port: an oversized frame, garbage bytes, a truncated frame and a
 * missing handshake each get an error reply and close only that connection, while another
 * client on the same member carries on. Raw sockets, so nothing in libkeel can hide a fault.
 * A bystander (tests/lib/bystander.h) writes and reads back its own key through libkeel on a
 * connection of its own for the whole group, and must see no error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bystander.h"
#include "cluster.h"
#include "err.h"
#include "frame.h"
#include "keel.pb-c.h"
#include "testutil.h"

static struct tc_cluster cl;
static struct tb_bystander *bystander;

static int dial(const char *addr)
{
    char host[32];
    snprintf(host, sizeof(host), "%s", addr);
    char *colon = strrchr(host, ':');
    *colon = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return fd;
        close(fd);
        usleep(50 * 1000);
    }
    fail_msg("cannot connect to %s", addr);
    return -1;
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may already have closed: that is what some tests expect */
        b += w;
        n -= (size_t)w;
    }
}

static void send_msg(int fd, const ProtobufCMessage *m)
{
    uint8_t buf[4096];
    assert_true(keel_frame_size(m) <= sizeof(buf));
    size_t n = keel_frame_pack(m, buf);
    send_all(fd, buf, n);
}

/* The next frame's payload (malloc'd) within 5 s; NULL at EOF. */
static uint8_t *read_frame(int fd, size_t *len)
{
    uint8_t hdr[4];
    size_t got = 0;
    uint8_t *payload = NULL;
    size_t want = 4;
    uint8_t *dst = hdr;
    for (int phase = 0; phase < 2; phase++) {
        while (got < want) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 5000) != 1)
                fail_msg("no reply within 5 s");
            ssize_t n = recv(fd, dst + got, want - got, 0);
            if (n <= 0) {
                free(payload);
                return NULL;
            }
            got += (size_t)n;
        }
        if (phase == 0) {
            want = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
            payload = malloc(want ? want : 1);
            dst = payload;
            got = 0;
        }
    }
    *len = want;
    return payload;
}

static void expect_eof(int fd)
{
    char c;
    struct pollfd p = {fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_int_equal(recv(fd, &c, 1, 0), 0);
}

static int hello(int fd)
{
    Keel__Hello h = KEEL__HELLO__INIT;
    h.protocol_version = 1;
    send_msg(fd, &h.base);
    size_t len;
    uint8_t *p = read_frame(fd, &len);
    assert_non_null(p);
    Keel__HelloResponse *hr = keel__hello_response__unpack(NULL, len, p);
    assert_non_null(hr);
    assert_null(hr->error);
    keel__hello_response__free_unpacked(hr, NULL);
    free(p);
    return fd;
}

/* The error code of the next reply, which must be an error response. */
static int expect_error(int fd)
{
    size_t len;
    uint8_t *p = read_frame(fd, &len);
    assert_non_null(p);
    Keel__Response *r = keel__response__unpack(NULL, len, p);
    assert_non_null(r);
    assert_non_null(r->error);
    assert_non_null(r->error->message);
    assert_true(strlen(r->error->message) > 0);
    int code = r->error->code;
    keel__response__free_unpacked(r, NULL);
    free(p);
    return code;
}

/* A status round trip on a healthy connection. */
static void status_ok(int fd, uint64_t id)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__StatusRequest sr = KEEL__STATUS_REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &sr;
    send_msg(fd, &req.base);
    size_t len;
    uint8_t *p = read_frame(fd, &len);
    assert_non_null(p);
    Keel__Response *r = keel__response__unpack(NULL, len, p);
    assert_non_null(r);
    assert_int_equal(r->id, id);
    assert_null(r->error);
    assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_STATUS);
    keel__response__free_unpacked(r, NULL);
    free(p);
}

static void send_snapshot_req(int fd, uint64_t id)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__SnapshotRequest sr = KEEL__SNAPSHOT_REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_SNAPSHOT;
    req.snapshot = &sr;
    send_msg(fd, &req.base);
}

/* Reads one snapshot stream's responses up to its last chunk; returns the bytes received. The
 * first response may also be the refusal of `refused` (0: none expected), which must come as
 * TOO_MANY_REQUESTS. */
static uint64_t read_stream(int fd, uint64_t id, uint64_t refused)
{
    uint64_t got = 0;
    bool saw_refusal = refused == 0;
    for (int i = 0; i < 10000; i++) {
        size_t len;
        uint8_t *p = read_frame(fd, &len);
        assert_non_null(p);
        Keel__Response *r = keel__response__unpack(NULL, len, p);
        assert_non_null(r);
        free(p);
        if (refused != 0 && r->id == refused) {
            assert_non_null(r->error);
            assert_int_equal(r->error->code, KEEL__ERROR_CODE__TOO_MANY_REQUESTS);
            assert_non_null(strstr(r->error->message, "already running"));
            saw_refusal = true;
            keel__response__free_unpacked(r, NULL);
            continue;
        }
        assert_int_equal(r->id, id);
        assert_null(r->error);
        assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_SNAPSHOT);
        got += r->snapshot->blob.len;
        bool last = r->snapshot->remaining_bytes == 0;
        keel__response__free_unpacked(r, NULL);
        if (last)
            break;
    }
    assert_true(saw_refusal);
    return got;
}

/* A checkpoint copy is the costliest request there is: one stream per member at a time (issue 9,
 * hole 6). A second request while one runs is refused, on the same session (where it used to
 * take over the first's callback and leak its file) as on another; once it ends, the next runs. */
static void snapshot_one_at_a_time(void **state)
{
    (void)state;
    int a = hello(dial(cl.m[1].client));
    int b = hello(dial(cl.m[1].client));
    /* Both in one write: the second arrives while the first is still being copied. */
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__SnapshotRequest sr = KEEL__SNAPSHOT_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_SNAPSHOT;
    req.snapshot = &sr;
    uint8_t buf[64];
    req.id = 1;
    size_t n = keel_frame_pack(&req.base, buf);
    req.id = 2;
    n += keel_frame_pack(&req.base, buf + n);
    send_all(a, buf, n);
    assert_true(read_stream(a, 1, 2) > 0);
    /* Ended: another session may have one now. */
    send_snapshot_req(b, 3);
    assert_true(read_stream(b, 3, 0) > 0);
    status_ok(a, 4);
    close(a);
    close(b);
}

static int setup(void **state)
{
    (void)state;
    tc_cluster_init(&cl, 1, "badinput");
    snprintf(cl.extra, sizeof(cl.extra), "--max-request-bytes 4096");
    tc_start_all(&cl);
    bystander = tb_start(&cl, 1, TB_WRITES);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (bystander != NULL)
        tb_stop(bystander);
    tc_cluster_close(&cl);
    return 0;
}

static void oversized_frame(void **state)
{
    (void)state;
    int good = hello(dial(cl.m[1].client));
    int bad = hello(dial(cl.m[1].client));
    uint8_t hdr[4] = {0x10, 0, 0, 0}; /* 256 MiB announced */
    send_all(bad, hdr, 4);
    assert_int_equal(expect_error(bad), KEEL__ERROR_CODE__FRAME_TOO_LARGE);
    expect_eof(bad);
    status_ok(good, 7);
    close(bad);
    close(good);
}

static void garbage_bytes(void **state)
{
    (void)state;
    int good = hello(dial(cl.m[1].client));
    int bad = hello(dial(cl.m[1].client));
    uint8_t junk[64];
    junk[0] = 0;
    junk[1] = 0;
    junk[2] = 0;
    junk[3] = 60;
    for (int i = 4; i < 64; i++)
        junk[i] = (uint8_t)(0xff - i); /* wire type 7 everywhere: no message decodes */
    send_all(bad, junk, sizeof(junk));
    assert_int_equal(expect_error(bad), KEEL__ERROR_CODE__BAD_FRAME);
    expect_eof(bad);
    status_ok(good, 8);
    close(bad);
    close(good);
}

static void truncated_frame(void **state)
{
    (void)state;
    int good = hello(dial(cl.m[1].client));
    int bad = hello(dial(cl.m[1].client));
    uint8_t part[10] = {0, 0, 0, 100, 8, 1, 0x5a}; /* 100 announced, 6 sent */
    send_all(bad, part, sizeof(part));
    shutdown(bad, SHUT_WR);
    assert_int_equal(expect_error(bad), KEEL__ERROR_CODE__BAD_FRAME);
    expect_eof(bad);
    status_ok(good, 9);
    close(bad);
    close(good);
}

static void no_handshake(void **state)
{
    (void)state;
    int good = hello(dial(cl.m[1].client));
    int bad = dial(cl.m[1].client);
    uint8_t junk[8] = {0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff};
    send_all(bad, junk, sizeof(junk));
    assert_int_equal(expect_error(bad), KEEL__ERROR_CODE__BAD_FRAME);
    expect_eof(bad);
    status_ok(good, 10);
    close(bad);
    close(good);
}

/*
 * protobuf-c takes a field number of 0 when its tag is spelled in two bytes (0x80 0x00) and keeps
 * it as an unknown field, but writes it back in one byte (0x00), which it then refuses to read.
 * A put carrying one went into the raft log as it came, and every member's storage writer,
 * unable to decode the committed entry, aborted, on every restart too (found by fuzz_frame).
 * Such a request must be refused as a frame that does not decode.
 */
static void tag_zero(void **state)
{
    (void)state;
    int good = hello(dial(cl.m[1].client));
    int bad = hello(dial(cl.m[1].client));
    /* Request {id 1, put {key "k", value "v", field 0 = 1}} */
    uint8_t frame[] = {0,    0,    0,    13,   0x08, 0x01, 0x5a, 0x09, 0x0a,
                       0x01, 0x6b, 0x12, 0x01, 0x76, 0x80, 0x00, 0x01};
    send_all(bad, frame, sizeof(frame));
    assert_int_equal(expect_error(bad), KEEL__ERROR_CODE__BAD_FRAME);
    expect_eof(bad);
    status_ok(good, 12);
    close(bad);
    close(good);
}

/* protobuf-c decodes nested messages recursively, with no limit: a request of 44 KB with 6,000
 * nested txns overflowed a member's stack. Nesting far past what validation allows is
 * refused before it is decoded, as a frame that does not decode (found reading protobuf-c while
 * fuzz_frame's first finding was looked into). */
static void deep_nesting(void **state)
{
    (void)state;
    int good = hello(dial(cl.m[1].client));
    int bad = hello(dial(cl.m[1].client));
    static uint8_t buf[4096];
    size_t len;
    const uint8_t *p = tu_nested_txns(buf + sizeof(buf), 500, &len);
    assert_true(len < sizeof(buf) - 4);
    uint8_t *frame = (uint8_t *)p - 4;
    frame[0] = (uint8_t)(len >> 24);
    frame[1] = (uint8_t)(len >> 16);
    frame[2] = (uint8_t)(len >> 8);
    frame[3] = (uint8_t)len;
    send_all(bad, frame, len + 4);
    assert_int_equal(expect_error(bad), KEEL__ERROR_CODE__BAD_FRAME);
    expect_eof(bad);
    status_ok(good, 13);
    close(bad);
    close(good);
}

static void member_survives(void **state)
{
    (void)state;
    /* After all of it, the member is still the same process and answers. */
    assert_true(cl.m[1].pid > 0);
    assert_int_equal(kill(cl.m[1].pid, 0), 0);
    status_ok(hello(dial(cl.m[1].client)), 11);
    /* And the bystander went on through all of it. */
    assert_true(tb_progress(bystander, 3, 20000));
    long rounds = tb_stop(bystander);
    bystander = NULL;
    print_message("bystander: %ld rounds, none failed\n", rounds);
    assert_true(rounds > 0);
}

static void member_stops_cleanly(void **state)
{
    (void)state;
    /* SIGTERM: a clean stop, exit status 0 (under ASan, also no leak). */
    int status = tc_stop(&cl, 1, SIGTERM);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(oversized_frame),
                                       cmocka_unit_test(garbage_bytes),
                                       cmocka_unit_test(truncated_frame),
                                       cmocka_unit_test(no_handshake),
                                       cmocka_unit_test(tag_zero),
                                       cmocka_unit_test(deep_nesting),
                                       cmocka_unit_test(snapshot_one_at_a_time),
                                       cmocka_unit_test(member_survives),
                                       cmocka_unit_test(member_stops_cleanly)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
