/*
 * The raft log's entry sizes by index (server/logbytes.h), against a brute-force model: a plain
 * array of every (index, len) added and not forgotten.
 *
 * Seeded random runs add entries with gaps in their indexes (barriers never reach the fsm),
 * forget prefixes and ask since and keep at random points, across the ring's wrap and growth
 * (odd runs hold thousands of entries); an index going backwards starts afresh. Replay a failure
 * with KEEL_SEED=<seed>.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logbytes.h"
#include "testutil.h"

struct model {
    uint64_t *index;
    uint64_t *len;
    size_t n, cap;
};

static void model_add(struct model *m, uint64_t index, uint64_t len)
{
    if (m->n > 0 && index <= m->index[m->n - 1])
        m->n = 0;
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->index = realloc(m->index, m->cap * sizeof(*m->index));
        m->len = realloc(m->len, m->cap * sizeof(*m->len));
        assert_non_null(m->index);
        assert_non_null(m->len);
    }
    m->index[m->n] = index;
    m->len[m->n] = len;
    m->n++;
}

static uint64_t model_since(const struct model *m, uint64_t index)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < m->n; i++)
        if (m->index[i] > index)
            sum += m->len[i];
    return sum;
}

/* keep's contract, spelled out: newest first, stop at the first entry that does not fit. */
static uint64_t model_keep(const struct model *m, uint64_t last, uint64_t budget)
{
    size_t k = m->n;
    while (k > 0 && m->index[k - 1] > last)
        k--;
    if (k == 0)
        return 0;
    uint64_t sum = 0;
    for (size_t i = k; i > 0; i--) {
        sum += m->len[i - 1];
        if (sum > budget)
            return last - m->index[i - 1];
    }
    return last - m->index[0] + 1;
}

static void model_forget(struct model *m, uint64_t upto)
{
    size_t k = 0;
    while (k < m->n && m->index[k] <= upto)
        k++;
    if (k == 0)
        return;
    memmove(m->index, m->index + k, (m->n - k) * sizeof(*m->index));
    memmove(m->len, m->len + k, (m->n - k) * sizeof(*m->len));
    m->n -= k;
}

static void edges(void **state)
{
    (void)state;
    struct keel_logbytes lb;
    keel_logbytes_init(&lb);
    assert_int_equal(keel_logbytes_since(&lb, 0), 0);
    assert_int_equal(keel_logbytes_keep(&lb, 10, 100), 0);
    keel_logbytes_forget(&lb, 5); /* nothing held: nothing happens */

    /* 10 weighs 100, 12 weighs 50, 13 weighs 200 (11 is a barrier: not held) */
    assert_int_equal(keel_logbytes_add(&lb, 10, 100), 0);
    assert_int_equal(keel_logbytes_add(&lb, 12, 50), 0);
    assert_int_equal(keel_logbytes_add(&lb, 13, 200), 0);
    assert_int_equal(keel_logbytes_since(&lb, 0), 350);
    assert_int_equal(keel_logbytes_since(&lb, 10), 250);
    assert_int_equal(keel_logbytes_since(&lb, 11), 250);
    assert_int_equal(keel_logbytes_since(&lb, 13), 0);
    /* everything fits: back to the oldest held */
    assert_int_equal(keel_logbytes_keep(&lb, 13, 1000), 4);
    /* 13 and 12 fit in 250, 10 does not: keep 11..13 */
    assert_int_equal(keel_logbytes_keep(&lb, 13, 250), 3);
    assert_int_equal(keel_logbytes_keep(&lb, 13, 349), 3);
    /* even 13 does not fit */
    assert_int_equal(keel_logbytes_keep(&lb, 13, 199), 0);
    /* a span ending at a barrier's index */
    assert_int_equal(keel_logbytes_keep(&lb, 11, 100), 2);
    assert_int_equal(keel_logbytes_keep(&lb, 11, 99), 1);
    assert_int_equal(keel_logbytes_keep(&lb, 9, 1000), 0);

    keel_logbytes_forget(&lb, 11);
    assert_int_equal(keel_logbytes_since(&lb, 0), 250);
    assert_int_equal(keel_logbytes_keep(&lb, 13, 1000), 2);

    /* going backwards starts afresh */
    assert_int_equal(keel_logbytes_add(&lb, 5, 7), 0);
    assert_int_equal(keel_logbytes_since(&lb, 0), 7);
    keel_logbytes_close(&lb);
}

static void matches_brute_force(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("logbytes");
    uint64_t rng = seed;
    for (int run = 0; run < 20; run++) {
        struct keel_logbytes lb;
        keel_logbytes_init(&lb);
        struct model m = {0};
        uint64_t index = 1 + tu_rand(&rng) % 5;
        for (int step = 0; step < 20000; step++) {
            uint64_t r = tu_rand(&rng) % 100;
            if (r < 70) {
                index += 1 + (tu_rand(&rng) % 8 == 0 ? tu_rand(&rng) % 3 : 0);
                uint64_t len = tu_rand(&rng) % 4 == 0 ? tu_rand(&rng) % (1u << 20)
                                                      : 8 * (1 + tu_rand(&rng) % 64);
                assert_int_equal(keel_logbytes_add(&lb, index, len), 0);
                model_add(&m, index, len);
            } else if (r < 75) {
                /* Odd runs forget rarely, so the ring grows past its first size and wraps. */
                if (run % 2 == 1 && tu_rand(&rng) % 100 != 0)
                    continue;
                uint64_t back = run % 2 == 1 ? 3000 : 300;
                uint64_t upto =
                    index > back ? index - tu_rand(&rng) % back : tu_rand(&rng) % (index + 1);
                keel_logbytes_forget(&lb, upto);
                model_forget(&m, upto);
            } else if (r < 76) {
                if (tu_rand(&rng) % 100 == 0)
                    index = tu_rand(&rng) % (index + 1); /* backwards: next add starts afresh */
            } else {
                uint64_t at =
                    index + 2 > 400 ? index + 2 - tu_rand(&rng) % 400 : tu_rand(&rng) % (index + 2);
                uint64_t budget =
                    tu_rand(&rng) % 2 ? tu_rand(&rng) % (64u << 20) : tu_rand(&rng) % 4096;
                uint64_t got_since = keel_logbytes_since(&lb, at), want_since = model_since(&m, at);
                uint64_t got_keep = keel_logbytes_keep(&lb, at, budget),
                         want_keep = model_keep(&m, at, budget);
                if (got_since != want_since || got_keep != want_keep)
                    fail_msg(
                        "seed %llu run %d step %d: since(%llu) %llu, want %llu; keep(%llu, %llu) "
                        "%llu, want %llu",
                        (unsigned long long)seed, run, step, (unsigned long long)at,
                        (unsigned long long)got_since, (unsigned long long)want_since,
                        (unsigned long long)at, (unsigned long long)budget,
                        (unsigned long long)got_keep, (unsigned long long)want_keep);
            }
            assert_true(lb.n == m.n);
        }
        if (run % 2 == 1)
            assert_true(lb.cap > 1024); /* it did grow */
        keel_logbytes_close(&lb);
        free(m.index);
        free(m.len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(edges),
        cmocka_unit_test(matches_brute_force),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
