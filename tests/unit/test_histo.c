/*
 * server/histo.h (fixed buckets on atomics), the exposition of a histogram (server/expose.h) and
 * the log's rate limit (server/log.h): bucket boundaries, cumulative reads, threads observing at
 * once, the text Prometheus reads, and the bound on lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expose.h"
#include "histo.h"
#include "log.h"

static void init_refuses_bad_layouts(void **state)
{
    (void)state;
    struct keel_histo h;
    assert_int_equal(keel_histo_init_exp(&h, 0.001, 2, 0), -1);
    assert_int_equal(keel_histo_init_exp(&h, 0.001, 2, KEEL_HISTO_MAX + 1), -1);
    assert_int_equal(keel_histo_init_exp(&h, 0, 2, 4), -1);
    assert_int_equal(keel_histo_init_exp(&h, -1, 2, 4), -1);
    assert_int_equal(keel_histo_init_exp(&h, 0.001, 1, 4), -1);
    assert_int_equal(keel_histo_init_exp(&h, 0.001, 2, 14), 0);
    assert_int_equal(h.n, 14);
    assert_true(h.bounds[0] == 0.001);
    assert_true(h.bounds[13] > 8.19 && h.bounds[13] < 8.2); /* etcd's 0.001 * 2^13 */
}

/* An observation at a bound counts in that bucket (le: less or equal); above the last, +Inf. */
static void buckets_and_sum(void **state)
{
    (void)state;
    struct keel_histo h;
    assert_int_equal(keel_histo_init_exp(&h, 0.001, 10, 3), 0); /* 1 ms, 10 ms, 100 ms */
    struct keel_histo_read r;
    keel_histo_read(&h, &r);
    assert_int_equal(r.count, 0);
    assert_true(r.sum == 0);
    keel_histo_observe_ns(&h, 0);          /* le 0.001 */
    keel_histo_observe_ns(&h, 1000000);    /* exactly 1 ms: le 0.001 */
    keel_histo_observe_ns(&h, 1000001);    /* le 0.01 */
    keel_histo_observe_ns(&h, 50000000);   /* le 0.1 */
    keel_histo_observe_ns(&h, 2000000000); /* +Inf */
    keel_histo_read(&h, &r);
    assert_int_equal(r.cumulative[0], 2);
    assert_int_equal(r.cumulative[1], 3);
    assert_int_equal(r.cumulative[2], 4);
    assert_int_equal(r.cumulative[3], 5);
    assert_int_equal(r.count, 5);
    assert_true(r.sum > 2.052 && r.sum < 2.0521);
}

struct worker {
    struct keel_histo *h;
    int n;
};

static void *observe_many(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->n; i++)
        keel_histo_observe_ns(w->h, (uint64_t)(i % 7) * 300000); /* 0 .. 1.8 ms */
    return NULL;
}

/* Threads observing while another reads: no observation lost, and every read is cumulative with
 * +Inf equal to its count. */
static void threads_lose_nothing(void **state)
{
    (void)state;
    struct keel_histo h;
    assert_int_equal(keel_histo_init_exp(&h, 0.0001, 2, 20), 0);
    enum { THREADS = 4, EACH = 100000 };
    pthread_t t[THREADS];
    struct worker w = {&h, EACH};
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, observe_many, &w), 0);
    for (int reads = 0; reads < 1000; reads++) {
        struct keel_histo_read r;
        keel_histo_read(&h, &r);
        for (unsigned b = 1; b <= h.n; b++)
            assert_true(r.cumulative[b] >= r.cumulative[b - 1]);
        assert_int_equal(r.cumulative[h.n], r.count);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    struct keel_histo_read r;
    keel_histo_read(&h, &r);
    assert_int_equal(r.count, (uint64_t)THREADS * EACH);
    /* sum of (i % 7) * 0.3 ms over each thread's run, exactly (integer nanoseconds) */
    uint64_t ns = 0;
    for (int i = 0; i < EACH; i++)
        ns += (uint64_t)(i % 7) * 300000;
    assert_true(r.sum == (double)(ns * THREADS) / 1e9);
}

static void exposition_text(void **state)
{
    (void)state;
    struct keel_histo h;
    assert_int_equal(keel_histo_init_exp(&h, 0.5, 2, 2), 0); /* 0.5 s, 1 s */
    keel_histo_observe_ns(&h, 250000000);
    keel_histo_observe_ns(&h, 3000000000);
    struct keel_expose_text t = {0};
    keel_expose_histo(&t, "x_seconds", "What x took.", "op=\"put\"", &h);
    keel_expose_histo(&t, "x_seconds", NULL, "op=\"get\"", &h);
    keel_expose_histo(&t, "y_seconds", "Y.", "", &h);
    assert_false(t.failed);
    assert_string_equal(t.p, "# HELP x_seconds What x took.\n"
                             "# TYPE x_seconds histogram\n"
                             "x_seconds_bucket{op=\"put\",le=\"0.5\"} 1\n"
                             "x_seconds_bucket{op=\"put\",le=\"1\"} 1\n"
                             "x_seconds_bucket{op=\"put\",le=\"+Inf\"} 2\n"
                             "x_seconds_sum{op=\"put\"} 3.25\n"
                             "x_seconds_count{op=\"put\"} 2\n"
                             "x_seconds_bucket{op=\"get\",le=\"0.5\"} 1\n"
                             "x_seconds_bucket{op=\"get\",le=\"1\"} 1\n"
                             "x_seconds_bucket{op=\"get\",le=\"+Inf\"} 2\n"
                             "x_seconds_sum{op=\"get\"} 3.25\n"
                             "x_seconds_count{op=\"get\"} 2\n"
                             "# HELP y_seconds Y.\n"
                             "# TYPE y_seconds histogram\n"
                             "y_seconds_bucket{le=\"0.5\"} 1\n"
                             "y_seconds_bucket{le=\"1\"} 1\n"
                             "y_seconds_bucket{le=\"+Inf\"} 2\n"
                             "y_seconds_sum 3.25\n"
                             "y_seconds_count 2\n");
    keel_expose_text_free(&t);
}

/* per_sec lines in a second, then refusals counted; the count comes with the next line allowed
 * in a later second. */
static void log_limit(void **state)
{
    (void)state;
    struct keel_log_limit l = {.per_sec = 3};
    uint64_t left_out = 99;
    for (int i = 0; i < 3; i++) {
        assert_true(keel_log_limit_take(&l, &left_out));
        assert_int_equal(left_out, 0);
    }
    for (int i = 0; i < 50; i++)
        assert_false(keel_log_limit_take(&l, &left_out));
    /* A second later: allowed again, with the count of those left out. */
    l.window_ns -= 1000000001ull;
    assert_true(keel_log_limit_take(&l, &left_out));
    assert_int_equal(left_out, 50);
    assert_true(keel_log_limit_take(&l, &left_out));
    assert_int_equal(left_out, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_refuses_bad_layouts),
        cmocka_unit_test(buckets_and_sum),
        cmocka_unit_test(threads_lose_nothing),
        cmocka_unit_test(exposition_text),
        cmocka_unit_test(log_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
