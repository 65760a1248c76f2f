/*
 * The asynchronous client: requests, routing, retries, deadlines.
 *
 * Deadlines sit in one min-heap behind one uv_timer, armed for the earliest; since most requests
 * share the default timeout, a new request usually lands at the bottom of the heap and the timer
 * is not touched. Frames queued during a loop turn are written by a uv_prepare callback just
 * before the loop blocks, one uv_write per connection; that callback also routes the requests
 * left waiting and delivers local failures.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define KC_RETRY_BASE_MS 25
#define KC_RETRY_CAP_MS  500
#define KC_PEER_BASE_MS  50
#define KC_PEER_CAP_MS   2000
/* A request waiting for a connection gives up (KEEL_EUNAVAILABLE) once this many dials per
 * eligible member have failed since it began waiting, rather than sitting out its deadline when
 * nothing answers. */
#define KC_DIAL_ROUNDS 2

/* ---------------------------------------------------------------------------------------------
 * Lists, heap, slots, op memory
 */

void kc_list_push(struct kc_list *l, struct kc_op *op)
{
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
    l->n++;
}

void kc_list_remove(struct kc_list *l, struct kc_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    op->prev = op->next = NULL;
    l->n--;
}

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

static void heap_set(struct keel_aclient *ac, size_t i, struct kc_op *op)
{
    ac->heap[i] = op;
    op->heap_idx = i;
}

static void heap_up(struct keel_aclient *ac, size_t i)
{
    struct kc_op *op = ac->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (ac->heap[parent]->deadline <= op->deadline)
            break;
        heap_set(ac, i, ac->heap[parent]);
        i = parent;
    }
    heap_set(ac, i, op);
}

static void heap_down(struct keel_aclient *ac, size_t i)
{
    struct kc_op *op = ac->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= ac->nheap)
            break;
        if (child + 1 < ac->nheap && ac->heap[child + 1]->deadline < ac->heap[child]->deadline)
            child++;
        if (ac->heap[child]->deadline >= op->deadline)
            break;
        heap_set(ac, i, ac->heap[child]);
        i = child;
    }
    heap_set(ac, i, op);
}

static int heap_push(struct keel_aclient *ac, struct kc_op *op)
{
    if (ac->nheap == ac->heapcap) {
        size_t cap = ac->heapcap ? ac->heapcap * 2 : 256;
        struct kc_op **h = realloc(ac->heap, cap * sizeof(*h));
        if (h == NULL)
            return KEEL_ENOMEM;
        ac->heap = h;
        ac->heapcap = cap;
    }
    heap_set(ac, ac->nheap++, op);
    heap_up(ac, ac->nheap - 1);
    return 0;
}

static void heap_remove(struct keel_aclient *ac, struct kc_op *op)
{
    size_t i = op->heap_idx;
    if (i == SIZE_MAX)
        return;
    struct kc_op *last = ac->heap[--ac->nheap];
    if (i < ac->nheap) {
        heap_set(ac, i, last);
        heap_up(ac, i);
        heap_down(ac, last->heap_idx);
    }
    op->heap_idx = SIZE_MAX;
}

static struct kc_op *op_alloc(struct keel_aclient *ac, size_t frame_len)
{
    uint8_t cls = KC_NCLASS;
    size_t cap = frame_len;
    for (uint8_t i = 0; i < KC_NCLASS; i++) {
        if (frame_len <= ((size_t)256 << i)) {
            cls = i;
            cap = (size_t)256 << i;
            break;
        }
    }
    struct kc_op *op;
    if (cls < KC_NCLASS && ac->pool[cls]) {
        op = ac->pool[cls];
        ac->pool[cls] = op->next;
        ac->pool_n[cls]--;
    } else {
        op = malloc(sizeof(*op) + cap);
        if (op == NULL)
            return NULL;
    }
    memset(op, 0, sizeof(*op));
    op->cls = cls;
    op->heap_idx = SIZE_MAX;
    op->peer = -1;
    op->avoid_peer = -1;
    return op;
}

static void op_free(struct keel_aclient *ac, struct kc_op *op)
{
    free(op->msg);
    op->msg = NULL;
    if (op->cls < KC_NCLASS && ac->pool_n[op->cls] < KC_POOL_KEEP) {
        op->next = ac->pool[op->cls];
        ac->pool[op->cls] = op;
        ac->pool_n[op->cls]++;
        return;
    }
    free(op);
}

/* ---------------------------------------------------------------------------------------------
 * Completion
 */

static uint64_t now_ms(struct keel_aclient *ac)
{
    return uv_now(ac->loop);
}

uint64_t kc_backoff(struct keel_aclient *ac, uint32_t n, uint64_t base, uint64_t cap)
{
    uint64_t d = base << (n > 0 ? (n - 1 < 16 ? n - 1 : 16) : 0);
    if (d > cap)
        d = cap;
    /* xorshift64: jitter keeps many clients from retrying in lockstep after a failover. */
    ac->rng ^= ac->rng << 13;
    ac->rng ^= ac->rng >> 7;
    ac->rng ^= ac->rng << 17;
    return d * 3 / 4 + ac->rng % (d / 2 + 1);
}

static void on_prepare(uv_prepare_t *h);

void kc_kick(struct keel_aclient *ac)
{
    ac->kicked = true;
    /* Once closing, keel_aclient_close drains by itself and the handle is on its way out. */
    if (!ac->closing)
        uv_prepare_start(&ac->prepare, on_prepare);
}

/* Finish op with a local failure; its callback runs from kc_drain. */
static void op_fail(struct keel_aclient *ac, struct kc_op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void op_fail(struct keel_aclient *ac, struct kc_op *op, int status, const char *fmt, ...)
{
    op_unlink(ac, op);
    heap_remove(ac, op);
    kc_slots_give(&ac->slots, (uint32_t)op->id, op);
    op->status = status;
    if (fmt) {
        char buf[KC_MSG_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        op->msg = strdup(buf); /* NULL falls back to keel_strerror */
    }
    op->where = KC_DONE;
    kc_list_push(&ac->done, op);
    kc_kick(ac);
}

/* A one-way op leaves no trace: no callback, no counters. */
static void op_discard(struct keel_aclient *ac, struct kc_op *op)
{
    op_unlink(ac, op);
    op_free(ac, op);
}

void kc_op_written(struct keel_aclient *ac, struct kc_op *op)
{
    op_free(ac, op);
}

int kc_send_oneway(struct keel_aclient *ac, struct kc_conn *c, const Keel__Request *req)
{
    size_t len = keel_frame_size(&req->base);
    if (len - KEEL_FRAME_HEADER > ac->max_frame)
        return KEEL_ETOOLARGE;
    struct kc_op *op = op_alloc(ac, len);
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

/* Deliver a server answer now: resp lives in the connection's arena only until the next frame. */
static void op_answer(struct keel_aclient *ac, struct kc_op *op, int status,
                      const Keel__Response *resp)
{
    op_unlink(ac, op);
    heap_remove(ac, op);
    kc_slots_give(&ac->slots, (uint32_t)op->id, op);
    ac->stats.completed++;
    ac->stats.in_flight--;
    op->cb(status, resp, op->data);
    op_free(ac, op);
}

void kc_drain(struct keel_aclient *ac)
{
    if (ac->draining)
        return;
    ac->draining = true;
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
        op_free(ac, op);
    }
    kc_watch_drain(ac);
    ac->draining = false;
}

/* Put op back in the waiting list for another attempt after delay ms. False when its retries are
 * spent (the caller then finishes it). */
static bool op_retry(struct keel_aclient *ac, struct kc_op *op, uint64_t delay, int err)
{
    if (ac->max_retries < 0 || op->attempts >= (unsigned)ac->max_retries)
        return false;
    op_unlink(ac, op);
    op->attempts++;
    op->last_err = err;
    op->retry_at = delay ? now_ms(ac) + delay : 0;
    op->wait_marked = false;
    op->where = KC_WAITING;
    kc_list_push(&ac->waiting, op);
    ac->need_route = true;
    kc_kick(ac);
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Timer
 */

static void on_timer(uv_timer_t *t);

void kc_schedule(struct keel_aclient *ac, uint64_t when)
{
    if (when == UINT64_MAX || when >= ac->timer_due || ac->closing)
        return;
    uint64_t now = now_ms(ac);
    ac->timer_due = when;
    uv_timer_start(&ac->timer, on_timer, when > now ? when - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct keel_aclient *ac = t->data;
    ac->timer_due = UINT64_MAX;
    uint64_t now = now_ms(ac);
    while (ac->nheap > 0 && ac->heap[0]->deadline <= now) {
        struct kc_op *op = ac->heap[0];
        const char *addr = op->conn ? ac->peers[op->conn->peer].addr : NULL;
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
    /* Backoffs of waiting requests and members may have ended. */
    ac->need_route = true;
    kc_kick(ac);
    if (ac->nheap > 0)
        kc_schedule(ac, ac->heap[0]->deadline);
}

/* ---------------------------------------------------------------------------------------------
 * Members
 */

static int peer_find(struct keel_aclient *ac, const char *canon)
{
    for (int i = 0; i < ac->npeers; i++)
        if (strcmp(ac->peers[i].addr, canon) == 0)
            return i;
    return -1;
}

/* Index of the peer for addr, added if new; -1 when addr does not parse or the table is full. */
static int peer_find_or_add(struct keel_aclient *ac, const char *addr, size_t len)
{
    char canon[KC_ADDR_MAX];
    struct sockaddr_in sa;
    if (kc_parse_addr(addr, len, canon, &sa) != 0)
        return -1;
    int i = peer_find(ac, canon);
    if (i >= 0 || ac->npeers == KC_MAX_PEERS)
        return i;
    struct kc_peer *p = &ac->peers[ac->npeers];
    memset(p, 0, sizeof(*p));
    memcpy(p->addr, canon, sizeof(canon));
    p->sa = sa;
    return ac->npeers++;
}

static bool peer_eligible(const struct kc_peer *p)
{
    return p->from_endpoints || p->in_cluster;
}

int kc_eligible_count(const struct keel_aclient *ac)
{
    int n = 0;
    for (int i = 0; i < ac->npeers; i++)
        n += peer_eligible(&ac->peers[i]);
    return n;
}

void kc_peer_failed(struct keel_aclient *ac, int peer, bool dial, const char *msg)
{
    struct kc_peer *p = &ac->peers[peer];
    p->fails++;
    p->next_try = now_ms(ac) + kc_backoff(ac, p->fails, KC_PEER_BASE_MS, KC_PEER_CAP_MS);
    if (dial) {
        ac->dial_failures++;
        ac->stats.dial_failures++;
    }
    snprintf(ac->last_dial_err, sizeof(ac->last_dial_err), "%s", msg);
    ac->need_route = true;
    kc_kick(ac);
}

/* The live connection to peer i, or a ready one to the same member under another address (a
 * member reached through an endpoint alias is not dialled twice). */
static struct kc_conn *peer_conn(struct keel_aclient *ac, int i)
{
    struct kc_peer *p = &ac->peers[i];
    if (p->conn)
        return p->conn;
    if (p->member_id == 0)
        return NULL;
    for (int j = 0; j < ac->npeers; j++) {
        struct kc_conn *c = ac->peers[j].conn;
        if (c && c->state == KC_READY && c->member_id == p->member_id)
            return c;
    }
    return NULL;
}

static bool same_member(struct keel_aclient *ac, int peer, const struct kc_conn *c)
{
    if (peer == c->peer)
        return true;
    uint64_t id = ac->peers[peer].member_id;
    return id != 0 && id == c->member_id;
}

/* ---------------------------------------------------------------------------------------------
 * Routing: each pick returns a ready connection, or NULL when the request has to wait (a dial it
 * may have started, or a backoff: *wake gets the earliest time worth looking again).
 */

static struct kc_conn *dial(struct keel_aclient *ac, int i)
{
    return kc_conn_start(ac, i);
}

/* Whether c is the member a request (or watch) should stay away from, having just been told "no
 * leader" there, or lost it. */
struct kc_avoid {
    int peer;
    uint64_t member;
};

static bool avoided(const struct kc_avoid *av, const struct kc_conn *c)
{
    return c->peer == av->peer || (av->member != 0 && c->member_id == av->member);
}

static struct kc_avoid avoid_of(const struct kc_op *op)
{
    struct kc_avoid av = {op->avoid_peer, op->avoid_member};
    return av;
}

/*
 * Any member will do (to serve the request or to tell who leads): a ready connection, else a dial.
 * The member op is avoiding is the last resort, so a member cut off from the rest (it answers
 * UNAVAILABLE or NOT_LEADER without a leader) cannot hold a request while others could serve it.
 */
static struct kc_conn *discover(struct keel_aclient *ac, const struct kc_avoid *av, uint64_t *wake)
{
    if (ac->leader >= 0) {
        struct kc_conn *c = peer_conn(ac, ac->leader);
        if (c && c->state == KC_READY && !avoided(av, c))
            return c;
    }
    bool dialling = false;
    struct kc_conn *fallback = NULL;
    for (int i = 0; i < ac->npeers; i++) {
        struct kc_conn *c = ac->peers[i].conn;
        if (c == NULL || !peer_eligible(&ac->peers[i]))
            continue;
        if (c->state != KC_READY)
            dialling = true;
        else if (avoided(av, c))
            fallback = c;
        else
            return c;
    }
    if (dialling)
        return NULL;
    uint64_t now = now_ms(ac);
    for (int k = 0; k < ac->npeers; k++) {
        int i = (ac->rr + k) % ac->npeers;
        struct kc_peer *p = &ac->peers[i];
        if (!peer_eligible(p) || p->conn ||
            (fallback && p->member_id == fallback->member_id && p->member_id != 0))
            continue;
        if (p->next_try > now) {
            if (p->next_try < *wake)
                *wake = p->next_try;
            continue;
        }
        ac->rr = (i + 1) % ac->npeers;
        if (dial(ac, i))
            return NULL;
    }
    return fallback;
}

static struct kc_conn *pick_leader(struct keel_aclient *ac, const struct kc_avoid *av,
                                   uint64_t *wake)
{
    if (ac->leader >= 0) {
        struct kc_conn *c = peer_conn(ac, ac->leader);
        if (c)
            return c->state == KC_READY ? c : NULL;
        struct kc_peer *p = &ac->peers[ac->leader];
        /* A leader that failed recently is not hammered: ask another member who leads now. */
        if (p->next_try <= now_ms(ac) && dial(ac, ac->leader))
            return NULL;
    }
    return discover(ac, av, wake);
}

static bool zone_match(const struct keel_aclient *ac, const struct kc_peer *p)
{
    return peer_eligible(p) && p->zone[0] && strcmp(p->zone, ac->zone) == 0;
}

static struct kc_conn *pick_any(struct keel_aclient *ac, const struct kc_avoid *av, uint64_t *wake)
{
    if (ac->zone[0]) {
        for (int i = 0; i < ac->npeers; i++) {
            struct kc_conn *c;
            if (zone_match(ac, &ac->peers[i]) && (c = peer_conn(ac, i)) && c->state == KC_READY &&
                !avoided(av, c))
                return c;
        }
        for (int i = 0; i < ac->npeers; i++)
            if (zone_match(ac, &ac->peers[i]) && ac->peers[i].conn)
                return NULL; /* its dial is under way */
        uint64_t now = now_ms(ac);
        for (int i = 0; i < ac->npeers; i++) {
            struct kc_peer *p = &ac->peers[i];
            if (zone_match(ac, p) && p->next_try <= now && !p->conn && dial(ac, i))
                return NULL;
        }
        /* No member of our zone can be reached now: any member will do. */
    }
    return discover(ac, av, wake);
}

struct kc_conn *kc_pick_any(struct keel_aclient *ac, int avoid_peer, uint64_t avoid_member,
                            uint64_t *wake)
{
    struct kc_avoid av = {avoid_peer, avoid_member};
    return pick_any(ac, &av, wake);
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
    struct kc_avoid av = avoid_of(op);
    struct kc_conn *c =
        op->route == KC_ROUTE_LEADER ? pick_leader(ac, &av, wake) : pick_any(ac, &av, wake);
    if (c) {
        op_assign(ac, op, c);
        return;
    }
    if (op->where != KC_WAITING) {
        op->where = KC_WAITING;
        kc_list_push(&ac->waiting, op);
    }
    if (!op->wait_marked) {
        op->wait_marked = true;
        op->wait_mark = ac->dial_failures;
    } else if (ac->dial_failures - op->wait_mark >=
               (uint32_t)(KC_DIAL_ROUNDS *
                          (kc_eligible_count(ac) > 0 ? kc_eligible_count(ac) : 1))) {
        op_fail(ac, op, KEEL_EUNAVAILABLE, "no member reachable: %s", ac->last_dial_err);
    }
}

static void route_pinned(struct keel_aclient *ac, struct kc_op *op)
{
    struct kc_conn *c = ac->peers[op->peer].conn;
    if (c == NULL)
        c = dial(ac, op->peer); /* an explicit target is dialled even while backing off */
    if (c == NULL) {
        op_fail(ac, op, KEEL_EUNAVAILABLE, "%s", ac->last_dial_err);
        return;
    }
    op->where = KC_PENDING;
    op->conn = c;
    kc_list_push(&c->pending, op);
    kc_kick(ac);
}

static void route_waiting(struct keel_aclient *ac)
{
    ac->need_route = false;
    uint64_t now = now_ms(ac);
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

static void flush_all(struct keel_aclient *ac)
{
    for (int i = 0; i < ac->npeers; i++) {
        struct kc_conn *c = ac->peers[i].conn;
        if (c && c->state == KC_READY && c->pending.n > 0 && !c->writing)
            kc_conn_flush(c);
    }
}

static void on_prepare(uv_prepare_t *h)
{
    struct keel_aclient *ac = h->data;
    /* Bounded: callbacks that keep submitting get the next loop turn. */
    for (int round = 0; round < 8 && ac->kicked; round++) {
        ac->kicked = false;
        if (ac->need_route && !ac->closing) {
            route_waiting(ac);
            kc_watch_route(ac);
        }
        flush_all(ac);
        kc_drain(ac);
    }
    if (!ac->kicked && !uv_is_closing((uv_handle_t *)h))
        uv_prepare_stop(h);
}

/* ---------------------------------------------------------------------------------------------
 * Connection events (from conn.c)
 */

void kc_conn_ready(struct kc_conn *c, const Keel__HelloResponse *hr)
{
    struct keel_aclient *ac = c->ac;
    struct kc_peer *p = &ac->peers[c->peer];
    char msg[KC_MSG_MAX];
    if (hr->error && hr->error->code != 0) {
        snprintf(msg, sizeof(msg), "handshake refused by %s: %s", p->addr,
                 hr->error->message && hr->error->message[0]
                     ? hr->error->message
                     : keel_strerror(keel_err_from_wire(hr->error->code)));
        kc_conn_lost(c, keel_err_from_wire(hr->error->code), msg);
        return;
    }
    if (hr->protocol_version > KEEL_PROTOCOL_VERSION) {
        snprintf(msg, sizeof(msg), "%s speaks protocol version %u, this client %u", p->addr,
                 hr->protocol_version, KEEL_PROTOCOL_VERSION);
        kc_conn_lost(c, KEEL_EUNSUPPORTED, msg);
        return;
    }
    c->state = KC_READY;
    c->member_id = hr->member_id;
    uv_timer_stop(&c->timer);
    p->fails = 0;
    p->next_try = 0;
    p->member_id = hr->member_id;
    if (hr->zone && hr->zone[0])
        snprintf(p->zone, sizeof(p->zone), "%s", hr->zone);
    ac->cluster_id = hr->cluster_id;

    if (hr->n_members > 0) {
        for (int i = 0; i < ac->npeers; i++)
            ac->peers[i].in_cluster = false;
        for (size_t m = 0; m < hr->n_members; m++) {
            const Keel__Member *mem = hr->members[m];
            for (size_t u = 0; u < mem->n_clienturls; u++) {
                const char *url = mem->clienturls[u];
                int i = peer_find_or_add(ac, url, strlen(url));
                if (i < 0)
                    continue;
                struct kc_peer *q = &ac->peers[i];
                q->in_cluster = true;
                q->learner = mem->islearner;
                q->member_id = mem->id;
                if (mem->zone && mem->zone[0])
                    snprintf(q->zone, sizeof(q->zone), "%s", mem->zone);
            }
        }
        /* Whatever else we reached this member through stays usable. */
        p->in_cluster = true;
    }

    int leader = -1;
    if (hr->leader_id != 0 && hr->leader_id == hr->member_id)
        leader = c->peer;
    else if (hr->leader_address && hr->leader_address[0])
        leader = peer_find_or_add(ac, hr->leader_address, strlen(hr->leader_address));
    if (leader < 0 && hr->leader_id != 0)
        for (int i = 0; i < ac->npeers && leader < 0; i++)
            if (ac->peers[i].member_id == hr->leader_id)
                leader = i;
    if (leader >= 0) {
        ac->leader = leader;
        ac->peers[leader].in_cluster = true;
    }
    ac->need_route = true;
    kc_kick(ac);
}

void kc_conn_lost(struct kc_conn *c, int status, const char *msg)
{
    struct keel_aclient *ac = c->ac;
    if (c->state == KC_CLOSED)
        return;
    bool was_ready = c->state == KC_READY;
    struct kc_peer *p = &ac->peers[c->peer];
    if (p->conn == c)
        p->conn = NULL;
    if (was_ready)
        ac->stats.conn_lost++;
    kc_peer_failed(ac, c->peer, !was_ready, msg);
    if (ac->leader >= 0 && same_member(ac, ac->leader, c))
        ac->leader = -1;
    kc_conn_close(c);

    struct kc_op *op;
    while ((op = c->pending.head) != NULL) {
        /* Never written: safe to send elsewhere. */
        if (op->oneway)
            op_discard(ac, op); /* its watch is re-created as a whole, below */
        else if (op->route == KC_ROUTE_PINNED)
            op_fail(ac, op, status, "%s", msg);
        else if (!op_retry(ac, op, 0, status))
            op_fail(ac, op, KEEL_EUNAVAILABLE, "%s (after %u retries)", msg, op->attempts);
    }
    while ((op = c->inflight.head) != NULL) {
        if (!op->idempotent)
            op_fail(ac, op, KEEL_EUNKNOWN, "%s after the request was sent: its outcome is unknown",
                    msg);
        else if (op->route == KC_ROUTE_PINNED)
            op_fail(ac, op, status, "%s", msg);
        else if (!op_retry(ac, op,
                           kc_backoff(ac, op->attempts + 1, KC_RETRY_BASE_MS, KC_RETRY_CAP_MS),
                           status))
            op_fail(ac, op, KEEL_EUNAVAILABLE, "%s (after %u retries)", msg, op->attempts);
    }
    kc_watch_conn_lost(c);
    ac->need_route = true;
    kc_kick(ac);
}

void kc_handle_response(struct kc_conn *c, const Keel__Response *resp)
{
    struct keel_aclient *ac = c->ac;
    if (resp->id & KC_WATCH_BIT) {
        kc_watch_response(c, resp);
        return;
    }
    struct kc_op *op = kc_slots_get(&ac->slots, (uint32_t)resp->id);
    /* A reply to a request that already timed out, or to an earlier attempt, is dropped. */
    if (op == NULL || op->id != resp->id || op->where != KC_INFLIGHT || op->conn != c)
        return;
    int status = 0;
    if (resp->error && resp->error->code != 0)
        status = keel_err_from_wire(resp->error->code);
    if (op->route != KC_ROUTE_PINNED && status == KEEL_ENOTLEADER) {
        const Keel__Error *e = resp->error;
        int target = -1;
        if (e->leader_address && e->leader_address[0])
            target = peer_find_or_add(ac, e->leader_address, strlen(e->leader_address));
        if (target < 0 && e->leader_id != 0)
            for (int i = 0; i < ac->npeers && target < 0; i++)
                if (ac->peers[i].member_id == e->leader_id)
                    target = i;
        uint64_t delay;
        if (target >= 0 && !same_member(ac, target, c)) {
            ac->leader = target;
            ac->peers[target].in_cluster = true;
            /* Straight there, unless that member just failed us: then give the election time. */
            delay = ac->peers[target].next_try > now_ms(ac)
                        ? kc_backoff(ac, op->attempts + 1, KC_RETRY_BASE_MS, KC_RETRY_CAP_MS)
                        : 0;
        } else {
            if (ac->leader >= 0 && same_member(ac, ac->leader, c))
                ac->leader = -1;
            op->avoid_peer = c->peer;
            op->avoid_member = c->member_id;
            delay = kc_backoff(ac, op->attempts + 1, KC_RETRY_BASE_MS, KC_RETRY_CAP_MS);
        }
        if (op_retry(ac, op, delay, status)) {
            ac->stats.redirects++;
            return;
        }
    } else if (op->route != KC_ROUTE_PINNED && status == KEEL_EUNAVAILABLE) {
        /* The leader saying "not ready yet" is retried there (pick_leader); anyone else may be
         * cut off, so the retry looks elsewhere first. */
        op->avoid_peer = c->peer;
        op->avoid_member = c->member_id;
        if (op_retry(ac, op, kc_backoff(ac, op->attempts + 1, KC_RETRY_BASE_MS, KC_RETRY_CAP_MS),
                     status))
            return;
    }
    op_answer(ac, op, status, resp);
}

/* ---------------------------------------------------------------------------------------------
 * Lifecycle
 */

static void ac_free(struct keel_aclient *ac)
{
    for (int i = 0; i < KC_NCLASS; i++) {
        while (ac->pool[i]) {
            struct kc_op *op = ac->pool[i];
            ac->pool[i] = op->next;
            free(op);
        }
    }
    kc_slots_close(&ac->wslots);
    kc_slots_close(&ac->slots);
    free(ac->heap);
    free(ac->client_name);
    free(ac->token);
    free(ac);
}

static void ac_maybe_finish(struct keel_aclient *ac)
{
    if (!ac->closing || ac->open_handles > 0 || ac->nconns > 0)
        return;
    keel_close_cb cb = ac->close_cb;
    void *data = ac->close_data;
    ac_free(ac);
    if (cb)
        cb(data);
}

void kc_conn_freed(struct keel_aclient *ac)
{
    ac->nconns--;
    ac_maybe_finish(ac);
}

static void ac_handle_closed(uv_handle_t *h)
{
    struct keel_aclient *ac = h->data;
    ac->open_handles--;
    ac_maybe_finish(ac);
}

int keel_aclient_init(struct keel_aclient **out, uv_loop_t *loop, const struct keel_options *opts)
{
    static const struct keel_options defaults;
    if (out == NULL || loop == NULL)
        return KEEL_EINVAL;
    if (opts == NULL)
        opts = &defaults;
    struct keel_aclient *ac = calloc(1, sizeof(*ac));
    if (ac == NULL)
        return KEEL_ENOMEM;
    ac->loop = loop;
    ac->leader = -1;
    ac->timer_due = UINT64_MAX;
    kc_slots_init(&ac->slots);
    kc_slots_init(&ac->wslots);
    ac->dial_timeout_ms =
        opts->dial_timeout_ms ? opts->dial_timeout_ms : KEEL_DEFAULT_DIAL_TIMEOUT_MS;
    ac->request_timeout_ms =
        opts->request_timeout_ms ? opts->request_timeout_ms : KEEL_DEFAULT_REQUEST_TIMEOUT_MS;
    ac->max_retries = opts->max_retries ? opts->max_retries : KEEL_DEFAULT_MAX_RETRIES;
    if (ac->max_retries > UINT16_MAX) /* op->attempts is 16 bits */
        ac->max_retries = UINT16_MAX;
    ac->max_frame = opts->max_frame ? opts->max_frame : KEEL_FRAME_DEFAULT_MAX;
    ac->rng = (uint64_t)(uintptr_t)ac ^ uv_hrtime() ^ 0x9e3779b97f4a7c15ull;
    if (ac->rng == 0)
        ac->rng = 1;
    int rv = KEEL_EINVAL;
    if (opts->zone && strlen(opts->zone) >= sizeof(ac->zone))
        goto fail;
    snprintf(ac->zone, sizeof(ac->zone), "%s", opts->zone ? opts->zone : "");
    if (opts->source_address && opts->source_address[0]) {
        if (uv_ip4_addr(opts->source_address, 0, &ac->source) != 0)
            goto fail;
        ac->have_source = true;
    }
    rv = KEEL_ENOMEM;
    ac->client_name = strdup(opts->client_name ? opts->client_name : "libkeel");
    if (ac->client_name == NULL)
        goto fail;
    if (opts->token) {
        ac->token = strdup(opts->token);
        if (ac->token == NULL)
            goto fail;
    }
    rv = KEEL_EINVAL;
    const char *eps =
        opts->endpoints && opts->endpoints[0] ? opts->endpoints : KEEL_DEFAULT_ENDPOINT;
    for (const char *s = eps; *s;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len > 0) {
            int i = peer_find_or_add(ac, s, len);
            if (i < 0)
                goto fail;
            ac->peers[i].from_endpoints = true;
        }
        s += len;
        if (*s == ',')
            s++;
    }
    if (ac->npeers == 0)
        goto fail;
    uv_timer_init(loop, &ac->timer);
    uv_prepare_init(loop, &ac->prepare);
    ac->timer.data = ac;
    ac->prepare.data = ac;
    ac->open_handles = 2;
    *out = ac;
    return 0;

fail:
    ac_free(ac);
    return rv;
}

/* What the client needs to know of a request's kind. */
struct kc_kind {
    int status;      /* 0, KEEL_EINVAL (no body) or KEEL_EUNSUPPORTED (not a request here) */
    uint8_t route;   /* KC_ROUTE_LEADER or KC_ROUTE_ANY */
    bool idempotent; /* sending it twice changes nothing */
};

/* Whether a txn only reads. Nested txns count as writes: rare, and erring that way only costs a
 * retry. */
static bool txn_reads_only(const Keel__TxnRequest *t)
{
    if (t == NULL)
        return false;
    for (size_t i = 0; i < t->n_success; i++)
        if (t->success[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE)
            return false;
    for (size_t i = 0; i < t->n_failure; i++)
        if (t->failure[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE)
            return false;
    return true;
}

/* The one place the client classifies requests: writes and linearizable reads go to the leader,
 * and only reads are retried after they may have been sent. A body pointer may be NULL here. */
static struct kc_kind kind_of(const Keel__Request *req)
{
    /* to be replaced by proto's request-kind table */
    struct kc_kind k = {0, KC_ROUTE_LEADER, false};
    switch (req->body_case) {
    case KEEL__REQUEST__BODY__NOT_SET:
        k.status = KEEL_EINVAL;
        break;
    case KEEL__REQUEST__BODY_WATCH_CREATE:
    case KEEL__REQUEST__BODY_WATCH_CANCEL:
    case KEEL__REQUEST__BODY_WATCH_PROGRESS:
    case KEEL__REQUEST__BODY_SNAPSHOT:
        k.status = KEEL_EUNSUPPORTED;
        break;
    case KEEL__REQUEST__BODY_RANGE:
        k.idempotent = true;
        if (req->range && req->range->serializable)
            k.route = KC_ROUTE_ANY;
        break;
    case KEEL__REQUEST__BODY_MEMBER_LIST:
        k.idempotent = true;
        if (req->member_list && !req->member_list->linearizable)
            k.route = KC_ROUTE_ANY;
        break;
    case KEEL__REQUEST__BODY_STATUS:
        k.idempotent = true;
        k.route = KC_ROUTE_ANY;
        break;
    case KEEL__REQUEST__BODY_ALARM:
        if (req->alarm && req->alarm->action == KEEL__ALARM_REQUEST__ALARM_ACTION__GET) {
            k.idempotent = true;
            k.route = KC_ROUTE_ANY;
        }
        break;
    case KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE:
    case KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE:
    case KEEL__REQUEST__BODY_LEASE_LEASES:
    case KEEL__REQUEST__BODY_AUTHENTICATE:
    case KEEL__REQUEST__BODY_USER_GET:
    case KEEL__REQUEST__BODY_USER_LIST:
    case KEEL__REQUEST__BODY_ROLE_GET:
    case KEEL__REQUEST__BODY_ROLE_LIST:
        k.idempotent = true;
        break;
    case KEEL__REQUEST__BODY_TXN:
        k.idempotent = txn_reads_only(req->txn);
        break;
    default:
        break; /* a write */
    }
    return k;
}

bool keel_request_is_idempotent(const Keel__Request *req)
{
    return kind_of(req).idempotent;
}

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
        pin = peer_find_or_add(ac, opts->endpoint, strlen(opts->endpoint));
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
    size_t len = keel_frame_size(&copy.base);
    if (len - KEEL_FRAME_HEADER > ac->max_frame) {
        kc_slots_give(&ac->slots, slot, NULL);
        return KEEL_ETOOLARGE;
    }
    struct kc_op *op = op_alloc(ac, len);
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
    op->deadline = now_ms(ac) + op->timeout_ms;
    if (heap_push(ac, op) != 0) {
        op_free(ac, op);
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

void keel_aclient_close(struct keel_aclient *ac, keel_close_cb cb, void *data)
{
    if (ac == NULL || ac->closing)
        return;
    ac->close_cb = cb;
    ac->close_data = data;
    ac->closing = true;
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
        ac->peers[i].conn = NULL;
        kc_conn_close(c);
    }
    kc_watch_close_all(ac);
    kc_drain(ac);
    uv_timer_stop(&ac->timer);
    uv_close((uv_handle_t *)&ac->timer, ac_handle_closed);
    uv_close((uv_handle_t *)&ac->prepare, ac_handle_closed);
}

void keel_aclient_stats(const struct keel_aclient *ac, struct keel_aclient_stats *out)
{
    *out = ac->stats;
    out->connections = (uint32_t)ac->nconns;
    out->watches = (uint32_t)(ac->watches.n + ac->wsettling.n);
}
