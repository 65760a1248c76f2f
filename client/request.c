/*
 * Requests: submit, route, retry, answer, expire.
 *
 * A request is an op (op.h) with a callback, found again by its id through the slot table and
 * by its deadline through the heap. It is sent again only when that is safe: it was never
 * written, or the member answered NOT_LEADER or UNAVAILABLE (it did nothing), or it is
 * idempotent and its connection dropped. Local failures are queued on ac->done and delivered
 * from the drain of the loop turn (client.c); server answers are delivered at once.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pieces.h"
#include "reqkind.h"

#define KC_RETRY_BASE_MS 25
#define KC_RETRY_CAP_MS  500

/* ---------------------------------------------------------------------------------------------
 * Kinds of requests
 */

/* What the client needs to know of a request's kind. */
struct kc_kind {
    int status;      /* 0, KEEL_EINVAL (no body) or KEEL_EUNSUPPORTED (not a request here) */
    uint8_t route;   /* KC_ROUTE_LEADER or KC_ROUTE_ANY */
    bool idempotent; /* sending it twice changes nothing */
};

/* The one place the client classifies requests, from proto's table of request kinds (the one
 * keeld's dispatch uses): writes and linearizable reads go to the leader, and only idempotent
 * requests are retried after they may have been sent. Streams have their own API (watch.c). */
static struct kc_kind kind_of(const Keel__Request *req)
{
    struct kc_kind k = {0, KC_ROUTE_LEADER, false};
    const struct keel_reqkind *rk = keel_reqkind_of(req->body_case);
    if (rk == NULL) {
        k.status = req->body_case == KEEL__REQUEST__BODY__NOT_SET ? KEEL_EINVAL : KEEL_EUNSUPPORTED;
        return k;
    }
    if (rk->flags & KEEL_REQKIND_STREAM) {
        k.status = KEEL_EUNSUPPORTED;
        return k;
    }
    k.idempotent = keel_reqkind_is_idempotent(req);
    k.route = keel_reqkind_is_leader_only(req) ? KC_ROUTE_LEADER : KC_ROUTE_ANY;
    return k;
}

bool keel_request_is_idempotent(const Keel__Request *req)
{
    return kind_of(req).idempotent;
}

/* ---------------------------------------------------------------------------------------------
 * Completion
 */

static void op_unlink(struct keel_aclient *ac, struct kc_op *op)
{
    switch (op->where) {
    case KC_WAITING:
        kc_list_remove(&ac->waiting, op);
        break;
    case KC_PENDING:
        kc_list_remove(&op->conn->pending, op);
        break;
    case KC_INFLIGHT:
        kc_list_remove(&op->conn->inflight, op);
        break;
    case KC_DONE:
        kc_list_remove(&ac->done, op);
        break;
    default:
        break;
    }
    op->where = KC_NOWHERE;
    op->conn = NULL;
}

/* Take op off everything that can find it: its list, the heap, its slot. */
static void op_forget(struct keel_aclient *ac, struct kc_op *op)
{
    op_unlink(ac, op);
    kc_heap_remove(&ac->heap, op);
    kc_slots_give(&ac->slots, (uint32_t)op->id, op);
}

/* Finish op with a local failure; its callback runs from the drain. */
static void op_fail(struct keel_aclient *ac, struct kc_op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void op_fail(struct keel_aclient *ac, struct kc_op *op, int status, const char *fmt, ...)
{
    op_forget(ac, op);
    op->status = status;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        op->msg = kc_vmsg(fmt, ap);
        va_end(ap);
    }
    op->where = KC_DONE;
    kc_list_push(&ac->done, op);
    kc_kick(ac);
}

/* A one-way op leaves no trace: no callback, no counters. */
static void op_discard(struct keel_aclient *ac, struct kc_op *op)
{
    op_unlink(ac, op);
    kc_op_close(&ac->pool, op);
}

void kc_requests_written(struct keel_aclient *ac, struct kc_op *op)
{
    kc_op_close(&ac->pool, op);
}

/* Deliver a server answer now: resp lives in the connection's arena only until the next frame. */
static void op_answer(struct keel_aclient *ac, struct kc_op *op, int status,
                      const Keel__Response *resp)
{
    op_forget(ac, op);
    ac->stats.completed++;
    ac->stats.in_flight--;
    op->cb(status, resp, op->data);
    kc_op_close(&ac->pool, op);
}

void kc_requests_drain(struct keel_aclient *ac)
{
    struct kc_op *op;
    while ((op = ac->done.head) != NULL) {
        kc_list_remove(&ac->done, op);
        op->where = KC_NOWHERE;
        Keel__Response resp = KEEL__RESPONSE__INIT;
        Keel__Error err = KEEL__ERROR__INIT;
        err.code = keel_err_to_wire(op->status);
        err.message = op->msg ? op->msg : (char *)keel_strerror(op->status);
        resp.id = op->id;
        resp.error = &err;
        ac->stats.completed++;
        ac->stats.in_flight--;
        op->cb(op->status, &resp, op->data);
        kc_op_close(&ac->pool, op);
    }
}

/* The wait before the next attempt of op. */
static uint64_t retry_delay(struct keel_aclient *ac, const struct kc_op *op)
{
    return kc_backoff(ac, op->attempts + 1, KC_RETRY_BASE_MS, KC_RETRY_CAP_MS);
}

/* Put op back in the waiting list for another attempt after delay ms. False when its retries are
 * spent (the caller then finishes it). */
static bool op_retry(struct keel_aclient *ac, struct kc_op *op, uint64_t delay, int err)
{
    if (ac->max_retries < 0 || op->attempts >= (unsigned)ac->max_retries)
        return false;
    op_unlink(ac, op);
    kc_pieces_free(op->pieces); /* a range's pieces so far: the retry reads it all again */
    op->pieces = NULL;
    op->attempts++;
    op->last_err = err;
    op->retry_at = delay ? uv_now(ac->loop) + delay : 0;
    op->wait_marked = false;
    op->where = KC_WAITING;
    kc_list_push(&ac->waiting, op);
    ac->need_route = true;
    kc_kick(ac);
    return true;
}

void kc_requests_expire(struct keel_aclient *ac)
{
    uint64_t now = uv_now(ac->loop);
    struct kc_op *op;
    while ((op = kc_heap_min(&ac->heap)) != NULL && op->deadline <= now) {
        const char *addr = op->conn ? op->conn->addr : NULL;
        if (op->where == KC_INFLIGHT && !op->idempotent)
            op_fail(ac, op, KEEL_ETIMEOUT,
                    "request to %s timed out after %u ms; it was sent, so its outcome is unknown",
                    addr, op->timeout_ms);
        else if (op->attempts > 0)
            op_fail(ac, op, KEEL_ETIMEOUT,
                    "request timed out after %u ms (%u retries; last error: %s)", op->timeout_ms,
                    op->attempts, keel_strerror(op->last_err));
        else if (op->where == KC_WAITING && ac->last_dial_err[0])
            op_fail(ac, op, KEEL_ETIMEOUT,
                    "request timed out after %u ms waiting for a member (%s)", op->timeout_ms,
                    ac->last_dial_err);
        else
            op_fail(ac, op, KEEL_ETIMEOUT, "request timed out after %u ms", op->timeout_ms);
    }
}

uint64_t kc_requests_next_deadline(const struct keel_aclient *ac)
{
    const struct kc_op *op = kc_heap_min(&ac->heap);
    return op ? op->deadline : UINT64_MAX;
}

/* ---------------------------------------------------------------------------------------------
 * Routing
 */

int kc_send_oneway(struct keel_aclient *ac, struct kc_conn *c, const Keel__Request *in)
{
    Keel__Request copy = *in, *req = &copy;
    if (ac->token != NULL && (copy.token == NULL || copy.token[0] == '\0'))
        copy.token = ac->token;
    size_t len = keel_frame_size(&req->base);
    if (len - KEEL_FRAME_HEADER > ac->max_frame)
        return KEEL_ETOOLARGE;
    struct kc_op *op = kc_op_init(&ac->pool, len);
    if (op == NULL)
        return KEEL_ENOMEM;
    op->id = req->id;
    op->frame_len = keel_frame_pack(&req->base, op->frame);
    op->oneway = true;
    op->where = KC_PENDING;
    op->conn = c;
    kc_list_push(&c->pending, op);
    kc_kick(ac);
    return 0;
}

static void op_assign(struct keel_aclient *ac, struct kc_op *op, struct kc_conn *c)
{
    op_unlink(ac, op);
    op->where = KC_PENDING;
    op->conn = c;
    op->wait_marked = false;
    kc_list_push(&c->pending, op);
    kc_kick(ac);
}

/* Route a request that is not on a connection: assign it, or leave it waiting. */
static void route_op(struct keel_aclient *ac, struct kc_op *op, uint64_t *wake)
{
    struct kc_conn *c = op->route == KC_ROUTE_LEADER
                            ? kc_pick_leader(ac, op->avoid_peer, op->avoid_member, wake)
                            : kc_pick_any(ac, op->avoid_peer, op->avoid_member, wake);
    if (c) {
        op_assign(ac, op, c);
        return;
    }
    if (op->where != KC_WAITING) {
        op->where = KC_WAITING;
        kc_list_push(&ac->waiting, op);
    }
    if (kc_dials_exhausted(ac, &op->wait_marked, &op->wait_mark))
        op_fail(ac, op, KEEL_EUNAVAILABLE, "no member reachable: %s", ac->last_dial_err);
}

static void route_pinned(struct keel_aclient *ac, struct kc_op *op)
{
    /* An explicit target is dialled even while backing off. */
    struct kc_conn *c = kc_dial(ac, op->peer);
    if (c == NULL)
        op_fail(ac, op, KEEL_EUNAVAILABLE, "%s", ac->last_dial_err);
    else
        op_assign(ac, op, c);
}

void kc_requests_route(struct keel_aclient *ac)
{
    uint64_t now = uv_now(ac->loop);
    uint64_t wake = UINT64_MAX;
    struct kc_op *next;
    for (struct kc_op *op = ac->waiting.head; op; op = next) {
        next = op->next;
        if (op->retry_at > now) {
            if (op->retry_at < wake)
                wake = op->retry_at;
            continue;
        }
        route_op(ac, op, &wake);
        /* route_op may dial, and a dial that fails at once moves nothing but `next` stays on
         * the waiting list: iteration remains valid. */
    }
    kc_schedule(ac, wake);
}

/* ---------------------------------------------------------------------------------------------
 * What connections tell
 */

/* A piece of a range answered in pieces: kept until the last, which answers with them all. */
static void range_piece(struct keel_aclient *ac, struct kc_op *op, const Keel__Response *resp)
{
    if (resp->range->partial) {
        if (kc_pieces_add(&op->pieces, resp->range) != 0)
            op_fail(ac, op, KEEL_ENOMEM,
                    "out of memory keeping a range answered in pieces (%zu "
                    "key-values so far)",
                    op->pieces != NULL ? op->pieces->n : 0);
        return;
    }
    Keel__RangeResponse whole;
    Keel__Response all = *resp;
    if (kc_pieces_join(op->pieces, resp->range, &whole) != 0) {
        op_fail(ac, op, KEEL_ENOMEM,
                "out of memory joining a range answered in pieces (%zu "
                "key-values)",
                op->pieces->n);
        return;
    }
    all.range = &whole;
    op_answer(ac, op, 0, &all);
}

void kc_requests_response(struct keel_aclient *ac, struct kc_conn *c, const Keel__Response *resp)
{
    struct kc_op *op = kc_slots_get(&ac->slots, (uint32_t)resp->id);
    /* A reply to a request that already timed out, or to an earlier attempt, is dropped. */
    if (op == NULL || op->id != resp->id || op->where != KC_INFLIGHT || op->conn != c)
        return;
    int status = 0;
    if (resp->error && resp->error->code != 0)
        status = keel_err_from_wire(resp->error->code);
    if (op->route != KC_ROUTE_PINNED && status == KEEL_ENOTLEADER) {
        const Keel__Error *e = resp->error;
        int target = kc_peer_named(ac, e->leader_address, e->leader_id);
        uint64_t delay;
        if (target >= 0 && !kc_same_member(ac, target, c)) {
            ac->leader = target;
            ac->peers[target].in_cluster = true;
            /* Straight there, unless that member just failed us: then give the election time. */
            delay = ac->peers[target].next_try > uv_now(ac->loop) ? retry_delay(ac, op) : 0;
        } else {
            if (ac->leader >= 0 && kc_same_member(ac, ac->leader, c))
                ac->leader = -1;
            op->avoid_peer = c->peer;
            op->avoid_member = c->member_id;
            delay = retry_delay(ac, op);
        }
        if (op_retry(ac, op, delay, status)) {
            ac->stats.redirects++;
            return;
        }
    } else if (status == KEEL_EAUTHOLDREV) {
        /* Refused at apply, nothing done: the auth state moved while it was on its way. Checked
         * again against the new state, it may pass (or be refused for good). */
        if (op_retry(ac, op, 0, status))
            return;
    } else if (op->route != KC_ROUTE_PINNED && status == KEEL_EUNAVAILABLE) {
        /* The leader saying "not ready yet" is retried there (pick_leader); anyone else may be
         * cut off, so the retry looks elsewhere first. */
        op->avoid_peer = c->peer;
        op->avoid_member = c->member_id;
        if (op_retry(ac, op, retry_delay(ac, op), status))
            return;
    } else if (status == 0 && resp->body_case == KEEL__RESPONSE__BODY_RANGE && resp->range &&
               (resp->range->partial || op->pieces != NULL)) {
        range_piece(ac, op, resp);
        return;
    }
    op_answer(ac, op, status, resp);
}

void kc_requests_conn_lost(struct keel_aclient *ac, struct kc_conn *c, int status, const char *msg)
{
    struct kc_op *op;
    while ((op = c->pending.head) != NULL) {
        /* Never written: safe to send elsewhere. */
        if (op->oneway)
            op_discard(ac, op); /* its watch is re-created as a whole (watch.c) */
        else if (op->route == KC_ROUTE_PINNED)
            op_fail(ac, op, status, "%s", msg);
        else if (!op_retry(ac, op, 0, status))
            op_fail(ac, op, KEEL_EUNAVAILABLE, "%s (after %u retries)", msg, op->attempts);
    }
    while ((op = c->inflight.head) != NULL) {
        if (!op->idempotent)
            op_fail(ac, op, KEEL_EUNKNOWN, "%s after the request was sent: its outcome is unknown",
                    msg);
        else if (status == KEEL_EFRAMETOOLARGE && op->too_large)
            /* Which request the oversized reply answered is not known (its id is inside it),
             * so each one in flight gets one more try; one that meets the same fate twice
             * asked for a reply no retry can shrink. */
            op_fail(ac, op, status, "%s (twice: a retry cannot help; ask for less)", msg);
        else if (op->route == KC_ROUTE_PINNED)
            op_fail(ac, op, status, "%s", msg);
        else {
            op->too_large = op->too_large || status == KEEL_EFRAMETOOLARGE;
            if (!op_retry(ac, op, retry_delay(ac, op), status))
                op_fail(ac, op, KEEL_EUNAVAILABLE, "%s (after %u retries)", msg, op->attempts);
        }
    }
}

void kc_requests_cancel(struct keel_aclient *ac)
{
    struct kc_op *op;
    while ((op = ac->waiting.head) != NULL)
        op_fail(ac, op, KEEL_ECANCELED, "client closed");
    for (int i = 0; i < ac->npeers; i++) {
        struct kc_conn *c = ac->peers[i].conn;
        if (c == NULL)
            continue;
        while ((op = c->pending.head) != NULL) {
            if (op->oneway)
                op_discard(ac, op);
            else
                op_fail(ac, op, KEEL_ECANCELED, "client closed");
        }
        while ((op = c->inflight.head) != NULL)
            op_fail(ac, op, KEEL_ECANCELED, "client closed");
    }
}

/* ---------------------------------------------------------------------------------------------
 * API
 */

int keel_aclient_request_ex(struct keel_aclient *ac, const Keel__Request *req,
                            const struct keel_call_opts *opts, keel_response_cb cb, void *data)
{
    if (ac == NULL || req == NULL || cb == NULL)
        return KEEL_EINVAL;
    if (ac->closing)
        return KEEL_ECLOSED;
    /* Every member of the body union is a pointer: one NULL check covers them all. */
    if (req->body_case != KEEL__REQUEST__BODY__NOT_SET && req->range == NULL)
        return KEEL_EINVAL;
    struct kc_kind kind = kind_of(req);
    if (kind.status != 0)
        return kind.status;
    uint8_t route = kind.route;
    int pin = -1;
    if (opts && opts->endpoint) {
        pin = kc_peer_add(ac, opts->endpoint, strlen(opts->endpoint));
        if (pin < 0)
            return KEEL_EINVAL;
        route = KC_ROUTE_PINNED;
    }
    uint32_t slot;
    if (kc_slots_take(&ac->slots, &slot) != 0)
        return KEEL_ENOMEM;
    /* 31 bits: KC_WATCH_BIT marks watch streams. */
    ac->seq = (ac->seq + 1) & 0x7fffffffu;
    if (ac->seq == 0)
        ac->seq = 1;
    Keel__Request copy = *req;
    copy.id = (uint64_t)ac->seq << 32 | slot;
    if (ac->token != NULL && (copy.token == NULL || copy.token[0] == '\0'))
        copy.token = ac->token;
    size_t len = keel_frame_size(&copy.base);
    if (len - KEEL_FRAME_HEADER > ac->max_frame) {
        kc_slots_give(&ac->slots, slot, NULL);
        return KEEL_ETOOLARGE;
    }
    struct kc_op *op = kc_op_init(&ac->pool, len);
    if (op == NULL) {
        kc_slots_give(&ac->slots, slot, NULL);
        return KEEL_ENOMEM;
    }
    op->id = copy.id;
    op->frame_len = keel_frame_pack(&copy.base, op->frame);
    op->cb = cb;
    op->data = data;
    op->route = route;
    op->peer = pin;
    op->idempotent = kind.idempotent;
    op->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : ac->request_timeout_ms;
    op->deadline = uv_now(ac->loop) + op->timeout_ms;
    if (kc_heap_push(&ac->heap, op) != 0) {
        kc_op_close(&ac->pool, op);
        kc_slots_give(&ac->slots, slot, NULL);
        return KEEL_ENOMEM;
    }
    kc_slots_set(&ac->slots, slot, op);
    ac->stats.requests++;
    ac->stats.in_flight++;
    kc_schedule(ac, op->deadline);
    if (route == KC_ROUTE_PINNED) {
        route_pinned(ac, op);
    } else {
        uint64_t wake = UINT64_MAX;
        route_op(ac, op, &wake);
        kc_schedule(ac, wake);
    }
    return 0;
}

int keel_aclient_request(struct keel_aclient *ac, const Keel__Request *req, uint32_t timeout_ms,
                         keel_response_cb cb, void *data)
{
    struct keel_call_opts opts = {.timeout_ms = timeout_ms};
    return keel_aclient_request_ex(ac, req, &opts, cb, data);
}
