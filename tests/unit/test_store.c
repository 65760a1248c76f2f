/*
 * Storage operations, one ctest entry per group: `test_store <group>`.
 *
 * Each test gets a fresh store in a scratch directory. Commands go through the public apply
 * path with raft indexes, and every effect is checked through the public read path.
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
#include <lmdb.h>

#include "frame.h"
#include "testutil.h"

struct fx {
    char *dir;
    struct keel_store *s;
    struct keel_arena a;
    uint64_t index;
};

static int fx_setup_quota(void **state, uint64_t quota)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("store");
    f->s = tu_store_open(f->dir, quota);
    keel_arena_init(&f->a, 0);
    *state = f;
    return 0;
}

static int fx_setup(void **state)
{
    return fx_setup_quota(state, 0);
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

/* Apply cmd at the next index and return the result. */
static struct keel_apply_result ap(struct fx *f, const Keel__Command *cmd)
{
    struct keel_apply_result r;
    tu_apply(f->s, ++f->index, cmd, &f->a, &r);
    assert_false(r.skipped);
    return r;
}

static int64_t rev_of(struct fx *f)
{
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    return st.revision;
}

/* The single key at revision rev (0: current), or NULL when absent. */
static Keel__KeyValue *get(struct fx *f, const char *key, int64_t rev)
{
    Keel__RangeResponse *r;
    assert_int_equal(tu_range(f->s, &f->a, key, NULL, rev, &r), 0);
    assert_true(r->n_kvs <= 1);
    return r->n_kvs ? r->kvs[0] : NULL;
}

static void assert_kv(const Keel__KeyValue *kv, const char *key, const char *value, int64_t create,
                      int64_t mod, int64_t version)
{
    assert_non_null(kv);
    assert_int_equal(kv->key.len, strlen(key));
    assert_memory_equal(kv->key.data, key, kv->key.len);
    assert_int_equal(kv->value.len, strlen(value));
    if (kv->value.len)
        assert_memory_equal(kv->value.data, value, kv->value.len);
    assert_int_equal(kv->create_revision, create);
    assert_int_equal(kv->mod_revision, mod);
    assert_int_equal(kv->version, version);
}

/* ---- put ---- */

static void put_creates_and_updates(void **state)
{
    struct fx *f = *state;
    assert_int_equal(rev_of(f), 0);
    struct keel_apply_result r = ap(f, tu_cmd_put(&f->a, "a", "1"));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.revision, 1);
    assert_int_equal(r.response->body_case, KEEL__RESPONSE__BODY_PUT);
    assert_null(r.response->put->prev_kv);
    assert_int_equal(r.n_events, 1);
    assert_int_equal(r.events[0]->type, KEEL__EVENT__EVENT_TYPE__PUT);
    assert_kv(r.events[0]->kv, "a", "1", 1, 1, 1);
    assert_null(r.events[0]->prev_kv);

    Keel__Command *c = tu_cmd_put(&f->a, "a", "22");
    c->put->prev_kv = 1;
    r = ap(f, c);
    assert_int_equal(r.revision, 2);
    assert_kv(r.response->put->prev_kv, "a", "1", 1, 1, 1);
    assert_kv(r.events[0]->kv, "a", "22", 1, 2, 2);
    assert_kv(r.events[0]->prev_kv, "a", "1", 1, 1, 1);
    assert_kv(get(f, "a", 0), "a", "22", 1, 2, 2);
    assert_kv(get(f, "a", 1), "a", "1", 1, 1, 1);
}

static void put_after_delete_resets_version(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_put(&f->a, "k", "v1"));
    ap(f, tu_cmd_put(&f->a, "k", "v2"));
    ap(f, tu_cmd_del(&f->a, "k", NULL));
    assert_null(get(f, "k", 0));
    ap(f, tu_cmd_put(&f->a, "k", "v3"));
    assert_kv(get(f, "k", 0), "k", "v3", 4, 4, 1);
    assert_null(get(f, "k", 3));
    assert_kv(get(f, "k", 2), "k", "v2", 1, 2, 2);
}

static void put_ignore_value_and_lease(void **state)
{
    struct fx *f = *state;
    Keel__Command *c = tu_cmd_put(&f->a, "nokey", NULL);
    c->put->ignore_value = 1;
    struct keel_apply_result r = ap(f, c);
    assert_int_equal(r.err, KEEL_EKEYNOTFOUND);
    assert_int_equal(rev_of(f), 0);

    ap(f, tu_cmd_lease_grant(&f->a, 7, 60));
    ap(f, tu_cmd_put_lease(&f->a, "k", "v", 7));
    c = tu_cmd_put(&f->a, "k", NULL);
    c->put->ignore_value = 1;
    c->put->ignore_lease = 1;
    r = ap(f, c);
    assert_int_equal(r.err, 0);
    Keel__KeyValue *kv = get(f, "k", 0);
    assert_kv(kv, "k", "v", 1, 2, 2);
    assert_int_equal(kv->lease, 7);
}

static void put_rejects_bad_keys(void **state)
{
    struct fx *f = *state;
    struct keel_apply_result r = ap(f, tu_cmd_put(&f->a, "", "v"));
    assert_int_equal(r.err, KEEL_EINVAL);
    assert_non_null(r.msg);
    char big[600];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    r = ap(f, tu_cmd_put(&f->a, big, "v"));
    assert_int_equal(r.err, KEEL_EKEYTOOLONG);
    big[KEEL_MAX_KEY_BYTES] = '\0';
    r = ap(f, tu_cmd_put(&f->a, big, "v"));
    assert_int_equal(r.err, 0);
    r = ap(f, tu_cmd_put_lease(&f->a, "k", "v", 99));
    assert_int_equal(r.err, KEEL_ELEASENOTFOUND);
    assert_int_equal(rev_of(f), 1);
}

static void put_skips_applied_index(void **state)
{
    struct fx *f = *state;
    struct keel_apply_result r;
    tu_apply(f->s, 5, tu_cmd_put(&f->a, "a", "1"), &f->a, &r);
    assert_false(r.skipped);
    tu_apply(f->s, 5, tu_cmd_put(&f->a, "a", "2"), &f->a, &r);
    assert_true(r.skipped);
    tu_apply(f->s, 3, tu_cmd_put(&f->a, "a", "3"), &f->a, &r);
    assert_true(r.skipped);
    assert_kv(get(f, "a", 0), "a", "1", 1, 1, 1);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.applied_index, 5);
    assert_int_equal(st.revision, 1);
}

/* ---- delete_range ---- */

static void delete_range_conventions(void **state)
{
    struct fx *f = *state;
    const char *keys[] = {"a", "b", "b1", "b2", "c", "d"};
    for (size_t i = 0; i < 6; i++)
        ap(f, tu_cmd_put(&f->a, keys[i], "v"));
    /* prefix b: [b, c) */
    Keel__Command *c = tu_cmd_del(&f->a, "b", "c");
    c->delete_range->prev_kv = 1;
    struct keel_apply_result r = ap(f, c);
    assert_int_equal(r.response->delete_range->deleted, 3);
    assert_int_equal(r.response->delete_range->n_prev_kvs, 3);
    assert_kv(r.response->delete_range->prev_kvs[1], "b1", "v", 3, 3, 1);
    assert_int_equal(r.revision, 7);
    assert_int_equal(r.n_events, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(r.events[i]->type, KEEL__EVENT__EVENT_TYPE__DELETE);
        assert_int_equal(r.events[i]->kv->mod_revision, 7);
        assert_non_null(r.events[i]->prev_kv);
    }
    /* deleting nothing takes no revision */
    r = ap(f, tu_cmd_del(&f->a, "b", "c"));
    assert_int_equal(r.response->delete_range->deleted, 0);
    assert_int_equal(r.revision, 7);
    /* "\0" end: every key >= c */
    Keel__Command *all = tu_cmd_del(&f->a, "c", NULL);
    all->delete_range->range_end = tu_bytes(&f->a, "\0", 1);
    r = ap(f, all);
    assert_int_equal(r.response->delete_range->deleted, 2);
    Keel__RangeResponse *rr;
    assert_int_equal(tu_range(f->s, &f->a, "a", NULL, 0, &rr), 0);
    assert_int_equal(rr->count, 1);
}

static void delete_single_key(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_put(&f->a, "x", "1"));
    struct keel_apply_result r = ap(f, tu_cmd_del(&f->a, "x", NULL));
    assert_int_equal(r.response->delete_range->deleted, 1);
    assert_null(r.response->delete_range->prev_kvs);
    assert_null(get(f, "x", 0));
    assert_kv(get(f, "x", 1), "x", "1", 1, 1, 1);
}

/* ---- txn ---- */

static void txn_compare_branches(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_put(&f->a, "k", "v1"));
    Keel__TxnRequest *t = tu_txn(&f->a);
    Keel__Compare *cmp = tu_txn_compare(&f->a, t, "k", KEEL__COMPARE__COMPARE_TARGET__VALUE,
                                        KEEL__COMPARE__COMPARE_RESULT__EQUAL);
    cmp->target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
    cmp->value = tu_str(&f->a, "v1");
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "k", "v2"));
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "other", "o"));
    tu_op_range(tu_txn_op(&f->a, t, 1), tu_range_req(&f->a, "k", NULL));
    tu_op_put(tu_txn_op(&f->a, t, 0), tu_put_req(&f->a, "failed", "f"));
    struct keel_apply_result r = ap(f, tu_cmd_txn(&f->a, t));
    assert_int_equal(r.err, 0);
    Keel__TxnResponse *tr = r.response->txn;
    assert_true(tr->succeeded);
    assert_int_equal(tr->n_responses, 3);
    /* one revision for the whole txn, subs in order */
    assert_int_equal(r.revision, 2);
    assert_int_equal(r.n_events, 2);
    /* the range inside the txn sees the txn's own write */
    assert_kv(tr->responses[2]->response_range->kvs[0], "k", "v2", 1, 2, 2);
    assert_kv(get(f, "other", 0), "other", "o", 2, 2, 1);

    /* same txn again: compare fails, failure branch runs */
    r = ap(f, tu_cmd_txn(&f->a, t));
    assert_false(r.response->txn->succeeded);
    assert_int_equal(r.revision, 3);
    assert_kv(get(f, "failed", 0), "failed", "f", 3, 3, 1);
}

static void txn_compare_targets(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_lease_grant(&f->a, 5, 10));
    ap(f, tu_cmd_put_lease(&f->a, "k", "v", 5)); /* rev 1 */
    ap(f, tu_cmd_put_lease(&f->a, "k", "v", 5)); /* rev 2, version 2 */
    struct {
        Keel__Compare__CompareTarget target;
        Keel__Compare__CompareResult result;
        int64_t value;
        bool expect;
    } cases[] = {
        {KEEL__COMPARE__COMPARE_TARGET__VERSION, KEEL__COMPARE__COMPARE_RESULT__EQUAL, 2, true},
        {KEEL__COMPARE__COMPARE_TARGET__VERSION, KEEL__COMPARE__COMPARE_RESULT__GREATER, 2, false},
        {KEEL__COMPARE__COMPARE_TARGET__CREATE, KEEL__COMPARE__COMPARE_RESULT__EQUAL, 1, true},
        {KEEL__COMPARE__COMPARE_TARGET__MOD, KEEL__COMPARE__COMPARE_RESULT__LESS, 3, true},
        {KEEL__COMPARE__COMPARE_TARGET__MOD, KEEL__COMPARE__COMPARE_RESULT__NOT_EQUAL, 2, false},
        {KEEL__COMPARE__COMPARE_TARGET__LEASE, KEEL__COMPARE__COMPARE_RESULT__EQUAL, 5, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Keel__TxnRequest *t = tu_txn(&f->a);
        Keel__Compare *c = tu_txn_compare(&f->a, t, "k", cases[i].target, cases[i].result);
        c->version = c->create_revision = c->mod_revision = c->lease = cases[i].value;
        c->target_union_case = (Keel__Compare__TargetUnionCase)(4 + cases[i].target);
        struct keel_apply_result r = ap(f, tu_cmd_txn(&f->a, t));
        assert_int_equal(r.response->txn->succeeded, cases[i].expect);
        assert_int_equal(r.revision, 2); /* no ops: no revision */
    }
    /* The operand is the oneof member the target names; another member set is no operand, the
     * zero value, as in etcd. A value target with a version set read the version as a length
     * and a NULL pointer: every member applying the txn crashed (found by fuzz_apply). */
    struct {
        Keel__Compare__CompareTarget target;
        Keel__Compare__TargetUnionCase set;
    } others[] = {
        {KEEL__COMPARE__COMPARE_TARGET__VALUE, KEEL__COMPARE__TARGET_UNION_VERSION},
        {KEEL__COMPARE__COMPARE_TARGET__VALUE, KEEL__COMPARE__TARGET_UNION__NOT_SET},
        {KEEL__COMPARE__COMPARE_TARGET__VERSION, KEEL__COMPARE__TARGET_UNION_LEASE},
        {KEEL__COMPARE__COMPARE_TARGET__LEASE, KEEL__COMPARE__TARGET_UNION_VALUE},
    };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        Keel__TxnRequest *t = tu_txn(&f->a);
        Keel__Compare *c =
            tu_txn_compare(&f->a, t, "k", others[i].target, KEEL__COMPARE__COMPARE_RESULT__GREATER);
        c->target_union_case = others[i].set;
        if (others[i].set == KEEL__COMPARE__TARGET_UNION_VALUE)
            c->value = tu_str(&f->a, "zzz");
        else
            c->version = 7; /* shares its bytes with every other member */
        /* "v" > "", version 2 > 0, lease 5 > 0 */
        assert_true(ap(f, tu_cmd_txn(&f->a, t)).response->txn->succeeded);
    }
    /* a missing key: VALUE compare is false; version compares as 0 */
    Keel__TxnRequest *t = tu_txn(&f->a);
    Keel__Compare *c = tu_txn_compare(&f->a, t, "missing", KEEL__COMPARE__COMPARE_TARGET__VALUE,
                                      KEEL__COMPARE__COMPARE_RESULT__NOT_EQUAL);
    c->value = tu_str(&f->a, "x");
    assert_false(ap(f, tu_cmd_txn(&f->a, t)).response->txn->succeeded);
    t = tu_txn(&f->a);
    tu_txn_compare(&f->a, t, "missing", KEEL__COMPARE__COMPARE_TARGET__VERSION,
                   KEEL__COMPARE__COMPARE_RESULT__EQUAL);
    assert_true(ap(f, tu_cmd_txn(&f->a, t)).response->txn->succeeded);
}

static void txn_failure_leaves_nothing(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_put(&f->a, "a", "1"));
    Keel__TxnRequest *t = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "a", "2"));
    tu_op_del(tu_txn_op(&f->a, t, 1), tu_del_req(&f->a, "c", NULL));
    Keel__PutRequest *bad = tu_put_req(&f->a, "b", "x");
    bad->lease = 1234;
    tu_op_put(tu_txn_op(&f->a, t, 1), bad);
    struct keel_apply_result r = ap(f, tu_cmd_txn(&f->a, t));
    assert_int_equal(r.err, KEEL_ELEASENOTFOUND);
    assert_int_equal(rev_of(f), 1);
    assert_kv(get(f, "a", 0), "a", "1", 1, 1, 1);
    assert_null(get(f, "b", 0));
    /* and the store keeps working afterwards in the same way */
    r = ap(f, tu_cmd_put(&f->a, "a", "3"));
    assert_int_equal(r.revision, 2);
}

static void txn_overlapping_writes_refused(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_put(&f->a, "a", "1"));
    /* etcd's rule: a put inside a range the same branch deletes, nested levels included */
    Keel__TxnRequest *t = tu_txn(&f->a);
    tu_op_del(tu_txn_op(&f->a, t, 1), tu_del_req(&f->a, "a", "b"));
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "a1", "x"));
    const char *msg = NULL;
    assert_int_equal(keel_store_validate(tu_cmd_txn(&f->a, t), NULL, &msg), KEEL_EDUPKEY);
    assert_int_equal(ap(f, tu_cmd_txn(&f->a, t)).err, KEEL_EDUPKEY);
    Keel__TxnRequest *inner = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, inner, 0), tu_put_req(&f->a, "a", "y"));
    t = tu_txn(&f->a);
    tu_op_del(tu_txn_op(&f->a, t, 1), tu_del_req(&f->a, "a", NULL));
    Keel__RequestOp *op = tu_txn_op(&f->a, t, 1);
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = inner;
    assert_int_equal(keel_store_validate(tu_cmd_txn(&f->a, t), NULL, &msg), KEEL_EDUPKEY);
    /* the two branches of a nested txn may put the same key: only one runs */
    inner = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, inner, 1), tu_put_req(&f->a, "z", "then"));
    tu_op_put(tu_txn_op(&f->a, inner, 0), tu_put_req(&f->a, "z", "else"));
    t = tu_txn(&f->a);
    op = tu_txn_op(&f->a, t, 1);
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = inner;
    assert_int_equal(keel_store_validate(tu_cmd_txn(&f->a, t), NULL, &msg), 0);
    assert_int_equal(rev_of(f), 1);
}

static void txn_nested_compares_see_the_state_before(void **state)
{
    struct fx *f = *state;
    /* etcd evaluates every compare, nested ones too, before the txn writes */
    Keel__TxnRequest *inner = tu_txn(&f->a);
    Keel__Compare *c = tu_txn_compare(&f->a, inner, "k", KEEL__COMPARE__COMPARE_TARGET__VERSION,
                                      KEEL__COMPARE__COMPARE_RESULT__EQUAL);
    c->target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
    c->version = 0;
    tu_op_put(tu_txn_op(&f->a, inner, 1), tu_put_req(&f->a, "seen", "before"));
    tu_op_put(tu_txn_op(&f->a, inner, 0), tu_put_req(&f->a, "seen", "after"));
    Keel__TxnRequest *outer = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, outer, 1), tu_put_req(&f->a, "k", "v"));
    Keel__RequestOp *op = tu_txn_op(&f->a, outer, 1);
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = inner;
    struct keel_apply_result r = ap(f, tu_cmd_txn(&f->a, outer));
    assert_int_equal(r.err, 0);
    assert_true(r.response->txn->responses[1]->response_txn->succeeded);
    assert_kv(get(f, "seen", 0), "seen", "before", 1, 1, 1);
}

static void txn_nested(void **state)
{
    struct fx *f = *state;
    Keel__TxnRequest *inner = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, inner, 1), tu_put_req(&f->a, "inner", "i"));
    Keel__TxnRequest *outer = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, outer, 1), tu_put_req(&f->a, "outer", "o"));
    Keel__RequestOp *op = tu_txn_op(&f->a, outer, 1);
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = inner;
    struct keel_apply_result r = ap(f, tu_cmd_txn(&f->a, outer));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.revision, 1);
    assert_int_equal(r.n_events, 2);
    assert_true(r.response->txn->responses[1]->response_txn->succeeded);
    assert_kv(get(f, "inner", 0), "inner", "i", 1, 1, 1);
}

/* ---- range ---- */

static void range_options(void **state)
{
    struct fx *f = *state;
    /* keys k0..k9 with values in reverse order */
    for (int i = 0; i < 10; i++) {
        char k[8], v[8];
        snprintf(k, sizeof(k), "k%d", i);
        snprintf(v, sizeof(v), "v%d", 9 - i);
        ap(f, tu_cmd_put(&f->a, k, v));
    }
    ap(f, tu_cmd_put(&f->a, "k3", "again"));
    Keel__RangeRequest *q = tu_range_req(&f->a, "k", "l");
    q->limit = 3;
    Keel__RangeResponse *r;
    int64_t rev;
    assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &rev), 0);
    assert_int_equal(rev, 11);
    assert_int_equal(r->n_kvs, 3);
    assert_int_equal(r->count, 10);
    assert_true(r->more);
    assert_kv(r->kvs[2], "k2", "v7", 3, 3, 1);

    q->limit = 0;
    q->count_only = 1;
    assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &rev), 0);
    assert_int_equal(r->n_kvs, 0);
    assert_int_equal(r->count, 10);

    q->count_only = 0;
    q->keys_only = 1;
    q->sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
    q->limit = 2;
    assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &rev), 0);
    assert_int_equal(r->n_kvs, 2);
    assert_memory_equal(r->kvs[0]->key.data, "k9", 2);
    assert_int_equal(r->kvs[0]->value.len, 0);
    assert_true(r->more);

    q->keys_only = 0;
    q->sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__ASCEND;
    q->sort_target = KEEL__RANGE_REQUEST__SORT_TARGET__VALUE;
    q->limit = 1;
    assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &rev), 0);
    assert_kv(r->kvs[0], "k3", "again", 4, 11, 2);

    q->sort_target = KEEL__RANGE_REQUEST__SORT_TARGET__MOD;
    q->sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
    assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &rev), 0);
    assert_memory_equal(r->kvs[0]->key.data, "k3", 2);

    q->sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__NONE;
    q->sort_target = KEEL__RANGE_REQUEST__SORT_TARGET__KEY;
    q->limit = 0;
    q->min_mod_revision = 5;
    q->max_mod_revision = 8;
    assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &rev), 0);
    assert_int_equal(r->n_kvs, 4); /* k4..k7 */
    assert_memory_equal(r->kvs[0]->key.data, "k4", 2);
}

static void range_past_revisions(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_put(&f->a, "a", "1"));
    ap(f, tu_cmd_put(&f->a, "b", "1"));
    ap(f, tu_cmd_del(&f->a, "a", NULL));
    ap(f, tu_cmd_put(&f->a, "b", "2"));
    Keel__RangeResponse *r;
    Keel__RangeRequest *q = tu_range_req(&f->a, "", NULL);
    q->range_end = tu_bytes(&f->a, "\0", 1);
    int64_t rev;
    int64_t expect_count[] = {0, 1, 2, 1, 1};
    for (int64_t at = 1; at <= 4; at++) {
        q->revision = at;
        assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &rev), 0);
        assert_int_equal(r->count, expect_count[at]);
    }
    q->revision = 5;
    assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &rev), KEEL_EFUTUREREV);
    assert_int_equal(tu_range(f->s, &f->a, "", NULL, 0, &r), KEEL_EINVAL);
}

/* ---- history ---- */

static void history_chunks_and_prev(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 20; i++) {
        char v[8];
        snprintf(v, sizeof(v), "%d", i);
        ap(f, tu_cmd_put(&f->a, i % 2 ? "w/odd" : "w/even", v));
        ap(f, tu_cmd_put(&f->a, "other", v));
    }
    ap(f, tu_cmd_del(&f->a, "w/", "w0")); /* rev 41, two deletes */
    int64_t from = 1;
    size_t total = 0;
    int64_t last_rev = 0;
    for (int guard = 0; guard < 100; guard++) {
        struct keel_history h;
        assert_int_equal(keel_store_history(f->s, (const uint8_t *)"w/", 2, (const uint8_t *)"w0",
                                            2, from, 3, &f->a, &h),
                         0);
        for (size_t i = 0; i < h.n_events; i++) {
            Keel__Event *e = h.events[i];
            assert_true(e->kv->mod_revision >= last_rev);
            last_rev = e->kv->mod_revision;
            assert_memory_equal(e->kv->key.data, "w/", 2);
            if (e->kv->mod_revision <= 4)
                assert_null(e->prev_kv);
            else
                assert_non_null(e->prev_kv);
        }
        total += h.n_events;
        from = h.next_revision;
        if (from > h.revision)
            break;
    }
    assert_int_equal(total, 22);
    assert_int_equal(last_rev, 41);
}

static void history_compacted(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 5; i++)
        ap(f, tu_cmd_put(&f->a, "k", "v"));
    ap(f, tu_cmd_compact(&f->a, 3));
    struct keel_history h;
    assert_int_equal(keel_store_history(f->s, (const uint8_t *)"k", 1, NULL, 0, 2, 10, &f->a, &h),
                     KEEL_ECOMPACTED);
    assert_int_equal(keel_store_history(f->s, (const uint8_t *)"k", 1, NULL, 0, 3, 10, &f->a, &h),
                     0);
    assert_int_equal(h.n_events, 3);
    assert_int_equal(h.events[0]->kv->mod_revision, 3);
}

/* ---- compaction ---- */

static void compaction_keeps_state_at_revision(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_put(&f->a, "live", "1"));  /* 1 */
    ap(f, tu_cmd_put(&f->a, "gone", "1"));  /* 2 */
    ap(f, tu_cmd_put(&f->a, "live", "2"));  /* 3 */
    ap(f, tu_cmd_del(&f->a, "gone", NULL)); /* 4 */
    ap(f, tu_cmd_put(&f->a, "later", "1")); /* 5 */
    struct keel_store_stat before;
    keel_store_stat(f->s, &before);
    struct keel_apply_result r = ap(f, tu_cmd_compact(&f->a, 4));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.revision, 5);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.compact_revision, 4);
    assert_true(st.logical_size < before.logical_size);
    Keel__RangeResponse *rr;
    assert_int_equal(tu_range(f->s, &f->a, "live", NULL, 3, &rr), KEEL_ECOMPACTED);
    assert_kv(get(f, "live", 4), "live", "2", 1, 3, 2);
    assert_null(get(f, "gone", 4));
    assert_kv(get(f, "later", 0), "later", "1", 5, 5, 1);
    /* compacting again at or below, or into the future, is refused */
    assert_int_equal(ap(f, tu_cmd_compact(&f->a, 4)).err, KEEL_ECOMPACTED);
    assert_int_equal(ap(f, tu_cmd_compact(&f->a, 6)).err, KEEL_EFUTUREREV);
    /* history from the compacted revision still holds the delete at 4 */
    struct keel_history h;
    assert_int_equal(
        keel_store_history(f->s, (const uint8_t *)"gone", 4, NULL, 0, 4, 10, &f->a, &h), 0);
    assert_int_equal(h.n_events, 1);
    assert_int_equal(h.events[0]->type, KEEL__EVENT__EVENT_TYPE__DELETE);
    /* compacting past the tombstone drops the key entirely */
    ap(f, tu_cmd_compact(&f->a, 5));
    assert_int_equal(
        keel_store_history(f->s, (const uint8_t *)"gone", 4, NULL, 0, 5, 10, &f->a, &h), 0);
    assert_int_equal(h.n_events, 0);
    assert_kv(get(f, "live", 5), "live", "2", 1, 3, 2);
}

static void compaction_of_many_versions(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 500; i++) {
        char k[16];
        snprintf(k, sizeof(k), "key%d", i % 50);
        ap(f, tu_cmd_put(&f->a, k, "value"));
        if (i % 7 == 0)
            ap(f, tu_cmd_del(&f->a, k, NULL));
    }
    int64_t rev = rev_of(f);
    Keel__RangeResponse *before;
    assert_int_equal(tu_range(f->s, &f->a, "key", "kez", 0, &before), 0);
    ap(f, tu_cmd_compact(&f->a, rev / 2));
    ap(f, tu_cmd_compact(&f->a, rev));
    Keel__RangeResponse *after;
    assert_int_equal(tu_range(f->s, &f->a, "key", "kez", rev, &after), 0);
    assert_int_equal(before->count, after->count);
    for (size_t i = 0; i < before->n_kvs; i++) {
        assert_int_equal(before->kvs[i]->mod_revision, after->kvs[i]->mod_revision);
        assert_int_equal(before->kvs[i]->version, after->kvs[i]->version);
    }
    /* only live keys' last versions remain in the history */
    struct keel_history h;
    assert_int_equal(keel_store_history(f->s, (const uint8_t *)"key", 3, (const uint8_t *)"kez", 3,
                                        rev, 10000, &f->a, &h),
                     0);
    assert_true(h.n_events <= 1);
}

/* ---- lease ---- */

static void lease_grant_revoke(void **state)
{
    struct fx *f = *state;
    struct keel_apply_result r = ap(f, tu_cmd_lease_grant(&f->a, 0, 30));
    assert_int_equal(r.err, 0);
    int64_t id = r.response->lease_grant->id;
    assert_true(id > 0);
    assert_int_equal(r.response->lease_grant->ttl, 30);
    assert_int_equal(ap(f, tu_cmd_lease_grant(&f->a, id, 30)).err, KEEL_ELEASEEXISTS);
    assert_int_equal(ap(f, tu_cmd_lease_grant(&f->a, 0, 0)).err, KEEL_EINVAL);
    ap(f, tu_cmd_lease_grant(&f->a, 100, 5));

    ap(f, tu_cmd_put_lease(&f->a, "a", "1", id));
    ap(f, tu_cmd_put_lease(&f->a, "b", "1", id));
    ap(f, tu_cmd_put_lease(&f->a, "c", "1", id));
    ap(f, tu_cmd_put(&f->a, "c", "detached")); /* a put without lease detaches */
    ap(f, tu_cmd_put_lease(&f->a, "d", "1", 100));

    struct keel_lease_info info;
    ProtobufCBinaryData *keys;
    size_t n;
    assert_int_equal(keel_store_lease_get(f->s, id, &f->a, &info, &keys, &n), 0);
    assert_int_equal(info.ttl, 30);
    assert_int_equal(n, 2);
    assert_memory_equal(keys[0].data, "a", 1);
    assert_memory_equal(keys[1].data, "b", 1);

    struct keel_lease_info *all;
    assert_int_equal(keel_store_lease_list(f->s, &f->a, &all, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(all[0].id < all[1].id, 1);

    int64_t rev = rev_of(f);
    r = ap(f, tu_cmd_lease_revoke(&f->a, id));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.revision, rev + 1);
    assert_int_equal(r.n_events, 2);
    assert_int_equal(r.events[0]->type, KEEL__EVENT__EVENT_TYPE__DELETE);
    assert_int_equal(r.events[1]->kv->mod_revision, rev + 1);
    assert_null(get(f, "a", 0));
    assert_null(get(f, "b", 0));
    assert_kv(get(f, "c", 0), "c", "detached", 3, 4, 2);
    assert_int_equal(keel_store_lease_get(f->s, id, &f->a, &info, NULL, NULL), KEEL_ELEASENOTFOUND);
    assert_int_equal(ap(f, tu_cmd_lease_revoke(&f->a, id)).err, KEEL_ELEASENOTFOUND);

    /* revoking a lease without keys takes no revision */
    ap(f, tu_cmd_del(&f->a, "d", NULL));
    rev = rev_of(f);
    assert_int_equal(ap(f, tu_cmd_lease_revoke(&f->a, 100)).revision, rev);
}

static Keel__Command *cmd_checkpoint(struct keel_arena *a, int64_t id, int64_t remaining_ms)
{
    Keel__LeaseCheckpoint *cp = keel_arena_alloc(a, sizeof(*cp));
    keel__lease_checkpoint__init(cp);
    cp->id = id;
    cp->remaining_ms = remaining_ms;
    Keel__LeaseCheckpoint **v = keel_arena_alloc(a, sizeof(*v));
    v[0] = cp;
    Keel__LeaseCheckpointRequest *r = keel_arena_alloc(a, sizeof(*r));
    keel__lease_checkpoint_request__init(r);
    r->checkpoints = v;
    r->n_checkpoints = 1;
    Keel__Command *c = keel_arena_alloc(a, sizeof(*c));
    keel__command__init(c);
    c->op_case = KEEL__COMMAND__OP_LEASE_CHECKPOINT;
    c->lease_checkpoint = r;
    return c;
}

/* A grant writes its full TTL down as the first checkpoint; a checkpoint records the leader's
 * remaining TTL (0: kept alive since) without a revision; one for a revoked lease is skipped;
 * bad ones are refused before anything changes. */
static void lease_checkpoints(void **state)
{
    struct fx *f = *state;
    int64_t id = ap(f, tu_cmd_lease_grant(&f->a, 7, 30)).response->lease_grant->id;
    struct keel_lease_info info;
    assert_int_equal(keel_store_lease_get(f->s, id, &f->a, &info, NULL, NULL), 0);
    assert_int_equal(info.checkpoint_ms, 30000);
    int64_t rev = rev_of(f);
    struct keel_apply_result r = ap(f, cmd_checkpoint(&f->a, id, 12345));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n_events, 0);
    assert_int_equal(rev_of(f), rev);
    assert_int_equal(keel_store_lease_get(f->s, id, &f->a, &info, NULL, NULL), 0);
    assert_int_equal(info.ttl, 30);
    assert_int_equal(info.checkpoint_ms, 12345);
    ap(f, cmd_checkpoint(&f->a, id, 0));
    struct keel_lease_info *all;
    size_t n;
    assert_int_equal(keel_store_lease_list(f->s, &f->a, &all, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(all[0].checkpoint_ms, 0);
    assert_int_equal(ap(f, cmd_checkpoint(&f->a, 99, 5)).err, 0); /* no such lease: skipped */
    assert_int_equal(ap(f, cmd_checkpoint(&f->a, id, -1)).err, KEEL_EINVAL);
    assert_int_equal(ap(f, cmd_checkpoint(&f->a, 0, 5)).err, KEEL_EINVAL);
    assert_int_equal(ap(f, tu_cmd_lease_grant(&f->a, 0, KEEL_LEASE_MAX_TTL + 1)).err, KEEL_EINVAL);
    assert_int_equal(keel_store_lease_get(f->s, id, &f->a, &info, NULL, NULL), 0);
    assert_int_equal(info.checkpoint_ms, 0);
}

/* ---- quota ---- */

/* The operator's disarm, as keelctl alarm disarm proposes it. */
static Keel__Command *cmd_disarm(struct keel_arena *a)
{
    Keel__AlarmRequest *ar = keel_arena_alloc(a, sizeof(*ar));
    Keel__Command *c = keel_arena_alloc(a, sizeof(*c));
    keel__alarm_request__init(ar);
    keel__command__init(c);
    ar->action = KEEL__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE;
    ar->alarm = KEEL__ALARM_MEMBER__ALARM_TYPE__NOSPACE;
    c->op_case = KEEL__COMMAND__OP_ALARM;
    c->alarm = ar;
    return c;
}

static Keel__Command *cmd_quota(struct keel_arena *a, uint64_t bytes, bool if_unset)
{
    Keel__QuotaRequest *q = keel_arena_alloc(a, sizeof(*q));
    keel__quota_request__init(q);
    q->bytes = bytes;
    q->if_unset = if_unset;
    Keel__Command *c = keel_arena_alloc(a, sizeof(*c));
    keel__command__init(c);
    c->op_case = KEEL__COMMAND__OP_QUOTA;
    c->quota = q;
    return c;
}

static int fx_setup_small(void **state)
{
    fx_setup_quota(state, 64 * 1024);
    struct fx *f = *state;
    ap(f, cmd_quota(&f->a, 64 * 1024, false));
    return 0;
}

/* The quota decides apply results, so it is cluster state, set through the log: two members
 * opened with different --quota-bytes reach the same results from the same log (issue 9,
 * hole 4: each used its own flag, and they diverged). */
static void quota_is_cluster_state(void **state)
{
    struct fx *f = *state; /* opened with the default quota */
    struct fx *g = NULL;
    fx_setup_quota((void **)&g, 64 * 1024);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_false(st.quota_set);
    assert_int_equal(st.quota_bytes, 2ull << 30);

    /* The first leader's flag, proposed "if unset", wins; a later one does not. */
    Keel__Command *first = cmd_quota(&f->a, 48 * 1024, true);
    Keel__Command *later = cmd_quota(&f->a, 1ull << 30, true);
    char value[1024];
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    int refused_at = -1;
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%03d", i);
        Keel__Command *c = i == 0 ? first : i == 1 ? later : tu_cmd_put(&f->a, k, value);
        struct keel_apply_result rf = ap(f, c), rg = ap(g, c);
        assert_int_equal(rf.err, rg.err);
        assert_int_equal(rf.revision, rg.revision);
        if (rf.err == KEEL_ENOSPACE && refused_at < 0)
            refused_at = i;
    }
    assert_true(refused_at > 30 && refused_at < 60); /* about 48 KiB of 1 KiB values */
    keel_store_stat(f->s, &st);
    assert_true(st.quota_set);
    assert_int_equal(st.quota_bytes, 48 * 1024);
    keel_store_stat(g->s, &st);
    assert_int_equal(st.quota_bytes, 48 * 1024);
    /* The refused put raised the NOSPACE alarm on both, naming the proposer. */
    assert_int_equal(st.nospace_member, 1);
    keel_store_stat(f->s, &st);
    assert_int_equal(st.nospace_member, 1);

    /* Set outright (an operator's change, later): every member follows. Writes wait for the
     * alarm to be disarmed. */
    ap(f, cmd_quota(&f->a, 1ull << 30, false));
    keel_store_stat(f->s, &st);
    assert_int_equal(st.quota_bytes, 1ull << 30);
    assert_int_equal(ap(f, tu_cmd_put(&f->a, "more", value)).err, KEEL_ENOSPACE);
    struct keel_apply_result d = ap(f, cmd_disarm(&f->a));
    assert_int_equal(d.err, 0);
    assert_int_equal(d.response->alarm->n_alarms, 1);
    assert_int_equal(d.response->alarm->alarms[0]->memberid, 1);
    assert_int_equal(ap(f, tu_cmd_put(&f->a, "more", value)).err, 0);
    /* And a quota of 0 is refused. */
    assert_int_equal(ap(f, cmd_quota(&f->a, 0, false)).err, KEEL_EINVAL);
    fx_teardown((void **)&g);
}

static void quota_refuses_puts_allows_deletes(void **state)
{
    struct fx *f = *state;
    char value[1024];
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    int nospace = 0;
    int i;
    for (i = 0; i < 200 && !nospace; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%03d", i);
        struct keel_apply_result r = ap(f, tu_cmd_put(&f->a, k, value));
        if (r.err == KEEL_ENOSPACE)
            nospace = 1;
        else
            assert_int_equal(r.err, 0);
    }
    assert_true(nospace);
    assert_true(i > 40); /* about 64 KiB of 1 KiB values fit */
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_true(st.logical_size <= 64 * 1024);
    int64_t rev = st.revision;
    /* a delete and a compaction still work and free logical space */
    struct keel_apply_result r = ap(f, tu_cmd_del(&f->a, "k", "l"));
    assert_int_equal(r.err, 0);
    ap(f, tu_cmd_compact(&f->a, rev + 1));
    /* ... but writes stay refused while the NOSPACE alarm the refused put raised is up */
    assert_int_equal(ap(f, tu_cmd_put(&f->a, "again", value)).err, KEEL_ENOSPACE);
    assert_int_equal(ap(f, tu_cmd_lease_grant(&f->a, 1, 10)).err, KEEL_ENOSPACE);
    assert_int_equal(ap(f, cmd_disarm(&f->a)).err, 0);
    r = ap(f, tu_cmd_put(&f->a, "again", value));
    assert_int_equal(r.err, 0);
    /* lease grants count too */
    assert_int_equal(ap(f, tu_cmd_lease_grant(&f->a, 1, 10)).err, 0);
}

/* ---- validate ---- */

static void validate_limits(void **state)
{
    struct fx *f = *state;
    struct keel_limits lim = {.max_txn_ops = 2, .max_value_bytes = 4};
    const char *msg = NULL;
    assert_int_equal(keel_store_validate(tu_cmd_put(&f->a, "k", "12345"), &lim, &msg),
                     KEEL_ETOOLARGE);
    assert_non_null(msg);
    Keel__TxnRequest *t = tu_txn(&f->a);
    for (int i = 0; i < 3; i++)
        tu_op_del(tu_txn_op(&f->a, t, 1), tu_del_req(&f->a, "a", NULL));
    assert_int_equal(keel_store_validate(tu_cmd_txn(&f->a, t), &lim, &msg), KEEL_ETOOMANYOPS);
    t = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "dup", "1"));
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "dup", "2"));
    assert_int_equal(keel_store_validate(tu_cmd_txn(&f->a, t), &lim, &msg), KEEL_EDUPKEY);
    /* the same txn is refused at apply with the same code */
    assert_int_equal(ap(f, tu_cmd_txn(&f->a, t)).err, KEEL_EDUPKEY);
    Keel__Command empty = KEEL__COMMAND__INIT;
    assert_int_equal(keel_store_validate(&empty, &lim, &msg), KEEL_EINVAL);
    assert_int_equal(ap(f, &empty).err, KEEL_EINVAL);
    assert_int_equal(keel_store_validate(tu_cmd_compact(&f->a, 0), &lim, &msg), KEEL_EINVAL);
    assert_int_equal(rev_of(f), 0);
}

/* ---- snapshot_restore ---- */

static void snapshot_restore_roundtrip(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof(k), "key%03d", i);
        ap(f, tu_cmd_put(&f->a, k, "value"));
    }
    ap(f, tu_cmd_lease_grant(&f->a, 9, 60));
    ap(f, tu_cmd_put_lease(&f->a, "leased", "x", 9));
    struct keel_store_stat src;
    keel_store_stat(f->s, &src);

    char *file = NULL;
    assert_true(asprintf(&file, "%s/snap", f->dir) > 0);
    FILE *fp = fopen(file, "w+");
    assert_non_null(fp);
    assert_int_equal(keel_store_snapshot(f->s, fileno(fp), false), 0);

    /* a second store, diverged, gets the copy */
    char *dir2 = tu_mkdtemp("restore");
    struct keel_store *s2 = tu_store_open(dir2, 0);
    struct keel_apply_result r;
    tu_apply(s2, 1, tu_cmd_put(&f->a, "stale", "s"), &f->a, &r);
    rewind(fp);
    assert_int_equal(keel_store_restore(s2, fileno(fp), 0), 0);
    struct keel_store_stat dst;
    keel_store_stat(s2, &dst);
    assert_int_equal(dst.applied_index, src.applied_index);
    assert_int_equal(dst.revision, src.revision);
    assert_int_equal(dst.logical_size, src.logical_size);
    Keel__RangeResponse *rr;
    assert_int_equal(tu_range(s2, &f->a, "stale", NULL, 0, &rr), 0);
    assert_int_equal(rr->count, 0);
    assert_int_equal(tu_range(s2, &f->a, "key", "kez", 0, &rr), 0);
    assert_int_equal(rr->count, 300);
    struct keel_lease_info info;
    assert_int_equal(keel_store_lease_get(s2, 9, &f->a, &info, NULL, NULL), 0);
    /* the restored store takes writes and survives reopening */
    tu_apply(s2, src.applied_index + 1, tu_cmd_put(&f->a, "after", "a"), &f->a, &r);
    assert_int_equal(r.revision, src.revision + 1);
    keel_store_close(s2);
    s2 = tu_store_open(dir2, 0);
    keel_store_stat(s2, &dst);
    assert_int_equal(dst.revision, src.revision + 1);

    /* garbage is refused and the old state kept */
    rewind(fp);
    assert_int_equal(ftruncate(fileno(fp), 0), 0);
    fputs("this is not an LMDB file", fp);
    fflush(fp);
    rewind(fp);
    assert_int_equal(keel_store_restore(s2, fileno(fp), 0), KEEL_ECORRUPT);
    keel_store_stat(s2, &dst);
    assert_int_equal(dst.revision, src.revision + 1);
    assert_int_equal(tu_range(s2, &f->a, "after", NULL, 0, &rr), 0);
    assert_int_equal(rr->count, 1);

    fclose(fp);
    keel_store_close(s2);
    tu_rmdir(dir2);
    free(dir2);
    free(file);
}

static void restore_interrupted_swap_completes(void **state)
{
    struct fx *f = *state;
    ap(f, tu_cmd_put(&f->a, "k", "new"));
    char *snap = NULL;
    assert_true(asprintf(&snap, "%s/snap", f->dir) > 0);
    FILE *fp = fopen(snap, "w");
    assert_int_equal(keel_store_snapshot(f->s, fileno(fp), false), 0);
    fclose(fp);

    /* Simulate a crash after the copy became ready and the old store was moved aside. */
    char *dir2 = tu_mkdtemp("swap");
    char *state2 = NULL, *ready = NULL, *old = NULL, *cmd = NULL;
    assert_true(asprintf(&state2, "%s/state", dir2) > 0);
    assert_true(asprintf(&ready, "%s/state.ready", dir2) > 0);
    assert_true(asprintf(&old, "%s/state.old", dir2) > 0);
    struct keel_store *s2 = tu_store_open(dir2, 0);
    keel_store_close(s2);
    assert_int_equal(rename(state2, old), 0);
    assert_true(asprintf(&cmd, "mkdir -p %s && cp %s %s/data.mdb", ready, snap, ready) > 0);
    assert_int_equal(system(cmd), 0);
    s2 = tu_store_open(dir2, 0);
    Keel__RangeResponse *rr;
    assert_int_equal(tu_range(s2, &f->a, "k", NULL, 0, &rr), 0);
    assert_int_equal(rr->n_kvs, 1);
    assert_memory_equal(rr->kvs[0]->value.data, "new", 3);
    assert_int_equal(access(old, F_OK), -1);
    assert_int_equal(access(ready, F_OK), -1);
    keel_store_close(s2);
    tu_rmdir(dir2);
    free(dir2);
    free(state2);
    free(ready);
    free(old);
    free(cmd);
    free(snap);
}

/* ---- write_batch ---- */

static void write_batch_one_transaction(void **state)
{
    struct fx *f = *state;
    struct keel_store_write *w;
    assert_int_equal(keel_store_write_begin(f->s, &w), 0);
    struct keel_apply_result r;
    for (uint64_t i = 1; i <= 64; i++) {
        char k[16];
        snprintf(k, sizeof(k), "b%02d", (int)(i % 10));
        /* gaps in indexes, as barrier entries leave them */
        assert_int_equal(keel_store_write_apply(w, i * 2, tu_cmd_put(&f->a, k, "v"), &f->a, &r), 0);
        assert_int_equal(r.revision, (int64_t)i);
    }
    /* not visible before commit */
    assert_int_equal(rev_of(f), 0);
    assert_int_equal(keel_store_write_commit(w), 0);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.revision, 64);
    assert_int_equal(st.applied_index, 128);

    /* an aborted batch leaves nothing */
    assert_int_equal(keel_store_write_begin(f->s, &w), 0);
    assert_int_equal(keel_store_write_apply(w, 200, tu_cmd_put(&f->a, "zz", "v"), &f->a, &r), 0);
    keel_store_write_abort(w);
    keel_store_stat(f->s, &st);
    assert_int_equal(st.applied_index, 128);
    assert_null(get(f, "zz", 0));

    /* reopen: state persisted */
    keel_store_close(f->s);
    f->s = tu_store_open(f->dir, 0);
    keel_store_stat(f->s, &st);
    assert_int_equal(st.revision, 64);
    assert_kv(get(f, "b03", 0), "b03", "v", 3, 63, 7);
}

/* A range over every key: its count, at the current revision, from a count the store keeps.
 * What one would find walking the keys is the reference, also in a store made before the count
 * was kept (its meta one field short), which is counted when opened. */
static int64_t count_every(struct fx *f, int64_t limit, int64_t rev, size_t *n_kvs, bool *more)
{
    static uint8_t zero = 0;
    Keel__RangeRequest *q = tu_range_req(&f->a, "", NULL);
    q->key.data = &zero;
    q->key.len = 1;
    q->range_end.data = &zero;
    q->range_end.len = 1;
    q->limit = limit;
    q->revision = rev;
    q->keys_only = true;
    Keel__RangeResponse *r;
    int64_t at;
    assert_int_equal(keel_store_range(f->s, q, &f->a, &r, &at), 0);
    *n_kvs = r->n_kvs;
    *more = r->more;
    /* The same in pages of one key each. */
    struct keel_range_pager pg;
    memset(&pg, 0, sizeof(pg));
    size_t paged = 0;
    Keel__RangeResponse *p = NULL;
    while (!pg.done) {
        assert_int_equal(keel_store_range_page(f->s, q, &pg, 1, 1, &f->a, &p, &at), 0);
        paged += p->n_kvs;
    }
    assert_int_equal(paged, r->n_kvs);
    assert_int_equal(p->count, r->count);
    assert_int_equal(p->more, r->more);
    return r->count;
}

static void range_count_of_every_key(void **state)
{
    struct fx *f = *state;
    size_t n;
    bool more;
    assert_int_equal(count_every(f, 0, 0, &n, &more), 0);
    const char *keys[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++)
        ap(f, tu_cmd_put(&f->a, keys[i], "v"));
    ap(f, tu_cmd_put(&f->a, "a", "again")); /* an update: still one key */
    int64_t four = rev_of(f);
    ap(f, tu_cmd_del(&f->a, "b", NULL));
    ap(f, tu_cmd_del(&f->a, "zz", NULL)); /* nothing to delete */
    ap(f, tu_cmd_lease_grant(&f->a, 7, 60));
    ap(f, tu_cmd_put_lease(&f->a, "e", "v", 7));
    ap(f, tu_cmd_put(&f->a, "b", "back"));
    ap(f, tu_cmd_lease_revoke(&f->a, 7)); /* deletes e */
    ap(f, tu_cmd_compact(&f->a, four));
    assert_int_equal(count_every(f, 0, 0, &n, &more), 4);
    assert_int_equal(n, 4);
    assert_false(more);
    assert_int_equal(count_every(f, 2, 0, &n, &more), 4);
    assert_int_equal(n, 2);
    assert_true(more);
    assert_int_equal(count_every(f, 4, 0, &n, &more), 4);
    assert_false(more);

    /* A store whose meta has no count: counted when opened, and kept from then on. */
    ap(f, tu_cmd_put(&f->a, "f", "v"));
    keel_store_close(f->s);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, 64u << 20);
    char path[512];
    snprintf(path, sizeof(path), "%s/state", f->dir);
    assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val mk = {1, (void *)"m"}, mv;
    assert_int_equal(mdb_get(txn, dbi, &mk, &mv), 0);
    uint8_t old[256];
    assert_true(mv.mv_size <= sizeof(old));
    memcpy(old, mv.mv_data, mv.mv_size);
    /* Without live_keys and the two auth fields after it (storage/internal.h's meta). */
    MDB_val shorter = {mv.mv_size - 3 * 8, old};
    assert_int_equal(mdb_put(txn, dbi, &mk, &shorter, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    f->s = tu_store_open(f->dir, 0);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.keys, 5);
    assert_int_equal(count_every(f, 1, 0, &n, &more), 5);
    assert_true(more);
    ap(f, tu_cmd_del(&f->a, "a", NULL));
    assert_int_equal(count_every(f, 0, 0, &n, &more), 4);
    assert_int_equal(n, 4);

    /* A past revision is walked: a, b, c, d were alive at `four`. */
    assert_int_equal(count_every(f, 1, four, &n, &more), 4);
    assert_true(more);
}

/* ---- reply bounds: what one read, txn or delete may build (issue 9, holes 1, 9, 15) ---- */

#define BIG_KEYS 3000
#define BIG_VAL  1024

/* BIG_KEYS keys of BIG_VAL bytes: about 3 MiB of values, more than one reply may carry. */
static void fill_big(struct fx *f)
{
    static char val[BIG_VAL + 1];
    memset(val, 'v', BIG_VAL);
    for (int i = 0; i < BIG_KEYS; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%05d", i);
        assert_int_equal(ap(f, tu_cmd_put(&f->a, key, val)).err, 0);
        keel_arena_reset(&f->a);
    }
}

/* A range over every key ("" to "\0"). */
static Keel__RangeRequest *all_keys(struct fx *f)
{
    Keel__RangeRequest *r = tu_range_req(&f->a, "", NULL);
    r->range_end = tu_bytes(&f->a, "\0", 1);
    return r;
}

static void range_reply_is_bounded(void **state)
{
    struct fx *f = *state;
    fill_big(f);
    Keel__RangeResponse *resp;
    int64_t rev;
    /* Whole values: refused, having built no more than the limit. */
    Keel__RangeRequest *r = all_keys(f);
    size_t before = f->a.used;
    assert_int_equal(keel_store_range(f->s, r, &f->a, &resp, &rev), KEEL_EREPLYTOOLARGE);
    /* The bound counts wire bytes; the structs around them add less than as much again. */
    assert_true(f->a.used - before <= 2 * KEEL_MAX_REPLY_BYTES);
    assert_non_null(strstr(keel_strerror(KEEL_EREPLYTOOLARGE), "2031616-byte"));
    /* A sorted range materialises all it matches: the same bound. */
    r->sort_target = KEEL__RANGE_REQUEST__SORT_TARGET__MOD;
    r->sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
    r->limit = 1;
    assert_int_equal(keel_store_range(f->s, r, &f->a, &resp, &rev), KEEL_EREPLYTOOLARGE);
    /* What fits: keys only, a limit, a count. */
    r = all_keys(f);
    r->keys_only = true;
    assert_int_equal(keel_store_range(f->s, r, &f->a, &resp, &rev), 0);
    assert_int_equal(resp->n_kvs, BIG_KEYS);
    r = all_keys(f);
    r->limit = 100;
    assert_int_equal(keel_store_range(f->s, r, &f->a, &resp, &rev), 0);
    assert_int_equal(resp->n_kvs, 100);
    assert_true(resp->more);
    assert_int_equal(resp->count, BIG_KEYS);
    r = all_keys(f);
    r->count_only = true;
    assert_int_equal(keel_store_range(f->s, r, &f->a, &resp, &rev), 0);
    assert_int_equal(resp->count, BIG_KEYS);
}

/* The Txn of hole 1: 100 keys-only ranges over the whole store plus a put. Every member used to
 * build 100 copies of the key space; now the txn is priced first and refused, untouched. */
static void txn_reads_are_priced_before_writing(void **state)
{
    struct fx *f = *state;
    fill_big(f);
    int64_t rev = rev_of(f);
    Keel__TxnRequest *t = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "written", "x"));
    for (int i = 0; i < 100; i++) {
        Keel__RangeRequest *r = all_keys(f);
        r->keys_only = true;
        tu_op_range(tu_txn_op(&f->a, t, 1), r);
    }
    Keel__Command *cmd = tu_cmd_txn(&f->a, t);
    size_t before = f->a.used;
    struct keel_apply_result res = ap(f, cmd);
    assert_int_equal(res.err, KEEL_EREPLYTOOLARGE);
    assert_true(f->a.used - before < 256 * 1024); /* priced, not built */
    assert_int_equal(rev_of(f), rev);
    assert_null(get(f, "written", 0));

    /* One range of whole values is too much on its own, in a nested txn too. */
    Keel__TxnRequest *inner = tu_txn(&f->a);
    tu_op_range(tu_txn_op(&f->a, inner, 1), all_keys(f));
    t = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "written", "x"));
    Keel__RequestOp *op = tu_txn_op(&f->a, t, 1);
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = inner;
    assert_int_equal(ap(f, tu_cmd_txn(&f->a, t)).err, KEEL_EREPLYTOOLARGE);
    assert_null(get(f, "written", 0));

    /* What fits is served as before, the txn's own write visible to its range. */
    t = tu_txn(&f->a);
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "k00000", "new"));
    Keel__RangeRequest *r = all_keys(f);
    r->limit = 3;
    tu_op_range(tu_txn_op(&f->a, t, 1), r);
    res = ap(f, tu_cmd_txn(&f->a, t));
    assert_int_equal(res.err, 0);
    Keel__RangeResponse *rr = res.response->txn->responses[1]->response_range;
    assert_int_equal(rr->n_kvs, 3);
    assert_int_equal(rr->kvs[0]->value.len, 3);
}

/* Compares over a range stream over the map: nothing copied, early exit, same answers. */
static void txn_compares_stream(void **state)
{
    struct fx *f = *state;
    fill_big(f);
    Keel__TxnRequest *t = tu_txn(&f->a);
    for (int i = 0; i < 100; i++) {
        Keel__Compare *cmp = tu_txn_compare(&f->a, t, "", KEEL__COMPARE__COMPARE_TARGET__VERSION,
                                            KEEL__COMPARE__COMPARE_RESULT__EQUAL);
        cmp->range_end = tu_bytes(&f->a, "\0", 1);
        cmp->target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
        cmp->version = 1;
    }
    tu_op_put(tu_txn_op(&f->a, t, 1), tu_put_req(&f->a, "k00001", "changed"));
    Keel__Command *cmd = tu_cmd_txn(&f->a, t);
    size_t before = f->a.used;
    struct keel_apply_result res = ap(f, cmd);
    assert_int_equal(res.err, 0);
    assert_true(res.response->txn->succeeded); /* every key has version 1 */
    assert_true(f->a.used - before < 64 * 1024);
    /* Now k00001 has version 2: the same compares fail (the scan stops there). */
    res = ap(f, cmd);
    assert_int_equal(res.err, 0);
    assert_false(res.response->txn->succeeded);
    /* A value compare over an empty range fails; a version compare sees 0. */
    t = tu_txn(&f->a);
    Keel__Compare *cmp = tu_txn_compare(&f->a, t, "none", KEEL__COMPARE__COMPARE_TARGET__VALUE,
                                        KEEL__COMPARE__COMPARE_RESULT__EQUAL);
    cmp->target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
    cmp->value = tu_str(&f->a, "");
    assert_false(ap(f, tu_cmd_txn(&f->a, t)).response->txn->succeeded);
    t = tu_txn(&f->a);
    cmp = tu_txn_compare(&f->a, t, "none", KEEL__COMPARE__COMPARE_TARGET__VERSION,
                         KEEL__COMPARE__COMPARE_RESULT__EQUAL);
    cmp->target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
    cmp->version = 0;
    assert_true(ap(f, tu_cmd_txn(&f->a, t)).response->txn->succeeded);
}

/* A delete whose reply would carry every deleted value is refused before it deletes. */
static void delete_prev_kv_is_bounded(void **state)
{
    struct fx *f = *state;
    fill_big(f);
    int64_t rev = rev_of(f);
    Keel__Command *cmd = tu_cmd_del(&f->a, "", NULL);
    cmd->delete_range->range_end = tu_bytes(&f->a, "\0", 1);
    cmd->delete_range->prev_kv = true;
    assert_int_equal(ap(f, cmd).err, KEEL_EREPLYTOOLARGE);
    assert_int_equal(rev_of(f), rev);
    assert_non_null(get(f, "k00000", 0));
    /* In a txn too. */
    Keel__TxnRequest *t = tu_txn(&f->a);
    tu_op_del(tu_txn_op(&f->a, t, 1), cmd->delete_range);
    assert_int_equal(ap(f, tu_cmd_txn(&f->a, t)).err, KEEL_EREPLYTOOLARGE);
    assert_int_equal(rev_of(f), rev);
    /* Without prev_kv the reply is a count: it goes through. */
    cmd->delete_range->prev_kv = false;
    struct keel_apply_result res = ap(f, cmd);
    assert_int_equal(res.err, 0);
    assert_int_equal(res.response->delete_range->deleted, BIG_KEYS);
}

/* ---- validate_bounds: what validating one txn may cost (issue 9, hole 9) ---- */

/* A branch of n operations, left for the caller to fill (tu_txn_op copies the array per call). */
static Keel__RequestOp **ops_n(struct keel_arena *a, size_t n)
{
    Keel__RequestOp **ops = keel_arena_alloc(a, (n ? n : 1) * sizeof(*ops));
    assert_non_null(ops);
    for (size_t i = 0; i < n; i++) {
        ops[i] = keel_arena_alloc(a, sizeof(**ops));
        assert_non_null(ops[i]);
        keel__request_op__init(ops[i]);
    }
    return ops;
}

/* The key "<prefix><i>/<j>". */
static ProtobufCBinaryData keyf(struct keel_arena *a, const char *prefix, unsigned i, unsigned j)
{
    char k[32];
    int n = snprintf(k, sizeof(k), "%s%u/%u", prefix, i, j);
    return tu_bytes(a, k, (size_t)n);
}

static void op_put_key(struct keel_arena *a, Keel__RequestOp *op, ProtobufCBinaryData key)
{
    Keel__PutRequest *p = tu_put_req(a, "", "v");
    p->key = key;
    tu_op_put(op, p);
}

static Keel__TxnRequest *op_txn(struct keel_arena *a, Keel__RequestOp *op)
{
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = tu_txn(a);
    return op->request_txn;
}

/* A chain of nested txns, levels deep: level i puts per[i] keys and holds the next level. */
static Keel__Command *txn_chain(struct keel_arena *a, int levels, const unsigned *per)
{
    Keel__TxnRequest *top = tu_txn(a), *t = top;
    for (int i = 0; i < levels; i++) {
        size_t n = per[i] + (i + 1 < levels);
        t->success = ops_n(a, n);
        t->n_success = n;
        for (unsigned j = 0; j < per[i]; j++)
            op_put_key(a, t->success[j], keyf(a, "c", (unsigned)i, j));
        if (i + 1 < levels)
            t = op_txn(a, t->success[n - 1]);
    }
    return tu_cmd_txn(a, top);
}

static void txn_total_ops_capped(void **state)
{
    struct fx *f = *state;
    const char *msg = NULL;
    /* 9 levels (the deepest nesting) of 113 puts each, 8 of them holding the next: 1025
     * operations, each level well inside etcd's 128. The total is bounded by 8 x 128. */
    unsigned per[9];
    for (int i = 0; i < 9; i++)
        per[i] = 113;
    Keel__Command *over = txn_chain(&f->a, 9, per);
    assert_int_equal(keel_store_validate(over, NULL, &msg), KEEL_ETOOMANYOPS);
    assert_non_null(strstr(msg, "txn has 1025 operations and compares across its nested txns"));
    assert_non_null(strstr(msg, "limit of 1024"));
    per[8] = 112;
    Keel__Command *at = txn_chain(&f->a, 9, per);
    assert_int_equal(keel_store_validate(at, NULL, &msg), 0);
    /* Compares count too. */
    tu_txn_compare(&f->a, at->txn, "c", KEEL__COMPARE__COMPARE_TARGET__VERSION,
                   KEEL__COMPARE__COMPARE_RESULT__EQUAL);
    assert_int_equal(keel_store_validate(at, NULL, &msg), KEEL_ETOOMANYOPS);
    /* The total follows the per-level limit unless it is given; a given one is kept. */
    struct keel_limits wider = {.max_txn_ops = 200};
    assert_int_equal(keel_store_validate(over, &wider, &msg), 0);
    struct keel_limits total = {.max_txn_total_ops = 1000};
    assert_int_equal(keel_store_validate(at, &total, &msg), KEEL_ETOOMANYOPS);
    assert_non_null(strstr(msg, "limit of 1000"));

    /* Wide: 128 nested txns of 127 + 127 puts, 32640 operations in under 500 KB, which every
     * level's limit let through. */
    Keel__TxnRequest *t = tu_txn(&f->a);
    t->success = ops_n(&f->a, 128);
    t->n_success = 128;
    for (unsigned i = 0; i < 128; i++) {
        Keel__TxnRequest *in = op_txn(&f->a, t->success[i]);
        in->success = ops_n(&f->a, 127);
        in->failure = ops_n(&f->a, 127);
        in->n_success = in->n_failure = 127;
        for (unsigned j = 0; j < 127; j++) {
            op_put_key(&f->a, in->success[j], keyf(&f->a, "w", i, j));
            op_put_key(&f->a, in->failure[j], keyf(&f->a, "w", i, j));
        }
    }
    Keel__Command *wide = tu_cmd_txn(&f->a, t);
    assert_true(keel__command__get_packed_size(wide) < 1536 * 1024);
    assert_int_equal(keel_store_validate(wide, NULL, &msg), KEEL_ETOOMANYOPS);
    assert_non_null(strstr(msg, "txn has 32640 operations"));
    struct keel_limits none = {.max_txn_total_ops = SIZE_MAX};
    assert_int_equal(keel_store_validate(wide, &none, &msg), 0);

    /* etcd's per-level meaning stays: 128 compares and 128 operations in each branch pass, 129
     * in one branch do not, however few the total. */
    t = tu_txn(&f->a);
    for (int i = 0; i < 128; i++)
        tu_txn_compare(&f->a, t, "c", KEEL__COMPARE__COMPARE_TARGET__VERSION,
                       KEEL__COMPARE__COMPARE_RESULT__EQUAL);
    t->success = ops_n(&f->a, 129);
    t->failure = ops_n(&f->a, 128);
    t->n_success = t->n_failure = 128;
    for (unsigned j = 0; j < 129; j++) {
        op_put_key(&f->a, t->success[j], keyf(&f->a, "s", j, 0));
        if (j < 128)
            op_put_key(&f->a, t->failure[j], keyf(&f->a, "f", j, 0));
    }
    Keel__Command *flat = tu_cmd_txn(&f->a, t);
    assert_int_equal(keel_store_validate(flat, NULL, &msg), 0);
    t->n_success = 129;
    assert_int_equal(keel_store_validate(flat, NULL, &msg), KEEL_ETOOMANYOPS);
    assert_string_equal(msg, "too many operations in txn request");

    /* Apply counts no total: an entry any member's intake took, under any configuration or an
     * older keel's, applies the same everywhere. */
    struct keel_apply_result r = ap(f, over);
    assert_int_equal(r.err, 0);
    assert_non_null(get(f, "c8/112", 0));
}

/*
 * The rule as etcd's checkIntervals states it, and as keel checked it before: every put against
 * every put and delete seen so far. Quadratic, kept as the reference the sweep must agree with.
 */
struct ref_ival {
    const uint8_t *s, *e;
    size_t sl, el;
    bool point;
};

struct ref_set {
    struct ref_ival v[256];
    size_t n;
};

static int ref_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (al < bl ? -1 : al > bl);
}

static bool ref_in_dels(const struct ref_set *dels, const struct ref_ival *p)
{
    for (size_t i = 0; i < dels->n; i++) {
        const struct ref_ival *d = &dels->v[i];
        if (d->point ? ref_cmp(d->s, d->sl, p->s, p->sl) == 0
                     : ref_cmp(p->s, p->sl, d->s, d->sl) >= 0 &&
                           (d->e == NULL || ref_cmp(p->s, p->sl, d->e, d->el) < 0))
            return true;
    }
    return false;
}

static bool ref_in_puts(const struct ref_set *puts, const struct ref_ival *p)
{
    for (size_t i = 0; i < puts->n; i++)
        if (ref_cmp(puts->v[i].s, puts->v[i].sl, p->s, p->sl) == 0)
            return true;
    return false;
}

static void ref_push(struct ref_set *s, struct ref_ival x)
{
    assert_true(s->n < sizeof(s->v) / sizeof(s->v[0]));
    s->v[s->n++] = x;
}

/* true: the writes conflict. puts and dels get what the level passes up. */
static bool ref_conflict(Keel__RequestOp **ops, size_t n, struct ref_set *puts,
                         struct ref_set *dels)
{
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE)
            continue;
        const Keel__DeleteRangeRequest *d = ops[i]->request_delete_range;
        struct ref_ival x = {d->key.data, NULL, d->key.len, 0, d->range_end.len == 0};
        if (d->range_end.len > 0 && !(d->range_end.len == 1 && d->range_end.data[0] == 0)) {
            x.e = d->range_end.data;
            x.el = d->range_end.len;
        }
        ref_push(dels, x);
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_TXN)
            continue;
        const Keel__TxnRequest *t = ops[i]->request_txn;
        struct ref_set *pt = calloc(4, sizeof(*pt)), *dt = pt + 1, *pe = pt + 2, *de = pt + 3;
        bool bad = ref_conflict(t->success, t->n_success, pt, dt) ||
                   ref_conflict(t->failure, t->n_failure, pe, de);
        for (size_t j = 0; !bad && j < pt->n; j++) {
            bad = ref_in_puts(puts, &pt->v[j]) || ref_in_dels(dels, &pt->v[j]);
            if (!bad)
                ref_push(puts, pt->v[j]);
        }
        for (size_t j = 0; !bad && j < pe->n; j++) {
            bool then_put = ref_in_puts(pt, &pe->v[j]);
            bad = (ref_in_puts(puts, &pe->v[j]) && !then_put) || ref_in_dels(dels, &pe->v[j]);
            if (!bad && !then_put)
                ref_push(puts, pe->v[j]);
        }
        for (size_t j = 0; !bad && j < dt->n; j++)
            ref_push(dels, dt->v[j]);
        for (size_t j = 0; !bad && j < de->n; j++)
            ref_push(dels, de->v[j]);
        free(pt);
        if (bad)
            return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_PUT)
            continue;
        const Keel__PutRequest *p = ops[i]->request_put;
        struct ref_ival x = {p->key.data, NULL, p->key.len, 0, true};
        if (ref_in_puts(puts, &x) || ref_in_dels(dels, &x))
            return true;
        ref_push(puts, x);
    }
    return false;
}

static bool ref_txn_conflict(const Keel__TxnRequest *t)
{
    struct ref_set *s = calloc(2, sizeof(*s));
    bool bad = ref_conflict(t->success, t->n_success, &s[0], &s[1]);
    memset(s, 0, 2 * sizeof(*s));
    bad = bad || ref_conflict(t->failure, t->n_failure, &s[0], &s[1]);
    free(s);
    return bad;
}

/* Few keys, so that writes meet often: points, spans (empty ones too), open ends, "" starts. */
static const char *const rkeys[] = {"a", "aa", "ab", "b", "ba", "c"};
static const char *const rends[] = {"a", "ab", "b", "bb", "c", "d"};

static void rand_branch(struct keel_arena *a, Keel__TxnRequest *t, int success, uint64_t *rs,
                        int depth)
{
    int n = (int)(tu_rand(rs) % 4);
    for (int i = 0; i < n; i++) {
        Keel__RequestOp *op = tu_txn_op(a, t, success);
        unsigned r = (unsigned)(tu_rand(rs) % 10);
        const char *k = rkeys[tu_rand(rs) % 6], *e = rends[tu_rand(rs) % 6];
        if (r >= 7 && depth < 3) {
            Keel__TxnRequest *in = op_txn(a, op);
            rand_branch(a, in, 1, rs, depth + 1);
            rand_branch(a, in, 0, rs, depth + 1);
        } else if (r >= 4 && r < 7) {
            Keel__DeleteRangeRequest *d;
            switch (tu_rand(rs) % 4) {
            case 0:
                d = tu_del_req(a, k, NULL);
                break;
            case 1:
                d = tu_del_req(a, k, e);
                break;
            case 2:
                d = tu_del_req(a, k, NULL);
                d->range_end = tu_bytes(a, "\0", 1);
                break;
            default:
                d = tu_del_req(a, "", e);
            }
            tu_op_del(op, d);
        } else if (r == 3) {
            tu_op_range(op, tu_range_req(a, k, NULL));
        } else {
            tu_op_put(op, tu_put_req(a, k, "v"));
        }
    }
}

static void txn_overlap_rule_matches_reference(void **state)
{
    struct fx *f = *state;
    uint64_t rs = tu_seed("txn_overlap_rule_matches_reference");
    int verdicts[2] = {0, 0};
    for (int i = 0; i < 20000; i++) {
        Keel__TxnRequest *t = tu_txn(&f->a);
        rand_branch(&f->a, t, 1, &rs, 0);
        rand_branch(&f->a, t, 0, &rs, 0);
        const char *msg = NULL;
        int err = keel_store_validate(tu_cmd_txn(&f->a, t), NULL, &msg);
        assert_true(err == 0 || err == KEEL_EDUPKEY);
        bool want = ref_txn_conflict(t);
        if ((err == KEEL_EDUPKEY) != want) {
            size_t n = keel__txn_request__get_packed_size(t);
            uint8_t *buf = malloc(n);
            keel__txn_request__pack(t, buf);
            fprintf(stderr, "trial %d: validate %s, reference %s; TxnRequest:", i,
                    keel_err_name(err), want ? "conflict" : "no conflict");
            for (size_t j = 0; j < n; j++)
                fprintf(stderr, " %02x", buf[j]);
            fprintf(stderr, "\n");
            free(buf);
            fail();
        }
        verdicts[want]++;
        keel_arena_reset(&f->a);
    }
    printf("accepted %d, refused %d\n", verdicts[0], verdicts[1]);
    /* Both verdicts well represented, or the comparison shows little. */
    assert_true(verdicts[0] > 4000 && verdicts[1] > 4000);
}

/* n writes no two of which meet: point and span deletes, a nested txn whose two branches put
 * the same keys, and puts of the level. */
static Keel__Command *txn_of_writes(struct keel_arena *a, unsigned n)
{
    Keel__TxnRequest *t = tu_txn(a);
    unsigned q = n / 4, e = n / 8;
    t->success = ops_n(a, 2 * e + 1 + q);
    t->n_success = 2 * e + 1 + q;
    Keel__RequestOp **op = t->success;
    for (unsigned i = 0; i < e; i++) {
        tu_op_del(*op++, tu_del_req(a, "", NULL));
        op[-1]->request_delete_range->key = keyf(a, "d", i, 0);
        Keel__DeleteRangeRequest *d = tu_del_req(a, "", NULL);
        d->key = keyf(a, "r", i, 0);
        d->range_end = keyf(a, "r", i, 1);
        tu_op_del(*op++, d);
    }
    Keel__TxnRequest *in = op_txn(a, *op++);
    in->success = ops_n(a, q);
    in->failure = ops_n(a, q);
    in->n_success = in->n_failure = q;
    for (unsigned i = 0; i < q; i++) {
        op_put_key(a, in->success[i], keyf(a, "n", i, 0));
        op_put_key(a, in->failure[i], keyf(a, "n", i, 0));
        op_put_key(a, *op++, keyf(a, "p", i, 0));
    }
    return tu_cmd_txn(a, t);
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double validate_ms(const Keel__Command *cmd, int reps)
{
    const struct keel_limits none = {.max_txn_ops = SIZE_MAX, .max_txn_total_ops = SIZE_MAX};
    const char *msg = NULL;
    double t0 = cpu_ms();
    for (int i = 0; i < reps; i++)
        assert_int_equal(keel_store_validate(cmd, &none, &msg), 0);
    return cpu_ms() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/*
 * The work of the overlap check grows with n log n, not n^2: validating four times the writes
 * costs about five times as much (quadratic: sixteen times); the bound sits between the two, a
 * factor of two from each. This thread's CPU time, so other processes on the machine do not
 * count; medians of interleaved samples, each long enough to time.
 */
static void txn_overlap_check_is_not_quadratic(void **state)
{
    struct fx *f = *state;
    enum { N = 2048, SAMPLES = 7 };
    Keel__Command *small = txn_of_writes(&f->a, N), *big = txn_of_writes(&f->a, 4 * N);
    int reps = 1;
    while (validate_ms(small, reps) < 40 && reps < (1 << 16))
        reps *= 2;
    double ts[SAMPLES], tb[SAMPLES];
    for (int i = 0; i < SAMPLES; i++) {
        ts[i] = validate_ms(small, reps);
        tb[i] = validate_ms(big, reps);
    }
    qsort(ts, SAMPLES, sizeof(double), cmp_double);
    qsort(tb, SAMPLES, sizeof(double), cmp_double);
    double ratio = tb[SAMPLES / 2] / ts[SAMPLES / 2];
    printf("%d writes: %.2f ms, %d: %.2f ms (x%d): ratio %.2f\n", N, ts[SAMPLES / 2] / reps, 4 * N,
           tb[SAMPLES / 2] / reps, reps, ratio);
    assert_true(ratio < 8.0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(int argc, char **argv)
{
    const struct CMUnitTest put[] = {T(put_creates_and_updates), T(put_after_delete_resets_version),
                                     T(put_ignore_value_and_lease), T(put_rejects_bad_keys),
                                     T(put_skips_applied_index)};
    const struct CMUnitTest delete_range[] = {T(delete_range_conventions), T(delete_single_key)};
    const struct CMUnitTest txn[] = {
        T(txn_compare_branches),           T(txn_compare_targets),
        T(txn_failure_leaves_nothing),     T(txn_nested),
        T(txn_overlapping_writes_refused), T(txn_nested_compares_see_the_state_before)};
    const struct CMUnitTest range[] = {T(range_options), T(range_past_revisions),
                                       T(range_count_of_every_key)};
    const struct CMUnitTest history[] = {T(history_chunks_and_prev), T(history_compacted)};
    const struct CMUnitTest compaction[] = {T(compaction_keeps_state_at_revision),
                                            T(compaction_of_many_versions)};
    const struct CMUnitTest lease[] = {T(lease_grant_revoke), T(lease_checkpoints)};
    const struct CMUnitTest quota[] = {
        cmocka_unit_test_setup_teardown(quota_refuses_puts_allows_deletes, fx_setup_small,
                                        fx_teardown),
        T(quota_is_cluster_state)};
    const struct CMUnitTest validate[] = {T(validate_limits)};
    const struct CMUnitTest snapshot_restore[] = {T(snapshot_restore_roundtrip),
                                                  T(restore_interrupted_swap_completes)};
    const struct CMUnitTest write_batch[] = {T(write_batch_one_transaction)};
    const struct CMUnitTest reply_bounds[] = {T(range_reply_is_bounded),
                                              T(txn_reads_are_priced_before_writing),
                                              T(txn_compares_stream), T(delete_prev_kv_is_bounded)};
    const struct CMUnitTest validate_bounds[] = {T(txn_total_ops_capped),
                                                 T(txn_overlap_rule_matches_reference),
                                                 T(txn_overlap_check_is_not_quadratic)};
    const struct tu_group groups[] = {
        TU_GROUP(put),
        TU_GROUP(delete_range),
        TU_GROUP(txn),
        TU_GROUP(range),
        TU_GROUP(history),
        TU_GROUP(compaction),
        TU_GROUP(lease),
        TU_GROUP(quota),
        TU_GROUP(validate),
        TU_GROUP(snapshot_restore),
        TU_GROUP(write_batch),
        TU_GROUP(reply_bounds),
        TU_GROUP(validate_bounds),
    };
    return tu_run_groups("test_store", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
