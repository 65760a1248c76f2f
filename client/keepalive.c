/*
 * Keep-alives: leases renewed in the background over the client's connection to the leader, as
 * etcd's clientv3 does: each lease every TTL/3 (the TTL learned from its answers), a failed one
 * again sooner, never two of the same lease in flight. One timer for the whole set, the leases
 * ordered by when they are due. Requests go through the core like any other, so failover,
 * NOT_LEADER redirects and retries come from request.c (LeaseKeepAlive is idempotent).
 *
 * A lease leaves the set when the caller removes it or when the leader answers TTL 0 (expired
 * or revoked). One that nothing renewed for its whole TTL is reported overdue (it may have
 * expired) but stays: a new leader gives every lease kept alive lately its full TTL plus an
 * election timeout, so after a long failover the lease is often still there, and giving up on
 * it would let it expire while its owner is alive. Memory: one record per lease added, at most
 * one request per lease in flight.
 */
#include <stdlib.h>

#include "internal.h"

#define KA_RETRY_MS      500  /* after a failed keep-alive, at the latest */
#define KA_MIN_TIMEOUT   1000 /* a keep-alive's own deadline, at the least */
#define KA_FIRST_BUCKETS 64

struct ka_lease {
    struct ka_lease *chain; /* the id table's bucket */
    struct keel_keepalive *ka;
    int64_t id;
    uint64_t ttl_ms;  /* from the last answer; 0 until the first */
    uint64_t due;     /* loop time of the next keep-alive */
    uint64_t last_ok; /* loop time of the last renewal (the add, before the first) */
    size_t heap_idx;  /* SIZE_MAX while in flight or removed */
    bool in_flight;
    bool overdue; /* reported KEEL_ETIMEOUT since its last renewal */
    bool removed; /* out of the set while its keep-alive is in flight: freed by the answer */
};

struct keel_keepalive {
    struct keel_aclient *ac;
    keel_lease_lost_cb lost;
    void *data;
    uv_timer_t timer;
    bool timer_closed;
    bool closing;
    struct ka_lease **buckets; /* id -> lease */
    size_t n_buckets, n;
    struct ka_lease **heap; /* by due; leases not in flight */
    size_t heap_n, heap_cap;
    size_t in_flight;
    struct keel_keepalive_stats stats;
};

/* ---- the id table ---- */

static size_t bucket_of(const struct keel_keepalive *ka, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (ka->n_buckets - 1);
}

static struct ka_lease *find(const struct keel_keepalive *ka, int64_t id)
{
    for (struct ka_lease *l = ka->buckets[bucket_of(ka, id)]; l != NULL; l = l->chain)
        if (l->id == id)
            return l;
    return NULL;
}

static int grow_table(struct keel_keepalive *ka)
{
    size_t nb = ka->n_buckets * 2;
    struct ka_lease **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return KEEL_ENOMEM;
    struct ka_lease **old = ka->buckets;
    size_t on = ka->n_buckets;
    ka->buckets = b;
    ka->n_buckets = nb;
    for (size_t i = 0; i < on; i++)
        for (struct ka_lease *l = old[i], *next; l != NULL; l = next) {
            next = l->chain;
            size_t j = bucket_of(ka, l->id);
            l->chain = b[j];
            b[j] = l;
        }
    free(old);
    return 0;
}

static void unlink_lease(struct keel_keepalive *ka, struct ka_lease *x)
{
    struct ka_lease **p = &ka->buckets[bucket_of(ka, x->id)];
    while (*p != x)
        p = &(*p)->chain;
    *p = x->chain;
    ka->n--;
}

/* ---- the due heap ---- */

static void hset(struct keel_keepalive *ka, size_t i, struct ka_lease *x)
{
    ka->heap[i] = x;
    x->heap_idx = i;
}

static void hup(struct keel_keepalive *ka, size_t i)
{
    struct ka_lease *x = ka->heap[i];
    while (i > 0 && ka->heap[(i - 1) / 2]->due > x->due) {
        hset(ka, i, ka->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    hset(ka, i, x);
}

static void hdown(struct keel_keepalive *ka, size_t i)
{
    struct ka_lease *x = ka->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= ka->heap_n)
            break;
        if (c + 1 < ka->heap_n && ka->heap[c + 1]->due < ka->heap[c]->due)
            c++;
        if (x->due <= ka->heap[c]->due)
            break;
        hset(ka, i, ka->heap[c]);
        i = c;
    }
    hset(ka, i, x);
}

static int hpush(struct keel_keepalive *ka, struct ka_lease *x)
{
    if (ka->heap_n == ka->heap_cap) {
        size_t cap = ka->heap_cap ? ka->heap_cap * 2 : 64;
        struct ka_lease **v = realloc(ka->heap, cap * sizeof(*v));
        if (v == NULL)
            return KEEL_ENOMEM;
        ka->heap = v;
        ka->heap_cap = cap;
    }
    hset(ka, ka->heap_n++, x);
    hup(ka, ka->heap_n - 1);
    return 0;
}

static void hremove(struct keel_keepalive *ka, struct ka_lease *x)
{
    size_t i = x->heap_idx;
    if (i == SIZE_MAX)
        return;
    x->heap_idx = SIZE_MAX;
    struct ka_lease *last = ka->heap[--ka->heap_n];
    if (i == ka->heap_n)
        return;
    hset(ka, i, last);
    hup(ka, i);
    hdown(ka, last->heap_idx);
}

/* ---- scheduling ---- */

static void on_timer(uv_timer_t *t);

static void arm(struct keel_keepalive *ka)
{
    if (ka->closing)
        return;
    if (ka->heap_n == 0) {
        uv_timer_stop(&ka->timer);
        return;
    }
    uint64_t now = uv_now(ka->ac->loop), due = ka->heap[0]->due;
    uv_timer_start(&ka->timer, on_timer, due > now ? due - now : 0, 0);
}

static void maybe_free(struct keel_keepalive *ka)
{
    if (!ka->closing || !ka->timer_closed || ka->in_flight > 0)
        return;
    free(ka->buckets);
    free(ka->heap);
    free(ka);
}

/* Out of the set and reported; the caller's callback may add, remove or close. */
static void lose(struct keel_keepalive *ka, struct ka_lease *x, int reason)
{
    unlink_lease(ka, x);
    ka->stats.lost++;
    int64_t id = x->id;
    free(x);
    if (ka->lost != NULL)
        ka->lost(ka, id, reason, ka->data);
}

/* Tell the caller x may have expired; it stays in the set, due again at `due`. */
static void report_overdue(struct keel_keepalive *ka, struct ka_lease *x)
{
    x->overdue = true;
    ka->stats.overdue++;
    if (ka->lost != NULL)
        ka->lost(ka, x->id, KEEL_ETIMEOUT, ka->data); /* may remove x or close ka */
}

static void on_answer(int status, const Keel__Response *resp, void *data)
{
    struct ka_lease *x = data;
    struct keel_keepalive *ka = x->ka;
    x->in_flight = false;
    ka->in_flight--;
    if (x->removed || ka->closing) {
        if (x->removed)
            free(x);
        maybe_free(ka);
        return;
    }
    uint64_t now = uv_now(ka->ac->loop);
    if (status == 0 && resp->body_case == KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE &&
        resp->lease_keep_alive->ttl <= 0) {
        lose(ka, x, KEEL_ELEASENOTFOUND);
        arm(ka);
        return;
    }
    if (status == 0 && resp->body_case == KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE) {
        ka->stats.renewed++;
        x->ttl_ms = (uint64_t)resp->lease_keep_alive->ttl * 1000;
        x->last_ok = now;
        x->overdue = false;
        x->due = now + x->ttl_ms / 3;
    } else {
        ka->stats.failed++;
        uint64_t retry = x->ttl_ms > 0 && x->ttl_ms / 6 < KA_RETRY_MS ? x->ttl_ms / 6 : KA_RETRY_MS;
        x->due = now + retry;
    }
    if (hpush(ka, x) != 0) {
        lose(ka, x, KEEL_ENOMEM);
    } else if (!x->overdue && x->ttl_ms > 0 && now - x->last_ok >= x->ttl_ms) {
        /* The callback may remove x or close ka: ka itself is released only from a later
         * callback of the loop, so arm() can still look at it. */
        report_overdue(ka, x);
    }
    arm(ka);
}

static void send_one(struct keel_keepalive *ka, struct ka_lease *x, uint64_t now)
{
    Keel__LeaseKeepAliveRequest k = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
    k.id = x->id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
    req.lease_keep_alive = &k;
    /* Answered, or given up and sent again, within a third of the TTL. */
    uint32_t timeout = KA_MIN_TIMEOUT;
    if (x->ttl_ms / 3 > timeout)
        timeout = (uint32_t)(x->ttl_ms / 3);
    ka->stats.sent++;
    if (keel_aclient_request(ka->ac, &req, x->ttl_ms ? timeout : 0, on_answer, x) == 0) {
        x->in_flight = true;
        ka->in_flight++;
        return;
    }
    ka->stats.failed++;
    x->due = now + KA_RETRY_MS;
    if (hpush(ka, x) != 0)
        lose(ka, x, KEEL_ENOMEM);
}

static void on_timer(uv_timer_t *t)
{
    struct keel_keepalive *ka = t->data;
    uint64_t now = uv_now(ka->ac->loop);
    /* Popped first, then sent: a failed submission goes back in, due later. */
    while (!ka->closing && ka->heap_n > 0 && ka->heap[0]->due <= now) {
        struct ka_lease *x = ka->heap[0];
        hremove(ka, x);
        send_one(ka, x, now);
    }
    arm(ka);
}

/* ---- the API ---- */

int keel_aclient_keepalive(struct keel_aclient *ac, keel_lease_lost_cb lost, void *data,
                           struct keel_keepalive **out)
{
    if (ac == NULL || out == NULL)
        return KEEL_EINVAL;
    if (ac->closing)
        return KEEL_ECLOSED;
    struct keel_keepalive *ka = calloc(1, sizeof(*ka));
    if (ka == NULL)
        return KEEL_ENOMEM;
    ka->buckets = calloc(KA_FIRST_BUCKETS, sizeof(*ka->buckets));
    if (ka->buckets == NULL) {
        free(ka);
        return KEEL_ENOMEM;
    }
    ka->n_buckets = KA_FIRST_BUCKETS;
    ka->ac = ac;
    ka->lost = lost;
    ka->data = data;
    uv_timer_init(ac->loop, &ka->timer);
    ka->timer.data = ka;
    *out = ka;
    return 0;
}

int keel_keepalive_add(struct keel_keepalive *ka, int64_t id)
{
    if (ka == NULL || ka->closing || id <= 0)
        return KEEL_EINVAL;
    if (find(ka, id) != NULL)
        return 0;
    if (ka->n >= ka->n_buckets && grow_table(ka) != 0)
        return KEEL_ENOMEM;
    struct ka_lease *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return KEEL_ENOMEM;
    x->ka = ka;
    x->id = id;
    x->heap_idx = SIZE_MAX;
    x->last_ok = x->due = uv_now(ka->ac->loop); /* the first keep-alive goes at once */
    if (hpush(ka, x) != 0) {
        free(x);
        return KEEL_ENOMEM;
    }
    size_t b = bucket_of(ka, id);
    x->chain = ka->buckets[b];
    ka->buckets[b] = x;
    ka->n++;
    arm(ka);
    return 0;
}

int keel_keepalive_remove(struct keel_keepalive *ka, int64_t id)
{
    struct ka_lease *x = ka != NULL && !ka->closing ? find(ka, id) : NULL;
    if (x == NULL)
        return KEEL_ELEASENOTFOUND;
    unlink_lease(ka, x);
    hremove(ka, x);
    if (x->in_flight)
        x->removed = true; /* its answer frees it */
    else
        free(x);
    arm(ka);
    return 0;
}

void keel_keepalive_stats(const struct keel_keepalive *ka, struct keel_keepalive_stats *out)
{
    *out = ka->stats;
    out->leases = ka->n;
}

static void timer_closed(uv_handle_t *h)
{
    struct keel_keepalive *ka = h->data;
    ka->timer_closed = true;
    maybe_free(ka);
}

void keel_keepalive_close(struct keel_keepalive *ka)
{
    if (ka == NULL || ka->closing)
        return;
    ka->closing = true;
    for (size_t i = 0; i < ka->n_buckets; i++)
        for (struct ka_lease *x = ka->buckets[i], *next; x != NULL; x = next) {
            next = x->chain;
            if (x->in_flight)
                x->removed = true;
            else
                free(x);
        }
    ka->n = 0;
    ka->heap_n = 0;
    uv_close((uv_handle_t *)&ka->timer, timer_closed);
}
