/*
 * The lessor (lessor.h says what it promises). One file: the table, the leader's countdown heap
 * and the requests it answers are one piece of state with one set of rules.
 *
 *   every member:  applied grant / revoke / checkpoint -> the table (lease: ttl, checkpoint, when)
 *   leader:        promotion -> barrier -> applied up to it -> countdowns from the table (ready)
 *                  keep-alive -> renewed now, or a reset proposed and the answer held until applied
 *                  tick      -> checkpoints of leases unrenewed for an interval; lost proposals
 *                  expiry    -> revokes proposed in bounded batches, removed when applied
 */
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "err.h"
#include "lessor.h"
#include "log.h"
#include "u64map.h"

#define NOT_IN_HEAP SIZE_MAX

/* A keep-alive waiting for its lease's reset to be applied. */
struct waiter {
    struct waiter *next;
    uint64_t session;
    uint64_t req_id;
};

struct lease {
    int64_t id;
    int64_t ttl;    /* granted, seconds */
    int64_t cp_ms;  /* the checkpoint as applied: remaining ms, 0: kept alive since */
    uint64_t cp_at; /* when it was applied here (loop ms) */
    /* the leader's countdown; meaningful while ready */
    uint64_t deadline; /* loop ms */
    size_t heap_idx;   /* NOT_IN_HEAP once a revoke is proposed, or when not leading */
    uint64_t renewed_at;
    bool cp_unsafe;    /* a checkpoint is proposed or applied and no reset since: a keep-alive
                        * must commit a reset before it is answered */
    uint64_t reset_id; /* the reset in flight (its Command's request id), 0: none */
    uint64_t reset_at;
    uint64_t held_deadline; /* while a reset is in flight deadline is "never": this was it */
    uint64_t revoke_at;     /* when its revoke was proposed, 0: none */
    struct waiter *waiters;
};

struct barrier_req {
    struct keel_lessor *l;
    uint64_t gen;
};

struct keel_lessor {
    struct keel_lessor_options o;
    struct keel_u64map table; /* id -> struct lease */
    struct lease **heap;      /* the leader's countdowns, earliest deadline first */
    size_t heap_n, heap_cap;
    int64_t min_ttl;
    uint64_t tick_ms, lost_ms;

    bool leading, ready;
    uint64_t gen;         /* promotions so far: a barrier of an older one is ignored */
    bool barrier_pending; /* asked, its callback not yet fired */
    bool awaiting_apply;  /* the barrier fired: ready once the store reaches target */
    uint64_t target;
    size_t revokes_in_flight;
    uint64_t granted, revoked, expired; /* applied since start (keel_lessor_stat) */

    struct keel_arena arena; /* answers */
    uv_timer_t expiry, tick;
    bool stopped;
};

static uint64_t now_ms(struct keel_lessor *l)
{
    uv_update_time(l->o.loop);
    return uv_now(l->o.loop);
}

/* ---- the countdown heap ---- */

static void heap_set(struct keel_lessor *l, size_t i, struct lease *x)
{
    l->heap[i] = x;
    x->heap_idx = i;
}

static void heap_up(struct keel_lessor *l, size_t i)
{
    struct lease *x = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->deadline <= x->deadline)
            break;
        heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    heap_set(l, i, x);
}

static void heap_down(struct keel_lessor *l, size_t i)
{
    struct lease *x = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->heap_n)
            break;
        if (c + 1 < l->heap_n && l->heap[c + 1]->deadline < l->heap[c]->deadline)
            c++;
        if (x->deadline <= l->heap[c]->deadline)
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, x);
}

static int heap_push(struct keel_lessor *l, struct lease *x)
{
    if (l->heap_n == l->heap_cap) {
        size_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
        struct lease **v = realloc(l->heap, cap * sizeof(*v));
        if (v == NULL)
            return KEEL_ENOMEM;
        l->heap = v;
        l->heap_cap = cap;
    }
    heap_set(l, l->heap_n++, x);
    heap_up(l, l->heap_n - 1);
    return 0;
}

static void heap_remove(struct keel_lessor *l, struct lease *x)
{
    size_t i = x->heap_idx;
    if (i == NOT_IN_HEAP)
        return;
    x->heap_idx = NOT_IN_HEAP;
    struct lease *last = l->heap[--l->heap_n];
    if (i == l->heap_n)
        return;
    heap_set(l, i, last);
    heap_up(l, i);
    heap_down(l, last->heap_idx);
}

/* x's deadline changed: put it where it belongs (or in, when it was out). */
static void heap_fix(struct keel_lessor *l, struct lease *x)
{
    if (x->heap_idx == NOT_IN_HEAP) {
        if (heap_push(l, x) != 0)
            KLOG_ERROR("lease %lld: out of memory for its countdown", (long long)x->id);
        return;
    }
    heap_up(l, x->heap_idx);
    heap_down(l, x->heap_idx);
}

/* ---- answers ---- */

static void answer_keep_alive(struct keel_lessor *l, uint64_t session, uint64_t req_id, int64_t id,
                              int64_t ttl)
{
    Keel__LeaseKeepAliveResponse ka = KEEL__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    ka.id = id;
    ka.ttl = ttl;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req_id;
    resp.body_case = KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE;
    resp.lease_keep_alive = &ka;
    keel_reply_send(l->o.reply, session, &resp, -1, KEEL_RESPOND_ANSWER);
}

/* Answer every keep-alive waiting on x: with its TTL (ttl >= 0), or with err. */
static void release_waiters(struct keel_lessor *l, struct lease *x, int64_t ttl, int err,
                            const char *msg)
{
    struct waiter *w = x->waiters;
    x->waiters = NULL;
    while (w != NULL) {
        struct waiter *next = w->next;
        if (err != 0)
            keel_reply_error(l->o.reply, w->session, w->req_id, err, msg);
        else
            answer_keep_alive(l, w->session, w->req_id, x->id, ttl);
        free(w);
        w = next;
    }
}

/* ---- the table ---- */

static struct lease *lease_get(struct keel_lessor *l, int64_t id)
{
    return id > 0 ? keel_u64map_get(&l->table, (uint64_t)id) : NULL;
}

static void lease_drop(struct keel_lessor *l, struct lease *x)
{
    release_waiters(l, x, 0, 0, NULL); /* revoked: TTL 0, as for an unknown lease */
    heap_remove(l, x);
    if (x->revoke_at != 0 && l->revokes_in_flight > 0)
        l->revokes_in_flight--;
    keel_u64map_del(&l->table, (uint64_t)x->id);
    free(x);
}

/* Insert or update a lease as a grant or the store has it. */
static struct lease *lease_set(struct keel_lessor *l, int64_t id, int64_t ttl, int64_t cp_ms,
                               uint64_t now)
{
    struct lease *x = lease_get(l, id);
    if (x == NULL) {
        if ((x = calloc(1, sizeof(*x))) == NULL)
            return NULL;
        x->id = id;
        x->heap_idx = NOT_IN_HEAP;
        if (keel_u64map_put(&l->table, (uint64_t)id, x) != 0) {
            free(x);
            return NULL;
        }
    }
    x->ttl = ttl;
    x->cp_ms = cp_ms;
    x->cp_at = now;
    return x;
}

static void each_lease(struct keel_lessor *l, void (*fn)(struct keel_lessor *, struct lease *))
{
    /* fn may not add or remove leases: the slots stay where they are. */
    for (size_t i = 0; i < l->table.cap; i++)
        if (l->table.keys[i] != 0)
            fn(l, l->table.vals[i]);
}

static void forget_lease(struct keel_lessor *l, struct lease *x)
{
    release_waiters(l, x, 0, KEEL_EUNAVAILABLE, "the lease table is being reloaded");
    free(x);
}

static void clear_table(struct keel_lessor *l)
{
    each_lease(l, forget_lease);
    keel_u64map_close(&l->table);
    keel_u64map_init(&l->table);
    l->heap_n = 0;
    l->revokes_in_flight = 0;
}

/* The table as the store has it now (start, a restored checkpoint). */
static int load_table(struct keel_lessor *l)
{
    clear_table(l);
    keel_arena_reset(&l->arena);
    struct keel_lease_info *v;
    size_t n;
    int err = keel_store_lease_list(l->o.store, &l->arena, &v, &n);
    /* A member restarted on the same boot counts each checkpoint from when it applied it (the
     * store keeps that with the record; uv_now and the store's clock are both CLOCK_MONOTONIC),
     * so its restart gives an abandoned lease no more time. Not from its last commit: a write
     * or a new leader's barrier after the checkpoint moves that on, and a member that restarted
     * and then led would push the deadline out by as much with every restart. A record without
     * its clock (an older store, another boot) is counted from the last commit, which is after
     * it was applied, or else from now: late, never early. */
    int64_t age = keel_store_commit_age_ms(l->o.store);
    uint64_t now = now_ms(l);
    uint64_t committed_at = age > 0 && (uint64_t)age < now ? now - (uint64_t)age : now;
    for (size_t i = 0; err == 0 && i < n; i++) {
        int64_t cp_age = v[i].checkpoint_age_ms;
        uint64_t applied_at =
            cp_age >= 0 && (uint64_t)cp_age < now ? now - (uint64_t)cp_age : committed_at;
        if (lease_set(l, v[i].id, v[i].ttl, v[i].checkpoint_ms, applied_at) == NULL)
            err = KEEL_ENOMEM;
    }
    keel_arena_reset(&l->arena);
    return err;
}

/* ---- proposals ---- */

static int propose_revoke(struct keel_lessor *l, int64_t id)
{
    Keel__LeaseRevokeRequest *r = malloc(sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    keel__lease_revoke_request__init(r);
    r->id = id;
    Keel__Command c = KEEL__COMMAND__INIT;
    c.op_case = KEEL__COMMAND__OP_LEASE_REVOKE;
    c.lease_revoke = r;
    return keel_propose_command(l->o.propose, &c, &r->base, NULL);
}

/*
 * One Command with n checkpoints, in memory protobuf-c's free_unpacked releases (the proposer
 * frees it once the entry is encoded).
 */
static Keel__LeaseCheckpointRequest *checkpoint_new(size_t cap)
{
    Keel__LeaseCheckpointRequest *r = malloc(sizeof(*r));
    if (r == NULL)
        return NULL;
    keel__lease_checkpoint_request__init(r);
    if ((r->checkpoints = malloc(cap * sizeof(*r->checkpoints))) == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

static int checkpoint_add(Keel__LeaseCheckpointRequest *r, int64_t id, int64_t remaining_ms)
{
    Keel__LeaseCheckpoint *cp = malloc(sizeof(*cp));
    if (cp == NULL)
        return KEEL_ENOMEM;
    keel__lease_checkpoint__init(cp);
    cp->id = id;
    cp->remaining_ms = remaining_ms;
    r->checkpoints[r->n_checkpoints++] = cp;
    return 0;
}

static int checkpoint_propose(struct keel_lessor *l, Keel__LeaseCheckpointRequest *r,
                              uint64_t *request_id)
{
    Keel__Command c = KEEL__COMMAND__INIT;
    c.op_case = KEEL__COMMAND__OP_LEASE_CHECKPOINT;
    c.lease_checkpoint = r;
    return keel_propose_command(l->o.propose, &c, &r->base, request_id);
}

/* ---- expiry ---- */

/* Revokes proposed and not yet applied: a client write queues behind at most this many (about
 * 20 ms of apply in a release build), however many leases expire at once. */
static uint64_t revoke_cap(const struct keel_lessor *l)
{
    return (uint64_t)l->o.max_revokes;
}

static void expire_cb(uv_timer_t *t);

static void arm_expiry(struct keel_lessor *l)
{
    if (l->stopped || !l->ready || l->heap_n == 0 || l->revokes_in_flight >= revoke_cap(l)) {
        if (!l->stopped)
            uv_timer_stop(&l->expiry);
        return;
    }
    uint64_t now = now_ms(l), d = l->heap[0]->deadline;
    uv_timer_start(&l->expiry, expire_cb, d > now ? d - now : 0, 0);
}

static void expire_cb(uv_timer_t *t)
{
    struct keel_lessor *l = t->data;
    if (!l->ready)
        return;
    uint64_t now = now_ms(l);
    size_t n = 0;
    while (l->heap_n > 0 && l->heap[0]->deadline <= now && n < l->o.max_revokes &&
           l->revokes_in_flight < revoke_cap(l)) {
        struct lease *x = l->heap[0];
        if (propose_revoke(l, x->id) != 0)
            break; /* out of memory: the next tick tries again */
        heap_remove(l, x);
        x->revoke_at = now;
        l->revokes_in_flight++;
        n++;
    }
    /* More expired: the next loop turn, after this turn's entry went out and client requests
     * had their turn. */
    arm_expiry(l);
}

/* ---- promotion ---- */

static void start_countdown(struct keel_lessor *l, struct lease *x)
{
    uint64_t now = now_ms(l);
    x->revoke_at = 0;
    x->reset_id = 0;
    if (x->cp_ms > 0) {
        /* Nobody was promised more since it was written down: count from when it was applied
         * here, which is after the old leader's reading. */
        x->deadline = x->cp_at + (uint64_t)x->cp_ms;
        x->cp_unsafe = true;
        x->renewed_at = x->cp_at;
    } else {
        /* Kept alive lately, maybe by a deposed leader that has not noticed yet. */
        x->deadline = now + l->o.election_ms + (uint64_t)x->ttl * 1000;
        x->cp_unsafe = false;
        x->renewed_at = now;
    }
    x->heap_idx = NOT_IN_HEAP;
    if (heap_push(l, x) != 0)
        KLOG_ERROR("lease %lld: out of memory for its countdown", (long long)x->id);
}

static void become_ready(struct keel_lessor *l)
{
    l->awaiting_apply = false;
    l->ready = true;
    l->heap_n = 0;
    l->revokes_in_flight = 0;
    each_lease(l, start_countdown);
    KLOG_INFO("lessor: counting down %zu leases as leader", l->heap_n);
    arm_expiry(l);
}

static void barrier_done(void *data, int err)
{
    struct barrier_req *br = data;
    struct keel_lessor *l = br->l;
    uint64_t gen = br->gen;
    free(br);
    if (gen != l->gen || !l->leading || l->stopped)
        return;
    l->barrier_pending = false;
    if (err != 0)
        return; /* the next tick asks again while still leading */
    /* Everything before the barrier has reached the writer: once it has committed that much,
     * the table holds every grant, revoke and checkpoint of the predecessors. */
    l->target = l->o.progress->queued;
    if (l->o.progress->committed >= l->target)
        become_ready(l);
    else
        l->awaiting_apply = true;
}

static void ask_barrier(struct keel_lessor *l)
{
    struct barrier_req *br = malloc(sizeof(*br));
    if (br == NULL)
        return;
    br->l = l;
    br->gen = l->gen;
    if (l->o.raft->barrier(l->o.raft->ctx, barrier_done, br) != 0) {
        free(br);
        return;
    }
    l->barrier_pending = true;
}

static void stand_down(struct keel_lessor *l, struct lease *x)
{
    release_waiters(l, x, 0, KEEL_ENOTLEADER, NULL);
    x->heap_idx = NOT_IN_HEAP;
    x->revoke_at = 0;
    x->reset_id = 0;
}

void keel_lessor_leader_changed(struct keel_lessor *l, bool is_leader)
{
    if (l->stopped || is_leader == l->leading)
        return;
    l->leading = is_leader;
    l->ready = false;
    l->awaiting_apply = false;
    l->barrier_pending = false;
    l->gen++;
    if (!is_leader) {
        each_lease(l, stand_down);
        l->heap_n = 0;
        l->revokes_in_flight = 0;
        uv_timer_stop(&l->expiry);
        return;
    }
    ask_barrier(l);
}

/* ---- the tick: checkpoints, lost proposals ---- */

struct tick_state {
    uint64_t now;
    Keel__LeaseCheckpointRequest *cps;
    size_t cap;
};

static void tick_lease(struct keel_lessor *l, struct lease *x, struct tick_state *ts)
{
    uint64_t lost = l->lost_ms;
    if (x->reset_id != 0 && ts->now - x->reset_at > lost) {
        /* The reset never came back (refused, or lost with an entry): the keep-alives retry,
         * and the countdown is what it was. */
        release_waiters(l, x, 0, KEEL_EUNAVAILABLE, "lease keep-alive not committed in time");
        x->reset_id = 0;
        x->cp_unsafe = true;
        x->deadline = x->held_deadline;
        if (x->revoke_at == 0)
            heap_fix(l, x);
    }
    if (x->revoke_at != 0 && ts->now - x->revoke_at > lost) {
        if (propose_revoke(l, x->id) == 0)
            x->revoke_at = ts->now;
        return;
    }
    if (x->revoke_at != 0 || x->reset_id != 0 || x->cp_unsafe || x->deadline <= ts->now ||
        ts->now - x->renewed_at < l->o.checkpoint_ms)
        return;
    /* Allocated for the first lease that needs one: an idle tick allocates nothing. */
    if (ts->cps == NULL && (ts->cps = checkpoint_new(ts->cap)) == NULL)
        return;
    if (ts->cps->n_checkpoints == ts->cap)
        return;
    if (checkpoint_add(ts->cps, x->id, (int64_t)(x->deadline - ts->now)) == 0)
        x->cp_unsafe = true;
}

static void tick_cb(uv_timer_t *t)
{
    struct keel_lessor *l = t->data;
    if (!l->leading)
        return;
    if (!l->ready) {
        if (!l->barrier_pending && !l->awaiting_apply)
            ask_barrier(l);
        return;
    }
    struct tick_state ts = {.now = now_ms(l), .cap = KEEL_LESSOR_CHECKPOINTS_PER_TICK};
    if (l->table.n < ts.cap)
        ts.cap = l->table.n;
    for (size_t i = 0; i < l->table.cap; i++)
        if (l->table.keys[i] != 0)
            tick_lease(l, l->table.vals[i], &ts);
    arm_expiry(l); /* a lost reset gave a lease its countdown back */
    if (ts.cps == NULL)
        return;
    if (ts.cps->n_checkpoints == 0) {
        protobuf_c_message_free_unpacked(&ts.cps->base, NULL);
        return;
    }
    /* Out of memory leaves them marked: a keep-alive then commits a reset it did not need,
     * which is safe. */
    if (checkpoint_propose(l, ts.cps, NULL) != 0)
        KLOG_WARN("lessor: checkpoints not proposed (out of memory)");
}

/* ---- applied batches ---- */

static void applied_checkpoint(struct keel_lessor *l, const struct keel_fsm_result *r, uint64_t now)
{
    const Keel__LeaseCheckpointRequest *req = r->cmd->lease_checkpoint;
    bool mine = r->origin == l->o.reply->member_id;
    for (size_t i = 0; i < req->n_checkpoints; i++) {
        struct lease *x = lease_get(l, req->checkpoints[i]->id);
        if (x == NULL)
            continue;
        x->cp_ms = req->checkpoints[i]->remaining_ms;
        x->cp_at = now;
        if (l->ready && mine && x->reset_id != 0 && x->reset_id == r->request_id && x->cp_ms == 0) {
            /* The reset is in the log: the keep-alives that waited for it renew the lease. */
            x->reset_id = 0;
            x->renewed_at = now;
            x->deadline = now + (uint64_t)x->ttl * 1000;
            if (x->revoke_at == 0)
                heap_fix(l, x);
            release_waiters(l, x, x->ttl, 0, NULL);
        }
    }
}

void keel_lessor_applied(struct keel_lessor *l, const struct keel_fsm_batch *b)
{
    if (l->stopped)
        return;
    uint64_t now = now_ms(l);
    if (b->restored) {
        /* The store was replaced by a checkpoint: the table follows it. */
        if (load_table(l) != 0)
            KLOG_ERROR("lessor: cannot reload the lease table after a restore");
        if (l->leading) {
            l->ready = false;
            l->gen++;
            l->barrier_pending = false;
            l->awaiting_apply = false;
            ask_barrier(l);
        }
    }
    for (size_t i = 0; i < b->n; i++) {
        const struct keel_fsm_result *r = &b->results[i];
        if (r->r.skipped)
            continue;
        if (r->op == KEEL__COMMAND__OP_LEASE_GRANT && r->r.err == 0) {
            const Keel__LeaseGrantResponse *g = r->r.response->lease_grant;
            struct lease *x = lease_set(l, g->id, g->ttl, g->ttl * 1000, now);
            l->granted++;
            if (x == NULL) {
                KLOG_ERROR("lease %lld: out of memory for the table", (long long)g->id);
                continue;
            }
            if (l->ready) {
                x->deadline = now + (uint64_t)g->ttl * 1000;
                x->renewed_at = now;
                x->cp_unsafe = true; /* the grant wrote its full TTL down */
                heap_fix(l, x);
            }
        } else if (r->op == KEEL__COMMAND__OP_LEASE_REVOKE) {
            struct lease *x = lease_get(l, r->cmd->lease_revoke->id);
            if (r->r.err == 0) {
                l->revoked++;
                /* Expired: this member's countdown ran out and it proposed the revoke (or a
                 * client's revoke of this member beat it to the log). */
                if (x != NULL && x->revoke_at != 0 && r->origin == l->o.reply->member_id)
                    l->expired++;
            }
            if (x != NULL && (r->r.err == 0 || r->r.err == KEEL_ELEASENOTFOUND))
                lease_drop(l, x);
        } else if (r->op == KEEL__COMMAND__OP_LEASE_CHECKPOINT && r->r.err == 0) {
            applied_checkpoint(l, r, now);
        }
    }
    if (l->awaiting_apply && b->applied_index >= l->target)
        become_ready(l);
    else if (l->ready)
        arm_expiry(l);
}

/* ---- requests ---- */

static void keep_alive(struct keel_lessor *l, uint64_t session, const Keel__Request *req)
{
    int64_t id = req->lease_keep_alive->id;
    uint64_t now = now_ms(l);
    struct lease *x = lease_get(l, id);
    if (x == NULL || x->revoke_at != 0 || x->deadline <= now) {
        answer_keep_alive(l, session, req->id, id, 0);
        return;
    }
    if (x->reset_id == 0 && !x->cp_unsafe) {
        x->renewed_at = now;
        x->deadline = now + (uint64_t)x->ttl * 1000;
        heap_fix(l, x);
        answer_keep_alive(l, session, req->id, id, x->ttl);
        return;
    }
    struct waiter *w = malloc(sizeof(*w));
    if (w == NULL) {
        keel_reply_error(l->o.reply, session, req->id, KEEL_ENOMEM, NULL);
        return;
    }
    if (x->reset_id == 0) {
        /* A checkpoint of it is (or may be) in the log: write down that it was kept alive
         * before promising anything, or a new leader could count from the checkpoint. */
        Keel__LeaseCheckpointRequest *r = checkpoint_new(1);
        int err = r == NULL ? KEEL_ENOMEM : checkpoint_add(r, id, 0);
        if (err != 0 && r != NULL)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (err == 0)
            err = checkpoint_propose(l, r, &x->reset_id);
        if (err != 0) {
            free(w);
            keel_reply_error(l->o.reply, session, req->id, KEEL_EUNAVAILABLE,
                             "lease keep-alive could not be proposed");
            return;
        }
        x->reset_at = now;
        x->cp_unsafe = false;
        /* A keep-alive that came in time renews it once the reset is applied: it must not
         * expire meanwhile, or the answer would renew a revoked lease. */
        x->held_deadline = x->deadline;
        x->deadline = UINT64_MAX;
        heap_fix(l, x);
    }
    w->session = session;
    w->req_id = req->id;
    w->next = x->waiters;
    x->waiters = w;
}

static void time_to_live(struct keel_lessor *l, uint64_t session, const Keel__Request *req)
{
    const Keel__LeaseTimeToLiveRequest *q = req->lease_time_to_live;
    uint64_t now = now_ms(l);
    struct lease *x = lease_get(l, q->id);
    keel_arena_reset(&l->arena);
    Keel__LeaseTimeToLiveResponse lr = KEEL__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    lr.id = q->id;
    lr.ttl = -1;
    uint64_t deadline = x == NULL ? 0 : x->reset_id != 0 ? x->held_deadline : x->deadline;
    if (x != NULL && x->revoke_at == 0 && deadline > now) {
        lr.ttl = (int64_t)((deadline - now + 999) / 1000);
        lr.grantedttl = x->ttl;
        if (q->keys) {
            struct keel_lease_info info;
            int err =
                keel_store_lease_get(l->o.store, q->id, &l->arena, &info, &lr.keys, &lr.n_keys);
            if (err == KEEL_ELEASENOTFOUND) {
                lr.ttl = -1;
                lr.grantedttl = 0;
            } else if (err != 0) {
                keel_reply_error(l->o.reply, session, req->id, err, NULL);
                return;
            }
        }
    }
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_LEASE_TIME_TO_LIVE;
    resp.lease_time_to_live = &lr;
    keel_reply_send(l->o.reply, session, &resp, -1, KEEL_RESPOND_ANSWER);
    keel_arena_reset(&l->arena);
}

static void leases(struct keel_lessor *l, uint64_t session, const Keel__Request *req)
{
    keel_arena_reset(&l->arena);
    Keel__LeaseLeasesResponse lr = KEEL__LEASE_LEASES_RESPONSE__INIT;
    size_t n = l->table.n;
    Keel__LeaseStatus *st = n ? keel_arena_alloc(&l->arena, n * sizeof(*st)) : NULL;
    Keel__LeaseStatus **v = n ? keel_arena_alloc(&l->arena, n * sizeof(*v)) : NULL;
    if (n > 0 && (st == NULL || v == NULL)) {
        keel_reply_error(l->o.reply, session, req->id, KEEL_ENOMEM, NULL);
        return;
    }
    for (size_t i = 0; i < l->table.cap; i++) {
        struct lease *x = l->table.keys[i] != 0 ? l->table.vals[i] : NULL;
        if (x == NULL || x->revoke_at != 0)
            continue;
        keel__lease_status__init(&st[lr.n_leases]);
        st[lr.n_leases].id = x->id;
        v[lr.n_leases] = &st[lr.n_leases];
        lr.n_leases++;
    }
    lr.leases = v;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_LEASE_LEASES;
    resp.lease_leases = &lr;
    keel_reply_send(l->o.reply, session, &resp, -1, KEEL_RESPOND_ANSWER);
    keel_arena_reset(&l->arena);
}

void keel_lessor_request(struct keel_lessor *l, uint64_t session, const Keel__Request *req)
{
    if (l->stopped) {
        keel_reply_error(l->o.reply, session, req->id, KEEL_EUNAVAILABLE, "member is stopping");
        return;
    }
    if (!l->leading || !l->o.raft->is_leader(l->o.raft->ctx)) {
        keel_reply_error(l->o.reply, session, req->id, KEEL_ENOTLEADER, NULL);
        return;
    }
    if (!l->ready) {
        keel_reply_error(l->o.reply, session, req->id, KEEL_EUNAVAILABLE,
                         "the new leader is still applying the log; retry");
        return;
    }
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE:
        keep_alive(l, session, req);
        break;
    case KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE:
        time_to_live(l, session, req);
        break;
    case KEEL__REQUEST__BODY_LEASE_LEASES:
        leases(l, session, req);
        break;
    default:
        keel_reply_error(l->o.reply, session, req->id, KEEL_EINVAL, "not a lease request");
        break;
    }
}

int64_t keel_lessor_clamp_ttl(const struct keel_lessor *l, int64_t ttl)
{
    return ttl > 0 && ttl < l->min_ttl ? l->min_ttl : ttl;
}

void keel_lessor_stat(const struct keel_lessor *l, struct keel_lessor_stat *out)
{
    out->leases = l->table.n;
    out->granted = l->granted;
    out->revoked = l->revoked;
    out->expired = l->expired;
}

/* ---- life ---- */

int keel_lessor_new(const struct keel_lessor_options *o, struct keel_lessor **out)
{
    struct keel_lessor *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return KEEL_ENOMEM;
    l->o = *o;
    if (l->o.max_revokes == 0)
        l->o.max_revokes = 1000;
    /* etcd: 1.5 election timeouts, in whole seconds. */
    l->min_ttl = ((int64_t)o->election_ms * 3 / 2 + 999) / 1000;
    if (l->min_ttl < 1)
        l->min_ttl = 1;
    uint64_t tick = o->checkpoint_ms / 2;
    l->tick_ms = tick < 50 ? 50 : tick > 1000 ? 1000 : tick;
    l->lost_ms = 4 * (uint64_t)o->election_ms > 5000 ? 4 * (uint64_t)o->election_ms : 5000;
    keel_u64map_init(&l->table);
    keel_arena_init(&l->arena, 0);
    uv_timer_init(o->loop, &l->expiry);
    uv_timer_init(o->loop, &l->tick);
    l->expiry.data = l->tick.data = l;
    int err = load_table(l);
    if (err != 0) {
        keel_lessor_stop(l);
        *out = l; /* freed by the caller after the loop closed the timers */
        return err;
    }
    uv_timer_start(&l->tick, tick_cb, l->tick_ms, l->tick_ms);
    KLOG_INFO("lessor: %zu leases, minimum TTL %llds, checkpoint interval %u ms", l->table.n,
              (long long)l->min_ttl, o->checkpoint_ms);
    *out = l;
    return 0;
}

static void stop_lease(struct keel_lessor *l, struct lease *x)
{
    release_waiters(l, x, 0, KEEL_EUNAVAILABLE, "member is stopping");
}

void keel_lessor_stop(struct keel_lessor *l)
{
    if (l == NULL || l->stopped)
        return;
    l->stopped = true;
    l->ready = false;
    each_lease(l, stop_lease);
    uv_close((uv_handle_t *)&l->expiry, NULL);
    uv_close((uv_handle_t *)&l->tick, NULL);
}

void keel_lessor_free(struct keel_lessor *l)
{
    if (l == NULL)
        return;
    clear_table(l);
    keel_u64map_close(&l->table);
    keel_arena_close(&l->arena);
    free(l->heap);
    free(l);
}
