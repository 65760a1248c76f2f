/*
 * keel-bench's statistics: exact nearest-rank percentiles of known samples, the summary and the
 * error tally; lease-churn's helpers: the write-stall gap, its keys and the expiry lag.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

static void percentiles_of_one_to_hundred(void **state)
{
    (void)state;
    struct keel_stats s;
    keel_stats_init(&s);
    /* 1..100 ms, added in a scrambled order: sorting is the stats' job */
    for (int i = 0; i < 100; i++)
        assert_int_equal(keel_stats_add(&s, ((i * 37) % 100 + 1) / 1000.0), 0);
    assert_true(fabs(keel_stats_percentile(&s, 50) - 0.050) < 1e-12);
    assert_true(fabs(keel_stats_percentile(&s, 90) - 0.090) < 1e-12);
    assert_true(fabs(keel_stats_percentile(&s, 99) - 0.099) < 1e-12);
    assert_true(fabs(keel_stats_percentile(&s, 99.9) - 0.100) < 1e-12);
    assert_true(fabs(keel_stats_percentile(&s, 10) - 0.010) < 1e-12);
    assert_true(fabs(keel_stats_percentile(&s, 100) - 0.100) < 1e-12);
    struct keel_stats_summary sum;
    keel_stats_summarize(&s, 2.0, &sum);
    assert_int_equal(sum.n, 100);
    assert_true(fabs(sum.rps - 50.0) < 1e-9);
    assert_true(fabs(sum.fastest - 0.001) < 1e-12);
    assert_true(fabs(sum.slowest - 0.100) < 1e-12);
    assert_true(fabs(sum.average - 0.0505) < 1e-12);
    /* population stddev of 1..100 is sqrt((100^2 - 1) / 12) */
    assert_true(fabs(sum.stddev - sqrt(9999.0 / 12.0) / 1000.0) < 1e-12);
    assert_true(fabs(sum.p[2] - 0.050) < 1e-12);
    assert_true(fabs(sum.p[7] - 0.100) < 1e-12);
    keel_stats_close(&s);
}

static void skewed_sample(void **state)
{
    (void)state;
    /* 999 fast requests and one slow one: only p99.9 and above see it */
    struct keel_stats s;
    keel_stats_init(&s);
    for (int i = 0; i < 999; i++)
        keel_stats_add(&s, 0.001);
    keel_stats_add(&s, 1.0);
    assert_true(fabs(keel_stats_percentile(&s, 99) - 0.001) < 1e-12);
    assert_true(fabs(keel_stats_percentile(&s, 99.9) - 0.001) < 1e-12);
    assert_true(fabs(keel_stats_percentile(&s, 99.95) - 1.0) < 1e-12);
    keel_stats_close(&s);
}

static void empty_and_errors(void **state)
{
    (void)state;
    struct keel_stats s;
    keel_stats_init(&s);
    assert_true(keel_stats_percentile(&s, 50) == 0);
    struct keel_stats_summary sum;
    keel_stats_summarize(&s, 1.0, &sum);
    assert_int_equal(sum.n, 0);
    keel_stats_error(&s, 2);
    keel_stats_error(&s, 2);
    keel_stats_error(&s, 14);
    keel_stats_error(&s, 1000); /* an unknown code lands in the last slot */
    assert_int_equal(s.n_errors, 4);
    assert_int_equal(s.errors[2], 2);
    assert_int_equal(s.errors[14], 1);
    assert_int_equal(s.errors[63], 1);
    /* the report prints without samples, into a memory stream */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    keel_stats_print(&s, &sum, f);
    fclose(f);
    assert_non_null(strstr(buf, "Error distribution"));
    free(buf);
    keel_stats_close(&s);
}

#define MS 1000000ull

static void stall_gap(void **state)
{
    (void)state;
    struct keel_gap g;
    keel_gap_init(&g);
    /* before the window: a long pause is not counted */
    keel_gap_mark(&g, 1000 * MS);
    keel_gap_mark(&g, 5000 * MS);
    assert_int_equal(g.max_ns, 0);
    /* the window opens 2 ms after the last completion: counted from the open */
    keel_gap_open(&g, 5002 * MS);
    keel_gap_mark(&g, 5010 * MS);
    assert_int_equal(g.max_ns, 8 * MS);
    keel_gap_mark(&g, 5011 * MS);
    keel_gap_mark(&g, 5311 * MS); /* a 300 ms stall */
    keel_gap_mark(&g, 5312 * MS);
    assert_int_equal(g.max_ns, 300 * MS);
    /* a clock read out of order never makes a huge gap */
    keel_gap_mark(&g, 5200 * MS);
    assert_int_equal(g.max_ns, 300 * MS);
    /* a writer stuck at the end: the close counts the tail */
    keel_gap_close(&g, 5812 * MS);
    assert_int_equal(g.max_ns, 500 * MS);
    /* after the close nothing counts */
    keel_gap_mark(&g, 9000 * MS);
    assert_int_equal(g.max_ns, 500 * MS);

    /* a window with no completion at all: its whole length is the stall */
    keel_gap_init(&g);
    keel_gap_open(&g, 100 * MS);
    keel_gap_close(&g, 350 * MS);
    assert_int_equal(g.max_ns, 250 * MS);
}

static void lease_keys(void **state)
{
    (void)state;
    const char *prefix = "kbench-lease/1f/";
    char key[64];
    int n = keel_lease_key(key, sizeof(key), prefix, 0);
    assert_string_equal(key, "kbench-lease/1f/00000000");
    assert_int_equal(n, (int)strlen(key));
    assert_int_equal(keel_lease_key_index(key, (size_t)n, prefix), 0);
    n = keel_lease_key(key, sizeof(key), prefix, 9999);
    assert_string_equal(key, "kbench-lease/1f/0000270f");
    assert_int_equal(keel_lease_key_index(key, (size_t)n, prefix), 9999);
    n = keel_lease_key(key, sizeof(key), prefix, 0x123456789aull);
    assert_int_equal(keel_lease_key_index(key, (size_t)n, prefix), 0x123456789a);
    /* not ours: another prefix, the stall writer's key, too short, not hex, too long */
    assert_int_equal(keel_lease_key_index("kbench-lease/20/0000270f", 24, prefix), -1);
    assert_int_equal(keel_lease_key_index("kbench-lease/1f/stall", 21, prefix), -1);
    assert_int_equal(keel_lease_key_index("kbench-lease/1f/0000270", 23, prefix), -1);
    assert_int_equal(keel_lease_key_index("kbench-lease/1f/0000270F", 24, prefix), -1);
    assert_int_equal(keel_lease_key_index("kbench-lease/1f/00000000000000000", 33, prefix), -1);
    assert_int_equal(keel_lease_key_index("kbench-lease/1f/ffffffffffffffff", 32, prefix), -1);
    /* the length given counts, not a NUL */
    assert_int_equal(keel_lease_key_index("kbench-lease/1f/0000000a-more", 24, prefix), 10);
}

static void expiry_lag(void **state)
{
    (void)state;
    /* acknowledged at 10 s with TTL 2: due at 12 s */
    assert_true(fabs(keel_expiry_lag(10000 * MS, 2, 12050 * MS) - 0.050) < 1e-9);
    /* the server's clock started before the acknowledgement: a DELETE 3 ms early is -3 ms, not a
     * wrapped unsigned difference */
    assert_true(fabs(keel_expiry_lag(10000 * MS, 2, 11997 * MS) + 0.003) < 1e-9);
    /* and even before the acknowledgement itself */
    assert_true(fabs(keel_expiry_lag(10000 * MS, 2, 9999 * MS) + 2.001) < 1e-9);
    /* a real monotonic clock's magnitude (days of uptime) keeps nanosecond precision */
    uint64_t ack = 864000ull * 1000 * MS + 123;
    assert_true(fabs(keel_expiry_lag(ack, 600, ack + 600000 * MS + 1000) - 1e-6) < 1e-12);
    /* lags feed the ordinary stats: negative samples sort first */
    struct keel_stats s;
    keel_stats_init(&s);
    keel_stats_add(&s, 0.050);
    keel_stats_add(&s, -0.003);
    keel_stats_add(&s, 0.010);
    assert_true(fabs(keel_stats_percentile(&s, 1) + 0.003) < 1e-12);
    assert_true(fabs(keel_stats_percentile(&s, 100) - 0.050) < 1e-12);
    keel_stats_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(percentiles_of_one_to_hundred),
                                       cmocka_unit_test(skewed_sample),
                                       cmocka_unit_test(empty_and_errors),
                                       cmocka_unit_test(stall_gap),
                                       cmocka_unit_test(lease_keys),
                                       cmocka_unit_test(expiry_lag)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
