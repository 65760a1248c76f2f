/*
 * Dispatch (server/dispatch.h) with the real modules behind it (propose, readindex, watch, a
 * store) and the fakes at the edges: requests go in by session id, answers come out of the
 * recording responder, raft is the fake node. Each request kind lands where the request-kind
 * table and dispatch.h say: writes proposed, linearizable ranges held for a barrier and the
 * writer, serializable ranges and status answered at once, the rest refused with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "err.h"
#include "fakes.h"
#include "testutil.h"

struct fx {
    uv_loop_t loop;
    struct tf_env e;
    struct keel_config cfg;
    struct keel_fsm_progress progress;
    struct keel_snapstream snap;
    struct keel_propose *propose;
    struct keel_readindex *readindex;
    struct keel_watch_hub *watch;
    struct keel_lessor *lessor;
    struct keel_dispatch *d;
    struct keel_arena arena;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    tf_env_init(&f->e, "dispatch");
    f->cfg.member_id = TF_SELF;
    f->cfg.cluster_id = TF_CLUSTER;
    strcpy(f->cfg.name, "one");
    strcpy(f->cfg.zone, "z1");
    tf_node_set_leader(&f->e.node, true, TF_SELF);
    keel_arena_init(&f->arena, 0);
    struct keel_propose_options po = {
        .raft = &f->e.node.seam, .reply = &f->e.reply, .member_id = 1};
    assert_int_equal(keel_propose_new(&po, &f->propose), 0);
    struct keel_readindex_options ro = {.raft = &f->e.node.seam, .progress = &f->progress};
    assert_int_equal(keel_readindex_new(&ro, &f->readindex), 0);
    struct keel_watch_options wo = {
        .loop = &f->loop, .store = f->e.store, .reply = &f->e.reply, .max_per_session = 8};
    assert_int_equal(keel_watch_new(&wo, &f->watch), 0);
    struct keel_lessor_options lo = {.loop = &f->loop,
                                     .raft = &f->e.node.seam,
                                     .reply = &f->e.reply,
                                     .propose = f->propose,
                                     .store = f->e.store,
                                     .progress = &f->progress,
                                     .election_ms = 1000,
                                     .checkpoint_ms = 5000};
    assert_int_equal(keel_lessor_new(&lo, &f->lessor), 0);
    f->snap = (struct keel_snapstream){
        .loop = &f->loop, .store = f->e.store, .reply = &f->e.reply};
    struct keel_dispatch_options o = {.cfg = &f->cfg,
                                      .reply = &f->e.reply,
                                      .raft = &f->e.node.seam,
                                      .store = f->e.store,
                                      .members = &f->e.members,
                                      .propose = f->propose,
                                      .readindex = f->readindex,
                                      .snapstream = &f->snap,
                                      .watch = f->watch,
                                      .lessor = f->lessor};
    assert_int_equal(keel_dispatch_new(&o, &f->d), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    keel_dispatch_stop(f->d);
    keel_propose_stop(f->propose);
    keel_readindex_stop(f->readindex);
    for (size_t i = 0; i < f->e.node.n_calls; i++)
        if (!f->e.node.calls[i].completed)
            tf_node_complete(&f->e.node, i, KEEL_ENOTLEADER);
    keel_watch_stop(f->watch);
    keel_lessor_stop(f->lessor);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    keel_dispatch_free(f->d);
    keel_lessor_free(f->lessor);
    keel_watch_free(f->watch);
    keel_readindex_free(f->readindex);
    keel_propose_free(f->propose);
    keel_arena_close(&f->arena);
    tf_env_close(&f->e);
    free(f);
    return 0;
}

/* Send req (packed and unpacked, as a session would hand it up) from session. */
static void send_req(struct fx *f, uint64_t session, const Keel__Request *req)
{
    size_t len = keel__request__get_packed_size(req);
    uint8_t *buf = malloc(len + 1);
    keel__request__pack(req, buf);
    Keel__Request *copy = keel__request__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(copy);
    keel_dispatch_request(f->d, session, copy);
}

static void range(struct fx *f, uint64_t session, uint64_t id, const char *key, bool serializable)
{
    Keel__RangeRequest r = KEEL__RANGE_REQUEST__INIT;
    r.key.data = (uint8_t *)key;
    r.key.len = strlen(key);
    r.serializable = serializable;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &r;
    send_req(f, session, &req);
}

/* The last message, which must answer id of session; returns it (free it). */
static Keel__Response *last_answer(struct fx *f, uint64_t session, uint64_t id)
{
    assert_int_equal(tf_answer_index(&f->e.out, session, id), f->e.out.n - 1);
    return tf_response(&f->e.out, f->e.out.n - 1);
}

/* The last message's wire error code (0: none); it must answer id of session. */
static int last_code(struct fx *f, uint64_t session, uint64_t id)
{
    assert_int_equal(tf_answer_index(&f->e.out, session, id), f->e.out.n - 1);
    return tf_answer_code(&f->e.out, session, id);
}

static void reads_are_served_where_they_belong(void **state)
{
    struct fx *f = *state;
    struct keel_apply_result res;
    tu_apply(f->e.store, 1, tu_cmd_put(&f->arena, "k", "v"), &f->arena, &res);
    f->progress.queued = f->progress.committed = 1;

    /* Serializable: at once, from the store, no raft. */
    range(f, 5, 100, "k", true);
    assert_int_equal(f->e.node.n_calls, 0);
    Keel__Response *r = last_answer(f, 5, 100);
    assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_RANGE);
    assert_int_equal(r->range->n_kvs, 1);
    assert_memory_equal(r->range->kvs[0]->value.data, "v", 1);
    assert_int_equal(r->header->revision, res.revision);
    keel__response__free_unpacked(r, NULL);

    /* Linearizable: only after the barrier, and it sees what the writer committed by then. */
    size_t before = f->e.out.n;
    range(f, 5, 101, "k", false);
    assert_int_equal(tf_node_count(&f->e.node, true), 1);
    assert_int_equal(f->e.out.n, before);
    tu_apply(f->e.store, 2, tu_cmd_put(&f->arena, "k", "w"), &f->arena, &res);
    f->progress.queued = 2; /* handed to the fsm before the barrier completed */
    tf_node_complete(&f->e.node, 0, 0);
    assert_int_equal(f->e.out.n, before); /* the writer has not committed 2 yet */
    f->progress.committed = 2;
    keel_readindex_applied(f->readindex);
    r = last_answer(f, 5, 101);
    assert_memory_equal(r->range->kvs[0]->value.data, "w", 1);
    keel__response__free_unpacked(r, NULL);

    /* A client that left meanwhile is not served. */
    range(f, 6, 102, "k", false);
    tf_responder_close_session(&f->e.out, 6);
    before = f->e.out.n;
    tf_node_complete(&f->e.node, 1, 0);
    assert_int_equal(f->e.out.n, before);

    /* A follower refuses linearizable reads and writes, and still serves serializable ones. */
    tf_node_set_leader(&f->e.node, false, 2);
    range(f, 5, 103, "k", false);
    assert_int_equal(last_code(f, 5, 103), keel_err_to_wire(KEEL_ENOTLEADER));
    range(f, 5, 104, "k", true);
    assert_int_equal(last_code(f, 5, 104), 0);
}

static void writes_go_to_propose(void **state)
{
    struct fx *f = *state;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)"k";
    put.key.len = 1;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = 100;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    send_req(f, 5, &req);
    Keel__LeaseGrantRequest grant = KEEL__LEASE_GRANT_REQUEST__INIT;
    grant.id = 9;
    grant.ttl = 10;
    req.id = 101;
    req.body_case = KEEL__REQUEST__BODY_LEASE_GRANT;
    req.lease_grant = &grant;
    send_req(f, 5, &req);
    assert_int_equal(f->e.out.n, 0);
    keel_propose_flush(f->propose);
    Keel__CommandBatch *b = tf_node_batch(&f->e.node, 0);
    assert_int_equal(b->n_commands, 2);
    assert_int_equal(b->commands[0]->op_case, KEEL__COMMAND__OP_PUT);
    assert_int_equal(b->commands[1]->op_case, KEEL__COMMAND__OP_LEASE_GRANT);
    assert_int_equal(b->commands[1]->lease_grant->ttl, 10);
    keel__command_batch__free_unpacked(b, NULL);
}

static void the_rest_is_answered_or_refused(void **state)
{
    struct fx *f = *state;
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__StatusRequest st = KEEL__STATUS_REQUEST__INIT;
    req.id = 1;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &st;
    f->e.node.term = 7;
    send_req(f, 5, &req);
    Keel__Response *r = last_answer(f, 5, 1);
    assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_STATUS);
    assert_string_equal(r->status->name, "one");
    assert_int_equal(r->status->raftterm, 7);
    assert_int_equal(r->header->raft_term, 7);
    keel__response__free_unpacked(r, NULL);

    /* A write keeld does not serve yet, and a request with no body. */
    Keel__MemberAddRequest ma = KEEL__MEMBER_ADD_REQUEST__INIT;
    req.id = 2;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_ADD;
    req.member_add = &ma;
    send_req(f, 5, &req);
    assert_int_equal(last_code(f, 5, 2), keel_err_to_wire(KEEL_EUNSUPPORTED));
    assert_int_equal(f->e.node.n_calls, 0);
    req.id = 3;
    req.body_case = KEEL__REQUEST__BODY__NOT_SET;
    send_req(f, 5, &req);
    assert_int_equal(last_code(f, 5, 3), keel_err_to_wire(KEEL_EINVAL));

    /* Watches reach the hub. */
    Keel__WatchCreateRequest wc = KEEL__WATCH_CREATE_REQUEST__INIT;
    wc.key.data = (uint8_t *)"w";
    wc.key.len = 1;
    req.id = 4;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &wc;
    send_req(f, 5, &req);
    r = last_answer(f, 5, 4);
    assert_true(r->watch->created);
    keel__response__free_unpacked(r, NULL);
    assert_int_equal(keel_watch_count(f->watch), 1);

    /* Once stopping, everything is UNAVAILABLE. */
    keel_dispatch_stop(f->d);
    req.id = 5;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &st;
    send_req(f, 5, &req);
    assert_int_equal(last_code(f, 5, 5), keel_err_to_wire(KEEL_EUNAVAILABLE));
}

static void hello_and_refusals(void **state)
{
    struct fx *f = *state;
    Keel__Hello h = KEEL__HELLO__INIT;
    h.protocol_version = 1;
    keel_dispatch_hello(f->d, 5, &h);
    assert_int_equal(f->e.out.n, 1);
    assert_int_equal(f->e.out.msgs[0].kind, KEEL_RESPOND_PUSH);
    Keel__HelloResponse *hr =
        keel__hello_response__unpack(NULL, f->e.out.msgs[0].len, f->e.out.msgs[0].packed);
    assert_non_null(hr);
    assert_int_equal(hr->cluster_id, TF_CLUSTER);
    assert_string_equal(hr->zone, "z1");
    assert_null(hr->error);
    keel__hello_response__free_unpacked(hr, NULL);
    h.protocol_version = 99;
    keel_dispatch_hello(f->d, 5, &h);
    hr = keel__hello_response__unpack(NULL, f->e.out.msgs[1].len, f->e.out.msgs[1].packed);
    assert_non_null(hr->error);
    assert_int_equal(hr->error->code, keel_err_to_wire(KEEL_EUNSUPPORTED));
    keel__hello_response__free_unpacked(hr, NULL);

    keel_dispatch_refuse(f->d, 5, KEEL_EBADFRAME, "frame does not decode as a Request");
    assert_int_equal(f->e.out.msgs[2].kind, KEEL_RESPOND_PUSH);
    Keel__Response *r = tf_response(&f->e.out, 2);
    assert_int_equal(r->error->code, keel_err_to_wire(KEEL_EBADFRAME));
    assert_string_equal(r->error->message, "frame does not decode as a Request");
    assert_null(r->header);
    keel__response__free_unpacked(r, NULL);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(reads_are_served_where_they_belong),
        T(writes_go_to_propose),
        T(the_rest_is_answered_or_refused),
        T(hello_and_refusals),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
