/*
 * gateway/grpcwire.c on bytes alone: the gRPC message deframer across every split of its input,
 * its size bound, the prefix writer, grpc-message percent-encoding and grpc-timeout parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpcwire.h"

/* Three messages back to back: "hello", empty, 300 bytes (a length over one byte). */
static size_t build_stream(uint8_t *out, uint8_t *big)
{
    size_t n = 0;
    gw_grpc_prefix(out + n, false, 5);
    n += 5;
    memcpy(out + n, "hello", 5);
    n += 5;
    gw_grpc_prefix(out + n, false, 0);
    n += 5;
    gw_grpc_prefix(out + n, true, 300);
    n += 5;
    for (int i = 0; i < 300; i++)
        big[i] = (uint8_t)(i * 7);
    memcpy(out + n, big, 300);
    n += 300;
    return n;
}

struct got {
    size_t n;
    size_t len[4];
    bool compressed[4];
    uint8_t body[4][300];
};

/* Feed p[0..n) as one chunk; record every message. */
static void feed(struct gw_deframer *d, const uint8_t *p, size_t n, struct got *g)
{
    int guard = 0;
    while (n > 0) {
        assert_true(++guard < 100);
        size_t used;
        enum gw_deframe r = gw_deframer_feed(d, p, n, &used);
        assert_true(used <= n);
        p += used;
        n -= used;
        if (r == GW_DEFRAME_MORE) {
            assert_int_equal(n, 0);
            return;
        }
        assert_int_equal(r, GW_DEFRAME_MESSAGE);
        assert_true(g->n < 4);
        size_t len;
        bool comp;
        const uint8_t *body = gw_deframer_message(d, &len, &comp);
        g->len[g->n] = len;
        g->compressed[g->n] = comp;
        if (len)
            memcpy(g->body[g->n], body, len);
        g->n++;
        gw_deframer_next(d);
    }
}

static void check_got(const struct got *g, const uint8_t *big)
{
    assert_int_equal(g->n, 3);
    assert_int_equal(g->len[0], 5);
    assert_memory_equal(g->body[0], "hello", 5);
    assert_false(g->compressed[0]);
    assert_int_equal(g->len[1], 0);
    assert_int_equal(g->len[2], 300);
    assert_true(g->compressed[2]);
    assert_memory_equal(g->body[2], big, 300);
}

/* Every single split point, and every pair of split points. */
static void test_deframer_splits(void **state)
{
    (void)state;
    uint8_t wire[400], big[300];
    size_t n = build_stream(wire, big);
    for (size_t i = 0; i <= n; i++) {
        struct gw_deframer d;
        gw_deframer_init(&d, 1000);
        struct got g = {0};
        feed(&d, wire, i, &g);
        feed(&d, wire + i, n - i, &g);
        check_got(&g, big);
        assert_false(gw_deframer_partial(&d));
        gw_deframer_free(&d);
    }
    for (size_t i = 0; i <= n; i += 3)
        for (size_t j = i; j <= n; j += 5) {
            struct gw_deframer d;
            gw_deframer_init(&d, 1000);
            struct got g = {0};
            feed(&d, wire, i, &g);
            feed(&d, wire + i, j - i, &g);
            feed(&d, wire + j, n - j, &g);
            check_got(&g, big);
            gw_deframer_free(&d);
        }
    /* One byte at a time. */
    struct gw_deframer d;
    gw_deframer_init(&d, 1000);
    struct got g = {0};
    for (size_t i = 0; i < n; i++)
        feed(&d, wire + i, 1, &g);
    check_got(&g, big);
    gw_deframer_free(&d);
}

static void test_deframer_partial_and_buffered(void **state)
{
    (void)state;
    uint8_t wire[400], big[300];
    build_stream(wire, big);
    struct gw_deframer d;
    gw_deframer_init(&d, 1000);
    assert_false(gw_deframer_partial(&d));
    size_t used;
    assert_int_equal(gw_deframer_feed(&d, wire, 3, &used), GW_DEFRAME_MORE);
    assert_true(gw_deframer_partial(&d));
    assert_int_equal(gw_deframer_buffered(&d), 0);
    /* The 300-byte message split: its body is gathered (300 bytes held). */
    gw_deframer_free(&d);
    gw_deframer_init(&d, 1000);
    const uint8_t *m3 = wire + 15;
    assert_int_equal(gw_deframer_feed(&d, m3, 100, &used), GW_DEFRAME_MORE);
    assert_int_equal(used, 100);
    assert_int_equal(gw_deframer_buffered(&d), 300);
    assert_true(gw_deframer_partial(&d));
    gw_deframer_free(&d); /* mid-message: nothing leaks (LSan) */
}

static void test_deframer_oversize(void **state)
{
    (void)state;
    uint8_t hdr[5];
    struct gw_deframer d;
    size_t used;
    /* Exactly the bound passes the header check... */
    gw_deframer_init(&d, 64);
    gw_grpc_prefix(hdr, false, 64);
    assert_int_equal(gw_deframer_feed(&d, hdr, 5, &used), GW_DEFRAME_MORE);
    assert_int_equal(used, 5);
    gw_deframer_free(&d);
    /* ...one over is refused as soon as the prefix is complete, nothing allocated. */
    gw_deframer_init(&d, 64);
    gw_grpc_prefix(hdr, false, 65);
    assert_int_equal(gw_deframer_feed(&d, hdr, 2, &used), GW_DEFRAME_MORE);
    assert_int_equal(gw_deframer_feed(&d, hdr + 2, 3, &used), GW_DEFRAME_TOO_LARGE);
    assert_int_equal(gw_deframer_buffered(&d), 0);
    gw_deframer_free(&d);
    /* 4 GiB - 1 announced. */
    gw_deframer_init(&d, 1536 * 1024);
    gw_grpc_prefix(hdr, false, 0xffffffffu);
    assert_int_equal(gw_deframer_feed(&d, hdr, 5, &used), GW_DEFRAME_TOO_LARGE);
    gw_deframer_free(&d);
}

static void test_prefix(void **state)
{
    (void)state;
    uint8_t p[5];
    gw_grpc_prefix(p, false, 10);
    assert_memory_equal(p, "\x00\x00\x00\x00\x0a", 5);
    gw_grpc_prefix(p, true, 0x01020304);
    assert_memory_equal(p, "\x01\x01\x02\x03\x04", 5);
    gw_grpc_prefix(p, false, 0);
    assert_memory_equal(p, "\x00\x00\x00\x00\x00", 5);
}

static void expect_encoded(const char *in, size_t max, const char *want)
{
    char *s = gw_grpc_message_encode(in, max);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
}

static void test_percent_encoding(void **state)
{
    (void)state;
    expect_encoded("etcdserver: mvcc: required revision has been compacted", 4096,
                   "etcdserver: mvcc: required revision has been compacted");
    expect_encoded("100% done", 4096, "100%25 done");
    expect_encoded("a\nb\tc", 4096, "a%0Ab%09c");
    expect_encoded("caf\xc3\xa9", 4096, "caf%C3%A9");
    expect_encoded("\x7f~ ", 4096, "%7F~ ");
    expect_encoded("", 4096, "");
    expect_encoded(NULL, 4096, "");
    expect_encoded("abcdef", 3, "abc"); /* cut at max_in */
}

static void expect_timeout(const char *v, uint32_t want)
{
    uint32_t ms = 12345;
    assert_int_equal(gw_grpc_timeout_parse(v, strlen(v), &ms), 0);
    assert_int_equal(ms, want);
}

static void expect_bad_timeout(const char *v)
{
    uint32_t ms = 12345;
    assert_int_equal(gw_grpc_timeout_parse(v, strlen(v), &ms), -1);
    assert_int_equal(ms, 12345);
}

static void test_timeout(void **state)
{
    (void)state;
    expect_timeout("4998279u", 4999); /* etcdctl's (obs): rounded up */
    expect_timeout("1H", 3600000);
    expect_timeout("2M", 120000);
    expect_timeout("3S", 3000);
    expect_timeout("250m", 250);
    expect_timeout("1000u", 1);
    expect_timeout("1001u", 2);
    expect_timeout("1n", 1);
    expect_timeout("999999n", 1);
    expect_timeout("2000001n", 3);
    expect_timeout("0S", 1);                 /* already expired: still a deadline */
    expect_timeout("99999999H", UINT32_MAX); /* clamped */
    expect_timeout("99999999m", 99999999);
    expect_bad_timeout("");
    expect_bad_timeout("S");
    expect_bad_timeout("10");
    expect_bad_timeout("10s"); /* lower-case s is not a unit */
    expect_bad_timeout("10x");
    expect_bad_timeout("-1S");
    expect_bad_timeout("1 S");
    expect_bad_timeout("123456789S"); /* nine digits */
    expect_bad_timeout("1.5S");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deframer_splits),
        cmocka_unit_test(test_deframer_partial_and_buffered),
        cmocka_unit_test(test_deframer_oversize),
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_percent_encoding),
        cmocka_unit_test(test_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
