/*
 * Fakes for keeld's seams (see fakes.h).
 */
#include "fakes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "testutil.h"

static const uint64_t tf_cluster_id = TF_CLUSTER;

static void *need(void *p)
{
    if (p == NULL) {
        fprintf(stderr, "fakes: out of memory\n");
        abort();
    }
    return p;
}

/* ---- the consensus seam ---- */

static bool fn_is_leader(void *ctx)
{
    return ((struct tf_node *)ctx)->leader;
}

static uint64_t fn_leader(void *ctx)
{
    return ((struct tf_node *)ctx)->leader_id;
}

static uint64_t fn_term(void *ctx)
{
    return ((struct tf_node *)ctx)->term;
}

static uint64_t fn_last_index(void *ctx)
{
    return ((struct tf_node *)ctx)->last_index;
}

static struct tf_call *hold(struct tf_node *n, bool barrier, keel_consensus_cb cb, void *data)
{
    if (n->n_calls == TF_MAX_CALLS) {
        fprintf(stderr, "fakes: more than %d calls held\n", TF_MAX_CALLS);
        abort();
    }
    struct tf_call *c = &n->calls[n->n_calls++];
    memset(c, 0, sizeof(*c));
    c->barrier = barrier;
    c->cb = cb;
    c->data = data;
    return c;
}

static int fn_propose(void *ctx, const Keel__CommandBatch *batch, keel_consensus_cb cb, void *data)
{
    struct tf_node *n = ctx;
    if (n->refuse != 0)
        return n->refuse;
    if (!n->leader)
        return KEEL_ENOTLEADER;
    struct tf_call *c = hold(n, false, cb, data);
    c->len = keel__command_batch__get_packed_size(batch);
    c->packed = need(malloc(c->len + 1));
    keel__command_batch__pack(batch, c->packed);
    n->last_index++;
    return 0;
}

static int fn_barrier(void *ctx, keel_consensus_cb cb, void *data)
{
    struct tf_node *n = ctx;
    if (n->refuse != 0)
        return n->refuse;
    if (!n->leader)
        return KEEL_ENOTLEADER;
    hold(n, true, cb, data);
    n->last_index++;
    return 0;
}

void tf_node_init(struct tf_node *n)
{
    memset(n, 0, sizeof(*n));
    n->term = 1;
    n->seam.ctx = n;
    n->seam.is_leader = fn_is_leader;
    n->seam.leader = fn_leader;
    n->seam.term = fn_term;
    n->seam.last_index = fn_last_index;
    n->seam.propose = fn_propose;
    n->seam.barrier = fn_barrier;
}

void tf_node_close(struct tf_node *n)
{
    for (size_t i = 0; i < n->n_calls; i++)
        free(n->calls[i].packed);
    n->n_calls = 0;
}

void tf_node_set_leader(struct tf_node *n, bool leader, uint64_t leader_id)
{
    n->leader = leader;
    n->leader_id = leader_id;
}

void tf_node_complete(struct tf_node *n, size_t i, int err)
{
    if (i >= n->n_calls || n->calls[i].completed) {
        fprintf(stderr, "fakes: call %zu is not held\n", i);
        abort();
    }
    n->calls[i].completed = true;
    n->calls[i].cb(n->calls[i].data, err);
}

Keel__CommandBatch *tf_node_batch(const struct tf_node *n, size_t i)
{
    if (i >= n->n_calls || n->calls[i].barrier)
        return NULL;
    return need(keel__command_batch__unpack(NULL, n->calls[i].len, n->calls[i].packed));
}

size_t tf_node_count(const struct tf_node *n, bool barriers)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n_calls; i++)
        k += n->calls[i].barrier == barriers;
    return k;
}

/* ---- the responder seam ---- */

static bool gone(const struct tf_responder *r, uint64_t session)
{
    for (size_t i = 0; i < r->n_closed; i++)
        if (r->closed[i] == session)
            return true;
    return false;
}

static int fr_send(void *ctx, uint64_t session, const ProtobufCMessage *msg,
                   enum keel_respond_kind kind)
{
    struct tf_responder *r = ctx;
    if (gone(r, session))
        return KEEL_ECLOSED;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->msgs = need(realloc(r->msgs, r->cap * sizeof(*r->msgs)));
    }
    struct tf_msg *m = &r->msgs[r->n++];
    m->session = session;
    m->kind = kind;
    m->len = protobuf_c_message_get_packed_size(msg);
    m->packed = need(malloc(m->len + 1));
    protobuf_c_message_pack(msg, m->packed);
    return 0;
}

static void fr_done(void *ctx, uint64_t session)
{
    struct tf_responder *r = ctx;
    if (!gone(r, session))
        r->done++;
}

static int fr_backlog(void *ctx, uint64_t session, size_t *bytes)
{
    struct tf_responder *r = ctx;
    if (gone(r, session))
        return KEEL_ECLOSED;
    *bytes = r->backlog;
    return 0;
}

static int fr_on_drain(void *ctx, uint64_t session, keel_drain_cb cb, void *data)
{
    struct tf_responder *r = ctx;
    if (gone(r, session))
        return KEEL_ECLOSED;
    r->drain_cb = cb;
    r->drain_data = data;
    r->drain_session = session;
    return 0;
}

void tf_responder_init(struct tf_responder *r)
{
    memset(r, 0, sizeof(*r));
    r->seam.ctx = r;
    r->seam.send = fr_send;
    r->seam.done = fr_done;
    r->seam.backlog = fr_backlog;
    r->seam.on_drain = fr_on_drain;
}

void tf_responder_clear(struct tf_responder *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->msgs[i].packed);
    r->n = 0;
}

void tf_responder_close(struct tf_responder *r)
{
    tf_responder_clear(r);
    free(r->msgs);
    r->msgs = NULL;
    r->cap = 0;
}

void tf_responder_close_session(struct tf_responder *r, uint64_t session)
{
    if (r->n_closed == sizeof(r->closed) / sizeof(r->closed[0]))
        abort();
    r->closed[r->n_closed++] = session;
}

Keel__Response *tf_response(const struct tf_responder *r, size_t i)
{
    if (i >= r->n) {
        fprintf(stderr, "fakes: no message %zu (%zu recorded)\n", i, r->n);
        abort();
    }
    return need(keel__response__unpack(NULL, r->msgs[i].len, r->msgs[i].packed));
}

size_t tf_answer_index(const struct tf_responder *r, uint64_t session, uint64_t id)
{
    for (size_t i = r->n; i-- > 0;) {
        if (r->msgs[i].session != session || r->msgs[i].kind != KEEL_RESPOND_ANSWER)
            continue;
        Keel__Response *resp = tf_response(r, i);
        uint64_t got = resp->id;
        keel__response__free_unpacked(resp, NULL);
        if (got == id)
            return i;
    }
    fprintf(stderr, "fakes: no answer to request %llu of session %llu\n", (unsigned long long)id,
            (unsigned long long)session);
    abort();
}

int tf_answer_code(const struct tf_responder *r, uint64_t session, uint64_t id)
{
    Keel__Response *resp = tf_response(r, tf_answer_index(r, session, id));
    int code = resp->error ? resp->error->code : 0;
    keel__response__free_unpacked(resp, NULL);
    return code;
}

void tf_env_init(struct tf_env *e, const char *tag)
{
    memset(e, 0, sizeof(*e));
    e->dir = tu_mkdtemp(tag);
    e->store = tu_store_open(e->dir, 0);
    tf_node_init(&e->node);
    tf_responder_init(&e->out);
    e->reply = (struct keel_reply){.out = &e->out.seam,
                                   .raft = &e->node.seam,
                                   .members = &e->members,
                                   .store = e->store,
                                   .cluster_id = &tf_cluster_id,
                                   .member_id = TF_SELF};
}

void tf_env_close(struct tf_env *e)
{
    tf_responder_close(&e->out);
    tf_node_close(&e->node);
    keel_store_close(e->store);
    tu_rmdir(e->dir);
    free(e->dir);
    e->dir = NULL;
}
