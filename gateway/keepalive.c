/*
 * Lease/LeaseKeepAlive: etcd's bidirectional keep-alive stream on keel's LeaseKeepAlive request.
 *
 * Each request {ID} becomes one keel lease keep-alive (keel_aclient_request_ex: libkeel routes it
 * to the leader, follows redirects and retries it, keep-alives being idempotent), answered
 * {header, ID, TTL} in request order. A lease keel does not know (expired, revoked, never
 * granted) is TTL 0, not an error, as etcd answers it (v3rpc/lease.go). Any other failure (no
 * leader, timeout) ends the stream with etcd's error after the answers before it, as etcd's
 * stream does; clientv3 then opens a new one.
 *
 * etcd serves one request at a time per stream; we pipeline up to GW_KA_MAX_IN_FLIGHT to keel and
 * keep at most GW_KA_MAX_QUEUED requests per stream (in flight or waiting), a few dozen bytes
 * each: a client sending faster than keel answers gets ResourceExhausted "etcdserver: too many
 * requests" instead of unbounded memory.
 *
 * The client's half-close ends the stream OK once every request is answered (the JSON gateway's
 * /v3/lease/keepalive relies on it). on_cancel waits for the keel requests in flight (their
 * callbacks point at this stream) and then finishes. hasleader streams are refused at once with
 * Unavailable "etcdserver: no leader" when keel has none (leader.h).
 */
#include <stdlib.h>
#include <string.h>

#include <keel/keel.h>

#include "convert.h"
#include "leader.h"
#include "methods.h"

#define GW_KA_MAX_IN_FLIGHT 16   /* keel requests per stream at once */
#define GW_KA_MAX_QUEUED    1024 /* requests per stream not yet answered (in flight or waiting) */

struct ka_req {
    struct ka_req *next;
    struct ka_stream *s;
    int64_t id;
    bool sent, done;
    int64_t ttl;
    Keel__ResponseHeader hdr;
    bool has_hdr;
    int status; /* keel's failure, when done */
    enum gw_code code;
    const char *msg; /* static (gw_error's messages for a NULL response) */
};

struct ka_stream {
    struct gw_call *call; /* NULL once finished */
    struct gw_ctx *ctx;
    char *token;                /* the caller's (call.h), copied: every keep-alive carries it */
    struct ka_req *head, *tail; /* in arrival order */
    size_t n;                   /* in the list */
    size_t in_flight;
    bool half_closed;
    bool leader_known; /* hasleader checked (or not asked for) */
    bool ending;       /* finish once nothing is in flight */
    enum gw_code end_code;
    const char *end_msg;
    struct gw_leader_ask ask;
};

static void ka_free_reqs(struct ka_stream *s)
{
    while (s->head) {
        struct ka_req *r = s->head;
        s->head = r->next;
        free(r);
    }
    s->tail = NULL;
    s->n = 0;
}

/* Finish (when nothing refers to the stream any more) and free. */
static void ka_maybe_free(struct ka_stream *s)
{
    if (!s->ending || s->in_flight > 0)
        return;
    gw_leader_forget(&s->ask);
    ka_free_reqs(s);
    if (s->call) {
        struct gw_call *c = s->call;
        s->call = NULL;
        c->state = NULL;
        gw_call_finish(c, s->end_code, s->end_msg);
    }
    free(s->token);
    free(s);
}

static void ka_end(struct ka_stream *s, enum gw_code code, const char *msg)
{
    if (s->ending)
        return;
    s->ending = true;
    s->end_code = code;
    s->end_msg = msg;
    ka_maybe_free(s);
}

static void ka_pump(struct ka_stream *s);

static void on_answer(int status, const Keel__Response *resp, void *data)
{
    struct ka_req *r = data;
    struct ka_stream *s = r->s;
    s->in_flight--;
    if (s->ending) {
        /* Its record stays on the list, freed with the stream once nothing is in flight. */
        r->done = true;
        ka_maybe_free(s);
        return;
    }
    r->done = true;
    r->status = status;
    if (resp->header) {
        r->hdr = *resp->header;
        r->has_hdr = true;
    }
    if (status == 0 && resp->body_case == KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE &&
        resp->lease_keep_alive) {
        r->ttl = resp->lease_keep_alive->ttl > 0 ? resp->lease_keep_alive->ttl : 0;
    } else if (status == 0 || status == KEEL_ELEASENOTFOUND) {
        r->ttl = 0; /* unknown lease: etcd answers TTL 0 */
        r->status = 0;
    } else {
        r->code = gw_error(status, NULL, &r->msg);
    }
    ka_pump(s);
}

/* Answer what is done at the head, send what may go, finish when all is answered. */
static void ka_pump(struct ka_stream *s)
{
    while (!s->ending && s->head && s->head->done) {
        struct ka_req *r = s->head;
        if (r->status != 0) {
            ka_end(s, r->code, r->msg);
            return;
        }
        Etcdserverpb__ResponseHeader h;
        etcdserverpb__response_header__init(&h);
        if (r->has_hdr) {
            h.cluster_id = r->hdr.cluster_id;
            h.member_id = r->hdr.member_id;
            h.revision = r->hdr.revision;
            h.raft_term = r->hdr.raft_term;
        }
        Etcdserverpb__LeaseKeepAliveResponse m = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
        m.header = &h;
        m.id = r->id;
        m.ttl = r->ttl;
        s->head = r->next;
        if (!s->head)
            s->tail = NULL;
        s->n--;
        free(r);
        if (gw_call_send(s->call, &m.base) != 0) {
            ka_end(s, GW_CANCELLED, "context canceled");
            return;
        }
    }
    if (s->ending)
        return;
    if (s->leader_known) {
        for (struct ka_req *r = s->head; r && s->in_flight < GW_KA_MAX_IN_FLIGHT; r = r->next) {
            if (r->sent)
                continue;
            Keel__LeaseKeepAliveRequest ka = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
            ka.id = r->id;
            Keel__Request req = KEEL__REQUEST__INIT;
            req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
            req.lease_keep_alive = &ka;
            req.token = s->token;
            struct keel_call_opts o = {.timeout_ms = s->ctx->request_timeout_ms};
            int rv = keel_aclient_request_ex(s->ctx->ac, &req, &o, on_answer, r);
            r->sent = true;
            if (rv != 0) {
                r->done = true;
                r->status = rv;
                r->code = gw_error(rv, NULL, &r->msg);
                continue;
            }
            s->in_flight++;
        }
        /* A request that failed to go out is answered (with its error) in its turn. */
        if (s->head && s->head->done) {
            ka_pump(s);
            return;
        }
    }
    if (s->half_closed && !s->head)
        ka_end(s, GW_OK, NULL);
}

static void on_leader(bool has_leader, void *data)
{
    struct ka_stream *s = data;
    if (s->ending)
        return;
    if (!has_leader) {
        ka_end(s, GW_UNAVAILABLE, "etcdserver: no leader");
        return;
    }
    s->leader_known = true;
    ka_pump(s);
}

static void ka_on_message(struct gw_call *c, ProtobufCMessage *msg)
{
    int64_t id = ((Etcdserverpb__LeaseKeepAliveRequest *)msg)->id;
    protobuf_c_message_free_unpacked(msg, NULL);
    struct ka_stream *s = c->state;
    bool fresh = false;
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))) || !(s->token = strdup(c->token ? c->token : ""))) {
            free(s);
            gw_call_finish(c, GW_RESOURCE_EXHAUSTED, "etcdserver: out of memory");
            return;
        }
        s->call = c;
        s->ctx = c->ctx;
        s->leader_known = !c->require_leader;
        c->state = s;
        fresh = true;
    }
    if (s->ending)
        return;
    if (s->n >= GW_KA_MAX_QUEUED) {
        ka_end(s, GW_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
        return;
    }
    struct ka_req *r = calloc(1, sizeof(*r));
    if (!r) {
        ka_end(s, GW_RESOURCE_EXHAUSTED, "etcdserver: out of memory");
        return;
    }
    r->s = s;
    r->id = id;
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->n++;
    if (fresh && c->require_leader) {
        int rv = gw_leader_check(c->ctx, &s->ask, on_leader, s);
        if (rv == 0) {
            ka_end(s, GW_UNAVAILABLE, "etcdserver: no leader");
            return;
        }
        s->leader_known = rv == 1; /* -1: on_leader pumps when the answer comes */
    }
    ka_pump(s);
}

static void ka_on_half_close(struct gw_call *c)
{
    struct ka_stream *s = c->state;
    if (!s) {
        gw_call_finish(c, GW_OK, NULL); /* no request at all */
        return;
    }
    if (s->ending)
        return;
    s->half_closed = true;
    ka_pump(s);
}

static void ka_on_cancel(struct gw_call *c)
{
    struct ka_stream *s = c->state;
    if (!s) {
        gw_call_finish(c, GW_CANCELLED, "context canceled");
        return;
    }
    ka_end(s, GW_CANCELLED, "context canceled");
}

static const struct gw_method methods[] = {
    {
        .grpc_path = "/etcdserverpb.Lease/LeaseKeepAlive",
        .json_path = "lease/keepalive",
        .req = &etcdserverpb__lease_keep_alive_request__descriptor,
        .resp = &etcdserverpb__lease_keep_alive_response__descriptor,
        .kind = GW_BIDI,
        .on_message = ka_on_message,
        .on_half_close = ka_on_half_close,
        .on_cancel = ka_on_cancel,
    },
};

const struct gw_method_table gw_keepalive_table = {methods, sizeof(methods) / sizeof(methods[0])};
