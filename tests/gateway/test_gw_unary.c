/*
 * keel-gateway's unary handlers (kv.c, lease.c, cluster.c, maint.c over unary.c) against a real
 * 3-member keel cluster: `test_gw_unary <group>`, one ctest entry each. Each handler is driven
 * through a fake call (tests/gateway/fakecall.h) on the test's loop with a real libkeel client,
 * and what it answers is checked against etcd 3.4's contract (etcd-api.md §2-§3).
 *
 *   kv       Range with every field (limit/more/count, sort, keys/count only, revision, min/max
 *            filters, from-key, serializable), Put (prev_kv, ignore_value/lease), DeleteRange,
 *            etcd's check errors, compaction with the compacted / future revision errors
 *   txn      compares of every target and result (range_end, oneof set to 0 and unset),
 *            success/failure branches with nested responses and their headers, nested txns
 *   lease    grant/ttl/leases/revoke, put under an unknown lease, TTL limits
 *   cluster  member list (clientURLs = the advertised URLs), status, alarm, defragment, the
 *            Unimplemented answers, Auth with authentication disabled (auth.c)
 *   cancel   a call cancelled while its keel request is in flight finishes exactly once,
 *            CANCELLED, sends nothing and leaks nothing (ASan/LSan)
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
#include <openssl/evp.h>

#include "cluster.h"
#include "fakecall.h"
#include "keel/keel.h"
#include "methods.h"
#include "testutil.h"

#define CALL_TIMEOUT_MS 10000

static struct {
    struct tc_cluster tc;
    uv_loop_t loop;
    struct gw_ctx ctx;
    char *urls[2];
    char eps[512];
} E;

static void on_closed(void *data)
{
    *(bool *)data = true;
}

static ProtobufCBinaryData B(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

static bool same(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.data, s, b.len) == 0;
}

/* Run one call of the method at grpc path with msg to its end; f holds what it answered. */
static void run(struct fake_call *f, const char *path, const void *msg)
{
    const struct gw_method *m = gw_method_by_grpc_path(path, strlen(path));
    if (!m)
        fail_msg("no method %s", path);
    fake_call_init(f, &E.ctx, m);
    fake_call_deliver(f, (const ProtobufCMessage *)msg);
    if (!fake_call_wait(f, &E.loop, 0, CALL_TIMEOUT_MS))
        fail_msg("%s did not finish", path);
}

/* run, expecting success with one response; returns it (valid until fake_call_clear). */
static void *ok(struct fake_call *f, const char *path, const void *msg)
{
    run(f, path, msg);
    if (f->code != GW_OK)
        fail_msg("%s: code %d: %s", path, f->code, f->message);
    assert_int_equal(f->n_sent, 1);
    return f->sent[0];
}

/* run, expecting the error code and exact message. */
static void fails(const char *path, const void *msg, enum gw_code code, const char *message)
{
    struct fake_call f;
    run(&f, path, msg);
    if (f.code != code || strcmp(f.message, message) != 0)
        fail_msg("%s: got %d \"%s\", want %d \"%s\"", path, f.code, f.message, code, message);
    assert_int_equal(f.n_sent, 0);
    fake_call_clear(&f);
}

/* A header from keel's: cluster, member and term set (revision: see check_header). */
static void check_member_header(const Etcdserverpb__ResponseHeader *h)
{
    assert_non_null(h);
    assert_true(h->cluster_id != 0);
    assert_true(h->member_id != 0);
    assert_true(h->raft_term > 0);
}

/* ... and a revision: every test has written before (a member list or status may come from a
 * follower that has not applied that write yet: those use check_member_header). */
static void check_header(const Etcdserverpb__ResponseHeader *h)
{
    check_member_header(h);
    assert_true(h->revision > 0);
}

static int64_t put_full(const char *key, const char *value, int64_t lease)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B(key);
    p.value = B(value);
    p.lease = lease;
    struct fake_call f;
    Etcdserverpb__PutResponse *r = ok(&f, "/etcdserverpb.KV/Put", &p);
    check_header(r->header);
    int64_t rev = r->header->revision;
    fake_call_clear(&f);
    return rev;
}

static int64_t put(const char *key, const char *value)
{
    return put_full(key, value, 0);
}

static void env_up(const char *tag)
{
    tc_cluster_init(&E.tc, 3, tag);
    tc_start_all(&E.tc);
    assert_int_equal(uv_loop_init(&E.loop), 0);
    tc_endpoints(&E.tc, 0, E.eps, sizeof(E.eps));
    struct keel_options o = {
        .endpoints = E.eps, .request_timeout_ms = 5000, .dial_timeout_ms = 500};
    assert_int_equal(keel_aclient_init(&E.ctx.ac, &E.loop, &o), 0);
    E.ctx.endpoints = E.eps;
    E.urls[0] = "http://127.0.0.1:32090";
    E.urls[1] = "http://gw.example:2379";
    E.ctx.loop = &E.loop;
    E.ctx.advertise_urls = E.urls;
    E.ctx.n_advertise_urls = 2;
    E.ctx.zone = "";
    E.ctx.request_timeout_ms = 5000;
    E.ctx.max_request_bytes = 1536 * 1024;
    /* Wait (bounded) for a leader: the first put that succeeds. */
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("/ready");
    p.value = B("1");
    for (int i = 0;; i++) {
        struct fake_call f;
        run(&f, "/etcdserverpb.KV/Put", &p);
        fake_call_clear(&f);
        if (f.code == GW_OK)
            break;
        if (i == 10)
            fail_msg("cluster not ready: %s", f.message);
        tu_sleep_ms(500);
    }
}

static void env_down(void)
{
    bool closed = false;
    keel_aclient_close(E.ctx.ac, on_closed, &closed);
    for (int i = 0; i < 1000 && !closed; i++)
        uv_run(&E.loop, UV_RUN_ONCE);
    assert_true(closed);
    uv_run(&E.loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&E.loop), 0);
    tc_cluster_close(&E.tc);
}

/* ---- kv ---- */

static Etcdserverpb__RangeResponse *range(struct fake_call *f, Etcdserverpb__RangeRequest *r)
{
    Etcdserverpb__RangeResponse *rr = ok(f, "/etcdserverpb.KV/Range", r);
    check_header(rr->header);
    return rr;
}

static void assert_keys(const Etcdserverpb__RangeResponse *rr, const char *const *keys, size_t n)
{
    if (rr->n_kvs != n) {
        for (size_t i = 0; i < rr->n_kvs; i++)
            print_error("got %.*s\n", (int)rr->kvs[i]->key.len, (const char *)rr->kvs[i]->key.data);
        fail_msg("%zu kvs, want %zu (first %s)", rr->n_kvs, n, n ? keys[0] : "");
    }
    for (size_t i = 0; i < n; i++)
        if (!same(rr->kvs[i]->key, keys[i]))
            fail_msg("kvs[%zu] is %.*s, want %s", i, (int)rr->kvs[i]->key.len,
                     (const char *)rr->kvs[i]->key.data, keys[i]);
}

static void kv(void **state)
{
    (void)state;
    env_up("gw-unary-kv");
    struct fake_call f;

    /* etcd's checks, before anything is sent. */
    Etcdserverpb__RangeRequest empty_r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    fails("/etcdserverpb.KV/Range", &empty_r, GW_INVALID_ARGUMENT,
          "etcdserver: key is not provided");
    Etcdserverpb__PutRequest bad_p = ETCDSERVERPB__PUT_REQUEST__INIT;
    fails("/etcdserverpb.KV/Put", &bad_p, GW_INVALID_ARGUMENT, "etcdserver: key is not provided");
    bad_p.key = B("/kv/x");
    bad_p.value = B("v");
    bad_p.ignore_value = true;
    fails("/etcdserverpb.KV/Put", &bad_p, GW_INVALID_ARGUMENT, "etcdserver: value is provided");
    bad_p.value = B("");
    bad_p.ignore_value = false;
    bad_p.ignore_lease = true;
    bad_p.lease = 7;
    fails("/etcdserverpb.KV/Put", &bad_p, GW_INVALID_ARGUMENT, "etcdserver: lease is provided");
    Etcdserverpb__DeleteRangeRequest empty_d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    fails("/etcdserverpb.KV/DeleteRange", &empty_d, GW_INVALID_ARGUMENT,
          "etcdserver: key is not provided");
    /* ignore_value on a key that does not exist: keel's answer, etcd's words. */
    Etcdserverpb__PutRequest iv = ETCDSERVERPB__PUT_REQUEST__INIT;
    iv.key = B("/kv/missing");
    iv.ignore_value = true;
    fails("/etcdserverpb.KV/Put", &iv, GW_INVALID_ARGUMENT, "etcdserver: key not found");

    /* /kv/a..e, written so that versions, create and mod revisions and values all differ in
     * order from the keys. */
    int64_t r_c = put("/kv/c", "3");
    int64_t r_a = put("/kv/a", "5");
    int64_t r_e = put("/kv/e", "1");
    int64_t r_b = put("/kv/b", "4");
    int64_t r_d = put("/kv/d", "2");
    int64_t r_a2 = put("/kv/a", "5");
    int64_t r_a3 = put("/kv/a", "5");
    put("/kw", "outside"); /* past the prefix's end */
    int64_t cur = put("/kv/d", "2");
    (void)r_c;
    (void)r_e;
    (void)r_d;

    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("/kv/");
    r.range_end = B("/kv0");
    Etcdserverpb__RangeResponse *rr = range(&f, &r);
    const char *asc[] = {"/kv/a", "/kv/b", "/kv/c", "/kv/d", "/kv/e"};
    assert_keys(rr, asc, 5);
    assert_int_equal(rr->count, 5);
    assert_false(rr->more);
    assert_int_equal(rr->header->revision, cur);
    assert_int_equal(rr->kvs[0]->version, 3);
    assert_int_equal(rr->kvs[0]->create_revision, r_a);
    assert_int_equal(rr->kvs[0]->mod_revision, r_a3);
    assert_true(same(rr->kvs[0]->value, "5"));
    assert_int_equal(rr->kvs[0]->lease, 0);
    fake_call_clear(&f);

    /* limit: more and count ignore the limit. */
    r.limit = 2;
    rr = range(&f, &r);
    assert_keys(rr, asc, 2);
    assert_true(rr->more);
    assert_int_equal(rr->count, 5);
    fake_call_clear(&f);
    r.limit = 0;

    /* sort: key descending; version descending; NONE with a target other than KEY ascends;
     * value ascending. */
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    rr = range(&f, &r);
    const char *desc[] = {"/kv/e", "/kv/d", "/kv/c", "/kv/b", "/kv/a"};
    assert_keys(rr, desc, 5);
    fake_call_clear(&f);
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION;
    rr = range(&f, &r);
    assert_true(same(rr->kvs[0]->key, "/kv/a")); /* version 3 */
    assert_true(same(rr->kvs[1]->key, "/kv/d")); /* version 2 */
    fake_call_clear(&f);
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE;
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
    rr = range(&f, &r);
    const char *by_create[] = {"/kv/c", "/kv/a", "/kv/e", "/kv/b", "/kv/d"};
    assert_keys(rr, by_create, 5);
    fake_call_clear(&f);
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE;
    rr = range(&f, &r);
    const char *by_value[] = {"/kv/e", "/kv/d", "/kv/c", "/kv/b", "/kv/a"};
    assert_keys(rr, by_value, 5);
    fake_call_clear(&f);
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD;
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    r.limit = 1;
    rr = range(&f, &r);
    const char *last_mod[] = {"/kv/d"};
    assert_keys(rr, last_mod, 1);
    assert_true(rr->more);
    fake_call_clear(&f);
    r.limit = 0;
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE;
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY;

    /* keys_only, count_only, serializable. */
    r.keys_only = true;
    rr = range(&f, &r);
    assert_keys(rr, asc, 5);
    for (size_t i = 0; i < rr->n_kvs; i++)
        assert_int_equal(rr->kvs[i]->value.len, 0);
    assert_int_equal(rr->kvs[0]->mod_revision, r_a3);
    fake_call_clear(&f);
    r.keys_only = false;
    r.count_only = true;
    rr = range(&f, &r);
    assert_int_equal(rr->n_kvs, 0);
    assert_int_equal(rr->count, 5);
    fake_call_clear(&f);
    r.count_only = false;
    /* serializable: served by any member, which may lag a little behind the last write. */
    r.serializable = true;
    long long deadline = tc_now_ms() + 10000;
    for (;;) {
        rr = range(&f, &r);
        int64_t n = rr->count;
        fake_call_clear(&f);
        if (n == 5)
            break;
        assert_true(tc_now_ms() < deadline);
        tu_sleep_ms(50);
    }
    r.serializable = false;

    /* min/max filters: count still counts the whole range. */
    r.min_mod_revision = r_b;
    rr = range(&f, &r);
    const char *mod_ge_b[] = {"/kv/a", "/kv/b", "/kv/d"};
    assert_keys(rr, mod_ge_b, 3);
    assert_int_equal(rr->count, 5);
    fake_call_clear(&f);
    r.max_mod_revision = r_a2;
    rr = range(&f, &r);
    const char *mod_b_a2[] = {"/kv/b"};
    assert_keys(rr, mod_b_a2, 1);
    fake_call_clear(&f);
    r.min_mod_revision = r.max_mod_revision = 0;
    r.min_create_revision = r_a;
    r.max_create_revision = r_b;
    rr = range(&f, &r);
    const char *create_a_b[] = {"/kv/a", "/kv/b", "/kv/e"};
    assert_keys(rr, create_a_b, 3);
    fake_call_clear(&f);
    r.min_create_revision = r.max_create_revision = 0;

    /* An old revision: the values then, the header at the current revision. */
    r.revision = r_b;
    rr = range(&f, &r);
    const char *at_b[] = {"/kv/a", "/kv/b", "/kv/c", "/kv/e"};
    assert_keys(rr, at_b, 4);
    assert_int_equal(rr->kvs[0]->version, 1);
    assert_int_equal(rr->header->revision, cur);
    fake_call_clear(&f);
    r.revision = 0;

    /* from-key: range_end "\0" is every key >= key. */
    Etcdserverpb__RangeRequest fk = ETCDSERVERPB__RANGE_REQUEST__INIT;
    fk.key = B("/kv/d");
    fk.range_end = (ProtobufCBinaryData){1, (uint8_t *)""};
    rr = range(&f, &fk);
    const char *from_d[] = {"/kv/d", "/kv/e", "/kw", "/ready"};
    assert_keys(rr, from_d, 4);
    fake_call_clear(&f);

    /* One key; a key that is not there. */
    Etcdserverpb__RangeRequest one = ETCDSERVERPB__RANGE_REQUEST__INIT;
    one.key = B("/kv/c");
    rr = range(&f, &one);
    assert_int_equal(rr->n_kvs, 1);
    assert_int_equal(rr->count, 1);
    fake_call_clear(&f);
    one.key = B("/kv/zz");
    rr = range(&f, &one);
    assert_int_equal(rr->n_kvs, 0);
    assert_int_equal(rr->count, 0);
    fake_call_clear(&f);

    /* Put prev_kv, ignore_value. */
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("/kv/c");
    p.value = B("33");
    p.prev_kv = true;
    Etcdserverpb__PutResponse *pr = ok(&f, "/etcdserverpb.KV/Put", &p);
    check_header(pr->header);
    assert_int_equal(pr->header->revision, cur + 1);
    assert_non_null(pr->prev_kv);
    assert_true(same(pr->prev_kv->value, "3"));
    assert_int_equal(pr->prev_kv->mod_revision, r_c);
    fake_call_clear(&f);
    p.value = B("");
    p.prev_kv = false;
    p.ignore_value = true;
    pr = ok(&f, "/etcdserverpb.KV/Put", &p);
    assert_null(pr->prev_kv);
    fake_call_clear(&f);
    one.key = B("/kv/c");
    rr = range(&f, &one);
    assert_true(same(rr->kvs[0]->value, "33"));
    assert_int_equal(rr->kvs[0]->version, 3);
    fake_call_clear(&f);

    /* DeleteRange with prev_kv. */
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key = B("/kv/d");
    d.range_end = B("/kv/f");
    d.prev_kv = true;
    Etcdserverpb__DeleteRangeResponse *dr = ok(&f, "/etcdserverpb.KV/DeleteRange", &d);
    check_header(dr->header);
    assert_int_equal(dr->deleted, 2);
    assert_int_equal(dr->n_prev_kvs, 2);
    assert_true(same(dr->prev_kvs[0]->key, "/kv/d"));
    assert_true(same(dr->prev_kvs[1]->value, "1"));
    int64_t after_delete = dr->header->revision;
    fake_call_clear(&f);
    d.prev_kv = false;
    dr = ok(&f, "/etcdserverpb.KV/DeleteRange", &d);
    assert_int_equal(dr->deleted, 0);
    assert_int_equal(dr->header->revision, after_delete); /* nothing deleted: no new revision */
    fake_call_clear(&f);

    /* Compaction and the revision errors, with etcd's exact strings and codes. */
    Etcdserverpb__CompactionRequest cr = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    cr.revision = r_a2;
    cr.physical = true;
    Etcdserverpb__CompactionResponse *cp = ok(&f, "/etcdserverpb.KV/Compact", &cr);
    check_header(cp->header);
    fake_call_clear(&f);
    r.revision = r_a2 - 1;
    fails("/etcdserverpb.KV/Range", &r, GW_OUT_OF_RANGE,
          "etcdserver: mvcc: required revision has been compacted");
    r.revision = r_a2; /* the compacted revision itself is still readable */
    rr = range(&f, &r);
    assert_int_equal(rr->count, 5);
    fake_call_clear(&f);
    r.revision = after_delete + 100;
    fails("/etcdserverpb.KV/Range", &r, GW_OUT_OF_RANGE,
          "etcdserver: mvcc: required revision is a future revision");
    fails("/etcdserverpb.KV/Compact", &cr, GW_OUT_OF_RANGE,
          "etcdserver: mvcc: required revision has been compacted");
    cr.revision = after_delete + 100;
    fails("/etcdserverpb.KV/Compact", &cr, GW_OUT_OF_RANGE,
          "etcdserver: mvcc: required revision is a future revision");

    env_down();
}

/* ---- txn ---- */

static Etcdserverpb__Compare *cmp(Etcdserverpb__Compare *c, const char *key,
                                  Etcdserverpb__Compare__CompareTarget target,
                                  Etcdserverpb__Compare__CompareResult result)
{
    etcdserverpb__compare__init(c);
    c->key = B(key);
    c->target = target;
    c->result = result;
    return c;
}

static void txn(void **state)
{
    (void)state;
    env_up("gw-unary-txn");
    struct fake_call f;
    int64_t r1 = put("/t/a", "1");
    put("/t/b", "2");
    int64_t r3 = put("/t/a", "11");

    /* MOD(/t/a) == r3 and VALUE(/t/a) == "11" and VERSION(/t/b) > 0 and CREATE(/t/none) == 0
     * (oneof set to 0) and LEASE(/t/a) == 0 (oneof unset): success: put, range, delete, and a
     * nested txn whose compare fails and runs its failure branch (a range). */
    Etcdserverpb__Compare c[5];
    Etcdserverpb__Compare *cs[5] = {&c[0], &c[1], &c[2], &c[3], &c[4]};
    cmp(&c[0], "/t/a", ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL);
    c[0].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    c[0].mod_revision = r3;
    cmp(&c[1], "/t/a", ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL);
    c[1].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c[1].value = B("11");
    cmp(&c[2], "/t/b", ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER);
    c[2].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
    c[2].version = 0;
    cmp(&c[3], "/t/none", ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL);
    c[3].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    c[3].create_revision = 0;
    cmp(&c[4], "/t/a", ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL);

    Etcdserverpb__PutRequest op_put = ETCDSERVERPB__PUT_REQUEST__INIT;
    op_put.key = B("/t/c");
    op_put.value = B("3");
    Etcdserverpb__RangeRequest op_range = ETCDSERVERPB__RANGE_REQUEST__INIT;
    op_range.key = B("/t/");
    op_range.range_end = B("/t0");
    Etcdserverpb__DeleteRangeRequest op_del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    op_del.key = B("/t/b");
    op_del.prev_kv = true;
    /* nested: LESS(VERSION(/t/a), 1) fails -> failure: range /t/a */
    Etcdserverpb__Compare nc;
    Etcdserverpb__Compare *ncs[1] = {&nc};
    cmp(&nc, "/t/a", ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS);
    nc.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
    nc.version = 1;
    Etcdserverpb__RangeRequest nested_range = ETCDSERVERPB__RANGE_REQUEST__INIT;
    nested_range.key = B("/t/a");
    Etcdserverpb__RequestOp nop = ETCDSERVERPB__REQUEST_OP__INIT;
    nop.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    nop.request_range = &nested_range;
    Etcdserverpb__RequestOp *nops[1] = {&nop};
    Etcdserverpb__TxnRequest nested = ETCDSERVERPB__TXN_REQUEST__INIT;
    nested.compare = ncs;
    nested.n_compare = 1;
    nested.failure = nops;
    nested.n_failure = 1;

    Etcdserverpb__RequestOp ops[4];
    for (int i = 0; i < 4; i++)
        etcdserverpb__request_op__init(&ops[i]);
    ops[0].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    ops[0].request_put = &op_put;
    ops[1].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    ops[1].request_range = &op_range;
    ops[2].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    ops[2].request_delete_range = &op_del;
    ops[3].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    ops[3].request_txn = &nested;
    Etcdserverpb__RequestOp *opv[4] = {&ops[0], &ops[1], &ops[2], &ops[3]};
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.compare = cs;
    t.n_compare = 5;
    t.success = opv;
    t.n_success = 4;
    t.failure = opv; /* the same ops: only the branch taken matters */
    t.n_failure = 1;

    Etcdserverpb__TxnResponse *tr = ok(&f, "/etcdserverpb.KV/Txn", &t);
    check_header(tr->header);
    int64_t rev = tr->header->revision;
    assert_int_equal(rev, r3 + 1); /* one write txn, one revision */
    assert_true(tr->succeeded);
    assert_int_equal(tr->n_responses, 4);
    assert_int_equal(tr->responses[0]->response_case,
                     ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT);
    assert_int_equal(tr->responses[0]->response_put->header->revision, rev);
    assert_int_equal(tr->responses[1]->response_case,
                     ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE);
    Etcdserverpb__RangeResponse *in_range = tr->responses[1]->response_range;
    assert_non_null(in_range->header);
    assert_int_equal(in_range->header->revision, rev);
    assert_int_equal(in_range->count, 3); /* /t/a, /t/b, and /t/c just put */
    assert_int_equal(tr->responses[2]->response_case,
                     ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE);
    assert_int_equal(tr->responses[2]->response_delete_range->deleted, 1);
    assert_int_equal(tr->responses[2]->response_delete_range->n_prev_kvs, 1);
    assert_int_equal(tr->responses[2]->response_delete_range->header->revision, rev);
    assert_int_equal(tr->responses[3]->response_case,
                     ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN);
    Etcdserverpb__TxnResponse *in_txn = tr->responses[3]->response_txn;
    assert_non_null(in_txn->header);
    assert_int_equal(in_txn->header->revision, 0); /* etcd leaves a nested txn's header empty */
    assert_false(in_txn->succeeded);
    assert_int_equal(in_txn->n_responses, 1);
    assert_int_equal(in_txn->responses[0]->response_case,
                     ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE);
    assert_int_equal(in_txn->responses[0]->response_range->n_kvs, 1);
    assert_true(same(in_txn->responses[0]->response_range->kvs[0]->value, "11"));
    assert_int_equal(in_txn->responses[0]->response_range->header->revision, rev);
    fake_call_clear(&f);

    /* The same txn again: MOD(/t/a) == r3 still holds but VERSION(/t/b) > 0 does not (deleted):
     * failure branch (the put), succeeded false. */
    tr = ok(&f, "/etcdserverpb.KV/Txn", &t);
    assert_false(tr->succeeded);
    assert_int_equal(tr->n_responses, 1);
    assert_int_equal(tr->responses[0]->response_put->header->revision, tr->header->revision);
    assert_int_equal(tr->header->revision, rev + 1);
    fake_call_clear(&f);

    /* In execution order, etcd's nested headers carry the txn's read revision until its first
     * change, its new revision after: [range, delete of nothing, put, range]. */
    Etcdserverpb__DeleteRangeRequest del_none = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    del_none.key = B("/t/none");
    Etcdserverpb__PutRequest put_d = ETCDSERVERPB__PUT_REQUEST__INIT;
    put_d.key = B("/t/d");
    put_d.value = B("4");
    Etcdserverpb__RequestOp ord[4];
    for (int i = 0; i < 4; i++)
        etcdserverpb__request_op__init(&ord[i]);
    ord[0].request_case = ord[3].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    ord[0].request_range = ord[3].request_range = &op_range;
    ord[1].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    ord[1].request_delete_range = &del_none;
    ord[2].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    ord[2].request_put = &put_d;
    Etcdserverpb__RequestOp *ordv[4] = {&ord[0], &ord[1], &ord[2], &ord[3]};
    Etcdserverpb__TxnRequest ot = ETCDSERVERPB__TXN_REQUEST__INIT;
    ot.success = ordv;
    ot.n_success = 4;
    tr = ok(&f, "/etcdserverpb.KV/Txn", &ot);
    assert_true(tr->succeeded);
    int64_t orev = tr->header->revision;
    assert_int_equal(orev, rev + 2);
    assert_int_equal(tr->responses[0]->response_range->header->revision, orev - 1);
    assert_int_equal(tr->responses[1]->response_delete_range->header->revision, orev - 1);
    assert_int_equal(tr->responses[2]->response_put->header->revision, orev);
    assert_int_equal(tr->responses[3]->response_range->header->revision, orev);
    assert_int_equal(tr->responses[3]->response_range->count,
                     tr->responses[0]->response_range->count + 1);
    fake_call_clear(&f);

    /* Compare over a range: every key in [/t/, /t0) has MOD > r1 - 1 ... /t/a's create is r1. */
    Etcdserverpb__Compare rc;
    Etcdserverpb__Compare *rcs[1] = {&rc};
    cmp(&rc, "/t/", ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER);
    rc.range_end = B("/t0");
    rc.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    rc.mod_revision = r1;
    Etcdserverpb__TxnRequest rt = ETCDSERVERPB__TXN_REQUEST__INIT;
    rt.compare = rcs;
    rt.n_compare = 1;
    tr = ok(&f, "/etcdserverpb.KV/Txn", &rt);
    assert_true(tr->succeeded); /* /t/a mod r3, /t/c mod rev+1: all > r1 */
    assert_int_equal(tr->n_responses, 0);
    assert_int_equal(tr->header->revision, orev); /* read-only: no new revision */
    fake_call_clear(&f);
    rc.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL;
    rc.mod_revision = r3; /* /t/a's mod is r3 */
    tr = ok(&f, "/etcdserverpb.KV/Txn", &rt);
    assert_false(tr->succeeded);
    fake_call_clear(&f);

    /* CREATE(/t/none) == 0 with the oneof unset (JSON clients omit zero): true. */
    Etcdserverpb__Compare uc;
    Etcdserverpb__Compare *ucs[1] = {&uc};
    cmp(&uc, "/t/none", ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL);
    Etcdserverpb__TxnRequest ut = ETCDSERVERPB__TXN_REQUEST__INIT;
    ut.compare = ucs;
    ut.n_compare = 1;
    tr = ok(&f, "/etcdserverpb.KV/Txn", &ut);
    assert_true(tr->succeeded);
    fake_call_clear(&f);

    /* etcd's checks: a compare without a key; an empty op; a put without a key inside a nested
     * txn; two puts of one key. */
    uc.key = B("");
    fails("/etcdserverpb.KV/Txn", &ut, GW_INVALID_ARGUMENT, "etcdserver: key is not provided");
    uc.key = B("/t/none");
    Etcdserverpb__RequestOp empty_op = ETCDSERVERPB__REQUEST_OP__INIT;
    Etcdserverpb__RequestOp *eops[1] = {&empty_op};
    ut.success = eops;
    ut.n_success = 1;
    fails("/etcdserverpb.KV/Txn", &ut, GW_INVALID_ARGUMENT, "etcdserver: key not found");
    Etcdserverpb__PutRequest nokey = ETCDSERVERPB__PUT_REQUEST__INIT;
    Etcdserverpb__RequestOp nk_op = ETCDSERVERPB__REQUEST_OP__INIT;
    nk_op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    nk_op.request_put = &nokey;
    Etcdserverpb__RequestOp *nk_ops[1] = {&nk_op};
    Etcdserverpb__TxnRequest inner = ETCDSERVERPB__TXN_REQUEST__INIT;
    inner.success = nk_ops;
    inner.n_success = 1;
    Etcdserverpb__RequestOp in_op = ETCDSERVERPB__REQUEST_OP__INIT;
    in_op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    in_op.request_txn = &inner;
    Etcdserverpb__RequestOp *in_ops[1] = {&in_op};
    ut.success = in_ops;
    fails("/etcdserverpb.KV/Txn", &ut, GW_INVALID_ARGUMENT, "etcdserver: key is not provided");
    Etcdserverpb__RequestOp *dup_ops[2] = {&ops[0], &ops[0]};
    ut.success = dup_ops;
    ut.n_success = 2;
    fails("/etcdserverpb.KV/Txn", &ut, GW_INVALID_ARGUMENT,
          "etcdserver: duplicate key given in txn request");

    /* Nesting: 8 levels below the top are served (keel's limit), 9 refused before sending. */
    Etcdserverpb__TxnRequest lv[10];
    Etcdserverpb__RequestOp lop[10];
    Etcdserverpb__RequestOp *lopv[10];
    for (int i = 0; i < 10; i++) {
        etcdserverpb__txn_request__init(&lv[i]);
        etcdserverpb__request_op__init(&lop[i]);
        lopv[i] = &lop[i];
        if (i > 0) {
            lop[i - 1].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
            lop[i - 1].request_txn = &lv[i];
            lv[i - 1].success = &lopv[i - 1];
            lv[i - 1].n_success = 1;
        }
    }
    lv[8].n_success = 0; /* lv[0] .. lv[8]: depth 8 */
    tr = ok(&f, "/etcdserverpb.KV/Txn", &lv[0]);
    assert_true(tr->succeeded);
    fake_call_clear(&f);
    lv[8].n_success = 1; /* down to lv[9]: depth 9 */
    fails("/etcdserverpb.KV/Txn", &lv[0], GW_INVALID_ARGUMENT,
          "keel-gateway: txn requests nested too deep (keel allows 8 levels)");

    env_down();
}

/* ---- lease ---- */

static void lease(void **state)
{
    (void)state;
    env_up("gw-unary-lease");
    struct fake_call f;

    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    g.ttl = 30;
    Etcdserverpb__LeaseGrantResponse *gr = ok(&f, "/etcdserverpb.Lease/LeaseGrant", &g);
    check_header(gr->header);
    int64_t id = gr->id;
    assert_true(id > 0);
    assert_int_equal(gr->ttl, 30);
    assert_true(gr->error == NULL || gr->error[0] == '\0');
    fake_call_clear(&f);

    /* A chosen ID; a TTL of 0 is granted at the minimum (etcd's lessor does the same). */
    g.ttl = 0;
    g.id = 0x1234;
    gr = ok(&f, "/etcdserverpb.Lease/LeaseGrant", &g);
    assert_int_equal(gr->id, 0x1234);
    assert_true(gr->ttl >= 1);
    fake_call_clear(&f);
    fails("/etcdserverpb.Lease/LeaseGrant", &g, GW_FAILED_PRECONDITION,
          "etcdserver: lease already exists");
    g.id = 0;
    g.ttl = 9000000001LL;
    fails("/etcdserverpb.Lease/LeaseGrant", &g, GW_OUT_OF_RANGE, "etcdserver: too large lease TTL");

    put_full("/l/a", "1", id);
    put_full("/l/b", "2", id);
    Etcdserverpb__PutRequest bad = ETCDSERVERPB__PUT_REQUEST__INIT;
    bad.key = B("/l/c");
    bad.lease = 987654321;
    fails("/etcdserverpb.KV/Put", &bad, GW_NOT_FOUND, "etcdserver: requested lease not found");

    Etcdserverpb__LeaseTimeToLiveRequest t = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    t.id = id;
    t.keys = true;
    Etcdserverpb__LeaseTimeToLiveResponse *tr = ok(&f, "/etcdserverpb.Lease/LeaseTimeToLive", &t);
    check_header(tr->header);
    assert_int_equal(tr->id, id);
    assert_int_equal(tr->grantedttl, 30);
    assert_true(tr->ttl > 0 && tr->ttl <= 30);
    assert_int_equal(tr->n_keys, 2);
    assert_true(same(tr->keys[0], "/l/a") || same(tr->keys[1], "/l/a"));
    fake_call_clear(&f);

    Etcdserverpb__LeaseLeasesRequest l = ETCDSERVERPB__LEASE_LEASES_REQUEST__INIT;
    Etcdserverpb__LeaseLeasesResponse *lr = ok(&f, "/etcdserverpb.Lease/LeaseLeases", &l);
    check_header(lr->header);
    assert_int_equal(lr->n_leases, 2);
    assert_true(lr->leases[0]->id == id || lr->leases[1]->id == id);
    fake_call_clear(&f);

    /* The JSON aliases reach the same handlers. */
    const struct gw_method *alias = gw_method_by_json_path("kv/lease/timetolive", 19);
    assert_non_null(alias);
    assert_ptr_equal(alias->on_message, gw_method_by_json_path("lease/timetolive", 16)->on_message);

    Etcdserverpb__LeaseRevokeRequest rv = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    rv.id = id;
    Etcdserverpb__LeaseRevokeResponse *rr = ok(&f, "/etcdserverpb.Lease/LeaseRevoke", &rv);
    check_header(rr->header);
    fake_call_clear(&f);
    fails("/etcdserverpb.Lease/LeaseRevoke", &rv, GW_NOT_FOUND,
          "etcdserver: requested lease not found");

    /* Revoked: its keys are gone, and TimeToLive says TTL -1 (not an error, as etcd). */
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("/l/");
    r.range_end = B("/l0");
    Etcdserverpb__RangeResponse *rg = ok(&f, "/etcdserverpb.KV/Range", &r);
    assert_int_equal(rg->count, 0);
    fake_call_clear(&f);
    tr = ok(&f, "/etcdserverpb.Lease/LeaseTimeToLive", &t);
    assert_int_equal(tr->id, id);
    assert_int_equal(tr->ttl, -1);
    assert_int_equal(tr->n_keys, 0);
    assert_non_null(tr->header);
    fake_call_clear(&f);

    env_down();
}

/* ---- cluster and maintenance ---- */

static void cluster(void **state)
{
    (void)state;
    env_up("gw-unary-cluster");
    struct fake_call f;

    Etcdserverpb__MemberListRequest ml = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
    Etcdserverpb__MemberListResponse *mr = ok(&f, "/etcdserverpb.Cluster/MemberList", &ml);
    check_member_header(mr->header);
    assert_int_equal(mr->header->revision, 0); /* as etcd */
    assert_int_equal(mr->n_members, 3);
    uint64_t ids[3];
    bool header_member_listed = false;
    for (size_t i = 0; i < 3; i++) {
        const Etcdserverpb__Member *m = mr->members[i];
        ids[i] = m->id;
        assert_true(m->id != 0);
        assert_true(m->name && m->name[0]); /* etcdctl shows "started" iff a name */
        assert_true(m->n_peerurls >= 1);
        assert_int_equal(m->n_clienturls, 2);
        assert_string_equal(m->clienturls[0], "http://127.0.0.1:32090");
        assert_string_equal(m->clienturls[1], "http://gw.example:2379");
        assert_false(m->islearner);
        header_member_listed |= m->id == mr->header->member_id;
    }
    assert_true(header_member_listed);
    fake_call_clear(&f);

    Etcdserverpb__StatusRequest sq = ETCDSERVERPB__STATUS_REQUEST__INIT;
    /* The member that answers may be a follower that has not applied the first write yet: ask
     * again (bounded) until it has, so that every field is seen non-zero. */
    Etcdserverpb__StatusResponse *st = NULL;
    long long st_deadline = tc_now_ms() + 10000;
    for (;;) {
        st = ok(&f, "/etcdserverpb.Maintenance/Status", &sq);
        if ((st->dbsizeinuse > 0 && st->raftappliedindex > 0) || tc_now_ms() >= st_deadline)
            break;
        fake_call_clear(&f);
        tu_sleep_ms(100);
    }
    check_member_header(st->header);
    assert_string_equal(st->version, "3.4.23");
    assert_true(st->dbsize > 0);
    assert_true(st->dbsizeinuse > 0);
    assert_true(st->leader == ids[0] || st->leader == ids[1] || st->leader == ids[2]);
    assert_true(st->raftindex > 0);
    assert_true(st->raftterm > 0);
    assert_int_equal(st->raftterm, st->header->raft_term);
    assert_true(st->raftappliedindex > 0 && st->raftappliedindex <= st->raftindex);
    assert_int_equal(st->n_errors, 0);
    assert_false(st->islearner);
    fake_call_clear(&f);

    Etcdserverpb__AlarmRequest aq = ETCDSERVERPB__ALARM_REQUEST__INIT;
    Etcdserverpb__AlarmResponse *ar = ok(&f, "/etcdserverpb.Maintenance/Alarm", &aq);
    assert_non_null(ar->header);
    assert_int_equal(ar->n_alarms, 0);
    fake_call_clear(&f);
    aq.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE;
    aq.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
    ar = ok(&f, "/etcdserverpb.Maintenance/Alarm", &aq);
    assert_int_equal(ar->n_alarms, 0);
    fake_call_clear(&f);

    Etcdserverpb__DefragmentRequest dq = ETCDSERVERPB__DEFRAGMENT_REQUEST__INIT;
    Etcdserverpb__DefragmentResponse *dr = ok(&f, "/etcdserverpb.Maintenance/Defragment", &dq);
    check_member_header(dr->header);
    fake_call_clear(&f);

    /* What keel does not serve: Unimplemented with a reason, at once. */
    Etcdserverpb__HashKVRequest hq = ETCDSERVERPB__HASH_KVREQUEST__INIT;
    struct fake_call u;
    run(&u, "/etcdserverpb.Maintenance/HashKV", &hq);
    assert_int_equal(u.code, GW_UNIMPLEMENTED);
    assert_true(strlen(u.message) > 10);
    /* Snapshot: keel's copy in blobs, then its SHA-256 as the last blob, as etcd sends. */
    Etcdserverpb__SnapshotRequest snq = ETCDSERVERPB__SNAPSHOT_REQUEST__INIT;
    run(&u, "/etcdserverpb.Maintenance/Snapshot", &snq);
    assert_int_equal(u.code, GW_OK);
    assert_true(u.n_sent >= 2);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    size_t copied = 0;
    for (size_t i = 0; i + 1 < u.n_sent; i++) {
        const Etcdserverpb__SnapshotResponse *sr = (const void *)u.sent[i];
        assert_true(sr->remaining_bytes > 0);
        EVP_DigestUpdate(md, sr->blob.data, sr->blob.len);
        copied += sr->blob.len;
    }
    const Etcdserverpb__SnapshotResponse *last = (const void *)u.sent[u.n_sent - 1];
    uint8_t digest[32];
    unsigned dlen = 0;
    assert_int_equal(EVP_DigestFinal_ex(md, digest, &dlen), 1);
    EVP_MD_CTX_free(md);
    assert_int_equal(last->remaining_bytes, 0);
    assert_int_equal(last->blob.len, 32);
    assert_memory_equal(last->blob.data, digest, 32);
    assert_true(copied > 0 && copied % 4096 == 0); /* whole LMDB pages */
    fake_call_clear(&u);
    /* A client that reads nothing, then goes away: nothing piles up, the call ends cancelled. */
    fake_call_init(&u, &E.ctx, gw_method_by_grpc_path("/etcdserverpb.Maintenance/Snapshot", 34));
    u.pending_bytes = 64u << 20;
    fake_call_deliver(&u, &snq.base);
    assert_false(fake_call_wait(&u, &E.loop, 1, 300));
    assert_int_equal(u.n_sent, 0);
    fake_call_cancel(&u);
    assert_true(fake_call_wait(&u, &E.loop, 0, CALL_TIMEOUT_MS));
    assert_int_equal(u.code, GW_CANCELLED);
    fake_call_clear(&u);
    /* MoveLeader: to a follower, which then leads; to no member, etcd's refusal. */
    Etcdserverpb__StatusResponse *now = ok(&u, "/etcdserverpb.Maintenance/Status", &sq);
    uint64_t from = now->leader, to = from == ids[0] ? ids[1] : ids[0];
    fake_call_clear(&u);
    Etcdserverpb__MoveLeaderRequest mq = ETCDSERVERPB__MOVE_LEADER_REQUEST__INIT;
    mq.targetid = to;
    Etcdserverpb__MoveLeaderResponse *mlr = ok(&u, "/etcdserverpb.Maintenance/MoveLeader", &mq);
    assert_non_null(mlr->header);
    fake_call_clear(&u);
    now = ok(&u, "/etcdserverpb.Maintenance/Status", &sq);
    assert_true(now->leader == to);
    fake_call_clear(&u);
    mq.targetid = 1;
    fails("/etcdserverpb.Maintenance/MoveLeader", &mq, GW_FAILED_PRECONDITION,
          "etcdserver: bad leader transferee");
    /* Membership: etcd's answers for a member that is none, or that votes already; MemberAdd
     * says why keel cannot take etcd's request (no name) and what to use. */
    Etcdserverpb__MemberAddRequest ma = ETCDSERVERPB__MEMBER_ADD_REQUEST__INIT;
    fails("/etcdserverpb.Cluster/MemberAdd", &ma, GW_FAILED_PRECONDITION,
          "keel-gateway: etcd's MemberAdd does not carry the new member's name, which keel "
          "derives its id from; add it with keelctl member add NAME --peer-urls URL");
    Etcdserverpb__MemberRemoveRequest mrm = ETCDSERVERPB__MEMBER_REMOVE_REQUEST__INIT;
    mrm.id = 0x1234abcd;
    fails("/etcdserverpb.Cluster/MemberRemove", &mrm, GW_NOT_FOUND, "etcdserver: member not found");
    Etcdserverpb__MemberPromoteRequest mpr = ETCDSERVERPB__MEMBER_PROMOTE_REQUEST__INIT;
    mpr.id = to;
    fails("/etcdserverpb.Cluster/MemberPromote", &mpr, GW_FAILED_PRECONDITION,
          "etcdserver: can only promote a learner member");

    /* Auth (auth.c) with authentication disabled, as etcd answers: Authenticate refused
     * FailedPrecondition, AuthDisable and the listings succeed, etcd's codes for keel's
     * refusals. The whole flow with auth on is gateway_compat_etcdctl_auth's. */
    Etcdserverpb__AuthenticateRequest an = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
    an.name = "root";
    an.password = "pw";
    fails("/etcdserverpb.Auth/Authenticate", &an, GW_FAILED_PRECONDITION,
          "etcdserver: authentication is not enabled");
    Etcdserverpb__AuthDisableRequest adq = ETCDSERVERPB__AUTH_DISABLE_REQUEST__INIT;
    Etcdserverpb__AuthEmptyResponse *ad = ok(&f, "/etcdserverpb.Auth/AuthDisable", &adq);
    check_member_header(ad->header);
    fake_call_clear(&f);
    Etcdserverpb__AuthStatusRequest asq = ETCDSERVERPB__AUTH_STATUS_REQUEST__INIT;
    Etcdserverpb__AuthStatusResponse *as = ok(&f, "/etcdserverpb.Auth/AuthStatus", &asq);
    check_member_header(as->header);
    assert_false(as->enabled);
    fake_call_clear(&f);
    Etcdserverpb__AuthUserListRequest ulq = ETCDSERVERPB__AUTH_USER_LIST_REQUEST__INIT;
    Etcdserverpb__AuthUserListResponse *ul = ok(&f, "/etcdserverpb.Auth/UserList", &ulq);
    check_member_header(ul->header);
    fake_call_clear(&f);
    Etcdserverpb__AuthRoleGetRequest rg = ETCDSERVERPB__AUTH_ROLE_GET_REQUEST__INIT;
    rg.role = "gw-unary-no-such-role";
    fails("/etcdserverpb.Auth/RoleGet", &rg, GW_FAILED_PRECONDITION,
          "etcdserver: role name not found");
    Etcdserverpb__AuthUserGetRequest ug = ETCDSERVERPB__AUTH_USER_GET_REQUEST__INIT;
    ug.name = "gw-unary-no-such-user";
    fails("/etcdserverpb.Auth/UserGet", &ug, GW_FAILED_PRECONDITION,
          "etcdserver: user name not found");
    Etcdserverpb__UserAddOptions nopw = ETCDSERVERPB__USER_ADD_OPTIONS__INIT;
    nopw.no_password = true;
    Etcdserverpb__AuthUserAddRequest ua = ETCDSERVERPB__AUTH_USER_ADD_REQUEST__INIT;
    ua.name = "gw-unary-nopw";
    ua.options = &nopw;
    fails("/etcdserverpb.Auth/UserAdd", &ua, GW_INVALID_ARGUMENT,
          "keel-gateway: keel users always have a password (no --no-password)");
    /* A role with a permission comes back as etcd's Permission (type, key, range end). */
    Etcdserverpb__AuthRoleAddRequest ra = ETCDSERVERPB__AUTH_ROLE_ADD_REQUEST__INIT;
    ra.name = "gw-unary-role";
    fake_call_clear(&f);
    (void)ok(&f, "/etcdserverpb.Auth/RoleAdd", &ra);
    fake_call_clear(&f);
    Etcdserverpb__Permission perm = ETCDSERVERPB__PERMISSION__INIT;
    perm.permtype = ETCDSERVERPB__PERMISSION__TYPE__READWRITE;
    perm.key = B("/gw/");
    perm.range_end = B("/gw0");
    Etcdserverpb__AuthRoleGrantPermissionRequest gp =
        ETCDSERVERPB__AUTH_ROLE_GRANT_PERMISSION_REQUEST__INIT;
    gp.name = "gw-unary-role";
    gp.perm = &perm;
    (void)ok(&f, "/etcdserverpb.Auth/RoleGrantPermission", &gp);
    fake_call_clear(&f);
    rg.role = "gw-unary-role";
    Etcdserverpb__AuthRoleGetResponse *rr = ok(&f, "/etcdserverpb.Auth/RoleGet", &rg);
    assert_int_equal(rr->n_perm, 1);
    assert_int_equal(rr->perm[0]->permtype, ETCDSERVERPB__PERMISSION__TYPE__READWRITE);
    assert_true(same(rr->perm[0]->key, "/gw/"));
    assert_true(same(rr->perm[0]->range_end, "/gw0"));
    fake_call_clear(&f);
    Etcdserverpb__AuthRoleGrantPermissionRequest nogp =
        ETCDSERVERPB__AUTH_ROLE_GRANT_PERMISSION_REQUEST__INIT;
    nogp.name = "gw-unary-role";
    fails("/etcdserverpb.Auth/RoleGrantPermission", &nogp, GW_INVALID_ARGUMENT,
          "etcdserver: permission not given");

    env_down();
}

/* ---- cancel ---- */

static void cancel(void **state)
{
    (void)state;
    env_up("gw-unary-cancel");

    /* A read, a write and a txn, each cancelled while in flight: each finishes once (fakecall
     * aborts on a second finish), CANCELLED, with nothing sent. */
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("/c/");
    r.range_end = B("/c0");
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("/c/a");
    p.value = B("v");
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    const struct {
        const char *path;
        const void *msg;
    } calls[] = {
        {"/etcdserverpb.KV/Range", &r},
        {"/etcdserverpb.KV/Put", &p},
        {"/etcdserverpb.KV/Txn", &t},
        {"/etcdserverpb.Maintenance/Status",
         &(Etcdserverpb__StatusRequest)ETCDSERVERPB__STATUS_REQUEST__INIT},
    };
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        struct fake_call f;
        const struct gw_method *m = gw_method_by_grpc_path(calls[i].path, strlen(calls[i].path));
        assert_non_null(m);
        fake_call_init(&f, &E.ctx, m);
        fake_call_deliver(&f, (const ProtobufCMessage *)calls[i].msg);
        assert_false(f.finished); /* libkeel never answers from within the submit */
        assert_non_null(f.call.state);
        fake_call_cancel(&f);
        assert_false(f.finished); /* waits for libkeel's callback */
        assert_true(fake_call_wait(&f, &E.loop, 0, CALL_TIMEOUT_MS));
        assert_int_equal(f.code, GW_CANCELLED);
        assert_int_equal(f.n_sent, 0);
        assert_null(f.call.state);
        /* Nothing more arrives later. */
        for (int k = 0; k < 5; k++)
            uv_run(&E.loop, UV_RUN_NOWAIT);
        fake_call_clear(&f);
    }

    /* Many calls in flight, every other one cancelled: each finishes exactly once, the
     * cancelled ones CANCELLED, the others with their answer. */
    struct fake_call *fs = calloc(64, sizeof(*fs));
    assert_non_null(fs);
    const struct gw_method *m = gw_method_by_grpc_path("/etcdserverpb.KV/Range", 22);
    for (int i = 0; i < 64; i++) {
        fake_call_init(&fs[i], &E.ctx, m);
        fake_call_deliver(&fs[i], &r.base);
        if (i % 2)
            fake_call_cancel(&fs[i]);
    }
    for (int i = 0; i < 64; i++) {
        assert_true(fake_call_wait(&fs[i], &E.loop, 0, CALL_TIMEOUT_MS));
        assert_int_equal(fs[i].code, i % 2 ? GW_CANCELLED : GW_OK);
        fake_call_clear(&fs[i]);
    }
    free(fs);

    /* A call whose client deadline passes: keel's timeout as etcd's Unavailable. Every member
     * stopped, so the request can only time out. */
    for (int i = 1; i <= 3; i++)
        tc_stop(&E.tc, i, SIGKILL);
    struct fake_call f;
    fake_call_init(&f, &E.ctx, m);
    f.call.timeout_ms = 300;
    long long t0 = tc_now_ms();
    fake_call_deliver(&f, &r.base);
    assert_true(fake_call_wait(&f, &E.loop, 0, CALL_TIMEOUT_MS));
    assert_true(tc_now_ms() - t0 < 3000);
    assert_int_equal(f.code, GW_UNAVAILABLE);
    fake_call_clear(&f);

    env_down();
}

int main(int argc, char **argv)
{
    const struct CMUnitTest kv_t[] = {cmocka_unit_test(kv)};
    const struct CMUnitTest txn_t[] = {cmocka_unit_test(txn)};
    const struct CMUnitTest lease_t[] = {cmocka_unit_test(lease)};
    const struct CMUnitTest cluster_t[] = {cmocka_unit_test(cluster)};
    const struct CMUnitTest cancel_t[] = {cmocka_unit_test(cancel)};
    const struct tu_group groups[] = {
        {"kv", kv_t, 1},           {"txn", txn_t, 1},       {"lease", lease_t, 1},
        {"cluster", cluster_t, 1}, {"cancel", cancel_t, 1},
    };
    return tu_run_groups("test_gw_unary", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
