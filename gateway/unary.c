/*
 * Unary RPCs over one keel request (see unary.h).
 */
#include "unary.h"

#include <stdlib.h>

#include <keel/keel.h>

#include "err.h"

/* One keel request in flight for a call. Freed by its callback. */
struct gw_unary {
    struct gw_call *call;
    const struct gw_unary_ops *ops;
    int64_t arg;
    bool cancelled; /* the stream went away: finish CANCELLED without translating */
};

static void finish_error(struct gw_call *c, int status, const Keel__Response *resp,
                         const struct gw_unary_ops *ops, int64_t arg)
{
    const char *message = NULL;
    enum gw_code code = gw_error(status, resp, &message);
    if (ops && ops->fail) {
        struct keel_arena a;
        keel_arena_init(&a, 0);
        ProtobufCMessage *m = ops->fail(c, status, resp, arg, &a, &code, &message);
        if (m) {
            gw_call_reply(c, m);
            keel_arena_close(&a);
            return;
        }
        /* The message may live in the arena: finish before closing it (the transport copies). */
        gw_call_finish(c, code, message);
        keel_arena_close(&a);
        return;
    }
    gw_call_finish(c, code, message);
}

static void on_answer(int status, const Keel__Response *resp, void *data)
{
    struct gw_unary *u = data;
    struct gw_call *c = u->call;
    const struct gw_unary_ops *ops = u->ops;
    int64_t arg = u->arg;
    bool cancelled = u->cancelled;
    c->state = NULL;
    free(u);
    if (cancelled) {
        gw_call_finish(c, GW_CANCELLED, "context canceled");
        return;
    }
    if (status != 0) {
        finish_error(c, status, resp, ops, arg);
        return;
    }
    struct keel_arena a;
    keel_arena_init(&a, 0);
    ProtobufCMessage *m = ops->reply(c, resp, arg, &a);
    if (m)
        gw_call_reply(c, m);
    else
        gw_call_finish(c, GW_INTERNAL, GW_MSG_NO_MEMORY);
    keel_arena_close(&a);
}

void gw_unary_send(struct gw_call *c, const Keel__Request *req, const struct gw_unary_ops *ops,
                   int64_t arg)
{
    struct gw_unary *u = malloc(sizeof(*u));
    if (!u) {
        gw_call_finish(c, GW_INTERNAL, GW_MSG_NO_MEMORY);
        return;
    }
    *u = (struct gw_unary){.call = c, .ops = ops, .arg = arg};
    struct keel_call_opts opts = {
        .timeout_ms = c->timeout_ms ? c->timeout_ms : c->ctx->request_timeout_ms,
    };
    Keel__Request mine = *req;
    mine.token = (char *)c->token; /* the caller's; "" (none) leaves libkeel's own */
    c->state = u;
    int rc = keel_aclient_request_ex(c->ctx->ac, &mine, &opts, on_answer, u);
    if (rc != 0) {
        /* Refused before sending: the callback will never run. */
        c->state = NULL;
        free(u);
        finish_error(c, rc, NULL, ops, arg);
    }
}

void gw_unary_on_cancel(struct gw_call *c)
{
    struct gw_unary *u = c->state;
    if (u)
        u->cancelled = true;
}

void gw_unary_fail(struct gw_call *c, ProtobufCMessage *msg, enum gw_code code, const char *message)
{
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    gw_call_finish(c, code, message);
}
