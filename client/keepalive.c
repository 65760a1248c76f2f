/*
 * Keep-alives (keel.h says what they promise): a set of leases renewed in the background.
 *
 * Each lease of the set has a record, found by id through a chained hash table and by time
 * through a min-heap keyed on when something must next happen to it: its next keep-alive is due,
 * or its deadline passes (a lease in flight waits only for its deadline). One uv_timer is armed
 * for the heap's minimum. Keep-alives are ordinary requests of the core (request.c): routing to
 * the leader, NOT_LEADER redirects, failover and retries all come from there.
 *
 * A lease nobody renewed for its TTL is reported overdue (KEEL_ETIMEOUT) and kept: see
 * report_overdue. A record whose keep-alive is in flight outlives its lease's leaving the set
 * (removed, lost or the set closed): it stays in the table marked `gone`, out of the heap, and its
 * answer frees it. Adding the lease again meanwhile revives it, so one lease never has two
 * keep-alives in flight.
 *
 * User callbacks run only from the timer callback and from the answers' callbacks; `busy` counts
 * those, so that keel_keepalive_close from inside a callback only marks the set, and the set is
 * freed once nothing runs, nothing is in flight and the timer is closed.
 */
#include <stdlib.h>

#include "internal.h"

#define KA_RETRY_MS       500 /* default opts.retry_ms */
#define KA_MIN_TIMEOUT_MS 100 /* a keep-alive's own deadline, at the least */
#define KA_NO_HEAP        SIZE_MAX

struct ka_lease {
    struct ka_lease *chain; /* the table's bucket */
    struct keel_keepalive *ka;
    int64_t id;
    uint64_t due;      /* loop time of the next keep-alive (when not in flight) */
    uint64_t deadline; /* lost when nothing renewed it by then */
    uint64_t sent_at;  /* when the keep-alive in flight was submitted */
    size_t heap_idx;   /* KA_NO_HEAP when gone */
    bool in_flight;
    bool gone;    /* out of the set, its keep-alive still in flight: the answer frees it */
    bool overdue; /* reported KEEL_ETIMEOUT; no deadline until it is renewed again */
};

struct keel_keepalive {
    struct keel_aclient *ac;
    uv_loop_t *loop;
    struct keel_keepalive_opts o;
    uv_timer_t timer;
    struct ka_lease **buckets; /* id -> record (live and gone) */
    size_t nbuckets;           /* a power of two */
    size_t nrec;
    struct ka_lease **heap; /* live records, by key() */
    size_t heap_n, heap_cap;
    struct keel_keepalive_stats stats;
    int busy; /* callbacks of the set running */
    bool closing;
    bool timer_closed;
    bool dormant; /* the client closed under the set: nothing more is sent */
};

/* ---- the id table ---- */

static size_t bucket_of(const struct keel_keepalive *ka, int64_t id)
{
    uint64_t h = (uint64_t)id * UINT64_C(0x9e3779b97f4a7c15);
    return (size_t)(h >> 32 ^ h) & (ka->nbuckets - 1);
}

static struct ka_lease *table_find(const struct keel_keepalive *ka, int64_t id)
{
    for (struct ka_lease *l = ka->buckets[bucket_of(ka, id)]; l; l = l->chain)
        if (l->id == id)
            return l;
    return NULL;
}

/* Double the buckets when the table is full. 0 or KEEL_ENOMEM (the table is left as it was). */
static int table_grow(struct keel_keepalive *ka)
{
    if (ka->nrec < ka->nbuckets)
        return 0;
    size_t n = ka->nbuckets * 2;
    struct ka_lease **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return KEEL_ENOMEM;
    struct ka_lease **old = ka->buckets;
    size_t oldn = ka->nbuckets;
    ka->buckets = b;
    ka->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        struct ka_lease *l = old[i];
        while (l) {
            struct ka_lease *next = l->chain;
            size_t j = bucket_of(ka, l->id);
            l->chain = b[j];
            b[j] = l;
            l = next;
        }
    }
    free(old);
    return 0;
}

static void table_insert(struct keel_keepalive *ka, struct ka_lease *l)
{
    size_t i = bucket_of(ka, l->id);
    l->chain = ka->buckets[i];
    ka->buckets[i] = l;
    ka->nrec++;
}

static void table_remove(struct keel_keepalive *ka, struct ka_lease *l)
{
    for (struct ka_lease **p = &ka->buckets[bucket_of(ka, l->id)]; *p; p = &(*p)->chain) {
        if (*p == l) {
            *p = l->chain;
            ka->nrec--;
            return;
        }
    }
}

/* ---- the heap, by the next time something must happen to a lease ---- */

static uint64_t key(const struct ka_lease *l)
{
    if (l->in_flight || l->deadline < l->due)
        return l->deadline;
    return l->due;
}

static void heap_set(struct keel_keepalive *ka, size_t i, struct ka_lease *l)
{
    ka->heap[i] = l;
    l->heap_idx = i;
}

static void heap_up(struct keel_keepalive *ka, size_t i)
{
    struct ka_lease *l = ka->heap[i];
    uint64_t k = key(l);
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (key(ka->heap[parent]) <= k)
            break;
        heap_set(ka, i, ka->heap[parent]);
        i = parent;
    }
    heap_set(ka, i, l);
}

static void heap_down(struct keel_keepalive *ka, size_t i)
{
    struct ka_lease *l = ka->heap[i];
    uint64_t k = key(l);
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= ka->heap_n)
            break;
        if (child + 1 < ka->heap_n && key(ka->heap[child + 1]) < key(ka->heap[child]))
            child++;
        if (key(ka->heap[child]) >= k)
            break;
        heap_set(ka, i, ka->heap[child]);
        i = child;
    }
    heap_set(ka, i, l);
}

static int heap_reserve(struct keel_keepalive *ka)
{
    if (ka->heap_n < ka->heap_cap)
        return 0;
    size_t cap = ka->heap_cap ? ka->heap_cap * 2 : 16;
    struct ka_lease **h = realloc(ka->heap, cap * sizeof(*h));
    if (h == NULL)
        return KEEL_ENOMEM;
    ka->heap = h;
    ka->heap_cap = cap;
    return 0;
}

/* heap_reserve first. */
static void heap_push(struct keel_keepalive *ka, struct ka_lease *l)
{
    heap_set(ka, ka->heap_n++, l);
    heap_up(ka, ka->heap_n - 1);
}

static void heap_remove(struct keel_keepalive *ka, struct ka_lease *l)
{
    size_t i = l->heap_idx;
    if (i == KA_NO_HEAP)
        return;
    struct ka_lease *last = ka->heap[--ka->heap_n];
    if (i < ka->heap_n) {
        heap_set(ka, i, last);
        heap_up(ka, i);
        heap_down(ka, last->heap_idx);
    }
    l->heap_idx = KA_NO_HEAP;
}

/* l's key changed. */
static void heap_fix(struct keel_keepalive *ka, struct ka_lease *l)
{
    heap_up(ka, l->heap_idx);
    heap_down(ka, l->heap_idx);
}

/* ---- the set ---- */

static void on_timer(uv_timer_t *t);

/* Arm the timer for the earliest key, or stop it. */
static void arm(struct keel_keepalive *ka)
{
    if (ka->closing)
        return;
    if (ka->dormant || ka->heap_n == 0) {
        uv_timer_stop(&ka->timer);
        return;
    }
    uint64_t when = key(ka->heap[0]), now = uv_now(ka->loop);
    uv_timer_start(&ka->timer, on_timer, when > now ? when - now : 0, 0);
}

static void maybe_free(struct keel_keepalive *ka)
{
    if (!ka->closing || ka->busy > 0 || ka->stats.in_flight > 0 || !ka->timer_closed)
        return;
    free(ka->buckets);
    free(ka->heap);
    free(ka);
}

/* A callback of the set is done: free it if it was closed meanwhile, else re-arm. */
static void leave(struct keel_keepalive *ka)
{
    ka->busy--;
    if (ka->closing)
        maybe_free(ka);
    else
        arm(ka);
}

/* Take l out of the set: freed now, or by its answer when a keep-alive is in flight. */
static void drop(struct keel_keepalive *ka, struct ka_lease *l)
{
    heap_remove(ka, l);
    ka->stats.leases--;
    if (l->in_flight) {
        l->gone = true;
    } else {
        table_remove(ka, l);
        free(l);
    }
}

/*
 * Nothing renewed l by its deadline: tell the caller it may have expired, once, and go on
 * renewing it. A new leader gives a lease kept alive lately its TTL plus an election timeout
 * from its promotion, so after a failover slower than the TTL the lease usually still lives;
 * giving up on it here would let it expire while its owner is alive. Inside a callback only.
 */
static void report_overdue(struct keel_keepalive *ka, struct ka_lease *l)
{
    l->overdue = true;
    l->deadline = UINT64_MAX;
    heap_fix(ka, l);
    ka->stats.overdue++;
    if (ka->o.lost)
        ka->o.lost(ka, l->id, KEEL_ETIMEOUT, ka->o.data);
}

/* l is lost: out of the set, then the callback (l may be gone by then). Inside a callback only. */
static void lose(struct keel_keepalive *ka, struct ka_lease *l, int reason)
{
    int64_t id = l->id;
    drop(ka, l);
    ka->stats.lost++;
    if (ka->o.lost)
        ka->o.lost(ka, id, reason, ka->o.data);
}

static void on_answer(int status, const Keel__Response *resp, void *data)
{
    struct ka_lease *l = data;
    struct keel_keepalive *ka = l->ka;
    l->in_flight = false;
    ka->stats.in_flight--;
    if (l->gone) {
        table_remove(ka, l);
        free(l);
        maybe_free(ka);
        return;
    }
    ka->busy++;
    uint64_t now = uv_now(ka->loop);
    if (status == 0 && resp->body_case == KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE &&
        resp->lease_keep_alive != NULL) {
        int64_t ttl = resp->lease_keep_alive->ttl;
        if (ttl <= 0) {
            lose(ka, l, KEEL_ELEASENOTFOUND);
        } else {
            uint64_t ttl_ms = (uint64_t)ttl * 1000;
            /* Counted from the send: the leader renewed it no earlier. */
            l->deadline = l->sent_at + ttl_ms;
            l->overdue = false;
            l->due = now + ttl_ms / 3;
            heap_fix(ka, l);
            ka->stats.answered++;
            if (ka->o.renewed)
                ka->o.renewed(ka, l->id, ttl, resp, ka->o.data);
        }
    } else if (status == KEEL_ELEASENOTFOUND) {
        lose(ka, l, KEEL_ELEASENOTFOUND);
    } else if (status == KEEL_ECANCELED || status == KEEL_ECLOSED) {
        ka->dormant = true; /* the client is closing: nothing can be sent any more */
    } else {
        /* Timed out, no member reachable, ...: the core retried what it could; again soon. */
        ka->stats.failures++;
        l->due = now + ka->o.retry_ms;
        heap_fix(ka, l);
    }
    leave(ka);
}

static void send_one(struct keel_keepalive *ka, struct ka_lease *l, uint64_t now)
{
    Keel__LeaseKeepAliveRequest r = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
    r.id = l->id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
    req.lease_keep_alive = &r;
    /* No use waiting past the lease's deadline: then it is lost anyway. */
    struct keel_call_opts co = {0};
    uint64_t left = l->deadline - now;
    co.timeout_ms = ka->ac->request_timeout_ms;
    if (left < co.timeout_ms)
        co.timeout_ms = left < KA_MIN_TIMEOUT_MS ? KA_MIN_TIMEOUT_MS : (uint32_t)left;
    int rv = keel_aclient_request_ex(ka->ac, &req, &co, on_answer, l);
    if (rv == 0) {
        l->in_flight = true;
        l->sent_at = now;
        ka->stats.sent++;
        ka->stats.in_flight++;
    } else if (rv == KEEL_ECLOSED) {
        ka->dormant = true;
        return;
    } else {
        ka->stats.failures++;
        l->due = now + ka->o.retry_ms;
    }
    heap_fix(ka, l);
}

static void on_timer(uv_timer_t *t)
{
    struct keel_keepalive *ka = t->data;
    ka->busy++;
    uint64_t now = uv_now(ka->loop);
    struct ka_lease *l;
    while (!ka->closing && !ka->dormant && ka->heap_n > 0 && key(l = ka->heap[0]) <= now) {
        if (l->deadline <= now)
            report_overdue(ka, l);
        else
            send_one(ka, l, now);
    }
    leave(ka);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct keel_keepalive *ka = h->data;
    ka->timer_closed = true;
    maybe_free(ka);
}

/* ---- API ---- */

int keel_aclient_keepalive(struct keel_aclient *ac, const struct keel_keepalive_opts *opts,
                           struct keel_keepalive **out)
{
    if (ac == NULL || out == NULL)
        return KEEL_EINVAL;
    *out = NULL;
    if (ac->closing)
        return KEEL_ECLOSED;
    struct keel_keepalive *ka = calloc(1, sizeof(*ka));
    if (ka == NULL)
        return KEEL_ENOMEM;
    ka->nbuckets = 16;
    ka->buckets = calloc(ka->nbuckets, sizeof(*ka->buckets));
    if (ka->buckets == NULL) {
        free(ka);
        return KEEL_ENOMEM;
    }
    ka->ac = ac;
    ka->loop = ac->loop;
    if (opts)
        ka->o = *opts;
    if (ka->o.retry_ms == 0)
        ka->o.retry_ms = KA_RETRY_MS;
    if (ka->o.first_timeout_ms == 0)
        ka->o.first_timeout_ms = ac->request_timeout_ms;
    uv_timer_init(ka->loop, &ka->timer);
    ka->timer.data = ka;
    *out = ka;
    return 0;
}

int keel_keepalive_add(struct keel_keepalive *ka, int64_t id)
{
    if (ka == NULL || id <= 0 || ka->closing)
        return KEEL_EINVAL;
    if (heap_reserve(ka) != 0)
        return KEEL_ENOMEM;
    uint64_t now = uv_now(ka->loop);
    struct ka_lease *l = table_find(ka, id);
    if (l != NULL && !l->gone)
        return 0;
    if (l == NULL) {
        if (table_grow(ka) != 0)
            return KEEL_ENOMEM;
        l = calloc(1, sizeof(*l));
        if (l == NULL)
            return KEEL_ENOMEM;
        l->ka = ka;
        l->id = id;
        table_insert(ka, l);
    }
    /* New, or revived while its old keep-alive is in flight (its answer counts). */
    l->gone = false;
    l->due = now;
    l->deadline = now + ka->o.first_timeout_ms;
    heap_push(ka, l);
    ka->stats.leases++;
    if (ka->busy == 0)
        arm(ka);
    return 0;
}

int keel_keepalive_remove(struct keel_keepalive *ka, int64_t id)
{
    if (ka == NULL || ka->closing)
        return KEEL_EINVAL;
    struct ka_lease *l = table_find(ka, id);
    if (l == NULL || l->gone)
        return KEEL_ELEASENOTFOUND;
    drop(ka, l);
    if (ka->busy == 0)
        arm(ka);
    return 0;
}

void keel_keepalive_stats(const struct keel_keepalive *ka, struct keel_keepalive_stats *out)
{
    *out = ka->stats;
}

void keel_keepalive_close(struct keel_keepalive *ka)
{
    if (ka == NULL || ka->closing)
        return;
    ka->closing = true;
    for (size_t i = 0; i < ka->nbuckets; i++) {
        struct ka_lease **p = &ka->buckets[i];
        while (*p) {
            struct ka_lease *l = *p;
            l->heap_idx = KA_NO_HEAP;
            if (l->in_flight) {
                l->gone = true;
                p = &l->chain;
            } else {
                *p = l->chain;
                ka->nrec--;
                free(l);
            }
        }
    }
    ka->heap_n = 0;
    ka->stats.leases = 0;
    uv_timer_stop(&ka->timer);
    uv_close((uv_handle_t *)&ka->timer, on_timer_closed);
}
