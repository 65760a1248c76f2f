/*
 * keel-bench's statistics: exact nearest-rank percentiles of known samples, the summary and the
 * error tally.
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

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(percentiles_of_one_to_hundred),
                                       cmocka_unit_test(skewed_sample),
                                       cmocka_unit_test(empty_and_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
