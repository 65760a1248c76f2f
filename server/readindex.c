/*
 * Linearizable reads (see readindex.h). Three FIFO queues of waits; a read moves forward only,
 * and at most one barrier of ours is in raft at a time.
 */
#include "readindex.h"

#include <stdlib.h>

#include "err.h"

struct wait {
    struct wait *next;
    keel_readindex_cb cb;
    void *data;
    uint64_t target; /* release once the store has committed this index */
};

struct queue {
    struct wait *head, *tail;
};

struct keel_readindex {
    struct keel_readindex_options o;
    struct queue waiting;    /* arrived while no barrier covers them */
    struct queue in_barrier; /* covered by the barrier in flight */
    struct queue ready;      /* barrier done, waiting for the writer */
    int barrier_busy;
    bool is_leader;
    int stopped;
};

static void push(struct queue *q, struct wait *w)
{
    w->next = NULL;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
}

static void append(struct queue *dst, struct queue *src)
{
    if (src->head == NULL)
        return;
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    src->head = src->tail = NULL;
}

/* Empty q first: a callback may queue a new read. */
static void fail(struct queue *q, int err)
{
    struct wait *w = q->head;
    q->head = q->tail = NULL;
    while (w != NULL) {
        struct wait *next = w->next;
        w->cb(w->data, err);
        free(w);
        w = next;
    }
}

void keel_readindex_applied(struct keel_readindex *ri)
{
    uint64_t committed = ri->o.progress->committed;
    while (ri->ready.head != NULL && ri->ready.head->target <= committed) {
        struct wait *w = ri->ready.head;
        ri->ready.head = w->next;
        if (ri->ready.head == NULL)
            ri->ready.tail = NULL;
        w->cb(w->data, 0);
        free(w);
    }
}

static int start_barrier(struct keel_readindex *ri);

static void barrier_done(void *data, int err)
{
    struct keel_readindex *ri = data;
    ri->barrier_busy = 0;
    if (ri->stopped) {
        fail(&ri->in_barrier, KEEL_EUNAVAILABLE);
        return;
    }
    if (err != 0) {
        fail(&ri->in_barrier, KEEL_ENOTLEADER);
    } else {
        /* Everything before the barrier has reached the fsm: once the writer has committed
         * up to here, these reads see every write acknowledged before they arrived. */
        uint64_t target = ri->o.progress->queued;
        for (struct wait *w = ri->in_barrier.head; w != NULL; w = w->next)
            w->target = target;
        append(&ri->ready, &ri->in_barrier);
        keel_readindex_applied(ri);
    }
    if (ri->waiting.head != NULL) {
        int rv = start_barrier(ri);
        if (rv != 0)
            fail(&ri->waiting, rv);
    }
}

/* Cover the waiting reads with a barrier. 0, or why not (the reads stay waiting). */
static int start_barrier(struct keel_readindex *ri)
{
    if (ri->barrier_busy || ri->waiting.head == NULL)
        return 0;
    if (!ri->o.raft->is_leader(ri->o.raft->ctx))
        return KEEL_ENOTLEADER;
    int err = ri->o.raft->barrier(ri->o.raft->ctx, barrier_done, ri);
    if (err != 0)
        return err == KEEL_ENOTLEADER ? KEEL_ENOTLEADER : KEEL_EUNAVAILABLE;
    ri->barrier_busy = 1;
    append(&ri->in_barrier, &ri->waiting);
    return 0;
}

int keel_readindex_wait(struct keel_readindex *ri, keel_readindex_cb cb, void *data)
{
    if (ri->stopped)
        return KEEL_EUNAVAILABLE;
    if (!ri->o.raft->is_leader(ri->o.raft->ctx))
        return KEEL_ENOTLEADER;
    struct wait *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return KEEL_ENOMEM;
    w->cb = cb;
    w->data = data;
    push(&ri->waiting, w);
    int err = start_barrier(ri);
    if (err != 0) {
        /* No barrier is in flight (else start_barrier would not have tried), so this read is
         * the only one waiting: hand it back rather than call back from inside the call. */
        ri->waiting.head = ri->waiting.tail = NULL;
        free(w);
    }
    return err;
}

void keel_readindex_leader_changed(struct keel_readindex *ri, bool is_leader)
{
    bool was = ri->is_leader;
    ri->is_leader = is_leader;
    if (!is_leader && was) {
        fail(&ri->waiting, KEEL_ENOTLEADER);
        fail(&ri->ready, KEEL_ENOTLEADER);
    }
}

void keel_readindex_stop(struct keel_readindex *ri)
{
    ri->stopped = 1;
    fail(&ri->waiting, KEEL_EUNAVAILABLE);
    fail(&ri->ready, KEEL_EUNAVAILABLE);
}

int keel_readindex_new(const struct keel_readindex_options *o, struct keel_readindex **out)
{
    struct keel_readindex *ri = calloc(1, sizeof(*ri));
    if (ri == NULL)
        return KEEL_ENOMEM;
    ri->o = *o;
    *out = ri;
    return 0;
}

void keel_readindex_free(struct keel_readindex *ri)
{
    if (ri == NULL)
        return;
    /* Every wait has been called back by now (stop, then raft's close): only memory is left if
     * the loop ended early. */
    struct queue *qs[] = {&ri->waiting, &ri->in_barrier, &ri->ready};
    for (size_t i = 0; i < 3; i++) {
        for (struct wait *w = qs[i]->head; w != NULL;) {
            struct wait *next = w->next;
            free(w);
            w = next;
        }
    }
    free(ri);
}
