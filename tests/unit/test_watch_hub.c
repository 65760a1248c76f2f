/*
 * The watch hub (server/watch.h) alone: a real store for history, batches built the way the
 * fsm delivers them, and a recording responder in place of the sessions. The guarantees under
 * test are the ones keel promises a watcher:
 *
 *   - every event of its range, in revision order, each revision once, none skipped: across
 *     catch-up from history, the switch to live fan-out (also when the store is ahead of the
 *     batches the loop has seen), and a slow consumer falling back to history and rejoining;
 *   - nothing outside its range, nothing filtered out, prev_kv only when asked;
 *   - created / canceled / progress answers, and errors, answer the request that asked;
 *   - watchers of one connection that take shared events and are sent the same get one message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fakes.h"
#include "testutil.h"
#include "watch.h"

#define CAP 1000 /* session_out_cap */

struct fx {
    uv_loop_t loop;
    struct tf_env e;
    struct keel_watch_hub *hub;
    struct keel_arena arena;
    uint64_t index;
    struct keel_apply_result held[64]; /* applied to the store, not yet delivered */
    size_t n_held;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    tf_env_init(&f->e, "watch_hub");
    keel_arena_init(&f->arena, 0);
    struct keel_watch_options o = {.loop = &f->loop,
                                   .store = f->e.store,
                                   .reply = &f->e.reply,
                                   .max_per_session = 3,
                                   .session_out_cap = CAP,
                                   .progress_ms = 0};
    assert_int_equal(keel_watch_new(&o, &f->hub), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    keel_watch_stop(f->hub);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    keel_watch_free(f->hub);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left behind */
    keel_arena_close(&f->arena);
    tf_env_close(&f->e);
    free(f);
    return 0;
}

/* Apply cmd to the store; the result is held until deliver(). Returns its revision. */
static int64_t apply(struct fx *f, Keel__Command *cmd)
{
    struct keel_apply_result *r = &f->held[f->n_held++];
    tu_apply(f->e.store, ++f->index, cmd, &f->arena, r);
    assert_int_equal(r->err, 0);
    return r->revision;
}

/* Hand the held results to the hub as one committed batch. */
static void deliver(struct fx *f)
{
    struct keel_fsm_result res[64];
    struct keel_fsm_batch b;
    memset(&b, 0, sizeof(b));
    for (size_t i = 0; i < f->n_held; i++) {
        memset(&res[i], 0, sizeof(res[i]));
        res[i].r = f->held[i];
        res[i].op = KEEL__COMMAND__OP_PUT;
    }
    b.results = res;
    b.n = f->n_held;
    keel_watch_applied(f->hub, &b);
    f->n_held = 0;
}

static int64_t put(struct fx *f, const char *key, const char *value)
{
    int64_t rev = apply(f, tu_cmd_put(&f->arena, key, value));
    deliver(f);
    return rev;
}

struct wopts {
    const char *end; /* NULL: the key alone; "\0" as "": every key from key on */
    int64_t start;
    int64_t watch_id;
    bool prev_kv, noput, nodelete, shared;
};

static void create(struct fx *f, uint64_t session, uint64_t req_id, const char *key,
                   const struct wopts *o)
{
    Keel__WatchCreateRequest wc = KEEL__WATCH_CREATE_REQUEST__INIT;
    wc.key.data = (uint8_t *)key;
    wc.key.len = strlen(key);
    if (o && o->end) {
        wc.range_end.data = (uint8_t *)(o->end[0] ? o->end : "\0");
        wc.range_end.len = o->end[0] ? strlen(o->end) : 1;
    }
    wc.start_revision = o ? o->start : 0;
    wc.watch_id = o ? o->watch_id : 0;
    wc.prev_kv = o && o->prev_kv;
    wc.shared_events = o && o->shared;
    Keel__WatchCreateRequest__FilterType filters[2];
    if (o && o->noput)
        filters[wc.n_filters++] = KEEL__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT;
    if (o && o->nodelete)
        filters[wc.n_filters++] = KEEL__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
    wc.filters = filters;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = req_id;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &wc;
    keel_watch_request(f->hub, session, &req);
}

/* One event as a watcher saw it. */
struct seen {
    char key[16];
    int64_t rev;
    int type;
    bool prev_kv;
};

/* Whether r is for the watcher created by req_id: its own, or shared with it. */
static bool for_watcher(const Keel__Response *r, uint64_t req_id)
{
    if (r->body_case != KEEL__RESPONSE__BODY_WATCH)
        return false;
    bool yes = r->id == req_id;
    for (size_t i = 0; i < r->watch->n_shared_ids; i++)
        yes = yes || r->watch->shared_ids[i] == req_id;
    return yes;
}

/* Every event recorded for (session, req_id), in order; asserts they are pushes. */
static size_t events(struct fx *f, uint64_t session, uint64_t req_id, struct seen *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < f->e.out.n; i++) {
        if (f->e.out.msgs[i].session != session)
            continue;
        Keel__Response *r = tf_response(&f->e.out, i);
        if (for_watcher(r, req_id)) {
            for (size_t j = 0; j < r->watch->n_events; j++) {
                assert_int_equal(f->e.out.msgs[i].kind, KEEL_RESPOND_PUSH);
                assert_true(n < max);
                Keel__Event *e = r->watch->events[j];
                memset(&out[n], 0, sizeof(out[n]));
                memcpy(out[n].key, e->kv->key.data, e->kv->key.len < 15 ? e->kv->key.len : 15);
                out[n].rev = e->kv->mod_revision;
                out[n].type = e->type;
                out[n].prev_kv = e->prev_kv != NULL;
                n++;
            }
        }
        keel__response__free_unpacked(r, NULL);
    }
    return n;
}

/* The answer recorded for (session, req_id); free it. */
static Keel__Response *answer(struct fx *f, uint64_t session, uint64_t req_id)
{
    return tf_response(&f->e.out, tf_answer_index(&f->e.out, session, req_id));
}

static void expect_created(struct fx *f, uint64_t session, uint64_t req_id)
{
    Keel__Response *r = answer(f, session, req_id);
    assert_null(r->error);
    assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_WATCH);
    assert_true(r->watch->created);
    assert_non_null(r->header);
    keel__response__free_unpacked(r, NULL);
}

/* Run the loop until session's watcher req_id has seen want events (bounded). */
static size_t run_until_events(struct fx *f, uint64_t session, uint64_t req_id, size_t want,
                               struct seen *out, size_t max)
{
    size_t n = 0;
    for (int i = 0; i < 2000; i++) {
        n = events(f, session, req_id, out, max);
        if (n >= want)
            break;
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (i % 10 == 9)
            tu_sleep_ms(1);
    }
    return n;
}

/* revs[i] == first + i for every i: in order, no gap, no duplicate. */
static void expect_consecutive(const struct seen *s, size_t n, int64_t first)
{
    for (size_t i = 0; i < n; i++)
        if (s[i].rev != first + (int64_t)i)
            fail_msg("event %zu is at revision %lld, expected %lld", i, (long long)s[i].rev,
                     (long long)(first + (int64_t)i));
}

static void live_events_reach_matching_watchers(void **state)
{
    struct fx *f = *state;
    create(f, 1, 10, "a", NULL);                        /* the key a */
    create(f, 2, 20, "a", &(struct wopts){.end = "b"}); /* [a, b) */
    create(f, 3, 30, "b", NULL);                        /* the key b */
    create(f, 3, 31, "ab", &(struct wopts){.end = ""}); /* every key from ab */
    expect_created(f, 1, 10);
    expect_created(f, 2, 20);
    expect_created(f, 3, 30);
    expect_created(f, 3, 31);
    assert_int_equal(keel_watch_count(f->hub), 4);
    int64_t ra = put(f, "a", "1");
    int64_t rab = put(f, "ab", "2");
    int64_t rb = put(f, "b", "3");

    struct seen s[8];
    assert_int_equal(events(f, 1, 10, s, 8), 1);
    assert_string_equal(s[0].key, "a");
    assert_int_equal(s[0].rev, ra);
    assert_int_equal(events(f, 2, 20, s, 8), 2);
    assert_string_equal(s[0].key, "a");
    assert_string_equal(s[1].key, "ab");
    assert_int_equal(s[1].rev, rab);
    assert_int_equal(events(f, 3, 30, s, 8), 1);
    assert_string_equal(s[0].key, "b");
    assert_int_equal(s[0].rev, rb);
    assert_int_equal(events(f, 3, 31, s, 8), 2);
    assert_string_equal(s[0].key, "ab");
    assert_string_equal(s[1].key, "b");
}

/* Event messages recorded for session since message from; each names how many watchers. */
static size_t event_messages(struct fx *f, uint64_t session, size_t from, size_t *named, size_t max)
{
    size_t n = 0;
    for (size_t i = from; i < f->e.out.n; i++) {
        if (f->e.out.msgs[i].session != session)
            continue;
        Keel__Response *r = tf_response(&f->e.out, i);
        if (r->body_case == KEEL__RESPONSE__BODY_WATCH && r->watch->n_events > 0) {
            assert_true(n < max);
            named[n++] = 1 + r->watch->n_shared_ids;
        }
        keel__response__free_unpacked(r, NULL);
    }
    return n;
}

static void alike_watchers_share_one_message(void **state)
{
    struct fx *f = *state;
    struct wopts sh = {.end = "t", .shared = true};
    create(f, 1, 10, "s", &sh);
    create(f, 1, 11, "s", &sh);
    create(f, 1, 12, "s", &(struct wopts){.end = "t", .shared = true, .prev_kv = true});
    create(f, 2, 20, "s", &sh);
    create(f, 2, 21, "s1", &(struct wopts){.shared = true}); /* the key s1 alone */
    create(f, 3, 30, "s", &(struct wopts){.end = "t"});      /* asked for no sharing */
    create(f, 3, 31, "s", &(struct wopts){.end = "t"});
    size_t from = f->e.out.n;
    int64_t r1 = put(f, "s1", "1");
    size_t named[8];
    /* Session 1: 10 and 11 together, 12 (prev_kv) alone. */
    assert_int_equal(event_messages(f, 1, from, named, 8), 2);
    assert_int_equal(named[0] + named[1], 3);
    assert_true(named[0] == 2 || named[1] == 2);
    /* Session 2: 20 and 21 see the same event through different ranges: one message. */
    assert_int_equal(event_messages(f, 2, from, named, 8), 1);
    assert_int_equal(named[0], 2);
    /* Session 3 did not ask: one message each. */
    assert_int_equal(event_messages(f, 3, from, named, 8), 2);
    assert_int_equal(named[0] + named[1], 2);
    /* A second batch: 21's key is not in it, so 20 goes alone; no one is sent r1 again. */
    from = f->e.out.n;
    int64_t r2 = put(f, "s2", "2");
    assert_int_equal(event_messages(f, 2, from, named, 8), 1);
    assert_int_equal(named[0], 1);
    const uint64_t ids[][2] = {{1, 10}, {1, 11}, {1, 12}, {2, 20}, {3, 30}, {3, 31}};
    struct seen s[4];
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(events(f, ids[i][0], ids[i][1], s, 4), 2);
        assert_int_equal(s[0].rev, r1);
        assert_int_equal(s[1].rev, r2);
        assert_int_equal(s[0].prev_kv, false);
    }
    assert_int_equal(events(f, 2, 21, s, 4), 1);
    assert_int_equal(s[0].rev, r1);
}

static void catch_up_joins_live_without_gap_or_duplicate(void **state)
{
    struct fx *f = *state;
    int64_t first = put(f, "x", "1");
    for (int i = 2; i <= 5; i++)
        put(f, "x", "v");
    put(f, "y", "other key");
    /* The store runs ahead of the loop: applied, not yet delivered. */
    apply(f, tu_cmd_put(&f->arena, "x", "6"));
    create(f, 1, 10, "x", &(struct wopts){.start = first + 1});
    expect_created(f, 1, 10);
    struct seen s[32];
    size_t n = run_until_events(f, 1, 10, 5, s, 32);
    assert_int_equal(n, 5); /* revisions first+1 .. first+4, then the undelivered one */
    expect_consecutive(s, 4, first + 1);
    /* The late batch now arrives: its event went out through catch-up already. */
    deliver(f);
    int64_t last = put(f, "x", "7");
    n = events(f, 1, 10, s, 32);
    assert_int_equal(n, 6);
    assert_int_equal(s[5].rev, last);
    for (size_t i = 1; i < n; i++)
        assert_true(s[i].rev > s[i - 1].rev);
}

static void slow_consumer_falls_back_and_rejoins(void **state)
{
    struct fx *f = *state;
    create(f, 1, 10, "k", NULL);
    int64_t r1 = put(f, "k", "1");
    f->e.out.backlog = CAP + 1; /* the client stops reading */
    put(f, "k", "2");
    put(f, "k", "3");
    struct seen s[16];
    assert_int_equal(events(f, 1, 10, s, 16), 1); /* held back, not dropped */
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT); /* no catch-up while the backlog is high */
    assert_int_equal(events(f, 1, 10, s, 16), 1);
    f->e.out.backlog = 0; /* it reads again */
    size_t n = run_until_events(f, 1, 10, 3, s, 16);
    assert_int_equal(n, 3);
    expect_consecutive(s, 3, r1);
    put(f, "k", "4"); /* live again */
    n = events(f, 1, 10, s, 16);
    assert_int_equal(n, 4);
    expect_consecutive(s, 4, r1);
}

static void filters_and_prev_kv(void **state)
{
    struct fx *f = *state;
    put(f, "p", "0");
    create(f, 1, 10, "p", &(struct wopts){.noput = true});
    create(f, 1, 11, "p", &(struct wopts){.prev_kv = true});
    create(f, 1, 12, "p", NULL);
    put(f, "p", "1");
    apply(f, tu_cmd_del(&f->arena, "p", NULL));
    deliver(f);
    struct seen s[8];
    assert_int_equal(events(f, 1, 10, s, 8), 1);
    assert_int_equal(s[0].type, KEEL__EVENT__EVENT_TYPE__DELETE);
    assert_int_equal(events(f, 1, 11, s, 8), 2);
    assert_true(s[0].prev_kv);
    assert_true(s[1].prev_kv);
    assert_int_equal(events(f, 1, 12, s, 8), 2);
    assert_false(s[0].prev_kv);
    assert_false(s[1].prev_kv);
}

static void cancel_and_session_close_stop_events(void **state)
{
    struct fx *f = *state;
    create(f, 1, 10, "c", &(struct wopts){.watch_id = 7});
    create(f, 2, 20, "c", NULL);
    Keel__WatchCancelRequest wc = KEEL__WATCH_CANCEL_REQUEST__INIT;
    wc.watch_id = 7;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = 11;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CANCEL;
    req.watch_cancel = &wc;
    keel_watch_request(f->hub, 1, &req);
    Keel__Response *r = answer(f, 1, 11);
    assert_true(r->watch->canceled);
    assert_int_equal(r->watch->watch_id, 7);
    keel__response__free_unpacked(r, NULL);
    /* Canceling it again: no such watch. */
    keel_watch_request(f->hub, 1, &req);
    size_t last = f->e.out.n - 1;
    r = tf_response(&f->e.out, last);
    assert_int_equal(r->error->code, keel_err_to_wire(KEEL_EINVAL));
    keel__response__free_unpacked(r, NULL);

    keel_watch_session_closed(f->hub, 2);
    assert_int_equal(keel_watch_count(f->hub), 0);
    tf_responder_clear(&f->e.out);
    put(f, "c", "1");
    assert_int_equal(f->e.out.n, 0);
}

static void compacted_start_is_created_then_canceled(void **state)
{
    struct fx *f = *state;
    int64_t r1 = put(f, "z", "1");
    put(f, "z", "2");
    int64_t r3 = put(f, "z", "3");
    apply(f, tu_cmd_compact(&f->arena, r3));
    deliver(f);
    create(f, 1, 10, "z", &(struct wopts){.start = r1});
    expect_created(f, 1, 10);
    bool canceled = false;
    for (size_t i = 0; i < f->e.out.n; i++) {
        Keel__Response *r = tf_response(&f->e.out, i);
        if (r->id == 10 && r->watch && r->watch->canceled) {
            canceled = true;
            assert_int_equal(r->watch->compact_revision, r3);
            assert_int_equal(f->e.out.msgs[i].kind, KEEL_RESPOND_PUSH);
        }
        keel__response__free_unpacked(r, NULL);
    }
    assert_true(canceled);
    assert_int_equal(keel_watch_count(f->hub), 0);
}

static void bad_requests_are_answered(void **state)
{
    struct fx *f = *state;
    create(f, 1, 10, "", NULL);
    assert_int_equal(tf_answer_code(&f->e.out, 1, 10), keel_err_to_wire(KEEL_EINVAL));
    char long_key[600];
    memset(long_key, 'k', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    create(f, 1, 11, long_key, NULL);
    assert_int_equal(tf_answer_code(&f->e.out, 1, 11), keel_err_to_wire(KEEL_EKEYTOOLONG));
    create(f, 1, 12, "a", &(struct wopts){.watch_id = 5});
    create(f, 1, 13, "b", &(struct wopts){.watch_id = 5});
    assert_int_equal(tf_answer_code(&f->e.out, 1, 13), keel_err_to_wire(KEEL_EINVAL));
    create(f, 1, 14, "c", NULL);
    create(f, 1, 15, "d", NULL);
    create(f, 1, 16, "e", NULL); /* a fourth: over max_per_session */
    assert_int_equal(tf_answer_code(&f->e.out, 1, 16), keel_err_to_wire(KEEL_ETOOMANYREQUESTS));
    create(f, 2, 20, "e", NULL); /* the limit is per session */
    assert_int_equal(tf_answer_code(&f->e.out, 2, 20), 0);
    assert_int_equal(keel_watch_count(f->hub), 4);
    /* Answers to a session that is gone go nowhere and break nothing. */
    tf_responder_close_session(&f->e.out, 3);
    create(f, 3, 30, "x", NULL);
    put(f, "x", "1");
}

static void progress_is_held_back_by_catching_up_watchers(void **state)
{
    struct fx *f = *state;
    int64_t r1 = put(f, "q", "1");
    put(f, "q", "2");
    int64_t r3 = put(f, "q", "3");
    Keel__WatchProgressRequest wp = KEEL__WATCH_PROGRESS_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = 40;
    req.body_case = KEEL__REQUEST__BODY_WATCH_PROGRESS;
    req.watch_progress = &wp;
    keel_watch_request(f->hub, 1, &req);
    Keel__Response *r = answer(f, 1, 40);
    assert_int_equal(r->watch->watch_id, -1);
    assert_int_equal(r->header->revision, r3);
    keel__response__free_unpacked(r, NULL);
    /* A watcher from r1 has been sent nothing yet: progress may promise only r1 - 1. */
    f->e.out.backlog = CAP; /* keep it catching up */
    create(f, 1, 10, "q", &(struct wopts){.start = r1});
    req.id = 41;
    keel_watch_request(f->hub, 1, &req);
    r = answer(f, 1, 41);
    assert_int_equal(r->header->revision, r1 - 1);
    keel__response__free_unpacked(r, NULL);
}

/* A checkpoint replaces the store (a follower that fell behind the leader's log): the revisions
 * it brings never come through a batch. A synced watcher must read them from history, in
 * order, and then go on live: before, it stayed synced and skipped them for good. */
static void checkpoint_restore_moves_watchers_to_history(void **state)
{
    struct fx *f = *state;
    create(f, 1, 10, "a", &(struct wopts){.end = "b"});
    expect_created(f, 1, 10);
    int64_t r1 = put(f, "a1", "x");

    /* The leader's store: the same first entry, then three more this member never applied. */
    char *dir = tu_mkdtemp("watch_hub_leader");
    struct keel_store *leader = tu_store_open(dir, 0);
    struct keel_arena a;
    keel_arena_init(&a, 0);
    struct keel_apply_result r;
    tu_apply(leader, 1, tu_cmd_put(&a, "a1", "x"), &a, &r);
    tu_apply(leader, 2, tu_cmd_put(&a, "a2", "y"), &a, &r);
    tu_apply(leader, 3, tu_cmd_put(&a, "zz", "out of range"), &a, &r);
    tu_apply(leader, 4, tu_cmd_put(&a, "a1", "z"), &a, &r);
    FILE *fp = tmpfile();
    assert_non_null(fp);
    assert_int_equal(keel_store_snapshot(leader, fileno(fp), false), 0);
    assert_int_equal(fseek(fp, 0, SEEK_SET), 0);
    assert_int_equal(keel_store_restore(f->e.store, fileno(fp), 0), 0);
    fclose(fp);
    keel_store_close(leader);
    tu_rmdir(dir);
    free(dir);
    keel_arena_close(&a);

    struct keel_fsm_batch b;
    memset(&b, 0, sizeof(b));
    b.restored = true;
    b.applied_index = 4;
    keel_watch_applied(f->hub, &b);
    f->index = 4;
    struct seen s[8];
    assert_int_equal(run_until_events(f, 1, 10, 3, s, 8), 3);
    assert_string_equal(s[0].key, "a1"); /* live, before the checkpoint */
    assert_int_equal(s[0].rev, r1);
    assert_string_equal(s[1].key, "a2"); /* from history, after it */
    assert_int_equal(s[1].rev, r1 + 1);
    assert_string_equal(s[2].key, "a1"); /* zz at r1 + 2 is outside the range */
    assert_int_equal(s[2].rev, r1 + 3);
    /* Then live again, without a duplicate. */
    int64_t r5 = put(f, "a3", "w");
    assert_int_equal(run_until_events(f, 1, 10, 4, s, 8), 4);
    assert_int_equal(s[3].rev, r5);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(live_events_reach_matching_watchers),
        T(alike_watchers_share_one_message),
        T(catch_up_joins_live_without_gap_or_duplicate),
        T(slow_consumer_falls_back_and_rejoins),
        T(filters_and_prev_kv),
        T(cancel_and_session_close_stop_events),
        T(compacted_start_is_created_then_canceled),
        T(bad_requests_are_answered),
        T(progress_is_held_back_by_catching_up_watchers),
        T(checkpoint_restore_moves_watchers_to_history),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
