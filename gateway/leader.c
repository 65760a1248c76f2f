#include "leader.h"

#include <keel/keel.h>

/* The last answer, and the askers waiting for the one in flight. */
static struct {
    struct keel_aclient *ac; /* the client the answer came through */
    uv_loop_t *loop;         /* its loop */
    uint64_t at;             /* uv_now when it was learned; 0: never */
    bool has;
    bool in_flight;
    struct gw_leader_ask *head, *tail;
} g;

static void unlink_ask(struct gw_leader_ask *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        g.head = a->next;
    if (a->next)
        a->next->prev = a->prev;
    else
        g.tail = a->prev;
    a->prev = a->next = NULL;
    a->queued = false;
}

static void on_status(int status, const Keel__Response *resp, void *data)
{
    struct keel_aclient *ac = data;
    bool has = status == 0 && resp->body_case == KEEL__RESPONSE__BODY_STATUS && resp->status &&
               resp->status->leader != 0;
    g.in_flight = false;
    if (ac == g.ac && status != KEEL_ECANCELED && status != KEEL_ECLOSED) {
        g.has = has;
        g.at = uv_now(g.loop) | 1; /* never 0, which means "never learned" */
    }
    /* Answer every asker (each may ask again or forget others: take them one by one). */
    while (g.head) {
        struct gw_leader_ask *a = g.head;
        unlink_ask(a);
        a->cb(has, a->data);
    }
}

int gw_leader_check(struct gw_ctx *ctx, struct gw_leader_ask *a, gw_leader_cb cb, void *data)
{
    uint64_t now = uv_now(ctx->loop);
    if (g.ac != ctx->ac) {
        g.ac = ctx->ac;
        g.loop = ctx->loop;
        g.at = 0;
    }
    if (g.at != 0 && now - g.at < GW_LEADER_FRESH_MS)
        return g.has ? 1 : 0;
    a->cb = cb;
    a->data = data;
    if (!a->queued) {
        a->next = NULL;
        a->prev = g.tail;
        if (g.tail)
            g.tail->next = a;
        else
            g.head = a;
        g.tail = a;
        a->queued = true;
    }
    if (!g.in_flight) {
        Keel__StatusRequest sr = KEEL__STATUS_REQUEST__INIT;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_STATUS;
        req.status = &sr;
        struct keel_call_opts o = {.timeout_ms = ctx->request_timeout_ms};
        if (keel_aclient_request_ex(ctx->ac, &req, &o, on_status, ctx->ac) != 0) {
            unlink_ask(a);
            return 0;
        }
        g.in_flight = true;
    }
    return -1;
}

void gw_leader_forget(struct gw_leader_ask *a)
{
    if (a->queued)
        unlink_ask(a);
}
