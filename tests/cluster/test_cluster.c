/*
 * Cluster behaviour through real keeld processes and libkeel: `test_cluster <group>`, one ctest
 * entry per group. Members run with a 50 ms heartbeat and a 500 ms election timeout so that
 * failover fits a test; every wait is bounded.
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
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
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "prom.h"
#include "testutil.h"
#include "keel/keel.h"

static struct keel *open_client(const struct tc_cluster *c, int member)
{
    char eps[512];
    tc_endpoints(c, member, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 4000, .dial_timeout_ms = 500};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

/* A client that asks member i and no other: no retry, so no failover. A restarted member answers
 * serializable reads UNAVAILABLE until it is back where its readers were, and a client that may
 * retry takes such a read to another member, whose answer would pass for this member's. */
static struct keel *open_pinned(const struct tc_cluster *c, int member)
{
    char eps[512];
    tc_endpoints(c, member, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .request_timeout_ms = 4000, .dial_timeout_ms = 500, .max_retries = -1};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

/* The index of the member that says it leads, waiting up to timeout_ms; 0 when none. Members in
 * `skip` (bit i) are not asked. */
static int find_leader(struct tc_cluster *c, struct keel *k, unsigned skip, int timeout_ms)
{
    return tc_find_leader(c, k, skip, timeout_ms);
}

static void put_str(struct keel *k, const char *key, const char *val)
{
    int rv = keel_put(k, key, strlen(key), val, strlen(val), NULL, NULL);
    if (rv != 0)
        fail_msg("put %s: %s (%s)", key, keel_strerror(rv), keel_errmsg());
}

/* Value of key read from member i alone (serializable), or NULL; caller frees. */
static char *get_from(struct tc_cluster *c, int i, const char *key, int64_t *mod_revision)
{
    struct keel *k = open_client(c, i);
    struct keel_get_opts o = {.serializable = true};
    Keel__RangeResponse *r = NULL;
    int rv = keel_get(k, key, strlen(key), &o, &r);
    char *val = NULL;
    if (rv == 0 && r->n_kvs == 1) {
        /* Values are bytes, not C strings (strndup may read past them). */
        val = calloc(1, r->kvs[0]->value.len + 1);
        if (r->kvs[0]->value.len)
            memcpy(val, r->kvs[0]->value.data, r->kvs[0]->value.len);
        if (mod_revision)
            *mod_revision = r->kvs[0]->mod_revision;
    }
    keel_free(r);
    keel_close(k);
    return val;
}

/* Wait until member i serves key with value (bounded). */
static bool wait_value(struct tc_cluster *c, int i, const char *key, const char *val,
                       int timeout_ms)
{
    long long deadline = tc_now_ms() + timeout_ms;
    do {
        char *got = get_from(c, i, key, NULL);
        bool ok = got != NULL && strcmp(got, val) == 0;
        free(got);
        if (ok)
            return true;
        tu_sleep_ms(50);
    } while (tc_now_ms() < deadline);
    return false;
}

/* Every key of prefix "k/" on member i, serializable: count and (key, mod_revision, version)
 * digest, so members can be compared. */
struct digest {
    int64_t count;
    uint64_t hash;
    int64_t revision;
};

static struct digest digest_of(struct tc_cluster *c, int i)
{
    struct digest d = {0};
    struct keel *k = open_pinned(c, i);
    uint8_t end[8];
    size_t elen = keel_prefix_end("k/", 2, end);
    struct keel_get_opts o = {.serializable = true, .range_end = end, .range_end_len = elen};
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__RangeRequest rr = KEEL__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)"k/";
    rr.key.len = 2;
    rr.range_end.data = end;
    rr.range_end.len = elen;
    rr.serializable = true;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &rr;
    (void)o;
    Keel__Response *resp = NULL;
    if (keel_do(k, &req, &resp) == 0 && resp->range != NULL) {
        d.count = resp->range->count;
        d.revision = resp->header ? resp->header->revision : 0;
        uint64_t h = 1469598103934665603ull;
        for (size_t j = 0; j < resp->range->n_kvs; j++) {
            Keel__KeyValue *kv = resp->range->kvs[j];
            for (size_t b = 0; b < kv->key.len; b++)
                h = (h ^ kv->key.data[b]) * 1099511628211ull;
            h = (h ^ (uint64_t)kv->mod_revision) * 1099511628211ull;
            h = (h ^ (uint64_t)kv->version) * 1099511628211ull;
            h = (h ^ (uint64_t)kv->create_revision) * 1099511628211ull;
        }
        d.hash = h;
    }
    keel_free(resp);
    keel_close(k);
    return d;
}

/* Wait until every running member has the same digest as member ref (bounded). */
static struct digest wait_converged(struct tc_cluster *c, int ref, int timeout_ms)
{
    long long deadline = tc_now_ms() + timeout_ms;
    struct digest want;
    for (;;) {
        want = digest_of(c, ref);
        bool same = true;
        for (int i = 1; i <= c->n && same; i++) {
            if (c->m[i].pid == 0 || i == ref)
                continue;
            struct digest d = digest_of(c, i);
            same = d.count == want.count && d.hash == want.hash && d.revision == want.revision;
        }
        if (same)
            return want;
        if (tc_now_ms() > deadline)
            fail_msg("members did not converge within %d ms", timeout_ms);
        tu_sleep_ms(50);
    }
}

/* ---- a continuous writer ---- */

struct writer {
    struct tc_cluster *c;
    pthread_t thread;
    volatile int stop;
    int n;                /* keys attempted */
    unsigned char *acked; /* acked[i]: put k/<i> acknowledged */
    int failures;
    int unknown;
    int cap;
    long long last_ms;             /* when the last put came back */
    volatile int gap_on;           /* measure max_gap_ms from now on */
    volatile long long max_gap_ms; /* the longest wait between two puts coming back, while gap_on */
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct keel *k = open_client(w->c, 0);
    while (!w->stop && w->n < w->cap) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "k/%06d", w->n);
        snprintf(val, sizeof(val), "v%d", w->n);
        int rv = keel_put(k, key, strlen(key), val, strlen(val), NULL, NULL);
        if (rv == 0)
            w->acked[w->n] = 1;
        else if (rv == KEEL_EUNKNOWN)
            w->unknown++;
        else
            w->failures++;
        w->n++;
        long long now = tc_now_ms();
        if (w->gap_on && w->last_ms > 0 && now - w->last_ms > w->max_gap_ms)
            w->max_gap_ms = now - w->last_ms;
        w->last_ms = now;
    }
    keel_close(k);
    return NULL;
}

static void writer_start(struct writer *w, struct tc_cluster *c, int cap)
{
    memset(w, 0, sizeof(*w));
    w->c = c;
    w->cap = cap;
    w->acked = calloc((size_t)cap, 1);
    assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

static void writer_stop(struct writer *w)
{
    w->stop = 1;
    pthread_join(w->thread, NULL);
}

static int acked_count(const struct writer *w)
{
    int n = 0;
    for (int i = 0; i < w->n; i++)
        n += w->acked[i];
    return n;
}

/* How many acknowledged keys member i lacks. */
static int missing_on(struct tc_cluster *c, int i, const struct writer *w)
{
    struct keel *k = open_pinned(c, i);
    uint8_t end[8];
    size_t elen = keel_prefix_end("k/", 2, end);
    struct keel_get_opts o = {
        .serializable = true, .range_end = end, .range_end_len = elen, .keys_only = true};
    Keel__RangeResponse *r = NULL;
    assert_int_equal(keel_get(k, "k/", 2, &o, &r), 0);
    unsigned char *present = calloc((size_t)w->cap + 1, 1);
    for (size_t j = 0; j < r->n_kvs; j++) {
        char kb[32];
        size_t kl = r->kvs[j]->key.len < sizeof(kb) - 1 ? r->kvs[j]->key.len : sizeof(kb) - 1;
        memcpy(kb, r->kvs[j]->key.data, kl);
        kb[kl] = '\0';
        int idx = atoi(kb + 2);
        if (idx >= 0 && idx < w->cap)
            present[idx] = 1;
    }
    int missing = 0;
    for (int x = 0; x < w->n; x++)
        if (w->acked[x] && !present[x])
            missing++;
    free(present);
    keel_free(r);
    keel_close(k);
    return missing;
}

/* Every acknowledged key is on member i. */
static void assert_acked_on(struct tc_cluster *c, int i, const struct writer *w)
{
    int missing = missing_on(c, i, w);
    if (missing)
        fail_msg("member %d misses %d acknowledged writes", i, missing);
}

/* The same, for a follower that may learn the last commits a heartbeat late: waits a while. */
static void assert_acked_on_soon(struct tc_cluster *c, int i, const struct writer *w)
{
    long long until = tc_now_ms() + 10000;
    int missing;
    while ((missing = missing_on(c, i, w)) != 0 && tc_now_ms() < until)
        tu_sleep_ms(50);
    if (missing)
        fail_msg("member %d misses %d acknowledged writes", i, missing);
}

/* ---- groups ---- */

static void three_members_read_write(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "basic");
    tc_start_all(&c);
    struct keel *all = open_client(&c, 0);
    assert_true(find_leader(&c, all, 0, 10000) > 0);
    /* Writes through a client that knows only one member: followers redirect. */
    for (int i = 1; i <= 3; i++) {
        struct keel *one = open_client(&c, i);
        char key[16], val[16];
        snprintf(key, sizeof(key), "k/via%d", i);
        snprintf(val, sizeof(val), "from%d", i);
        put_str(one, key, val);
        /* A linearizable read right after sees it, through the same member. */
        Keel__RangeResponse *r = NULL;
        assert_int_equal(keel_get(one, key, strlen(key), NULL, &r), 0);
        assert_int_equal(r->n_kvs, 1);
        assert_memory_equal(r->kvs[0]->value.data, val, strlen(val));
        keel_free(r);
        keel_close(one);
    }
    /* Serializable reads on each member converge to the same state. */
    for (int i = 1; i <= 3; i++)
        assert_true(wait_value(&c, i, "k/via3", "from3", 5000));
    struct digest d = wait_converged(&c, 1, 5000);
    assert_int_equal(d.count, 3);
    assert_int_equal(d.revision, 3);

    /* Txn and delete through the cluster. */
    Keel__TxnRequest t = KEEL__TXN_REQUEST__INIT;
    Keel__Compare cmp = KEEL__COMPARE__INIT;
    Keel__Compare *cmps[] = {&cmp};
    cmp.key.data = (uint8_t *)"k/via1";
    cmp.key.len = 6;
    cmp.target = KEEL__COMPARE__COMPARE_TARGET__VALUE;
    cmp.result = KEEL__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
    cmp.value.data = (uint8_t *)"from1";
    cmp.value.len = 5;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)"k/txn";
    put.key.len = 5;
    put.value.data = (uint8_t *)"yes";
    put.value.len = 3;
    Keel__RequestOp op = KEEL__REQUEST_OP__INIT;
    Keel__RequestOp *ops[] = {&op};
    op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &put;
    t.compare = cmps;
    t.n_compare = 1;
    t.success = ops;
    t.n_success = 1;
    Keel__TxnResponse *tr = NULL;
    assert_int_equal(keel_txn(all, &t, &tr), 0);
    assert_true(tr->succeeded);
    keel_free(tr);
    Keel__DeleteRangeResponse *dr = NULL;
    assert_int_equal(keel_delete(all, "k/via2", 6, NULL, &dr), 0);
    assert_int_equal(dr->deleted, 1);
    keel_free(dr);
    /* Errors come back with the server's message. */
    char big[600];
    memset(big, 'x', sizeof(big));
    assert_int_equal(keel_put(all, big, sizeof(big), "v", 1, NULL, NULL), KEEL_EKEYTOOLONG);
    assert_non_null(strstr(keel_errmsg(), "511"));
    d = wait_converged(&c, 2, 5000);
    assert_int_equal(d.count, 3);
    keel_close(all);
    for (int i = 1; i <= 3; i++) {
        int st = tc_stop(&c, i, SIGTERM);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    tc_cluster_close(&c);
}

static void leader_killed_while_writing(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "failover");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    int leader = find_leader(&c, k, 0, 10000);
    assert_true(leader > 0);
    struct writer w;
    writer_start(&w, &c, 200000);
    /* Let it write for a while, then kill the leader. */
    long long until = tc_now_ms() + 3000;
    while (acked_count(&w) < 200 && tc_now_ms() < until)
        tu_sleep_ms(10);
    assert_true(acked_count(&w) >= 1);
    int before_kill = w.n;
    long long killed_at = tc_now_ms();
    tc_stop(&c, leader, SIGKILL);
    int next = find_leader(&c, k, 1u << leader, 15000);
    long long elected_ms = tc_now_ms() - killed_at;
    assert_true(next > 0 && next != leader);
    printf("new leader m%d %lld ms after the kill (election timeout %u ms)\n", next, elected_ms,
           c.election_ms);
    /* The writer carries on by itself: more acknowledged writes after the new leader. */
    int acked_then = acked_count(&w);
    until = tc_now_ms() + 10000;
    while (acked_count(&w) < acked_then + 200 && tc_now_ms() < until)
        tu_sleep_ms(20);
    writer_stop(&w);
    printf("writes: %d attempted (%d before the kill), %d acknowledged, %d outcome unknown, %d "
           "failed\n",
           w.n, before_kill, acked_count(&w), w.unknown, w.failures);
    assert_true(acked_count(&w) >= acked_then + 200);
    wait_converged(&c, next, 10000);
    for (int i = 1; i <= 3; i++)
        if (c.m[i].pid != 0)
            assert_acked_on(&c, i, &w);

    /* The killed member restarts, catches up from the log, and holds every acknowledged write. */
    assert_int_equal(tc_start(&c, leader), 0);
    wait_converged(&c, next, 20000);
    assert_acked_on(&c, leader, &w);
    free(w.acked);
    keel_close(k);
    tc_cluster_close(&c);
}

/* Member i's id, from the member list (names match). */
static uint64_t member_id(struct tc_cluster *c, struct keel *k, int i)
{
    Keel__MemberListResponse *ml = NULL;
    assert_int_equal(keel_member_list(k, &ml), 0);
    uint64_t id = 0;
    for (size_t j = 0; j < ml->n_members; j++)
        if (strcmp(ml->members[j]->name, c->m[i].name) == 0)
            id = ml->members[j]->id;
    keel_free(ml);
    assert_true(id != 0);
    return id;
}

static int move_leader(struct keel *k, uint64_t target)
{
    Keel__MoveLeaderRequest ml = KEEL__MOVE_LEADER_REQUEST__INIT;
    ml.targetid = target;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MOVE_LEADER;
    req.move_leader = &ml;
    Keel__Response *resp = NULL;
    int rv = keel_do(k, &req, &resp);
    keel_free(resp);
    return rv;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* MoveLeader under a steady writer: leadership goes to the member asked for, every time; no
 * put fails (an entry cut off by the move may come back unknown, as on any leader change); a
 * member that is not a voter, or the leader itself, is answered at once. And the writer hardly
 * notices: while the leader hands over, what it is sent waits and is then redirected to the new
 * leader by name. Told "no leader" instead, libkeel backs off 25 ms (18.75 at least, jittered),
 * which is what each move cost before; the median over five moves must stay under that. */
static void leadership_moves_on_request(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "move");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    int leader = find_leader(&c, k, 0, 10000);
    assert_true(leader > 0);
    assert_int_equal(move_leader(k, 0x1234), KEEL_EMEMBERNOTFOUND);
    assert_int_equal(move_leader(k, member_id(&c, k, leader)), 0);
    assert_int_equal(find_leader(&c, k, 0, 10000), leader);
    struct writer w;
    writer_start(&w, &c, 1000000);
    long long until = tc_now_ms() + 3000;
    while (acked_count(&w) < 100 && tc_now_ms() < until)
        tu_sleep_ms(10);
    enum { MOVES = 5 };
    long long gaps[MOVES];
    for (int round = 0; round < MOVES; round++) {
        int target = leader % 3 + 1;
        w.max_gap_ms = 0;
        w.gap_on = 1;
        long long t0 = tc_now_ms();
        int rv = move_leader(k, member_id(&c, k, target));
        if (rv != 0)
            fail_msg("move to m%d: %s (%s)", target, keel_strerror(rv), keel_errmsg());
        long long took = tc_now_ms() - t0;
        int now = find_leader(&c, k, 0, 10000);
        printf("leadership m%d -> m%d in %lld ms\n", leader, now, took);
        assert_int_equal(now, target);
        leader = now;
        int acked = acked_count(&w);
        until = tc_now_ms() + 5000;
        while (acked_count(&w) < acked + 50 && tc_now_ms() < until)
            tu_sleep_ms(10);
        assert_true(acked_count(&w) >= acked + 50);
        w.gap_on = 0;
        gaps[round] = w.max_gap_ms;
    }
    writer_stop(&w);
    qsort(gaps, MOVES, sizeof(gaps[0]), cmp_ll);
    printf("writes: %d attempted, %d acknowledged, %d outcome unknown, %d failed; longest wait "
           "for a put per move: %lld %lld %lld %lld %lld ms\n",
           w.n, acked_count(&w), w.unknown, w.failures, gaps[0], gaps[1], gaps[2], gaps[3],
           gaps[4]);
    assert_int_equal(w.failures, 0);
    if (gaps[MOVES / 2] >= 18)
        fail_msg("a planned move stalls the writer %lld ms (median of %d moves)", gaps[MOVES / 2],
                 MOVES);
    wait_converged(&c, leader, 10000);
    for (int i = 1; i <= 3; i++)
        assert_acked_on(&c, i, &w);
    free(w.acked);
    keel_close(k);
    tc_cluster_close(&c);
}

/* The leader, polled until it is `want` (bounded); the last one seen. */
static int wait_leader_is(struct tc_cluster *c, struct keel *k, int want, int timeout_ms)
{
    long long deadline = tc_now_ms() + timeout_ms;
    int now = 0;
    while (tc_now_ms() < deadline) {
        now = find_leader(c, k, 0, 2000);
        if (now == want)
            break;
        tu_sleep_ms(100);
    }
    return now;
}

/* --preferred-leader-zone: leadership goes to the member in that zone, leaves it only when that
 * member is gone, comes back once it has caught up again, and then stays. */
static void leadership_settles_in_preferred_zone(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "prefer");
    snprintf(c.extra, sizeof(c.extra), "--preferred-leader-zone %s", c.m[2].zone);
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    int now = wait_leader_is(&c, k, 2, 20000);
    if (now != 2)
        fail_msg("leader m%d, not m2 of the preferred zone %s", now, c.m[2].zone);
    put_str(k, "p/1", "a");
    tc_stop(&c, 2, SIGKILL);
    now = find_leader(&c, k, 1u << 2, 15000);
    assert_true(now == 1 || now == 3);
    put_str(k, "p/2", "b");
    assert_int_equal(tc_start(&c, 2), 0);
    now = wait_leader_is(&c, k, 2, 30000);
    if (now != 2)
        fail_msg("leader m%d after m2 came back, not m2", now);
    /* No flapping: it stays for a while (30 looks of the leader). */
    for (int i = 0; i < 30; i++) {
        tu_sleep_ms(100);
        assert_int_equal(find_leader(&c, k, 0, 5000), 2);
    }
    char *v = get_from(&c, 2, "p/2", NULL);
    assert_non_null(v);
    assert_string_equal(v, "b");
    free(v);
    keel_close(k);
    tc_cluster_close(&c);
}

static void catch_up_through_checkpoint(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "checkpoint");
    c.snapshot_threshold = 64;
    c.snapshot_trailing = 32;
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    int leader = find_leader(&c, k, 0, 10000);
    assert_true(leader > 0);
    int victim = leader == 3 ? 2 : 3;
    put_str(k, "k/before", "1");
    assert_true(wait_value(&c, victim, "k/before", "1", 5000));
    tc_stop(&c, victim, SIGKILL);
    /* Far more than threshold + trailing entries while it is down. */
    for (int i = 0; i < 400; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k/%04d", i);
        put_str(k, key, "while-down");
    }
    put_str(k, "k/last", "done");
    assert_int_equal(tc_start(&c, victim), 0);
    assert_true(wait_value(&c, victim, "k/last", "done", 30000));
    wait_converged(&c, leader, 10000);
    /* It got there through a checkpoint, not the log: its log says so. */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "grep -q 'checkpoint restored' %s", c.m[victim].log);
    assert_int_equal(system(cmd), 0);
    /* And it keeps applying the log after the checkpoint. */
    put_str(k, "k/after", "2");
    assert_true(wait_value(&c, victim, "k/after", "2", 5000));
    keel_close(k);
    tc_cluster_close(&c);
}

static void clean_restart_applies_nothing_twice(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "restart");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    assert_true(find_leader(&c, k, 0, 10000) > 0);
    for (int i = 0; i < 50; i++)
        put_str(k, "k/counter", "x"); /* version 50 */
    put_str(k, "k/other", "y");
    struct digest before = wait_converged(&c, 1, 5000);
    int64_t mod_before = 0;
    free(get_from(&c, 2, "k/counter", &mod_before));
    int st = tc_stop(&c, 2, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(tc_start(&c, 2), 0);
    /* Let it rejoin and replay what raft re-delivers. */
    tu_sleep_ms(1500);
    struct digest after = wait_converged(&c, 1, 10000);
    assert_int_equal(after.count, before.count);
    assert_int_equal(after.hash, before.hash);
    assert_int_equal(after.revision, before.revision);
    int64_t mod_after = 0;
    free(get_from(&c, 2, "k/counter", &mod_after));
    assert_int_equal(mod_after, mod_before);
    keel_close(k);
    tc_cluster_close(&c);
}

static void whole_cluster_restart(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "fullrestart");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    assert_true(find_leader(&c, k, 0, 10000) > 0);
    for (int i = 0; i < 100; i++) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "k/%03d", i);
        snprintf(val, sizeof(val), "v%d", i);
        put_str(k, key, val);
    }
    assert_int_equal(keel_delete(k, "k/050", 5, NULL, NULL), 0);
    struct digest before = wait_converged(&c, 1, 5000);
    keel_close(k);
    for (int i = 1; i <= 3; i++)
        tc_stop(&c, i, SIGTERM);
    tc_start_all(&c);
    k = open_client(&c, 0);
    assert_true(find_leader(&c, k, 0, 15000) > 0);
    struct digest after = wait_converged(&c, 1, 10000);
    assert_int_equal(after.count, 99);
    assert_int_equal(after.hash, before.hash);
    assert_int_equal(after.revision, before.revision);
    /* and it takes writes again, at the next revision */
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)"k/new";
    put.key.len = 5;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    Keel__Response *resp = NULL;
    assert_int_equal(keel_do(k, &req, &resp), 0);
    assert_int_equal(resp->header->revision, before.revision + 1);
    keel_free(resp);
    keel_close(k);
    tc_cluster_close(&c);
}

static void five_members_survive_two_down(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 5, "five");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    int leader = find_leader(&c, k, 0, 10000);
    assert_true(leader > 0);
    put_str(k, "k/one", "1");
    /* Take down the leader and one follower. */
    int other = leader == 1 ? 2 : 1;
    tc_stop(&c, leader, SIGKILL);
    tc_stop(&c, other, SIGKILL);
    int next = find_leader(&c, k, (1u << leader) | (1u << other), 15000);
    assert_true(next > 0);
    for (int i = 0; i < 20; i++)
        put_str(k, "k/two", "2");
    for (int i = 1; i <= 5; i++)
        if (c.m[i].pid != 0)
            assert_true(wait_value(&c, i, "k/two", "2", 5000));
    keel_close(k);
    tc_cluster_close(&c);
}

/* ---- membership ---- */

/* --initial-cluster of the members whose bit (1 << i) is set in mask. */
static void set_initial(struct tc_cluster *c, unsigned mask)
{
    size_t off = 0;
    c->initial[0] = '\0';
    for (int i = 1; i <= c->n; i++)
        if (mask & (1u << i))
            off += (size_t)snprintf(c->initial + off, sizeof(c->initial) - off, "%s%s=%s@%s",
                                    off ? "," : "", c->m[i].name, c->m[i].peer, c->m[i].zone);
}

/* Member add of c's member i; 0 with its id in *id, or the error (keel_errmsg says why). */
static int add_member(struct keel *k, struct tc_cluster *c, int i, bool learner, bool force,
                      uint64_t *id)
{
    char url[64];
    snprintf(url, sizeof(url), "http://%s", c->m[i].peer);
    char *urls[1] = {url};
    Keel__MemberAddRequest ma = KEEL__MEMBER_ADD_REQUEST__INIT;
    ma.name = c->m[i].name;
    ma.zone = c->m[i].zone;
    ma.peerurls = urls;
    ma.n_peerurls = 1;
    ma.islearner = learner;
    ma.force = force;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_ADD;
    req.member_add = &ma;
    Keel__Response *resp = NULL;
    int rv = keel_do(k, &req, &resp);
    if (rv == 0) {
        assert_int_equal(resp->body_case, KEEL__RESPONSE__BODY_MEMBER_ADD);
        assert_non_null(resp->member_add->member);
        assert_string_equal(resp->member_add->member->name, c->m[i].name);
        *id = resp->member_add->member->id;
    }
    keel_free(resp);
    return rv;
}

static int change_member(struct keel *k, uint64_t id, bool promote, bool force)
{
    Keel__MemberRemoveRequest mr = KEEL__MEMBER_REMOVE_REQUEST__INIT;
    Keel__MemberPromoteRequest mp = KEEL__MEMBER_PROMOTE_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    if (promote) {
        mp.id = id;
        mp.force = force;
        req.body_case = KEEL__REQUEST__BODY_MEMBER_PROMOTE;
        req.member_promote = &mp;
    } else {
        mr.id = id;
        mr.force = force;
        req.body_case = KEEL__REQUEST__BODY_MEMBER_REMOVE;
        req.member_remove = &mr;
    }
    Keel__Response *resp = NULL;
    int rv = keel_do(k, &req, &resp);
    keel_free(resp);
    return rv;
}

/* 1: id is a voting member; 0: a learner; -1: not a member. */
static int role_of(struct keel *k, uint64_t id)
{
    Keel__MemberListResponse *ml = NULL;
    assert_int_equal(keel_member_list(k, &ml), 0);
    int role = -1;
    for (size_t j = 0; j < ml->n_members; j++)
        if (ml->members[j]->id == id)
            role = ml->members[j]->islearner ? 0 : 1;
    keel_free(ml);
    return role;
}

static void wait_role(struct keel *k, uint64_t id, int role, int timeout_ms)
{
    long long until = tc_now_ms() + timeout_ms;
    while (role_of(k, id) != role && tc_now_ms() < until)
        tu_sleep_ms(50);
    assert_int_equal(role_of(k, id), role);
}

/* Every k/ key with its value and revisions, as member i holds it, into buf. */
static void contents_of(struct tc_cluster *c, int i, char *buf, size_t len)
{
    struct keel *k = open_pinned(c, i);
    uint8_t end[8];
    size_t elen = keel_prefix_end("k/", 2, end);
    struct keel_get_opts o = {.serializable = true, .range_end = end, .range_end_len = elen};
    Keel__RangeResponse *r = NULL;
    int rv = keel_get(k, "k/", 2, &o, &r);
    size_t off = 0;
    buf[0] = '\0';
    for (size_t j = 0; rv == 0 && j < r->n_kvs && off < len; j++) {
        const Keel__KeyValue *kv = r->kvs[j];
        off += (size_t)snprintf(buf + off, len - off, "%.*s=%.*s@%lld/%lld;", (int)kv->key.len,
                                (const char *)kv->key.data, (int)kv->value.len,
                                (const char *)kv->value.data, (long long)kv->create_revision,
                                (long long)kv->mod_revision);
    }
    if (rv != 0)
        snprintf(buf, len, "(get failed: %s)", keel_strerror(rv));
    keel_free(r);
    keel_close(k);
}

/* The members in mask end with the same keys, values and revisions (waiting for the slowest). */
static void assert_same_contents(struct tc_cluster *c, unsigned mask)
{
    size_t len = 4u << 20;
    char *want = malloc(len), *got = malloc(len);
    int first = 0;
    for (int i = 1; i <= c->n && first == 0; i++)
        if (mask & (1u << i))
            first = i;
    long long until = tc_now_ms() + 15000;
    for (int i = first + 1; i <= c->n; i++) {
        if (!(mask & (1u << i)))
            continue;
        do {
            contents_of(c, first, want, len);
            contents_of(c, i, got, len);
        } while (strcmp(want, got) != 0 && tc_now_ms() < until && (tu_sleep_ms(100), 1));
        if (strcmp(want, got) != 0)
            fail_msg("m%d and m%d differ (%zu and %zu bytes of contents)", first, i, strlen(want),
                     strlen(got));
    }
    free(want);
    free(got);
}

/*
 * Membership under a writer: m4 joins as a learner (promotion refused until it has caught up),
 * m5 joins to vote (a learner until the leader sees it caught up), the leader removes itself
 * (leadership goes first; the removed member stops by itself), m5 is removed (back to three),
 * and m4 is replaced after its data dir was wiped (remove, add, join). No put fails, and every
 * member ends with every acknowledged write and the same contents.
 */
static void members_change_under_load(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 5, "members");
    set_initial(&c, 0xe);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(tc_start(&c, i), 0);
    struct keel *k = open_client(&c, 0);
    assert_true(find_leader(&c, k, 0x30, 10000) > 0);
    struct writer w;
    writer_start(&w, &c, 1000000);
    long long until = tc_now_ms() + 5000;
    while (acked_count(&w) < 100 && tc_now_ms() < until)
        tu_sleep_ms(10);

    uint64_t id4 = 0, id5 = 0;
    assert_int_equal(add_member(k, &c, 4, true, false, &id4), 0);
    assert_int_equal(role_of(k, id4), 0);
    assert_int_equal(add_member(k, &c, 4, true, false, &id4), KEEL_EMEMBEREXISTS);
    /* Not started: not in sync, so not promoted. */
    assert_int_equal(change_member(k, id4, true, false), KEEL_EINVAL);
    assert_non_null(strstr(keel_errmsg(), "in sync"));
    set_initial(&c, 0x1e);
    snprintf(c.m[4].extra, sizeof(c.m[4].extra), "--initial-cluster-state existing");
    assert_int_equal(tc_start(&c, 4), 0);
    until = tc_now_ms() + 20000;
    int rv;
    while ((rv = change_member(k, id4, true, false)) != 0 && tc_now_ms() < until)
        tu_sleep_ms(100);
    if (rv != 0)
        fail_msg("promote m4: %s (%s)", keel_strerror(rv), keel_errmsg());
    assert_int_equal(role_of(k, id4), 1);
    /* A learner stays one: m4 was promoted only because it was asked. */

    assert_int_equal(add_member(k, &c, 5, false, false, &id5), 0);
    assert_int_equal(role_of(k, id5), 0);
    set_initial(&c, 0x3e);
    snprintf(c.m[5].extra, sizeof(c.m[5].extra), "--initial-cluster-state existing");
    assert_int_equal(tc_start(&c, 5), 0);
    wait_role(k, id5, 1, 20000);
    assert_true(tc_log_contains(&c, 5, "joined cluster"));

    int leader = find_leader(&c, k, 0, 10000);
    assert_true(leader > 0);
    uint64_t idl = member_id(&c, k, leader);
    rv = change_member(k, idl, false, false);
    if (rv != 0)
        fail_msg("remove the leader m%d: %s (%s)", leader, keel_strerror(rv), keel_errmsg());
    assert_int_equal(role_of(k, idl), -1);
    assert_true(find_leader(&c, k, 1u << leader, 10000) != leader);
    /* Removed, it stops by itself, saying why. */
    int st = tc_stop(&c, leader, 0);
    assert_true(st != -1);
    assert_true(tc_log_contains(&c, leader, "removed from the cluster"));
    unsigned running = 0x3e & ~(1u << leader);

    assert_int_equal(change_member(k, id5, false, false), 0);
    assert_true(tc_stop(&c, 5, 0) != -1);
    running &= ~(1u << 5);
    assert_true(find_leader(&c, k, ~running, 10000) > 0);

    /* Replace m4 whose disk was lost: three voters become two for a moment (--force: one zone's
     * loss would stop them), then m4 joins again from nothing. */
    tc_stop(&c, 4, SIGKILL);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c.m[4].dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(change_member(k, id4, false, false), KEEL_EINVAL);
    assert_non_null(strstr(keel_errmsg(), "short of a quorum"));
    assert_int_equal(change_member(k, id4, false, true), 0);
    assert_int_equal(add_member(k, &c, 4, false, false, &id4), 0);
    assert_int_equal(tc_start(&c, 4), 0);
    wait_role(k, id4, 1, 20000);

    until = tc_now_ms() + 5000;
    int acked = acked_count(&w);
    while (acked_count(&w) < acked + 100 && tc_now_ms() < until)
        tu_sleep_ms(10);
    writer_stop(&w);
    printf("writes: %d acknowledged, %d unknown, %d failed\n", acked_count(&w), w.unknown,
           w.failures);
    assert_int_equal(w.failures, 0);
    assert_true(acked_count(&w) > acked);
    for (int i = 1; i <= 5; i++)
        if (running & (1u << i))
            assert_acked_on_soon(&c, i, &w);
    assert_same_contents(&c, running);
    free(w.acked);
    keel_close(k);
    tc_cluster_close(&c);
}

/* The zone rule: a change that would let one zone's loss stop the cluster is refused, naming the
 * zone and the counts, unless forced; a learner (no vote) may go anywhere. */
static void members_zone_loss_refused(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 4, "memzones");
    snprintf(c.m[4].zone, sizeof(c.m[4].zone), "z1"); /* m4 shares m1's zone */
    set_initial(&c, 0xe);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(tc_start(&c, i), 0);
    struct keel *k = open_client(&c, 0);
    int leader = find_leader(&c, k, 0x10, 10000);
    assert_true(leader > 0);
    /* A remove after which the voters that answer would be no quorum is refused, forced or not:
     * the new configuration could never commit. */
    int down = leader % 3 + 1, other = down % 3 + 1;
    if (other == leader)
        other = other % 3 + 1;
    uint64_t other_id = member_id(&c, k, other);
    assert_true(tc_stop(&c, down, SIGKILL) != -1);
    /* The leader counts as answering whoever it heard from in the last election timeout or two
     * (raft clears its flag once per election timeout; membership.c keeps what it saw for one
     * more): wait out both, with room for a slow loop. */
    tu_sleep_ms(4 * (int)c.election_ms);
    assert_int_equal(change_member(k, other_id, false, true), KEEL_EINVAL);
    assert_non_null(strstr(keel_errmsg(), "answer the leader"));
    assert_int_equal(tc_start(&c, down), 0);
    put_str(k, "k/back", "1");
    long long until = tc_now_ms() + 20000;
    char *v = NULL;
    while ((v = get_from(&c, down, "k/back", NULL)) == NULL && tc_now_ms() < until) {
        tu_sleep_ms(50);
    }
    assert_non_null(v);
    free(v);
    uint64_t id4 = 0;
    assert_int_equal(add_member(k, &c, 4, false, false, &id4), KEEL_EINVAL);
    assert_non_null(strstr(keel_errmsg(), "2 of the 4 voting members in zone z1"));
    assert_int_equal(change_member(k, member_id(&c, k, 3), false, false), KEEL_EINVAL);
    assert_non_null(strstr(keel_errmsg(), "short of a quorum of 2"));
    assert_int_equal(add_member(k, &c, 4, true, false, &id4), 0);
    set_initial(&c, 0x1e);
    snprintf(c.m[4].extra, sizeof(c.m[4].extra), "--initial-cluster-state existing");
    assert_int_equal(tc_start(&c, 4), 0);
    until = tc_now_ms() + 20000;
    int rv;
    while ((rv = change_member(k, id4, true, false)) != 0 &&
           strstr(keel_errmsg(), "zone z1") == NULL && tc_now_ms() < until)
        tu_sleep_ms(100);
    assert_int_equal(rv, KEEL_EINVAL);
    assert_non_null(strstr(keel_errmsg(), "zone z1"));
    assert_int_equal(change_member(k, id4, true, true), 0);
    assert_int_equal(role_of(k, id4), 1);
    put_str(k, "k/after", "promoted");

    /* Member update: m2 moves to another peer port; restarted there, it is accepted and gets
     * what it missed. */
    uint64_t id2 = member_id(&c, k, 2);
    assert_true(tc_stop(&c, 2, SIGTERM) != -1);
    char url[64];
    snprintf(c.m[2].peer, sizeof(c.m[2].peer), "127.0.2.1:%d", tc_member_free_port(&c, 2));
    snprintf(url, sizeof(url), "http://%s", c.m[2].peer);
    char *urls[1] = {url};
    Keel__MemberUpdateRequest mu = KEEL__MEMBER_UPDATE_REQUEST__INIT;
    mu.id = id2;
    mu.peerurls = urls;
    mu.n_peerurls = 1;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_UPDATE;
    req.member_update = &mu;
    Keel__Response *resp = NULL;
    rv = keel_do(k, &req, &resp);
    if (rv != 0)
        fail_msg("member update: %s (%s)", keel_strerror(rv), keel_errmsg());
    bool listed = false;
    for (size_t j = 0; j < resp->member_update->n_members; j++)
        listed = listed || (resp->member_update->members[j]->id == id2 &&
                            strcmp(resp->member_update->members[j]->peerurls[0], c.m[2].peer) == 0);
    keel_free(resp);
    assert_true(listed);
    put_str(k, "k/moved", "while m2 was away");
    set_initial(&c, 0x1e);
    assert_int_equal(tc_start(&c, 2), 0);
    until = tc_now_ms() + 20000;
    while ((v = get_from(&c, 2, "k/moved", NULL)) == NULL && tc_now_ms() < until)
        tu_sleep_ms(50);
    assert_non_null(v);
    assert_string_equal(v, "while m2 was away");
    free(v);
    keel_close(k);
    tc_cluster_close(&c);
}

/* ---- metrics and health ---- */

/* One HTTP/1.1 request to addr ("a.b.c.d:port"); the status, and the body into body (cut to len).
 * -1 when nothing came back. */
static int http_req(const char *addr, const char *method, const char *path, char *body, size_t len)
{
    char *b = NULL;
    int st = tc_http(addr, method, path, NULL, &b);
    snprintf(body, len, "%s", b ? b : "");
    free(b);
    return st;
}

/* addr's /metrics, checked line by line (prom.h); the value of name, which has no labels. */
static double scrape(const char *addr, const char *name)
{
    struct tp_scrape sc;
    tp_scrape(addr, &sc);
    if (sc.n < 20)
        fail_msg("only %zu samples in %s/metrics", sc.n, addr);
    double v = tp_value(&sc, name, "");
    tp_free(&sc);
    return v;
}

/* --listen-metrics: /metrics parses as Prometheus text and its counters move with the writes;
 * /health flips to 503 when quorum is lost and back to 200 when it returns; what is not served
 * is refused with the right status. */
static void metrics_and_health(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "metrics");
    char maddr[4][32];
    for (int i = 1; i <= 3; i++) {
        snprintf(maddr[i], sizeof(maddr[i]), "127.0.%d.1:%d", i, tc_member_free_port(&c, i));
        snprintf(c.m[i].extra, sizeof(c.m[i].extra), "--listen-metrics %s%s", maddr[i],
                 i == 1 ? " --log-format json" : "");
    }
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    int leader = find_leader(&c, k, 0, 10000);
    assert_true(leader > 0);
    char body[512];
    long long until = tc_now_ms() + 10000;
    int st;
    while ((st = http_req(maddr[leader], "GET", "/health", body, sizeof(body))) != 200 &&
           tc_now_ms() < until)
        tu_sleep_ms(50);
    assert_int_equal(st, 200);
    assert_string_equal(body, "{\"health\":\"true\",\"reason\":\"\"}");
    assert_true(scrape(maddr[leader], "keel_server_is_leader") == 1);
    assert_true(scrape(maddr[leader], "keel_server_has_leader") == 1);
    double before = scrape(maddr[leader], "keel_mvcc_current_revision");
    double keys = scrape(maddr[leader], "keel_mvcc_keys_total");
    for (int i = 0; i < 10; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k/m%d", i);
        put_str(k, key, "v");
    }
    assert_true(scrape(maddr[leader], "keel_mvcc_current_revision") == before + 10);
    assert_true(scrape(maddr[leader], "keel_mvcc_keys_total") == keys + 10);
    assert_true(scrape(maddr[leader], "keel_server_leader_changes_seen_total") >= 1);
    assert_int_equal(http_req(maddr[leader], "GET", "/nope", body, sizeof(body)), 404);
    assert_int_equal(http_req(maddr[leader], "POST", "/metrics", body, sizeof(body)), 405);
    assert_int_equal(http_req(maddr[leader], "GET", "/livez", body, sizeof(body)), 200);
    assert_int_equal(http_req(maddr[leader], "GET", "/readyz", body, sizeof(body)), 200);

    /* Quorum lost: the survivor says so. */
    int a = leader % 3 + 1, b = a % 3 + 1;
    tc_stop(&c, a, SIGKILL);
    tc_stop(&c, b, SIGKILL);
    until = tc_now_ms() + 15000;
    while ((st = http_req(maddr[leader], "GET", "/health", body, sizeof(body))) != 503 &&
           tc_now_ms() < until)
        tu_sleep_ms(50);
    assert_int_equal(st, 503);
    assert_string_equal(body, "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}");
    assert_int_equal(http_req(maddr[leader], "GET", "/readyz", body, sizeof(body)), 503);
    assert_true(scrape(maddr[leader], "keel_server_has_leader") == 0);
    /* Back. */
    assert_int_equal(tc_start(&c, a), 0);
    assert_int_equal(tc_start(&c, b), 0);
    until = tc_now_ms() + 20000;
    while ((st = http_req(maddr[leader], "GET", "/health", body, sizeof(body))) != 200 &&
           tc_now_ms() < until)
        tu_sleep_ms(50);
    assert_int_equal(st, 200);
    /* m1 logged JSON: every line one object naming it and its zone. */
    FILE *f = fopen(c.m[1].log, "r");
    assert_non_null(f);
    char line[4096];
    int lines = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        if (strncmp(line, "{\"ts\":\"", 7) != 0 || line[n - 1] != '}' ||
            strstr(line, "\"member\":\"m1\",\"zone\":\"z1\",\"msg\":\"") == NULL)
            fail_msg("m1's log line is no JSON object of its own: %s", line);
        lines++;
    }
    fclose(f);
    assert_true(lines > 3);
    /* Every member says what it runs with, once, at start. */
    assert_true(tc_log_contains(&c, 2, "effective configuration: name=m2 zone=z2"));
    assert_true(tc_log_contains(&c, 2, "initial-cluster-state=new"));
    keel_close(k);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest basic[] = {cmocka_unit_test(three_members_read_write)};
    const struct CMUnitTest failover[] = {cmocka_unit_test(leader_killed_while_writing)};
    const struct CMUnitTest move[] = {cmocka_unit_test(leadership_moves_on_request)};
    const struct CMUnitTest prefer[] = {cmocka_unit_test(leadership_settles_in_preferred_zone)};
    const struct CMUnitTest checkpoint[] = {cmocka_unit_test(catch_up_through_checkpoint)};
    const struct CMUnitTest restart[] = {cmocka_unit_test(clean_restart_applies_nothing_twice)};
    const struct CMUnitTest full_restart[] = {cmocka_unit_test(whole_cluster_restart)};
    const struct CMUnitTest five[] = {cmocka_unit_test(five_members_survive_two_down)};
    const struct CMUnitTest metrics[] = {cmocka_unit_test(metrics_and_health)};
    const struct CMUnitTest members[] = {cmocka_unit_test(members_change_under_load),
                                         cmocka_unit_test(members_zone_loss_refused)};
    const struct tu_group groups[] = {
        TU_GROUP(basic),      TU_GROUP(failover), TU_GROUP(move),         TU_GROUP(prefer),
        TU_GROUP(checkpoint), TU_GROUP(restart),  TU_GROUP(full_restart), TU_GROUP(five),
        TU_GROUP(members),    TU_GROUP(metrics),
    };
    return tu_run_groups("test_cluster", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
