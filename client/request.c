/*
 * Requests: submit, route, retry, answer, expire.
 *
 * A request is an op (op.h) with a callback, found again by its id through the slot table and
 * by its deadline through the heap. It is sent again only when that is safe: it was never
 * written, or the member answered NOT_LEADER or UNAVAILABLE (it did nothing), or it is
 * idempotent and its connection dropped. Local failures are queued on ac->done and delivered
 * from the drain of the loop turn (client.c); server answers are delivered at once.
 *
 * Authentication (keel_options.user), as etcd's clientv3: a request refused because its token
 * is no longer valid (it expired: keeld --auth-token-ttl) is sent once more after the client
 * authenticates again. Refusals that come together share one Authenticate; requests submitted
 * while it is on its way wait for it (ac->authwait) instead of going with a token known bad.
 * The frame carries the token, so a held request's frame is packed again with the new one.
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
    case KC_AUTHWAIT:
        kc_list_remove(&ac->authwait, op);
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

/* ---------------------------------------------------------------------------------------------
 * Authentication
 */

int kc_token_set(struct keel_aclient *ac, const char *token)
{
    char *t = NULL;
    if (token != NULL && token[0] != '\0' && (t = strdup(token)) == NULL)
        return KEEL_ENOMEM;
    free(ac->token);
    ac->token = t;
    ac->conns.token = t; /* the next connection's Hello */
    ac->token_gen++;
    if (ac->on_token != NULL)
        ac->on_token(ac->on_token_data, t);
    return 0;
}

/* op, held for authentication, goes again with the client's token: its frame packed anew (a
 * fresh op takes its place: same id, slot, deadline and callback). */
static void op_retoken(struct keel_aclient *ac, struct kc_op *op)
{
    Keel__Request *req = keel__request__unpack(NULL, op->frame_len - KEEL_FRAME_HEADER,
                                               op->frame + KEEL_FRAME_HEADER);
    if (req == NULL) {
        op_fail(ac, op, KEEL_ENOMEM, "out of memory sending a request with a new token");
        return;
    }
    char *theirs = req->token;
    req->token = ac->token != NULL ? ac->token : (char *)"";
    size_t len = keel_frame_size(&req->base);
    struct kc_op *n = len - KEEL_FRAME_HEADER > ac->max_frame ? NULL : kc_op_init(&ac->pool, len);
    if (n != NULL)
        n->frame_len = keel_frame_pack(&req->base, n->frame);
    req->token = theirs;
    keel__request__free_unpacked(req, NULL);
    if (n == NULL) {
        op_fail(ac, op, len - KEEL_FRAME_HEADER > ac->max_frame ? KEEL_ETOOLARGE : KEEL_ENOMEM,
                "the request with a new token does not fit (%zu bytes)", len);
        return;
    }
    op_unlink(ac, op);
    kc_heap_remove(&ac->heap, op);
    n->id = op->id;
    n->deadline = op->deadline;
    n->cb = op->cb;
    n->data = op->data;
    n->peer = op->peer;
    n->avoid_peer = op->avoid_peer;
    n->avoid_member = op->avoid_member;
    n->route = op->route;
    n->idempotent = op->idempotent;
    n->client_token = true;
    n->reauthed = op->reauthed;
    n->attempts = op->attempts;
    n->last_err = op->last_err;
    n->timeout_ms = op->timeout_ms;
    n->token_gen = ac->token_gen;
    kc_op_close(&ac->pool, op);
    kc_slots_set(&ac->slots, (uint32_t)n->id, n);
    /* The heap just gave up op's place: pushing n needs no memory. */
    (void)kc_heap_push(&ac->heap, n);
    n->where = KC_WAITING;
    kc_list_push(&ac->waiting, n);
    ac->need_route = true;
    kc_kick(ac);
}

/* The requests held for authentication go on: with the new token (status 0), or failed with why
 * the authentication did (while no other is on its way). */
static void auth_release(struct keel_aclient *ac, int status, const char *why)
{
    if (status != 0 && ac->auth_running)
        return;
    struct kc_op *op;
    while ((op = ac->authwait.head) != NULL) {
        if (status == 0)
            op_retoken(ac, op);
        else
            op_fail(ac, op, KEEL_EUNAUTHENTICATED, "authenticating as %s failed: %s",
                    ac->user != NULL ? ac->user : "", why);
    }
    ac->need_route = true; /* watch creations held meanwhile (watch.c) */
    kc_kick(ac);
}

/* One Authenticate of the client's: the one it starts on its own (refresh), or keel_aclient_auth's
 * (cb). */
struct auth_call {
    struct keel_aclient *ac;
    bool refresh;
    keel_response_cb cb;
    void *data;
};

static void auth_answered(int status, const Keel__Response *resp, void *data)
{
    struct auth_call *a = data;
    struct keel_aclient *ac = a->ac;
    const char *why = resp->error != NULL && resp->error->message != NULL ? resp->error->message
                                                                          : keel_strerror(status);
    Keel__Response local = KEEL__RESPONSE__INIT;
    Keel__Error err = KEEL__ERROR__INIT;
    if (status == 0) {
        const char *token = resp->authenticate != NULL ? resp->authenticate->token : NULL;
        if (token == NULL || token[0] == '\0') {
            status = KEEL_EINTERNAL;
            why = "the member answered Authenticate without a token";
        } else if ((status = kc_token_set(ac, token)) != 0) {
            why = keel_strerror(status);
        }
        if (status != 0) {
            local.id = resp->id;
            err.code = keel_err_to_wire(status);
            err.message = (char *)why;
            local.error = &err;
            resp = &local;
        }
    }
    if (a->refresh)
        ac->auth_running = false;
    if (!ac->closing)
        auth_release(ac, status, why);
    if (a->cb != NULL)
        a->cb(status, resp, a->data);
    free(a);
}

static int request_submit(struct keel_aclient *ac, const Keel__Request *req,
                          const struct keel_call_opts *opts, keel_response_cb cb, void *data,
                          bool authenticate);

/* Send Authenticate with the client's credentials. 0 or why it could not be sent. */
static int auth_send(struct keel_aclient *ac, bool refresh, keel_response_cb cb, void *data)
{
    struct auth_call *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return KEEL_ENOMEM;
    *a = (struct auth_call){.ac = ac, .refresh = refresh, .cb = cb, .data = data};
    Keel__AuthenticateRequest ar = KEEL__AUTHENTICATE_REQUEST__INIT;
    ar.name = ac->user;
    ar.password = ac->password;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_AUTHENTICATE;
    req.authenticate = &ar;
    int rv = request_submit(ac, &req, NULL, auth_answered, a, true);
    if (rv != 0) {
        free(a);
        return rv;
    }
    ac->stats.authentications++;
    return 0;
}

void kc_auth_start(struct keel_aclient *ac)
{
    if (ac->user == NULL || ac->auth_running || ac->closing)
        return;
    ac->auth_running = true;
    int rv = auth_send(ac, true, NULL, NULL);
    if (rv != 0) {
        ac->auth_running = false;
        auth_release(ac, rv, keel_strerror(rv));
    }
}

int keel_aclient_auth(struct keel_aclient *ac, const char *user, const char *password,
                      keel_response_cb cb, void *data)
{
    if (ac == NULL || user == NULL || user[0] == '\0' || password == NULL)
        return KEEL_EINVAL;
    if (ac->closing)
        return KEEL_ECLOSED;
    char *u = strdup(user), *p = strdup(password);
    if (u == NULL || p == NULL) {
        free(u);
        kc_wipe_free(p);
        return KEEL_ENOMEM;
    }
    free(ac->user);
    kc_wipe_free(ac->password);
    ac->user = u;
    ac->password = p;
    return auth_send(ac, false, cb, data);
}

/* op was refused for the client's token: hold it for an Authenticate (one for all of them), then
 * send it once more. False when that does not apply (its own token, no credentials, done once). */
static bool op_reauth(struct keel_aclient *ac, struct kc_op *op, int status,
                      const Keel__Response *resp)
{
    if (!op->client_token || op->reauthed || ac->user == NULL ||
        !kc_token_refused(status, resp->error != NULL ? resp->error->message : NULL))
        return false;
    op_unlink(ac, op);
    op->reauthed = true;
    op->where = KC_AUTHWAIT;
    kc_list_push(&ac->authwait, op);
    ac->stats.retries++;
    if (op->token_gen != ac->token_gen && !ac->auth_running)
        auth_release(ac, 0, NULL); /* a newer token came meanwhile: no need to ask again */
    else
        kc_auth_start(ac);
    return true;
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
    } else if (status == KEEL_EUNAUTHENTICATED && op_reauth(ac, op, status, resp)) {
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
    while ((op = ac->authwait.head) != NULL)
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
    return request_submit(ac, req, opts, cb, data, false);
}

/* authenticate: the client's own Authenticate, which goes at once and with no token. */
static int request_submit(struct keel_aclient *ac, const Keel__Request *req,
                          const struct keel_call_opts *opts, keel_response_cb cb, void *data,
                          bool authenticate)
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
    bool client_token = !authenticate && (copy.token == NULL || copy.token[0] == '\0');
    if (client_token && ac->token != NULL)
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
    op->client_token = client_token;
    op->token_gen = ac->token_gen;
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
    if (client_token && ac->auth_running) {
        op->where = KC_AUTHWAIT; /* a token is on its way: the one it has is known bad */
        kc_list_push(&ac->authwait, op);
    } else if (route == KC_ROUTE_PINNED) {
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
