/*
 * Fault scenarios through real keeld processes: `test_fault <scenario> [seed] [--run-ms N]`, one
 * ctest entry each; tests/fault/run.sh runs them for longer.
 *
 * A 3- or 5-member cluster, one member per zone, takes a workload from CLIENTS client processes
 * (tests/fault/workload.c: linearizable and serializable gets, puts, deletes, compare-and-set on
 * the value and on the mod_revision, lease grant / attach / revoke / expire) and watchers, while
 * a seeded schedule injects the scenario's faults. Afterwards:
 *
 *   - linearizability: every key's history (lincheck.h; a lost acknowledged write, a stale read
 *     after a leader change, a cas that saw a value never written all show up here);
 *   - durability: every acknowledged change is in the revision history at its revision; revisions
 *     never go backwards, among linearizable answers nor on any one member (across its restarts);
 *     serializable reads return the key's value as of their revision; every member converges to
 *     the same contents; a lease's keys do not outlive it;
 *   - watches: a watcher on every key through any member, and one on each of three members with
 *     a sub-range of its own, open from revision 1 through all the faults, saw exactly the
 *     revision history's events for their range (read back afterwards by a new watch): in order,
 *     no gap, no duplicate.
 *
 * The scenarios (../shared/research/reliability-ecosystem.md's catalogue) are in the table
 * below. Those that cut zones off or slow them down need root and scripts/zones.sh; without
 * them they exit 77, which ctest reports as skipped. They use zone blocks 111..115, which no
 * other test uses, and remove every rule they added when they end, failed or not (not when
 * killed by a signal: `scripts/zones.sh off` then does).
 *
 * KEEL_FAULT_KEELD_FLAGS adds flags to every member's command line (e.g. "--log-level debug").
 * KEEL_FAULT_LOGS=DIR copies the members' logs to DIR after a run (a failed check always keeps
 * them, with the history, in the working directory).
 *
 * Bounds: the workload runs --run-ms (default 8 s), each operation times out after 2 s; faults
 * only touch processes this test started (by PID, through tests/lib/cluster.c).
 */
#include <errno.h>
#include <limits.h>
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
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "history.h"
#include "keel/keel.h"
#include "lincheck.h"
#include "testutil.h"
#include "workload.h"

#define CLIENTS    4
#define ZONE_BLOCK 111 /* the zone scenarios' members: 127.0.111.1 ... */

/* ---- the scenarios ---- */

enum fault_kind {
    F_KILL_LEADER = 1 << 0,   /* kill -9 of the leader, restarted 0.5 s later */
    F_KILL_FOLLOWER = 1 << 1, /* kill -9 of a follower, restarted 0.5 s later */
    F_KILL_ALL = 1 << 2,      /* kill -9 of every member at once, all restarted */
    F_KILL_MINORITY = 1 << 3, /* kill -9 of the leader and followers short of a majority */
    F_PAUSE_LEADER = 1 << 4,  /* SIGSTOP of the leader for 1.5 s (3 election timeouts) */
    F_PAUSE_FOLLOWER = 1 << 5,
    F_CUT_LEADER = 1 << 6, /* the leader's zone cut off from the others for 2 s */
    F_CUT_FOLLOWER = 1 << 7,
    F_KILL_MAJORITY = 1 << 8, /* kill -9 of the leader and followers up to a majority */
};
#define F_KINDS 9
#define F_ZONES (F_CUT_LEADER | F_CUT_FOLLOWER)

struct scenario {
    const char *name;
    int members;
    unsigned faults; /* kinds to pick from, one per fault */
    int period_ms;   /* mean time between faults */
    bool zones;      /* needs scripts/zones.sh (root) */
    const char *net; /* `zones.sh on` options for the whole run (delay, loss), or NULL */
    int down_ms;     /* how long a killed member stays down (0: 500 ms) */
    /* keeld's --snapshot-threshold (0: its default): small, a member that was away for a while
     * must be sent a checkpoint, and the run must see at least one restored */
    unsigned snapshot_threshold;
    const char *catalogue; /* reliability-ecosystem.md's scenarios (S1-S30) covered */
};

static const struct scenario scenarios[] = {
    {"kill_leader", 3, F_KILL_LEADER, 2000, false, NULL, 0, 0, "S1, S2"},
    {"kill_follower", 3, F_KILL_FOLLOWER, 2000, false, NULL, 0, 0, "S1"},
    {"follower_snapshot", 3, F_KILL_FOLLOWER, 3000, false, NULL, 2500, 64, "S3"},
    {"kill_all", 3, F_KILL_ALL | F_KILL_MAJORITY, 3000, false, NULL, 1000, 0, "S4"},
    {"pause_leader", 3, F_PAUSE_LEADER, 2000, false, NULL, 0, 0, "S13"},
    {"pause_follower", 3, F_PAUSE_FOLLOWER, 2000, false, NULL, 0, 0, "S13"},
    {"five_members", 5, F_KILL_LEADER | F_KILL_FOLLOWER | F_KILL_MINORITY | F_PAUSE_LEADER, 2000,
     false, NULL, 0, 0, "S1, S2, S13 on 5 members"},
    {"cut_leader_zone", 3, F_CUT_LEADER, 2500, true, NULL, 0, 0, "S8, S11"},
    {"cut_follower_zone", 3, F_CUT_FOLLOWER, 2500, true, NULL, 0, 0, "S6, S11"},
    {"lossy_zones", 3, F_KILL_LEADER | F_CUT_FOLLOWER, 2500, true,
     "--delay 2ms --jitter 1ms --loss 2", 0, 0, "S10, S12 with S1, S6"},
    {"chaos", 5,
     F_KILL_LEADER | F_KILL_FOLLOWER | F_KILL_MINORITY | F_PAUSE_LEADER | F_PAUSE_FOLLOWER |
         F_CUT_LEADER | F_CUT_FOLLOWER,
     2000, true, "--delay 1ms --jitter 0.5ms --loss 0.5", 0, 0, "S1, S2, S6, S8, S10, S11, S13"},
};
#define N_SCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

static const struct scenario *sc;
static uint64_t seed;
static long long run_ms = 8000;
static int cut_ms = 2000; /* how long a zone stays cut off ($KEEL_FAULT_CUT_MS) */
static char *self_exe;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- zones ---- */

static bool zones_active;

/* scripts/zones.sh with these arguments; its exit status. */
static int zones(const char *fmt, ...)
{
    char args[256], cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "bash '%s' %s >/dev/null", KF_ZONES_SH, args);
    int rv = system(cmd);
    return WIFEXITED(rv) ? WEXITSTATUS(rv) : -1;
}

static void zones_off(void)
{
    if (zones_active && zones("off") != 0)
        fprintf(stderr, "test_fault: scripts/zones.sh off failed; run it by hand\n");
    zones_active = false;
}

/* 77 (skipped) when this machine cannot run zones.sh, as the zones tests decide it. */
static int zones_available(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "bash -c '. \"%s\" && zt_require' >/dev/null 2>&1", KF_ZONES_COMMON);
    int rv = system(cmd);
    return WIFEXITED(rv) ? WEXITSTATUS(rv) : 1;
}

/* ---- watches ---- */

/* Every event one watch delivered, in delivery order. */
struct wlog {
    pthread_mutex_t mu;
    struct fh_event *v;
    size_t n, cap;
    int status;    /* the watch's end, 0 while it runs */
    unsigned keys; /* the keys of its range: bit k for fh_key_names[k] */
};

static int64_t kv_value(const Keel__KeyValue *kv)
{
    char buf[32];
    size_t n = kv->value.len < 31 ? kv->value.len : 31;
    memcpy(buf, kv->value.data, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static void wlog_push(struct wlog *l, const struct fh_event *e)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4096;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        if (l->v == NULL)
            abort();
    }
    l->v[l->n++] = *e;
}

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
        const Keel__KeyValue *kv = events[i]->kv;
        struct fh_event e = {.type = events[i]->type,
                             .rev = kv->mod_revision,
                             .key = fh_key_index(kv->key.data, kv->key.len)};
        e.value = e.type == KEEL__EVENT__EVENT_TYPE__PUT ? kv_value(kv) : LINCHECK_ABSENT;
        wlog_push(l, &e);
    }
    pthread_mutex_unlock(&l->mu);
}

/* Watch [from, to) (to NULL: the single key from) from revision 1 into l. */
static struct keel_watch *watch_range(struct keel *k, const char *from, const char *to,
                                      struct wlog *l)
{
    struct keel_watch_opts o = {.start_revision = 1};
    if (to != NULL) {
        o.range_end = (const uint8_t *)to;
        o.range_end_len = strlen(to);
    }
    l->keys = 0;
    for (int i = 0; i < FH_KEYS; i++)
        if (to == NULL ? strcmp(fh_key_names[i], from) == 0
                       : strcmp(fh_key_names[i], from) >= 0 && strcmp(fh_key_names[i], to) < 0)
            l->keys |= 1u << i;
    struct keel_watch *w = NULL;
    if (keel_watch_open(k, from, strlen(from), &o, on_watch, l, &w) != 0)
        fail_msg("watch: %s", keel_errmsg());
    return w;
}

/* The last revision in ref among l's keys (0: none). */
static int64_t wlog_last(const struct wlog *ref, unsigned keys)
{
    for (size_t i = ref->n; i-- > 0;)
        if (ref->v[i].key >= 0 && (keys >> ref->v[i].key & 1))
            return ref->v[i].rev;
    return 0;
}

/* Wait (bounded) until l has delivered revision rev. */
static bool wlog_reach(struct wlog *l, int64_t rev, int timeout_ms)
{
    long long until = tc_now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        bool done = rev == 0 || (l->n > 0 && l->v[l->n - 1].rev >= rev);
        pthread_mutex_unlock(&l->mu);
        if (done)
            return true;
        if (tc_now_ms() > until)
            return false;
        tu_sleep_ms(20);
    }
}

/* Whether the live watcher saw exactly the reference's events for its keys: same order, no gap,
 * no duplicate. NULL, or what differs (in buf). */
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
    size_t j = 0, want = 0;
    for (size_t i = 0; i < ref->n; i++) {
        const struct fh_event *y = &ref->v[i];
        if (y->key < 0 || !(live->keys >> y->key & 1))
            continue;
        want++;
        if (j == live->n)
            continue;
        const struct fh_event *x = &live->v[j++];
        if (x->rev != y->rev || x->key != y->key || x->type != y->type || x->value != y->value) {
            snprintf(buf, len,
                     "watch event %zu: revision %lld key %d type %d, the history has revision "
                     "%lld key %d type %d (%s)",
                     j - 1, (long long)x->rev, x->key, x->type, (long long)y->rev, y->key, y->type,
                     x->rev > y->rev ? "a gap" : "a different event");
            return buf;
        }
    }
    if (live->n != want) {
        snprintf(buf, len, "the watcher saw %zu events, the history has %zu for its range", live->n,
                 want);
        return buf;
    }
    return NULL;
}

/* The checker itself, on planted histories: each fault must be reported. */
static void watch_checker_planted(void **state)
{
    (void)state;
    struct fh_event ref_v[] = {{KEEL__EVENT__EVENT_TYPE__PUT, 0, 1, 10},
                               {KEEL__EVENT__EVENT_TYPE__PUT, 1, 2, 20},
                               {KEEL__EVENT__EVENT_TYPE__DELETE, 0, 3, LINCHECK_ABSENT},
                               {KEEL__EVENT__EVENT_TYPE__PUT, 2, 4, 30}};
    struct wlog ref = {.v = ref_v, .n = 4, .keys = 7};
    char buf[256];
    struct wlog same = {.v = ref_v, .n = 4, .keys = 7};
    assert_null(wlog_diff(&same, &ref, buf, sizeof(buf)));
    struct fh_event gap_v[] = {ref_v[0], ref_v[2], ref_v[3]};
    struct wlog gap = {.v = gap_v, .n = 3, .keys = 7};
    assert_non_null(wlog_diff(&gap, &ref, buf, sizeof(buf)));
    assert_non_null(strstr(buf, "gap"));
    struct fh_event dup_v[] = {ref_v[0], ref_v[1], ref_v[1], ref_v[2], ref_v[3]};
    struct wlog dup = {.v = dup_v, .n = 5, .keys = 7};
    assert_non_null(wlog_diff(&dup, &ref, buf, sizeof(buf)));
    assert_non_null(strstr(buf, "duplicate"));
    struct fh_event order_v[] = {ref_v[1], ref_v[0], ref_v[2], ref_v[3]};
    struct wlog order = {.v = order_v, .n = 4, .keys = 7};
    assert_non_null(wlog_diff(&order, &ref, buf, sizeof(buf)));
    struct fh_event short_v[] = {ref_v[0], ref_v[1], ref_v[2]};
    struct wlog shortl = {.v = short_v, .n = 3, .keys = 7};
    assert_non_null(wlog_diff(&shortl, &ref, buf, sizeof(buf)));
    struct fh_event val_v[] = {
        ref_v[0], {KEEL__EVENT__EVENT_TYPE__PUT, 1, 2, 21}, ref_v[2], ref_v[3]};
    struct wlog val = {.v = val_v, .n = 4, .keys = 7};
    assert_non_null(wlog_diff(&val, &ref, buf, sizeof(buf)));
    /* A watcher of key 0 only: the other keys' events are not its own. */
    struct fh_event k0_v[] = {ref_v[0], ref_v[2]};
    struct wlog k0 = {.v = k0_v, .n = 2, .keys = 1};
    assert_null(wlog_diff(&k0, &ref, buf, sizeof(buf)));
    k0.n = 1;
    assert_non_null(wlog_diff(&k0, &ref, buf, sizeof(buf)));
    struct fh_event k0x_v[] = {ref_v[0], ref_v[1], ref_v[2]}; /* saw another key's event */
    struct wlog k0x = {.v = k0x_v, .n = 3, .keys = 1};
    assert_non_null(wlog_diff(&k0x, &ref, buf, sizeof(buf)));
}

/* The history checks, on planted histories. */
static void history_checker_planted(void **state)
{
    (void)state;
    char buf[256];
    struct fh_event ev[] = {{KEEL__EVENT__EVENT_TYPE__PUT, 0, 2, 10},
                            {KEEL__EVENT__EVENT_TYPE__PUT, 1, 3, 20},
                            {KEEL__EVENT__EVENT_TYPE__PUT, 0, 4, 11}};
    struct fh_op ops[] = {
        {.op = {.kind = LINCHECK_WRITE, .value = 10, .call = 0, .ret = 1},
         .key = 0,
         .flags = FH_APPLIED,
         .member = 1,
         .rev = 2},
        {.op = {.kind = LINCHECK_WRITE, .value = 20, .call = 2, .ret = 3},
         .key = 1,
         .flags = FH_APPLIED,
         .member = 2,
         .rev = 3},
        {.op = {.kind = LINCHECK_READ, .value = 10, .call = 4, .ret = 5},
         .key = 0,
         .flags = FH_SERIAL,
         .member = 3,
         .rev = 3},
        {.op = {.kind = LINCHECK_CAS, .value = 10, .value2 = 11, .ok = true, .call = 6, .ret = 7},
         .key = 0,
         .flags = FH_APPLIED,
         .member = 1,
         .rev = 4},
        {.op = {.kind = LINCHECK_READ, .value = 11, .call = 8, .ret = 9},
         .key = 0,
         .flags = FH_SERIAL,
         .member = 3,
         .rev = 4},
    };
    struct fh_history h = {0};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        fh_add(&h, &ops[i]);
    assert_null(fh_check_revisions(&h, buf, sizeof(buf)));
    assert_null(fh_check_against(&h, ev, 3, buf, sizeof(buf)));
    /* A lost acknowledged write: not in the history at its revision. */
    assert_non_null(fh_check_against(&h, ev, 2, buf, sizeof(buf)));
    assert_non_null(strstr(buf, "not in the revision history"));
    /* A serializable read that returned what the key did not hold at its revision. */
    h.v[2].op.value = 11;
    assert_non_null(fh_check_against(&h, ev, 3, buf, sizeof(buf)));
    assert_non_null(strstr(buf, "serializable"));
    h.v[2].op.value = 10;
    /* A member that went back in time (a serializable read after a restart, say). */
    h.v[4].rev = 2;
    h.v[4].op.value = 10;
    assert_non_null(fh_check_revisions(&h, buf, sizeof(buf)));
    assert_non_null(strstr(buf, "member 3"));
    h.v[4].rev = 4;
    h.v[4].op.value = 11;
    /* A linearizable answer below one completed before it began (any members). */
    h.v[3].rev = 1;
    assert_non_null(fh_check_revisions(&h, buf, sizeof(buf)));
    assert_non_null(strstr(buf, "linearizable"));
    /* Overlapping operations may be answered in either order. */
    h.v[3].op.call = 0;
    assert_null(fh_check_revisions(&h, buf, sizeof(buf)));
    fh_free(&h);
}

/* ---- the clients ---- */

struct clients {
    pid_t pid[CLIENTS];
    char out[CLIENTS][600];
};

static void clients_start(struct clients *cs, const struct tc_cluster *c)
{
    char eps[512];
    tc_endpoints(c, 0, eps, sizeof(eps));
    for (int i = 0; i < CLIENTS; i++) {
        char serial[64], id[16], sd[32], max[32];
        tc_endpoints(c, i % c->n + 1, serial, sizeof(serial));
        snprintf(id, sizeof(id), "%d", i + 1);
        snprintf(sd, sizeof(sd), "%llu", (unsigned long long)(seed * 31 + (uint64_t)i));
        snprintf(max, sizeof(max), "%lld", run_ms + 60000);
        snprintf(cs->out[i], sizeof(cs->out[i]), "%s/client-%d.tsv", c->root, i + 1);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            /* Die with this test, however it ends. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            execl(self_exe, "test_fault", "client", eps, serial, id, sd, cs->out[i], max,
                  (char *)NULL);
            _exit(127);
        }
        cs->pid[i] = pid;
    }
}

/* SIGTERM every client, wait (bounded) for each, and read back what they did. */
static void clients_stop(struct clients *cs, struct fh_history *h)
{
    for (int i = 0; i < CLIENTS; i++)
        kill(cs->pid[i], SIGTERM);
    long long until = tc_now_ms() + 30000;
    for (int i = 0; i < CLIENTS; i++) {
        int st = 0;
        pid_t got;
        while ((got = waitpid(cs->pid[i], &st, WNOHANG)) == 0 && tc_now_ms() < until)
            tu_sleep_ms(20);
        if (got != cs->pid[i]) {
            kill(cs->pid[i], SIGKILL);
            waitpid(cs->pid[i], &st, 0);
            fail_msg("client %d did not stop within 30 s of SIGTERM", i + 1);
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("client %d ended with status %d", i + 1, st);
        char err[256];
        if (fh_load(h, cs->out[i], err, sizeof(err)) != 0)
            fail_msg("%s", err);
    }
}

/* ---- faults ---- */

struct faults {
    struct tc_cluster *c;
    struct keel *k; /* status queries */
    uint64_t rng;
    int injected;
    int by_kind[F_KINDS];
};

static int pick_follower(struct faults *f, int leader)
{
    int n = f->c->n;
    return (leader + (int)(tu_rand(&f->rng) % (uint64_t)(n - 1))) % n + 1;
}

static int zone_of(const struct faults *f, int member)
{
    (void)f;
    return ZONE_BLOCK + member - 1;
}

static void fault_once(struct faults *f)
{
    struct tc_cluster *c = f->c;
    unsigned kinds[F_KINDS];
    int nk = 0;
    int down = sc->down_ms ? sc->down_ms : 500;
    for (int b = 0; b < F_KINDS; b++)
        if (sc->faults & (1u << b))
            kinds[nk++] = 1u << b;
    int which = (int)(tu_rand(&f->rng) % (uint64_t)nk);
    unsigned kind = kinds[which];
    if (kind == F_KILL_ALL) {
        for (int i = 1; i <= c->n; i++)
            tc_stop(c, i, SIGKILL);
        tu_sleep_ms(down);
        for (int i = 1; i <= c->n; i++)
            assert_int_equal(tc_start(c, i), 0);
        goto done;
    }
    int leader = tc_find_leader(c, f->k, 0, 2000);
    if (leader <= 0)
        return;
    int victim = leader;
    if (kind & (F_KILL_FOLLOWER | F_PAUSE_FOLLOWER | F_CUT_FOLLOWER))
        victim = pick_follower(f, leader);
    switch (kind) {
    case F_KILL_LEADER:
    case F_KILL_FOLLOWER:
        tc_stop(c, victim, SIGKILL);
        tu_sleep_ms(down);
        assert_int_equal(tc_start(c, victim), 0);
        break;
    case F_KILL_MINORITY:
    case F_KILL_MAJORITY: {
        /* The leader and followers: short of a majority, or just enough for one (no writes
         * may be acknowledged while it is down; the checks would see one that was). */
        int dead[TC_MAX + 1] = {0}, nd = 0;
        int want = kind == F_KILL_MINORITY ? (c->n - 1) / 2 : c->n / 2 + 1;
        dead[nd++] = leader;
        for (int tries = 0; nd < want && tries < 1000; tries++) {
            int v = pick_follower(f, leader);
            bool dup = false;
            for (int i = 0; i < nd; i++)
                dup = dup || dead[i] == v;
            if (!dup)
                dead[nd++] = v;
        }
        for (int i = 0; i < nd; i++)
            tc_stop(c, dead[i], SIGKILL);
        tu_sleep_ms(down);
        for (int i = 0; i < nd; i++)
            assert_int_equal(tc_start(c, dead[i]), 0);
        break;
    }
    case F_PAUSE_LEADER:
    case F_PAUSE_FOLLOWER:
        kill(c->m[victim].pid, SIGSTOP);
        tu_sleep_ms(1500);
        kill(c->m[victim].pid, SIGCONT);
        break;
    case F_CUT_LEADER:
    case F_CUT_FOLLOWER:
        if (zones("partition %d", zone_of(f, victim)) != 0)
            fail_msg("zones.sh partition %d failed", zone_of(f, victim));
        tu_sleep_ms(cut_ms);
        if (zones("heal") != 0)
            fail_msg("zones.sh heal failed");
        break;
    default:
        return;
    }
done:
    f->injected++;
    f->by_kind[which]++;
}

/*
 * The schedule, on the test's main thread until run_ms have passed: members are started by the
 * thread that forks them and die with it (the harness sets PR_SET_PDEATHSIG), so faults never
 * run on a thread that ends before the test.
 */
static void run_faults(struct faults *f, long long ms)
{
    long long end = tc_now_ms() + ms;
    int period = sc->period_ms;
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

/* The raft term, as whichever member answers sees it (0 when none does): how many elections
 * the faults caused shows in the summary. */
static uint64_t raft_term(struct keel *k)
{
    Keel__StatusResponse *st = NULL;
    uint64_t term = 0;
    for (int tries = 0; tries < 10 && term == 0; tries++)
        if (keel_status(k, NULL, &st) == 0) {
            term = st->raftterm;
            keel_free(st);
        }
    return term;
}

/* ---- the checks after the run ---- */

static int64_t get_value(struct keel *k, int key, bool serializable, int *err)
{
    struct keel_get_opts go = {.serializable = serializable};
    Keel__RangeResponse *r = NULL;
    *err = keel_get(k, fh_key_names[key], strlen(fh_key_names[key]), &go, &r);
    if (*err != 0)
        return 0;
    int64_t v = r->n_kvs ? kv_value(r->kvs[0]) : LINCHECK_ABSENT;
    keel_free(r);
    return v;
}

static bool is_leased(const struct fh_history *h, int key, int64_t v)
{
    for (size_t i = 0; i < h->n; i++)
        if ((h->v[i].flags & FH_LEASE) && h->v[i].key == key && h->v[i].op.value == v)
            return true;
    return false;
}

/* A lease's keys do not outlive it: every lease the clients granted has been revoked or has run
 * out by now (TTL 1 s; a new leader may extend it by an election timeout and the TTL), so within
 * a bounded wait no key may hold a leased value. */
static void leases_end(struct keel *k, const struct fh_history *h)
{
    long long until = tc_now_ms() + 20000;
    for (int key = 0; key < FH_KEYS; key++) {
        for (;;) {
            int err;
            int64_t v = get_value(k, key, false, &err);
            if (err == 0 && !is_leased(h, key, v))
                break;
            if (tc_now_ms() > until)
                fail_msg("%s still holds %lld, put with a lease that should have ended (%s)",
                         fh_key_names[key], (long long)v, err ? keel_errmsg() : "no error");
            tu_sleep_ms(50);
        }
    }
}

/* Checkpoints restored by members that fell behind the log (their logs say so). */
static int restored_checkpoints(const struct tc_cluster *c)
{
    int n = 0;
    for (int i = 1; i <= c->n; i++) {
        FILE *f = fopen(c->m[i].log, "r");
        char line[1024];
        while (f != NULL && fgets(line, sizeof(line), f) != NULL)
            n += strstr(line, "checkpoint restored: applied index") != NULL;
        if (f != NULL)
            fclose(f);
    }
    return n;
}

/* The run under way: at file scope, so that the teardown still has them after a failed check. */
static struct tc_cluster cluster;
static struct fh_history history;
static bool passed;

/* What each member says of itself, on stderr: for a failure's report. */
static void dump_status(const struct tc_cluster *c)
{
    for (int i = 1; i <= c->n; i++) {
        char ep[64];
        tc_endpoints(c, i, ep, sizeof(ep));
        struct keel_options o = {.endpoints = ep, .request_timeout_ms = 1000};
        struct keel *k = NULL;
        Keel__StatusResponse *st = NULL;
        if (keel_open(&k, &o) == 0 && keel_status(k, ep, &st) == 0) {
            fprintf(stderr,
                    "member %d: term %llu, raft index %llu, applied %llu, leader %llx, "
                    "%zu errors%s%s\n",
                    i, (unsigned long long)st->raftterm, (unsigned long long)st->raftindex,
                    (unsigned long long)st->raftappliedindex, (unsigned long long)st->leader,
                    st->n_errors, st->n_errors ? ": " : "", st->n_errors ? st->errors[0] : "");
            keel_free(st);
        } else {
            fprintf(stderr, "member %d: no status (%s)\n", i, keel_errmsg());
        }
        keel_close(k);
    }
}

/* Copy the members' logs to dir/<scenario>-<seed>-m<i>.log. */
static void copy_logs(const struct tc_cluster *c, const char *dir)
{
    for (int i = 1; i <= c->n; i++) {
        char path[PATH_MAX + 64], buf[65536];
        snprintf(path, sizeof(path), "%s/%s-%llu-m%d.log", dir, sc->name, (unsigned long long)seed,
                 i);
        FILE *in = fopen(c->m[i].log, "r"), *out = fopen(path, "w");
        size_t n;
        while (in != NULL && out != NULL && (n = fread(buf, 1, sizeof(buf), in)) > 0)
            fwrite(buf, 1, n, out);
        if (in != NULL)
            fclose(in);
        if (out != NULL)
            fclose(out);
    }
}

/* A failed check keeps the history (for `test_fault replay`) and the members' logs in the
 * working directory (ctest's: the build's tests/ directory). */
static void save_history(const struct tc_cluster *c, const struct fh_history *h, const char *why)
{
    char path[PATH_MAX + 64], cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        snprintf(cwd, sizeof(cwd), ".");
    snprintf(path, sizeof(path), "%s/fault-history-%s-%llu.tsv", cwd, sc->name,
             (unsigned long long)seed);
    if (fh_save(h, path) == 0)
        fprintf(stderr, "%s: history saved for `test_fault replay %s`, member logs beside it\n",
                why, path);
    copy_logs(c, cwd);
}

static void run_scenario(void **state)
{
    (void)state;
    if (sc->zones) {
        tc_cluster_init_at(&cluster, sc->members, "fault", ZONE_BLOCK);
        zones_active = true;
        zones("off"); /* leftovers of a run killed by a signal; we hold ctest's firewall lock */
        char range[32];
        snprintf(range, sizeof(range), "%d-%d", ZONE_BLOCK, ZONE_BLOCK + sc->members - 1);
        if (sc->net != NULL && zones("on --zones %s %s", range, sc->net) != 0)
            fail_msg("zones.sh on --zones %s %s failed", range, sc->net);
        if (sc->net == NULL && zones("on --zones %s --delay 0", range) != 0)
            fail_msg("zones.sh on --zones %s --delay 0 failed", range);
    } else {
        tc_cluster_init(&cluster, sc->members, "fault");
    }
    if (getenv("KEEL_FAULT_KEELD_FLAGS") != NULL) /* e.g. "--log-level debug" */
        snprintf(cluster.extra, sizeof(cluster.extra), "%s", getenv("KEEL_FAULT_KEELD_FLAGS"));
    /*
     * raft 0.15 loads a log segment with one realloc per batch of entries; under ASan, whose
     * realloc always copies, a restart costs O(batches^2): 8000 small writes took a member 11 s
     * in raft_start (a release build: 0.29 s; 120,000 batches: 0.59 s). The scenarios keep the
     * log to 1024 + 1024 entries, so that a restart costs what the fault did, not what the
     * sanitizer does.
     */
    cluster.snapshot_threshold = sc->snapshot_threshold ? sc->snapshot_threshold : 1024;
    cluster.snapshot_trailing = cluster.snapshot_threshold;
    if (sc->snapshot_threshold)
        cluster.snapshot_trailing = sc->snapshot_threshold / 4;
    tc_start_all(&cluster);
    char eps[512];
    tc_endpoints(&cluster, 0, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 2000, .dial_timeout_ms = 300};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    assert_true(tc_find_leader(&cluster, k, 0, 10000) > 0);

    /* Watchers from the first revision, on handles of their own: one over every key through any
     * member (libkeel resumes it elsewhere after a failover), and one on each of three members
     * with a range of its own (resumed on the same member when it is back). */
    enum { WATCHERS = 4 };
    struct keel *wk[WATCHERS] = {NULL};
    struct wlog live[WATCHERS];
    struct keel_watch *lw[WATCHERS];
    static const char *const from[WATCHERS] = {"f/", "f/a", "f/b", "f/"};
    static const char *const to[WATCHERS] = {"f0", NULL, "f0", "f0"};
    for (int i = 0; i < WATCHERS; i++) {
        char ep[512];
        tc_endpoints(&cluster, i, ep, sizeof(ep)); /* i = 0: every member */
        struct keel_options wo = o;
        wo.endpoints = ep;
        assert_int_equal(keel_open(&wk[i], &wo), 0);
        live[i] = (struct wlog){.n = 0};
        pthread_mutex_init(&live[i].mu, NULL);
        lw[i] = watch_range(wk[i], from[i], to[i], &live[i]);
    }

    uint64_t term0 = raft_term(k);
    struct clients cs;
    clients_start(&cs, &cluster);
    struct faults f = {.c = &cluster, .k = k, .rng = seed};
    run_faults(&f, run_ms);
    if (sc->zones && zones("heal") != 0)
        fail_msg("zones.sh heal failed");
    /* Every member back; then the clients run a little longer on a healthy cluster. */
    for (int i = 1; i <= cluster.n; i++)
        if (cluster.m[i].pid == 0)
            assert_int_equal(tc_start(&cluster, i), 0);
    assert_true(tc_find_leader(&cluster, k, 0, 10000) > 0);
    tu_sleep_ms(1000);
    uint64_t terms = raft_term(k) - term0;
    clients_stop(&cs, &history);

    leases_end(k, &history);
    /* A final linearizable read of every key: the state every member must converge to. */
    int64_t final[FH_KEYS];
    for (int key = 0; key < FH_KEYS; key++) {
        int err = -1;
        struct fh_op op = {.key = key};
        for (int tries = 0; tries < 10 && err != 0; tries++) {
            op.op.call = now_us();
            final[key] = get_value(k, key, false, &err);
        }
        if (err != 0)
            fail_msg("final read of %s: %s", fh_key_names[key], keel_errmsg());
        op.op.kind = LINCHECK_READ;
        op.op.value = final[key];
        op.op.ret = now_us();
        fh_add(&history, &op);
    }
    struct lincheck_result res;
    int64_t t0 = now_us();
    enum lincheck_verdict v = fh_lincheck(&history, 60000, &res);
    size_t unknown = 0, serial = 0, leased = 0;
    for (size_t i = 0; i < history.n; i++) {
        unknown +=
            history.v[i].op.ret == LINCHECK_NEVER && history.v[i].op.kind != LINCHECK_CAS_BLIND;
        serial += (history.v[i].flags & FH_SERIAL) != 0;
        leased += (history.v[i].flags & FH_LEASE) != 0;
    }
    fprintf(stderr,
            "%s seed %llu: %d faults, %llu new terms, %zu operations (%zu unknown outcome, %zu "
            "serializable reads, "
            "%zu lease puts), checked in %lld ms: %s %s\n",
            sc->name, (unsigned long long)seed, f.injected, (unsigned long long)terms, history.n,
            unknown, serial, leased, (long long)(now_us() - t0) / 1000, lincheck_verdict_name(v),
            res.detail);
    if (v != LINCHECK_OK)
        fail_msg("not linearizable: %s", res.detail);
    assert_true(f.injected >= 1);
    assert_true(history.n > 100);
    /* Every member converges to the final values. */
    for (int i = 1; i <= cluster.n; i++) {
        char ep[64];
        tc_endpoints(&cluster, i, ep, sizeof(ep));
        struct keel_options oi = {.endpoints = ep, .request_timeout_ms = 2000};
        struct keel *ki = NULL;
        assert_int_equal(keel_open(&ki, &oi), 0);
        for (int kx = 0; kx < FH_KEYS; kx++) {
            long long until = tc_now_ms() + 5000;
            for (;;) {
                int err;
                int64_t got = get_value(ki, kx, true, &err);
                if (err == 0 && got == final[kx])
                    break;
                if (tc_now_ms() > until)
                    fail_msg("member %d: %s = %lld (%s), the cluster says %lld", i,
                             fh_key_names[kx], (long long)got, err ? keel_errmsg() : "read",
                             (long long) final[kx]);
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
    struct keel_watch *rw = watch_range(k, "f/", "f0", &ref);
    assert_true(wlog_reach(&ref, last_rev, 20000));
    keel_watch_close(k, rw);
    char diff[512];
    if (fh_check_revisions(&history, diff, sizeof(diff)) != NULL ||
        fh_check_against(&history, ref.v, ref.n, diff, sizeof(diff)) != NULL) {
        fail_msg("%s", diff);
    }
    size_t events = 0;
    for (int i = 0; i < WATCHERS; i++) {
        int64_t last = wlog_last(&ref, live[i].keys);
        if (!wlog_reach(&live[i], last, 20000))
            fail_msg("watcher %d stopped at %zu events (status %d), its range's history goes to "
                     "revision %lld",
                     i, live[i].n, live[i].status, (long long)last);
        keel_watch_close(wk[i], lw[i]);
        if (wlog_diff(&live[i], &ref, diff, sizeof(diff)) != NULL)
            fail_msg("watcher %d: %s", i, diff);
        events += live[i].n;
        free(live[i].v);
        pthread_mutex_destroy(&live[i].mu);
        keel_close(wk[i]);
    }
    fprintf(stderr, "watch: %d watchers saw %zu events up to revision %lld, as in the history\n",
            WATCHERS, events, (long long)last_rev);
    /* A member held down for seconds with a small snapshot threshold falls behind the leader's
     * log, and must be sent a checkpoint: if none was restored, the scenario tested nothing. */
    int restored = restored_checkpoints(&cluster);
    if (getenv("KEEL_FAULT_LOGS") != NULL)
        copy_logs(&cluster, getenv("KEEL_FAULT_LOGS"));
    if (sc->snapshot_threshold && sc->down_ms > 0 && restored == 0)
        fail_msg("no member restored a checkpoint: the scenario did not exercise one");
    /* One line for tests/fault/run.sh. */
    printf("FAULT scenario=%s seed=%llu members=%d faults=%d terms=%llu checkpoints=%d ops=%zu "
           "unknown=%zu events=%zu verdict=ok\n",
           sc->name, (unsigned long long)seed, cluster.n, f.injected, (unsigned long long)terms,
           restored, history.n, unknown, events);
    fflush(stdout);
    free(ref.v);
    pthread_mutex_destroy(&ref.mu);
    keel_close(k);
    passed = true;
}

/* After the scenario, passed or failed (a failed check jumps here from anywhere in it): keep
 * the evidence of a failure, then stop what the run started. */
/*
 * A member whose zone was cut off for CUT_REJOIN_MS under steady writes is back in step soon
 * after the heal (it serves the last write acknowledged before the heal within REJOIN_BOUND_MS).
 * Measured: 2-4 ms. What this does not reproduce yet: zones.sh drops a cut zone's packets in
 * the OUTPUT hook, where the sender's TCP is told of each drop (a local error) and keeps
 * retrying; packets lost in a real network back TCP's retransmission timer off exponentially
 * (to ~6 s after a 6.5 s cut), and keel's peer links do not bound that yet (see README, "Fault
 * suite").
 */
#define CUT_REJOIN_MS   6500
#define REJOIN_BOUND_MS 3000
static void rejoin(void **state)
{
    (void)state;
    tc_cluster_init_at(&cluster, 3, "rejoin", ZONE_BLOCK);
    zones_active = true;
    zones("off");
    if (zones("on --zones %d-%d --delay 0", ZONE_BLOCK, ZONE_BLOCK + 2) != 0)
        fail_msg("zones.sh on failed");
    tc_start_all(&cluster);
    char eps[512];
    tc_endpoints(&cluster, 0, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 2000, .dial_timeout_ms = 300};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    int leader = tc_find_leader(&cluster, k, 0, 10000);
    assert_true(leader > 0);
    int victim = getenv("KEEL_REJOIN_LEADER") ? leader : leader % 3 + 1; /* a follower */
    char ep[64];
    tc_endpoints(&cluster, victim, ep, sizeof(ep));
    struct keel_options vo = {.endpoints = ep, .request_timeout_ms = 2000};
    struct keel *vk = NULL;
    assert_int_equal(keel_open(&vk, &vo), 0);
    /* Writes every 20 ms through the cut, so that the links to the cut zone carry data the
     * other side does not acknowledge (what backs TCP's retransmission timer off). */
    long long cut_at = tc_now_ms(), healed_at = 0;
    if (zones("partition %d", ZONE_BLOCK + victim - 1) != 0)
        fail_msg("zones.sh partition failed");
    char val[32], last[32] = "";
    int i = 0;
    while (healed_at == 0) {
        snprintf(val, sizeof(val), "%d", ++i);
        /* A put may fail while a cut leader is replaced: the last acknowledged one counts. */
        if (keel_put(k, "rejoin", 6, val, strlen(val), NULL, NULL) == 0)
            memcpy(last, val, sizeof(last));
        tu_sleep_ms(20);
        if (tc_now_ms() - cut_at >= CUT_REJOIN_MS) {
            if (zones("heal") != 0)
                fail_msg("zones.sh heal failed");
            healed_at = tc_now_ms();
        }
    }
    /* The last write before the heal: when the cut member serves it, it is back. */
    long long until = healed_at + 20000, back_at = 0;
    while (back_at == 0 && tc_now_ms() < until) {
        struct keel_get_opts go = {.serializable = true};
        Keel__RangeResponse *r = NULL;
        if (keel_get(vk, "rejoin", 6, &go, &r) == 0) {
            if (r->n_kvs == 1 && r->kvs[0]->value.len == strlen(last) &&
                memcmp(r->kvs[0]->value.data, last, strlen(last)) == 0)
                back_at = tc_now_ms();
            keel_free(r);
        }
        tu_sleep_ms(10);
    }
    assert_true(last[0] != '\0');
    fprintf(stderr, "member %d cut off for %lld ms: back in step %lld ms after the heal\n", victim,
            healed_at - cut_at, back_at ? back_at - healed_at : -1);
    assert_true(back_at != 0);
    assert_true(back_at - healed_at <= REJOIN_BOUND_MS);
    keel_close(vk);
    keel_close(k);
    passed = true;
}

static int teardown(void **state)
{
    (void)state;
    if (!passed && cluster.n > 0) {
        for (int i = 1; i <= cluster.n; i++) {
            int st = 0;
            if (cluster.m[i].pid > 0 && waitpid(cluster.m[i].pid, &st, WNOHANG) > 0) {
                fprintf(stderr, "member %d had exited: status %d\n", i, st);
                cluster.m[i].pid = 0;
            }
        }
        dump_status(&cluster);
        save_history(&cluster, &history, "failed");
    }
    fh_free(&history);
    if (cluster.n > 0)
        tc_cluster_close(&cluster);
    zones_off();
    return 0;
}

/* `test_fault replay FILE...`: the checks that need no cluster, on saved histories. */
static int replay(int argc, char **argv)
{
    struct fh_history h = {0};
    char err[512];
    for (int i = 0; i < argc; i++)
        if (fh_load(&h, argv[i], err, sizeof(err)) != 0) {
            fprintf(stderr, "%s\n", err);
            return 2;
        }
    struct lincheck_result res;
    enum lincheck_verdict v = fh_lincheck(&h, 0, &res);
    const char *bad = fh_check_revisions(&h, err, sizeof(err));
    printf("%zu operations: %s%s%s; revisions: %s\n", h.n, lincheck_verdict_name(v),
           v == LINCHECK_OK ? "" : ": ", res.detail, bad ? bad : "never back");
    fh_free(&h);
    return v == LINCHECK_OK && bad == NULL ? 0 : 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: test_fault SCENARIO [SEED] [--run-ms N]\n"
                    "       test_fault planted | rejoin | list | replay FILE... | client ...\n"
                    "scenarios:");
    for (size_t i = 0; i < N_SCENARIOS; i++)
        fprintf(stderr, " %s", scenarios[i].name);
    fprintf(stderr, "\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    if (strcmp(argv[1], "client") == 0)
        return fault_client_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "replay") == 0)
        return replay(argc - 2, argv + 2);
    if (strcmp(argv[1], "list") == 0) {
        for (size_t i = 0; i < N_SCENARIOS; i++)
            printf("%s\t%d members\t%s%s\n", scenarios[i].name, scenarios[i].members,
                   scenarios[i].catalogue, scenarios[i].zones ? "\tneeds root (zones)" : "");
        return 0;
    }
    if (strcmp(argv[1], "rejoin") == 0) {
        static const struct scenario rj = {.name = "rejoin", .members = 3, .zones = true};
        sc = &rj;
        if (zones_available() != 0) {
            printf("SKIPPED: rejoin needs root, iptables with NFQUEUE and bpf, and "
                   "nfnetlink_queue (scripts/zones.sh)\n");
            return 77;
        }
        atexit(zones_off);
        const struct CMUnitTest t[] = {cmocka_unit_test_teardown(rejoin, teardown)};
        return cmocka_run_group_tests_name("rejoin", t, NULL, NULL);
    }
    if (strcmp(argv[1], "planted") == 0) {
        const struct CMUnitTest t[] = {cmocka_unit_test(watch_checker_planted),
                                       cmocka_unit_test(history_checker_planted)};
        return cmocka_run_group_tests_name("planted", t, NULL, NULL);
    }
    for (size_t i = 0; i < N_SCENARIOS; i++)
        if (strcmp(argv[1], scenarios[i].name) == 0)
            sc = &scenarios[i];
    if (sc == NULL) {
        fprintf(stderr, "test_fault: unknown scenario %s\n", argv[1]);
        usage();
        return 2;
    }
    seed = tu_seed(argv[1]);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--run-ms") == 0 && i + 1 < argc)
            run_ms = atoll(argv[++i]);
        else
            seed = strtoull(argv[i], NULL, 10);
    }
    if (run_ms < 1000 || run_ms > 3600000) {
        fprintf(stderr, "test_fault: --run-ms must be within 1000..3600000\n");
        return 2;
    }
    if (sc->zones) {
        int rv = zones_available();
        if (rv != 0) {
            printf("SKIPPED: %s needs root, iptables with NFQUEUE and bpf, and nfnetlink_queue "
                   "(scripts/zones.sh)\n",
                   sc->name);
            printf("FAULT scenario=%s seed=%llu verdict=skipped\n", sc->name,
                   (unsigned long long)seed);
            return 77;
        }
        atexit(zones_off);
    }
    if (getenv("KEEL_FAULT_CUT_MS") != NULL)
        cut_ms = atoi(getenv("KEEL_FAULT_CUT_MS"));
    self_exe = realpath("/proc/self/exe", NULL);
    const struct CMUnitTest tests[] = {cmocka_unit_test_teardown(run_scenario, teardown)};
    int rv = cmocka_run_group_tests_name(sc->name, tests, NULL, NULL);
    free(self_exe);
    return rv;
}
