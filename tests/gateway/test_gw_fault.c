/*
 * keel-gateway's handlers through member failures: `test_gw_fault <group>`, one ctest entry each,
 * every group on its own real 3-member keel cluster. The handlers run through fakecall on the
 * test's loop with a real libkeel client, as in test_gw_watch.c; members are SIGKILLed by PID and
 * restarted from the test's main thread (the harness ties them to the thread that forked them).
 *
 *   watch_member_kill      a Watch stream from revision R while a writer thread puts at a steady
 *                          pace; the member serving the watch is killed and restarted, then the
 *                          leader: `created` first, then every acknowledged put's revision once, in
 *                          order, with no gap
 *   unary_leader_kill      gateway Puts, a few in flight, through a leader kill: each finishes
 *                          once, OK (then readable at its revision) or Unavailable with etcd's
 *                          message, never a hang; OK again within a bound once a new leader is up
 *   keepalive_leader_kill  one LeaseKeepAlive stream keeps two TTL-10 leases alive through a leader
 *                          kill: every request answered, in order; both leases alive at the end
 *
 * Every wait is bounded in time (generous: ASan members on a loaded 2-core machine).
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"
#include "fakecall.h"
#include "keel/keel.h"
#include "testutil.h"

#define REQUEST_TIMEOUT_MS 5000  /* the gateway's default --request-timeout-ms */
#define CALL_WAIT_MS       20000 /* a call not finished this long after its start hangs */
#define STEP_WAIT_MS       60000 /* one step of a scenario (an election, a restart, 40 puts) */

static struct {
    struct tc_cluster tc;
    struct keel *k; /* synchronous client for the harness's questions (status, member list) */
    uv_loop_t loop;
    uv_timer_t tick; /* keeps uv_run(UV_RUN_ONCE) from sleeping past a wait's deadline */
    struct gw_ctx ctx;
    uint64_t ids[TC_MAX + 1]; /* keel member id of member i */
} E;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

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

static uint64_t now_ms(void)
{
    uv_update_time(&E.loop);
    return uv_now(&E.loop);
}

/* Run the test's loop for ms milliseconds (the handlers and libkeel live on it). */
static void pump(uint32_t ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end)
        uv_run(&E.loop, UV_RUN_ONCE);
}

static const struct gw_method *method(const char *path)
{
    const struct gw_method *m = gw_method_by_grpc_path(path, strlen(path));
    if (!m)
        fail_msg("no method %s", path);
    return m;
}

/* Run one unary call to its end (bounded); f holds what it answered. */
static void run(struct fake_call *f, const char *path, const void *msg)
{
    fake_call_init(f, &E.ctx, method(path));
    fake_call_deliver(f, (const ProtobufCMessage *)msg);
    if (!fake_call_wait(f, &E.loop, 0, CALL_WAIT_MS))
        fail_msg("%s did not finish in %d ms", path, CALL_WAIT_MS);
}

static void *ok(struct fake_call *f, const char *path, const void *msg)
{
    run(f, path, msg);
    if (f->code != GW_OK)
        fail_msg("%s: code %d: %s", path, f->code, f->message);
    assert_int_equal(f->n_sent, 1);
    return f->sent[0];
}

/* The member (1-based) whose keel id is id; 0 when none. */
static int member_of(uint64_t id)
{
    for (int i = 1; i <= E.tc.n; i++)
        if (id != 0 && E.ids[i] == id)
            return i;
    return 0;
}

/* The running member that is leader by a running member's word, skipping the members whose bit
 * (1 << i) is set; the loop keeps running between polls. Fails after timeout_ms. */
static int find_leader(unsigned skip, uint32_t timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    do {
        for (int i = 1; i <= E.tc.n; i++) {
            if (E.tc.m[i].pid == 0 || (skip & (1u << i)))
                continue;
            Keel__StatusResponse *st = NULL;
            int l = keel_status(E.k, E.tc.m[i].client, &st) == 0 ? member_of(st->leader) : 0;
            keel_free(st);
            if (l && E.tc.m[l].pid != 0 && !(skip & (1u << l)))
                return l;
        }
        pump(50);
    } while (now_ms() < end);
    fail_msg("no leader among the running members within %u ms", timeout_ms);
    return 0;
}

static void kill_member(int i)
{
    if (tc_stop(&E.tc, i, SIGKILL) == -1)
        fail_msg("member %d did not exit after SIGKILL", i);
}

/* Restart member i and wait (bounded) until it answers with a leader known: back in the cluster. */
static void restart_member(int i)
{
    assert_int_equal(tc_start(&E.tc, i), 0);
    uint64_t end = now_ms() + STEP_WAIT_MS;
    for (;;) {
        Keel__StatusResponse *st = NULL;
        bool up = keel_status(E.k, E.tc.m[i].client, &st) == 0 && st->leader != 0;
        keel_free(st);
        if (up)
            return;
        if (now_ms() >= end)
            fail_msg("member %d not back within %d ms", i, STEP_WAIT_MS);
        pump(100);
    }
}

static void env_up(const char *tag)
{
    memset(&E, 0, sizeof(E));
    tc_cluster_init(&E.tc, 3, tag);
    tc_start_all(&E.tc);
    char eps[512];
    tc_endpoints(&E.tc, 0, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .request_timeout_ms = REQUEST_TIMEOUT_MS, .dial_timeout_ms = 500};
    assert_int_equal(keel_open(&E.k, &o), 0);
    assert_int_equal(uv_loop_init(&E.loop), 0);
    uv_timer_init(&E.loop, &E.tick);
    uv_timer_start(&E.tick, on_tick, 10, 10);
    assert_int_equal(keel_aclient_init(&E.ctx.ac, &E.loop, &o), 0);
    E.ctx.loop = &E.loop;
    E.ctx.zone = "";
    E.ctx.request_timeout_ms = REQUEST_TIMEOUT_MS;
    E.ctx.max_request_bytes = 1536 * 1024;
    /* Member ids, to tell which member a response header names. */
    Keel__MemberListResponse *ml = NULL;
    uint64_t end = now_ms() + STEP_WAIT_MS;
    while (keel_member_list(E.k, &ml) != 0) {
        if (now_ms() >= end)
            fail_msg("member list: %s", keel_errmsg());
        tu_sleep_ms(100);
    }
    for (size_t j = 0; j < ml->n_members; j++)
        for (int i = 1; i <= E.tc.n; i++)
            if (strcmp(ml->members[j]->name, E.tc.m[i].name) == 0)
                E.ids[i] = ml->members[j]->id;
    keel_free(ml);
    for (int i = 1; i <= E.tc.n; i++)
        assert_true(E.ids[i] != 0);
    (void)find_leader(0, STEP_WAIT_MS);
}

static void env_down(void)
{
    bool closed = false;
    keel_aclient_close(E.ctx.ac, on_closed, &closed);
    uv_close((uv_handle_t *)&E.tick, NULL);
    for (int i = 0; i < 100000 && (!closed || uv_loop_alive(&E.loop)); i++)
        uv_run(&E.loop, UV_RUN_ONCE);
    assert_true(closed);
    assert_int_equal(uv_loop_close(&E.loop), 0);
    keel_close(E.k);
    tc_cluster_close(&E.tc);
}

/* ---- watch_member_kill ---- */

#define WK_PACE_MS   20  /* one put every 20 ms (plus the put's own time) */
#define WK_MAX_PUTS  900 /* the writer stops here at the latest (fakecall keeps 1024 responses) */
#define WK_STEP_PUTS 40  /* puts between two steps of the scenario */
#define WK_PREFIX    "/wk/"
#define WK_END       "/wk0"

/* A writer on its own thread (synchronous libkeel, retries on): only acknowledged puts count. */
struct writer {
    struct keel *k;
    pthread_t thread;
    atomic_bool stop;
    atomic_bool finished;
    atomic_int done; /* puts finished either way; puts[0..done) are final */
    struct wput {
        int64_t rev; /* 0: not acknowledged (outcome unknown) */
        int status;
    } puts[WK_MAX_PUTS];
};

static void wk_key(char *buf, size_t len, int i)
{
    snprintf(buf, len, WK_PREFIX "%05d", i);
}

/* One put; its revision, or 0 with *status set. */
static int64_t kput(struct keel *k, const char *key, const char *val, int *status)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__PutRequest p = KEEL__PUT_REQUEST__INIT;
    p.key = B(key);
    p.value = B(val);
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &p;
    Keel__Response *resp = NULL;
    *status = keel_do(k, &req, &resp);
    int64_t rev = *status == 0 && resp->header ? resp->header->revision : 0;
    keel_free(resp);
    return rev;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    char key[32];
    for (int i = 0; i < WK_MAX_PUTS && !atomic_load(&w->stop); i++) {
        long long t0 = tc_now_ms();
        wk_key(key, sizeof(key), i);
        int status;
        w->puts[i].rev = kput(w->k, key, "v", &status);
        w->puts[i].status = status;
        atomic_store(&w->done, i + 1);
        long long left = WK_PACE_MS - (tc_now_ms() - t0);
        if (left > 0)
            tu_sleep_ms((int)left);
    }
    atomic_store(&w->finished, true);
    return NULL;
}

/* Run the loop until the writer has finished n puts (bounded); the watch keeps delivering. */
static void wk_pump_until(struct writer *w, int n, struct fake_call *f)
{
    uint64_t end = now_ms() + STEP_WAIT_MS;
    while (atomic_load(&w->done) < n) {
        if (atomic_load(&w->finished))
            fail_msg("writer stopped at %d puts, wanted %d", atomic_load(&w->done), n);
        if (now_ms() >= end)
            fail_msg("writer at %d puts after %d ms, wanted %d", atomic_load(&w->done),
                     STEP_WAIT_MS, n);
        if (f->finished)
            fail_msg("watch stream ended: %d %s", f->code, f->message);
        uv_run(&E.loop, UV_RUN_ONCE);
    }
}

static Etcdserverpb__WatchResponse *wr(struct fake_call *f, size_t i)
{
    assert_true(i < f->n_sent);
    return (Etcdserverpb__WatchResponse *)f->sent[i];
}

static int64_t last_event_rev(struct fake_call *f)
{
    for (size_t i = f->n_sent; i-- > 0;) {
        Etcdserverpb__WatchResponse *r = wr(f, i);
        if (r->n_events > 0)
            return r->events[r->n_events - 1]->kv->mod_revision;
    }
    return 0;
}

static void watch_member_kill(void **state)
{
    (void)state;
    env_up("gw-fault-watch");
    struct writer *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    char eps[512];
    tc_endpoints(&E.tc, 0, eps, sizeof(eps));
    /* Long enough for an election on a loaded machine: a put that fails is one of unknown
     * outcome, and the scenario wants most of them acknowledged. */
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 10000, .dial_timeout_ms = 500};
    assert_int_equal(keel_open(&w->k, &o), 0);

    /* R: the first revision watched, a put of its own under the prefix. */
    int status;
    char key[32];
    int64_t r = kput(E.k, WK_PREFIX "start", "0", &status);
    if (status != 0)
        fail_msg("put at R: %s", keel_strerror(status));

    struct fake_call f;
    fake_call_init(&f, &E.ctx, method("/etcdserverpb.Watch/Watch"));
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = B(WK_PREFIX);
    cr.range_end = B(WK_END);
    cr.start_revision = r;
    Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
    req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    req.create_request = &cr;
    fake_call_deliver(&f, &req.base);
    if (!fake_call_wait(&f, &E.loop, 1, CALL_WAIT_MS) || f.finished)
        fail_msg("no `created` (finished %d: %s)", f.finished, f.message);
    assert_true(wr(&f, 0)->created);
    assert_non_null(wr(&f, 0)->header);
    /* The member serving the watch, by the header of its acknowledgement. */
    int serving = member_of(wr(&f, 0)->header->member_id);
    if (serving == 0)
        fail_msg("created header names member %llx, not one of the cluster's",
                 (unsigned long long)wr(&f, 0)->header->member_id);

    assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);

    /* 1. Kill the serving member mid-stream; the watch must resume elsewhere. */
    wk_pump_until(w, WK_STEP_PUTS, &f);
    kill_member(serving);
    size_t sent_at_kill = f.n_sent;
    int at = atomic_load(&w->done);
    /* 2. Restart it once the writer has gone on without it. */
    wk_pump_until(w, at + WK_STEP_PUTS, &f);
    restart_member(serving);
    /* 3. Kill the leader (whichever member it is now): the writer retries through the election. */
    int leader = find_leader(0, STEP_WAIT_MS);
    at = atomic_load(&w->done);
    wk_pump_until(w, at + WK_STEP_PUTS / 2, &f);
    kill_member(leader);
    at = atomic_load(&w->done);
    /* 4. Restart it, then let the writer run on a little and stop it. */
    wk_pump_until(w, at + WK_STEP_PUTS, &f);
    restart_member(leader);
    at = atomic_load(&w->done);
    wk_pump_until(w, at + WK_STEP_PUTS, &f);
    atomic_store(&w->stop, true);
    uint64_t end = now_ms() + STEP_WAIT_MS;
    while (!atomic_load(&w->finished)) {
        if (now_ms() >= end)
            fail_msg("writer did not stop within %d ms", STEP_WAIT_MS);
        uv_run(&E.loop, UV_RUN_ONCE);
    }
    assert_int_equal(pthread_join(w->thread, NULL), 0);

    int n = atomic_load(&w->done), acked = 0;
    int64_t max_acked = r;
    for (int i = 0; i < n; i++) {
        if (w->puts[i].rev == 0)
            continue;
        acked++;
        assert_true(w->puts[i].rev > max_acked); /* one writer: acknowledged revisions grow */
        max_acked = w->puts[i].rev;
    }
    print_message("watch_member_kill: %d puts, %d acknowledged; members %d then %d killed\n", n,
                  acked, serving, leader);
    assert_true(acked >= n / 2);

    /* Every acknowledged put reaches the stream (bounded). */
    end = now_ms() + STEP_WAIT_MS;
    while (last_event_rev(&f) < max_acked && !f.finished && now_ms() < end)
        uv_run(&E.loop, UV_RUN_ONCE);
    if (f.finished)
        fail_msg("watch stream ended: %d %s", f.code, f.message);
    if (last_event_rev(&f) < max_acked)
        fail_msg("events up to %lld, last acknowledged put at %lld", (long long)last_event_rev(&f),
                 (long long)max_acked);
    assert_int_equal(f.dropped, 0);

    /* `created` first and once; then events only, revisions R, R+1, ... (nothing else writes in
     * this cluster, so every revision from R on is a put under the prefix: no gap, no repeat). */
    assert_true(wr(&f, 0)->created);
    assert_false(wr(&f, 0)->canceled);
    assert_int_equal(wr(&f, 0)->watch_id, 0);
    assert_int_equal(wr(&f, 0)->n_events, 0);
    size_t n_rev = (size_t)(last_event_rev(&f) - r + 1);
    const Etcdserverpb__KeyValue **by_rev = calloc(n_rev, sizeof(*by_rev));
    assert_non_null(by_rev);
    int64_t want = r;
    bool moved = false; /* an event after the kill came from another member */
    for (size_t i = 1; i < f.n_sent; i++) {
        Etcdserverpb__WatchResponse *resp = wr(&f, i);
        if (resp->created || resp->canceled || resp->watch_id != 0 || !resp->header)
            fail_msg("response %zu: created %d canceled %d watch_id %lld header %p", i,
                     resp->created, resp->canceled, (long long)resp->watch_id,
                     (void *)resp->header);
        if (i >= sent_at_kill && resp->n_events > 0 && resp->header->member_id != E.ids[serving])
            moved = true;
        for (size_t j = 0; j < resp->n_events; j++) {
            const Etcdserverpb__KeyValue *kv = resp->events[j]->kv;
            assert_int_equal(resp->events[j]->type, ETCDSERVERPB__EVENT__EVENT_TYPE__PUT);
            if (kv->mod_revision != want)
                fail_msg("response %zu: event at revision %lld, expected %lld (%s)", i,
                         (long long)kv->mod_revision, (long long)want,
                         kv->mod_revision < want ? "repeat or reorder" : "gap");
            by_rev[want - r] = kv;
            want++;
        }
    }
    assert_true(moved);
    assert_true(same(by_rev[0]->key, WK_PREFIX "start"));
    /* Each acknowledged put is the event at its revision; no put was applied twice. */
    for (int i = 0; i < n; i++) {
        if (w->puts[i].rev == 0)
            continue;
        wk_key(key, sizeof(key), i);
        const Etcdserverpb__KeyValue *kv = by_rev[w->puts[i].rev - r];
        if (!same(kv->key, key))
            fail_msg("revision %lld: key %.*s, acknowledged put of %s", (long long)w->puts[i].rev,
                     (int)kv->key.len, (const char *)kv->key.data, key);
        assert_int_equal(kv->version, 1);
    }
    for (size_t i = 0; i < n_rev; i++)
        assert_int_equal(by_rev[i]->version, 1); /* unique keys: a second apply would be 2 */
    free(by_rev);
    struct keel_aclient_stats st;
    keel_aclient_stats(E.ctx.ac, &st);
    assert_true(st.watch_resumes >= 1);

    fake_call_cancel(&f);
    assert_true(fake_call_wait(&f, &E.loop, 0, CALL_WAIT_MS));
    assert_int_equal(f.code, GW_CANCELLED);
    fake_call_clear(&f);
    keel_close(w->k);
    free(w);
    env_down();
}

/* ---- unary_leader_kill ---- */

#define UK_SLOTS       4    /* Put calls in flight at once */
#define UK_SLOT_PACE   50   /* ms a slot waits after a failed call (no storm of failures) */
#define UK_MAX_CALLS   4000 /* bound on the whole run */
#define UK_BEFORE_KILL 30   /* OK calls before the kill */
#define UK_STREAK      20   /* consecutive OK calls that say the cluster serves again */
#define UK_RECOVER_MS  30000

struct uk_call {
    int64_t rev; /* OK: the put's revision */
    enum gw_code code;
    bool done;
};

struct uk_slot {
    struct fake_call f;
    int idx; /* the call in flight, -1: none */
    uint64_t started, next;
};

static void uk_key(char *buf, size_t len, int i)
{
    snprintf(buf, len, "/uk/%05d", i);
}

/* What a failed Put may say while the leader is lost (convert.c's translations). */
static bool uk_expected_failure(const struct fake_call *f)
{
    static const char *const msgs[] = {
        "etcdserver: no leader",
        "etcdserver: leader changed",
        "etcdserver: request timed out",
        "etcdserver: request timed out, possibly due to previous leader failure",
    };
    if (f->code != GW_UNAVAILABLE && f->code != GW_DEADLINE_EXCEEDED)
        return false;
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++)
        if (strcmp(f->message, msgs[i]) == 0)
            return true;
    return false;
}

static void unary_leader_kill(void **state)
{
    (void)state;
    env_up("gw-fault-unary");
    struct uk_call *calls = calloc(UK_MAX_CALLS, sizeof(*calls));
    struct uk_slot *slots = calloc(UK_SLOTS, sizeof(*slots));
    assert_non_null(calls);
    assert_non_null(slots);
    const struct gw_method *put_m = method("/etcdserverpb.KV/Put");
    for (int s = 0; s < UK_SLOTS; s++)
        slots[s].idx = -1;
    int n = 0, oks = 0, fails = 0, streak = 0, killed = 0;
    char first_failure[512] = "";
    uint64_t killed_at = 0, leader_at = 0, end = now_ms() + 4 * STEP_WAIT_MS;
    char key[32];
    for (;;) {
        uint64_t now = now_ms();
        /* Collect finished calls, start new ones. */
        for (int s = 0; s < UK_SLOTS; s++) {
            struct uk_slot *sl = &slots[s];
            if (sl->idx >= 0 && sl->f.finished) {
                struct uk_call *c = &calls[sl->idx];
                c->done = true;
                c->code = sl->f.code;
                if (sl->f.code == GW_OK) {
                    assert_int_equal(sl->f.n_sent, 1);
                    Etcdserverpb__PutResponse *pr = (Etcdserverpb__PutResponse *)sl->f.sent[0];
                    assert_non_null(pr->header);
                    assert_true(pr->header->revision > 0);
                    c->rev = pr->header->revision;
                    oks++;
                    streak++;
                } else {
                    if (!uk_expected_failure(&sl->f))
                        fail_msg("call %d: code %d \"%s\"", sl->idx, sl->f.code, sl->f.message);
                    assert_int_equal(sl->f.n_sent, 0);
                    if (fails++ == 0)
                        snprintf(first_failure, sizeof(first_failure), "%s", sl->f.message);
                    streak = 0;
                    sl->next = now + UK_SLOT_PACE;
                }
                fake_call_clear(&sl->f);
                sl->idx = -1;
            } else if (sl->idx >= 0 && now - sl->started > CALL_WAIT_MS) {
                fail_msg("call %d unfinished after %d ms (deadline %d ms)", sl->idx, CALL_WAIT_MS,
                         REQUEST_TIMEOUT_MS);
            }
            bool finishing = killed && leader_at && streak >= UK_STREAK;
            if (sl->idx < 0 && !finishing && n < UK_MAX_CALLS && now >= sl->next) {
                fake_call_init(&sl->f, &E.ctx, put_m);
                sl->idx = n++;
                sl->started = now;
                uk_key(key, sizeof(key), sl->idx);
                Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
                p.key = B(key);
                p.value = B(key);
                fake_call_deliver(&sl->f, &p.base); /* may finish at once (libkeel refused) */
            }
        }
        if (!killed && oks >= UK_BEFORE_KILL) {
            killed = find_leader(0, STEP_WAIT_MS);
            /* Put this turn's calls on the wire first: the kill catches some in flight. */
            uv_run(&E.loop, UV_RUN_NOWAIT);
            kill_member(killed);
            killed_at = now_ms();
            streak = 0; /* only calls finished after the kill count towards recovery */
        }
        if (killed && !leader_at) {
            /* A new leader, by a survivor's status (a quick local round trip). */
            for (int i = 1; i <= E.tc.n && !leader_at; i++) {
                if (E.tc.m[i].pid == 0)
                    continue;
                Keel__StatusResponse *st = NULL;
                if (keel_status(E.k, E.tc.m[i].client, &st) == 0 && st->leader != 0 &&
                    st->leader != E.ids[killed])
                    leader_at = now_ms();
                keel_free(st);
            }
        }
        bool idle = true;
        for (int s = 0; s < UK_SLOTS; s++)
            idle &= slots[s].idx < 0;
        if (killed && leader_at && streak >= UK_STREAK && idle)
            break;
        if (leader_at && now_ms() - leader_at > UK_RECOVER_MS)
            fail_msg("new leader for %d ms: %d consecutive OK calls, wanted %d", UK_RECOVER_MS,
                     streak, UK_STREAK);
        if (killed && !leader_at && now_ms() - killed_at > STEP_WAIT_MS)
            fail_msg("no new leader within %d ms of the kill", STEP_WAIT_MS);
        if (n >= UK_MAX_CALLS && idle)
            fail_msg("%d calls without recovery (%d OK, streak %d)", n, oks, streak);
        if (now_ms() >= end)
            fail_msg("run unfinished after %d ms", 4 * STEP_WAIT_MS);
        uv_run(&E.loop, UV_RUN_ONCE);
    }
    print_message("unary_leader_kill: %d calls, %d OK, %d failed (first: \"%s\"); leader %d "
                  "killed, new one after %llu ms\n",
                  n, oks, fails, first_failure, killed,
                  (unsigned long long)(leader_at - killed_at));
    assert_int_equal(oks + fails, n);

    /* Every OK put is readable afterwards, at its revision. */
    for (int i = 0; i < n; i++) {
        assert_true(calls[i].done);
        if (calls[i].code != GW_OK)
            continue;
        uk_key(key, sizeof(key), i);
        Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
        rr.key = B(key);
        struct fake_call f;
        Etcdserverpb__RangeResponse *resp = ok(&f, "/etcdserverpb.KV/Range", &rr);
        if (resp->n_kvs != 1)
            fail_msg("%s: acknowledged at %lld, read %zu kvs", key, (long long)calls[i].rev,
                     resp->n_kvs);
        assert_true(same(resp->kvs[0]->value, key));
        if (resp->kvs[0]->mod_revision != calls[i].rev)
            fail_msg("%s: acknowledged at %lld, read at %lld", key, (long long)calls[i].rev,
                     (long long)resp->kvs[0]->mod_revision);
        fake_call_clear(&f);
    }
    free(calls);
    free(slots);
    env_down();
}

/* ---- keepalive_leader_kill ---- */

#define KA_TTL         10
#define KA_EVERY_MS    1000 /* a request this often (clientv3: TTL/3) */
#define KA_BEFORE_KILL 4    /* requests answered before the kill */
#define KA_AFTER_KILL  15   /* requests sent after it: 15 s, more than the TTL */

static int64_t lease_grant(int64_t ttl)
{
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    g.ttl = ttl;
    struct fake_call f;
    Etcdserverpb__LeaseGrantResponse *r = ok(&f, "/etcdserverpb.Lease/LeaseGrant", &g);
    assert_true(r->id != 0);
    assert_int_equal(r->ttl, ttl);
    int64_t id = r->id;
    fake_call_clear(&f);
    return id;
}

static int64_t lease_ttl(int64_t id)
{
    Etcdserverpb__LeaseTimeToLiveRequest t = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    t.id = id;
    struct fake_call f;
    Etcdserverpb__LeaseTimeToLiveResponse *r = ok(&f, "/etcdserverpb.Lease/LeaseTimeToLive", &t);
    assert_int_equal(r->id, id);
    int64_t ttl = r->ttl;
    fake_call_clear(&f);
    return ttl;
}

static void keepalive_leader_kill(void **state)
{
    (void)state;
    env_up("gw-fault-ka");
    int64_t lease[2] = {lease_grant(KA_TTL), lease_grant(KA_TTL)};
    struct fake_call f;
    fake_call_init(&f, &E.ctx, method("/etcdserverpb.Lease/LeaseKeepAlive"));
    f.call.require_leader = true; /* as clientv3 opens it */
    /* Requests alternate between the two leases, so the answers' ids show their order. */
    int64_t want[KA_BEFORE_KILL + KA_AFTER_KILL + 8];
    size_t n_req = 0, answered_at_kill = 0;
    int killed = 0;
    uint64_t next = now_ms(), end = next + 4 * STEP_WAIT_MS;
    size_t after = 0;
    while (after < KA_AFTER_KILL) {
        if (f.finished)
            fail_msg("stream ended after %zu of %zu answers: %d %s", f.n_sent, n_req, f.code,
                     f.message);
        if (now_ms() >= end)
            fail_msg("stream at %zu of %zu answers after %d ms", f.n_sent, n_req, 4 * STEP_WAIT_MS);
        if (now_ms() >= next && n_req < sizeof(want) / sizeof(want[0])) {
            bool kill = !killed && f.n_sent >= KA_BEFORE_KILL;
            if (kill)
                killed = find_leader(0, STEP_WAIT_MS);
            want[n_req] = lease[n_req % 2];
            Etcdserverpb__LeaseKeepAliveRequest r = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
            r.id = want[n_req++];
            fake_call_deliver(&f, &r.base);
            next += KA_EVERY_MS;
            if (kill) {
                /* The request on the wire to the leader, then the leader gone. */
                uv_run(&E.loop, UV_RUN_NOWAIT);
                answered_at_kill = f.n_sent;
                kill_member(killed);
            }
            if (killed)
                after++;
        }
        uv_run(&E.loop, UV_RUN_ONCE);
    }
    /* The client's half-close: every request answered, then the stream ends OK. */
    f.call.method->on_half_close(&f.call);
    if (!fake_call_wait(&f, &E.loop, 0, CALL_WAIT_MS))
        fail_msg("stream not finished %d ms after the half-close (%zu of %zu answers)",
                 CALL_WAIT_MS, f.n_sent, n_req);
    if (f.code != GW_OK)
        fail_msg("stream ended %d \"%s\" after %zu of %zu answers", f.code, f.message, f.n_sent,
                 n_req);
    assert_int_equal(f.n_sent, n_req);
    bool new_leader = false;
    for (size_t i = 0; i < f.n_sent; i++) {
        Etcdserverpb__LeaseKeepAliveResponse *r = (Etcdserverpb__LeaseKeepAliveResponse *)f.sent[i];
        if (r->id != want[i] || r->ttl != KA_TTL)
            fail_msg("answer %zu: lease %llx TTL %lld, wanted %llx TTL %d", i,
                     (unsigned long long)r->id, (long long)r->ttl, (unsigned long long)want[i],
                     KA_TTL);
        assert_non_null(r->header);
        assert_true(r->header->cluster_id != 0);
        if (i >= answered_at_kill && r->header->member_id != E.ids[killed])
            new_leader = true;
    }
    assert_true(new_leader); /* answers after the kill came through the new leader */
    fake_call_clear(&f);
    print_message("keepalive_leader_kill: %zu answers, leader %d killed after %zu\n", n_req, killed,
                  answered_at_kill);
    for (int i = 0; i < 2; i++) {
        int64_t ttl = lease_ttl(lease[i]);
        if (ttl <= 0 || ttl > KA_TTL)
            fail_msg("lease %llx: TimeToLive TTL %lld", (unsigned long long)lease[i],
                     (long long)ttl);
    }
    env_down();
}

int main(int argc, char **argv)
{
    const struct CMUnitTest watch_t[] = {cmocka_unit_test(watch_member_kill)};
    const struct CMUnitTest unary_t[] = {cmocka_unit_test(unary_leader_kill)};
    const struct CMUnitTest ka_t[] = {cmocka_unit_test(keepalive_leader_kill)};
    const struct tu_group groups[] = {
        {"watch_member_kill", watch_t, 1},
        {"unary_leader_kill", unary_t, 1},
        {"keepalive_leader_kill", ka_t, 1},
    };
    return tu_run_groups("test_gw_fault", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
