/*
 * Proposals (server/propose.h) through their seams: a fake node that holds every entry until
 * the test completes it, a recording responder, and a real store only for validation limits
 * and header revisions. Each test drives one path of a write:
 *
 *   intake refused (not the leader, invalid) -> answered at once, nothing proposed
 *   one loop turn's writes -> one entry, each Command with a fresh id and this member as origin
 *   committed -> answered from the fsm batch, by request id, to the right session and client id
 *   raft refused the entry -> every write of it answered with raft's reason
 *   leadership lost after raft took it -> every write answered UNKNOWN
 *   a turn's writes over the entry cap -> several entries, each within it (issue 9, hole 8)
 *   taken and not yet handed to the writer -> counted in the backlog sessions yield to
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fakes.h"
#include "propose.h"
#include "testutil.h"

#define SELF TF_SELF
#define PEER 2

struct fx {
    struct tf_env e;
    struct keel_member_info infos[2];
    struct keel_propose *p;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    tf_env_init(&f->e, "propose");
    f->infos[0].id = SELF;
    strcpy(f->infos[0].client, "127.0.0.1:2379");
    f->infos[1].id = PEER;
    strcpy(f->infos[1].client, "127.0.0.2:2379");
    f->e.members.v = f->infos;
    f->e.members.n = 2;
    struct keel_propose_options o = {.loop = NULL,
                                     .raft = &f->e.node.seam,
                                     .reply = &f->e.reply,
                                     .member_id = SELF,
                                     .limits = {.max_txn_ops = 4, .max_value_bytes = 1024}};
    assert_int_equal(keel_propose_new(&o, &f->p), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    keel_propose_stop(f->p);
    keel_propose_free(f->p);
    tf_env_close(&f->e);
    free(f);
    return 0;
}

/* A heap Request as a session hands it up (freed with keel__request__free_unpacked). */
static Keel__Request *put_req(uint64_t id, const char *key, const char *value)
{
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)key;
    put.key.len = strlen(key);
    put.value.data = (uint8_t *)value;
    put.value.len = strlen(value);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    uint8_t buf[4096];
    size_t len = keel__request__pack(&req, buf);
    Keel__Request *out = keel__request__unpack(NULL, len, buf);
    assert_non_null(out);
    return out;
}

/* Message i: an answer to client id on session, with error code (0: none). */
static void expect_answer(struct fx *f, size_t i, uint64_t session, uint64_t id, int code)
{
    assert_true(i < f->e.out.n);
    assert_int_equal(f->e.out.msgs[i].session, session);
    assert_int_equal(f->e.out.msgs[i].kind, KEEL_RESPOND_ANSWER);
    Keel__Response *r = tf_response(&f->e.out, i);
    assert_int_equal(r->id, id);
    assert_non_null(r->header);
    assert_int_equal(r->header->cluster_id, TF_CLUSTER);
    assert_int_equal(r->header->member_id, SELF);
    if (code == 0)
        assert_null(r->error);
    else
        assert_int_equal(r->error ? r->error->code : 0, keel_err_to_wire(code));
    keel__response__free_unpacked(r, NULL);
}

/* A committed result for command request_id of origin, as the fsm delivers it. */
struct applied {
    struct keel_fsm_batch b;
    struct keel_fsm_result results[8];
    Keel__Response responses[8];
    Keel__PutResponse puts[8];
};

static void add_result(struct applied *a, uint64_t origin, uint64_t request_id, int err,
                       int64_t revision)
{
    size_t i = a->b.n++;
    struct keel_fsm_result *r = &a->results[i];
    memset(r, 0, sizeof(*r));
    r->origin = origin;
    r->request_id = request_id;
    r->op = KEEL__COMMAND__OP_PUT;
    r->r.err = err;
    r->r.msg = err ? "refused by the store" : NULL;
    r->r.revision = revision;
    keel__response__init(&a->responses[i]);
    keel__put_response__init(&a->puts[i]);
    a->responses[i].body_case = KEEL__RESPONSE__BODY_PUT;
    a->responses[i].put = &a->puts[i];
    r->r.response = &a->responses[i];
    a->b.results = a->results;
}

static void follower_answers_not_leader(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, false, PEER);
    keel_propose_request(f->p, 7, put_req(100, "k", "v"));
    keel_propose_flush(f->p);
    assert_int_equal(f->e.node.n_calls, 0);
    assert_int_equal(f->e.out.n, 1);
    expect_answer(f, 0, 7, 100, KEEL_ENOTLEADER);
    /* The answer names the leader and where to find it. */
    Keel__Response *r = tf_response(&f->e.out, 0);
    assert_int_equal(r->error->leader_id, PEER);
    assert_string_equal(r->error->leader_address, "127.0.0.2:2379");
    keel__response__free_unpacked(r, NULL);
}

static void invalid_write_is_refused_at_intake(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    char big[2048];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    keel_propose_request(f->p, 7, put_req(100, "k", big)); /* over max_value_bytes */
    keel_propose_request(f->p, 7, put_req(101, "", "v"));  /* no key */
    keel_propose_flush(f->p);
    assert_int_equal(f->e.node.n_calls, 0);
    assert_int_equal(f->e.out.n, 2);
    expect_answer(f, 0, 7, 100, KEEL_ETOOLARGE);
    expect_answer(f, 1, 7, 101, KEEL_EINVAL);
}

/* A restart replays the previous incarnation's entries: a result of one of them must never find
 * a request of this incarnation (issue 9, hole 11). Each proposer owns an id space of its own:
 * 64 proposers started back to back (as quick restarts are) draw 64 different ones, and an
 * old incarnation's result is not answered to a new request. */
static void each_incarnation_has_its_own_ids(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    uint64_t spaces[64];
    struct keel_propose_options o = {.raft = &f->e.node.seam,
                                     .reply = &f->e.reply,
                                     .member_id = SELF,
                                     .limits = {.max_txn_ops = 4, .max_value_bytes = 1024}};
    size_t calls = (size_t)f->e.node.n_calls;
    for (int i = 0; i < 64; i++) {
        struct keel_propose *p;
        assert_int_equal(keel_propose_new(&o, &p), 0);
        keel_propose_request(p, 7, put_req(100, "a", "1"));
        keel_propose_flush(p);
        Keel__CommandBatch *b = tf_node_batch(&f->e.node, calls++);
        spaces[i] = b->commands[0]->request_id >> 32;
        keel__command_batch__free_unpacked(b, NULL);
        for (int j = 0; j < i; j++)
            assert_true(spaces[j] != spaces[i]);
        tf_node_complete(&f->e.node, (int)calls - 1, 0);
        keel_propose_stop(p);
        keel_propose_free(p);
    }
}

static void one_turn_is_one_entry_and_results_find_their_requests(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    keel_propose_request(f->p, 7, put_req(100, "a", "1"));
    keel_propose_request(f->p, 8, put_req(100, "b", "2")); /* same client id, other session */
    keel_propose_request(f->p, 7, put_req(101, "c", "3"));
    assert_int_equal(f->e.node.n_calls, 0); /* nothing before the end of the turn */
    keel_propose_flush(f->p);
    assert_int_equal(f->e.node.n_calls, 1);
    keel_propose_flush(f->p); /* an empty turn proposes nothing */
    assert_int_equal(f->e.node.n_calls, 1);

    Keel__CommandBatch *b = tf_node_batch(&f->e.node, 0);
    assert_int_equal(b->n_commands, 3);
    const char *keys[] = {"a", "b", "c"};
    uint64_t ids[3];
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(b->commands[i]->origin, SELF);
        assert_int_equal(b->commands[i]->op_case, KEEL__COMMAND__OP_PUT);
        assert_memory_equal(b->commands[i]->put->key.data, keys[i], 1);
        ids[i] = b->commands[i]->request_id;
        for (size_t j = 0; j < i; j++)
            assert_true(ids[j] != ids[i]);
    }
    keel__command_batch__free_unpacked(b, NULL);
    assert_int_equal(f->e.out.n, 0);

    /* raft took it; answers wait for the writer. */
    tf_node_complete(&f->e.node, 0, 0);
    assert_int_equal(f->e.out.n, 0);

    /* The batch holds results in log order, with another member's command in between that
     * happens to reuse one of our ids, and one of ours the store refused. */
    struct applied a;
    memset(&a, 0, sizeof(a));
    add_result(&a, SELF, ids[2], 0, 11);
    add_result(&a, PEER, ids[0], 0, 12);
    add_result(&a, SELF, ids[1], KEEL_ENOSPACE, 12);
    add_result(&a, SELF, ids[0], 0, 13);
    keel_propose_applied(f->p, &a.b);
    assert_int_equal(f->e.out.n, 3);
    expect_answer(f, 0, 7, 101, 0);
    expect_answer(f, 1, 8, 100, KEEL_ENOSPACE);
    expect_answer(f, 2, 7, 100, 0);
    Keel__Response *r = tf_response(&f->e.out, 2);
    assert_int_equal(r->header->revision, 13);
    assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_PUT);
    keel__response__free_unpacked(r, NULL);

    /* Delivered again (a replay): nobody is answered twice. */
    keel_propose_applied(f->p, &a.b);
    assert_int_equal(f->e.out.n, 3);
}

static void refused_entry_answers_every_write(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    f->e.node.refuse = KEEL_EUNAVAILABLE;
    keel_propose_request(f->p, 7, put_req(100, "a", "1"));
    keel_propose_request(f->p, 7, put_req(101, "b", "2"));
    keel_propose_flush(f->p);
    assert_int_equal(f->e.out.n, 2);
    expect_answer(f, 0, 7, 100, KEEL_EUNAVAILABLE);
    expect_answer(f, 1, 7, 101, KEEL_EUNAVAILABLE);

    /* Leadership went between intake and the end of the turn. */
    tf_responder_clear(&f->e.out);
    f->e.node.refuse = KEEL_ENOTLEADER;
    keel_propose_request(f->p, 7, put_req(102, "c", "3"));
    keel_propose_flush(f->p);
    assert_int_equal(f->e.out.n, 1);
    expect_answer(f, 0, 7, 102, KEEL_ENOTLEADER);
}

static void lost_leadership_means_unknown(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    keel_propose_request(f->p, 7, put_req(100, "a", "1"));
    keel_propose_request(f->p, 9, put_req(200, "b", "2"));
    keel_propose_flush(f->p);
    tf_responder_close_session(&f->e.out, 9); /* that client left meanwhile */
    tf_node_complete(&f->e.node, 0, KEEL_EUNKNOWN);
    assert_int_equal(f->e.out.n, 1);
    expect_answer(f, 0, 7, 100, KEEL_EUNKNOWN);

    /* Should the entry commit after all, nobody is answered twice. */
    Keel__CommandBatch *b = tf_node_batch(&f->e.node, 0);
    struct applied a;
    memset(&a, 0, sizeof(a));
    add_result(&a, SELF, b->commands[0]->request_id, 0, 5);
    keel__command_batch__free_unpacked(b, NULL);
    keel_propose_applied(f->p, &a.b);
    assert_int_equal(f->e.out.n, 1);
}

static void own_commands_ride_along_unanswered(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    Keel__Member m = KEEL__MEMBER__INIT;
    m.id = PEER;
    m.name = "two";
    Keel__Command c = KEEL__COMMAND__INIT;
    c.op_case = KEEL__COMMAND__OP_MEMBER_ATTRS;
    c.member_attrs = &m;
    c.request_id = 12345; /* ignored: the proposer numbers its commands */
    assert_int_equal(keel_propose_command(f->p, &c, NULL, NULL), 0);
    keel_propose_request(f->p, 7, put_req(100, "a", "1"));
    keel_propose_flush(f->p);
    Keel__CommandBatch *b = tf_node_batch(&f->e.node, 0);
    assert_int_equal(b->n_commands, 2);
    assert_int_equal(b->commands[0]->op_case, KEEL__COMMAND__OP_MEMBER_ATTRS);
    assert_int_equal(b->commands[0]->member_attrs->id, PEER);
    assert_int_equal(b->commands[0]->origin, SELF);
    assert_true(b->commands[0]->request_id != 12345);
    uint64_t attrs_id = b->commands[0]->request_id;
    keel__command_batch__free_unpacked(b, NULL);
    /* Leadership lost before it committed: only the client's write is answered. */
    tf_node_complete(&f->e.node, 0, KEEL_EUNKNOWN);
    assert_int_equal(f->e.out.n, 1);
    expect_answer(f, 0, 7, 100, KEEL_EUNKNOWN);
    struct applied a;
    memset(&a, 0, sizeof(a));
    add_result(&a, SELF, attrs_id, 0, 5);
    keel_propose_applied(f->p, &a.b);
    assert_int_equal(f->e.out.n, 1);
}

/* A proposer on the fixture's fakes whose entries hold at most cap bytes. */
static struct keel_propose *capped(struct fx *f, size_t cap)
{
    struct keel_propose_options o = {.raft = &f->e.node.seam,
                                     .reply = &f->e.reply,
                                     .member_id = SELF,
                                     .limits = {.max_txn_ops = 4, .max_value_bytes = 1024},
                                     .max_entry_bytes = cap};
    struct keel_propose *p;
    assert_int_equal(keel_propose_new(&o, &p), 0);
    return p;
}

/* Issue 9, hole 8: one loop turn's writes used to go into one raft entry however many there
 * were. Twenty 1 KiB puts in one turn under a 4 KiB cap become full entries of at most 4 KiB,
 * the writes in their order, each answered once its entry commits. */
static void a_turn_over_the_cap_is_several_entries(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    struct keel_propose *p = capped(f, 4096);
    char val[1001];
    memset(val, 'v', 1000);
    val[1000] = '\0';
    char key[8];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        keel_propose_request(p, 7, put_req(100 + (uint64_t)i, key, val));
    }
    keel_propose_flush(p);
    size_t n = f->e.node.n_calls;
    assert_true(n >= 5); /* 20 x ~1010 bytes in entries of at most 4096 */
    int next = 0;
    size_t last_n = 0;
    struct applied a;
    memset(&a, 0, sizeof(a));
    for (size_t i = 0; i < n; i++) {
        assert_true(f->e.node.calls[i].len <= 4096);
        Keel__CommandBatch *b = tf_node_batch(&f->e.node, i);
        assert_true(b->n_commands >= 1);
        last_n = b->n_commands;
        /* Full: one more write of the same size would not have fitted. */
        if (i + 1 < n)
            assert_true(f->e.node.calls[i].len + f->e.node.calls[i].len / b->n_commands > 4096);
        for (size_t j = 0; j < b->n_commands; j++, next++) {
            snprintf(key, sizeof(key), "k%02d", next);
            assert_int_equal(b->commands[j]->put->key.len, 3);
            assert_memory_equal(b->commands[j]->put->key.data, key, 3);
            if (i == n - 1 && j < 8)
                add_result(&a, SELF, b->commands[j]->request_id, 0, 10 + (int64_t)j);
        }
        keel__command_batch__free_unpacked(b, NULL);
        tf_node_complete(&f->e.node, i, 0);
    }
    assert_int_equal(next, 20);
    assert_int_equal(f->e.out.n, 0);
    /* The last entry commits: exactly its writes are answered. */
    keel_propose_applied(p, &a.b);
    assert_int_equal(f->e.out.n, a.b.n);
    expect_answer(f, 0, 7, 100 + 20 - (uint64_t)last_n, 0);
    keel_propose_stop(p);
    keel_propose_free(p);
}

/* A write larger than the cap on its own is not refused: it goes alone, one entry each. */
static void a_write_over_the_cap_goes_alone(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    struct keel_propose *p = capped(f, 512);
    char val[1001];
    memset(val, 'v', 1000);
    val[1000] = '\0';
    keel_propose_request(p, 7, put_req(100, "a", val));
    keel_propose_request(p, 7, put_req(101, "b", "small"));
    keel_propose_request(p, 7, put_req(102, "c", val));
    keel_propose_flush(p);
    assert_int_equal(f->e.node.n_calls, 3);
    const char *keys = "abc";
    for (size_t i = 0; i < 3; i++) {
        Keel__CommandBatch *b = tf_node_batch(&f->e.node, i);
        assert_int_equal(b->n_commands, 1);
        assert_memory_equal(b->commands[0]->put->key.data, keys + i, 1);
        keel__command_batch__free_unpacked(b, NULL);
        tf_node_complete(&f->e.node, i, 0);
    }
    keel_propose_stop(p);
    keel_propose_free(p);
}

/* What sessions yield to (hole 8): bytes of writes taken, until raft hands their entry to the
 * writer or the entry fails; a write refused at intake is never counted. */
static void backlog_counts_writes_until_the_writer_has_them(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    assert_int_equal(keel_propose_backlog(f->p), 0);
    keel_propose_request(f->p, 7, put_req(100, "a", "1"));
    keel_propose_request(f->p, 7, put_req(101, "", "no key")); /* refused at intake */
    keel_propose_request(f->p, 7, put_req(102, "b", "2"));
    uint64_t taken = keel_propose_backlog(f->p);
    assert_true(taken > 0);
    keel_propose_flush(f->p);
    assert_int_equal(f->e.node.n_calls, 1);
    assert_int_equal(keel_propose_backlog(f->p), f->e.node.calls[0].len); /* the entry exactly */
    assert_int_equal(taken, f->e.node.calls[0].len);
    keel_propose_request(f->p, 7, put_req(103, "c", "3"));
    keel_propose_flush(f->p);
    assert_int_equal(keel_propose_backlog(f->p), f->e.node.calls[0].len + f->e.node.calls[1].len);
    tf_node_complete(&f->e.node, 0, 0); /* handed to the writer */
    assert_int_equal(keel_propose_backlog(f->p), f->e.node.calls[1].len);
    tf_node_complete(&f->e.node, 1, KEEL_EUNKNOWN); /* lost: never reaches the writer here */
    assert_int_equal(keel_propose_backlog(f->p), 0);
    /* Refused by raft at the flush: nothing held. */
    f->e.node.refuse = KEEL_EUNAVAILABLE;
    keel_propose_request(f->p, 7, put_req(104, "d", "4"));
    assert_true(keel_propose_backlog(f->p) > 0);
    keel_propose_flush(f->p);
    assert_int_equal(keel_propose_backlog(f->p), 0);
}

static void stop_flushes_the_turn(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->e.node, true, SELF);
    keel_propose_request(f->p, 7, put_req(100, "a", "1"));
    keel_propose_stop(f->p);
    assert_int_equal(f->e.node.n_calls, 1);
    tf_node_complete(&f->e.node, 0, KEEL_EUNKNOWN); /* raft closing calls back */
    expect_answer(f, 0, 7, 100, KEEL_EUNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(follower_answers_not_leader, setup, teardown),
        cmocka_unit_test_setup_teardown(each_incarnation_has_its_own_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(invalid_write_is_refused_at_intake, setup, teardown),
        cmocka_unit_test_setup_teardown(one_turn_is_one_entry_and_results_find_their_requests,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(refused_entry_answers_every_write, setup, teardown),
        cmocka_unit_test_setup_teardown(lost_leadership_means_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(own_commands_ride_along_unanswered, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_flushes_the_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(a_turn_over_the_cap_is_several_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(a_write_over_the_cap_goes_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(backlog_counts_writes_until_the_writer_has_them, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
