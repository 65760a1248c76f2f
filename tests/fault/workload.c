/*
 * One workload client of the fault suite, run as a process of its own:
 *
 *   test_fault client ENDPOINTS SERIAL_ENDPOINT ID SEED OUT MAX_MS
 *
 * It runs operations on the keys of history.h until SIGTERM or MAX_MS, then writes what it did
 * to OUT (fh_save) and exits 0. Operations: linearizable gets, serializable gets from the one
 * member SERIAL_ENDPOINT (a follower's stale but consistent view), puts of unique values (the
 * client's ID in the high digits), deletes, compare-and-set as a txn on the value and on the
 * mod_revision, and leases: grant, put attached to the lease, then revoke or let it expire.
 *
 * Outcomes: an error after which the change may or may not have happened (KEEL_EUNKNOWN, a
 * timeout) is recorded as unknown (ret = LINCHECK_NEVER); any other error means nothing was done
 * and the operation is not recorded. A lease's revoke or expiry deletes the key only if it still
 * holds the leased value: a blind compare-and-set (lincheck.h), at the revoke, or for an expiry
 * at an unknown time after the put.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "history.h"
#include "keel/keel.h"
#include "testutil.h"
#include "workload.h"

#define LEASE_TTL_S 1

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct lease_put {
    int64_t id; /* 0: none outstanding */
    int key;
    int64_t value;
    int64_t put_call;
};

struct wl {
    struct keel *k;      /* every member */
    struct keel *serial; /* one member, for serializable reads */
    struct fh_history h;
    int id;
    uint64_t rng;
    int64_t seq;
    int64_t seen[FH_KEYS];     /* the last value this client read or wrote, per key */
    int64_t seen_mod[FH_KEYS]; /* and its mod_revision (0: unknown) */
    struct lease_put lease;
};

static bool unknown_outcome(int rv)
{
    return rv == KEEL_EUNKNOWN || rv == KEEL_ETIMEOUT;
}

static int64_t parse_value(const ProtobufCBinaryData *v)
{
    char buf[32];
    size_t n = v->len < 31 ? v->len : 31;
    memcpy(buf, v->data, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static ProtobufCBinaryData bytes(const char *s)
{
    return (ProtobufCBinaryData){.data = (uint8_t *)s, .len = strlen(s)};
}

/* Run req; fill the operation's completion, member and revision. Returns keel_do's result. */
static int run(struct keel *k, const Keel__Request *req, struct fh_op *o, Keel__Response **resp)
{
    int rv = keel_do(k, req, resp);
    o->op.ret = now_us();
    if (rv == 0 && (*resp)->header != NULL) {
        o->member = (*resp)->header->member_id;
        o->rev = (*resp)->header->revision;
    }
    return rv;
}

/* A failed operation: unknown outcome kept (reads constrain nothing then), the rest dropped. */
static void finish(struct wl *w, struct fh_op *o, int rv)
{
    if (rv != 0) {
        if (!unknown_outcome(rv) || o->op.kind == LINCHECK_READ)
            return;
        o->op.ret = LINCHECK_NEVER;
        o->rev = 0;
    }
    fh_add(&w->h, o);
}

static void op_get(struct wl *w, struct fh_op *o, bool serializable)
{
    Keel__RangeRequest rq = KEEL__RANGE_REQUEST__INIT;
    rq.key = bytes(fh_key_names[o->key]);
    rq.serializable = serializable;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &rq;
    Keel__Response *r = NULL;
    o->op.kind = LINCHECK_READ;
    if (serializable)
        o->flags |= FH_SERIAL;
    int rv = run(serializable ? w->serial : w->k, &req, o, &r);
    if (rv == 0) {
        const Keel__RangeResponse *rr = r->range;
        o->op.value = rr->n_kvs ? parse_value(&rr->kvs[0]->value) : LINCHECK_ABSENT;
        if (!serializable) {
            w->seen[o->key] = o->op.value;
            w->seen_mod[o->key] = rr->n_kvs ? rr->kvs[0]->mod_revision : 0;
        }
        keel_free(r);
    }
    finish(w, o, rv);
}

static int op_put(struct wl *w, struct fh_op *o, int64_t v, int64_t lease)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key = bytes(fh_key_names[o->key]);
    put.value = bytes(buf);
    put.lease = lease;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    Keel__Response *r = NULL;
    o->op.kind = LINCHECK_WRITE;
    o->op.value = v;
    if (lease)
        o->flags |= FH_LEASE;
    int rv = run(w->k, &req, o, &r);
    if (rv == 0) {
        o->flags |= FH_APPLIED;
        w->seen[o->key] = v;
        w->seen_mod[o->key] = o->rev;
        keel_free(r);
    }
    finish(w, o, rv);
    return rv;
}

static void op_delete(struct wl *w, struct fh_op *o)
{
    Keel__DeleteRangeRequest dr = KEEL__DELETE_RANGE_REQUEST__INIT;
    dr.key = bytes(fh_key_names[o->key]);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_DELETE_RANGE;
    req.delete_range = &dr;
    Keel__Response *r = NULL;
    o->op.kind = LINCHECK_WRITE;
    o->op.value = LINCHECK_ABSENT;
    int rv = run(w->k, &req, o, &r);
    if (rv == 0) {
        if (r->delete_range->deleted > 0)
            o->flags |= FH_APPLIED;
        w->seen[o->key] = LINCHECK_ABSENT;
        w->seen_mod[o->key] = 0;
        keel_free(r);
    }
    finish(w, o, rv);
}

/* Compare-and-set as etcd clients do it: a txn comparing the value (or, by_rev, the
 * mod_revision this client last saw with it: values are unique, so the two mean the same), then
 * the put. An absent key is compared as version 0. */
static void op_cas(struct wl *w, struct fh_op *o, int64_t v, bool by_rev)
{
    char ebuf[32], vbuf[32];
    int64_t expect = w->seen[o->key];
    snprintf(vbuf, sizeof(vbuf), "%lld", (long long)v);
    Keel__Compare cmp = KEEL__COMPARE__INIT;
    cmp.key = bytes(fh_key_names[o->key]);
    cmp.result = KEEL__COMPARE__COMPARE_RESULT__EQUAL;
    if (expect == LINCHECK_ABSENT) {
        cmp.target = KEEL__COMPARE__COMPARE_TARGET__VERSION;
        cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
        cmp.version = 0;
    } else if (by_rev && w->seen_mod[o->key] > 0) {
        cmp.target = KEEL__COMPARE__COMPARE_TARGET__MOD;
        cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_MOD_REVISION;
        cmp.mod_revision = w->seen_mod[o->key];
    } else {
        snprintf(ebuf, sizeof(ebuf), "%lld", (long long)expect);
        cmp.target = KEEL__COMPARE__COMPARE_TARGET__VALUE;
        cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
        cmp.value = bytes(ebuf);
    }
    Keel__Compare *cmps[] = {&cmp};
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key = cmp.key;
    put.value = bytes(vbuf);
    Keel__RequestOp rop = KEEL__REQUEST_OP__INIT;
    rop.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    rop.request_put = &put;
    Keel__RequestOp *ops[] = {&rop};
    Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
    txn.compare = cmps;
    txn.n_compare = 1;
    txn.success = ops;
    txn.n_success = 1;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_TXN;
    req.txn = &txn;
    Keel__Response *r = NULL;
    o->op.kind = LINCHECK_CAS;
    o->op.value = expect;
    o->op.value2 = v;
    o->op.ok = true; /* with an unknown outcome: if it happened, it swapped */
    int rv = run(w->k, &req, o, &r);
    if (rv == 0) {
        o->op.ok = r->txn->succeeded;
        if (o->op.ok) {
            o->flags |= FH_APPLIED;
            w->seen[o->key] = v;
            w->seen_mod[o->key] = o->rev;
        } else {
            w->seen_mod[o->key] = 0; /* stale: the next cas compares the value */
        }
        keel_free(r);
    }
    finish(w, o, rv);
}

/* The lease's end, as the history sees it: the key deleted if it still holds the leased value. */
static void lease_end(struct wl *w, int64_t call, int64_t ret)
{
    struct fh_op o = {.key = w->lease.key, .client = w->id};
    o.op = (struct lincheck_op){.kind = LINCHECK_CAS_BLIND,
                                .value = w->lease.value,
                                .value2 = LINCHECK_ABSENT,
                                .ok = true,
                                .call = call,
                                .ret = ret};
    fh_add(&w->h, &o);
    w->lease.id = 0;
}

static void op_lease(struct wl *w, struct fh_op *o, int64_t v)
{
    if (w->lease.id == 0) {
        Keel__LeaseGrantResponse *g = NULL;
        if (keel_lease_grant(w->k, LEASE_TTL_S, 0, &g) != 0)
            return; /* an unknown grant only leaves a lease without keys behind */
        int64_t id = g->id;
        keel_free(g);
        o->op.call = now_us();
        int rv = op_put(w, o, v, id);
        if (rv != 0 && !unknown_outcome(rv))
            return; /* nothing was put: the lease expires without keys */
        w->lease = (struct lease_put){.id = id, .key = o->key, .value = v, .put_call = o->op.call};
        return;
    }
    if (tu_rand(&w->rng) % 2) { /* let it expire, at a time nobody knows */
        lease_end(w, w->lease.put_call, LINCHECK_NEVER);
        return;
    }
    int64_t call = now_us();
    int rv = keel_lease_revoke(w->k, w->lease.id);
    int64_t ret = now_us();
    if (rv == 0)
        lease_end(w, call, ret);
    else if (rv == KEEL_ELEASENOTFOUND) /* it expired before the revoke returned */
        lease_end(w, w->lease.put_call, ret);
    else /* revoked or expired, or neither yet */
        lease_end(w, w->lease.put_call, LINCHECK_NEVER);
}

int fault_client_main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: test_fault client ENDPOINTS SERIAL_ENDPOINT ID SEED OUT MAX_MS\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    struct wl w = {.id = atoi(argv[3]), .rng = strtoull(argv[4], NULL, 10)};
    const char *out = argv[5];
    int64_t end = now_us() + strtoll(argv[6], NULL, 10) * 1000;
    struct keel_options o = {.endpoints = argv[1],
                             .request_timeout_ms = 2000,
                             .dial_timeout_ms = 300,
                             .max_retries = 20};
    struct keel_options so = o;
    so.endpoints = argv[2];
    if (keel_open(&w.k, &o) != 0 || keel_open(&w.serial, &so) != 0) {
        fprintf(stderr, "client %d: %s\n", w.id, keel_errmsg());
        return 1;
    }
    for (int i = 0; i < FH_KEYS; i++)
        w.seen[i] = LINCHECK_ABSENT;
    while (!stopping && now_us() < end) {
        struct fh_op op = {.key = (int)(tu_rand(&w.rng) % FH_KEYS), .client = w.id};
        op.op.call = now_us();
        unsigned dice = (unsigned)(tu_rand(&w.rng) % 100);
        int64_t v = (int64_t)w.id * 1000000000 + ++w.seq;
        if (dice < 30)
            op_get(&w, &op, false);
        else if (dice < 40)
            op_get(&w, &op, true);
        else if (dice < 60)
            op_put(&w, &op, v, 0);
        else if (dice < 65)
            op_delete(&w, &op);
        else if (dice < 78)
            op_cas(&w, &op, v, false);
        else if (dice < 90)
            op_cas(&w, &op, v, true);
        else
            op_lease(&w, &op, v);
    }
    if (w.lease.id != 0)
        lease_end(&w, w.lease.put_call, LINCHECK_NEVER);
    keel_close(w.serial);
    keel_close(w.k);
    int rv = fh_save(&w.h, out) == 0 ? 0 : 1;
    fh_free(&w.h);
    return rv;
}
