/*
 * The gateway's two bidirectional streams, Watch/Watch (watch.c) and Lease/LeaseKeepAlive
 * (keepalive.c), driven through fakecall against a real 3-member keel cluster:
 * `test_gw_watch <group>`, one ctest entry per group.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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
#include "leader.h"
#include "testutil.h"

#define WAIT_MS 10000

/* One cluster per group; a libkeel client on the test's loop, as the gateway has. */
static struct {
    struct tc_cluster c;
    struct keel *k; /* synchronous client for writes, on its own thread */
    uv_loop_t loop;
    uv_timer_t tick; /* keeps uv_run(UV_RUN_ONCE) from sleeping past fake_call_wait's deadline */
    struct keel_aclient *ac;
    struct gw_ctx ctx;
} F;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static int group_setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    tc_cluster_init(&F.c, 3, "gwstream");
    /* Progress notifications every 300 ms (keeld's default is etcd's 10 min). */
    snprintf(F.c.extra, sizeof(F.c.extra), "--watch-progress-ms 300");
    tc_start_all(&F.c);
    char eps[512];
    tc_endpoints(&F.c, 0, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 4000, .dial_timeout_ms = 500};
    if (keel_open(&F.k, &o) != 0)
        return -1;
    long long deadline = tc_now_ms() + 15000;
    for (;;) {
        Keel__StatusResponse *st = NULL;
        bool ok = keel_status(F.k, NULL, &st) == 0 && st->leader != 0;
        keel_free(st);
        if (ok)
            break;
        if (tc_now_ms() > deadline)
            return -1;
        tu_sleep_ms(50);
    }
    uv_loop_init(&F.loop);
    uv_timer_init(&F.loop, &F.tick);
    uv_timer_start(&F.tick, on_tick, 10, 10);
    if (keel_aclient_init(&F.ac, &F.loop, &o) != 0)
        return -1;
    F.ctx.loop = &F.loop;
    F.ctx.ac = F.ac;
    F.ctx.zone = "";
    F.ctx.request_timeout_ms = 4000;
    F.ctx.max_request_bytes = 1536 * 1024;
    return 0;
}

static void on_closed(void *data)
{
    *(bool *)data = true;
}

static int group_teardown(void **state)
{
    (void)state;
    bool closed = false;
    keel_aclient_close(F.ac, on_closed, &closed);
    uv_close((uv_handle_t *)&F.tick, NULL);
    for (int i = 0; i < 100000 && (!closed || uv_loop_alive(&F.loop)); i++)
        uv_run(&F.loop, UV_RUN_ONCE);
    uv_loop_close(&F.loop);
    keel_close(F.k);
    tc_cluster_close(&F.c);
    return 0;
}

/* Run the loop for ms milliseconds. */
static void spin(uint32_t ms)
{
    uv_update_time(&F.loop);
    uint64_t end = uv_now(&F.loop) + ms;
    while (uv_now(&F.loop) < end) {
        uv_run(&F.loop, UV_RUN_ONCE);
        uv_update_time(&F.loop);
    }
}

/* ---- keel writes (synchronous client) ---- */

static int64_t put(const char *key, const char *val)
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
    int rv = keel_do(F.k, &req, &resp);
    if (rv != 0)
        fail_msg("put %s: %s (%s)", key, keel_strerror(rv), keel_errmsg());
    int64_t rev = resp->header->revision;
    keel_free(resp);
    return rev;
}

static int64_t del(const char *key)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__DeleteRangeRequest d = KEEL__DELETE_RANGE_REQUEST__INIT;
    d.key.data = (uint8_t *)key;
    d.key.len = strlen(key);
    req.body_case = KEEL__REQUEST__BODY_DELETE_RANGE;
    req.delete_range = &d;
    Keel__Response *resp = NULL;
    int rv = keel_do(F.k, &req, &resp);
    if (rv != 0)
        fail_msg("delete %s: %s", key, keel_strerror(rv));
    int64_t rev = resp->header->revision;
    keel_free(resp);
    return rev;
}

/* ---- the watch stream ---- */

static const struct gw_method *method(const char *path)
{
    const struct gw_method *m = gw_method_by_grpc_path(path, strlen(path));
    assert_non_null(m);
    return m;
}

static void open_watch(struct fake_call *f, bool require_leader)
{
    fake_call_init(f, &F.ctx, method("/etcdserverpb.Watch/Watch"));
    f->call.require_leader = require_leader;
}

struct create_opts {
    const char *end; /* NULL: the key alone; "\0"-prefixed strings are not needed here */
    int64_t start;
    int64_t id;
    bool prev_kv, noput, nodelete, progress_notify, fragment;
};

static void create(struct fake_call *f, const char *key, const struct create_opts *o)
{
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key.data = (uint8_t *)key;
    cr.key.len = strlen(key);
    if (o && o->end) {
        cr.range_end.data = (uint8_t *)o->end;
        cr.range_end.len = strlen(o->end);
    }
    Etcdserverpb__WatchCreateRequest__FilterType filters[2];
    if (o) {
        cr.start_revision = o->start;
        cr.watch_id = o->id;
        cr.prev_kv = o->prev_kv;
        cr.progress_notify = o->progress_notify;
        cr.fragment = o->fragment;
        if (o->noput)
            filters[cr.n_filters++] = ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT;
        if (o->nodelete)
            filters[cr.n_filters++] = ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
        cr.filters = filters;
    }
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    r.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    r.create_request = &cr;
    fake_call_deliver(f, &r.base);
}

static void cancel_watch(struct fake_call *f, int64_t id)
{
    Etcdserverpb__WatchCancelRequest c = ETCDSERVERPB__WATCH_CANCEL_REQUEST__INIT;
    c.watch_id = id;
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    r.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST;
    r.cancel_request = &c;
    fake_call_deliver(f, &r.base);
}

static void progress(struct fake_call *f)
{
    Etcdserverpb__WatchProgressRequest p = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    r.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
    r.progress_request = &p;
    fake_call_deliver(f, &r.base);
}

static Etcdserverpb__WatchResponse *wr(struct fake_call *f, size_t i)
{
    assert_true(i < f->n_sent);
    return (Etcdserverpb__WatchResponse *)f->sent[i];
}

static void wait_sent(struct fake_call *f, size_t n)
{
    if (!fake_call_wait(f, &F.loop, n, WAIT_MS))
        fail_msg("waited for %zu responses, have %zu (finished %d: %s)", n, f->n_sent, f->finished,
                 f->message);
    assert_false(f->finished);
}

/* Wait until watch id has received events up to revision rev (or fail). */
static size_t events_of(struct fake_call *f, int64_t id, int64_t *last_rev)
{
    size_t n = 0;
    *last_rev = 0;
    for (size_t i = 0; i < f->n_sent; i++) {
        Etcdserverpb__WatchResponse *r = wr(f, i);
        if (r->watch_id != id)
            continue;
        for (size_t j = 0; j < r->n_events; j++) {
            n++;
            *last_rev = r->events[j]->kv->mod_revision;
        }
    }
    return n;
}

static void wait_rev(struct fake_call *f, int64_t id, int64_t rev)
{
    uv_update_time(&F.loop);
    uint64_t end = uv_now(&F.loop) + WAIT_MS;
    int64_t last = 0;
    while (uv_now(&F.loop) < end) {
        events_of(f, id, &last);
        if (last >= rev)
            return;
        uv_run(&F.loop, UV_RUN_ONCE);
        uv_update_time(&F.loop);
    }
    fail_msg("watch %lld: events up to %lld, wanted %lld", (long long)id, (long long)last,
             (long long)rev);
}

/* Cancel the stream as a vanished client does and wait until the handler finished it. */
static void close_stream(struct fake_call *f)
{
    fake_call_cancel(f);
    assert_true(fake_call_wait(f, &F.loop, 0, WAIT_MS));
    assert_int_equal(f->code, GW_CANCELLED);
    fake_call_clear(f);
}

static void assert_created(Etcdserverpb__WatchResponse *r, int64_t id)
{
    assert_true(r->created);
    assert_false(r->canceled);
    assert_int_equal(r->watch_id, id);
    assert_non_null(r->header);
    assert_true(r->header->cluster_id != 0);
    assert_true(r->header->member_id != 0);
    assert_true(r->header->revision > 0);
    assert_int_equal(r->n_events, 0);
}

/* ---- group "events" ---- */

/* History replays at once: `created` must still come first. */
static void created_before_events(void **state)
{
    (void)state;
    int64_t first = put("/ce/a", "1");
    put("/ce/b", "2");
    int64_t last = put("/ce/c", "3");
    struct fake_call f;
    open_watch(&f, true);
    create(&f, "/ce/", &(struct create_opts){.end = "/ce0", .start = first});
    wait_sent(&f, 1);
    assert_created(wr(&f, 0), 0);
    wait_rev(&f, 0, last);
    int64_t prev = 0;
    size_t n = 0;
    for (size_t i = 1; i < f.n_sent; i++) {
        Etcdserverpb__WatchResponse *r = wr(&f, i);
        assert_false(r->created);
        assert_non_null(r->header);
        for (size_t j = 0; j < r->n_events; j++, n++) {
            assert_true(r->events[j]->kv->mod_revision > prev);
            prev = r->events[j]->kv->mod_revision;
            assert_true(r->header->revision >= prev);
        }
    }
    assert_int_equal(n, 3);
    close_stream(&f);
}

/* Three watchers on one stream: auto ids 0, 1, 2; prev_kv and both filters. */
static void filters_and_prev_kv(void **state)
{
    (void)state;
    struct fake_call f;
    open_watch(&f, false);
    create(&f, "/fp/", &(struct create_opts){.end = "/fp0", .prev_kv = true});
    create(&f, "/fp/", &(struct create_opts){.end = "/fp0", .noput = true});
    create(&f, "/fp/", &(struct create_opts){.end = "/fp0", .nodelete = true});
    wait_sent(&f, 3);
    for (int i = 0; i < 3; i++)
        assert_created(wr(&f, (size_t)i), i);
    int64_t r1 = put("/fp/k", "v1");
    int64_t r2 = put("/fp/k", "v2");
    int64_t r3 = del("/fp/k");
    wait_rev(&f, 0, r3);
    wait_rev(&f, 1, r3);
    wait_rev(&f, 2, r2);
    spin(200); /* nothing more may come */
    int64_t last;
    assert_int_equal(events_of(&f, 0, &last), 3);
    assert_int_equal(events_of(&f, 1, &last), 1);
    assert_int_equal(events_of(&f, 2, &last), 2);
    size_t seen0 = 0;
    for (size_t i = 3; i < f.n_sent; i++) {
        Etcdserverpb__WatchResponse *r = wr(&f, i);
        for (size_t j = 0; j < r->n_events; j++) {
            Etcdserverpb__Event *e = r->events[j];
            int64_t rev = e->kv->mod_revision;
            if (r->watch_id == 0) {
                /* PUT v1 (a create: no prev), PUT v2 (prev v1), DELETE (prev v2). */
                int64_t want[] = {r1, r2, r3};
                assert_int_equal(rev, want[seen0]);
                if (seen0 == 0) {
                    assert_int_equal(e->type, ETCDSERVERPB__EVENT__EVENT_TYPE__PUT);
                    assert_null(e->prev_kv);
                } else {
                    assert_non_null(e->prev_kv);
                    assert_memory_equal(e->prev_kv->value.data, seen0 == 1 ? "v1" : "v2", 2);
                }
                if (seen0 == 2)
                    assert_int_equal(e->type, ETCDSERVERPB__EVENT__EVENT_TYPE__DELETE);
                seen0++;
            } else if (r->watch_id == 1) {
                assert_int_equal(e->type, ETCDSERVERPB__EVENT__EVENT_TYPE__DELETE);
                assert_null(e->prev_kv); /* not asked for */
            } else {
                assert_int_equal(r->watch_id, 2);
                assert_int_equal(e->type, ETCDSERVERPB__EVENT__EVENT_TYPE__PUT);
            }
        }
    }
    close_stream(&f);
}

/* Client-chosen ids, a duplicate (etcd's refusal) and an empty range; auto ids skip ids in use. */
static void ids_and_refusals(void **state)
{
    (void)state;
    struct fake_call f;
    open_watch(&f, false);
    create(&f, "/id/a", &(struct create_opts){.id = 1});
    create(&f, "/id/b", NULL);
    create(&f, "/id/c", NULL);
    create(&f, "/id/d", &(struct create_opts){.id = 1});
    create(&f, "/id/z", &(struct create_opts){.end = "/id/a"});
    wait_sent(&f, 5);
    assert_created(wr(&f, 0), 1);
    assert_created(wr(&f, 1), 0);
    assert_created(wr(&f, 2), 2); /* 1 is in use: skipped */
    for (size_t i = 3; i < 5; i++) {
        Etcdserverpb__WatchResponse *r = wr(&f, i);
        assert_true(r->created);
        assert_true(r->canceled);
        assert_int_equal(r->watch_id, -1);
        assert_non_null(r->header);
    }
    assert_string_equal(wr(&f, 3)->cancel_reason,
                        "mvcc: duplicate watch ID provided on the WatchStream");
    assert_string_equal(wr(&f, 4)->cancel_reason, "mvcc: watcher range is empty");
    /* The stream goes on. */
    int64_t rev = put("/id/b", "x");
    wait_rev(&f, 0, rev);
    close_stream(&f);
}

/* One revision whose events exceed etcd's limit: fragments when asked, else one response. */
static void fragments(void **state)
{
    (void)state;
    struct gw_ctx small = F.ctx;
    small.max_request_bytes = 1024; /* the limit is this plus gRPC's 512 KiB overhead */
    struct fake_call f, whole;
    fake_call_init(&f, &small, method("/etcdserverpb.Watch/Watch"));
    fake_call_init(&whole, &small, method("/etcdserverpb.Watch/Watch"));
    create(&f, "/fr/", &(struct create_opts){.end = "/fr0", .fragment = true});
    create(&whole, "/fr/", &(struct create_opts){.end = "/fr0"});
    wait_sent(&f, 1);
    wait_sent(&whole, 1);
    struct keel_arena a;
    keel_arena_init(&a, 0);
    size_t vlen = 100 * 1024;
    char *big = malloc(vlen + 1);
    assert_non_null(big);
    memset(big, 'x', vlen);
    big[vlen] = 0;
    Keel__TxnRequest *t = tu_txn(&a);
    char key[32];
    for (int i = 0; i < 12; i++) {
        snprintf(key, sizeof(key), "/fr/%02d", i);
        tu_op_put(tu_txn_op(&a, t, 1), tu_put_req(&a, key, big));
    }
    Keel__TxnResponse *tr = NULL;
    assert_int_equal(keel_txn(F.k, t, &tr), 0);
    keel_free(tr);
    free(big);
    keel_arena_close(&a);
    int64_t last;
    uv_update_time(&F.loop);
    uint64_t end = uv_now(&F.loop) + WAIT_MS;
    while ((events_of(&f, 0, &last) < 12 || events_of(&whole, 0, &last) < 12) &&
           uv_now(&F.loop) < end) {
        uv_run(&F.loop, UV_RUN_ONCE);
        uv_update_time(&F.loop);
    }
    assert_int_equal(events_of(&f, 0, &last), 12);
    assert_int_equal(events_of(&whole, 0, &last), 12);
    assert_int_equal(whole.n_sent, 2); /* not asked for: sent whole, as etcd does */
    assert_true(f.n_sent >= 4);        /* 1.2 MB of events in pieces below 513 KiB */
    for (size_t i = 1; i < f.n_sent; i++) {
        Etcdserverpb__WatchResponse *r = wr(&f, i);
        assert_int_equal(r->fragment, i + 1 < f.n_sent);
        assert_true(r->n_events >= 1);
        assert_true(protobuf_c_message_get_packed_size(&r->base) < 1024 + 512 * 1024);
    }
    close_stream(&f);
    close_stream(&whole);
}

/* ---- group "history" ---- */

static void replay_from_revision(void **state)
{
    (void)state;
    int64_t revs[6];
    char key[32];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "/hr/%d", i);
        revs[i] = put(key, "v");
    }
    struct fake_call f;
    open_watch(&f, true);
    create(&f, "/hr/", &(struct create_opts){.end = "/hr0", .start = revs[2]});
    wait_sent(&f, 1);
    assert_created(wr(&f, 0), 0);
    /* (Its header revision is the serving member's: a follower may not have applied revs[5].) */
    wait_rev(&f, 0, revs[5]);
    int64_t last;
    assert_int_equal(events_of(&f, 0, &last), 4); /* revs[2..5] inclusive */
    size_t k = 2;
    for (size_t i = 1; i < f.n_sent; i++)
        for (size_t j = 0; j < wr(&f, i)->n_events; j++)
            assert_int_equal(wr(&f, i)->events[j]->kv->mod_revision, revs[k++]);
    close_stream(&f);
}

static void compacted_start(void **state)
{
    (void)state;
    int64_t r1 = put("/hc/a", "1");
    put("/hc/a", "2");
    int64_t r3 = put("/hc/a", "3");
    assert_int_equal(keel_compact(F.k, r3), 0);
    /* Every member has applied it (a watch may be served by any of them). */
    for (int i = 1; i <= F.c.n; i++) {
        long long deadline = tc_now_ms() + WAIT_MS;
        for (;;) {
            Keel__StatusResponse *st = NULL;
            bool done = keel_status(F.k, F.c.m[i].client, &st) == 0 && st->compactrevision >= r3;
            keel_free(st);
            if (done)
                break;
            assert_true(tc_now_ms() < deadline);
            tu_sleep_ms(10);
        }
    }
    struct fake_call f;
    open_watch(&f, false);
    create(&f, "/hc/a", &(struct create_opts){.start = r1});
    wait_sent(&f, 2);
    assert_created(wr(&f, 0), 0);
    Etcdserverpb__WatchResponse *r = wr(&f, 1);
    assert_int_equal(r->watch_id, 0);
    assert_true(r->canceled);
    assert_false(r->created);
    assert_int_equal(r->compact_revision, r3);
    assert_non_null(r->header);
    assert_int_equal(r->n_events, 0);
    /* The stream still serves other watchers. */
    create(&f, "/hc/a", NULL);
    wait_sent(&f, 3);
    assert_created(wr(&f, 2), 1);
    close_stream(&f);
}

/* ---- group "control" ---- */

static void cancel_request(void **state)
{
    (void)state;
    struct fake_call f;
    open_watch(&f, false);
    create(&f, "/cr/k", NULL);
    create(&f, "/cr/k", NULL);
    wait_sent(&f, 2);
    cancel_watch(&f, 0);
    wait_sent(&f, 3);
    Etcdserverpb__WatchResponse *r = wr(&f, 2);
    assert_int_equal(r->watch_id, 0);
    assert_true(r->canceled);
    assert_non_null(r->header);
    cancel_watch(&f, 42); /* unknown: etcd answers nothing */
    int64_t rev = put("/cr/k", "v");
    wait_rev(&f, 1, rev);
    spin(200);
    int64_t last;
    assert_int_equal(events_of(&f, 0, &last), 0);
    assert_int_equal(f.n_sent, 4);
    close_stream(&f);
}

/* A progress response never claims a revision a watcher of the stream has not delivered. */
static void progress_after_delivery(void **state)
{
    (void)state;
    /* No watcher: the current revision. */
    int64_t now = put("/pg/x", "0");
    struct fake_call f;
    open_watch(&f, true);
    progress(&f);
    wait_sent(&f, 1);
    assert_int_equal(wr(&f, 0)->watch_id, -1);
    assert_true(wr(&f, 0)->header->revision >= now);
    close_stream(&f);

    /* A watcher replaying a long history, another one live. */
    int64_t first = 0, last = 0;
    char key[32];
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "/pg/%03d", i);
        last = put(key, "some value to make the history longer than one batch");
        if (i == 0)
            first = last;
    }
    open_watch(&f, true);
    create(&f, "/pg/", &(struct create_opts){.end = "/pg0", .start = first});
    create(&f, "/other", NULL);
    wait_sent(&f, 1);
    /* The request right behind the creates: answered after both are created. */
    progress(&f);
    size_t p = SIZE_MAX;
    uv_update_time(&F.loop);
    uint64_t end = uv_now(&F.loop) + WAIT_MS;
    while (p == SIZE_MAX && uv_now(&F.loop) < end) {
        for (size_t i = 0; i < f.n_sent; i++)
            if (wr(&f, i)->watch_id == -1)
                p = i;
        uv_run(&F.loop, UV_RUN_ONCE);
        uv_update_time(&F.loop);
    }
    assert_true(p != SIZE_MAX);
    int64_t prog = wr(&f, p)->header->revision;
    assert_true(prog > 0);
    /* Every event at or below prog came before it. */
    int64_t delivered = 0;
    bool created1 = false;
    for (size_t i = 0; i < p; i++) {
        Etcdserverpb__WatchResponse *r = wr(&f, i);
        created1 |= r->created && r->watch_id == 1;
        for (size_t j = 0; j < r->n_events; j++)
            delivered = r->events[j]->kv->mod_revision;
    }
    assert_true(created1);
    int64_t want = prog < last ? prog : last;
    assert_true(delivered >= want);
    for (size_t i = p + 1; i < f.n_sent; i++)
        for (size_t j = 0; j < wr(&f, i)->n_events; j++)
            assert_true(wr(&f, i)->events[j]->kv->mod_revision > prog);
    /* Once caught up, a progress request reaches the current revision. */
    wait_rev(&f, 0, last);
    size_t before = f.n_sent;
    progress(&f);
    wait_sent(&f, before + 1);
    assert_int_equal(wr(&f, before)->watch_id, -1);
    assert_true(wr(&f, before)->header->revision >= last);
    close_stream(&f);
}

/* progress_notify: periodic {header, watch_id} with no events once the watcher is caught up. */
static void progress_notify(void **state)
{
    (void)state;
    struct fake_call f;
    open_watch(&f, false);
    create(&f, "/pn/k", &(struct create_opts){.progress_notify = true});
    create(&f, "/pn/k", NULL); /* did not ask: gets none */
    wait_sent(&f, 2);
    int64_t rev = put("/pn/k", "v");
    wait_rev(&f, 0, rev);
    /* Count the notices after the event: one sent before it (the interval can elapse between
     * the creates and the put on a busy machine) rightly carries an older revision. */
    size_t after_event = 2;
    for (size_t i = 2; i < f.n_sent; i++)
        if (wr(&f, i)->n_events > 0)
            after_event = i + 1;
    size_t notices = 0;
    uv_update_time(&F.loop);
    uint64_t end = uv_now(&F.loop) + WAIT_MS;
    while (notices < 2 && uv_now(&F.loop) < end) {
        notices = 0;
        for (size_t i = after_event; i < f.n_sent; i++) {
            Etcdserverpb__WatchResponse *r = wr(&f, i);
            if (r->n_events == 0) {
                assert_int_equal(r->watch_id, 0);
                assert_false(r->created || r->canceled);
                assert_int_equal(r->compact_revision, 0);
                assert_true(r->header->revision >= rev);
                notices++;
            }
        }
        uv_run(&F.loop, UV_RUN_ONCE);
        uv_update_time(&F.loop);
    }
    assert_true(notices >= 2);
    close_stream(&f);
}

/* A cancelled stream ends every keel watch and finishes; LSan checks nothing is left. */
static void cancel_releases(void **state)
{
    (void)state;
    struct fake_call f;
    open_watch(&f, false);
    for (int i = 0; i < 5; i++)
        create(&f, "/rel/", &(struct create_opts){.end = "/rel0", .prev_kv = true});
    wait_sent(&f, 3); /* two still being created when the client goes */
    put("/rel/a", "1");
    fake_call_cancel(&f);
    assert_true(fake_call_wait(&f, &F.loop, 0, WAIT_MS));
    assert_int_equal(f.code, GW_CANCELLED);
    fake_call_clear(&f);
    spin(100);
    struct keel_aclient_stats st;
    keel_aclient_stats(F.ac, &st);
    assert_int_equal(st.watches, 0);

    /* Cancelled before any request, and right after one. */
    open_watch(&f, false);
    fake_call_cancel(&f);
    assert_true(f.finished);
    open_watch(&f, true);
    create(&f, "/rel/", &(struct create_opts){.end = "/rel0"});
    fake_call_cancel(&f);
    assert_true(fake_call_wait(&f, &F.loop, 0, WAIT_MS));
    fake_call_clear(&f);
}

/* ---- group "slow" ---- */

/* A client that does not read: the keel watches pause, and resume without loss or duplicate. */
static void slow_consumer(void **state)
{
    (void)state;
    struct fake_call f;
    open_watch(&f, false);
    create(&f, "/sl/", &(struct create_opts){.end = "/sl0"});
    wait_sent(&f, 1);
    f.pending_bytes = 9u << 20; /* over the 8 MiB bound */
    int64_t first = put("/sl/0", "v");
    wait_sent(&f, 2); /* this send finds the queue full: the watch pauses */
    spin(100);
    struct keel_aclient_stats st;
    keel_aclient_stats(F.ac, &st);
    assert_int_equal(st.watches, 0);
    int64_t last = 0;
    char key[32];
    for (int i = 1; i < 50; i++) {
        snprintf(key, sizeof(key), "/sl/%d", i);
        last = put(key, "v");
    }
    spin(300);
    assert_int_equal(f.n_sent, 2); /* nothing queued while the client is full */
    f.pending_bytes = 0;
    wait_rev(&f, 0, last);
    spin(200);
    int64_t expect = first;
    for (size_t i = 1; i < f.n_sent; i++)
        for (size_t j = 0; j < wr(&f, i)->n_events; j++)
            assert_int_equal(wr(&f, i)->events[j]->kv->mod_revision, expect++);
    assert_int_equal(expect, last + 1);
    close_stream(&f);
}

/* ---- group "leader" ---- */

static void no_leader(void **state)
{
    (void)state;
    struct fake_call live;
    open_watch(&live, true);
    create(&live, "/nl/k", NULL);
    wait_sent(&live, 1);
    /* Two of three members gone: the third cannot elect a leader. */
    int survivor = 0;
    for (int i = 1; i <= 3; i++) {
        if (survivor == 0) {
            survivor = i;
            continue;
        }
        tc_stop(&F.c, i, SIGKILL);
    }
    /* Wait (bounded) until the survivor itself reports no leader, then past the gateway's
     * leader cache, so that the gateway's next Status answer can only say "no leader". */
    long long deadline = tc_now_ms() + 15000;
    for (;;) {
        Keel__StatusResponse *st = NULL;
        bool gone = keel_status(F.k, F.c.m[survivor].client, &st) == 0 && st->leader == 0;
        keel_free(st);
        if (gone)
            break;
        assert_true(tc_now_ms() < deadline);
        spin(50);
    }
    spin(GW_LEADER_FRESH_MS + 500);
    struct fake_call f;
    open_watch(&f, true);
    create(&f, "/nl/k", NULL);
    assert_true(fake_call_wait(&f, &F.loop, 0, WAIT_MS));
    assert_int_equal(f.n_sent, 0);
    assert_int_equal(f.code, GW_UNAVAILABLE);
    assert_string_equal(f.message, "etcdserver: no leader");
    /* The stream opened before is cancelled the same way by the periodic check. */
    assert_true(fake_call_wait(&live, &F.loop, 0, 15000));
    assert_int_equal(live.code, GW_UNAVAILABLE);
    assert_string_equal(live.message, "etcdserver: no leader");
    fake_call_clear(&live);
    /* Without hasleader the stream is served (keel's watches need no leader). */
    open_watch(&f, false);
    create(&f, "/nl/k", NULL);
    wait_sent(&f, 1);
    assert_true(wr(&f, 0)->created);
    close_stream(&f);
}

/* ---- group "keepalive" ---- */

static void keepalive_send(struct fake_call *f, int64_t id)
{
    Etcdserverpb__LeaseKeepAliveRequest r = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    r.id = id;
    fake_call_deliver(f, &r.base);
}

static Etcdserverpb__LeaseKeepAliveResponse *kr(struct fake_call *f, size_t i)
{
    assert_true(i < f->n_sent);
    return (Etcdserverpb__LeaseKeepAliveResponse *)f->sent[i];
}

static int64_t grant(int64_t ttl)
{
    Keel__LeaseGrantResponse *g = NULL;
    assert_int_equal(keel_lease_grant(F.k, ttl, 0, &g), 0);
    int64_t id = g->id;
    keel_free(g);
    return id;
}

static void keepalive_stream(void **state)
{
    (void)state;
    put("/ka/x", "v"); /* a fresh store is at revision 0 */
    int64_t live = grant(30), dead = grant(30);
    assert_int_equal(keel_lease_revoke(F.k, dead), 0);
    struct fake_call f;
    fake_call_init(&f, &F.ctx, method("/etcdserverpb.Lease/LeaseKeepAlive"));
    f.call.require_leader = true;
    keepalive_send(&f, live);
    wait_sent(&f, 1);
    assert_int_equal(kr(&f, 0)->id, live);
    assert_int_equal(kr(&f, 0)->ttl, 30);
    assert_non_null(kr(&f, 0)->header);
    assert_true(kr(&f, 0)->header->cluster_id != 0);
    assert_true(kr(&f, 0)->header->revision > 0);
    keepalive_send(&f, dead);
    keepalive_send(&f, 0x7fffffff12345LL); /* never granted */
    wait_sent(&f, 3);
    assert_int_equal(kr(&f, 1)->id, dead);
    assert_int_equal(kr(&f, 1)->ttl, 0);
    assert_int_equal(kr(&f, 2)->ttl, 0);
    /* Many at once (more than the in-flight bound): answered in order. */
    for (int i = 0; i < 100; i++)
        keepalive_send(&f, i % 3 == 0 ? dead : live);
    wait_sent(&f, 103);
    for (int i = 0; i < 100; i++) {
        Etcdserverpb__LeaseKeepAliveResponse *r = kr(&f, 3 + (size_t)i);
        assert_int_equal(r->id, i % 3 == 0 ? dead : live);
        assert_int_equal(r->ttl, i % 3 == 0 ? 0 : 30);
    }
    /* Half-close with requests in flight: answered, then the stream ends OK. */
    keepalive_send(&f, live);
    keepalive_send(&f, live);
    f.call.method->on_half_close(&f.call);
    assert_true(fake_call_wait(&f, &F.loop, 0, WAIT_MS));
    assert_int_equal(f.n_sent, 105);
    assert_int_equal(f.code, GW_OK);
    fake_call_clear(&f);

    /* Cancelled with requests in flight: finishes once they are answered. */
    fake_call_init(&f, &F.ctx, method("/etcdserverpb.Lease/LeaseKeepAlive"));
    for (int i = 0; i < 10; i++)
        keepalive_send(&f, live);
    fake_call_cancel(&f);
    assert_true(fake_call_wait(&f, &F.loop, 0, WAIT_MS));
    assert_int_equal(f.code, GW_CANCELLED);
    fake_call_clear(&f);
    spin(50);
    struct keel_aclient_stats st;
    keel_aclient_stats(F.ac, &st);
    assert_int_equal(st.in_flight, 0);
}

/* ---- groups ---- */

struct group {
    const char *name;
    const struct CMUnitTest *tests;
    size_t n;
};
#define GROUP(name)                                                                                \
    {                                                                                              \
#name, name, sizeof(name) / sizeof(name[0])                                                \
    }

int main(int argc, char **argv)
{
    const struct CMUnitTest events[] = {
        cmocka_unit_test(created_before_events),
        cmocka_unit_test(filters_and_prev_kv),
        cmocka_unit_test(ids_and_refusals),
        cmocka_unit_test(fragments),
    };
    const struct CMUnitTest history[] = {
        cmocka_unit_test(replay_from_revision),
        cmocka_unit_test(compacted_start),
    };
    const struct CMUnitTest control[] = {
        cmocka_unit_test(cancel_request),
        cmocka_unit_test(progress_after_delivery),
        cmocka_unit_test(progress_notify),
        cmocka_unit_test(cancel_releases),
    };
    const struct CMUnitTest slow[] = {cmocka_unit_test(slow_consumer)};
    const struct CMUnitTest leader[] = {cmocka_unit_test(no_leader)};
    const struct CMUnitTest keepalive[] = {cmocka_unit_test(keepalive_stream)};
    const struct group groups[] = {
        GROUP(events), GROUP(history), GROUP(control), GROUP(slow), GROUP(leader), GROUP(keepalive),
    };
    int matched = 0, failed = 0;
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        if (argc >= 2 && strcmp(argv[1], groups[i].name) != 0)
            continue;
        matched = 1;
        failed |= _cmocka_run_group_tests(groups[i].name, groups[i].tests, groups[i].n, group_setup,
                                          group_teardown);
    }
    if (!matched) {
        fprintf(stderr, "test_gw_watch: no group named %s\n", argc >= 2 ? argv[1] : "");
        return 2;
    }
    return failed ? 1 : 0;
}
