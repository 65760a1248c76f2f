/*
 * keel-netsim's scheduling core (release times, per-flow order, loss, the memory cap, flow keys),
 * without a netfilter queue: these run anywhere, unlike tests/zones/, which need root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define NETSIM_NO_MAIN
#include "../../bench/netsim.c"

#define MS 1000000ULL

/* A minimal IPv4 header + ports, enough for ns_flow_slot. */
static size_t make_pkt(uint8_t *p, uint8_t proto, uint32_t src, uint32_t dst, uint16_t sport,
                       uint16_t dport)
{
    memset(p, 0, 24);
    p[0] = 0x45;
    p[9] = proto;
    for (int i = 0; i < 4; i++) {
        p[12 + i] = (uint8_t)(src >> (24 - 8 * i));
        p[16 + i] = (uint8_t)(dst >> (24 - 8 * i));
    }
    p[20] = (uint8_t)(sport >> 8);
    p[21] = (uint8_t)sport;
    p[22] = (uint8_t)(dport >> 8);
    p[23] = (uint8_t)dport;
    return 24;
}

static void test_fifo_without_jitter(void **state)
{
    (void)state;
    struct ns_sched s;
    assert_int_equal(ns_sched_init(&s, 5000, 2 * MS, 0, 0.0, 1), 0);
    assert_true(ns_sched_next(&s) == UINT64_MAX);
    /* Several flows interleaved, arriving 1us apart: with a fixed delay nothing may reorder. */
    for (uint32_t i = 0; i < 4000; i++)
        assert_int_equal(ns_sched_admit(&s, 1000 + i * 1000ULL, i, i % 7), NS_QUEUED);
    assert_int_equal(s.max_held, 4000);
    assert_true(ns_sched_next(&s) == 1000 + 2 * MS);

    struct ns_entry e;
    assert_false(ns_sched_pop_due(&s, 1000 + 2 * MS - 1, &e));
    for (uint32_t i = 0; i < 4000; i++) {
        assert_true(ns_sched_pop_due(&s, UINT64_MAX - 1, &e));
        assert_int_equal(e.id, i);
        assert_true(e.release_ns == 1000 + i * 1000ULL + 2 * MS);
    }
    assert_false(ns_sched_pop_due(&s, UINT64_MAX, &e));
    assert_int_equal(s.delayed, 4000);
    ns_sched_free(&s);
}

static void test_jitter_keeps_flow_order(void **state)
{
    (void)state;
    struct ns_sched s;
    const uint64_t d = 1 * MS, j = 500000; /* ±0.5ms, far more than the 10us spacing */
    assert_int_equal(ns_sched_init(&s, 20000, d, j, 0.0, 42), 0);
    enum { FLOWS = 4, N = 8000 };
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(ns_sched_admit(&s, i * 10000ULL, i, i % FLOWS), NS_QUEUED);

    uint32_t last_id[FLOWS];
    uint64_t last_rel = 0;
    bool seen[FLOWS] = {false};
    bool reordered_across_flows = false;
    uint32_t prev_id = 0;
    struct ns_entry e;
    for (uint32_t k = 0; k < N; k++) {
        assert_true(ns_sched_pop_due(&s, UINT64_MAX, &e));
        uint32_t f = e.id % FLOWS;
        uint64_t arrival = e.id * 10000ULL;
        /* Each packet's own draw is within ±j; waiting behind its flow may only add to it. */
        assert_true(e.scheduled_ns >= arrival + d - j && e.scheduled_ns <= arrival + d + j);
        assert_true(e.release_ns >= e.scheduled_ns);
        if (seen[f])
            assert_true(e.id > last_id[f]);
        seen[f] = true;
        last_id[f] = e.id;
        assert_true(e.release_ns >= last_rel); /* the heap hands them out in time order */
        last_rel = e.release_ns;
        if (k > 0 && e.id < prev_id)
            reordered_across_flows = true;
        prev_id = e.id;
    }
    /* Different flows are independent, so jitter does reorder between them. */
    assert_true(reordered_across_flows);
    ns_sched_free(&s);
}

static void test_jitter_is_uniform_around_delay(void **state)
{
    (void)state;
    struct ns_sched s;
    const uint64_t d = 5 * MS, j = 1 * MS;
    assert_int_equal(ns_sched_init(&s, 100000, d, j, 0.0, 7), 0);
    enum { N = 40000 };
    double sum = 0;
    uint64_t lo = UINT64_MAX, hi = 0;
    struct ns_entry e;
    for (uint32_t i = 0; i < N; i++) {
        /* Arrivals 1ms apart in one flow: never pushed back by the previous packet. */
        ns_sched_admit(&s, i * 3 * MS, i, 0);
        assert_true(ns_sched_pop_due(&s, UINT64_MAX, &e));
        uint64_t got = e.release_ns - i * 3 * MS;
        sum += (double)got;
        lo = got < lo ? got : lo;
        hi = got > hi ? got : hi;
    }
    double mean = sum / N;
    assert_true(mean > (double)d * 0.99 && mean < (double)d * 1.01);
    assert_true(lo >= d - j && lo < d - j + j / 50);
    assert_true(hi <= d + j && hi > d + j - j / 50);
    ns_sched_free(&s);
}

static void test_loss_rate_and_seed(void **state)
{
    (void)state;
    struct ns_sched a, b;
    assert_int_equal(ns_sched_init(&a, 10, MS, 0, 0.25, 99), 0);
    assert_int_equal(ns_sched_init(&b, 10, MS, 0, 0.25, 99), 0);
    enum { N = 100000 };
    struct ns_entry e;
    for (uint32_t i = 0; i < N; i++) {
        enum ns_admit ra = ns_sched_admit(&a, i, i, 0), rb = ns_sched_admit(&b, i, i, 0);
        assert_int_equal(ra, rb); /* same seed, same losses */
        while (ns_sched_pop_due(&a, UINT64_MAX, &e) || ns_sched_pop_due(&b, UINT64_MAX, &e))
            ;
    }
    assert_int_equal(a.received, N);
    assert_true(a.lost > N * 24 / 100 && a.lost < N * 26 / 100);
    assert_int_equal(a.lost + a.delayed, N);
    ns_sched_free(&a);
    ns_sched_free(&b);

    assert_int_equal(ns_sched_init(&a, 10, MS, 0, 1.0, 1), 0);
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(ns_sched_admit(&a, i, i, 0), NS_LOSE);
    ns_sched_free(&a);
    assert_int_equal(ns_sched_init(&a, 2000, MS, 0, 0.0, 1), 0);
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(ns_sched_admit(&a, i, i, 0), NS_QUEUED);
    ns_sched_free(&a);
    assert_int_equal(ns_sched_init(&a, 10, MS, 0, 1.5, 1), -1);
    assert_int_equal(ns_sched_init(&a, 0, MS, 0, 0.0, 1), -1);
}

static void test_cap_overflows_to_accept(void **state)
{
    (void)state;
    struct ns_sched s;
    assert_int_equal(ns_sched_init(&s, 3, MS, 0, 0.0, 1), 0);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(ns_sched_admit(&s, i, i, i), NS_QUEUED);
    assert_int_equal(ns_sched_admit(&s, 3, 3, 3), NS_OVERFLOW);
    assert_int_equal(s.overflow, 1);
    struct ns_entry e;
    assert_true(ns_sched_pop_due(&s, MS, &e));
    assert_int_equal(e.id, 0);
    assert_int_equal(ns_sched_admit(&s, 4, 4, 4), NS_QUEUED);
    assert_int_equal(s.max_held, 3);
    ns_sched_free(&s);
}

static void test_flow_slots(void **state)
{
    (void)state;
    uint8_t p[64], q[64];
    uint32_t a = 0x7f006501, b = 0x7f006601;
    size_t n = make_pkt(p, 6, a, b, 40000, 2380);
    make_pkt(q, 6, a, b, 40000, 2380);
    assert_int_equal(ns_flow_slot(p, n), ns_flow_slot(q, n));
    /* Distinct connections mostly get distinct slots. */
    int same = 0;
    for (uint16_t port = 1; port <= 200; port++) {
        make_pkt(q, 6, a, b, (uint16_t)(40000 + port), 2380);
        same += ns_flow_slot(q, n) == ns_flow_slot(p, n);
    }
    assert_true(same <= 2);
    /* Ports are not read past the captured bytes, and non-first fragments ignore them. */
    assert_true(ns_flow_slot(p, 20) < NS_FLOW_SLOTS);
    make_pkt(q, 6, a, b, 1, 2);
    q[7] = 8; /* fragment offset != 0: bytes 20.. are payload, not ports */
    uint32_t f1 = ns_flow_slot(q, n);
    make_pkt(q, 6, a, b, 3, 4);
    q[7] = 8;
    assert_int_equal(f1, ns_flow_slot(q, n));
    /* Junk and truncated headers fall back to slot 0 instead of reading out of bounds. */
    uint8_t junk[3] = {0x45, 0, 0};
    assert_int_equal(ns_flow_slot(junk, sizeof(junk)), 0);
    assert_int_equal(ns_flow_slot(junk, 0), 0);
    junk[0] = 0x10;
    assert_int_equal(ns_flow_slot(junk, sizeof(junk)), 0);
}

static void test_wake_estimate_is_a_robust_median(void **state)
{
    (void)state;
    struct ns_wake w;
    memset(&w, 0, sizeof(w));
    assert_true(w.estimate_ns == 0);
    /* Steady 100us lateness with a few long stalls among them: the stalls do not move it. */
    for (int i = 0; i < 100; i++)
        ns_wake_add(&w, i % 10 == 3 ? 5 * MS : 100000);
    assert_true(w.estimate_ns == 100000);
    /* One huge sample is capped, and cannot drag the estimate alone. */
    ns_wake_add(&w, 60ULL * 1000 * MS);
    assert_true(w.estimate_ns == 100000);
    for (unsigned i = 0; i < NS_WAKE_SAMPLES; i++)
        assert_true(w.ring[i] <= NS_WAKE_MAX_NS);
    /* The machine gets busier: the estimate follows once most of the window says so. */
    for (int i = 0; i < NS_WAKE_SAMPLES; i++)
        ns_wake_add(&w, 100000);
    for (int i = 0; i < NS_WAKE_SAMPLES / 2; i++)
        ns_wake_add(&w, 300000);
    assert_true(w.estimate_ns == 100000);
    ns_wake_add(&w, 300000);
    assert_true(w.estimate_ns == 300000);
    /* Few samples: the median of what there is. */
    struct ns_wake f;
    memset(&f, 0, sizeof(f));
    ns_wake_add(&f, 30);
    ns_wake_add(&f, 10);
    ns_wake_add(&f, 20);
    assert_true(f.estimate_ns == 20);
}

static void test_parse_num(void **state)
{
    (void)state;
    double v;
    assert_int_equal(ns_parse_num("1000", 1e6, &v), 0);
    assert_true(v == 1000.0);
    assert_int_equal(ns_parse_num("0.5", 100, &v), 0);
    assert_true(v == 0.5);
    assert_int_equal(ns_parse_num("", 100, &v), -1);
    assert_int_equal(ns_parse_num("12x", 100, &v), -1);
    assert_int_equal(ns_parse_num("-1", 100, &v), -1);
    assert_int_equal(ns_parse_num("101", 100, &v), -1);
    assert_int_equal(ns_parse_num("nan", 100, &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_without_jitter),
        cmocka_unit_test(test_jitter_keeps_flow_order),
        cmocka_unit_test(test_jitter_is_uniform_around_delay),
        cmocka_unit_test(test_loss_rate_and_seed),
        cmocka_unit_test(test_cap_overflows_to_accept),
        cmocka_unit_test(test_flow_slots),
        cmocka_unit_test(test_wake_estimate_is_a_robust_median),
        cmocka_unit_test(test_parse_num),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
