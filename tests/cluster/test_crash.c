/*
 * Crashes of real keeld processes under a write load: `test_crash <group> [seed] [rounds]`, one
 * ctest entry per group. The seed (printed; $KEEL_SEED or the second argument replays it) picks
 * every kill moment and down time; what the members are doing at that moment still depends on
 * the machine's timing, so a replay is close, not identical. ROUNDS (kill_all) defaults to 20.
 *
 * A write is acknowledged once raft committed it and the storage writer applied it into its open
 * LMDB write, before that write is committed and synced (every --backend-batch-interval-ms, or
 * before a raft snapshot). So a kill -9 loses LMDB's open write on every member at once, and the
 * raft log must give it back: these tests check that it does.
 *
 *   kill_all          a 3-member cluster under a put load from 64 clients (one put in flight
 *                     each, over 8 connections, at most RATE puts/s together), every member killed
 *                     at once at a seeded moment, restarted, ROUNDS times; every other round
 *                     aims the kill just after a member logged "store commit begins" (its LMDB
 *                     commit, with its sync, under way). The test fails if no aimed round caught
 *                     a commit in progress: then it tested nothing.
 *   snapshot_durable  tiny raft snapshot thresholds and a 10 s commit interval, so that LMDB
 *                     only syncs when a snapshot forces it: raft must never compact log entries
 *                     above LMDB's durable applied index. Every member killed at once, then
 *                     the leader alone, then a follower alone, each time under load; the one
 *                     killed alone must catch up (through a checkpoint when the log moved on).
 *
 * After each restart: every acknowledged put is on every member with exactly the acknowledged
 * mod_revision, create_revision == mod_revision and version 1 (a put applied twice would show
 * version 2 or another revision); the members' contents are identical; every revision from the
 * first put to the leader's current one holds exactly one key (every write is a put of a new key,
 * so a hole would be a lost write and a duplicate one applied twice); unacknowledged puts may or
 * may not be there. Revisions never go backwards: the leader's revision is at least the highest
 * acknowledged before the crash, and no member answers a serializable read below what it showed
 * (to a read or a put's answer) before it was killed.
 *
 * Bounds: every wait has a deadline; the members listen on 127.0.121.1 .. 127.0.123.1 and only
 * processes this test started are signalled, by PID.
 */
#include <inttypes.h>
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "testutil.h"
#include "keel/keel.h"

#define ZONE_BLOCK 121 /* 127.0.121.1 ...: no other test uses these */
#define CLIENTS    64
#define CONNS      8
#define VALUE_LEN  100
#define KEY_LEN    12 /* "c%02d/%08u" */
#define PAGE       1000
/* The load's ceiling, puts per second over all clients: the checks read every key back from
 * every member after each round, so the key count (and the test's time) must not grow with the
 * machine's speed. Each client sends at most every CLIENTS * 1000 / RATE ms. */
#define RATE 4000

static uint64_t seed;
static int rounds = 20;

/* ---- what the clients did ---- */

struct ack {
    uint32_t seq;
    int64_t rev;
};

struct client_log {
    uint32_t next_seq; /* every seq below was sent (acknowledged, failed or unknown) */
    struct ack *acks;
    size_t n_acks, cap;
};

struct kvrec {
    char key[KEY_LEN];
    int64_t create, mod, version;
};

struct load;

struct run {
    struct tc_cluster c;
    struct client_log cl[CLIENTS];
    uint64_t member_id[TC_MAX + 1];
    int64_t base_rev;             /* the revision before the first put */
    int64_t max_acked;            /* highest revision acknowledged so far */
    int64_t last_rev;             /* the leader's revision at the last check */
    int64_t shown[TC_MAX + 1];    /* highest revision member i answered with, over all its lives */
    struct kvrec *kv[TC_MAX + 1]; /* member i's contents at the last check */
    uint8_t *seen;                /* the check's revisions, one byte each */
    struct keel *k;               /* the check's client */
    struct load *load;            /* the load running, if any */
    uint64_t acked, failed;       /* puts, over the whole test */
    uint64_t rng;
};

/* The test's run, for the teardown after a failed check. */
static struct run *current;

static void key_of(int client, uint32_t seq, char out[KEY_LEN + 1])
{
    snprintf(out, KEY_LEN + 1, "c%02d/%08u", client, seq);
}

/* The value a put of (client, seq) writes: its key, then letters drawn from it, so any member
 * can be checked without remembering values. */
static void value_of(int client, uint32_t seq, char out[VALUE_LEN])
{
    char key[KEY_LEN + 1];
    key_of(client, seq, key);
    memcpy(out, key, KEY_LEN);
    uint64_t h = (uint64_t)client << 32 | seq;
    for (int i = KEY_LEN; i < VALUE_LEN; i += 8) {
        uint64_t x = tu_rand(&h);
        for (int b = 0; b < 8 && i + b < VALUE_LEN; b++)
            out[i + b] = (char)('a' + (x >> (8 * b) & 0xff) % 26);
    }
}

/* (client, seq) from a key this test wrote; false for any other key. */
static bool parse_key(const uint8_t *k, size_t len, int *client, uint32_t *seq)
{
    if (len != KEY_LEN || k[0] != 'c' || k[3] != '/')
        return false;
    int cl = 0;
    uint32_t s = 0;
    for (int i = 1; i < 3; i++) {
        if (k[i] < '0' || k[i] > '9')
            return false;
        cl = cl * 10 + (k[i] - '0');
    }
    for (int i = 4; i < KEY_LEN; i++) {
        if (k[i] < '0' || k[i] > '9')
            return false;
        s = s * 10 + (uint32_t)(k[i] - '0');
    }
    *client = cl;
    *seq = s;
    return cl < CLIENTS;
}

static int member_of(const struct run *r, uint64_t id)
{
    for (int i = 1; i <= r->c.n; i++)
        if (r->member_id[i] == id)
            return i;
    return 0;
}

/* ---- the load: CLIENTS clients, one put in flight each, over CONNS libkeel clients on a loop
 * thread of its own; a monitor reads every member (serializable) to learn what it shows ---- */

struct load;

struct lclient {
    struct load *l;
    int id;
    uint64_t sent_at; /* the loop's time of its last put */
    uv_timer_t pace;  /* the next put, when it comes too soon */
};

struct load {
    struct run *r;
    int clients;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t mon;
    struct keel_aclient *ac[CONNS];
    struct keel_aclient *mon_ac;
    struct lclient lc[CLIENTS];
    struct mon {
        struct load *l;
        int member;
        bool busy;
    } mon_of[TC_MAX + 1];
    atomic_bool stop;
    atomic_uint_fast64_t acked;
    uint64_t failed;
    bool closing;
    pthread_t thread;
    atomic_bool done;
};

static void put_next(struct lclient *lc);

static void on_pace(uv_timer_t *t)
{
    struct lclient *lc = t->data;
    if (!atomic_load(&lc->l->stop))
        put_next(lc);
}

static void on_put(int status, const Keel__Response *resp, void *data)
{
    struct lclient *lc = data;
    struct load *l = lc->l;
    struct client_log *cl = &l->r->cl[lc->id];
    if (status == 0 && resp->header != NULL) {
        if (cl->n_acks == cl->cap) {
            cl->cap = cl->cap ? 2 * cl->cap : 256;
            cl->acks = realloc(cl->acks, cl->cap * sizeof(*cl->acks));
            if (cl->acks == NULL)
                abort();
        }
        /* The put in flight is always the last seq sent. */
        cl->acks[cl->n_acks++] = (struct ack){cl->next_seq - 1, resp->header->revision};
        int64_t rev = resp->header->revision;
        if (rev > l->r->max_acked)
            l->r->max_acked = rev;
        int m = member_of(l->r, resp->header->member_id);
        if (m > 0 && rev > l->r->shown[m])
            l->r->shown[m] = rev;
        atomic_fetch_add(&l->acked, 1);
    } else {
        /* Failed or unknown: it may or may not have been applied. */
        l->failed++;
    }
    if (atomic_load(&l->stop))
        return;
    uint64_t due = lc->sent_at + CLIENTS * 1000 / RATE, now = uv_now(&l->loop);
    if (due > now && !l->closing)
        uv_timer_start(&lc->pace, on_pace, due - now, 0);
    else
        put_next(lc);
}

static void put_next(struct lclient *lc)
{
    struct load *l = lc->l;
    struct client_log *cl = &l->r->cl[lc->id];
    char key[KEY_LEN + 1], val[VALUE_LEN];
    uint32_t seq = cl->next_seq++;
    lc->sent_at = uv_now(&l->loop);
    key_of(lc->id, seq, key);
    value_of(lc->id, seq, val);
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)key;
    put.key.len = KEY_LEN;
    put.value.data = (uint8_t *)val;
    put.value.len = VALUE_LEN;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    if (keel_aclient_request(l->ac[lc->id % CONNS], &req, 0, on_put, lc) != 0)
        l->failed++; /* never sent: the client is closing */
}

static void on_mon(int status, const Keel__Response *resp, void *data)
{
    struct mon *m = data;
    int64_t *shown = &m->l->r->shown[m->member];
    m->busy = false;
    if (status == 0 && resp->header != NULL && resp->header->revision > *shown)
        *shown = resp->header->revision;
}

/* A serializable read from each member on its own: its answer's revision is what it shows
 * readers (one key the test never writes: cheap however many keys there are). */
static void mon_tick(uv_timer_t *t)
{
    struct load *l = t->data;
    for (int i = 1; i <= l->r->c.n; i++) {
        if (l->mon_of[i].busy || l->closing)
            continue;
        Keel__RangeRequest rr = KEEL__RANGE_REQUEST__INIT;
        rr.key.data = (uint8_t *)"m";
        rr.key.len = 1;
        rr.serializable = true;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_RANGE;
        req.range = &rr;
        struct keel_call_opts co = {.timeout_ms = 500, .endpoint = l->r->c.m[i].client};
        if (keel_aclient_request_ex(l->mon_ac, &req, &co, on_mon, &l->mon_of[i]) == 0)
            l->mon_of[i].busy = true;
    }
}

static void on_wake(uv_async_t *a)
{
    struct load *l = a->data;
    if (!atomic_load(&l->stop) || l->closing)
        return;
    /* Closing a client completes what it has in flight with KEEL_ECANCELED. */
    l->closing = true;
    for (int i = 0; i < CLIENTS; i++)
        uv_close((uv_handle_t *)&l->lc[i].pace, NULL);
    uv_close((uv_handle_t *)&l->mon, NULL);
    uv_close((uv_handle_t *)&l->wake, NULL);
    for (int i = 0; i < CONNS; i++)
        keel_aclient_close(l->ac[i], NULL, NULL);
    keel_aclient_close(l->mon_ac, NULL, NULL);
}

static void *load_main(void *arg)
{
    struct load *l = arg;
    for (int i = 0; i < l->clients; i++)
        put_next(&l->lc[i]);
    uv_run(&l->loop, UV_RUN_DEFAULT); /* until on_wake closed every handle */
    atomic_store(&l->done, true);
    return NULL;
}

static struct load *load_start(struct run *r, int clients)
{
    struct load *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    r->load = l;
    l->r = r;
    l->clients = clients;
    assert_int_equal(uv_loop_init(&l->loop), 0);
    char eps[512];
    tc_endpoints(&r->c, 0, eps, sizeof(eps));
    /* Short deadlines: after a kill, what is in flight fails soon and the round goes on. */
    struct keel_options o = {.endpoints = eps,
                             .request_timeout_ms = 3000,
                             .dial_timeout_ms = 300,
                             .client_name = "test_crash"};
    for (int i = 0; i < CONNS; i++)
        assert_int_equal(keel_aclient_init(&l->ac[i], &l->loop, &o), 0);
    assert_int_equal(keel_aclient_init(&l->mon_ac, &l->loop, &o), 0);
    for (int i = 0; i < CLIENTS; i++) {
        l->lc[i] = (struct lclient){.l = l, .id = i};
        uv_timer_init(&l->loop, &l->lc[i].pace);
        l->lc[i].pace.data = &l->lc[i];
    }
    for (int i = 0; i <= TC_MAX; i++)
        l->mon_of[i] = (struct mon){l, i, false};
    uv_async_init(&l->loop, &l->wake, on_wake);
    l->wake.data = l;
    uv_timer_init(&l->loop, &l->mon);
    l->mon.data = l;
    uv_timer_start(&l->mon, mon_tick, 0, 10);
    assert_int_equal(pthread_create(&l->thread, NULL, load_main, l), 0);
    return l;
}

/* Stop the load and join its thread (bounded): whether it stopped; *acked (may be NULL) gets the
 * puts it had acknowledged. */
static bool load_end(struct load *l, uint64_t *acked)
{
    atomic_store(&l->stop, true);
    uv_async_send(&l->wake);
    long long until = tc_now_ms() + 30000;
    while (!atomic_load(&l->done) && tc_now_ms() < until)
        tu_sleep_ms(5);
    if (!atomic_load(&l->done))
        return false; /* its thread still uses l: leave it */
    pthread_join(l->thread, NULL);
    uv_loop_close(&l->loop);
    l->r->load = NULL;
    if (acked != NULL)
        *acked = atomic_load(&l->acked);
    l->r->acked += atomic_load(&l->acked);
    l->r->failed += l->failed;
    free(l);
    return true;
}

/* load_end; the puts acknowledged in this load. */
static uint64_t load_stop(struct load *l)
{
    uint64_t acked = 0;
    if (!load_end(l, &acked))
        fail_msg("the load did not stop within 30 s");
    return acked;
}

/* ---- the members' logs: where their LMDB commits begin and end ---- */

struct logscan {
    off_t pos;       /* scanned up to here (a line boundary) */
    int begins;      /* "store commit begins" lines seen since the scan was reset */
    int finishes;    /* "store commit: ... ms" lines */
    bool open;       /* the last commit line is a begin: a commit is under way */
    long long index; /* the index of the last begin */
};

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* From where member i's log ends now. */
static void log_reset(const struct tc_cluster *c, int i, struct logscan *s)
{
    *s = (struct logscan){.pos = file_size(c->m[i].log)};
}

/* Read what member i logged since the last scan (whole lines only). */
static void log_scan(const struct tc_cluster *c, int i, struct logscan *s)
{
    int fd = open(c->m[i].log, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[65536];
    for (int reads = 0; reads < 4096; reads++) {
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, s->pos);
        if (n <= 0)
            break;
        buf[n] = '\0';
        char *end = memrchr(buf, '\n', (size_t)n);
        if (end == NULL)
            break; /* a line being written: next time */
        *end = '\0';
        for (char *line = buf, *nl; line != NULL; line = nl) {
            nl = strchr(line, '\n');
            if (nl != NULL)
                *nl++ = '\0';
            const char *b = strstr(line, "store commit begins at index ");
            if (b != NULL) {
                s->begins++;
                s->open = true;
                s->index = atoll(b + strlen("store commit begins at index "));
            } else if (strstr(line, "store commit: ") != NULL) {
                s->finishes++;
                s->open = false;
            }
        }
        s->pos += end - buf + 1;
    }
    close(fd);
}

/* How many lines of member i's log, from byte pos on, contain needle. */
static int log_count(const struct tc_cluster *c, int i, off_t pos, const char *needle)
{
    FILE *f = fopen(c->m[i].log, "r");
    if (f == NULL)
        return 0;
    int n = 0;
    char line[4096];
    if (fseeko(f, pos, SEEK_SET) == 0)
        for (int lines = 0; lines < 10000000 && fgets(line, sizeof(line), f); lines++)
            n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* ---- kills and restarts ---- */

/* SIGKILL to every running member at once (first the one named, if any), then reap them. */
static void kill_all(struct run *r, int first)
{
    if (first > 0 && r->c.m[first].pid > 0)
        kill(r->c.m[first].pid, SIGKILL);
    for (int i = 1; i <= r->c.n; i++)
        if (r->c.m[i].pid > 0)
            kill(r->c.m[i].pid, SIGKILL);
    for (int i = 1; i <= r->c.n; i++)
        if (tc_stop(&r->c, i, SIGKILL) == -1)
            fail_msg("member %d did not exit after SIGKILL", i);
}

static void kill_one(struct run *r, int i)
{
    if (tc_stop(&r->c, i, SIGKILL) == -1)
        fail_msg("member %d did not exit after SIGKILL", i);
}

static void start_stopped(struct run *r)
{
    for (int i = 1; i <= r->c.n; i++)
        if (r->c.m[i].pid == 0)
            assert_int_equal(tc_start(&r->c, i), 0);
}

static struct keel *open_all(const struct run *r)
{
    char eps[512];
    tc_endpoints(&r->c, 0, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 2000, .dial_timeout_ms = 300};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

/* A count of the test's keys: linearizable (endpoint NULL) or member ep's own (serializable).
 * 0 and the answer's revision, or the error. */
static int count_keys(struct keel *k, const char *ep, int64_t *rev, int64_t *count)
{
    Keel__RangeRequest rr = KEEL__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)"c";
    rr.key.len = 1;
    rr.range_end.data = (uint8_t *)"d";
    rr.range_end.len = 1;
    rr.serializable = ep != NULL;
    rr.count_only = true;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &rr;
    struct keel_call_opts co = {.timeout_ms = 2000, .endpoint = ep};
    Keel__Response *resp = NULL;
    int rv = keel_do_ex(k, &req, &co, &resp);
    if (rv == 0 && (resp->header == NULL || resp->range == NULL))
        rv = KEEL_EINTERNAL;
    if (rv == 0) {
        *rev = resp->header->revision;
        *count = resp->range->count;
    }
    keel_free(resp);
    return rv;
}

/* Who leads now, and the members' ids (the put answers name the member by id). */
static void learn_members(struct run *r)
{
    struct keel *k = r->k = open_all(r);
    assert_true(tc_find_leader(&r->c, k, 0, 30000) > 0);
    Keel__MemberListResponse *ml = NULL;
    int rv = -1;
    for (int tries = 0; tries < 50 && rv != 0; tries++)
        if ((rv = keel_member_list(k, &ml)) != 0)
            tu_sleep_ms(100);
    assert_int_equal(rv, 0);
    for (size_t j = 0; j < ml->n_members; j++)
        for (int i = 1; i <= r->c.n; i++)
            if (strcmp(ml->members[j]->name, r->c.m[i].name) == 0)
                r->member_id[i] = ml->members[j]->id;
    keel_free(ml);
    for (int i = 1; i <= r->c.n; i++)
        assert_true(r->member_id[i] != 0);
    int64_t rev = 0, count = -1;
    long long until = tc_now_ms() + 20000;
    while ((rv = count_keys(k, NULL, &rev, &count)) != 0 && tc_now_ms() < until)
        tu_sleep_ms(50);
    assert_int_equal(rv, 0);
    assert_int_equal(count, 0);
    r->base_rev = r->last_rev = rev;
    keel_close(k);
    r->k = NULL;
}

/* ---- the checks ---- */

/* Every key member i holds at revision rev (serializable, in pages), into *out; each key's
 * value, version, lease and revisions checked on the way. */
static size_t read_member(struct run *r, struct keel *k, int i, int64_t rev, struct kvrec **out)
{
    size_t n = 0, cap = 1024;
    /* In *out as it grows: a failed check leaves it to the teardown. */
    struct kvrec *v = *out = malloc(cap * sizeof(*v));
    assert_non_null(v);
    uint8_t from[KEY_LEN + 1] = {0};
    size_t from_len = 1; /* "\0": the first key */
    size_t pages_max = (size_t)(rev - r->base_rev) / PAGE + 10;
    bool more = true;
    for (size_t page = 0; more; page++) {
        if (page > pages_max)
            fail_msg("member %d: more pages than keys", i);
        Keel__RangeRequest rr = KEEL__RANGE_REQUEST__INIT;
        rr.key.data = from;
        rr.key.len = from_len;
        rr.range_end.data = (uint8_t *)"";
        rr.range_end.len = 1; /* "\0": every key from `from` on */
        rr.limit = PAGE;
        rr.revision = rev;
        rr.serializable = true;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_RANGE;
        req.range = &rr;
        struct keel_call_opts co = {.timeout_ms = 5000, .endpoint = r->c.m[i].client};
        Keel__Response *resp = NULL;
        int rv = -1;
        for (int tries = 0; tries < 20 && rv != 0; tries++) {
            if (tries > 0)
                tu_sleep_ms(100);
            rv = keel_do_ex(k, &req, &co, &resp);
        }
        if (rv != 0)
            fail_msg("member %d: range at revision %lld: %s (%s)", i, (long long)rev,
                     keel_strerror(rv), keel_errmsg());
        assert_non_null(resp->range);
        more = resp->range->more;
        for (size_t j = 0; j < resp->range->n_kvs; j++) {
            const Keel__KeyValue *kv = resp->range->kvs[j];
            int client;
            uint32_t seq;
            if (!parse_key(kv->key.data, kv->key.len, &client, &seq))
                fail_msg("member %d holds a key this test never wrote: %.*s", i, (int)kv->key.len,
                         (const char *)kv->key.data);
            if (seq >= r->cl[client].next_seq)
                fail_msg("member %d holds %.*s, which was never sent", i, KEY_LEN,
                         (const char *)kv->key.data);
            char val[VALUE_LEN];
            value_of(client, seq, val);
            if (kv->value.len != VALUE_LEN || memcmp(kv->value.data, val, VALUE_LEN) != 0)
                fail_msg("member %d: %.*s holds a value that was never written", i, KEY_LEN,
                         (const char *)kv->key.data);
            if (kv->version != 1 || kv->create_revision != kv->mod_revision || kv->lease != 0)
                fail_msg("member %d: %.*s has version %lld, create_revision %lld, mod_revision "
                         "%lld, lease %lld: written once, it must be 1, its mod_revision, -, 0",
                         i, KEY_LEN, (const char *)kv->key.data, (long long)kv->version,
                         (long long)kv->create_revision, (long long)kv->mod_revision,
                         (long long)kv->lease);
            if (kv->mod_revision <= r->base_rev || kv->mod_revision > rev)
                fail_msg("member %d: %.*s at revision %lld, outside (%lld, %lld]", i, KEY_LEN,
                         (const char *)kv->key.data, (long long)kv->mod_revision,
                         (long long)r->base_rev, (long long)rev);
            if (n > 0 && memcmp(v[n - 1].key, kv->key.data, KEY_LEN) >= 0)
                fail_msg("member %d: keys out of order", i);
            if (n == cap) {
                cap *= 2;
                v = realloc(v, cap * sizeof(*v));
                assert_non_null(v);
                *out = v;
            }
            memcpy(v[n].key, kv->key.data, KEY_LEN);
            v[n].create = kv->create_revision;
            v[n].mod = kv->mod_revision;
            v[n].version = kv->version;
            n++;
        }
        if (more) {
            if (resp->range->n_kvs == 0)
                fail_msg("member %d: an empty page that says more", i);
            memcpy(from, v[n - 1].key, KEY_LEN);
            from[KEY_LEN] = '\0'; /* the next key after the last one */
            from_len = KEY_LEN + 1;
        }
        keel_free(resp);
    }
    return n;
}

static const struct kvrec *find_key(const struct kvrec *v, size_t n, const char *key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(v[mid].key, key, KEY_LEN);
        if (c == 0)
            return &v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/*
 * Once the running members have a leader again: the leader's revision has not gone back; each
 * member, as soon as it answers a serializable read, is not below what it showed before, and
 * catches up to the leader; then every member holds the same keys, every acknowledged put among
 * them at its revision, and one key at each revision since the first put. `what` names the
 * moment, for messages.
 */
static void check_cluster(struct run *r, const char *what)
{
    struct keel *k = r->k = open_all(r);
    long long t0 = tc_now_ms();
    if (tc_find_leader(&r->c, k, 0, 30000) <= 0)
        fail_msg("%s: no leader within 30 s", what);
    int64_t lrev = 0, count = 0;
    int rv = -1;
    long long until = tc_now_ms() + 30000;
    while ((rv = count_keys(k, NULL, &lrev, &count)) != 0 && tc_now_ms() < until)
        tu_sleep_ms(50);
    if (rv != 0)
        fail_msg("%s: no linearizable read within 30 s: %s (%s)", what, keel_strerror(rv),
                 keel_errmsg());
    long long readable = tc_now_ms();
    if (lrev < r->max_acked || lrev < r->last_rev)
        fail_msg("%s: the leader's revision %lld is below the highest acknowledged %lld or the "
                 "last seen %lld",
                 what, (long long)lrev, (long long)r->max_acked, (long long)r->last_rev);
    for (int i = 1; i <= r->c.n; i++) {
        int64_t rev = 0, cnt = 0;
        until = tc_now_ms() + 60000;
        for (;;) {
            rv = count_keys(k, r->c.m[i].client, &rev, &cnt);
            if (rv == 0) {
                if (rev < r->shown[i])
                    fail_msg("%s: member %d answered at revision %lld, below the %lld it showed "
                             "before",
                             what, i, (long long)rev, (long long)r->shown[i]);
                if (rev >= lrev)
                    break;
            }
            if (tc_now_ms() > until)
                fail_msg("%s: member %d did not catch up to revision %lld within 60 s (at %lld: "
                         "%s)",
                         what, i, (long long)lrev, (long long)rev, rv ? keel_errmsg() : "behind");
            tu_sleep_ms(20);
        }
        if (rev > r->shown[i])
            r->shown[i] = rev;
    }
    long long caught_up = tc_now_ms();
    struct kvrec **v = r->kv;
    size_t n[TC_MAX + 1] = {0};
    for (int i = 1; i <= r->c.n; i++) {
        free(v[i]);
        v[i] = NULL;
        n[i] = read_member(r, k, i, lrev, &v[i]);
    }
    /* One key per revision since the first put: no hole, no duplicate. */
    size_t span = (size_t)(lrev - r->base_rev);
    if (n[1] != span)
        fail_msg("%s: member 1 holds %zu keys for the %zu revisions %lld..%lld: %s", what, n[1],
                 span, (long long)r->base_rev + 1, (long long)lrev,
                 n[1] < span ? "a hole (a write lost)" : "more writes than revisions");
    uint8_t *seen = r->seen = calloc(span + 1, 1);
    assert_non_null(seen);
    for (size_t j = 0; j < n[1]; j++) {
        size_t at = (size_t)(v[1][j].mod - r->base_rev - 1);
        if (seen[at]++)
            fail_msg("%s: two keys at revision %lld", what, (long long)v[1][j].mod);
    }
    free(seen);
    r->seen = NULL;
    /* The same on every member. */
    for (int i = 2; i <= r->c.n; i++) {
        if (n[i] != n[1])
            fail_msg("%s: member %d holds %zu keys, member 1 %zu", what, i, n[i], n[1]);
        for (size_t j = 0; j < n[1]; j++)
            if (memcmp(v[i][j].key, v[1][j].key, KEY_LEN) != 0 || v[i][j].mod != v[1][j].mod ||
                v[i][j].create != v[1][j].create || v[i][j].version != v[1][j].version)
                fail_msg("%s: member %d's key %.*s (revision %lld) differs from member 1's %.*s "
                         "(revision %lld)",
                         what, i, KEY_LEN, v[i][j].key, (long long)v[i][j].mod, KEY_LEN,
                         v[1][j].key, (long long)v[1][j].mod);
    }
    /* Every acknowledged put, at its revision. */
    size_t acked = 0;
    for (int cl = 0; cl < CLIENTS; cl++)
        for (size_t a = 0; a < r->cl[cl].n_acks; a++) {
            char key[KEY_LEN + 1];
            key_of(cl, r->cl[cl].acks[a].seq, key);
            const struct kvrec *kv = find_key(v[1], n[1], key);
            if (kv == NULL)
                fail_msg("%s: the acknowledged put of %s (revision %lld) is missing", what, key,
                         (long long)r->cl[cl].acks[a].rev);
            if (kv->mod != r->cl[cl].acks[a].rev)
                fail_msg("%s: %s was acknowledged at revision %lld, the members hold it at %lld",
                         what, key, (long long)r->cl[cl].acks[a].rev, (long long)kv->mod);
            acked++;
        }
    printf("  %s: revision %lld, %zu keys (%zu acknowledged) alike on %d members; leader "
           "readable after %lld ms, members caught up after %lld ms, checked in %lld ms\n",
           what, (long long)lrev, n[1], acked, r->c.n, readable - t0, caught_up - t0,
           tc_now_ms() - caught_up);
    fflush(stdout);
    r->last_rev = lrev;
    keel_close(k);
    r->k = NULL;
}

/* ---- set-up ---- */

static struct run *run_new(const char *tag, unsigned threshold, unsigned trailing,
                           const char *extra)
{
    struct run *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    tc_cluster_init_at(&r->c, 3, tag, ZONE_BLOCK);
    r->c.snapshot_threshold = threshold;
    r->c.snapshot_trailing = trailing;
    snprintf(r->c.extra, sizeof(r->c.extra), "%s", extra);
    r->rng = seed;
    current = r;
    tc_start_all(&r->c);
    learn_members(r);
    return r;
}

static void run_free(struct run *r)
{
    if (r->load != NULL && !load_end(r->load, NULL))
        fprintf(stderr, "test_crash: the load did not stop: its memory is left\n");
    keel_close(r->k);
    tc_cluster_close(&r->c);
    for (int i = 0; i < CLIENTS; i++)
        free(r->cl[i].acks);
    for (int i = 0; i <= TC_MAX; i++)
        free(r->kv[i]);
    free(r->seen);
    free(r);
    current = NULL;
}

static int teardown(void **state)
{
    (void)state;
    if (current != NULL) {
        /* Failed: keep the members' logs and data for a look. */
        setenv("KEEL_KEEP_TEST_DATA", "1", 1);
        run_free(current);
    }
    return 0;
}

static int rand_in(struct run *r, int lo, int hi)
{
    return lo + (int)(tu_rand(&r->rng) % (uint64_t)(hi - lo + 1));
}

/* ---- kill_all ---- */

/*
 * Wait (up to timeout_ms) until a member logs the beginning of an LMDB commit that has not
 * finished yet; the member, or 0. Polled every millisecond: a commit (its sync) takes a few.
 */
static int wait_commit_begins(struct run *r, struct logscan *ls, int timeout_ms)
{
    long long until = tc_now_ms() + timeout_ms;
    for (int polls = 0; tc_now_ms() < until && polls < 1000000; polls++) {
        for (int i = 1; i <= r->c.n; i++) {
            int before = ls[i].begins;
            log_scan(&r->c, i, &ls[i]);
            if (ls[i].begins > before && ls[i].open)
                return i;
        }
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void crash_kill_all(void **state)
{
    (void)state;
    /* Snapshots every 1024 entries, as the fault suite: raft 0.15 loads its log with one realloc
     * per batch, which ASan makes quadratic (README, "Fault suite"), and every round restarts. */
    struct run *r = run_new("crash_all", 1024, 1024, "--log-level debug");
    int aimed = 0, aimed_hit = 0, other_hit = 0;
    long long t0 = tc_now_ms();
    for (int round = 1; round <= rounds; round++) {
        bool aim = round % 2 == 0;
        struct logscan ls[TC_MAX + 1];
        for (int i = 1; i <= r->c.n; i++)
            log_reset(&r->c, i, &ls[i]);
        struct load *l = load_start(r, CLIENTS);
        long long load_at = tc_now_ms();
        int first = 0;
        if (aim) {
            /* Into the load, then the next commit that begins: the kill lands inside it. */
            tu_sleep_ms(rand_in(r, 150, 700));
            for (int i = 1; i <= r->c.n; i++)
                log_scan(&r->c, i, &ls[i]);
            first = wait_commit_begins(r, ls, 2000);
        } else {
            tu_sleep_ms(rand_in(r, 200, 1200));
        }
        long long kill_at = tc_now_ms();
        kill_all(r, first);
        uint64_t acked = load_stop(l);
        /* What the logs say was under way when the members died. */
        int open = 0;
        char detail[128] = "";
        size_t dl = 0;
        for (int i = 1; i <= r->c.n; i++) {
            log_scan(&r->c, i, &ls[i]);
            if (ls[i].open) {
                open++;
                dl +=
                    (size_t)snprintf(detail + dl, sizeof(detail) - dl, " m%d@%lld", i, ls[i].index);
                if (dl >= sizeof(detail))
                    dl = sizeof(detail) - 1;
            }
        }
        aimed += aim;
        aimed_hit += aim && open > 0;
        other_hit += !aim && open > 0;
        printf("round %d/%d (%s): killed %lld ms into the load (%" PRIu64
               " puts acknowledged, max revision %lld); commits in progress:%s\n",
               round, rounds, aim ? "aimed at a commit" : "random", kill_at - load_at, acked,
               (long long)r->max_acked, open ? detail : " none");
        fflush(stdout);
        tu_sleep_ms(rand_in(r, 0, 300));
        start_stopped(r);
        char what[32];
        snprintf(what, sizeof(what), "round %d", round);
        check_cluster(r, what);
        if (tc_now_ms() - t0 > 240000)
            fail_msg("over 240 s after %d rounds: too slow to be a unit of the suite", round);
    }
    printf("kill_all seed %" PRIu64 ": %d rounds in %lld ms, %" PRIu64
           " puts acknowledged, %" PRIu64
           " failed or unknown; a commit was in progress at the kill in %d of %d aimed rounds "
           "and %d of %d random ones\n",
           seed, rounds, tc_now_ms() - t0, r->acked, r->failed, aimed_hit, aimed, other_hit,
           rounds - aimed);
    fflush(stdout);
    if (aimed > 0 && aimed_hit == 0)
        fail_msg("no aimed kill caught a commit in progress: the test tested nothing");
    assert_true(r->acked > 0);
    run_free(r);
}

/* ---- snapshot_durable ---- */

/* Lines of each member's log since start[] that contain needle, summed. */
static int logs_count(const struct run *r, const off_t *start, const char *needle)
{
    int n = 0;
    for (int i = 1; i <= r->c.n; i++)
        n += log_count(&r->c, i, start[i], needle);
    return n;
}

static void log_marks(const struct run *r, off_t *pos)
{
    for (int i = 1; i <= r->c.n; i++)
        pos[i] = file_size(r->c.m[i].log);
}

/*
 * The store commits member i logged from byte pos on that no snapshot asked for: a commit at an
 * index no "snapshot token at index" line names. Tokens are looked for in the whole log: the loop
 * logs a token after queueing its sync, so the commit's line may come first, and a token logged
 * just before pos may have its commit just after it. With a 10 s commit interval there should be
 * none, unless a checkpoint fetch (which commits first) ran: *fetches counts those.
 */
static int unforced_commits(const struct run *r, int i, off_t pos, int *fetches)
{
    FILE *f = fopen(r->c.m[i].log, "r");
    if (f == NULL)
        fail_msg("member %d's log: cannot open", i);
    static const char tok[] = "snapshot token at index ", beg[] = "store commit begins at index ";
    long long *idx[2] = {NULL, NULL}; /* tokens, commits */
    size_t n[2] = {0, 0}, cap[2] = {0, 0};
    char line[4096];
    for (int lines = 0; lines < 10000000 && fgets(line, sizeof(line), f); lines++) {
        bool in_window = ftello(f) > pos;
        const char *t = strstr(line, tok), *b = strstr(line, beg);
        if (in_window && strstr(line, "fetching a checkpoint") != NULL)
            (*fetches)++;
        int which = t != NULL ? 0 : b != NULL && in_window ? 1 : -1;
        if (which < 0)
            continue;
        if (n[which] == cap[which]) {
            cap[which] = cap[which] ? 2 * cap[which] : 256;
            idx[which] = realloc(idx[which], cap[which] * sizeof(*idx[which]));
            assert_non_null(idx[which]);
        }
        idx[which][n[which]++] = atoll(which == 0 ? t + strlen(tok) : b + strlen(beg));
    }
    fclose(f);
    int unforced = 0;
    for (size_t c = 0; c < n[1]; c++) {
        bool found = false;
        for (size_t j = 0; j < n[0] && !found; j++)
            found = idx[0][j] == idx[1][c];
        unforced += !found;
    }
    free(idx[0]);
    free(idx[1]);
    return unforced;
}

/* Who leads now (the members' own word), waiting up to 30 s. */
static int leader_now(struct run *r)
{
    struct keel *k = r->k = open_all(r);
    int leader = tc_find_leader(&r->c, k, 0, 30000);
    keel_close(k);
    r->k = NULL;
    if (leader <= 0)
        fail_msg("no leader within 30 s");
    return leader;
}

/*
 * Member `victim` killed alone under the load, which goes on through the other two long enough
 * for their snapshots to compact the log past where the victim stopped; then it is restarted and
 * must catch up.
 */
static void kill_alone(struct run *r, int victim, const char *what)
{
    off_t pos[TC_MAX + 1];
    struct load *l = load_start(r, 16);
    tu_sleep_ms(rand_in(r, 400, 900));
    kill_one(r, victim);
    long long killed_at = tc_now_ms();
    log_marks(r, pos);
    tu_sleep_ms(rand_in(r, 1500, 2500));
    uint64_t acked = load_stop(l);
    int snaps = logs_count(r, pos, "snapshot token at index");
    start_stopped(r);
    check_cluster(r, what);
    int restored = log_count(&r->c, victim, pos[victim], "checkpoint restored");
    printf("%s: member %d killed; %" PRIu64 " puts acknowledged in the %lld ms without it, %d "
           "snapshots there; it caught up with %d checkpoints restored\n",
           what, victim, acked, tc_now_ms() - killed_at, snaps, restored);
    fflush(stdout);
    /* The others' snapshots compacted their logs far past where it stopped (4 entries kept):
     * only a checkpoint could bring it back. */
    if (snaps < 2 * (r->c.n - 1))
        fail_msg("%s: only %d snapshots while member %d was down", what, snaps, victim);
    if (restored == 0)
        fail_msg("%s: member %d caught up without a checkpoint, past a compacted log?", what,
                 victim);
}

static void crash_snapshot_durable(void **state)
{
    (void)state;
    /* --snapshot-threshold and --snapshot-trailing at their minimum (4, server/config.c): a
     * snapshot, and so a forced LMDB commit, every 4 entries, the log compacted right behind
     * it; the 10 s commit interval never comes within the test's load windows. */
    struct run *r =
        run_new("crash_snap", 4, 4, "--log-level debug --backend-batch-interval-ms 10000");
    long long t0 = tc_now_ms();
    off_t start[TC_MAX + 1];
    log_marks(r, start);
    int behind = 0, snapshots = 0;
    for (int round = 1; round <= 3; round++) {
        off_t pos[TC_MAX + 1];
        log_marks(r, pos);
        /* 16 clients: small raft entries, so many of them and many snapshots. */
        struct load *l = load_start(r, 16);
        long long load_at = tc_now_ms();
        tu_sleep_ms(rand_in(r, 1000, 2000));
        long long kill_at = tc_now_ms();
        kill_all(r, 0);
        uint64_t acked = load_stop(l);
        int snaps = logs_count(r, pos, "snapshot token at index");
        int commits = logs_count(r, pos, "store commit begins");
        int unforced = 0, fetches = 0;
        for (int i = 1; i <= r->c.n; i++)
            unforced += unforced_commits(r, i, pos[i], &fetches);
        snapshots += snaps;
        start_stopped(r);
        char what[48];
        snprintf(what, sizeof(what), "every member killed, round %d", round);
        check_cluster(r, what);
        /* keeld says so when its store restarted behind what its readers had seen: the
         * entries in between came back from the raft log alone. */
        int b = logs_count(r, pos, "the store restarts at index");
        behind += b;
        printf("%s: %" PRIu64 " puts acknowledged in %lld ms; %d snapshots, %d store commits "
               "(%d not asked for by a snapshot) before the kill; %d members restarted behind "
               "what they had shown\n",
               what, acked, kill_at - load_at, snaps, commits, unforced, b);
        fflush(stdout);
        if (snaps < 3 * r->c.n)
            fail_msg("%s: only %d snapshots: the thresholds did not take", what, snaps);
        /* Else LMDB was synced by something else, and the snapshots' syncs were not alone in
         * keeping the log's compaction honest. */
        if (unforced > 0 && fetches == 0)
            fail_msg("%s: %d store commits that no snapshot asked for", what, unforced);
    }
    if (behind == 0)
        fail_msg("no member ever restarted behind what it had shown: nothing above LMDB's "
                 "durable index was at stake");
    kill_alone(r, leader_now(r), "the leader killed alone");
    int leader = leader_now(r);
    kill_alone(r, leader % r->c.n + 1, "a follower killed alone");
    int fetched = logs_count(r, start, "checkpoint restored");
    printf("snapshot_durable seed %" PRIu64 ": %lld ms, %" PRIu64 " puts acknowledged, %" PRIu64
           " failed or unknown; %d snapshots in the kill-all rounds, %d restarts behind what was "
           "shown, %d checkpoints restored\n",
           seed, tc_now_ms() - t0, r->acked, r->failed, snapshots, behind, fetched);
    fflush(stdout);
    run_free(r);
}

int main(int argc, char **argv)
{
    if (argc >= 3)
        setenv("KEEL_SEED", argv[2], 1);
    if (argc >= 4)
        rounds = atoi(argv[3]);
    if (rounds < 1 || rounds > 1000) {
        fprintf(stderr, "test_crash: rounds must be within 1..1000\n");
        return 2;
    }
    seed = tu_seed(argc >= 2 ? argv[1] : "test_crash");
    const struct CMUnitTest kill_all_t[] = {cmocka_unit_test_teardown(crash_kill_all, teardown)};
    const struct CMUnitTest snapshot_t[] = {
        cmocka_unit_test_teardown(crash_snapshot_durable, teardown)};
    const struct tu_group groups[] = {{"kill_all", kill_all_t, 1},
                                      {"snapshot_durable", snapshot_t, 1}};
    return tu_run_groups("test_crash", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
