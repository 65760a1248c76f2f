/*
 * The operability series and log lines through real processes: `test_metrics <group>`.
 *   histograms  keeld's histograms parse (buckets cumulative, +Inf = _count, _sum >= 0), the
 *               put durations count every put sent to the member, the leader reports a round
 *               trip to each follower by id and zone, followers log their leader, and
 *               --warn-apply-duration logs slow applies;
 *   rejected    a frame over --max-request-bytes is logged once, and 1000 of them give a
 *               bounded number of lines and a count of those left out;
 *   gateway     keel-gateway --listen-metrics parses, counts the calls sent through it and
 *               the watch streams open;
 *   series      the rest of keeld's series are there with their types, and move: connections,
 *               watch streams, lease grants and expiries, raft snapshots, a checkpoint fetch,
 *               a proposal lost with leadership.
 * Every wait is bounded; only processes started here are signalled, by PID.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "keel/keel.h"
#include "prom.h"
#include "rawconn.h"
#include "testutil.h"

extern char **environ;

/* ---- HTTP and the Prometheus text ---- */

/* Every histogram family: per label set, buckets in increasing le with non-decreasing counts,
 * the last +Inf and equal to _count, _sum >= 0. Fails the test; returns the families seen. */
static int check_histograms(const struct tp_scrape *sc)
{
    int families = 0;
    for (size_t f = 0; f < sc->nf; f++) {
        if (strcmp(sc->f[f].type, "histogram") != 0)
            continue;
        families++;
        const char *fam = sc->f[f].name;
        char n_count[160], n_bucket[160], n_sum[160];
        snprintf(n_count, sizeof(n_count), "%s_count", fam);
        snprintf(n_bucket, sizeof(n_bucket), "%s_bucket", fam);
        snprintf(n_sum, sizeof(n_sum), "%s_sum", fam);
        int sets = 0;
        for (size_t i = 0; i < sc->n; i++) {
            if (strcmp(sc->s[i].name, n_count) != 0)
                continue;
            sets++;
            const char *labels = sc->s[i].labels;
            double count = sc->s[i].v, sum = tp_value(sc, n_sum, labels);
            if (!(sum >= 0))
                fail_msg("%s{%s}: _sum %g", fam, labels, sum);
            double last_le = -INFINITY, last_v = 0;
            int buckets = 0;
            bool inf = false;
            for (size_t j = 0; j < sc->n; j++) {
                const struct tp_sample *b = &sc->s[j];
                if (strcmp(b->name, n_bucket) != 0)
                    continue;
                const char *le = strstr(b->labels, "le=\"");
                if (le == NULL)
                    fail_msg("%s bucket without le: {%s}", fam, b->labels);
                size_t pre = (size_t)(le - b->labels);
                size_t want = strlen(labels);
                if (want == 0 ? pre != 0 : (pre != want + 1 || strncmp(b->labels, labels, want)))
                    continue; /* another label set's */
                assert_false(inf);
                double lev = strncmp(le + 4, "+Inf\"", 5) == 0 ? INFINITY : strtod(le + 4, NULL);
                if (!(lev > last_le) || b->v < last_v)
                    fail_msg("%s{%s}: bucket le=%g (%g) after le=%g (%g)", fam, labels, lev, b->v,
                             last_le, last_v);
                last_le = lev;
                last_v = b->v;
                inf = isinf(lev);
                buckets++;
            }
            if (!inf || buckets < 2 || last_v != count)
                fail_msg("%s{%s}: %d buckets, +Inf %s %g, _count %g", fam, labels, buckets,
                         inf ? "is" : "missing", last_v, count);
        }
        if (sets == 0)
            fail_msg("histogram %s has no _count", fam);
    }
    return families;
}

/* ---- helpers ---- */

static struct keel *open_member(const struct tc_cluster *c, int member)
{
    char eps[512];
    tc_endpoints(c, member, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .request_timeout_ms = 4000, .dial_timeout_ms = 500, .max_retries = -1};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

/* Give each member a --listen-metrics address (in maddr[i]) and extra flags. */
static void with_metrics(struct tc_cluster *c, char maddr[][32], const char *extra)
{
    for (int i = 1; i <= c->n; i++) {
        snprintf(maddr[i], 32, "127.0.%d.1:%d", i, tc_member_free_port(c, i));
        snprintf(c->m[i].extra, sizeof(c->m[i].extra), "--listen-metrics %s %s", maddr[i], extra);
    }
}

/* ---- histograms ---- */

static void histograms(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "hist");
    char maddr[4][32];
    with_metrics(&c, maddr, "--warn-apply-duration 1us");
    tc_start_all(&c);
    struct keel *any = open_member(&c, 0);
    int leader = tc_find_leader(&c, any, 0, 10000);
    assert_true(leader > 0);
    struct keel *k = open_member(&c, leader);
    struct tp_scrape sc;
    /* A put answered before the scrape below: the leader has served it. */
    assert_int_equal(keel_put(k, "warm", 4, "v", 1, NULL, NULL), 0);
    tp_scrape(maddr[leader], &sc);
    double before = tp_value(&sc, "keel_server_request_duration_seconds_count", "op=\"put\"");
    assert_true(before >= 1);
    tp_free(&sc);
    const int puts = 25;
    for (int i = 0; i < puts; i++) {
        char key[16];
        snprintf(key, sizeof(key), "h/%d", i);
        int rv = keel_put(k, key, strlen(key), "v", 1, NULL, NULL);
        if (rv != 0)
            fail_msg("put %s: %s", key, keel_strerror(rv));
    }
    Keel__RangeResponse *rr = NULL;
    assert_int_equal(keel_get(k, "h/0", 3, NULL, &rr), 0);
    keel__range_response__free_unpacked(rr, NULL);
    tp_scrape(maddr[leader], &sc);
    double after = tp_value(&sc, "keel_server_request_duration_seconds_count", "op=\"put\"");
    if (!(after >= before + puts))
        fail_msg("put durations counted %g -> %g for %d puts", before, after, puts);
    assert_true(tp_value(&sc, "keel_server_request_duration_seconds_count", "op=\"range\"") >= 1);
    assert_true(tp_value(&sc, "keel_server_apply_duration_seconds_count", "") >= 1);
    /* Every put went through the leader's log: at least one append each time it was idle. */
    assert_true(tp_value(&sc, "keel_disk_wal_append_duration_seconds_count", "") >= 1);
    tp_free(&sc);

    /* The store commits once idle past its interval (500 ms); the leader hears every follower
     * within a few heartbeats. Ids as member list says, zones as the harness lays them out. */
    Keel__MemberListResponse *ml = NULL;
    assert_int_equal(keel_member_list(k, &ml), 0);
    assert_int_equal((int)ml->n_members, 3);
    char want[2][96], leader_line[64] = "";
    int w = 0;
    for (size_t i = 0; i < ml->n_members; i++) {
        int m = atoi(ml->members[i]->name + 1); /* "m2" */
        if (m == leader)
            snprintf(leader_line, sizeof(leader_line), "leader is %016llx in term",
                     (unsigned long long)ml->members[i]->id);
        if (m == leader)
            continue;
        assert_true(w < 2);
        snprintf(want[w++], sizeof(want[0]), "To=\"%llx\",zone=\"z%d\"",
                 (unsigned long long)ml->members[i]->id, m);
    }
    keel__member_list_response__free_unpacked(ml, NULL);
    assert_int_equal(w, 2);
    long long until = tc_now_ms() + 15000;
    bool seen = false;
    for (;;) {
        tp_scrape(maddr[leader], &sc);
        double commits = tp_value(&sc, "keel_disk_backend_commit_duration_seconds_count", "");
        double rtt0 = tp_value(&sc, "keel_network_peer_round_trip_time_seconds_count", want[0]);
        double rtt1 = tp_value(&sc, "keel_network_peer_round_trip_time_seconds_count", want[1]);
        seen = commits >= 1 && rtt0 >= 1 && rtt1 >= 1;
        if (seen || tc_now_ms() > until)
            break;
        tp_free(&sc);
        tu_sleep_ms(100);
    }
    if (!seen)
        fail_msg("no commit or no round trip to %s and %s on the leader", want[0], want[1]);
    /* Five families on the leader, every one well formed. */
    assert_true(check_histograms(&sc) >= 5);
    tp_free(&sc);
    for (int i = 1; i <= 3; i++) {
        tp_scrape(maddr[i], &sc);
        check_histograms(&sc);
        tp_free(&sc);
    }
    /* Every follower logged whom it follows. */
    assert_true(leader_line[0] != '\0');
    for (int i = 1; i <= 3; i++)
        if (i != leader && !tc_log_contains(&c, i, leader_line))
            fail_msg("m%d did not log \"%s\"", i, leader_line);
    /* --warn-apply-duration 1us: every batch is slow. */
    assert_true(tc_log_contains(&c, leader, "apply request took too long"));
    keel_close(k);
    keel_close(any);
    tc_cluster_close(&c);
}

/* ---- rejected requests ---- */

/* A connection that sends a frame header claiming 64 MiB: refused (FRAMETOOLARGE) and closed. */
static void send_oversized(const char *addr)
{
    int fd = raw_dial(addr, 0);
    uint8_t hdr[4] = {0x04, 0x00, 0x00, 0x00};
    raw_send(fd, hdr, sizeof(hdr));
    assert_true(raw_closed(fd, RAW_WAIT_MS));
    close(fd);
}

static void rejected(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 1, "reject");
    snprintf(c.extra, sizeof(c.extra), "--max-request-bytes 65536");
    tc_start_all(&c);
    struct keel *k = open_member(&c, 1);
    assert_true(tc_find_leader(&c, k, 0, 10000) == 1);
    const char *line = "rejected request of session";
    assert_int_equal(tc_log_count(&c, 1, line), 0);
    send_oversized(c.m[1].client);
    long long until = tc_now_ms() + 10000;
    while (tc_log_count(&c, 1, line) < 1 && tc_now_ms() < until)
        tu_sleep_ms(20);
    assert_int_equal(tc_log_count(&c, 1, line), 1);
    assert_true(tc_log_contains(&c, 1, "frame exceeds the maximum request size"));

    /* A flood: at most 10 lines a second, then a count of those left out (logged with the next
     * line after the second). */
    tu_sleep_ms(1100);
    long long t0 = tc_now_ms();
    const int flood = 1000;
    for (int i = 0; i < flood; i++)
        send_oversized(c.m[1].client);
    long long secs = (tc_now_ms() - t0) / 1000 + 1;
    tu_sleep_ms(1100);
    send_oversized(c.m[1].client);
    until = tc_now_ms() + 10000;
    while (tc_log_count(&c, 1, "more not logged") < 1 && tc_now_ms() < until)
        tu_sleep_ms(20);
    int lines = tc_log_count(&c, 1, line) - 1;
    int left_out = tc_log_count(&c, 1, "more not logged");
    /* Each window allows 10; the flood spans at most secs + 1 windows, the last send one more. */
    if (lines > 10 * ((int)secs + 1) + 1 || lines < 10)
        fail_msg("%d lines for %d rejected requests in %lld s", lines, flood + 1, secs);
    assert_true(left_out >= 1);
    assert_true(lines < flood / 2);
    keel_close(k);
    tc_cluster_close(&c);
}

/* ---- keel-gateway ---- */

static void gateway(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "gwmetrics");
    tc_start_all(&c);
    struct keel *k = open_member(&c, 0);
    assert_true(tc_find_leader(&c, k, 0, 10000) > 0);
    char listen[32], metrics[32], eps[512], log[600];
    snprintf(listen, sizeof(listen), "127.0.1.1:%d", tc_member_free_port(&c, 1));
    do
        snprintf(metrics, sizeof(metrics), "127.0.1.1:%d", tc_member_free_port(&c, 1));
    while (strcmp(metrics, listen) == 0);
    tc_endpoints(&c, 0, eps, sizeof(eps));
    snprintf(log, sizeof(log), "%s/gateway.log", c.root);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {KEEL_GATEWAY_PATH,  "--listen", listen, "--endpoints", eps,
                    "--listen-metrics", metrics,    NULL};
    pid_t pid = 0;
    assert_int_equal(posix_spawn(&pid, KEEL_GATEWAY_PATH, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    long long until = tc_now_ms() + 15000;
    int st;
    while ((st = tc_http(metrics, "GET", "/livez", NULL, NULL)) != 200 && tc_now_ms() < until)
        tu_sleep_ms(50);
    assert_int_equal(st, 200);

    const int puts = 12;
    for (int i = 0; i < puts; i++) {
        char *body = NULL;
        st = tc_http(listen, "POST", "/v3/kv/put", "{\"key\":\"Z3c=\",\"value\":\"dg==\"}", &body);
        if (st != 200)
            fail_msg("put through the gateway: %d %s", st, body ? body : "");
        free(body);
    }
    st = tc_http(listen, "POST", "/v3/kv/range", "{\"key\":\"\"}", NULL);
    struct tp_scrape sc;
    tp_scrape(metrics, &sc);
    const char *put = "grpc_service=\"etcdserverpb.KV\",grpc_method=\"Put\"";
    char ok[160];
    snprintf(ok, sizeof(ok), "%s,code=\"OK\"", put);
    assert_true(tp_value(&sc, "keel_gateway_requests_total", ok) == puts);
    assert_true(tp_value(&sc, "keel_gateway_request_duration_seconds_count", put) == puts);
    /* The empty key is refused (etcd: "key is not provided"): counted under its code. */
    double refused = 0;
    for (size_t i = 0; i < sc.n; i++)
        if (strcmp(sc.s[i].name, "keel_gateway_requests_total") == 0 &&
            strstr(sc.s[i].labels, "grpc_method=\"Range\"") != NULL)
            refused += sc.s[i].v;
    assert_true(refused == 1);
    assert_true(tp_value(&sc, "keel_gateway_calls_in_flight", "") == 0);
    assert_true(tp_value(&sc, "keel_gateway_watch_streams", "") == 0);
    assert_false(isnan(tp_value(&sc, "keel_gateway_connections", "")));
    assert_true(check_histograms(&sc) >= 1);
    tp_free(&sc);

    /* A JSON watch stays open: one watch stream and one call in flight until its client goes. */
    int wfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(strrchr(listen, ':') + 1))};
    inet_pton(AF_INET, "127.0.1.1", &sa.sin_addr);
    struct timeval tv = {10, 0};
    setsockopt(wfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(wfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    const char *wbody = "{\"create_request\":{\"key\":\"Z3c=\"}}";
    char wreq[256];
    int wn = snprintf(wreq, sizeof(wreq),
                      "POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen(wbody), wbody);
    assert_int_equal(write(wfd, wreq, (size_t)wn), wn);
    char wbuf[4096] = "";
    size_t wgot = 0;
    while (wgot + 1 < sizeof(wbuf) && strstr(wbuf, "created") == NULL) {
        ssize_t r = read(wfd, wbuf + wgot, sizeof(wbuf) - 1 - wgot);
        if (r <= 0)
            fail_msg("watch through the gateway: no created response");
        wgot += (size_t)r;
        wbuf[wgot] = '\0';
    }
    tp_scrape(metrics, &sc);
    assert_true(tp_value(&sc, "keel_gateway_watch_streams", "") == 1);
    assert_true(tp_value(&sc, "keel_gateway_calls_in_flight", "") == 1);
    assert_true(tp_value(&sc, "keel_gateway_connections", "") >= 1);
    tp_free(&sc);
    close(wfd);
    until = tc_now_ms() + 10000;
    double watches;
    for (;;) {
        tp_scrape(metrics, &sc);
        watches = tp_value(&sc, "keel_gateway_watch_streams", "");
        double in_flight = tp_value(&sc, "keel_gateway_calls_in_flight", "");
        tp_free(&sc);
        if ((watches == 0 && in_flight == 0) || tc_now_ms() > until)
            break;
        tu_sleep_ms(20);
    }
    assert_true(watches == 0);

    kill(pid, SIGTERM);
    int status = -1;
    until = tc_now_ms() + 30000;
    while (waitpid(pid, &status, WNOHANG) == 0 && tc_now_ms() < until)
        tu_sleep_ms(20);
    if (!WIFEXITED(status)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("keel-gateway did not exit on SIGTERM");
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    keel_close(k);
    tc_cluster_close(&c);
}

/* ---- the remaining series: present, typed, and moved by the traffic that should move them ---- */

/* The value of name{labels} on addr now; false when the member does not answer (restarting). */
static bool try_value(const char *addr, const char *name, const char *labels, double *v)
{
    char *body = NULL;
    int st = tc_http(addr, "GET", "/metrics", NULL, &body);
    if (st != 200) {
        free(body);
        return false;
    }
    struct tp_scrape sc;
    tp_parse(body, &sc);
    free(body);
    *v = tp_value(&sc, name, labels);
    tp_free(&sc);
    return !isnan(*v);
}

/* Scrape addr until name{labels} is at least (up) or at most (!up) bound, for timeout_ms at
 * most; fails the test naming the series otherwise. Returns the last value. */
static double wait_series(const char *addr, const char *name, const char *labels, bool up,
                          double bound, int timeout_ms)
{
    long long until = tc_now_ms() + timeout_ms;
    double v = NAN;
    for (;;) {
        bool got = try_value(addr, name, labels, &v);
        if (got && (up ? v >= bound : v <= bound))
            return v;
        if (tc_now_ms() > until)
            break;
        tu_sleep_ms(50);
    }
    fail_msg("%s %s{%s} is %g, not %s %g within %d ms", addr, name, labels, v,
             up ? ">=" : "<=", bound, timeout_ms);
    return v;
}

static double now_of(const char *addr, const char *name, const char *labels)
{
    struct tp_scrape sc;
    tp_scrape(addr, &sc);
    double v = tp_value(&sc, name, labels);
    tp_free(&sc);
    if (isnan(v))
        fail_msg("%s: no %s{%s}", addr, name, labels);
    return v;
}

static void put_or_fail(struct keel *k, const char *key)
{
    int rv = keel_put(k, key, strlen(key), "v", 1, NULL, NULL);
    if (rv != 0)
        fail_msg("put %s: %s", key, keel_strerror(rv));
}

static void on_event(struct keel_watch *w, int status, const Keel__Event *const *events,
                     size_t n_events, int64_t revision, void *data)
{
    (void)w, (void)status, (void)events, (void)n_events, (void)revision, (void)data;
}

static void series(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "series");
    c.snapshot_threshold = 64; /* raft snapshots every 64 entries: cluster_checkpoint's set-up */
    c.snapshot_trailing = 32;
    char maddr[4][32];
    with_metrics(&c, maddr, "");
    tc_start_all(&c);
    struct keel *any = open_member(&c, 0);
    /* A leader that takes a write (the first election may still be settling). */
    int leader = 0;
    struct keel *k = NULL;
    long long until = tc_now_ms() + 20000;
    while (k == NULL && tc_now_ms() < until) {
        leader = tc_find_leader(&c, any, 0, 10000);
        assert_true(leader > 0);
        k = open_member(&c, leader);
        if (keel_put(k, "s/warm", 6, "v", 1, NULL, NULL) != 0) {
            keel_close(k);
            k = NULL;
            tu_sleep_ms(100);
        }
    }
    assert_non_null(k);
    const char *L = maddr[leader];

    /* Every series on every member, with its type. */
    static const struct {
        const char *name, *labels, *type;
    } want[] = {
        {"keel_server_proposals_failed_total", "", "counter"},
        {"keel_server_client_connections", "", "gauge"},
        {"keel_server_client_requests_inflight", "", "gauge"},
        {"keel_mvcc_watch_stream_total", "", "gauge"},
        {"keel_mvcc_slow_watcher_total", "", "gauge"},
        {"keel_watch_watchers", "", "gauge"},
        {"keel_server_snapshot_total", "", "counter"},
        {"keel_server_snapshot_duration_seconds_count", "", "histogram"},
        {"keel_server_checkpoint_fetch_total", "result=\"ok\"", "counter"},
        {"keel_server_checkpoint_fetch_total", "result=\"failed\"", "counter"},
        {"keel_server_checkpoint_fetch_duration_seconds_count", "", "histogram"},
        {"keel_server_lease_count", "", "gauge"},
        {"keel_server_lease_expired_total", "", "counter"},
        {"keel_server_lease_grant_total", "", "counter"},
        {"keel_server_lease_revoke_total", "", "counter"},
    };
    for (int i = 1; i <= 3; i++) {
        struct tp_scrape sc;
        tp_scrape(maddr[i], &sc);
        for (size_t j = 0; j < sizeof(want) / sizeof(want[0]); j++) {
            if (isnan(tp_value(&sc, want[j].name, want[j].labels)))
                fail_msg("m%d: no %s{%s}", i, want[j].name, want[j].labels);
            char family[128];
            snprintf(family, sizeof(family), "%s", want[j].name);
            if (strcmp(want[j].type, "histogram") == 0)
                family[strlen(family) - strlen("_count")] = '\0';
            const char *type = NULL;
            for (size_t f = 0; f < sc.nf; f++)
                if (strcmp(sc.f[f].name, family) == 0)
                    type = sc.f[f].type;
            if (type == NULL || strcmp(type, want[j].type) != 0)
                fail_msg("m%d: %s is of type %s, not %s", i, family, type ? type : "(none)",
                         want[j].type);
        }
        check_histograms(&sc);
        tp_free(&sc);
    }

    /* Three more connections to the leader, each in use: counted, and no longer once closed. */
    double conns0 = now_of(L, "keel_server_client_connections", "");
    struct keel *more[3];
    for (int i = 0; i < 3; i++) {
        more[i] = open_member(&c, leader);
        Keel__RangeResponse *rr = NULL;
        assert_int_equal(keel_get(more[i], "s/warm", 6, NULL, &rr), 0);
        keel__range_response__free_unpacked(rr, NULL);
    }
    assert_true(now_of(L, "keel_server_client_connections", "") >= conns0 + 3);
    assert_true(now_of(L, "keel_server_client_connections", "") >= 3);
    for (int i = 0; i < 3; i++)
        keel_close(more[i]);
    wait_series(L, "keel_server_client_connections", "", false, conns0, 10000);

    /* A watch: its connection is a watch stream while the watcher lives. */
    double streams0 = now_of(L, "keel_mvcc_watch_stream_total", "");
    double watchers0 = now_of(L, "keel_watch_watchers", "");
    struct keel *wk = open_member(&c, leader);
    struct keel_watch *w = NULL;
    assert_int_equal(keel_watch_open(wk, "s/w", 3, NULL, on_event, NULL, &w), 0);
    assert_true(now_of(L, "keel_mvcc_watch_stream_total", "") >= streams0 + 1);
    assert_true(now_of(L, "keel_mvcc_watch_stream_total", "") >= 1);
    assert_true(now_of(L, "keel_watch_watchers", "") >= watchers0 + 1);
    assert_int_equal(keel_watch_close(wk, w), 0);
    wait_series(L, "keel_mvcc_watch_stream_total", "", false, streams0, 10000);
    keel_close(wk);

    /* A lease of the minimum TTL, never kept alive: granted, then revoked by the leader as
     * expired, and gone from the count. */
    double leases0 = now_of(L, "keel_server_lease_count", "");
    double expired0 = now_of(L, "keel_server_lease_expired_total", "");
    double grants0 = now_of(L, "keel_server_lease_grant_total", "");
    double revokes0 = now_of(L, "keel_server_lease_revoke_total", "");
    Keel__LeaseGrantResponse *g = NULL;
    assert_int_equal(keel_lease_grant(k, 1, 0, &g), 0);
    keel__lease_grant_response__free_unpacked(g, NULL);
    /* The grant is applied on the leader before it is answered. */
    assert_true(now_of(L, "keel_server_lease_count", "") == leases0 + 1);
    assert_true(now_of(L, "keel_server_lease_grant_total", "") >= grants0 + 1);
    wait_series(L, "keel_server_lease_expired_total", "", true, expired0 + 1, 30000);
    wait_series(L, "keel_server_lease_count", "", false, leases0, 10000);
    assert_true(now_of(L, "keel_server_lease_revoke_total", "") >= revokes0 + 1);
    /* Expiries are the leader's: a follower applies the revoke but counts no expiry. */
    int follower = leader % 3 + 1;
    wait_series(maddr[follower], "keel_server_lease_revoke_total", "", true, 1, 10000);
    assert_true(now_of(maddr[follower], "keel_server_lease_expired_total", "") == 0);

    /* A follower down while the log passes the snapshot threshold many times: the leader takes
     * raft snapshots, and the follower comes back through a checkpoint it fetches. */
    int victim = leader == 3 ? 2 : 3;
    double snaps0 = now_of(L, "keel_server_snapshot_total", "");
    tc_stop(&c, victim, SIGKILL);
    for (int i = 0; i < 400; i++) {
        char key[32];
        snprintf(key, sizeof(key), "s/%04d", i);
        put_or_fail(k, key);
    }
    wait_series(L, "keel_server_snapshot_total", "", true, snaps0 + 1, 20000);
    assert_true(now_of(L, "keel_server_snapshot_duration_seconds_count", "") >= 1);
    assert_int_equal(tc_start(&c, victim), 0);
    wait_series(maddr[victim], "keel_server_checkpoint_fetch_total", "result=\"ok\"", true, 1,
                30000);
    assert_true(now_of(maddr[victim], "keel_server_checkpoint_fetch_duration_seconds_count", "") >=
                1);
    assert_true(tc_log_contains(&c, victim, "checkpoint restored"));

    /* Both followers gone: a write the leader takes cannot commit, leadership is lost, and the
     * proposal is counted failed. */
    double failed0 = now_of(L, "keel_server_proposals_failed_total", "");
    for (int i = 1; i <= 3; i++)
        if (i != leader)
            tc_stop(&c, i, SIGKILL);
    int rv = keel_put(k, "s/lost", 6, "v", 1, NULL, NULL);
    assert_int_not_equal(rv, 0);
    wait_series(L, "keel_server_proposals_failed_total", "", true, failed0 + 1, 15000);
    keel_close(k);
    keel_close(any);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest hist[] = {cmocka_unit_test(histograms)};
    const struct CMUnitTest reject[] = {cmocka_unit_test(rejected)};
    const struct CMUnitTest gw[] = {cmocka_unit_test(gateway)};
    const struct CMUnitTest ser[] = {cmocka_unit_test(series)};
    const struct tu_group groups[] = {
        {"histograms", hist, 1},
        {"rejected", reject, 1},
        {"gateway", gw, 1},
        {"series", ser, 1},
    };
    return tu_run_groups("test_metrics", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
