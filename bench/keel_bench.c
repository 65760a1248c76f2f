/*
 * keel-bench: load generator after etcd's benchmark tool.
 *
 *   keel-bench [flags] put | range | txn-put | txn-mixed | mixed | watch | watch-latency
 *                      | lease-keepalive | lease-churn
 *
 * watch: --watchers W watches over the whole key space (spread over the --conns clients), while
 * the --clients writers put --total keys (at --rate); reports events delivered per second.
 * watch-latency: the same, each value carrying its put's send time; reports put -> event
 * latency percentiles, measured on this process's clock.
 *
 * lease-keepalive: grants --leases leases (--lease-ttl, default 600 s, long enough not to expire
 * during the run; --lease-window grants in flight), then the --clients clients send LeaseKeepAlive
 * round-robin over them, each keeping one in flight (unpaced unless --rate, as put), for --total
 * or --duration; reports keep-alives per second and their latency. An answer with TTL <= 0 (the
 * lease is gone) counts as an error (LEASE_NOT_FOUND). The leases are revoked at the end (best
 * effort, not timed).
 * lease-churn: watches a prefix of its own, grants --leases leases with --lease-ttl (default 2 s;
 * the server clamps it up to its minimum and says so), attaches one key under the prefix to each
 * (a put with the lease, right after its grant is acknowledged), then waits until every attached
 * key's DELETE event has arrived, or --lease-timeout seconds past the last lease's due time. A
 * lease is due at (its grant's acknowledgement + its granted TTL) on this process's clock; its
 * expiry lag is (the DELETE event's arrival - due), so the server's own clock starts a little
 * earlier and a lag can be slightly negative. The summary is of the lags (requests = leases
 * expired; requests/sec = expiries per second from the first due time to the last DELETE).
 * Meanwhile one more client of its own puts to one key in a closed loop; the largest gap between
 * two of its completions while waiting is the "max write stall". Leases left are revoked.
 *
 * One libuv loop drives --conns asynchronous clients (each with its own connections) and
 * --clients logical clients, each keeping one request in flight (closed loop) unless --rate
 * paces them. Every latency sample is kept, so percentiles are exact.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <uv.h>

#include "keel/keel.h"
#include "scrape.h"
#include "stats.h"

#ifndef KEEL_GIT_REV
#define KEEL_GIT_REV "unknown"
#endif

enum workload {
    W_PUT,
    W_RANGE,
    W_TXN_PUT,
    W_TXN_MIXED,
    W_MIXED,
    W_WATCH,
    W_WATCH_LATENCY,
    W_LEASE_KEEPALIVE,
    W_LEASE_CHURN
};
static const char *workload_names[] = {"put",           "range",           "txn-put",
                                       "txn-mixed",     "mixed",           "watch",
                                       "watch-latency", "lease-keepalive", "lease-churn"};
#define N_WORKLOADS 9

#define LEASE_TTL_KEEPALIVE 600 /* s: lease-keepalive's default, outlives any run */
#define LEASE_TTL_CHURN     2   /* s: lease-churn's default, keeld's minimum by default */

struct config {
    enum workload workload;
    const char *endpoints;
    const char *user;     /* --user NAME[:PASSWORD]: every request carries its token */
    const char *password; /* --password */
    int conns;
    int clients;
    uint64_t total;
    double duration; /* seconds; 0: use total */
    double rate;     /* requests/s over all clients; 0: unlimited */
    int key_size;
    int val_size;
    uint64_t key_space;
    int sequential;
    const char *zone;
    int serializable;
    double read_ratio;
    uint64_t seed;
    int json;
    uint32_t timeout_ms;
    int watchers;
    uint64_t leases;      /* lease workloads: leases granted */
    int64_t lease_ttl;    /* s; 0: the workload's default */
    int lease_window;     /* grants, attaching puts and revokes in flight */
    double lease_timeout; /* lease-churn: s past the last due time */
    int stall_writer;     /* lease-churn: the concurrent writer */
    const char *timeline; /* a line per answer: "client sent_us answered_us ok" (failover.sh) */
    const char *metrics;  /* a member's /metrics URL, scraped before and after the run */
    /* TLS (keel.h; etcdctl's --cacert --cert --key --insecure-skip-tls-verify) */
    const char *cacert, *cert, *key;
    int insecure_skip_tls_verify;
};

#define MAX_ZONES 16

struct zone_stats {
    char zone[64];
    struct keel_stats stats;
};

struct bench;

/* One lease of the lease workloads. */
struct lease_rec {
    int64_t id;      /* 0: not granted */
    int64_t ttl;     /* s, as granted */
    uint64_t t0;     /* the send time of its request in flight */
    uint64_t ack_ns; /* its grant was acknowledged */
    uint64_t del_ns; /* lease-churn: its key's DELETE event arrived */
    int attached;    /* lease-churn: its key was put with it */
};

enum lease_phase { LP_NONE, LP_GRANT, LP_WARM, LP_RUN, LP_WAIT, LP_REVOKE, LP_DONE };

struct client {
    struct bench *b;
    int idx;
    uint64_t t0;
    struct client *next_idle; /* waiting for a rate token */
};

struct bench {
    struct config cfg;
    uv_loop_t loop;
    struct keel_aclient **acs;
    struct client *clients;
    uv_timer_t pacer;
    uv_timer_t progress;
    int progress_on;
    struct client *idle; /* paced clients waiting */
    double tokens;
    uint64_t paced_at; /* uv_hrtime of the last pacing tick (0: none yet) */
    uint64_t issued, completed, succeeded;
    FILE *timeline;
    struct scrape before, after; /* --metrics */
    int scraped;                 /* both scrapes came back */
    uint64_t start_ns, end_ns;
    uint64_t seq_key;
    uint64_t rng;
    int active;
    uint8_t *value;
    struct keel_stats stats;
    /* per target zone: member id -> zone */
    uint64_t member_ids[64];
    char member_zone[64][64];
    int n_members;
    struct zone_stats zones[MAX_ZONES];
    int n_zones;
    /* watch workloads */
    struct keel_watch **watches;
    int watches_created;
    uint64_t events;          /* events delivered to all watchers */
    uint64_t events_expected; /* watchers x successful puts, once the writers are done */
    struct keel_stats event_lat;
    uv_timer_t settle; /* bounds the wait for the last events */
    int writers_done;
    int closing;
    /* lease workloads */
    struct lease_rec *leases;
    enum lease_phase lphase;
    uint64_t lnext; /* the next lease the phase goes to */
    int linflight;
    uint64_t granted, attached, expired, revoked, revoke_gone, revoke_errors;
    int64_t granted_ttl; /* the first grant's answer */
    int64_t *ka_ids;     /* lease-keepalive: the leases granted */
    uint64_t n_ka, ka_next;
    struct keel_stats grant_lat;
    uint64_t grant_start_ns, grant_end_ns;
    char lprefix[64]; /* lease-churn's keys */
    int lwatch_created;
    uint64_t first_due_ns, last_due_ns, last_del_ns;
    /* lease-churn's concurrent writer, on a client of its own */
    struct keel_aclient *stall_ac;
    int stall_on;
    uint64_t stall_t0, stall_puts, stall_errors;
    struct keel_gap gap;
    struct keel_stats stall_lat;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(struct bench *b)
{
    uint64_t z = (b->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A key of cfg.key_size bytes for index i: big-endian digits padded with zeros, as etcd does. */
static void make_key(struct bench *b, uint8_t *out)
{
    uint64_t i = b->cfg.sequential ? b->seq_key++ % b->cfg.key_space : rnd(b) % b->cfg.key_space;
    int n = b->cfg.key_size;
    memset(out, 0, (size_t)n);
    for (int p = n - 1; p >= 0 && i > 0; p--) {
        out[p] = (uint8_t)i;
        i >>= 8;
    }
}

static bool finished(struct bench *b)
{
    if (b->cfg.duration > 0)
        return (double)(now_ns() - b->start_ns) / 1e9 >= b->cfg.duration;
    return b->issued >= b->cfg.total;
}

static struct zone_stats *zone_for(struct bench *b, uint64_t member)
{
    const char *z = "?";
    for (int i = 0; i < b->n_members; i++)
        if (b->member_ids[i] == member)
            z = b->member_zone[i];
    for (int i = 0; i < b->n_zones; i++)
        if (strcmp(b->zones[i].zone, z) == 0)
            return &b->zones[i];
    if (b->n_zones == MAX_ZONES)
        return NULL;
    struct zone_stats *zs = &b->zones[b->n_zones++];
    snprintf(zs->zone, sizeof(zs->zone), "%s", z);
    keel_stats_init(&zs->stats);
    return zs;
}

static void issue(struct client *c);
static void progress(uv_timer_t *t);
static bool watching(const struct bench *b);

#define STAMP_MARK     "kbench\x01\x02"
#define STAMP_MARK_LEN 8
#define STAMP_LEN      (STAMP_MARK_LEN + 8)

static void on_response(int status, const Keel__Response *resp, void *data)
{
    struct client *c = data;
    struct bench *b = c->b;
    double lat = (double)(now_ns() - c->t0) / 1e9;
    b->completed++;
    if (b->timeline != NULL) {
        /* Wall-clock time: the script that kills a member compares it with its own. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long end = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
        fprintf(b->timeline, "%d %lld %lld %d\n", c->idx, end - (long long)(lat * 1e6), end,
                status == 0);
    }
    if (status == 0 && b->cfg.workload == W_LEASE_KEEPALIVE &&
        (resp->body_case != KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE ||
         resp->lease_keep_alive->ttl <= 0)) {
        /* TTL 0 is the server's answer for a lease unknown, revoked or expired: a failure here. */
        keel_stats_error(&b->stats, KEEL__ERROR_CODE__LEASE_NOT_FOUND);
    } else if (status == 0) {
        b->succeeded++;
        keel_stats_add(&b->stats, lat);
        if (resp->header != NULL && b->cfg.zone != NULL) {
            struct zone_stats *zs = zone_for(b, resp->header->member_id);
            if (zs)
                keel_stats_add(&zs->stats, lat);
        }
    } else {
        keel_stats_error(&b->stats, resp->error ? (int)resp->error->code : 63);
    }
    issue(c);
}

static void closed(void *data)
{
    (void)data;
}

static void shut_down(struct bench *b);
static void start_revoke(struct bench *b);

static bool watching(const struct bench *b)
{
    return b->cfg.workload == W_WATCH || b->cfg.workload == W_WATCH_LATENCY;
}

static void settle_timeout(uv_timer_t *t)
{
    struct bench *b = t->data;
    fprintf(stderr, "keel-bench: %" PRIu64 " of %" PRIu64 " events arrived before the timeout\n",
            b->events, b->events_expected);
    shut_down(b);
}

/* The last client finished: release every handle so uv_run returns. */
static void client_done(struct bench *b)
{
    if (--b->active > 0)
        return;
    if (watching(b)) {
        /* Writers are done; the run ends when every watcher has seen every write. */
        b->writers_done = 1;
        b->events_expected = b->succeeded * (uint64_t)b->cfg.watchers;
        if (b->events >= b->events_expected) {
            shut_down(b);
            return;
        }
        uv_timer_start(&b->settle, settle_timeout, 30000, 0);
        return;
    }
    if (b->cfg.workload == W_LEASE_KEEPALIVE) {
        b->end_ns = now_ns(); /* the revokes are not timed */
        start_revoke(b);
        return;
    }
    shut_down(b);
}

static void shut_down(struct bench *b)
{
    if (b->closing)
        return;
    b->closing = 1;
    if (b->end_ns == 0)
        b->end_ns = now_ns();
    if (b->progress_on) {
        progress(&b->progress);
        fputc('\n', stderr);
    }
    uv_close((uv_handle_t *)&b->pacer, NULL);
    uv_close((uv_handle_t *)&b->progress, NULL);
    uv_close((uv_handle_t *)&b->settle, NULL);
    if (b->stall_ac != NULL)
        keel_aclient_close(b->stall_ac, closed, NULL);
    /* Closing a client ends its watches (final callbacks with KEEL_ECANCELED). */
    for (int i = 0; i < b->cfg.conns; i++)
        keel_aclient_close(b->acs[i], closed, NULL);
}

static void start_writers(struct bench *b);

static void on_watch(struct keel_watch *w, int status, const Keel__Event *const *events, size_t n,
                     int64_t revision, void *data)
{
    struct bench *b = data;
    (void)w;
    (void)revision;
    if (status != 0) {
        if (status != KEEL_ECANCELED)
            fprintf(stderr, "keel-bench: a watch ended: %s\n", keel_strerror(status));
        return;
    }
    if (n == 0 && !b->closing && b->watches_created < b->cfg.watchers) {
        /* created notice */
        if (++b->watches_created == b->cfg.watchers)
            start_writers(b);
        return;
    }
    uint64_t now = now_ns();
    for (size_t i = 0; i < n; i++) {
        const ProtobufCBinaryData *v = &events[i]->kv->value;
        if (events[i]->type != KEEL__EVENT__EVENT_TYPE__PUT || v->len < STAMP_LEN ||
            memcmp(v->data, STAMP_MARK, STAMP_MARK_LEN) != 0)
            continue; /* not a put of this run */
        b->events++;
        if (b->cfg.workload == W_WATCH_LATENCY) {
            uint64_t sent;
            memcpy(&sent, v->data + STAMP_MARK_LEN, sizeof(sent));
            keel_stats_add(&b->event_lat, (double)(now - sent) / 1e9);
        }
    }
    if (b->writers_done && b->events >= b->events_expected)
        shut_down(b);
}

static void send_one(struct client *c)
{
    struct bench *b = c->b;
    uint8_t key[256];
    make_key(b, key);
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    Keel__RangeRequest range = KEEL__RANGE_REQUEST__INIT;
    Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
    Keel__Compare cmp = KEEL__COMPARE__INIT;
    Keel__Compare *cmps[1] = {&cmp};
    Keel__RequestOp op = KEEL__REQUEST_OP__INIT;
    Keel__RequestOp *ops[1] = {&op};
    Keel__LeaseKeepAliveRequest ka = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
    put.key.data = key;
    put.key.len = (size_t)b->cfg.key_size;
    put.value.data = b->value;
    put.value.len = (size_t)b->cfg.val_size;
    uint8_t stamped[1 << 16];
    if (watching(b)) {
        /* A mark and the send time ride in the value: the watcher counts only this run's puts
         * (a watch on a follower may start behind earlier writes) and measures put -> event. */
        uint64_t t = now_ns();
        size_t n =
            (size_t)b->cfg.val_size < sizeof(stamped) ? (size_t)b->cfg.val_size : sizeof(stamped);
        memcpy(stamped, b->value, n);
        memcpy(stamped, STAMP_MARK, STAMP_MARK_LEN);
        memcpy(stamped + STAMP_MARK_LEN, &t, sizeof(t));
        put.value.data = stamped;
        put.value.len = n;
    }
    range.key = put.key;
    range.serializable = b->cfg.serializable;
    bool read = (double)(rnd(b) % 1000000) / 1e6 < b->cfg.read_ratio;
    switch (b->cfg.workload) {
    case W_PUT:
    case W_WATCH:
    case W_WATCH_LATENCY:
        req.body_case = KEEL__REQUEST__BODY_PUT;
        req.put = &put;
        break;
    case W_RANGE:
        req.body_case = KEEL__REQUEST__BODY_RANGE;
        req.range = &range;
        break;
    case W_MIXED:
        if (read) {
            req.body_case = KEEL__REQUEST__BODY_RANGE;
            req.range = &range;
        } else {
            req.body_case = KEEL__REQUEST__BODY_PUT;
            req.put = &put;
        }
        break;
    case W_TXN_PUT:
    case W_TXN_MIXED:
        /* A compare on the key's mod_revision that holds, then the operation: the compare is
         * evaluated for real on every request. */
        cmp.key = put.key;
        cmp.target = KEEL__COMPARE__COMPARE_TARGET__MOD;
        cmp.result = KEEL__COMPARE__COMPARE_RESULT__LESS;
        cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_MOD_REVISION;
        cmp.mod_revision = INT64_MAX;
        txn.compare = cmps;
        txn.n_compare = 1;
        txn.success = ops;
        txn.n_success = 1;
        if (b->cfg.workload == W_TXN_MIXED && read) {
            op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
            op.request_range = &range;
        } else {
            op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
            op.request_put = &put;
        }
        req.body_case = KEEL__REQUEST__BODY_TXN;
        req.txn = &txn;
        break;
    case W_LEASE_KEEPALIVE:
        /* Round-robin over the leases granted. */
        ka.id = b->ka_ids[b->ka_next++ % b->n_ka];
        req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
        req.lease_keep_alive = &ka;
        break;
    case W_LEASE_CHURN:
        return; /* its requests are the lease phases' own */
    }
    b->issued++;
    c->t0 = now_ns();
    struct keel_aclient *ac = b->acs[c->idx % b->cfg.conns];
    int rv = keel_aclient_request(ac, &req, b->cfg.timeout_ms, on_response, c);
    if (rv != 0) {
        fprintf(stderr, "keel-bench: request refused: %s\n", keel_strerror(rv));
        b->completed++;
        keel_stats_error(&b->stats, 63);
        client_done(b);
    }
}

static void issue(struct client *c)
{
    struct bench *b = c->b;
    if (finished(b)) {
        client_done(b);
        return;
    }
    if (b->cfg.rate > 0) {
        if (b->tokens < 1) {
            c->next_idle = b->idle;
            b->idle = c;
            return;
        }
        b->tokens -= 1;
    }
    send_one(c);
}

static void pace(uv_timer_t *t)
{
    struct bench *b = t->data;
    /* Tokens for the time that really passed: a 1 ms timer fires late, and counting ticks lost
     * a tenth of the rate asked for. */
    uint64_t now = uv_hrtime();
    if (b->paced_at == 0)
        b->paced_at = now - 1000000;
    b->tokens += b->cfg.rate * (double)(now - b->paced_at) / 1e9;
    b->paced_at = now;
    if (b->tokens > b->cfg.rate / 100.0 + 1)
        b->tokens = b->cfg.rate / 100.0 + 1; /* at most 10 ms of burst */
    while (b->idle != NULL && b->tokens >= 1) {
        struct client *c = b->idle;
        b->idle = c->next_idle;
        if (finished(b)) {
            client_done(b);
            continue;
        }
        b->tokens -= 1;
        send_one(c);
    }
    if (finished(b)) {
        while (b->idle != NULL) {
            b->idle = b->idle->next_idle;
            client_done(b);
        }
    }
}

static void progress(uv_timer_t *t)
{
    struct bench *b = t->data;
    double frac = b->cfg.duration > 0 ? (double)(now_ns() - b->start_ns) / 1e9 / b->cfg.duration
                                      : (double)b->completed / (double)b->cfg.total;
    if (frac > 1)
        frac = 1;
    int bars = (int)(frac * 40);
    fprintf(stderr, "\r %3d%% [", (int)(frac * 100));
    for (int i = 0; i < 40; i++)
        fputc(i < bars ? '#' : ' ', stderr);
    fprintf(stderr, "] %" PRIu64 " done", b->completed);
}

/* The TLS options of c into o. */
static void tls_options(const struct config *c, struct keel_options *o)
{
    o->ca_file = c->cacert;
    o->cert_file = c->cert;
    o->key_file = c->key;
    o->insecure_skip_verify = c->insecure_skip_tls_verify != 0;
}

/* Learn which member is in which zone, for the per-zone report. */
static void learn_members(struct bench *b)
{
    struct keel_options o = {.endpoints = b->cfg.endpoints};
    tls_options(&b->cfg, &o);
    struct keel *k;
    if (keel_open(&k, &o) != 0)
        return;
    Keel__MemberListResponse *ml = NULL;
    if (keel_member_list(k, &ml) == 0) {
        for (size_t i = 0; i < ml->n_members && b->n_members < 64; i++) {
            b->member_ids[b->n_members] = ml->members[i]->id;
            snprintf(b->member_zone[b->n_members], 64, "%s",
                     ml->members[i]->zone ? ml->members[i]->zone : "?");
            b->n_members++;
        }
        keel_free(ml);
    }
    keel_close(k);
}

/* Zone "z3" or "3" lives in 127.0.3.0/24; the bench takes .250 there. */
static int zone_source(const char *zone, char *out, size_t len)
{
    const char *p = zone;
    if (*p == 'z' || *p == 'Z')
        p++;
    char *end;
    long n = strtol(p, &end, 10);
    if (*p == '\0' || *end != '\0' || n < 1 || n > 254)
        return -1;
    snprintf(out, len, "127.0.%ld.250", n);
    return 0;
}

/* --user NAME[:PASSWORD]: one authentication through the synchronous client, whose token the
 * asynchronous ones start with (malloc'd; NULL after saying why); user (ulen bytes) and *pw
 * get the credentials, which they keep to authenticate again when it expires. */
static char *bench_token(const struct config *c, char *user, size_t ulen, const char **pw_out)
{
    const char *colon = strchr(c->user, ':'), *pw = c->password ? c->password : "";
    size_t n = colon != NULL && c->password == NULL ? (size_t)(colon - c->user) : strlen(c->user);
    if (n >= ulen) {
        fprintf(stderr, "keel-bench: --user: name too long\n");
        return NULL;
    }
    memcpy(user, c->user, n);
    user[n] = '\0';
    if (colon != NULL && c->password == NULL)
        pw = colon + 1;
    *pw_out = pw;
    struct keel_options o = {.endpoints = c->endpoints, .user = user, .password = pw};
    tls_options(c, &o); /* the login goes where the load goes, over TLS when it does */
    struct keel *k = NULL;
    int rv = keel_open(&k, &o);
    if (rv != 0) {
        fprintf(stderr, "keel-bench: --user %s: %s\n", user, keel_errmsg());
        return NULL;
    }
    char *token = keel_token(k);
    keel_close(k);
    return token;
}

static void usage(FILE *f)
{
    fprintf(
        f, "usage: keel-bench [flags] put|range|txn-put|txn-mixed|mixed|watch|watch-latency|\n"
           "                          lease-keepalive|lease-churn\n"
           "  --endpoints LIST      client addresses (default $KEEL_ENDPOINTS or 127.0.0.1:2379)\n"
           "  --conns N             client connections sets (default 1)\n"
           "  --clients N           requests kept in flight (default 1)\n"
           "  --total N             requests in all (default 10000)\n"
           "  --duration S          run for S seconds instead of --total\n"
           "  --rate R              requests per second over all clients (default unlimited)\n"
           "  --key-size B          (default 8)   --val-size B (default 256)\n"
           "  --key-space-size N    distinct keys (default 1)   --sequential-keys\n"
           "  --consistency l|s     for reads (default l)   --read-ratio F (mixed; default 0.5)\n"
           "  --zone Z              live in zone Z: source address 127.0.Z.250, same-zone reads\n"
           "  --user NAME[:PW]      authenticate (auth enabled): every request carries the token,\n"
           "                        renewed when it expires (--password PW for the password)\n"
           "  --watchers W          watch workloads: watchers over the key space (default 100)\n"
           "  --leases N            lease workloads: leases granted (default 10000)\n"
           "  --lease-ttl S         their TTL in seconds (default 600 for lease-keepalive, 2 for\n"
           "                        lease-churn; the server clamps it up to its minimum)\n"
           "  --lease-window N      grants, attaching puts and revokes in flight (default 256)\n"
           "  --lease-timeout S     lease-churn: wait at most S s past the last due time (default "
           "30)\n"
           "  --no-stall-writer     lease-churn: without the concurrent writer\n"
           "  --metrics URL         scrape a member's /metrics (keeld --listen-metrics) before\n"
           "                        and after the run and report the series that moved\n"
           "  --timeline FILE       a line per answer: client, sent and answered (wall clock,\n"
           "                        microseconds since the epoch), ok (0|1)\n"
           "  --seed N  --timeout-ms N  --json\n"
           "  --version, --help\n");
    fputs("  --cacert FILE         TLS: the CA (PEM) members' certificates must chain to; TLS\n"
          "                        is on with any of these four, or an https:// endpoint\n"
          "  --cert FILE           TLS: the client certificate (PEM), when members require one\n"
          "  --key FILE            TLS: its private key (PEM)\n"
          "  --insecure-skip-tls-verify   TLS without checking members' certificates\n",
          f);
}

static int parse(struct config *c, int argc, char **argv)
{
    memset(c, 0, sizeof(*c));
    c->endpoints = getenv("KEEL_ENDPOINTS") ? getenv("KEEL_ENDPOINTS") : "127.0.0.1:2379";
    c->conns = 1;
    c->clients = 1;
    c->total = 10000;
    c->key_size = 8;
    c->val_size = 256;
    c->key_space = 1;
    c->read_ratio = 0.5;
    c->seed = 1;
    c->timeout_ms = 10000;
    c->watchers = 100;
    c->leases = 10000;
    c->lease_window = 256;
    c->lease_timeout = 30;
    c->stall_writer = 1;
    static const struct option opts[] = {{"endpoints", required_argument, NULL, 'e'},
                                         {"conns", required_argument, NULL, 'C'},
                                         {"clients", required_argument, NULL, 'c'},
                                         {"total", required_argument, NULL, 'n'},
                                         {"duration", required_argument, NULL, 'd'},
                                         {"rate", required_argument, NULL, 'r'},
                                         {"key-size", required_argument, NULL, 'k'},
                                         {"val-size", required_argument, NULL, 'v'},
                                         {"key-space-size", required_argument, NULL, 's'},
                                         {"sequential-keys", no_argument, NULL, 'S'},
                                         {"zone", required_argument, NULL, 'z'},
                                         {"user", required_argument, NULL, 'U'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"consistency", required_argument, NULL, 'L'},
                                         {"read-ratio", required_argument, NULL, 'R'},
                                         {"seed", required_argument, NULL, 'x'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"timeout-ms", required_argument, NULL, 't'},
                                         {"watchers", required_argument, NULL, 'w'},
                                         {"leases", required_argument, NULL, 'N'},
                                         {"lease-ttl", required_argument, NULL, 'T'},
                                         {"lease-window", required_argument, NULL, 'W'},
                                         {"lease-timeout", required_argument, NULL, 'O'},
                                         {"no-stall-writer", no_argument, NULL, 'P'},
                                         {"timeline", required_argument, NULL, 'I'},
                                         {"metrics", required_argument, NULL, 'M'},
                                         {"cacert", required_argument, NULL, 'A'},
                                         {"cert", required_argument, NULL, 'E'},
                                         {"key", required_argument, NULL, 'K'},
                                         {"insecure-skip-tls-verify", no_argument, NULL, 'Y'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    char *end;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'e':
            c->endpoints = optarg;
            break;
        case 'I':
            c->timeline = optarg;
            break;
        case 'M':
            c->metrics = optarg;
            break;
        case 'A':
            c->cacert = optarg;
            break;
        case 'E':
            c->cert = optarg;
            break;
        case 'K':
            c->key = optarg;
            break;
        case 'Y':
            c->insecure_skip_tls_verify = 1;
            break;
        case 'V':
            printf("keel-bench %s\n", KEEL_VERSION);
            exit(0);
        case 'C':
            c->conns = atoi(optarg);
            break;
        case 'c':
            c->clients = atoi(optarg);
            break;
        case 'n':
            c->total = strtoull(optarg, &end, 10);
            break;
        case 'd':
            c->duration = strtod(optarg, &end);
            break;
        case 'r':
            c->rate = strtod(optarg, &end);
            break;
        case 'k':
            c->key_size = atoi(optarg);
            break;
        case 'v':
            c->val_size = atoi(optarg);
            break;
        case 's':
            c->key_space = strtoull(optarg, &end, 10);
            break;
        case 'S':
            c->sequential = 1;
            break;
        case 'z':
            c->zone = optarg;
            break;
        case 'U':
            c->user = optarg;
            break;
        case 'p':
            c->password = optarg;
            break;
        case 'L':
            if (strcmp(optarg, "s") != 0 && strcmp(optarg, "l") != 0) {
                fprintf(stderr, "keel-bench: --consistency must be l or s\n");
                return -1;
            }
            c->serializable = optarg[0] == 's';
            break;
        case 'R':
            c->read_ratio = strtod(optarg, &end);
            break;
        case 'x':
            c->seed = strtoull(optarg, &end, 10);
            break;
        case 'j':
            c->json = 1;
            break;
        case 't':
            c->timeout_ms = (uint32_t)atoi(optarg);
            break;
        case 'w':
            c->watchers = atoi(optarg);
            break;
        case 'N':
            c->leases = strtoull(optarg, &end, 10);
            if (*end != '\0' || optarg[0] == '-')
                c->leases = 0;
            break;
        case 'T':
            c->lease_ttl = strtoll(optarg, &end, 10);
            if (*end != '\0' || c->lease_ttl < 1)
                c->lease_ttl = -1;
            break;
        case 'W':
            c->lease_window = atoi(optarg);
            break;
        case 'O':
            c->lease_timeout = strtod(optarg, &end);
            if (*end != '\0')
                c->lease_timeout = -1;
            break;
        case 'P':
            c->stall_writer = 0;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return -1;
    }
    int found = 0;
    for (int i = 0; i < N_WORKLOADS; i++)
        if (strcmp(argv[optind], workload_names[i]) == 0) {
            c->workload = (enum workload)i;
            found = 1;
        }
    if (!found) {
        fprintf(stderr, "keel-bench: unknown workload '%s'\n", argv[optind]);
        return -1;
    }
    if ((c->workload == W_WATCH || c->workload == W_WATCH_LATENCY) && c->val_size < 16) {
        fprintf(stderr, "keel-bench: watch workloads need --val-size of at least 16 (the stamp)\n");
        return -1;
    }
    if (c->conns < 1 || c->conns > 1024 || c->clients < 1 || c->clients > 100000 ||
        c->key_size < 1 || c->key_size > 255 || c->val_size < 0 || c->val_size > (1 << 20) ||
        c->key_space < 1 || c->watchers < 1 || c->watchers > 1000000 || c->read_ratio < 0 ||
        c->read_ratio > 1 || c->rate < 0 || (c->total == 0 && c->duration <= 0) || c->leases < 1 ||
        c->leases > 10000000 || c->lease_ttl < 0 || c->lease_ttl > 9000000000ll ||
        c->lease_window < 1 || c->lease_window > 100000 || !(c->lease_timeout > 0)) {
        fprintf(stderr, "keel-bench: a flag is out of range (see --help)\n");
        return -1;
    }
    if (c->lease_ttl == 0)
        c->lease_ttl = c->workload == W_LEASE_CHURN ? LEASE_TTL_CHURN : LEASE_TTL_KEEPALIVE;
    return 0;
}

static void start_writers(struct bench *b)
{
    b->start_ns = now_ns();
    if (isatty(2) && !b->cfg.json) {
        b->progress_on = 1;
        uv_timer_start(&b->progress, progress, 200, 200);
    }
    b->active = b->cfg.clients;
    for (int i = 0; i < b->cfg.clients; i++) {
        b->clients[i].b = b;
        b->clients[i].idx = i;
        issue(&b->clients[i]);
    }
}

/* --- lease workloads ------------------------------------------------------------------------ */

static struct bench *lease_bench; /* the one bench: the lease callbacks' data is the lease */

static void lease_pump(struct bench *b);
static void churn_finish(struct bench *b);
static void churn_timeout(uv_timer_t *t);

static int wire_code(int status, const Keel__Response *resp)
{
    return resp != NULL && resp->error != NULL ? (int)resp->error->code : keel_err_to_wire(status);
}

static void lease_request(struct bench *b, struct lease_rec *r, const Keel__Request *req,
                          keel_response_cb cb)
{
    r->t0 = now_ns();
    b->linflight++;
    uint64_t i = (uint64_t)(r - b->leases);
    int rv =
        keel_aclient_request(b->acs[i % (uint64_t)b->cfg.conns], req, b->cfg.timeout_ms, cb, r);
    if (rv != 0) {
        /* Refused here: the pump's loop goes on with the next lease. */
        fprintf(stderr, "keel-bench: request refused: %s\n", keel_strerror(rv));
        b->linflight--;
        if (b->lphase == LP_REVOKE)
            b->revoke_errors++;
        else
            keel_stats_error(&b->stats, 63);
    }
}

static void on_attach(int status, const Keel__Response *resp, void *data)
{
    struct lease_rec *r = data;
    struct bench *b = lease_bench;
    if (status == KEEL_ECANCELED && b->closing)
        return;
    if (status == 0) {
        r->attached = 1;
        b->attached++;
    } else {
        /* LEASE_NOT_FOUND: the lease was gone before its key was put. */
        keel_stats_error(&b->stats, wire_code(status, resp));
    }
    b->linflight--;
    lease_pump(b);
}

static void send_attach(struct bench *b, struct lease_rec *r)
{
    char key[96];
    int klen = keel_lease_key(key, sizeof(key), b->lprefix, (uint64_t)(r - b->leases));
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)key;
    put.key.len = (size_t)klen;
    put.value.data = b->value;
    put.value.len = (size_t)b->cfg.val_size;
    put.lease = r->id;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    b->linflight--; /* the lease stays in flight: lease_request counts it again */
    lease_request(b, r, &req, on_attach);
}

static void on_grant(int status, const Keel__Response *resp, void *data)
{
    struct lease_rec *r = data;
    struct bench *b = lease_bench;
    if (status == KEEL_ECANCELED && b->closing)
        return;
    uint64_t now = now_ns();
    if (status == 0 && resp->body_case == KEEL__RESPONSE__BODY_LEASE_GRANT &&
        resp->lease_grant->id != 0 &&
        (resp->lease_grant->error == NULL || resp->lease_grant->error[0] == '\0')) {
        r->id = resp->lease_grant->id;
        r->ttl = resp->lease_grant->ttl;
        r->ack_ns = now;
        b->granted++;
        if (b->granted_ttl == 0)
            b->granted_ttl = r->ttl;
        keel_stats_add(&b->grant_lat, (double)(now - r->t0) / 1e9);
        if (b->cfg.workload == W_LEASE_CHURN && !b->closing) {
            send_attach(b, r);
            lease_pump(b); /* when the attach was refused */
            return;
        }
    } else {
        keel_stats_error(&b->stats,
                         status == 0 ? KEEL__ERROR_CODE__INTERNAL : wire_code(status, resp));
    }
    b->linflight--;
    lease_pump(b);
}

static void send_grant(struct bench *b, struct lease_rec *r)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__LeaseGrantRequest g = KEEL__LEASE_GRANT_REQUEST__INIT;
    g.ttl = b->cfg.lease_ttl;
    req.body_case = KEEL__REQUEST__BODY_LEASE_GRANT;
    req.lease_grant = &g;
    lease_request(b, r, &req, on_grant);
}

static void on_revoke(int status, const Keel__Response *resp, void *data)
{
    struct bench *b = lease_bench;
    (void)data;
    (void)resp;
    if (status == KEEL_ECANCELED && b->closing)
        return;
    if (status == 0)
        b->revoked++;
    else if (status == KEEL_ELEASENOTFOUND)
        b->revoke_gone++; /* expired (or revoked) already */
    else
        b->revoke_errors++;
    b->linflight--;
    lease_pump(b);
}

static void send_revoke(struct bench *b, struct lease_rec *r)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__LeaseRevokeRequest rr = KEEL__LEASE_REVOKE_REQUEST__INIT;
    rr.id = r->id;
    req.body_case = KEEL__REQUEST__BODY_LEASE_REVOKE;
    req.lease_revoke = &rr;
    lease_request(b, r, &req, on_revoke);
}

/* Revoke, best effort, every lease granted whose key was not seen expiring. */
static void start_revoke(struct bench *b)
{
    b->lphase = LP_REVOKE;
    b->lnext = 0;
    lease_pump(b);
}

static void grants_done(struct bench *b)
{
    uint64_t now = now_ns();
    b->grant_end_ns = now;
    if (b->cfg.workload == W_LEASE_KEEPALIVE) {
        b->ka_ids = calloc(b->granted ? b->granted : 1, sizeof(*b->ka_ids));
        for (uint64_t i = 0; i < b->cfg.leases; i++)
            if (b->leases[i].id != 0)
                b->ka_ids[b->n_ka++] = b->leases[i].id;
        if (b->n_ka == 0) {
            fprintf(stderr, "keel-bench: no lease was granted\n");
            b->start_ns = b->end_ns = now;
            start_revoke(b);
            return;
        }
        /* Warm-up, not timed: every lease kept alive once, so the run measures keep-alives of
         * leases renewed already (keel commits a lease's first renewal after its grant). */
        b->lphase = LP_WARM;
        b->lnext = 0;
        lease_pump(b);
        return;
    }
    /* lease-churn: every key is attached (or failed); now wait for them to expire. */
    b->lphase = LP_WAIT;
    b->start_ns = now;
    keel_gap_open(&b->gap, now);
    for (uint64_t i = 0; i < b->cfg.leases; i++) {
        struct lease_rec *r = &b->leases[i];
        if (!r->attached)
            continue;
        uint64_t due = r->ack_ns + (uint64_t)r->ttl * 1000000000ull;
        if (b->first_due_ns == 0 || due < b->first_due_ns)
            b->first_due_ns = due;
        if (due > b->last_due_ns)
            b->last_due_ns = due;
    }
    if (b->attached == 0) {
        fprintf(stderr, "keel-bench: no key was attached to a lease\n");
        churn_finish(b);
        return;
    }
    if (b->expired >= b->attached) {
        churn_finish(b);
        return;
    }
    uint64_t wait_ns = b->last_due_ns > now ? b->last_due_ns - now : 0;
    wait_ns += (uint64_t)(b->cfg.lease_timeout * 1e9);
    uv_timer_start(&b->settle, churn_timeout, wait_ns / 1000000 + 1, 0);
    if (!b->cfg.json)
        fprintf(stderr,
                "keel-bench: %" PRIu64 " of %" PRIu64 " leases granted (TTL %" PRId64
                " s), %" PRIu64 " keys attached; waiting for them to expire\n",
                b->granted, b->cfg.leases, b->granted_ttl, b->attached);
}

static void on_warm(int status, const Keel__Response *resp, void *data)
{
    struct bench *b = lease_bench;
    (void)data;
    (void)resp;
    if (status == KEEL_ECANCELED && b->closing)
        return;
    b->linflight--;
    lease_pump(b);
}

static void send_warm(struct bench *b, struct lease_rec *r)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__LeaseKeepAliveRequest ka = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
    ka.id = r->id;
    req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
    req.lease_keep_alive = &ka;
    lease_request(b, r, &req, on_warm);
}

static void lease_pump(struct bench *b)
{
    if (b->closing)
        return;
    while (b->linflight < b->cfg.lease_window && b->lnext < b->cfg.leases &&
           (b->lphase == LP_GRANT || b->lphase == LP_WARM || b->lphase == LP_REVOKE)) {
        struct lease_rec *r = &b->leases[b->lnext++];
        if (b->lphase == LP_GRANT)
            send_grant(b, r);
        else if (b->lphase == LP_WARM && r->id != 0)
            send_warm(b, r);
        else if (b->lphase == LP_REVOKE && r->id != 0 && r->del_ns == 0)
            send_revoke(b, r);
    }
    if (b->linflight > 0 || b->lnext < b->cfg.leases)
        return;
    if (b->lphase == LP_GRANT) {
        grants_done(b);
    } else if (b->lphase == LP_WARM) {
        b->lphase = LP_RUN;
        start_writers(b);
    } else if (b->lphase == LP_REVOKE) {
        b->lphase = LP_DONE;
        shut_down(b);
    }
}

static void start_grants(struct bench *b)
{
    b->lphase = LP_GRANT;
    b->lnext = 0;
    b->grant_start_ns = now_ns();
    lease_pump(b);
}

/* lease-churn's concurrent writer: one put at a time to a key of its own. */
static void stall_put(struct bench *b);

static void on_stall_put(int status, const Keel__Response *resp, void *data)
{
    struct bench *b = data;
    (void)resp;
    if (b->closing)
        return;
    uint64_t now = now_ns();
    if (status == 0) {
        if (b->gap.open) {
            b->stall_puts++;
            keel_stats_add(&b->stall_lat, (double)(now - b->stall_t0) / 1e9);
        }
        keel_gap_mark(&b->gap, now);
    } else if (b->gap.open) {
        b->stall_errors++;
    }
    if (b->stall_on)
        stall_put(b);
}

static void stall_put(struct bench *b)
{
    char key[96];
    int klen = snprintf(key, sizeof(key), "%sstall", b->lprefix);
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)key;
    put.key.len = (size_t)klen;
    put.value.data = b->value;
    put.value.len = (size_t)b->cfg.val_size;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    b->stall_t0 = now_ns();
    int rv = keel_aclient_request(b->stall_ac, &req, b->cfg.timeout_ms, on_stall_put, b);
    if (rv != 0) {
        fprintf(stderr, "keel-bench: the stall writer's put was refused: %s\n", keel_strerror(rv));
        b->stall_on = 0;
    }
}

/* Waiting is over (every key expired, or the timeout): the lags, then the revokes. */
static void churn_finish(struct bench *b)
{
    if (b->lphase != LP_WAIT && b->lphase != LP_GRANT)
        return;
    uv_timer_stop(&b->settle);
    uint64_t now = now_ns();
    if (b->start_ns == 0)
        b->start_ns = now;
    b->end_ns = now;
    keel_gap_close(&b->gap, now);
    b->stall_on = 0;
    for (uint64_t i = 0; i < b->cfg.leases; i++) {
        struct lease_rec *r = &b->leases[i];
        if (r->attached && r->del_ns != 0) {
            keel_stats_add(&b->stats, keel_expiry_lag(r->ack_ns, r->ttl, r->del_ns));
            b->succeeded++;
        }
    }
    start_revoke(b);
}

static void churn_timeout(uv_timer_t *t)
{
    struct bench *b = t->data;
    fprintf(stderr,
            "keel-bench: %" PRIu64 " of %" PRIu64
            " keys expired within %g s of the last due time\n",
            b->expired, b->attached, b->cfg.lease_timeout);
    churn_finish(b);
}

static void on_lease_watch(struct keel_watch *w, int status, const Keel__Event *const *events,
                           size_t n, int64_t revision, void *data)
{
    struct bench *b = data;
    (void)revision;
    if (status != 0) {
        if (status == KEEL_ECANCELED && b->closing)
            return;
        fprintf(stderr, "keel-bench: the watch ended: %s (%s)\n", keel_strerror(status),
                keel_watch_error(w));
        if (!b->lwatch_created) {
            shut_down(b);
            return;
        }
        churn_finish(b);
        return;
    }
    if (n == 0) {
        if (!b->lwatch_created) {
            b->lwatch_created = 1;
            b->stall_on = b->cfg.stall_writer;
            if (b->stall_on)
                stall_put(b);
            start_grants(b);
        }
        return;
    }
    if (b->lphase != LP_GRANT && b->lphase != LP_WAIT)
        return; /* the revokes' deletes at the end */
    uint64_t now = now_ns();
    for (size_t i = 0; i < n; i++) {
        if (events[i]->type != KEEL__EVENT__EVENT_TYPE__DELETE || events[i]->kv == NULL)
            continue;
        int64_t idx =
            keel_lease_key_index(events[i]->kv->key.data, events[i]->kv->key.len, b->lprefix);
        if (idx < 0 || (uint64_t)idx >= b->cfg.leases || b->leases[idx].del_ns != 0)
            continue;
        b->leases[idx].del_ns = now;
        b->expired++;
        b->last_del_ns = now;
    }
    if (b->lphase == LP_WAIT && b->expired >= b->attached)
        churn_finish(b);
}

/* Start a lease workload; -1 when it cannot. */
static int start_lease(struct bench *b, const struct keel_options *o)
{
    lease_bench = b;
    b->leases = calloc(b->cfg.leases, sizeof(*b->leases));
    if (b->leases == NULL) {
        fprintf(stderr, "keel-bench: out of memory for %" PRIu64 " leases\n", b->cfg.leases);
        return -1;
    }
    if (b->cfg.workload == W_LEASE_KEEPALIVE) {
        start_grants(b);
        return 0;
    }
    /* A prefix of this run's own: earlier runs' leases expiring now are not counted. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(
        b->lprefix, sizeof(b->lprefix), "kbench-lease/%" PRIx64 "/",
        (uint64_t)(((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ b->cfg.seed));
    int rv = keel_aclient_init(&b->stall_ac, &b->loop, o);
    if (rv != 0) {
        fprintf(stderr, "keel-bench: %s\n", keel_strerror(rv));
        return -1;
    }
    uint8_t end[64];
    size_t plen = strlen(b->lprefix);
    size_t elen = keel_prefix_end(b->lprefix, plen, end);
    struct keel_watch_opts wo = {.range_end = end, .range_end_len = elen, .created_notify = true};
    struct keel_watch *w;
    rv = keel_aclient_watch(b->acs[0], b->lprefix, plen, &wo, on_lease_watch, b, &w);
    if (rv != 0) {
        fprintf(stderr, "keel-bench: watch: %s\n", keel_strerror(rv));
        return -1;
    }
    return 0;
}

static json_object *summary_json(const struct keel_stats_summary *s)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "requests", json_object_new_int64((int64_t)s->n));
    json_object_object_add(o, "total_s", json_object_new_double(s->total_s));
    json_object_object_add(o, "rps", json_object_new_double(s->rps));
    json_object_object_add(o, "average_ms", json_object_new_double(s->average * 1e3));
    json_object_object_add(o, "stddev_ms", json_object_new_double(s->stddev * 1e3));
    json_object_object_add(o, "fastest_ms", json_object_new_double(s->fastest * 1e3));
    json_object_object_add(o, "slowest_ms", json_object_new_double(s->slowest * 1e3));
    static const char *names[] = {"p10_ms", "p25_ms", "p50_ms", "p75_ms",
                                  "p90_ms", "p95_ms", "p99_ms", "p99.9_ms"};
    for (int i = 0; i < 8; i++)
        json_object_object_add(o, names[i], json_object_new_double(s->p[i] * 1e3));
    return o;
}

static bool leasing(const struct bench *b)
{
    return b->cfg.workload == W_LEASE_KEEPALIVE || b->cfg.workload == W_LEASE_CHURN;
}

/* lease-churn's summary is over the expiry span: from the first lease's due time to the last
 * DELETE event (so its rate is expiries per second); with none expired, the wait. */
static double expiry_span(const struct bench *b)
{
    if (b->expired > 0 && b->last_del_ns > b->first_due_ns)
        return (double)(b->last_del_ns - b->first_due_ns) / 1e9;
    return (double)(b->end_ns - b->start_ns) / 1e9;
}

static json_object *lease_json(struct bench *b)
{
    json_object *l = json_object_new_object();
    double grant_s = (double)(b->grant_end_ns - b->grant_start_ns) / 1e9;
    struct keel_stats_summary g;
    keel_stats_summarize(&b->grant_lat, grant_s, &g);
    json_object_object_add(l, "leases", json_object_new_int64((int64_t)b->cfg.leases));
    json_object_object_add(l, "ttl_s", json_object_new_int64(b->cfg.lease_ttl));
    json_object_object_add(l, "granted_ttl_s", json_object_new_int64(b->granted_ttl));
    json_object_object_add(l, "granted", json_object_new_int64((int64_t)b->granted));
    json_object_object_add(l, "grant_s", json_object_new_double(grant_s));
    json_object_object_add(l, "grant", summary_json(&g));
    json_object_object_add(l, "revoked", json_object_new_int64((int64_t)b->revoked));
    json_object_object_add(l, "revoke_gone", json_object_new_int64((int64_t)b->revoke_gone));
    json_object_object_add(l, "revoke_errors", json_object_new_int64((int64_t)b->revoke_errors));
    if (b->cfg.workload != W_LEASE_CHURN)
        return l;
    struct keel_stats_summary st;
    double wait_s = (double)(b->end_ns - b->start_ns) / 1e9;
    keel_stats_summarize(&b->stall_lat, wait_s, &st);
    json_object_object_add(l, "attached", json_object_new_int64((int64_t)b->attached));
    json_object_object_add(l, "expired", json_object_new_int64((int64_t)b->expired));
    json_object_object_add(l, "complete",
                           json_object_new_boolean(b->attached > 0 && b->expired >= b->attached));
    json_object_object_add(l, "timeout_s", json_object_new_double(b->cfg.lease_timeout));
    json_object_object_add(l, "wait_s", json_object_new_double(wait_s));
    json_object_object_add(l, "expiry_span_s", json_object_new_double(expiry_span(b)));
    json_object_object_add(
        l, "max_lag_ms",
        b->stats.n ? json_object_new_double(keel_stats_percentile(&b->stats, 100) * 1e3) : NULL);
    json_object *sj = json_object_new_object();
    json_object_object_add(sj, "enabled", json_object_new_boolean(b->cfg.stall_writer));
    json_object_object_add(sj, "puts", json_object_new_int64((int64_t)b->stall_puts));
    json_object_object_add(sj, "errors", json_object_new_int64((int64_t)b->stall_errors));
    json_object_object_add(sj, "max_gap_ms", json_object_new_double((double)b->gap.max_ns / 1e6));
    json_object_object_add(sj, "latency", summary_json(&st));
    json_object_object_add(l, "stall", sj);
    return l;
}

static void lease_text(struct bench *b)
{
    double grant_s = (double)(b->grant_end_ns - b->grant_start_ns) / 1e9;
    printf("\nLeases: %" PRIu64 " of %" PRIu64 " granted (TTL %" PRId64 " s asked, %" PRId64
           " s granted) in %.4f secs., grant p50 %.4f p99 %.4f secs.; revoked at the end: %" PRIu64
           " (%" PRIu64 " already gone, %" PRIu64 " failed)\n",
           b->granted, b->cfg.leases, b->cfg.lease_ttl, b->granted_ttl, grant_s,
           keel_stats_percentile(&b->grant_lat, 50), keel_stats_percentile(&b->grant_lat, 99),
           b->revoked, b->revoke_gone, b->revoke_errors);
    if (b->cfg.workload != W_LEASE_CHURN)
        return;
    printf("Expiry: %" PRIu64 " of %" PRIu64 " attached keys deleted by expiry within %.4f secs. "
           "(%s); lag p50 %.4f p99 %.4f max %.4f secs.; spread over %.4f secs.\n",
           b->expired, b->attached, (double)(b->end_ns - b->start_ns) / 1e9,
           b->attached > 0 && b->expired >= b->attached ? "all" : "timed out",
           keel_stats_percentile(&b->stats, 50), keel_stats_percentile(&b->stats, 99),
           keel_stats_percentile(&b->stats, 100), expiry_span(b));
    if (b->cfg.stall_writer)
        printf("Write stall: %" PRIu64 " puts (%" PRIu64 " failed) by one writer while waiting, "
               "p50 %.4f p99 %.4f secs.; largest gap between two completions %.4f secs.\n",
               b->stall_puts, b->stall_errors, keel_stats_percentile(&b->stall_lat, 50),
               keel_stats_percentile(&b->stall_lat, 99), (double)b->gap.max_ns / 1e9);
}

static void report(struct bench *b)
{
    struct keel_stats_summary sum;
    double total = (double)(b->end_ns - b->start_ns) / 1e9;
    if (b->cfg.workload == W_LEASE_CHURN)
        total = expiry_span(b);
    keel_stats_summarize(&b->stats, total, &sum);
    struct keel_stats_summary ev;
    keel_stats_summarize(&b->event_lat, total, &ev);
    double events_per_s = total > 0 ? (double)b->events / total : 0;
    if (!b->cfg.json) {
        if (b->cfg.workload == W_LEASE_CHURN)
            printf("\nExpiry lag: (DELETE event) - (grant acknowledged + TTL), of each lease "
                   "expired; Requests/sec: expiries per second from the first due time to the "
                   "last DELETE\n");
        keel_stats_print(&b->stats, &sum, stdout);
        if (leasing(b))
            lease_text(b);
        if (watching(b)) {
            printf("\nWatch: %d watchers, %" PRIu64 " events delivered (%" PRIu64
                   " expected), %.1f events/sec\n",
                   b->cfg.watchers, b->events, b->events_expected, events_per_s);
            if (b->cfg.workload == W_WATCH_LATENCY)
                printf("Put -> event latency: p50 %.4f p90 %.4f p99 %.4f p99.9 %.4f secs. (%zu "
                       "samples)\n",
                       ev.p[2], ev.p[4], ev.p[6], ev.p[7], ev.n);
        }
        for (int i = 0; i < b->n_zones; i++) {
            struct keel_stats_summary zs;
            keel_stats_summarize(&b->zones[i].stats, total, &zs);
            printf("\nTarget zone %s: %zu requests, p50 %.4f p99 %.4f secs.\n", b->zones[i].zone,
                   zs.n, zs.p[2], zs.p[6]);
        }
        return;
    }
    json_object *o = json_object_new_object();
    json_object *cfg = json_object_new_object();
    json_object_object_add(cfg, "workload",
                           json_object_new_string(workload_names[b->cfg.workload]));
    json_object_object_add(cfg, "endpoints", json_object_new_string(b->cfg.endpoints));
    json_object_object_add(cfg, "conns", json_object_new_int(b->cfg.conns));
    json_object_object_add(cfg, "clients", json_object_new_int(b->cfg.clients));
    json_object_object_add(cfg, "total", json_object_new_int64((int64_t)b->cfg.total));
    json_object_object_add(cfg, "duration_s", json_object_new_double(b->cfg.duration));
    json_object_object_add(cfg, "rate", json_object_new_double(b->cfg.rate));
    json_object_object_add(cfg, "key_size", json_object_new_int(b->cfg.key_size));
    json_object_object_add(cfg, "val_size", json_object_new_int(b->cfg.val_size));
    json_object_object_add(cfg, "key_space_size", json_object_new_int64((int64_t)b->cfg.key_space));
    json_object_object_add(cfg, "sequential_keys", json_object_new_boolean(b->cfg.sequential));
    json_object_object_add(cfg, "consistency",
                           json_object_new_string(b->cfg.serializable ? "s" : "l"));
    json_object_object_add(cfg, "read_ratio", json_object_new_double(b->cfg.read_ratio));
    json_object_object_add(cfg, "zone", json_object_new_string(b->cfg.zone ? b->cfg.zone : ""));
    json_object_object_add(cfg, "seed", json_object_new_int64((int64_t)b->cfg.seed));
    json_object_object_add(cfg, "leases", json_object_new_int64((int64_t)b->cfg.leases));
    json_object_object_add(cfg, "lease_ttl", json_object_new_int64(b->cfg.lease_ttl));
    json_object_object_add(cfg, "lease_window", json_object_new_int(b->cfg.lease_window));
    json_object_object_add(o, "tool", json_object_new_string("keel-bench"));
    json_object_object_add(o, "config", cfg);
    json_object_object_add(o, "git_revision", json_object_new_string(KEEL_GIT_REV));
    json_object *machine = json_object_new_object();
    struct utsname u;
    if (uname(&u) == 0) {
        json_object_object_add(machine, "kernel", json_object_new_string(u.release));
        json_object_object_add(machine, "arch", json_object_new_string(u.machine));
    }
    json_object_object_add(machine, "cpus",
                           json_object_new_int((int)sysconf(_SC_NPROCESSORS_ONLN)));
    json_object_object_add(o, "machine", machine);
    json_object_object_add(o, "summary", summary_json(&sum));
    json_object *errs = json_object_new_object();
    for (int c = 0; c < 64; c++) {
        if (b->stats.errors[c] == 0)
            continue;
        const ProtobufCEnumValue *name =
            protobuf_c_enum_descriptor_get_value(&keel__error_code__descriptor, c);
        json_object_object_add(errs, name ? name->name : "OTHER",
                               json_object_new_int64((int64_t)b->stats.errors[c]));
    }
    json_object_object_add(o, "errors", errs);
    json_object *zones = json_object_new_object();
    for (int i = 0; i < b->n_zones; i++) {
        struct keel_stats_summary zs;
        keel_stats_summarize(&b->zones[i].stats, total, &zs);
        json_object_object_add(zones, b->zones[i].zone, summary_json(&zs));
    }
    json_object_object_add(o, "by_target_zone", zones);
    if (watching(b)) {
        json_object *wj = json_object_new_object();
        json_object_object_add(wj, "watchers", json_object_new_int(b->cfg.watchers));
        json_object_object_add(wj, "events", json_object_new_int64((int64_t)b->events));
        json_object_object_add(wj, "events_expected",
                               json_object_new_int64((int64_t)b->events_expected));
        json_object_object_add(wj, "events_per_sec", json_object_new_double(events_per_s));
        if (b->cfg.workload == W_WATCH_LATENCY)
            json_object_object_add(wj, "event_latency", summary_json(&ev));
        json_object_object_add(o, "watch", wj);
    }
    if (leasing(b))
        json_object_object_add(o, "lease", lease_json(b));
    if (b->scraped) {
        json_object *mj = json_object_new_object();
        for (size_t i = 0; i < b->after.n; i++) {
            int found;
            double was = scrape_value(&b->before, b->after.names[i], &found);
            if (b->after.values[i] != was)
                json_object_object_add(mj, b->after.names[i],
                                       json_object_new_double(b->after.values[i] - was));
        }
        json_object_object_add(o, "metrics_delta", mj);
    }
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
}

/* A whole number as one, anything else with 6 significant digits. */
static void fmt_num(char *out, size_t len, double v, bool sign)
{
    if (v == (double)(long long)v && v < 1e18 && v > -1e18)
        snprintf(out, len, sign ? "%+lld" : "%lld", (long long)v);
    else
        snprintf(out, len, sign ? "%+.6g" : "%.6g", v);
}

/* The series that moved during the run, as they were and as they are. */
static void print_metrics_delta(const struct bench *b)
{
    printf("\nMetrics that moved (%s):\n", b->cfg.metrics);
    for (size_t i = 0; i < b->after.n; i++) {
        int found;
        double was = scrape_value(&b->before, b->after.names[i], &found);
        double now = b->after.values[i];
        if (now == was)
            continue;
        char d[48], w[48], n[48];
        fmt_num(d, sizeof(d), now - was, true);
        fmt_num(w, sizeof(w), was, false);
        fmt_num(n, sizeof(n), now, false);
        printf("  %-52s %s  (%s -> %s)%s\n", b->after.names[i], d, w, n, found ? "" : " new");
    }
}

int main(int argc, char **argv)
{
    static struct bench b;
    if (parse(&b.cfg, argc, argv) != 0)
        return 2;
    b.rng = b.cfg.seed;
    b.value = malloc((size_t)b.cfg.val_size + 1);
    for (int i = 0; i < b.cfg.val_size; i++)
        b.value[i] = (uint8_t)('a' + rnd(&b) % 26);
    keel_stats_init(&b.stats);
    if (b.cfg.timeline != NULL && (b.timeline = fopen(b.cfg.timeline, "w")) == NULL) {
        fprintf(stderr, "keel-bench: --timeline %s: %s\n", b.cfg.timeline, strerror(errno));
        return 2;
    }
    char source[32] = "";
    if (b.cfg.zone != NULL && zone_source(b.cfg.zone, source, sizeof(source)) != 0) {
        fprintf(stderr, "keel-bench: --zone '%s' is not zN or N (1..254)\n", b.cfg.zone);
        return 2;
    }
    if (b.cfg.zone != NULL)
        learn_members(&b);
    if (b.cfg.metrics != NULL) {
        char err[256];
        if (scrape_get(b.cfg.metrics, &b.before, err, sizeof(err)) != 0) {
            fprintf(stderr, "keel-bench: --metrics: %s\n", err);
            return 2;
        }
    }
    char *token = NULL, user[256] = "";
    const char *password = NULL;
    if (b.cfg.user != NULL && (token = bench_token(&b.cfg, user, sizeof(user), &password)) == NULL)
        return 1;
    uv_loop_init(&b.loop);
    b.acs = calloc((size_t)b.cfg.conns, sizeof(*b.acs));
    struct keel_options o = {.endpoints = b.cfg.endpoints,
                             .zone = b.cfg.zone,
                             .source_address = source[0] ? source : NULL,
                             .client_name = "keel-bench",
                             .token = token,
                             .user = user[0] ? user : NULL,
                             .password = password};
    tls_options(&b.cfg, &o);
    for (int i = 0; i < b.cfg.conns; i++) {
        int rv = keel_aclient_init(&b.acs[i], &b.loop, &o);
        char why[320];
        if (rv == KEEL_EINVAL && keel_endpoints_check(o.endpoints, why, sizeof(why)) != 0) {
            fprintf(stderr, "keel-bench: --endpoints: %s\n", why);
            return 2;
        }
        if (rv == KEEL_EINVAL && keel_errmsg()[0] != '\0') {
            fprintf(stderr, "keel-bench: %s\n", keel_errmsg()); /* a TLS file */
            return 2;
        }
        if (rv != 0) {
            fprintf(stderr, "keel-bench: %s\n", keel_strerror(rv));
            return 1;
        }
    }
    b.clients = calloc((size_t)b.cfg.clients, sizeof(*b.clients));
    uv_timer_init(&b.loop, &b.pacer);
    uv_timer_init(&b.loop, &b.progress);
    b.pacer.data = b.progress.data = &b;
    if (b.cfg.rate > 0)
        uv_timer_start(&b.pacer, pace, 1, 1);
    uv_timer_init(&b.loop, &b.settle);
    b.settle.data = &b;
    keel_stats_init(&b.event_lat);
    keel_stats_init(&b.grant_lat);
    keel_stats_init(&b.stall_lat);
    keel_gap_init(&b.gap);
    if (b.cfg.workload == W_LEASE_KEEPALIVE || b.cfg.workload == W_LEASE_CHURN) {
        if (start_lease(&b, &o) != 0)
            return 1;
    } else if (watching(&b)) {
        /* Every watcher covers the whole key space: "\0" and up. */
        b.watches = calloc((size_t)b.cfg.watchers, sizeof(*b.watches));
        struct keel_watch_opts wo = {.range_end = "\0", .range_end_len = 1, .created_notify = true};
        for (int i = 0; i < b.cfg.watchers; i++) {
            int rv = keel_aclient_watch(b.acs[i % b.cfg.conns], "\0", 1, &wo, on_watch, &b,
                                        &b.watches[i]);
            if (rv != 0) {
                fprintf(stderr, "keel-bench: watch: %s\n", keel_strerror(rv));
                return 1;
            }
        }
    } else {
        start_writers(&b);
    }
    uv_run(&b.loop, UV_RUN_DEFAULT); /* until the last client closed everything */
    uv_loop_close(&b.loop);
    if (b.cfg.metrics != NULL) {
        char err[256];
        if (scrape_get(b.cfg.metrics, &b.after, err, sizeof(err)) != 0)
            fprintf(stderr, "keel-bench: --metrics after the run: %s\n", err);
        else
            b.scraped = 1;
    }
    report(&b);
    if (b.scraped && !b.cfg.json)
        print_metrics_delta(&b);
    scrape_free(&b.before);
    scrape_free(&b.after);
    int failed = b.succeeded == 0;
    keel_stats_close(&b.stats);
    keel_stats_close(&b.event_lat);
    keel_stats_close(&b.grant_lat);
    keel_stats_close(&b.stall_lat);
    free(b.leases);
    free(b.ka_ids);
    free(b.watches);
    for (int i = 0; i < b.n_zones; i++)
        keel_stats_close(&b.zones[i].stats);
    free(b.clients);
    free(b.acs);
    free(b.value);
    free(token);
    if (b.timeline != NULL && fclose(b.timeline) != 0) {
        fprintf(stderr, "keel-bench: --timeline: %s\n", strerror(errno));
        failed = 1;
    }
    return failed ? 1 : 0;
}
