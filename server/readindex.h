/*
 * Linearizable reads without ReadIndex (raft 0.15 has none): the leader queues reads behind one
 * raft barrier; when the barrier completes, everything committed before the reads arrived has
 * been handed to the fsm, and once the storage writer has committed that far the whole queue is
 * released. Reads arriving while a barrier is in flight wait for the next one, so one barrier
 * covers any number of reads.
 *
 *   keel_readindex_wait -> waiting -(barrier appended)-> in_barrier -(barrier done: target =
 *   the fsm's queued index)-> ready -(fsm committed >= target: keel_readindex_applied)-> cb(0)
 *
 * A read that cannot be served gets cb(err): KEEL_ENOTLEADER when leadership is lost (the
 * client retries on the new leader), KEEL_EUNAVAILABLE when raft refuses or the member stops.
 * What a read is, and how it is answered, is the caller's business: this module only says when.
 */
#ifndef KEEL_READINDEX_H
#define KEEL_READINDEX_H

#include <stdbool.h>

#include "consensus.h"
#include "fsm.h"

struct keel_readindex;

/* A read may be served now (err 0), or never (err: why). Called exactly once per wait. */
typedef void (*keel_readindex_cb)(void *data, int err);

struct keel_readindex_options {
    const struct keel_consensus *raft;
    const struct keel_fsm_progress *progress; /* the storage writer's position (fsm.h) */
};

/* 0 or KEEL_ENOMEM. What o points to must outlive it. */
int keel_readindex_new(const struct keel_readindex_options *o, struct keel_readindex **out);

/*
 * Wait until a read arriving now may be served linearizably. 0: cb(data, ...) fires exactly
 * once, later (never from inside this call). KEEL_ENOTLEADER or KEEL_ENOMEM: not queued, cb
 * never fires.
 */
int keel_readindex_wait(struct keel_readindex *ri, keel_readindex_cb cb, void *data);

/* The fsm delivered a batch: release the reads its commit covers. */
void keel_readindex_applied(struct keel_readindex *ri);

/* Leadership changed: a leader that lost it fails the reads not yet covered by a barrier. */
void keel_readindex_leader_changed(struct keel_readindex *ri, bool is_leader);

/* The member is stopping: fail every read (those in a barrier when raft calls it back). */
void keel_readindex_stop(struct keel_readindex *ri);

/* Free (after the loop ended: raft has called every barrier back). NULL is fine. */
void keel_readindex_free(struct keel_readindex *ri);

#endif
