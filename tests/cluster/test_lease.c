/*
 * Leases through real keeld processes (issue 10): `test_lease <group>`, one ctest entry each.
 *
 *   expiry       a key under a 2 s lease is gone on every member within TTL + one election
 *                timeout of its grant, never before the TTL, at the same revision everywhere,
 *                and each member's watcher sees the DELETE
 *   failover     kill -9 of the leader while libkeel's keep-alive set keeps a lease alive never
 *                expires it (5 rounds); revoked, the set reports it lost once
 *   not_forever  with the leader killed every 1.5 s, a 3 s lease nobody keeps alive keeps
 *                its deadline on every new leader, and is revoked within one election
 *                timeout of the first leader counting past it (not_forever says why)
 *   mass         10,000 leases expiring together are all revoked, on every member, while a
 *                put workload sees no gap longer than one election timeout
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
#include "testutil.h"

static struct keel *open_client(const struct tc_cluster *c, int member)
{
    char eps[512];
    tc_endpoints(c, member, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 4000, .dial_timeout_ms = 500};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

static int64_t grant(struct keel *k, int64_t ttl)
{
    Keel__LeaseGrantResponse *g = NULL;
    int rv = keel_lease_grant(k, ttl, 0, &g);
    if (rv != 0)
        fail_msg("lease grant: %s (%s)", keel_strerror(rv), keel_errmsg());
    assert_int_equal(g->ttl, ttl);
    int64_t id = g->id;
    keel_free(g);
    return id;
}

static void put_lease(struct keel *k, const char *key, int64_t lease)
{
    struct keel_put_opts po = {.lease = lease};
    int rv = keel_put(k, key, strlen(key), "v", 1, &po, NULL);
    if (rv != 0)
        fail_msg("put %s: %s (%s)", key, keel_strerror(rv), keel_errmsg());
}

/* The key's count as member i (0: through the leader, linearizable) sees it; -1 on error. */
static int64_t count_at(struct keel *k, const char *key, const char *end, bool serializable)
{
    struct keel_get_opts go = {.serializable = serializable, .count_only = true};
    if (end != NULL) {
        go.range_end = end;
        go.range_end_len = strlen(end);
    }
    Keel__RangeResponse *r = NULL;
    if (keel_get(k, key, strlen(key), &go, &r) != 0)
        return -1;
    int64_t n = r->count;
    keel_free(r);
    return n;
}

static int64_t ttl_of(struct keel *k, int64_t id)
{
    Keel__LeaseTimeToLiveResponse *t = NULL;
    int rv = keel_lease_time_to_live(k, id, false, &t);
    if (rv != 0)
        fail_msg("time-to-live: %s (%s)", keel_strerror(rv), keel_errmsg());
    int64_t ttl = t->ttl;
    keel_free(t);
    return ttl;
}

/* ---- expiry ---- */

struct seen {
    pthread_mutex_t mu;
    long long at;     /* when the DELETE arrived, 0: not yet */
    int64_t revision; /* its mod revision */
    int puts;
};

static void on_events(struct keel_watch *w, int status, const Keel__Event *const *events, size_t n,
                      int64_t revision, void *data)
{
    struct seen *s = data;
    (void)w;
    (void)status;
    (void)revision;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        if (events[i]->type == KEEL__EVENT__EVENT_TYPE__PUT)
            s->puts++;
        else if (s->at == 0) {
            s->at = tc_now_ms();
            s->revision = events[i]->kv->mod_revision;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static void expiry(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "lease-expiry");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    assert_true(tc_find_leader(&c, k, 0, 10000) > 0);
    struct keel *one[4];
    struct keel_watch *w[4];
    struct seen seen[4];
    for (int i = 1; i <= 3; i++) {
        one[i] = open_client(&c, i);
        memset(&seen[i], 0, sizeof(seen[i]));
        pthread_mutex_init(&seen[i].mu, NULL);
        /* A serializable read first: the member has applied what the leader acknowledged. */
        assert_int_equal(keel_watch_open(one[i], "lk", 2, NULL, on_events, &seen[i], &w[i]), 0);
    }
    long long sent = tc_now_ms();
    int64_t id = grant(k, 2);
    long long granted = tc_now_ms();
    put_lease(k, "lk", id);
    assert_true(ttl_of(k, id) > 0);
    /* Gone on every member within TTL + one election timeout of the grant. */
    long long bound = granted + 2000 + c.election_ms;
    for (int i = 1; i <= 3; i++) {
        while (tc_now_ms() < bound + 5000) {
            pthread_mutex_lock(&seen[i].mu);
            long long at = seen[i].at;
            pthread_mutex_unlock(&seen[i].mu);
            if (at != 0)
                break;
            tu_sleep_ms(5);
        }
    }
    for (int i = 1; i <= 3; i++) {
        pthread_mutex_lock(&seen[i].mu);
        fprintf(stderr, "member %d: DELETE at revision %lld, %lld ms after the grant\n", i,
                (long long)seen[i].revision, seen[i].at - granted);
        assert_int_equal(seen[i].puts, 1);
        assert_true(seen[i].at != 0);
        assert_true(seen[i].at >= sent + 2000); /* never early */
        assert_true(seen[i].at <= bound);
        assert_int_equal(seen[i].revision, seen[1].revision);
        pthread_mutex_unlock(&seen[i].mu);
        assert_int_equal(count_at(one[i], "lk", NULL, true), 0);
    }
    assert_int_equal(ttl_of(k, id), -1);
    /* A keep-alive of the expired lease: TTL 0; a put under it: LEASE_NOT_FOUND, no write. */
    Keel__LeaseKeepAliveRequest ka = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
    ka.id = id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
    req.lease_keep_alive = &ka;
    Keel__Response *resp = NULL;
    assert_int_equal(keel_do(k, &req, &resp), 0);
    assert_int_equal(resp->lease_keep_alive->ttl, 0);
    keel_free(resp);
    struct keel_put_opts po = {.lease = id};
    assert_int_equal(keel_put(k, "lk2", 3, "v", 1, &po, NULL), KEEL_ELEASENOTFOUND);
    assert_int_equal(count_at(k, "lk2", NULL, false), 0);
    for (int i = 1; i <= 3; i++) {
        keel_watch_close(one[i], w[i]);
        keel_close(one[i]);
        pthread_mutex_destroy(&seen[i].mu);
    }
    keel_close(k);
    tc_cluster_close(&c);
}

/* ---- failover ---- */

struct lost_log {
    pthread_mutex_t mu;
    int n;       /* KEEL_ELEASENOTFOUND reports: gone */
    int overdue; /* KEEL_ETIMEOUT reports: no renewal for a TTL */
    int64_t id;
    int reason;
    long long renewed_at; /* the last renewal's answer */
};

static void on_renewed(struct keel_keepalive *ka, int64_t id, int64_t ttl,
                       const Keel__Response *resp, void *data)
{
    struct lost_log *l = data;
    (void)ka;
    (void)id;
    (void)ttl;
    (void)resp;
    pthread_mutex_lock(&l->mu);
    l->renewed_at = tc_now_ms();
    pthread_mutex_unlock(&l->mu);
}

/* libkeel's keep-alive set reports a lease it lost (on the client's loop thread). */
static void on_lost(struct keel_keepalive *ka, int64_t id, int reason, void *data)
{
    struct lost_log *l = data;
    (void)ka;
    pthread_mutex_lock(&l->mu);
    if (reason == KEEL_ETIMEOUT)
        l->overdue++;
    else
        l->n++;
    l->id = id;
    l->reason = reason;
    pthread_mutex_unlock(&l->mu);
}

static int lost_count(struct lost_log *l)
{
    pthread_mutex_lock(&l->mu);
    int n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static int overdue_count(struct lost_log *l)
{
    pthread_mutex_lock(&l->mu);
    int n = l->overdue;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static void failover(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "lease-failover");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    assert_true(tc_find_leader(&c, k, 0, 10000) > 0);
    int64_t id = grant(k, 2);
    put_lease(k, "held", id);
    /* Kept alive by libkeel's keep-alive set, through a client of its own. */
    struct keel *kk = open_client(&c, 0);
    struct lost_log lost = {.n = 0};
    pthread_mutex_init(&lost.mu, NULL);
    struct keel_keepalive *ka = NULL;
    struct keel_keepalive_opts ko = {.lost = on_lost, .data = &lost};
    assert_int_equal(keel_lease_keepalive_start(kk, &ko, &ka), 0);
    assert_int_equal(keel_lease_keepalive_add(kk, ka, id), 0);
    for (int round = 0; round < 5; round++) {
        int leader = tc_find_leader(&c, k, 0, 10000);
        assert_true(leader > 0);
        assert_true(tc_stop(&c, leader, SIGKILL) >= 0);
        assert_true(tc_find_leader(&c, k, 1u << leader, 10000) > 0);
        /* Longer than TTL + election timeout after the kill: it would have expired by now if
         * the new leader had not counted from the keep-alives. */
        tu_sleep_ms(2000 + 2 * (int)c.election_ms);
        if (lost_count(&lost) != 0)
            fail_msg("round %d: the set lost the lease: %s", round, keel_strerror(lost.reason));
        assert_int_equal(count_at(k, "held", NULL, false), 1);
        assert_true(ttl_of(k, id) > 0);
        assert_int_equal(tc_start(&c, leader), 0);
    }
    struct keel_keepalive_stats st;
    assert_int_equal(keel_lease_keepalive_stats(kk, ka, &st), 0);
    fprintf(stderr,
            "keep-alives: %llu sent, %llu renewed, %llu failed and retried; overdue %d times\n",
            (unsigned long long)st.sent, (unsigned long long)st.answered,
            (unsigned long long)st.failures, overdue_count(&lost));
    assert_int_equal(st.leases, 1);
    assert_true(st.answered >= 5);
    /* Revoked by someone else: the set reports it lost, once. */
    assert_int_equal(keel_lease_revoke(k, id), 0);
    long long until = tc_now_ms() + 5000;
    while (lost_count(&lost) == 0 && tc_now_ms() < until)
        tu_sleep_ms(10);
    assert_int_equal(lost_count(&lost), 1);
    assert_int_equal(lost.id, id);
    assert_int_equal(lost.reason, KEEL_ELEASENOTFOUND);
    assert_int_equal(keel_lease_keepalive_stop(kk, ka), 0);
    keel_close(kk);
    pthread_mutex_destroy(&lost.mu);
    keel_close(k);
    tc_cluster_close(&c);
}

/* libkeel's set: a removed lease is no longer renewed (and not reported), and with every
 * member gone a kept lease is reported overdue once its TTL has passed without a renewal, once,
 * and stays in the set. */
static void keepalive_set(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "lease-kaset");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    assert_true(tc_find_leader(&c, k, 0, 10000) > 0);
    int64_t a = grant(k, 2), b = grant(k, 2);
    struct lost_log lost = {.n = 0};
    pthread_mutex_init(&lost.mu, NULL);
    struct keel_keepalive *ka = NULL;
    struct keel_keepalive_opts ko = {.lost = on_lost, .renewed = on_renewed, .data = &lost};
    assert_int_equal(keel_lease_keepalive_start(k, &ko, &ka), 0);
    assert_int_equal(keel_lease_keepalive_add(k, ka, a), 0);
    assert_int_equal(keel_lease_keepalive_add(k, ka, b), 0);
    assert_int_equal(keel_lease_keepalive_add(k, ka, -1), KEEL_EINVAL);
    tu_sleep_ms(1000);
    assert_int_equal(keel_lease_keepalive_remove(k, ka, b), 0);
    assert_int_equal(keel_lease_keepalive_remove(k, ka, b), KEEL_ELEASENOTFOUND);
    tu_sleep_ms(3000);
    assert_true(ttl_of(k, a) > 0);
    assert_int_equal(ttl_of(k, b), -1);
    assert_int_equal(lost_count(&lost), 0);
    long long killed = tc_now_ms();
    for (int i = 1; i <= 3; i++)
        tc_stop(&c, i, SIGKILL);
    while (overdue_count(&lost) == 0 && tc_now_ms() < killed + 10000)
        tu_sleep_ms(10);
    long long seen = tc_now_ms();
    assert_int_equal(overdue_count(&lost), 1);
    assert_int_equal(lost_count(&lost), 0);
    assert_int_equal(lost.id, a);
    assert_int_equal(lost.reason, KEEL_ETIMEOUT);
    /* Not before its TTL had passed since the last renewal was sent (its answer came one round
     * trip later, well under 250 ms). */
    pthread_mutex_lock(&lost.mu);
    long long renewed_at = lost.renewed_at;
    pthread_mutex_unlock(&lost.mu);
    fprintf(stderr,
            "lease reported overdue %lld ms after every member was killed, %lld ms after its "
            "last renewal\n",
            seen - killed, seen - renewed_at);
    assert_true(seen - renewed_at >= 2000 - 250);
    struct keel_keepalive_stats st;
    assert_int_equal(keel_lease_keepalive_stats(k, ka, &st), 0);
    /* Still in the set, still tried: reported once, not again while nothing changes. */
    tu_sleep_ms(1000);
    assert_int_equal(overdue_count(&lost), 1);
    assert_int_equal(keel_lease_keepalive_stats(k, ka, &st), 0);
    assert_int_equal(st.leases, 1);
    assert_int_equal(st.overdue, 1);
    assert_int_equal(st.lost, 0);
    assert_int_equal(keel_lease_keepalive_stop(k, ka), 0);
    assert_int_equal(keel_lease_keepalive_stop(k, ka), KEEL_EINVAL);
    pthread_mutex_destroy(&lost.mu);
    keel_close(k);
    tc_cluster_close(&c);
}

/* ---- not forever ---- */

/* One member watched for the key's disappearance, on a thread of its own, so that the time is
 * taken when it happens, not when the main thread is done killing and restarting members. */
struct gone_poll {
    struct keel *k;
    volatile int stop;
    volatile long long gone_at;
    pthread_t th;
};

static void *gone_main(void *arg)
{
    struct gone_poll *g = arg;
    while (!g->stop && g->gone_at == 0) {
        if (count_at(g->k, "doomed", NULL, true) == 0)
            g->gone_at = tc_now_ms();
        else
            tu_sleep_ms(5);
    }
    return NULL;
}

/* The lease's time-to-live as the leader of the moment answers it, on a thread of its own: each
 * answer bounds the deadline that leader counts down to, and the first answer to a request sent
 * after a kill shows when the next leader's lessor was counting (it answers only then). */
#define TTL_ANSWERS 4096

struct ttl_answer {
    long long sent, received;
    int64_t ttl; /* -1: the lease is gone */
};

struct ttl_poll {
    struct keel *k;
    int64_t id;
    volatile int stop;
    pthread_mutex_t mu;
    struct ttl_answer a[TTL_ANSWERS];
    size_t n;
    pthread_t th;
};

static void *ttl_main(void *arg)
{
    struct ttl_poll *p = arg;
    while (!p->stop) {
        long long sent = tc_now_ms();
        Keel__LeaseTimeToLiveResponse *t = NULL;
        if (keel_lease_time_to_live(p->k, p->id, false, &t) == 0) {
            pthread_mutex_lock(&p->mu);
            if (p->n < TTL_ANSWERS)
                p->a[p->n++] = (struct ttl_answer){sent, tc_now_ms(), t->ttl};
            pthread_mutex_unlock(&p->mu);
            keel_free(t);
        }
        tu_sleep_ms(10);
    }
    return NULL;
}

/*
 * What the lessor promises for a lease nobody keeps alive (server/lessor.h, README "Leases
 * expire"), and what this test asserts, leader kills or not:
 *
 * 1. The deadline never moves. Its only checkpoint is the grant's (full TTL; a lease never
 *    kept alive gets no other), and a new leader counts it from when that was applied on it,
 *    which a restarted member knows from the store (the record's clock, not the store's last
 *    commit: a new leader's barrier commits too, and counting from that once moved the deadline
 *    out by up to 1.5 s with each restart of a member that then led: 6.7 s, not 3). Every
 *    member had applied the grant once it had the put that followed, so every leader's
 *    deadline is at most
 *        d_max = all_have + TTL
 *    (a member killed before its store committed the grant would replay it and count from
 *    then: the first kill comes 1.5 s after the grant, three backend batch intervals). A
 *    leader answering TTL s to a request sent at t counts to a deadline after t + (TTL - 1) s
 *    (it rounds up), which must be before d_max. A new leader that restarted the countdown
 *    (etcd without checkpoints: full TTL + an election timeout) fails this with the first kill.
 *
 * 2. Once a leader's lessor counts down past the deadline, the revoke follows within one
 *    election timeout. The revoke needs a leader to commit it: a kill just before or at the
 *    deadline (this schedule kills at exactly granted + 3 s) loses the revoke or the leader
 *    that would make it, and the next one counts only after raft's failover, which is not the
 *    lessor's to bound: 0.15 with pre-vote campaigns after a timeout drawn from
 *    [election, 2 election), and a split vote takes another draw (here 0.4-1 s after the kill
 *    at +3 s; a failover past 1.5 s meets the next kill). So the bound is from the later of
 *    d_max and when the first leader after the last kill was counting: its first TTL answer to
 *    a request sent after that kill (later than the leader was ready by up to a poll and its
 *    retries, which only loosens the bound; none before the lease was gone: nothing to check):
 *        gone <= max(d_max, ready after the last kill) + election_ms
 */
static void not_forever(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "lease-forever");
    const unsigned checkpoint_ms = 1000;
    const int64_t ttl = 3;
    snprintf(c.extra, sizeof(c.extra), "--lease-checkpoint-interval-ms %u", checkpoint_ms);
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    assert_true(tc_find_leader(&c, k, 0, 10000) > 0);
    struct keel *one[4];
    for (int i = 1; i <= 3; i++)
        one[i] = open_client(&c, i);
    long long sent = tc_now_ms();
    int64_t id = grant(k, ttl);
    long long granted = tc_now_ms();
    put_lease(k, "doomed", id);
    /* Every member has it before any is asked whether it is gone. */
    for (int i = 1; i <= 3; i++) {
        long long until = tc_now_ms() + 5000;
        while (count_at(one[i], "doomed", NULL, true) != 1 && tc_now_ms() < until)
            tu_sleep_ms(5);
        assert_int_equal(count_at(one[i], "doomed", NULL, true), 1);
    }
    long long all_have = tc_now_ms();
    long long d_max = all_have + ttl * 1000;
    struct gone_poll polls[4];
    for (int i = 1; i <= 3; i++) {
        polls[i] = (struct gone_poll){.k = one[i]};
        assert_int_equal(pthread_create(&polls[i].th, NULL, gone_main, &polls[i]), 0);
    }
    struct ttl_poll *tp = calloc(1, sizeof(*tp));
    assert_non_null(tp);
    /* Short requests: one sent before a kill is not retried until after it, so requests sent
     * after each kill show when the next leader counts. */
    char eps[512];
    tc_endpoints(&c, 0, eps, sizeof(eps));
    struct keel_options to = {.endpoints = eps, .request_timeout_ms = 200, .dial_timeout_ms = 100};
    assert_int_equal(keel_open(&tp->k, &to), 0);
    tp->id = id;
    pthread_mutex_init(&tp->mu, NULL);
    assert_int_equal(pthread_create(&tp->th, NULL, ttl_main, tp), 0);
    long long next_kill = granted + 1500, gone_at = 0, kill_at[64];
    int kills = 0;
    while (gone_at == 0 && tc_now_ms() < d_max + 20000) {
        if (tc_now_ms() >= next_kill) {
            /* The leader of the moment, if there is one (none while an election runs): killed
             * and restarted at once, so the next election has all three members. Members are
             * started from this thread: they die with the thread that forked them. */
            int victim = tc_find_leader(&c, k, 0, 50);
            if (victim > 0 && kills < 64) {
                /* Its time is when it is dead (reaped): a request sent after that cannot be
                 * answered by it. */
                tc_stop(&c, victim, SIGKILL);
                kill_at[kills++] = tc_now_ms();
                assert_int_equal(tc_start(&c, victim), 0);
            }
            next_kill += 1500;
        }
        /* Gone on some member: the revoke committed. */
        for (int i = 1; i <= 3; i++)
            if (polls[i].gone_at != 0 && (gone_at == 0 || polls[i].gone_at < gone_at))
                gone_at = polls[i].gone_at;
        tu_sleep_ms(10);
    }
    tp->stop = 1;
    pthread_join(tp->th, NULL);
    for (int i = 1; i <= 3; i++) {
        polls[i].stop = 1;
        pthread_join(polls[i].th, NULL);
    }
    assert_true(gone_at != 0);
    /* The kills that could have cost the revoke its leader: those before it was seen. */
    long long last_kill = 0;
    for (int i = 0; i < kills; i++) {
        fprintf(stderr, "leader killed at +%lld ms\n", kill_at[i] - granted);
        if (kill_at[i] < gone_at)
            last_kill = kill_at[i];
    }
    long long ready = 0, latest_deadline = 0; /* latest: the latest lower bound seen */
    for (size_t i = 0; i < tp->n; i++) {
        const struct ttl_answer *a = &tp->a[i];
        if (a->ttl > 0 && a->sent + (a->ttl - 1) * 1000 > latest_deadline)
            latest_deadline = a->sent + (a->ttl - 1) * 1000;
        if (last_kill != 0 && a->sent >= last_kill && (ready == 0 || a->received < ready))
            ready = a->received;
    }
    /* No answer after the last kill before the lease was gone: the first leader after it
     * revoked it as soon as it counted, or before the poll saw it counting. */
    if (ready == 0 || ready > gone_at)
        ready = gone_at;
    long long from = ready > d_max ? ready : d_max;
    fprintf(stderr,
            "3 s lease gone %lld ms after its grant (d_max +%lld); %d leaders killed, the last at "
            "+%lld; a leader counting at +%lld; %zu TTL answers, the latest deadline one "
            "showed after +%lld\n",
            gone_at - granted, d_max - granted, kills, last_kill ? last_kill - granted : 0,
            ready ? ready - granted : 0, tp->n, latest_deadline ? latest_deadline - granted : 0);
    assert_true(kills >= 1);
    assert_true(gone_at >= sent + ttl * 1000);
    assert_true(latest_deadline < d_max);
    assert_true(gone_at <= from + c.election_ms);
    keel_close(tp->k);
    pthread_mutex_destroy(&tp->mu);
    free(tp);
    for (int i = 1; i <= 3; i++)
        keel_close(one[i]);
    keel_close(k);
    tc_cluster_close(&c);
}

/* ---- 10,000 at once ---- */

#define MASS_LEASES   10000
#define MASS_INFLIGHT 256
#define MASS_TTL      10

/* Grants, then puts under them, pipelined on the asynchronous client: the 10,000 leases are
 * granted within a short window, so they expire close together. */
struct pipeline {
    struct keel_aclient *ac;
    int phase; /* 0: grants, 1: puts */
    int next, done, failures;
    int64_t ids[MASS_LEASES];
    long long first_grant, last_grant;
};

static void pipeline_submit(struct pipeline *p);

static void pipeline_done(int status, const Keel__Response *resp, void *data)
{
    struct pipeline *p = data;
    if (status != 0) {
        p->failures++;
    } else if (p->phase == 0) {
        p->ids[p->done] = resp->lease_grant->id; /* answers come in any order: any free slot */
        p->last_grant = tc_now_ms();
    }
    p->done++;
    pipeline_submit(p);
}

static void pipeline_submit(struct pipeline *p)
{
    while (p->next < MASS_LEASES && p->next - p->done < MASS_INFLIGHT) {
        int i = p->next++;
        Keel__Request req = KEEL__REQUEST__INIT;
        Keel__LeaseGrantRequest g = KEEL__LEASE_GRANT_REQUEST__INIT;
        Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
        char key[32];
        if (p->phase == 0) {
            g.ttl = MASS_TTL;
            req.body_case = KEEL__REQUEST__BODY_LEASE_GRANT;
            req.lease_grant = &g;
        } else {
            snprintf(key, sizeof(key), "mass/%05d", i);
            put.key.data = (uint8_t *)key;
            put.key.len = strlen(key);
            put.value.data = (uint8_t *)"v";
            put.value.len = 1;
            put.lease = p->ids[i];
            req.body_case = KEEL__REQUEST__BODY_PUT;
            req.put = &put;
        }
        if (keel_aclient_request(p->ac, &req, 20000, pipeline_done, p) != 0) {
            p->failures++;
            p->done++;
        }
    }
}

static void pipeline_run(const struct tc_cluster *c, struct pipeline *p)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char eps[512];
    tc_endpoints(c, 0, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps};
    assert_int_equal(keel_aclient_init(&p->ac, &loop, &o), 0);
    p->first_grant = tc_now_ms();
    for (p->phase = 0; p->phase < 2; p->phase++) {
        p->next = p->done = 0;
        pipeline_submit(p);
        while (p->done < MASS_LEASES)
            uv_run(&loop, UV_RUN_ONCE);
    }
    keel_aclient_close(p->ac, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

struct writer {
    const struct tc_cluster *c;
    volatile int stop;
    long long max_gap;
    int puts, failures;
    pthread_t th;
};

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    struct keel *k = open_client(wr->c, 0);
    long long last = tc_now_ms();
    while (!wr->stop) {
        if (keel_put(k, "writer", 6, "x", 1, NULL, NULL) != 0)
            wr->failures++;
        long long now = tc_now_ms();
        if (now - last > wr->max_gap)
            wr->max_gap = now - last;
        last = now;
        wr->puts++;
    }
    keel_close(k);
    return NULL;
}

static void mass(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "lease-mass");
    /* keeld's defaults: the gap is judged against the election timeout users run with. */
    c.heartbeat_ms = 100;
    c.election_ms = 1000;
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    assert_true(tc_find_leader(&c, k, 0, 10000) > 0);
    struct pipeline *p = calloc(1, sizeof(*p));
    pipeline_run(&c, p);
    assert_int_equal(p->failures, 0);
    long long granted = p->last_grant;
    fprintf(stderr, "%d leases granted within %lld ms, keys attached %lld ms later\n", MASS_LEASES,
            p->last_grant - p->first_grant, tc_now_ms() - p->last_grant);
    /* Else some expired before the rest were granted and attached. */
    assert_true(tc_now_ms() - p->first_grant < MASS_TTL * 1000);
    free(p);
    assert_int_equal(count_at(k, "mass/", "mass0", false), MASS_LEASES);
    struct writer wr = {.c = &c};
    assert_int_equal(pthread_create(&wr.th, NULL, writer_main, &wr), 0);
    long long gone = 0;
    while (tc_now_ms() < granted + MASS_TTL * 1000 + 60000) {
        if (count_at(k, "mass/", "mass0", false) == 0) {
            gone = tc_now_ms();
            break;
        }
        tu_sleep_ms(50);
    }
    tu_sleep_ms(500);
    wr.stop = 1;
    pthread_join(wr.th, NULL);
    fprintf(stderr,
            "all revoked %lld ms after the last grant's TTL; writer: %d puts, longest gap "
            "%lld ms\n",
            gone ? gone - granted - MASS_TTL * 1000 : -1, wr.puts, wr.max_gap);
    assert_true(gone != 0);
    assert_int_equal(wr.failures, 0);
    assert_true(wr.max_gap < (long long)c.election_ms);
    for (int i = 1; i <= 3; i++) {
        struct keel *one = open_client(&c, i);
        long long until = tc_now_ms() + 5000;
        while (count_at(one, "mass/", "mass0", true) != 0 && tc_now_ms() < until)
            tu_sleep_ms(20);
        assert_int_equal(count_at(one, "mass/", "mass0", true), 0);
        keel_close(one);
    }
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__LeaseLeasesRequest ll = KEEL__LEASE_LEASES_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_LEASES;
    req.lease_leases = &ll;
    Keel__Response *resp = NULL;
    assert_int_equal(keel_do(k, &req, &resp), 0);
    assert_int_equal(resp->lease_leases->n_leases, 0);
    keel_free(resp);
    keel_close(k);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest expiry_t[] = {cmocka_unit_test(expiry)};
    const struct CMUnitTest failover_t[] = {cmocka_unit_test(failover)};
    const struct CMUnitTest not_forever_t[] = {cmocka_unit_test(not_forever)};
    const struct CMUnitTest keepalive_set_t[] = {cmocka_unit_test(keepalive_set)};
    const struct CMUnitTest mass_t[] = {cmocka_unit_test(mass)};
    const struct tu_group groups[] = {
        {"expiry", expiry_t, 1},
        {"failover", failover_t, 1},
        {"keepalive_set", keepalive_set_t, 1},
        {"not_forever", not_forever_t, 1},
        {"mass", mass_t, 1},
    };
    return tu_run_groups("test_lease", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
