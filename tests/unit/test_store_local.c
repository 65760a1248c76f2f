/*
 * Local failures at apply (issue 9, hole 12). What fails on one member only (memory, the
 * storage engine) must fail that member's write, which is aborted and replayed from the log,
 * and never become a request's result: another member applying the same entry succeeds, and
 * the two would answer differently and hold different data. Request-level failures (a missing
 * lease, a key too long, a duplicate key, the quota) are results, the same on every member.
 *
 * Faults are injected at link time (-Wl,--wrap, see tests/CMakeLists.txt): the allocator and
 * LMDB's write calls, as the store's own code calls them, fail on the n-th call while armed.
 * Every call of one apply is failed in turn.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lmdb.h>

#include "testutil.h"

struct fault {
    bool armed;
    long calls;   /* counted while armed */
    long fail_at; /* the call that fails; -1: none */
    int rc;       /* what a failing LMDB call returns */
};

static struct fault alloc_fault = {.fail_at = -1}, mdb_fault = {.fail_at = -1};

static bool hit(struct fault *f)
{
    return f->armed && f->calls++ == f->fail_at;
}

static void arm(struct fault *f, long fail_at, int rc)
{
    f->calls = 0;
    f->fail_at = fail_at;
    f->rc = rc;
    f->armed = true;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
int __real_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags);
int __real_mdb_cursor_put(MDB_cursor *cur, MDB_val *key, MDB_val *data, unsigned flags);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
int __wrap_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags);
int __wrap_mdb_cursor_put(MDB_cursor *cur, MDB_val *key, MDB_val *data, unsigned flags);

void *__wrap_malloc(size_t n)
{
    return hit(&alloc_fault) ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return hit(&alloc_fault) ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return hit(&alloc_fault) ? NULL : __real_realloc(p, n);
}

int __wrap_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags)
{
    return hit(&mdb_fault) ? mdb_fault.rc : __real_mdb_put(txn, dbi, key, data, flags);
}

int __wrap_mdb_cursor_put(MDB_cursor *cur, MDB_val *key, MDB_val *data, unsigned flags)
{
    return hit(&mdb_fault) ? mdb_fault.rc : __real_mdb_cursor_put(cur, key, data, flags);
}

struct fx {
    char *dir;
    struct keel_store *s;
    struct keel_arena a;
    uint64_t index;
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("store-local");
    f->s = tu_store_open(f->dir, 0);
    keel_arena_init(&f->a, 0);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    keel_store_close(f->s);
    keel_arena_close(&f->a);
    tu_rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static Keel__TxnRequest *nested(struct keel_arena *a, Keel__TxnRequest *t, int success)
{
    Keel__RequestOp *op = tu_txn_op(a, t, success);
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = tu_txn(a);
    return op->request_txn;
}

static Keel__Command *cmd_quota(struct keel_arena *a, uint64_t bytes)
{
    Keel__QuotaRequest *q = keel_arena_alloc(a, sizeof(*q));
    keel__quota_request__init(q);
    q->bytes = bytes;
    Keel__Command *c = keel_arena_alloc(a, sizeof(*c));
    keel__command__init(c);
    c->op_case = KEEL__COMMAND__OP_QUOTA;
    c->quota = q;
    return c;
}

/* A key "a" at version 1, lease 7, and a 64 KiB quota. */
static void setup_state(struct fx *f)
{
    struct keel_apply_result r;
    tu_apply(f->s, ++f->index, cmd_quota(&f->a, 64 * 1024), &f->a, &r);
    tu_apply(f->s, ++f->index, tu_cmd_lease_grant(&f->a, 7, 60), &f->a, &r);
    tu_apply(f->s, ++f->index, tu_cmd_put(&f->a, "a", "1"), &f->a, &r);
    assert_int_equal(r.err, 0);
    keel_arena_reset(&f->a);
}

enum { N_CMDS = 8 };

/*
 * One entry of commands that succeed and commands that fail at request level, in arena a:
 * every kind of write the store applies (txn with nested branches, put with a lease, deletes,
 * a lease grant), so that the faults below reach every allocation and every LMDB write of them.
 */
static void entry(struct keel_arena *a, const Keel__Command **cmds, int *want_err)
{
    /* 0: a txn whose compare holds: puts, a delete, a nested txn (validation allocates) */
    Keel__TxnRequest *t = tu_txn(a);
    Keel__Compare *c = tu_txn_compare(a, t, "a", KEEL__COMPARE__COMPARE_TARGET__VERSION,
                                      KEEL__COMPARE__COMPARE_RESULT__EQUAL);
    c->target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
    c->version = 1;
    tu_op_put(tu_txn_op(a, t, 1), tu_put_req(a, "t1", "x"));
    tu_op_del(tu_txn_op(a, t, 1), tu_del_req(a, "r", "s"));
    Keel__TxnRequest *in = nested(a, t, 1);
    tu_op_put(tu_txn_op(a, in, 1), tu_put_req(a, "t2", "then"));
    tu_op_put(tu_txn_op(a, in, 0), tu_put_req(a, "t2", "else"));
    tu_op_put(tu_txn_op(a, t, 0), tu_put_req(a, "t3", "x"));
    cmds[0] = tu_cmd_txn(a, t);
    want_err[0] = 0;
    /* 1: a put with a lease nobody granted */
    cmds[1] = tu_cmd_put_lease(a, "k", "v", 99);
    want_err[1] = KEEL_ELEASENOTFOUND;
    /* 2: a key longer than 511 bytes (refused by validation, at apply too) */
    static char longkey[600];
    memset(longkey, 'L', sizeof(longkey) - 1);
    cmds[2] = tu_cmd_put(a, longkey, "v");
    want_err[2] = KEEL_EKEYTOOLONG;
    /* 3: a txn putting one key twice */
    t = tu_txn(a);
    tu_op_put(tu_txn_op(a, t, 1), tu_put_req(a, "d", "1"));
    tu_op_put(tu_txn_op(a, t, 1), tu_put_req(a, "d", "2"));
    cmds[3] = tu_cmd_txn(a, t);
    want_err[3] = KEEL_EDUPKEY;
    /* 4: a put attached to the lease */
    cmds[4] = tu_cmd_put_lease(a, "z", "v", 7);
    want_err[4] = 0;
    /* 5: a lease grant */
    cmds[5] = tu_cmd_lease_grant(a, 8, 60);
    want_err[5] = 0;
    /* 6: more than the quota (last: it raises the NOSPACE alarm, and every put after it in
     * the entry would fail too) */
    static char big[70 * 1024];
    memset(big, 'B', sizeof(big) - 1);
    cmds[6] = tu_cmd_put(a, "big", big);
    want_err[6] = KEEL_ENOSPACE;
    /* 7: a delete, which the alarm lets through */
    cmds[7] = tu_cmd_del(a, "a", NULL);
    want_err[7] = 0;
}

/* Applies the entry in a fresh write, then aborts it; returns apply's code. */
static int try_entry(struct fx *f, struct fault *fault, long fail_at, int rc,
                     struct keel_apply_result *res)
{
    const Keel__Command *cmds[N_CMDS];
    int want[N_CMDS];
    struct keel_arena a;
    keel_arena_init(&a, 0);
    entry(&a, cmds, want);
    struct keel_store_write *w;
    assert_int_equal(keel_store_write_begin(f->s, &w), 0);
    /* A fresh arena inside the window, so its chunks are among the calls that fail. */
    struct keel_arena ra;
    keel_arena_init(&ra, 0);
    if (fault != NULL)
        arm(fault, fail_at, rc);
    int rv = keel_store_write_apply_entry(w, f->index + 1, cmds, N_CMDS, &ra, res);
    if (fault != NULL)
        fault->armed = false;
    keel_store_write_abort(w);
    /* The results' memory is gone with ra: keep only what the caller reads. */
    for (int i = 0; i < N_CMDS; i++) {
        res[i].msg = NULL;
        res[i].response = NULL;
        res[i].events = NULL;
    }
    keel_arena_close(&ra);
    keel_arena_close(&a);
    return rv;
}

/* Request-level failures are per-command results; the entry's other commands apply. */
static void request_failures_are_results(void **state)
{
    struct fx *f = *state;
    setup_state(f);
    const Keel__Command *cmds[N_CMDS];
    int want[N_CMDS];
    entry(&f->a, cmds, want);
    struct keel_store_write *w;
    assert_int_equal(keel_store_write_begin(f->s, &w), 0);
    struct keel_apply_result res[N_CMDS];
    assert_int_equal(keel_store_write_apply_entry(w, ++f->index, cmds, N_CMDS, &f->a, res), 0);
    for (int i = 0; i < N_CMDS; i++) {
        assert_int_equal(res[i].err, want[i]);
        assert_false(keel_err_is_local(res[i].err));
    }
    assert_true(res[0].response->txn->succeeded);
    assert_int_equal(keel_store_write_commit(w), 0);
    Keel__RangeResponse *r;
    assert_int_equal(tu_range(f->s, &f->a, "t1", NULL, 0, &r), 0);
    assert_int_equal(r->n_kvs, 1);
    assert_int_equal(tu_range(f->s, &f->a, "z", NULL, 0, &r), 0);
    assert_int_equal(r->n_kvs, 1);
    assert_int_equal(tu_range(f->s, &f->a, "k", NULL, 0, &r), 0);
    assert_int_equal(r->n_kvs, 0);
    assert_int_equal(tu_range(f->s, &f->a, "a", NULL, 0, &r), 0);
    assert_int_equal(r->n_kvs, 0);
}

/*
 * Fails one allocation of the entry's apply at a time, each in turn: apply either returns
 * KEEL_ENOMEM (the caller aborts the write and the member replays) or reaches exactly the
 * results of the run without the fault. A command never comes back with ENOMEM as its result.
 */
static void alloc_failure_at_apply_is_local(void **state)
{
    struct fx *f = *state;
    setup_state(f);
    const Keel__Command *cmds[N_CMDS];
    int want[N_CMDS];
    entry(&f->a, cmds, want);
    struct keel_apply_result res[N_CMDS];
    /* Count the calls of a clean run (fail_at -1 never hits). */
    assert_int_equal(try_entry(f, &alloc_fault, -1, 0, res), 0);
    long calls = alloc_fault.calls;
    assert_true(calls > 0);
    int local = 0;
    for (long k = 0; k < calls; k++) {
        int rv = try_entry(f, &alloc_fault, k, 0, res);
        if (rv != 0) {
            if (rv != KEEL_ENOMEM)
                fail_msg("allocation %ld of %ld failed: apply returned %s", k, calls,
                         keel_err_name(rv));
            local++;
            continue;
        }
        for (int i = 0; i < N_CMDS; i++)
            if (res[i].err != want[i])
                fail_msg("allocation %ld of %ld failed: command %d's result is %s, not %s", k,
                         calls, i, keel_err_name(res[i].err), keel_err_name(want[i]));
    }
    /* The first allocation is validation's, for the txn's writes. */
    assert_int_equal(try_entry(f, &alloc_fault, 0, 0, res), KEEL_ENOMEM);
    assert_true(local > 0);
    printf("%ld allocations, %d failures of the member\n", calls, local);
    /* Nothing of the aborted writes remains; the entry applies once memory is back. */
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.applied_index, f->index);
    assert_int_equal(try_entry(f, NULL, -1, 0, res), 0);
}

/*
 * Fails one LMDB write of the entry's apply at a time with rc: apply returns the store's code
 * for it, every time. MDB_BAD_VALSIZE used to come back as INVALID_ARGUMENT, a request result,
 * on the one member whose engine refused the size.
 */
static void engine_failure(struct fx *f, int rc, int want_rv)
{
    struct keel_apply_result res[N_CMDS];
    assert_int_equal(try_entry(f, &mdb_fault, -1, rc, res), 0);
    long calls = mdb_fault.calls, wrong = 0;
    assert_true(calls > 0);
    for (long k = 0; k < calls; k++) {
        int rv = try_entry(f, &mdb_fault, k, rc, res);
        if (rv == want_rv && keel_err_is_local(rv))
            continue;
        wrong++;
        fprintf(stderr, "LMDB write %ld of %ld failed with %d: apply returned %s, results", k,
                calls, rc, keel_err_name(rv));
        for (int i = 0; i < N_CMDS; i++)
            fprintf(stderr, " %s", keel_err_name(res[i].err));
        fprintf(stderr, "\n");
    }
    printf("%ld LMDB writes failed with %d: %ld not a failure of the member (%s)\n", calls, rc,
           wrong, keel_err_name(want_rv));
    assert_int_equal(wrong, 0);
}

static void engine_failure_at_apply_is_local(void **state)
{
    struct fx *f = *state;
    setup_state(f);
    engine_failure(f, MDB_BAD_VALSIZE, KEEL_EBADVALSIZE);
    engine_failure(f, MDB_MAP_FULL, KEEL_EMAPFULL);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.applied_index, f->index);
}

/* The one classification: the wire band's request outcomes against the member's own failures. */
static void error_classes(void **state)
{
    (void)state;
    static const int request[] = {
        KEEL_EINVAL,         KEEL_ENOTLEADER,      KEEL_ECOMPACTED,    KEEL_EFUTUREREV,
        KEEL_EKEYTOOLONG,    KEEL_ETOOLARGE,       KEEL_ENOSPACE,      KEEL_ELEASENOTFOUND,
        KEEL_ELEASEEXISTS,   KEEL_EKEYNOTFOUND,    KEEL_ETOOMANYOPS,   KEEL_EDUPKEY,
        KEEL_EUNAVAILABLE,   KEEL_ETIMEOUT,        KEEL_EUNKNOWN,      KEEL_EUNAUTHENTICATED,
        KEEL_EPERMDENIED,    KEEL_EMEMBERNOTFOUND, KEEL_EMEMBEREXISTS, KEEL_ETOOMANYREQUESTS,
        KEEL_EUNSUPPORTED,   KEEL_EFRAMETOOLARGE,  KEEL_EBADFRAME,     KEEL_ECANCELED,
        KEEL_EREPLYTOOLARGE,
    };
    static const int local[] = {
        KEEL_EINTERNAL, KEEL_ENOMEM,  KEEL_EIO,         KEEL_ECORRUPT,        KEEL_EMAPFULL,
        KEEL_ENOTFOUND, KEEL_ECLOSED, KEEL_EBADVALSIZE, KEEL_E_WIRE_LAST - 1, -1000};
    for (size_t i = 0; i < sizeof(request) / sizeof(request[0]); i++)
        assert_false(keel_err_is_local(request[i]));
    for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++)
        assert_true(keel_err_is_local(local[i]));
    assert_false(keel_err_is_local(0));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(request_failures_are_results),
        T(alloc_failure_at_apply_is_local),
        T(engine_failure_at_apply_is_local),
        cmocka_unit_test(error_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
