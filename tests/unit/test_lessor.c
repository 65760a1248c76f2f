/*
 * The lessor (server/lessor.h) through its seams: a fake node that holds proposals and barriers,
 * a real proposer over it, batches of applied results built by hand (as the fsm delivers them),
 * and the real loop clock. What must hold:
 *
 *   - a new leader counts nothing until a barrier shows it applied its predecessors' log, and
 *     answers lease requests UNAVAILABLE meanwhile; a follower answers NOT_LEADER;
 *   - never early: a keep-alive of a lease with a checkpoint in the log is answered only once a
 *     reset is applied; a lease kept alive lately gets the full TTL plus an election timeout
 *     from a new leader; a checkpointed one expires at its checkpoint, counted from its apply;
 *   - not forever: a lease nobody keeps alive is written down after one checkpoint interval, and
 *     a new leader expires a checkpointed lease without waiting for a full TTL;
 *   - expiry is proposed as revokes, in bounded batches with a bound on those in flight;
 *   - lost leadership answers waiting keep-alives NOT_LEADER.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "fakes.h"
#include "lessor.h"
#include "propose.h"

#define ELECTION_MS 300

struct fx {
    uv_loop_t loop;
    struct tf_env e;
    struct keel_fsm_progress progress;
    struct keel_propose *propose;
    struct keel_lessor *l;
    size_t seen_calls; /* fake node calls already looked at */
    uint64_t next_req;
};

static struct fx *fixture(void **state, unsigned checkpoint_ms, unsigned max_revokes)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    tf_env_init(&f->e, "lessor");
    struct keel_propose_options po = {
        .raft = &f->e.node.seam, .reply = &f->e.reply, .member_id = TF_SELF};
    assert_int_equal(keel_propose_new(&po, &f->propose), 0);
    struct keel_lessor_options lo = {.loop = &f->loop,
                                     .raft = &f->e.node.seam,
                                     .reply = &f->e.reply,
                                     .propose = f->propose,
                                     .store = f->e.store,
                                     .progress = &f->progress,
                                     .election_ms = ELECTION_MS,
                                     .checkpoint_ms = checkpoint_ms,
                                     .max_revokes = max_revokes};
    assert_int_equal(keel_lessor_new(&lo, &f->l), 0);
    *state = f;
    return f;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    keel_lessor_stop(f->l);
    keel_propose_stop(f->propose);
    for (size_t i = 0; i < f->e.node.n_calls; i++)
        if (!f->e.node.calls[i].completed)
            tf_node_complete(&f->e.node, i, KEEL_ENOTLEADER);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    keel_lessor_free(f->l);
    keel_propose_free(f->propose);
    tf_env_close(&f->e);
    free(f);
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Run the loop's timers for about ms, then send what the lessor proposed meanwhile. */
static void run_for(struct fx *f, unsigned ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    keel_propose_flush(f->propose);
}

/* ---- applied batches, as the fsm delivers them ---- */

struct built {
    struct keel_fsm_batch b;
    struct keel_fsm_result r[4096];
    Keel__Response resp[4096];
    Keel__LeaseGrantResponse grant[4096];
    Keel__CommandBatch *owned[64]; /* unpacked proposals the results point into */
    size_t n_owned;
};

static struct built *built_new(void)
{
    struct built *bt = calloc(1, sizeof(*bt));
    bt->b.results = bt->r;
    return bt;
}

static void built_free(struct built *bt)
{
    for (size_t i = 0; i < bt->n_owned; i++)
        keel__command_batch__free_unpacked(bt->owned[i], NULL);
    free(bt);
}

static void add_grant(struct built *bt, int64_t id, int64_t ttl)
{
    size_t i = bt->b.n++;
    keel__lease_grant_response__init(&bt->grant[i]);
    bt->grant[i].id = id;
    bt->grant[i].ttl = ttl;
    keel__response__init(&bt->resp[i]);
    bt->resp[i].body_case = KEEL__RESPONSE__BODY_LEASE_GRANT;
    bt->resp[i].lease_grant = &bt->grant[i];
    bt->r[i] =
        (struct keel_fsm_result){.origin = 2, .request_id = 7, .op = KEEL__COMMAND__OP_LEASE_GRANT};
    bt->r[i].r.response = &bt->resp[i];
}

static void apply(struct fx *f, struct built *bt)
{
    f->progress.committed = f->progress.queued = bt->b.applied_index = ++f->e.node.last_index;
    keel_lessor_applied(f->l, &bt->b);
    built_free(bt);
}

static void grant(struct fx *f, int64_t id, int64_t ttl)
{
    struct built *bt = built_new();
    add_grant(bt, id, ttl);
    apply(f, bt);
}

/* Commit and apply every proposal the lessor made since the last call: each Command becomes a
 * result (its revokes, checkpoints and resets). Returns the number of Commands of each kind. */
static void apply_proposals(struct fx *f, size_t *revokes, size_t *checkpoints, size_t *resets)
{
    struct built *bt = built_new();
    size_t rv = 0, cp = 0, rs = 0;
    for (size_t i = f->seen_calls; i < f->e.node.n_calls; i++) {
        if (f->e.node.calls[i].barrier || f->e.node.calls[i].completed)
            continue;
        Keel__CommandBatch *cb = tf_node_batch(&f->e.node, i);
        bt->owned[bt->n_owned++] = cb;
        tf_node_complete(&f->e.node, i, 0);
        for (size_t j = 0; j < cb->n_commands; j++) {
            Keel__Command *c = cb->commands[j];
            size_t k = bt->b.n++;
            bt->r[k] = (struct keel_fsm_result){
                .origin = c->origin, .request_id = c->request_id, .op = c->op_case, .cmd = c};
            if (c->op_case == KEEL__COMMAND__OP_LEASE_REVOKE)
                rv++;
            else if (c->lease_checkpoint->n_checkpoints == 1 &&
                     c->lease_checkpoint->checkpoints[0]->remaining_ms == 0)
                rs++;
            else
                cp++;
        }
    }
    f->seen_calls = f->e.node.n_calls;
    uv_run(&f->loop, UV_RUN_NOWAIT); /* the proposals' callbacks */
    apply(f, bt);
    if (revokes)
        *revokes = rv;
    if (checkpoints)
        *checkpoints = cp;
    if (resets)
        *resets = rs;
}

/* Commands of one kind proposed (flushed) and not yet looked at by apply_proposals. */
static size_t count_proposed(struct fx *f, Keel__Command__OpCase op)
{
    size_t n = 0;
    for (size_t i = f->seen_calls; i < f->e.node.n_calls; i++) {
        if (f->e.node.calls[i].barrier)
            continue;
        Keel__CommandBatch *cb = tf_node_batch(&f->e.node, i);
        for (size_t j = 0; j < cb->n_commands; j++)
            n += cb->commands[j]->op_case == op;
        keel__command_batch__free_unpacked(cb, NULL);
    }
    return n;
}

/* Become the leader and complete the promotion barrier. */
static void promote(struct fx *f)
{
    tf_node_set_leader(&f->e.node, true, TF_SELF);
    keel_lessor_leader_changed(f->l, true);
    size_t b = f->e.node.n_calls - 1;
    assert_true(f->e.node.calls[b].barrier);
    tf_node_complete(&f->e.node, b, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    f->seen_calls = f->e.node.n_calls;
}

/* ---- requests ---- */

static uint64_t keep_alive(struct fx *f, int64_t id)
{
    Keel__LeaseKeepAliveRequest ka = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
    ka.id = id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = ++f->next_req;
    req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
    req.lease_keep_alive = &ka;
    keel_lessor_request(f->l, 5, &req);
    return req.id;
}

/* Whether request id was answered, and with what TTL (or -1000 - wire code on error). */
static bool answered(struct fx *f, uint64_t id, int64_t *ttl)
{
    for (size_t i = f->e.out.n; i-- > 0;) {
        Keel__Response *r = tf_response(&f->e.out, i);
        bool match = r->id == id;
        if (match)
            *ttl = r->error ? -1000 - (int64_t)r->error->code
                   : r->body_case == KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE
                       ? r->lease_keep_alive->ttl
                       : r->lease_time_to_live->ttl;
        keel__response__free_unpacked(r, NULL);
        if (match)
            return true;
    }
    return false;
}

static int64_t time_to_live(struct fx *f, int64_t id)
{
    Keel__LeaseTimeToLiveRequest t = KEEL__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    t.id = id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = ++f->next_req;
    req.body_case = KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE;
    req.lease_time_to_live = &t;
    keel_lessor_request(f->l, 5, &req);
    int64_t ttl = 0;
    assert_true(answered(f, req.id, &ttl));
    return ttl;
}

/* ---- tests ---- */

static void follower_and_promotion(void **state)
{
    struct fx *f = fixture(state, 5000, 0);
    grant(f, 1, 10);
    int64_t ttl;
    uint64_t id = keep_alive(f, 1);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, -1000 - (int64_t)KEEL__ERROR_CODE__NOT_LEADER);

    tf_node_set_leader(&f->e.node, true, TF_SELF);
    keel_lessor_leader_changed(f->l, true);
    assert_int_equal(tf_node_count(&f->e.node, true), 1);
    id = keep_alive(f, 1);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, -1000 - (int64_t)KEEL__ERROR_CODE__UNAVAILABLE);

    /* The barrier fired but the writer has not reached it yet: still not counting. */
    f->e.node.last_index += 3;
    f->progress.queued = f->e.node.last_index;
    size_t b = f->e.node.n_calls - 1;
    tf_node_complete(&f->e.node, b, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    id = keep_alive(f, 1);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, -1000 - (int64_t)KEEL__ERROR_CODE__UNAVAILABLE);
    /* The writer applies the predecessors' entries: counting now. The grant's checkpoint is in
     * the log, so the first keep-alive waits for a reset. */
    struct built *bt = built_new();
    apply(f, bt);
    f->seen_calls = f->e.node.n_calls;
    id = keep_alive(f, 1);
    assert_false(answered(f, id, &ttl));
    keel_propose_flush(f->propose);
    size_t resets = 0;
    apply_proposals(f, NULL, NULL, &resets);
    assert_int_equal(resets, 1);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, 10);
    /* Renewed since the reset: the next one is answered at once, nothing proposed. */
    id = keep_alive(f, 1);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, 10);
    keel_propose_flush(f->propose);
    assert_int_equal(f->e.node.n_calls, f->seen_calls);
    /* Unknown leases: TTL 0 and -1. */
    id = keep_alive(f, 99);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, 0);
    assert_int_equal(time_to_live(f, 99), -1);
    assert_int_equal(time_to_live(f, 1), 10);
}

static void checkpointed_lease_expires_on_time_after_failover(void **state)
{
    struct fx *f = fixture(state, 5000, 0);
    /* Granted (1 s, written down in full) while this member followed: a new leader expires it
     * one TTL after the grant was applied, not one TTL after its own promotion. */
    uint64_t t0 = now_ms();
    grant(f, 1, 1);
    run_for(f, 600);
    promote(f);
    uint64_t promoted = now_ms();
    uint64_t seen = 0;
    for (int i = 0; i < 300 && seen == 0; i++) {
        run_for(f, 5);
        if (count_proposed(f, KEEL__COMMAND__OP_LEASE_REVOKE) == 1)
            seen = now_ms();
    }
    assert_true(seen != 0);
    assert_true(seen >= t0 + 1000);            /* never early */
    assert_true(seen < promoted + 1000 - 100); /* not a full TTL more after the failover */
}

static void kept_alive_lease_gets_full_ttl_and_election_from_new_leader(void **state)
{
    struct fx *f = fixture(state, 5000, 0);
    grant(f, 1, 1);
    /* A reset in the log: it was kept alive lately, maybe by a deposed leader. */
    Keel__LeaseCheckpoint cp = KEEL__LEASE_CHECKPOINT__INIT;
    cp.id = 1;
    Keel__LeaseCheckpoint *cps[] = {&cp};
    Keel__LeaseCheckpointRequest req = KEEL__LEASE_CHECKPOINT_REQUEST__INIT;
    req.checkpoints = cps;
    req.n_checkpoints = 1;
    Keel__Command c = KEEL__COMMAND__INIT;
    c.op_case = KEEL__COMMAND__OP_LEASE_CHECKPOINT;
    c.lease_checkpoint = &req;
    struct built *bt = built_new();
    bt->b.n = 1;
    bt->r[0] = (struct keel_fsm_result){
        .origin = 2, .request_id = 9, .op = KEEL__COMMAND__OP_LEASE_CHECKPOINT, .cmd = &c};
    apply(f, bt);
    run_for(f, 500);
    uint64_t promoted = now_ms();
    promote(f);
    uint64_t seen = 0;
    for (int i = 0; i < 400 && seen == 0; i++) {
        run_for(f, 5);
        if (count_proposed(f, KEEL__COMMAND__OP_LEASE_REVOKE) == 1)
            seen = now_ms();
    }
    assert_true(seen != 0);
    assert_true(seen >= promoted + 1000 + ELECTION_MS);
}

static void unrenewed_lease_is_checkpointed_and_renewal_resets(void **state)
{
    struct fx *f = fixture(state, 100, 0);
    promote(f);
    grant(f, 1, 30);
    int64_t ttl;
    uint64_t id = keep_alive(f, 1); /* the grant's checkpoint: a reset first */
    keel_propose_flush(f->propose);
    apply_proposals(f, NULL, NULL, NULL);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, 30);
    /* Nobody keeps it alive for longer than the interval: its remaining TTL is written down. */
    size_t cps = 0;
    for (int i = 0; i < 100 && cps == 0; i++) {
        run_for(f, 10);
        cps = count_proposed(f, KEEL__COMMAND__OP_LEASE_CHECKPOINT);
    }
    assert_int_equal(cps, 1);
    Keel__CommandBatch *cb = tf_node_batch(&f->e.node, f->seen_calls);
    int64_t remaining = cb->commands[0]->lease_checkpoint->checkpoints[0]->remaining_ms;
    keel__command_batch__free_unpacked(cb, NULL);
    assert_true(remaining > 25000 && remaining <= 30000);
    /* A keep-alive proposed meanwhile (the checkpoint not yet applied) waits for a reset too. */
    id = keep_alive(f, 1);
    assert_false(answered(f, id, &ttl));
    keel_propose_flush(f->propose);
    size_t resets = 0, checkpoints = 0;
    apply_proposals(f, NULL, &checkpoints, &resets);
    assert_int_equal(checkpoints, 1);
    assert_int_equal(resets, 1);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, 30);
}

/* A keep-alive that arrives just before the deadline of a checkpointed lease waits for its
 * reset; the deadline passing meanwhile must not revoke it, or the answer would renew a lease
 * that is being deleted. */
static void keep_alive_at_the_deadline_renews(void **state)
{
    struct fx *f = fixture(state, 60000, 0);
    promote(f);
    grant(f, 1, 1);
    run_for(f, 800);
    uint64_t id = keep_alive(f, 1);
    int64_t ttl;
    assert_false(answered(f, id, &ttl));
    run_for(f, 500); /* past the deadline, the reset not yet applied */
    assert_int_equal(count_proposed(f, KEEL__COMMAND__OP_LEASE_REVOKE), 0);
    assert_int_equal(time_to_live(f, 1), -1); /* its countdown ran out meanwhile */
    size_t revokes = 0, resets = 0;
    apply_proposals(f, &revokes, NULL, &resets);
    assert_int_equal(revokes, 0);
    assert_int_equal(resets, 1);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, 1);
    run_for(f, 300);
    assert_int_equal(count_proposed(f, KEEL__COMMAND__OP_LEASE_REVOKE), 0);
    assert_int_equal(time_to_live(f, 1), 1);
}

static void mass_expiry_in_bounded_batches(void **state)
{
    struct fx *f = fixture(state, 60000, 100);
    promote(f);
    struct built *bt = built_new();
    for (int64_t id = 1; id <= 1000; id++)
        add_grant(bt, id, 1);
    apply(f, bt);
    run_for(f, 1100);
    /* 100 per turn, 100 in flight at most, whatever the loop ran meanwhile. */
    size_t proposed = count_proposed(f, KEEL__COMMAND__OP_LEASE_REVOKE);
    assert_int_equal(proposed, 100);
    size_t total = 0;
    for (int i = 0; i < 40 && total < 1000; i++) {
        size_t rv = 0;
        apply_proposals(f, &rv, NULL, NULL);
        total += rv;
        run_for(f, 20);
    }
    assert_int_equal(total, 1000);
    assert_int_equal(time_to_live(f, 1), -1);
}

static void lost_leadership_fails_waiting_keep_alives(void **state)
{
    struct fx *f = fixture(state, 5000, 0);
    promote(f);
    grant(f, 1, 30);
    uint64_t id = keep_alive(f, 1);
    int64_t ttl;
    assert_false(answered(f, id, &ttl));
    tf_node_set_leader(&f->e.node, false, 2);
    keel_lessor_leader_changed(f->l, false);
    assert_true(answered(f, id, &ttl));
    assert_int_equal(ttl, -1000 - (int64_t)KEEL__ERROR_CODE__NOT_LEADER);
}

int main(void)
{
#define T(name) cmocka_unit_test_teardown(name, teardown)
    const struct CMUnitTest tests[] = {
        T(follower_and_promotion),
        T(checkpointed_lease_expires_on_time_after_failover),
        T(kept_alive_lease_gets_full_ttl_and_election_from_new_leader),
        T(unrenewed_lease_is_checkpointed_and_renewal_resets),
        T(keep_alive_at_the_deadline_renews),
        T(mass_expiry_in_bounded_batches),
        T(lost_leadership_fails_waiting_keep_alives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
