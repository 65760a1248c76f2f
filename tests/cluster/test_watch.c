/*
 * Watch through real keeld processes: `test_watch <group>`, one ctest entry per group.
 */
#include <arpa/inet.h>
#include <poll.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "testutil.h"
#include "frame.h"
#include "keel/keel.h"

static struct keel *open_client(const struct tc_cluster *c, int member, const char *zone)
{
    char eps[512];
    tc_endpoints(c, member, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .zone = zone, .request_timeout_ms = 4000, .dial_timeout_ms = 500};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

static void wait_leader(struct keel *k)
{
    long long deadline = tc_now_ms() + 10000;
    while (tc_now_ms() < deadline) {
        Keel__StatusResponse *st = NULL;
        if (keel_status(k, NULL, &st) == 0) {
            uint64_t leader = st->leader;
            keel_free(st);
            if (leader != 0)
                return;
        }
        tu_sleep_ms(20);
    }
    fail_msg("no leader within 10 s");
}

static int64_t put(struct keel *k, const char *key, const char *val)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__PutRequest p = KEEL__PUT_REQUEST__INIT;
    p.key.data = (uint8_t *)key;
    p.key.len = strlen(key);
    p.value.data = (uint8_t *)val;
    p.value.len = strlen(val);
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &p;
    Keel__Response *resp = NULL;
    int rv = keel_do(k, &req, &resp);
    if (rv != 0)
        fail_msg("put %s: %s (%s)", key, keel_strerror(rv), keel_errmsg());
    int64_t rev = resp->header->revision;
    keel_free(resp);
    return rev;
}

/* ---- event collection ---- */

struct ev {
    int type;
    char key[64];
    char value[64];
    int64_t mod, create, version;
    long long at_ms; /* when the callback had it */
    bool has_prev;
    char prev[64];
};

struct collector {
    pthread_mutex_t mu;
    struct ev *v;
    size_t n, cap;
    int status; /* final status, 0 while running */
    int ended;
    int64_t compact;
};

static void collector_init(struct collector *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
}

static void collector_close(struct collector *c)
{
    free(c->v);
    pthread_mutex_destroy(&c->mu);
}

static void copy_str(char *dst, const ProtobufCBinaryData *b)
{
    size_t n = b->len < 63 ? b->len : 63;
    if (n)
        memcpy(dst, b->data, n);
    dst[n] = '\0';
}

static void on_events(struct keel_watch *w, int status, const Keel__Event *const *events, size_t n,
                      int64_t revision, void *data)
{
    struct collector *c = data;
    (void)revision;
    pthread_mutex_lock(&c->mu);
    if (status != 0) {
        c->status = status;
        c->ended = 1;
        c->compact = keel_watch_compact_revision(w);
    }
    for (size_t i = 0; i < n; i++) {
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 1024;
            c->v = realloc(c->v, c->cap * sizeof(*c->v));
        }
        struct ev *e = &c->v[c->n++];
        memset(e, 0, sizeof(*e));
        e->type = events[i]->type;
        copy_str(e->key, &events[i]->kv->key);
        copy_str(e->value, &events[i]->kv->value);
        e->mod = events[i]->kv->mod_revision;
        e->create = events[i]->kv->create_revision;
        e->version = events[i]->kv->version;
        e->at_ms = tc_now_ms();
        if (events[i]->prev_kv != NULL) {
            e->has_prev = true;
            copy_str(e->prev, &events[i]->prev_kv->value);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static size_t count_of(struct collector *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static bool wait_count(struct collector *c, size_t n, int timeout_ms)
{
    long long deadline = tc_now_ms() + timeout_ms;
    while (count_of(c) < n && tc_now_ms() < deadline)
        tu_sleep_ms(10);
    return count_of(c) >= n;
}

static struct keel_watch *watch_prefix(struct keel *k, const char *prefix, int64_t start,
                                       bool prev_kv, struct collector *c)
{
    uint8_t end[64];
    size_t elen = keel_prefix_end(prefix, strlen(prefix), end);
    struct keel_watch_opts o = {
        .range_end = end, .range_end_len = elen, .start_revision = start, .prev_kv = prev_kv};
    struct keel_watch *w = NULL;
    int rv = keel_watch_open(k, prefix, strlen(prefix), &o, on_events, c, &w);
    if (rv != 0)
        fail_msg("watch %s: %s (%s)", prefix, keel_strerror(rv), keel_errmsg());
    return w;
}

/* Revisions strictly increasing across revisions, subs never repeated: no gap is checked
 * against a reference by the caller. */
static void assert_ordered(struct collector *c)
{
    for (size_t i = 1; i < c->n; i++) {
        if (c->v[i].mod < c->v[i - 1].mod)
            fail_msg("event %zu at revision %lld after %lld", i, (long long)c->v[i].mod,
                     (long long)c->v[i - 1].mod);
        if (c->v[i].mod == c->v[i - 1].mod && strcmp(c->v[i].key, c->v[i - 1].key) == 0)
            fail_msg("event %zu repeats %s at %lld", i, c->v[i].key, (long long)c->v[i].mod);
    }
}

static void assert_same(struct collector *a, struct collector *b)
{
    if (a->n != b->n)
        fail_msg("%zu events vs %zu", a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        if (a->v[i].type != b->v[i].type || a->v[i].mod != b->v[i].mod ||
            strcmp(a->v[i].key, b->v[i].key) != 0 || strcmp(a->v[i].value, b->v[i].value) != 0)
            fail_msg("event %zu differs: %s@%lld vs %s@%lld", i, a->v[i].key,
                     (long long)a->v[i].mod, b->v[i].key, (long long)b->v[i].mod);
    }
}

/* ---- groups ---- */

static void events_in_order(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "watch-order");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0, NULL);
    wait_leader(k);
    struct collector col;
    collector_init(&col);
    struct keel_watch *w = watch_prefix(k, "w/", 0, true, &col);
    int64_t r1 = put(k, "w/a", "1");
    int64_t r2 = put(k, "w/a", "2");
    assert_int_equal(keel_delete(k, "w/a", 3, NULL, NULL), 0);
    put(k, "other", "x"); /* outside the range */
    /* a txn writing two keys: two events at one revision */
    Keel__TxnRequest t = KEEL__TXN_REQUEST__INIT;
    Keel__PutRequest p1 = KEEL__PUT_REQUEST__INIT, p2 = KEEL__PUT_REQUEST__INIT;
    p1.key.data = (uint8_t *)"w/t1";
    p1.key.len = 4;
    p1.value.data = (uint8_t *)"x";
    p1.value.len = 1;
    p2 = p1;
    p2.key.data = (uint8_t *)"w/t2";
    Keel__RequestOp o1 = KEEL__REQUEST_OP__INIT, o2 = KEEL__REQUEST_OP__INIT;
    o1.request_case = o2.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    o1.request_put = &p1;
    o2.request_put = &p2;
    Keel__RequestOp *ops[] = {&o1, &o2};
    t.success = ops;
    t.n_success = 2;
    assert_int_equal(keel_txn(k, &t, NULL), 0);
    /* a lease revoke deleting attached keys */
    Keel__LeaseGrantResponse *lg = NULL;
    assert_int_equal(keel_lease_grant(k, 60, 0, &lg), 0);
    int64_t lease = lg->id;
    keel_free(lg);
    struct keel_put_opts po = {.lease = lease};
    assert_int_equal(keel_put(k, "w/l1", 4, "a", 1, &po, NULL), 0);
    assert_int_equal(keel_put(k, "w/l2", 4, "b", 1, &po, NULL), 0);
    assert_int_equal(keel_lease_revoke(k, lease), 0);

    assert_true(wait_count(&col, 9, 5000));
    tu_sleep_ms(100);
    assert_int_equal(count_of(&col), 9);
    struct ev *e = col.v;
    assert_int_equal(e[0].type, KEEL__EVENT__EVENT_TYPE__PUT);
    assert_int_equal(e[0].mod, r1);
    assert_int_equal(e[0].version, 1);
    assert_false(e[0].has_prev);
    assert_int_equal(e[1].mod, r2);
    assert_int_equal(e[1].create, r1);
    assert_true(e[1].has_prev);
    assert_string_equal(e[1].prev, "1");
    assert_int_equal(e[2].type, KEEL__EVENT__EVENT_TYPE__DELETE);
    assert_string_equal(e[2].prev, "2");
    assert_int_equal(e[3].mod, e[4].mod); /* the txn */
    assert_string_equal(e[3].key, "w/t1");
    assert_string_equal(e[4].key, "w/t2");
    assert_int_equal(e[7].type, KEEL__EVENT__EVENT_TYPE__DELETE); /* the revoke */
    assert_int_equal(e[8].type, KEEL__EVENT__EVENT_TYPE__DELETE);
    assert_int_equal(e[7].mod, e[8].mod);
    assert_ordered(&col);

    /* From an old revision: exactly the same history again, on a follower this time. */
    struct collector old;
    collector_init(&old);
    struct keel *k3 = open_client(&c, 3, NULL);
    struct keel_watch *w2 = watch_prefix(k3, "w/", r1, true, &old);
    assert_true(wait_count(&old, 9, 5000));
    tu_sleep_ms(100);
    assert_same(&col, &old);

    /* Compacted: canceled with the compacted revision. */
    assert_int_equal(keel_compact(k, r2 + 1), 0);
    struct collector cmp;
    collector_init(&cmp);
    watch_prefix(k, "w/", r1, false, &cmp);
    long long deadline = tc_now_ms() + 5000;
    while (!cmp.ended && tc_now_ms() < deadline)
        tu_sleep_ms(10);
    assert_true(cmp.ended);
    assert_int_equal(cmp.status, KEEL_ECOMPACTED);
    assert_int_equal(cmp.compact, r2 + 1);

    keel_watch_close(k, w);
    keel_watch_close(k3, w2);
    keel_close(k3);
    keel_close(k);
    collector_close(&col);
    collector_close(&old);
    collector_close(&cmp);
    tc_cluster_close(&c);
}

static void follower_and_leader_agree(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "watch-agree");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0, NULL);
    wait_leader(k);
    struct collector cols[3];
    struct keel *ks[3];
    struct keel_watch *ws[3];
    for (int i = 0; i < 3; i++) {
        collector_init(&cols[i]);
        ks[i] = open_client(&c, i + 1, NULL);
        ws[i] = watch_prefix(ks[i], "f/", 0, true, &cols[i]);
    }
    tu_sleep_ms(200);
    for (int i = 0; i < 300; i++) {
        char key[32];
        snprintf(key, sizeof(key), "f/%d", i % 37);
        put(k, key, "v");
    }
    for (int i = 0; i < 3; i++)
        assert_true(wait_count(&cols[i], 300, 10000));
    tu_sleep_ms(100);
    assert_same(&cols[0], &cols[1]);
    assert_same(&cols[0], &cols[2]);
    for (int i = 0; i < 3; i++) {
        keel_watch_close(ks[i], ws[i]);
        keel_close(ks[i]);
        collector_close(&cols[i]);
    }
    keel_close(k);
    tc_cluster_close(&c);
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* The median of put -> event delays of c's events, given each revision's send time. */
static long long median_delay(struct collector *c, const int64_t *revs, const long long *sent,
                              int n)
{
    long long d[64];
    assert_true(n <= 64);
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < n; i++) {
        d[i] = -1;
        for (size_t j = 0; j < c->n; j++)
            if (c->v[j].mod == revs[i])
                d[i] = c->v[j].at_ms - sent[i];
        if (d[i] < 0)
            fail_msg("revision %lld never arrived", (long long)revs[i]);
    }
    pthread_mutex_unlock(&c->mu);
    qsort(d, (size_t)n, sizeof(*d), cmp_ll);
    return d[n / 2];
}

/* A follower learns a commit from the leader's next message; at a few writes per second that
 * used to be the next write or heartbeat, and its watches lagged by as much. With heartbeats
 * every 500 ms and a put every 100 ms, a follower's watch would see each put about 100 ms late;
 * it must see it about as soon as the leader's does (compared in one run, medians of 30). */
static void follower_delivers_promptly(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "watch-prompt");
    c.heartbeat_ms = 500;
    c.election_ms = 5000;
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0, NULL);
    wait_leader(k);
    int leader = tc_find_leader(&c, k, 0, 10000);
    assert_true(leader > 0);
    int follower = leader % 3 + 1;
    struct keel *kl = open_client(&c, leader, NULL), *kf = open_client(&c, follower, NULL);
    struct collector cl, cf;
    collector_init(&cl);
    collector_init(&cf);
    struct keel_watch *wl = watch_prefix(kl, "p/", 0, false, &cl);
    struct keel_watch *wf = watch_prefix(kf, "p/", 0, false, &cf);
    tu_sleep_ms(300);
    enum { N = 30 };
    int64_t revs[N];
    long long sent[N];
    for (int i = 0; i < N; i++) {
        sent[i] = tc_now_ms();
        revs[i] = put(k, "p/k", "v");
        tu_sleep_ms(100);
    }
    assert_true(wait_count(&cl, N, 10000));
    assert_true(wait_count(&cf, N, 10000));
    long long ml = median_delay(&cl, revs, sent, N), mf = median_delay(&cf, revs, sent, N);
    printf("put -> event median: leader-served %lld ms, follower-served %lld ms\n", ml, mf);
    if (mf - ml >= 40)
        fail_msg("the follower's watch lags the leader's by %lld ms (median)", mf - ml);
    keel_watch_close(kl, wl);
    keel_watch_close(kf, wf);
    keel_close(kl);
    keel_close(kf);
    collector_close(&cl);
    collector_close(&cf);
    keel_close(k);
    tc_cluster_close(&c);
}

static void resume_after_member_killed(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "watch-resume");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0, NULL);
    wait_leader(k);
    /* The watcher lives in zone z2: its watch is served by m2. */
    struct keel *wk = open_client(&c, 0, "z2");
    struct collector col;
    collector_init(&col);
    struct keel_watch *w = watch_prefix(wk, "r/", 0, false, &col);
    tu_sleep_ms(200);
    int n = 0;
    for (; n < 300; n++) {
        char key[32];
        snprintf(key, sizeof(key), "r/%05d", n);
        put(k, key, "v");
    }
    assert_true(wait_count(&col, 300, 5000));
    tc_stop(&c, 2, SIGKILL);
    /* Writes go on (through whatever member leads now) while the watch moves. */
    for (; n < 1500; n++) {
        char key[32];
        snprintf(key, sizeof(key), "r/%05d", n);
        int rv = keel_put(k, key, strlen(key), "v", 1, NULL, NULL);
        if (rv != 0 && rv != KEEL_EUNKNOWN)
            fail_msg("put: %s", keel_strerror(rv));
    }
    /* The reference: the full history replayed from revision 1 on a live member. */
    struct collector ref;
    collector_init(&ref);
    struct keel *rk = open_client(&c, 1, NULL);
    struct keel_watch *rw = watch_prefix(rk, "r/", 1, false, &ref);
    assert_true(wait_count(&ref, 1500, 10000));
    tu_sleep_ms(200);
    size_t want = count_of(&ref);
    assert_true(wait_count(&col, want, 15000));
    tu_sleep_ms(200);
    assert_ordered(&col);
    assert_same(&col, &ref);
    keel_watch_close(rk, rw);
    keel_watch_close(wk, w);
    keel_close(rk);
    keel_close(wk);
    keel_close(k);
    collector_close(&col);
    collector_close(&ref);
    tc_cluster_close(&c);
}

/* ---- a raw watcher that stops reading ---- */

static int dial(const char *addr)
{
    char host[32];
    snprintf(host, sizeof(host), "%s", addr);
    char *colon = strrchr(host, ':');
    *colon = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void send_msg(int fd, const ProtobufCMessage *m)
{
    uint8_t buf[1024];
    size_t n = keel_frame_pack(m, buf);
    assert_int_equal(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

static long rss_anon_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

struct load {
    struct tc_cluster *c;
    int txns;
    int per_txn;
    volatile int done;
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    struct keel *k = open_client(l->c, 0, NULL);
    static char value[1001];
    memset(value, 'v', 1000);
    for (int t = 0; t < l->txns; t++) {
        Keel__PutRequest puts[128];
        Keel__RequestOp ops[128];
        Keel__RequestOp *opp[128];
        char keys[128][32];
        for (int i = 0; i < l->per_txn; i++) {
            keel__put_request__init(&puts[i]);
            snprintf(keys[i], sizeof(keys[i]), "s/%04d/%03d", t, i);
            puts[i].key.data = (uint8_t *)keys[i];
            puts[i].key.len = strlen(keys[i]);
            puts[i].value.data = (uint8_t *)value;
            puts[i].value.len = 1000;
            keel__request_op__init(&ops[i]);
            ops[i].request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
            ops[i].request_put = &puts[i];
            opp[i] = &ops[i];
        }
        Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
        txn.success = opp;
        txn.n_success = (size_t)l->per_txn;
        int rv = keel_txn(k, &txn, NULL);
        if (rv != 0) {
            fprintf(stderr, "txn %d: %s (%s)\n", t, keel_strerror(rv), keel_errmsg());
            break;
        }
    }
    keel_close(k);
    l->done = 1;
    return NULL;
}

static void slow_consumer_bounded(void **state)
{
    (void)state;
    /* ASan holds freed memory in a quarantine (256 MB by default), which would hide what the
     * member really keeps: keep it small for the members started here. */
    free(tu_asan_options_add("quarantine_size_mb=4:thread_local_quarantine_size_kb=64"));
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "watch-slow");
    c.snapshot_threshold = 64;
    c.snapshot_trailing = 64;
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0, NULL);
    wait_leader(k);
    keel_close(k);

    /* A watcher on m1 that reads its handshake and creation, then nothing. */
    int fd = dial(c.m[1].client);
    int rcvbuf = 64 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    Keel__Hello hello = KEEL__HELLO__INIT;
    hello.protocol_version = 1;
    send_msg(fd, &hello.base);
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__WatchCreateRequest wc = KEEL__WATCH_CREATE_REQUEST__INIT;
    wc.key.data = (uint8_t *)"s/";
    wc.key.len = 2;
    wc.range_end.data = (uint8_t *)"s0";
    wc.range_end.len = 2;
    req.id = 5;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &wc;
    send_msg(fd, &req.base);
    tu_sleep_ms(300);
    long base = rss_anon_kb(c.m[1].pid);

    /* 100,000 events of 1 KB while it does not read. */
    struct load l = {.c = &c, .txns = 1000, .per_txn = 100};
    pthread_t th;
    pthread_create(&th, NULL, load_main, &l);
    long peak = base;
    long long deadline = tc_now_ms() + 120000;
    while (!l.done && tc_now_ms() < deadline) {
        long r = rss_anon_kb(c.m[1].pid);
        if (r > peak)
            peak = r;
        tu_sleep_ms(50);
    }
    pthread_join(th, NULL);
    tu_sleep_ms(300);
    long r = rss_anon_kb(c.m[1].pid);
    if (r > peak)
        peak = r;
    printf("m1 anonymous RSS: %ld kB before, peak %ld kB while 100 MB of events were written to "
           "a watcher that did not read (growth %ld kB)\n",
           base, peak, peak - base);
    /* Bound: the 8 MiB send cap, a catch-up chunk and raft's in-memory log of at most
     * threshold + trailing entries, far below the 100 MB the stalled stream would hold. */
    assert_true(peak - base < 64 * 1024);

    /* Now read everything: 100,000 events, in order, none twice. */
    struct keel_frame_decoder dec;
    keel_frame_decoder_init(&dec, 16u << 20);
    size_t events = 0;
    int64_t last_rev = 0;
    char last_key[32] = "";
    int hello_seen = 0;
    deadline = tc_now_ms() + 120000;
    while (events < 100000 && tc_now_ms() < deadline) {
        const uint8_t *payload;
        size_t len;
        int f = keel_frame_decoder_next(&dec, &payload, &len);
        assert_true(f >= 0);
        if (f == 0) {
            uint8_t *space;
            size_t cap;
            assert_int_equal(keel_frame_decoder_space(&dec, 1 << 16, &space, &cap), 0);
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 5000) != 1)
                break;
            ssize_t n = recv(fd, space, cap, 0);
            assert_true(n > 0);
            keel_frame_decoder_commit(&dec, (size_t)n);
            continue;
        }
        if (!hello_seen) {
            Keel__HelloResponse *hr = keel__hello_response__unpack(NULL, len, payload);
            assert_non_null(hr);
            keel__hello_response__free_unpacked(hr, NULL);
            hello_seen = 1;
            continue;
        }
        Keel__Response *resp = keel__response__unpack(NULL, len, payload);
        assert_non_null(resp);
        if (resp->watch != NULL) {
            assert_false(resp->watch->canceled);
            for (size_t i = 0; i < resp->watch->n_events; i++) {
                Keel__Event *e = resp->watch->events[i];
                char key[32];
                copy_str(key, &e->kv->key);
                if (e->kv->mod_revision < last_rev ||
                    (e->kv->mod_revision == last_rev && strcmp(key, last_key) <= 0))
                    fail_msg("event %zu out of order or repeated: %s@%lld after %s@%lld", events,
                             key, (long long)e->kv->mod_revision, last_key, (long long)last_rev);
                last_rev = e->kv->mod_revision;
                memcpy(last_key, key, sizeof(key));
                events++;
            }
        }
        keel__response__free_unpacked(resp, NULL);
    }
    keel_frame_decoder_close(&dec);
    close(fd);
    assert_int_equal(events, 100000);
    tc_cluster_close(&c);
}

static void many_watchers(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "watch-many");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0, NULL);
    wait_leader(k);
    struct keel *wk = open_client(&c, 2, NULL);
    enum { N = 10000 };
    static struct collector cols[100];
    struct keel_watch **ws = calloc(N, sizeof(*ws));
    /* 10,000 watchers on one member: 100 keys, 100 watchers each (a mix of key and prefix
     * watches), every watcher of a key sharing one collector. */
    for (int i = 0; i < 100; i++)
        collector_init(&cols[i]);
    long long t0 = tc_now_ms();
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "m/%02d", i % 100);
        struct keel_watch_opts o = {0};
        uint8_t end[32];
        if (i % 2) {
            o.range_end = end;
            o.range_end_len = keel_prefix_end(key, strlen(key), end);
        }
        int rv = keel_watch_open(wk, key, strlen(key), &o, on_events, &cols[i % 100], &ws[i]);
        if (rv != 0)
            fail_msg("watch %d: %s (%s)", i, keel_strerror(rv), keel_errmsg());
    }
    printf("10000 watches created in %lld ms\n", tc_now_ms() - t0);
    tu_sleep_ms(500);
    for (int i = 0; i < 100; i++) {
        char key[32];
        snprintf(key, sizeof(key), "m/%02d", i);
        put(k, key, "x");
    }
    for (int i = 0; i < 100; i++)
        if (!wait_count(&cols[i], 100, 20000))
            fail_msg("key %d: %zu of 100 watchers saw the event", i, count_of(&cols[i]));
    tu_sleep_ms(200);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(count_of(&cols[i]), 100);
        collector_close(&cols[i]);
    }
    for (int i = 0; i < N; i++)
        keel_watch_close(wk, ws[i]);
    free(ws);
    keel_close(wk);
    keel_close(k);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest order[] = {cmocka_unit_test(events_in_order)};
    const struct CMUnitTest agree[] = {cmocka_unit_test(follower_and_leader_agree)};
    const struct CMUnitTest prompt[] = {cmocka_unit_test(follower_delivers_promptly)};
    const struct CMUnitTest resume[] = {cmocka_unit_test(resume_after_member_killed)};
    const struct CMUnitTest slow[] = {cmocka_unit_test(slow_consumer_bounded)};
    const struct CMUnitTest many[] = {cmocka_unit_test(many_watchers)};
    const struct tu_group groups[] = {
        TU_GROUP(order),  TU_GROUP(agree), TU_GROUP(prompt),
        TU_GROUP(resume), TU_GROUP(slow),  TU_GROUP(many),
    };
    return tu_run_groups("test_watch", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
