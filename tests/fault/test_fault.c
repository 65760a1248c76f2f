/*
 * Fault scenarios through real keeld processes, judged by the linearizability checker
 * (tests/fault/lincheck.h): `test_fault <scenario> [seed]`, one ctest entry each.
 *
 * A workload of several clients (threads, each with its own libkeel handle) runs against a
 * 3-member cluster for a bounded time on a few keys: linearizable gets, puts of unique values,
 * deletes, and compare-and-set as a txn on the value. Every operation is recorded with its
 * invocation and completion times and its outcome; an error after which the write may or may
 * not have happened (KEEL_EUNKNOWN, a timeout) is recorded as an unknown outcome, and an error
 * that means nothing was done (no leader reachable, refused) drops the operation. Meanwhile a
 * seeded schedule injects one kind of fault. Afterwards:
 *
 *   - the history of every key must be linearizable (a lost acknowledged write, a stale read
 *     after a leader change, a cas that saw a value never written: all show up here);
 *   - every member converges to the same value of every key (serializable reads, bounded wait);
 *   - a watcher over every key, open from the first revision through all the faults, saw exactly
 *     the revision history (read back afterwards by a new watch): in order, no gap, no
 *     duplicate.
 *
 * Scenarios (from ../shared/research/reliability-ecosystem.md's catalogue):
 *   kill_leader    kill -9 of the leader every ~2 s, restarted 0.5 s later
 *   kill_follower  kill -9 of a follower every ~2 s, restarted 0.5 s later
 *   kill_all       kill -9 of every member at once, twice, all restarted
 *   pause_leader   SIGSTOP of the leader for ~1.5 s (longer than an election timeout), SIGCONT
 *
 * Bounds: the workload runs RUN_MS, each operation times out after 2 s; faults only touch the
 * processes this test started (by PID, through tests/lib/cluster.c).
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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

#include "cluster.h"
#include "keel/keel.h"
#include "lincheck.h"
#include "testutil.h"

#define CLIENTS 4
#define KEYS    3
#define RUN_MS  8000
#define MAX_OPS 200000

static const char *const key_names[KEYS] = {"f/a", "f/b", "f/c"};

/* ---- the history ---- */

struct history {
    pthread_mutex_t mu;
    struct lincheck_op *ops;
    size_t n;
    int64_t t0;     /* ms, the workload's start */
    size_t unknown; /* operations with an unknown outcome */
    size_t dropped; /* failed before anything was done */
    size_t failed_cas;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void record(struct history *h, const struct lincheck_op *op)
{
    pthread_mutex_lock(&h->mu);
    if (h->n < MAX_OPS)
        h->ops[h->n++] = *op;
    pthread_mutex_unlock(&h->mu);
}

/* Whether a failed write may still have taken effect. */
static bool outcome_unknown(int rv)
{
    return rv == KEEL_EUNKNOWN || rv == KEEL_ETIMEOUT;
}

static int64_t value_of(const Keel__RangeResponse *r);

/* ---- watches ---- */

struct wev {
    int type; /* KEEL__EVENT__EVENT_TYPE__PUT or __DELETE */
    int key;  /* index into key_names */
    int64_t rev;
    int64_t value;
};

/* Every event one watch delivered, in delivery order. */
struct wlog {
    pthread_mutex_t mu;
    struct wev *v;
    size_t n, cap;
    int status; /* the watch's end, 0 while it runs */
};

static void on_watch(struct keel_watch *w, int status, const Keel__Event *const *events, size_t n,
                     int64_t revision, void *data)
{
    struct wlog *l = data;
    (void)w;
    (void)revision;
    pthread_mutex_lock(&l->mu);
    if (status != 0)
        l->status = status;
    for (size_t i = 0; i < n; i++) {
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 4096;
            l->v = realloc(l->v, l->cap * sizeof(*l->v));
        }
        struct wev *e = &l->v[l->n++];
        e->type = events[i]->type;
        e->rev = events[i]->kv->mod_revision;
        e->key = -1;
        for (int k = 0; k < KEYS; k++)
            if (events[i]->kv->key.len == strlen(key_names[k]) &&
                memcmp(events[i]->kv->key.data, key_names[k], events[i]->kv->key.len) == 0)
                e->key = k;
        Keel__RangeResponse rr = KEEL__RANGE_RESPONSE__INIT;
        Keel__KeyValue *kvs[] = {events[i]->kv};
        rr.kvs = kvs;
        rr.n_kvs = e->type == KEEL__EVENT__EVENT_TYPE__PUT;
        e->value = value_of(&rr);
    }
    pthread_mutex_unlock(&l->mu);
}

static struct keel_watch *watch_all(struct keel *k, struct wlog *l)
{
    static const uint8_t end[] = "f0"; /* the prefix "f/" */
    struct keel_watch_opts o = {.range_end = end, .range_end_len = 2, .start_revision = 1};
    struct keel_watch *w = NULL;
    if (keel_watch_open(k, "f/", 2, &o, on_watch, l, &w) != 0)
        fail_msg("watch: %s", keel_errmsg());
    return w;
}

/* Wait (bounded) until l has delivered revision rev. */
static bool wlog_reach(struct wlog *l, int64_t rev, int timeout_ms)
{
    long long until = tc_now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        bool done = l->n > 0 && l->v[l->n - 1].rev >= rev;
        pthread_mutex_unlock(&l->mu);
        if (done)
            return true;
        if (tc_now_ms() > until)
            return false;
        tu_sleep_ms(20);
    }
}

/* Whether the live watcher saw exactly the reference's events: same order, no gap, no
 * duplicate. NULL, or what differs (in buf). */
static const char *wlog_diff(const struct wlog *live, const struct wlog *ref, char *buf, size_t len)
{
    for (size_t i = 1; i < ref->n; i++)
        if (ref->v[i].rev < ref->v[i - 1].rev) {
            snprintf(buf, len, "history out of order at event %zu", i);
            return buf;
        }
    for (size_t i = 1; i < live->n; i++)
        if (live->v[i].rev < live->v[i - 1].rev ||
            (live->v[i].rev == live->v[i - 1].rev && live->v[i].key == live->v[i - 1].key)) {
            snprintf(buf, len, "watch event %zu at revision %lld after revision %lld: %s", i,
                     (long long)live->v[i].rev, (long long)live->v[i - 1].rev,
                     live->v[i].rev == live->v[i - 1].rev ? "a duplicate" : "out of order");
            return buf;
        }
    size_t n = live->n < ref->n ? live->n : ref->n;
    for (size_t i = 0; i < n; i++) {
        const struct wev *x = &live->v[i], *y = &ref->v[i];
        if (x->rev != y->rev || x->key != y->key || x->type != y->type || x->value != y->value) {
            snprintf(buf, len,
                     "watch event %zu: revision %lld key %d type %d, the history has revision "
                     "%lld key %d type %d (%s)",
                     i, (long long)x->rev, x->key, x->type, (long long)y->rev, y->key, y->type,
                     x->rev > y->rev ? "a gap" : "a different event");
            return buf;
        }
    }
    if (live->n != ref->n) {
        snprintf(buf, len, "the watcher saw %zu events, the history has %zu", live->n, ref->n);
        return buf;
    }
    return NULL;
}

/* The checker itself, on planted histories: each fault must be reported. */
static void watch_checker_planted(void **state)
{
    (void)state;
    struct wev ref_v[] = {{KEEL__EVENT__EVENT_TYPE__PUT, 0, 1, 10},
                          {KEEL__EVENT__EVENT_TYPE__PUT, 1, 2, 20},
                          {KEEL__EVENT__EVENT_TYPE__DELETE, 0, 3, LINCHECK_ABSENT},
                          {KEEL__EVENT__EVENT_TYPE__PUT, 2, 4, 30}};
    struct wlog ref = {.v = ref_v, .n = 4};
    char buf[256];
    struct wlog same = {.v = ref_v, .n = 4};
    assert_null(wlog_diff(&same, &ref, buf, sizeof(buf)));
    struct wev gap_v[] = {ref_v[0], ref_v[2], ref_v[3]};
    struct wlog gap = {.v = gap_v, .n = 3};
    assert_non_null(wlog_diff(&gap, &ref, buf, sizeof(buf)));
    assert_non_null(strstr(buf, "gap"));
    struct wev dup_v[] = {ref_v[0], ref_v[1], ref_v[1], ref_v[2], ref_v[3]};
    struct wlog dup = {.v = dup_v, .n = 5};
    assert_non_null(wlog_diff(&dup, &ref, buf, sizeof(buf)));
    assert_non_null(strstr(buf, "duplicate"));
    struct wev order_v[] = {ref_v[1], ref_v[0], ref_v[2], ref_v[3]};
    struct wlog order = {.v = order_v, .n = 4};
    assert_non_null(wlog_diff(&order, &ref, buf, sizeof(buf)));
    struct wev short_v[] = {ref_v[0], ref_v[1], ref_v[2]};
    struct wlog shortl = {.v = short_v, .n = 3};
    assert_non_null(wlog_diff(&shortl, &ref, buf, sizeof(buf)));
    struct wev val_v[] = {ref_v[0], {KEEL__EVENT__EVENT_TYPE__PUT, 1, 2, 21}, ref_v[2], ref_v[3]};
    struct wlog val = {.v = val_v, .n = 4};
    assert_non_null(wlog_diff(&val, &ref, buf, sizeof(buf)));
}

/* ---- the clients ---- */

struct client {
    const struct tc_cluster *c;
    struct history *h;
    int id;
    uint64_t rng;
    volatile int *stop;
    struct keel *k;
};

static int64_t value_of(const Keel__RangeResponse *r)
{
    if (r->n_kvs == 0)
        return LINCHECK_ABSENT;
    char buf[32];
    size_t n = r->kvs[0]->value.len < 31 ? r->kvs[0]->value.len : 31;
    memcpy(buf, r->kvs[0]->value.data, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static void op_read(struct client *cl, const char *key, struct lincheck_op *op, int64_t *seen)
{
    Keel__RangeResponse *r = NULL;
    op->kind = LINCHECK_READ;
    int rv = keel_get(cl->k, key, strlen(key), NULL, &r);
    op->ret = now_us();
    if (rv != 0) {
        op->ret = LINCHECK_NEVER; /* a read that failed constrains nothing */
        return;
    }
    op->value = value_of(r);
    *seen = op->value;
    keel_free(r);
}

static void op_write(struct client *cl, const char *key, int64_t v, struct lincheck_op *op)
{
    char buf[32];
    int rv;
    if (v == LINCHECK_ABSENT) {
        rv = keel_delete(cl->k, key, strlen(key), NULL, NULL);
    } else {
        snprintf(buf, sizeof(buf), "%lld", (long long)v);
        rv = keel_put(cl->k, key, strlen(key), buf, strlen(buf), NULL, NULL);
    }
    op->kind = LINCHECK_WRITE;
    op->value = v;
    op->ret = now_us();
    if (rv != 0) {
        if (outcome_unknown(rv))
            op->ret = LINCHECK_NEVER;
        else
            op->call = -1; /* nothing was done: dropped */
    }
}

/* Compare-and-set as etcd clients do it: a txn comparing the value, then the put. */
static void op_cas(struct client *cl, const char *key, int64_t expect, int64_t v,
                   struct lincheck_op *op)
{
    char ebuf[32], vbuf[32];
    snprintf(vbuf, sizeof(vbuf), "%lld", (long long)v);
    Keel__Compare cmp = KEEL__COMPARE__INIT;
    cmp.key.data = (uint8_t *)key;
    cmp.key.len = strlen(key);
    Keel__Compare *cmps[] = {&cmp};
    if (expect == LINCHECK_ABSENT) {
        /* absent: version == 0 */
        cmp.target = KEEL__COMPARE__COMPARE_TARGET__VERSION;
        cmp.result = KEEL__COMPARE__COMPARE_RESULT__EQUAL;
        cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
        cmp.version = 0;
    } else {
        snprintf(ebuf, sizeof(ebuf), "%lld", (long long)expect);
        cmp.target = KEEL__COMPARE__COMPARE_TARGET__VALUE;
        cmp.result = KEEL__COMPARE__COMPARE_RESULT__EQUAL;
        cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
        cmp.value.data = (uint8_t *)ebuf;
        cmp.value.len = strlen(ebuf);
    }
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)key;
    put.key.len = strlen(key);
    put.value.data = (uint8_t *)vbuf;
    put.value.len = strlen(vbuf);
    Keel__RequestOp rop = KEEL__REQUEST_OP__INIT;
    rop.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    rop.request_put = &put;
    Keel__RequestOp *ops[] = {&rop};
    Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
    txn.compare = cmps;
    txn.n_compare = 1;
    txn.success = ops;
    txn.n_success = 1;
    Keel__TxnResponse *tr = NULL;
    int rv = keel_txn(cl->k, &txn, &tr);
    op->kind = LINCHECK_CAS;
    op->value = expect;
    op->value2 = v;
    op->ret = now_us();
    if (rv != 0) {
        if (outcome_unknown(rv)) {
            op->ret = LINCHECK_NEVER;
            op->ok = true; /* if it happened, it swapped */
        } else {
            op->call = -1;
        }
        return;
    }
    op->ok = tr->succeeded;
    keel_free(tr);
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    char eps[512];
    tc_endpoints(cl->c, 0, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .request_timeout_ms = 2000, .dial_timeout_ms = 300, .max_retries = 20};
    assert_int_equal(keel_open(&cl->k, &o), 0);
    int64_t seen[KEYS];
    for (int i = 0; i < KEYS; i++)
        seen[i] = LINCHECK_ABSENT;
    int64_t seq = 0;
    while (!*cl->stop) {
        int ki = (int)(tu_rand(&cl->rng) % KEYS);
        const char *key = key_names[ki];
        struct lincheck_op op = {.key = key, .call = now_us()};
        unsigned dice = (unsigned)(tu_rand(&cl->rng) % 100);
        /* Unique values: the client's id in the high digits. */
        int64_t v = (int64_t)cl->id * 1000000 + ++seq;
        if (dice < 40)
            op_read(cl, key, &op, &seen[ki]);
        else if (dice < 70)
            op_write(cl, key, v, &op);
        else if (dice < 75)
            op_write(cl, key, LINCHECK_ABSENT, &op);
        else
            op_cas(cl, key, seen[ki], v, &op);
        if (op.call < 0) {
            pthread_mutex_lock(&cl->h->mu);
            cl->h->dropped++;
            pthread_mutex_unlock(&cl->h->mu);
            tu_sleep_ms(20);
            continue;
        }
        if (op.kind == LINCHECK_READ && op.ret == LINCHECK_NEVER)
            continue;
        pthread_mutex_lock(&cl->h->mu);
        if (op.kind == LINCHECK_CAS && op.ret != LINCHECK_NEVER && !op.ok)
            cl->h->failed_cas++;
        if (op.kind != LINCHECK_READ && op.ret == LINCHECK_NEVER)
            cl->h->unknown++;
        pthread_mutex_unlock(&cl->h->mu);
        record(cl->h, &op);
    }
    return NULL;
}

/* ---- faults ---- */

struct faults {
    struct tc_cluster *c;
    struct keel *k; /* status queries */
    const char *scenario;
    uint64_t rng;
    int injected;
};

static void fault_once(struct faults *f)
{
    struct tc_cluster *c = f->c;
    if (strcmp(f->scenario, "kill_all") == 0) {
        for (int i = 1; i <= c->n; i++)
            tc_stop(c, i, SIGKILL);
        tu_sleep_ms(500);
        for (int i = 1; i <= c->n; i++)
            assert_int_equal(tc_start(c, i), 0);
        f->injected++;
        return;
    }
    int leader = tc_find_leader(c, f->k, 0, 2000);
    if (leader <= 0)
        return;
    int victim = leader;
    if (strcmp(f->scenario, "kill_follower") == 0) /* one of the other two, at random */
        victim = (leader + (int)(tu_rand(&f->rng) % 2)) % c->n + 1;
    if (strcmp(f->scenario, "pause_leader") == 0) {
        kill(c->m[victim].pid, SIGSTOP);
        tu_sleep_ms(1500);
        kill(c->m[victim].pid, SIGCONT);
    } else {
        tc_stop(c, victim, SIGKILL);
        tu_sleep_ms(500);
        assert_int_equal(tc_start(c, victim), 0);
    }
    f->injected++;
}

/*
 * The schedule, on the test's main thread until run_ms have passed: members are started by the
 * thread that forks them and die with it (the harness sets PR_SET_PDEATHSIG), so faults never
 * run on a thread that ends before the test.
 */
static void run_faults(struct faults *f, long long run_ms)
{
    int period = strcmp(f->scenario, "kill_all") == 0 ? 3000 : 2000;
    long long end = tc_now_ms() + run_ms;
    while (tc_now_ms() < end) {
        long long wait = period / 2 + (long long)(tu_rand(&f->rng) % (uint64_t)period);
        if (tc_now_ms() + wait >= end) {
            tu_sleep_ms((int)(end - tc_now_ms() > 0 ? end - tc_now_ms() : 0));
            break;
        }
        tu_sleep_ms((int)wait);
        fault_once(f);
    }
}

/* ---- the scenario ---- */

static const char *scenario;
static uint64_t seed;

static void run_scenario(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "fault");
    tc_start_all(&c);
    char eps[512];
    tc_endpoints(&c, 0, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 2000, .dial_timeout_ms = 300};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    assert_true(tc_find_leader(&c, k, 0, 10000) > 0);

    /* A watcher over every key from the first revision, on a handle of its own: it must see
     * every change once, in order, across the faults (libkeel resumes it after a failover). */
    struct keel *wk = NULL;
    assert_int_equal(keel_open(&wk, &o), 0);
    struct wlog live = {.n = 0};
    pthread_mutex_init(&live.mu, NULL);
    struct keel_watch *lw = watch_all(wk, &live);
    struct history h = {.ops = calloc(MAX_OPS, sizeof(struct lincheck_op))};
    pthread_mutex_init(&h.mu, NULL);
    volatile int stop = 0;
    struct client cl[CLIENTS];
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = (struct client){
            .c = &c, .h = &h, .id = i + 1, .rng = seed * 31 + (uint64_t)i, .stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    struct faults f = {.c = &c, .k = k, .scenario = scenario, .rng = seed};
    run_faults(&f, RUN_MS);
    /* Every member back; then the clients run a little longer on a healthy cluster. */
    for (int i = 1; i <= c.n; i++)
        if (c.m[i].pid == 0)
            assert_int_equal(tc_start(&c, i), 0);
    assert_true(tc_find_leader(&c, k, 0, 10000) > 0);
    tu_sleep_ms(1000);
    stop = 1;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        keel_close(cl[i].k);
    }
    /* A final linearizable read of every key: the state every member must converge to. */
    int64_t final[KEYS];
    for (int ki = 0; ki < KEYS; ki++) {
        struct lincheck_op op = {.ret = LINCHECK_NEVER};
        struct client reader = {.h = &h, .k = k};
        /* A read may fail while a restarted member's election settles: a few tries. */
        for (int tries = 0; tries < 10 && op.ret == LINCHECK_NEVER; tries++) {
            op = (struct lincheck_op){.key = key_names[ki], .call = now_us()};
            op_read(&reader, key_names[ki], &op, &final[ki]);
        }
        if (op.ret == LINCHECK_NEVER) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s", keel_errmsg());
            struct keel *fresh = NULL;
            assert_int_equal(keel_open(&fresh, &o), 0);
            struct client r2 = {.h = &h, .k = fresh};
            op = (struct lincheck_op){.key = key_names[ki], .call = now_us()};
            op_read(&r2, key_names[ki], &op, &final[ki]);
            fail_msg("final read of %s: %s; a fresh client: %s", key_names[ki], msg,
                     op.ret == LINCHECK_NEVER ? keel_errmsg() : "ok");
        }
        record(&h, &op);
    }
    struct lincheck_result res;
    int64_t t0 = now_us();
    enum lincheck_verdict v = lincheck_check(h.ops, h.n, 60000, &res);
    fprintf(stderr,
            "%s seed %llu: %d faults, %zu operations (%zu unknown outcome, %zu dropped before "
            "anything was done, %zu failed cas), checked in %lld ms: %s %s\n",
            scenario, (unsigned long long)seed, f.injected, h.n, h.unknown, h.dropped, h.failed_cas,
            (long long)(now_us() - t0) / 1000, lincheck_verdict_name(v), res.detail);
    if (v != LINCHECK_OK) {
        /* Keep the history for replay. */
        char path[600];
        snprintf(path, sizeof(path), "%s/../fault-history-%s-%llu.tsv", c.root, scenario,
                 (unsigned long long)seed);
        FILE *out = fopen(path, "w");
        for (size_t i = 0; out && i < h.n; i++)
            fprintf(out, "%s\t%d\t%lld\t%lld\t%d\t%lld\t%lld\n", h.ops[i].key, h.ops[i].kind,
                    (long long)h.ops[i].value, (long long)h.ops[i].value2, h.ops[i].ok,
                    (long long)h.ops[i].call, (long long)h.ops[i].ret);
        if (out) {
            fclose(out);
            fprintf(stderr, "history saved to %s\n", path);
        }
    }
    assert_int_equal(v, LINCHECK_OK);
    assert_true(f.injected >= 1);
    assert_true(h.n > 100);
    /* Every member converges to the final values. */
    for (int i = 1; i <= c.n; i++) {
        char ep[64];
        tc_endpoints(&c, i, ep, sizeof(ep));
        struct keel_options oi = {.endpoints = ep, .request_timeout_ms = 2000};
        struct keel *ki = NULL;
        assert_int_equal(keel_open(&ki, &oi), 0);
        for (int kx = 0; kx < KEYS; kx++) {
            int64_t got = 0;
            int rv = 0;
            long long until = tc_now_ms() + 5000;
            for (;;) {
                struct keel_get_opts go = {.serializable = true};
                Keel__RangeResponse *r = NULL;
                if ((rv = keel_get(ki, key_names[kx], strlen(key_names[kx]), &go, &r)) == 0) {
                    got = value_of(r);
                    keel_free(r);
                    if (got == final[kx])
                        break;
                }
                if (tc_now_ms() > until)
                    fail_msg("member %d: %s = %lld (%s), the cluster says %lld", i, key_names[kx],
                             (long long)got, rv ? keel_errmsg() : "read", (long long) final[kx]);
                tu_sleep_ms(20);
            }
        }
        keel_close(ki);
    }
    /* The revision history, read back from the start by a new watch, is the reference. */
    Keel__RangeRequest rq = KEEL__RANGE_REQUEST__INIT;
    rq.key.data = (uint8_t *)"f/";
    rq.key.len = 2;
    rq.range_end.data = (uint8_t *)"f0";
    rq.range_end.len = 2;
    rq.count_only = true;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &rq;
    Keel__Response *resp = NULL;
    assert_int_equal(keel_do(k, &req, &resp), 0);
    int64_t last_rev = resp->header->revision;
    keel_free(resp);
    struct wlog ref = {.n = 0};
    pthread_mutex_init(&ref.mu, NULL);
    struct keel_watch *rw = watch_all(k, &ref);
    assert_true(wlog_reach(&ref, last_rev, 20000));
    if (!wlog_reach(&live, last_rev, 20000))
        fail_msg("the watcher stopped at %zu events (status %d), the history goes to revision %lld",
                 live.n, live.status, (long long)last_rev);
    keel_watch_close(k, rw);
    keel_watch_close(wk, lw);
    char diff[256];
    if (wlog_diff(&live, &ref, diff, sizeof(diff)) != NULL)
        fail_msg("%s", diff);
    fprintf(stderr, "watch: %zu events up to revision %lld, as in the history\n", live.n,
            (long long)last_rev);
    free(live.v);
    free(ref.v);
    pthread_mutex_destroy(&live.mu);
    pthread_mutex_destroy(&ref.mu);
    keel_close(wk);
    free(h.ops);
    pthread_mutex_destroy(&h.mu);
    keel_close(k);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    static const char *const known[] = {"kill_leader", "kill_follower", "kill_all", "pause_leader"};
    if (argc < 2) {
        fprintf(
            stderr,
            "usage: test_fault kill_leader|kill_follower|kill_all|pause_leader|planted [seed]\n");
        return 2;
    }
    if (strcmp(argv[1], "planted") == 0) {
        const struct CMUnitTest t[] = {cmocka_unit_test(watch_checker_planted)};
        return cmocka_run_group_tests_name("planted", t, NULL, NULL);
    }
    bool ok = false;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        ok = ok || strcmp(argv[1], known[i]) == 0;
    if (!ok) {
        fprintf(stderr, "test_fault: unknown scenario %s\n", argv[1]);
        return 2;
    }
    scenario = argv[1];
    seed = argc > 2 ? strtoull(argv[2], NULL, 10) : tu_seed(argv[1]);
    const struct CMUnitTest tests[] = {cmocka_unit_test(run_scenario)};
    return cmocka_run_group_tests_name(scenario, tests, NULL, NULL);
}
