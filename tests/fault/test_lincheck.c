/*
 * The linearizability checker (lincheck.h) against histories with known verdicts: the 70 Jepsen
 * etcd logs of tests/fault/testdata/jepsen-etcd, and small planted violations next to the same
 * histories made legal by overlapping the operations in time.
 *
 * Groups (argv[1]): jepsen, planted; none runs both.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lincheck.h"

#ifndef KL_JEPSEN_DIR
#error "KL_JEPSEN_DIR must name the Jepsen data directory"
#endif

/* Per file, on an ASan debug build; Porcupine needs milliseconds for any of them. */
#define KL_JEPSEN_BOUND_MS 10000

#define N_ LINCHECK_NEVER
#define A_ LINCHECK_ABSENT

static struct lincheck_op kl_w(const char *key, int64_t v, int64_t call, int64_t ret)
{
    return (struct lincheck_op){
        .key = key, .kind = LINCHECK_WRITE, .value = v, .call = call, .ret = ret};
}

static struct lincheck_op kl_r(const char *key, int64_t v, int64_t call, int64_t ret)
{
    return (struct lincheck_op){
        .key = key, .kind = LINCHECK_READ, .value = v, .call = call, .ret = ret};
}

static struct lincheck_op kl_cas(const char *key, int64_t from, int64_t to, bool ok, int64_t call,
                                 int64_t ret)
{
    return (struct lincheck_op){.key = key,
                                .kind = LINCHECK_CAS,
                                .value = from,
                                .value2 = to,
                                .ok = ok,
                                .call = call,
                                .ret = ret};
}

#define KL_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Check and insist on a verdict; prints the detail either way so a failure explains itself. */
static struct lincheck_result kl_expect(const char *what, const struct lincheck_op *ops, size_t n,
                                        enum lincheck_verdict want)
{
    struct lincheck_result res;
    enum lincheck_verdict got = lincheck_check(ops, n, 5000, &res);
    printf("  %-40s %-9s %s\n", what, lincheck_verdict_name(got), res.detail);
    if (got != want)
        fail_msg("%s: want %s, got %s (%s)", what, lincheck_verdict_name(want),
                 lincheck_verdict_name(got), res.detail);
    assert_int_equal(got, res.verdict);
    return res;
}

static double kl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------------------------------
 * Jepsen
 */

static void test_jepsen_verdicts(void **state)
{
    (void)state;
    FILE *f = fopen(KL_JEPSEN_DIR "/verdicts.tsv", "r");
    assert_non_null(f);
    char line[256];
    int files = 0, linearizable = 0, mismatches = 0;
    double total = 0, slowest = 0;
    char slowest_name[64] = "";
    while (fgets(line, sizeof(line), f) != NULL) {
        char name[64], verdict[32];
        if (sscanf(line, "%63[^\t]\t%31s", name, verdict) != 2)
            continue;
        bool want_ok;
        if (strcmp(verdict, "linearizable") == 0)
            want_ok = true;
        else if (strcmp(verdict, "not-linearizable") == 0)
            want_ok = false;
        else
            fail_msg("verdicts.tsv: unknown verdict '%s' for %s", verdict, name);
        char path[512], err[256];
        snprintf(path, sizeof(path), "%s/%s", KL_JEPSEN_DIR, name);
        struct lincheck_op *ops;
        size_t n;
        if (lincheck_jepsen_load(path, &ops, &n, err, sizeof(err)) != 0)
            fail_msg("%s", err);
        struct lincheck_result res;
        double t0 = kl_now();
        enum lincheck_verdict got = lincheck_check(ops, n, KL_JEPSEN_BOUND_MS, &res);
        double dt = kl_now() - t0;
        total += dt;
        if (dt > slowest) {
            slowest = dt;
            snprintf(slowest_name, sizeof(slowest_name), "%s", name);
        }
        enum lincheck_verdict want = want_ok ? LINCHECK_OK : LINCHECK_VIOLATION;
        printf("  %s %4zu ops %8.3f ms %-9s %s\n", name, n, dt * 1e3, lincheck_verdict_name(got),
               res.detail);
        if (got != want) {
            printf("  MISMATCH %s: want %s\n", name, lincheck_verdict_name(want));
            mismatches++;
        }
        files++;
        linearizable += want_ok;
        free(ops);
    }
    fclose(f);
    printf("  %d files, %d linearizable; slowest %s %.3f ms, total %.3f ms\n", files, linearizable,
           slowest_name, slowest * 1e3, total * 1e3);
    assert_int_equal(files, 70);
    assert_int_equal(linearizable, 14);
    assert_int_equal(mismatches, 0);
    assert_true(slowest * 1e3 < KL_JEPSEN_BOUND_MS);
}

/* The loader's reading of the format, on a file of our own. */
static void test_jepsen_load(void **state)
{
    (void)state;
    char path[] = "/tmp/kl_jepsen_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
          "INFO  jepsen.util - 1\t:invoke\t:cas\t[1 2]\n"
          "INFO  jepsen.util - 0\t:ok\t:read\tnil\n"
          "INFO  jepsen.util - 1\t:fail\t:cas\t[1 2]\n"
          "INFO  jepsen.util - 2\t:invoke\t:write\t4\n"
          "INFO  jepsen.util - 2\t:info\t:write\t:timed-out\n"
          "INFO  jepsen.util - 3\t:invoke\t:cas\t[4 5]\n"
          "INFO  jepsen.util - 3\t:ok\t:cas\t[4 5]\n"
          "INFO  jepsen.util - 4\t:invoke\t:read\tnil\n",
          f);
    fclose(f);
    struct lincheck_op *ops;
    size_t n;
    char err[256];
    assert_int_equal(lincheck_jepsen_load(path, &ops, &n, err, sizeof(err)), 0);
    unlink(path);
    /* The failed cas is gone; the rest in invocation order. */
    assert_int_equal(n, 4);
    assert_int_equal(ops[0].kind, LINCHECK_READ);
    assert_true(ops[0].value == A_ && ops[0].call == 1 && ops[0].ret == 3);
    assert_int_equal(ops[1].kind, LINCHECK_WRITE);
    assert_true(ops[1].value == 4 && ops[1].call == 5 && ops[1].ret == N_);
    assert_int_equal(ops[2].kind, LINCHECK_CAS);
    assert_true(ops[2].value == 4 && ops[2].value2 == 5 && ops[2].ok && ops[2].ret == 8);
    assert_true(ops[3].kind == LINCHECK_READ && ops[3].call == 9 && ops[3].ret == N_);
    struct lincheck_result res;
    assert_int_equal(lincheck_check(ops, n, 0, &res), LINCHECK_OK);
    free(ops);

    assert_int_equal(lincheck_jepsen_load("/nonexistent/x.log", &ops, &n, err, sizeof(err)), -1);
    assert_null(ops);
}

/* ---------------------------------------------------------------------------------------
 * Planted violations, and the same histories made legal by overlap
 */

/* A read that starts after a write completed returns the value from before it. */
static void test_stale_read(void **state)
{
    (void)state;
    struct lincheck_op bad[] = {
        kl_w("k", 1, 0, 1), kl_r("k", 1, 2, 3), kl_w("k", 2, 4, 5), kl_r("k", 1, 6, 7), /* stale */
        kl_r("k", 2, 8, 9),
    };
    struct lincheck_result res = kl_expect("stale read", bad, KL_COUNT(bad), LINCHECK_VIOLATION);
    assert_string_equal(res.key, "k");
    assert_int_equal(res.key_ops, 5);
    assert_int_equal(res.op, 3);
    assert_int_equal(res.linearized, 3);

    /* The same read, started while the write was still in flight: it may come first. */
    struct lincheck_op good[] = {
        kl_w("k", 1, 0, 1), kl_r("k", 1, 2, 3), kl_w("k", 2, 4, 7),
        kl_r("k", 1, 6, 7), kl_r("k", 2, 8, 9),
    };
    kl_expect("stale read, overlapping", good, KL_COUNT(good), LINCHECK_OK);
    /* Touching counts as overlapping: the read was invoked at the instant the write returned. */
    good[2].ret = 6;
    kl_expect("stale read, touching", good, KL_COUNT(good), LINCHECK_OK);
}

/* An acknowledged write that no later read ever sees. */
static void test_lost_write(void **state)
{
    (void)state;
    struct lincheck_op bad[] = {
        kl_w("k", 1, 0, 1), kl_w("k", 2, 2, 3), /* acknowledged, then lost */
        kl_r("k", 1, 4, 5), kl_r("k", 1, 6, 7), kl_w("k", 3, 8, 9), kl_r("k", 3, 10, 11),
    };
    struct lincheck_result res = kl_expect("lost write", bad, KL_COUNT(bad), LINCHECK_VIOLATION);
    assert_int_equal(res.op, 2);

    /* If the first write was still in flight, it could have overwritten the second. */
    bad[0].ret = 4;
    kl_expect("lost write, overlapping", bad, KL_COUNT(bad), LINCHECK_OK);
}

/* A cas that succeeded against a value the register never held, or no longer held. */
static void test_phantom_cas(void **state)
{
    (void)state;
    struct lincheck_op never[] = {
        kl_w("k", 1, 0, 1),
        kl_cas("k", 9, 10, true, 2, 3),
        kl_r("k", 10, 4, 5),
    };
    struct lincheck_result res =
        kl_expect("cas from a value never there", never, KL_COUNT(never), LINCHECK_VIOLATION);
    assert_int_equal(res.op, 1);
    /* No overlap rescues it: 9 was never written. */
    never[0].ret = 10;
    never[2].call = 2;
    kl_expect("cas from a value never there, overlapping", never, KL_COUNT(never),
              LINCHECK_VIOLATION);

    struct lincheck_op gone[] = {
        kl_w("k", 5, 0, 1),
        kl_w("k", 7, 2, 3),
        kl_cas("k", 5, 6, true, 4, 5), /* 5 had been overwritten */
        kl_r("k", 6, 6, 7),
    };
    res = kl_expect("cas from an overwritten value", gone, KL_COUNT(gone), LINCHECK_VIOLATION);
    assert_int_equal(res.op, 2);
    /* A cas invoked while the overwrite was in flight may precede it, but then 7 overwrote 6
     * before the read began. */
    gone[1].ret = 5;
    gone[2].call = 3;
    kl_expect("cas from an overwritten value, read after", gone, KL_COUNT(gone),
              LINCHECK_VIOLATION);
    /* With the read in the overwrite's flight too, the overwrite may come last. */
    gone[1].ret = 8;
    kl_expect("cas from an overwritten value, overlapping", gone, KL_COUNT(gone), LINCHECK_OK);

    /* A cas that reports failure saw a value other than the expected one. */
    struct lincheck_op failed[] = {
        kl_w("k", 5, 0, 1),
        kl_cas("k", 5, 6, false, 2, 3),
    };
    kl_expect("failed cas on the expected value", failed, KL_COUNT(failed), LINCHECK_VIOLATION);
    failed[0].ret = 4;
    kl_expect("failed cas, overlapping", failed, KL_COUNT(failed), LINCHECK_OK);
}

/* A delete is a write of "absent"; a fresh key reads absent. */
static void test_delete(void **state)
{
    (void)state;
    struct lincheck_op ops[] = {
        kl_r("k", A_, 0, 1),
        kl_w("k", 1, 2, 3),
        kl_w("k", A_, 4, 5),
        kl_r("k", A_, 6, 7),
        kl_cas("k", A_, 2, true, 8, 9),
        kl_r("k", 2, 10, 11),
    };
    kl_expect("delete then create", ops, KL_COUNT(ops), LINCHECK_OK);
    ops[3].value = 1;
    kl_expect("read through a delete", ops, KL_COUNT(ops), LINCHECK_VIOLATION);
    struct lincheck_op fresh[] = {kl_r("k", 0, 0, 1)};
    kl_expect("fresh key is not 0", fresh, KL_COUNT(fresh), LINCHECK_VIOLATION);
}

/* A lease revoke deletes the key only if it still holds what was put with the lease: a blind
 * cas, possible in every state, but its effect is seen. */
static void test_blind_cas(void **state)
{
    (void)state;
    struct lincheck_op kept[] = {
        kl_w("k", 1, 0, 1), kl_cas("k", 1, A_, true, 2, 3),
        kl_r("k", 1, 4, 5), /* the revoke returned, yet the key is still there */
    };
    kept[1].kind = LINCHECK_CAS_BLIND;
    kl_expect("revoked key still there", kept, KL_COUNT(kept), LINCHECK_VIOLATION);
    kept[2].value = A_;
    kl_expect("revoked key gone", kept, KL_COUNT(kept), LINCHECK_OK);
    /* Overwritten before the revoke: the revoke leaves the new value alone. */
    struct lincheck_op over[] = {
        kl_w("k", 1, 0, 1),
        kl_w("k", 2, 2, 3),
        kl_cas("k", 1, A_, true, 4, 5),
        kl_r("k", 2, 6, 7),
    };
    over[2].kind = LINCHECK_CAS_BLIND;
    kl_expect("revoke after an overwrite", over, KL_COUNT(over), LINCHECK_OK);
    over[3].value = A_;
    kl_expect("revoke deleted an overwritten key", over, KL_COUNT(over), LINCHECK_VIOLATION);
    /* An expiry (unknown time, maybe never) may explain either read. */
    struct lincheck_op exp[] = {
        kl_w("k", 1, 0, 1),
        kl_cas("k", 1, A_, true, 0, N_),
        kl_r("k", 1, 4, 5),
        kl_r("k", A_, 6, 7),
    };
    exp[1].kind = LINCHECK_CAS_BLIND;
    kl_expect("expiry between reads", exp, KL_COUNT(exp), LINCHECK_OK);
    exp[3].value = 1;
    exp[2].value = A_; /* gone, then back: nothing wrote it again */
    kl_expect("expired key came back", exp, KL_COUNT(exp), LINCHECK_VIOLATION);
}

/* A write whose reply never came may have taken effect, or not; both must be accepted. */
static void test_unknown_outcome(void **state)
{
    (void)state;
    struct lincheck_op took[] = {
        kl_w("k", 1, 0, 1), kl_w("k", 2, 2, N_), kl_r("k", 1, 3, 4),
        kl_r("k", 2, 5, 6), /* took effect late */
    };
    kl_expect("unknown write that happened", took, KL_COUNT(took), LINCHECK_OK);
    took[3].value = 1;
    kl_expect("unknown write that never happened", took, KL_COUNT(took), LINCHECK_OK);
    /* Once seen it cannot be undone. */
    took[2].value = 2;
    kl_expect("unknown write seen then unseen", took, KL_COUNT(took), LINCHECK_VIOLATION);
    /* Nor can it take effect before its call. */
    struct lincheck_op early[] = {
        kl_w("k", 1, 0, 1),
        kl_r("k", 2, 2, 3),
        kl_w("k", 2, 4, N_),
    };
    kl_expect("unknown write seen before its call", early, KL_COUNT(early), LINCHECK_VIOLATION);

    /* The same for a cas, which may also have found another value and done nothing. */
    struct lincheck_op cas[] = {
        kl_w("k", 1, 0, 1),
        kl_cas("k", 1, 3, false, 2, N_), /* ok is meaningless for an unknown outcome */
        kl_r("k", 3, 4, 5),
    };
    kl_expect("unknown cas that happened", cas, KL_COUNT(cas), LINCHECK_OK);
    cas[2].value = 1;
    kl_expect("unknown cas that never happened", cas, KL_COUNT(cas), LINCHECK_OK);
    cas[1].value = 7;
    cas[2].value = 3;
    kl_expect("unknown cas from a wrong value", cas, KL_COUNT(cas), LINCHECK_VIOLATION);

    /* An unknown read says nothing, whatever value it carries. */
    struct lincheck_op rd[] = {kl_w("k", 1, 0, 1), kl_r("k", 42, 2, N_)};
    kl_expect("unknown read", rd, KL_COUNT(rd), LINCHECK_OK);
}

/* Keys are independent: the violation is found on its own key and only there. */
static void test_multiple_keys(void **state)
{
    (void)state;
    struct lincheck_op ops[] = {
        kl_w("a", 1, 0, 1), kl_w("b", 1, 0, 1), kl_w("c", 1, 0, 1),
        kl_w("a", 2, 2, 3), kl_w("b", 2, 2, 3), kl_w("c", 2, 2, 3),
        kl_r("a", 2, 4, 5), kl_r("b", 1, 4, 5), /* stale, on b only */
        kl_r("c", 2, 4, 5),
    };
    struct lincheck_result res =
        kl_expect("three keys, b stale", ops, KL_COUNT(ops), LINCHECK_VIOLATION);
    assert_string_equal(res.key, "b");
    assert_int_equal(res.key_ops, 3);
    assert_int_equal(res.op, 7);
    /* Values of one key do not satisfy reads of another. */
    ops[7].value = 2;
    kl_expect("three keys, all fresh", ops, KL_COUNT(ops), LINCHECK_OK);
    ops[8].value = 1;
    res = kl_expect("three keys, c stale", ops, KL_COUNT(ops), LINCHECK_VIOLATION);
    assert_string_equal(res.key, "c");
}

/* Malformed input, an empty history, and a search too big for its time bound. */
static void test_edges(void **state)
{
    (void)state;
    struct lincheck_result res;
    assert_int_equal(lincheck_check(NULL, 0, 0, &res), LINCHECK_OK);
    struct lincheck_op back[] = {kl_w("k", 1, 5, 4)};
    assert_int_equal(lincheck_check(back, 1, 0, &res), LINCHECK_INVALID);
    assert_int_equal(res.op, 0);

    /* 40 concurrent writes and then a read of a value none wrote: the search has to try every
     * subset of the writes before it can say no. */
    enum { W = 40 };
    struct lincheck_op big[W + 1];
    for (int i = 0; i < W; i++)
        big[i] = kl_w("k", i, 0, 100);
    big[W] = kl_r("k", 999, 101, 102);
    double t0 = kl_now();
    assert_int_equal(lincheck_check(big, W + 1, 200, &res), LINCHECK_UNKNOWN);
    double dt = kl_now() - t0;
    printf("  time bound 200 ms: unknown after %.0f ms (%s)\n", dt * 1e3, res.detail);
    assert_true(dt < 5.0);
    /* A violation on one key beats running out of time on another ("a" < "k"). */
    struct lincheck_op mixed[W + 3];
    memcpy(mixed, big, sizeof(big));
    mixed[W + 1] = kl_w("a", 1, 0, 1);
    mixed[W + 2] = kl_r("a", 2, 2, 3);
    assert_int_equal(lincheck_check(mixed, W + 3, 200, &res), LINCHECK_VIOLATION);
    assert_string_equal(res.key, "a");
}

int main(int argc, char **argv)
{
    const struct CMUnitTest jepsen[] = {
        cmocka_unit_test(test_jepsen_load),
        cmocka_unit_test(test_jepsen_verdicts),
    };
    const struct CMUnitTest planted[] = {
        cmocka_unit_test(test_stale_read),      cmocka_unit_test(test_lost_write),
        cmocka_unit_test(test_phantom_cas),     cmocka_unit_test(test_delete),
        cmocka_unit_test(test_unknown_outcome), cmocka_unit_test(test_multiple_keys),
        cmocka_unit_test(test_edges),           cmocka_unit_test(test_blind_cas),
    };
    const char *group = argc > 1 ? argv[1] : NULL;
    int failed = 0;
    bool ran = false;
    if (group == NULL || strcmp(group, "jepsen") == 0) {
        failed += cmocka_run_group_tests_name("lincheck_jepsen", jepsen, NULL, NULL);
        ran = true;
    }
    if (group == NULL || strcmp(group, "planted") == 0) {
        failed += cmocka_run_group_tests_name("lincheck_planted", planted, NULL, NULL);
        ran = true;
    }
    if (!ran) {
        fprintf(stderr, "test_lincheck: unknown group '%s'\n", group);
        return 2;
    }
    return failed;
}
