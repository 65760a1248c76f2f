/*
 * Online defragmentation of the store, driven by the storage writer (fsm.c), which keeps applying
 * entries all along. A thread of its own makes a compacted copy of the store as committed when
 * it starts (keel_store_snapshot), opens the copy as a store (keel_store_defrag_open) and applies
 * to it every entry the writer hands over (keel_defrag_feed: the entries the live store applied
 * after the copy's point, the same commands at the same indexes, so the same state). Once the
 * copy has caught up, the writer commits the live store, lets the copy take the last few
 * entries, and swaps it in (keel_store_defrag_swap): writes wait only for that last step and
 * reads only for the swap itself, where etcd's defragmentation stops the member for its whole
 * copy.
 *
 * Memory: the entries handed over and not yet applied to the copy, at most
 * KEEL_DEFRAG_BACKLOG_MAX bytes; past it the defragmentation fails (writes outpaced it) and the
 * store stays as it was.
 */
#ifndef KEEL_DEFRAG_H
#define KEEL_DEFRAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define KEEL_DEFRAG_BACKLOG_MAX (256u << 20)

struct keel_defrag;

enum keel_defrag_state {
    KEEL_DEFRAG_COPYING, /* copying, or applying a backlog still too large to stop for */
    KEEL_DEFRAG_READY,   /* caught up: the writer may finish now */
    KEEL_DEFRAG_FAILED,  /* keel_defrag_finish reports why */
};

/*
 * Start defragmenting s, whose applied state the writer has just committed (the copy starts from
 * it). wake(data) is called from the copy's thread whenever its state changes, so that the writer
 * looks again. 0, or KEEL_E* with nothing started.
 */
int keel_defrag_start(struct keel_store *s, void (*wake)(void *data), void *data,
                      struct keel_defrag **out);

/* Hand the copy an entry the live store applied (payload copied). Never fails: past the backlog
 * bound, or out of memory, the defragmentation is marked failed. */
void keel_defrag_feed(struct keel_defrag *d, uint64_t index, const void *payload, size_t len);

enum keel_defrag_state keel_defrag_state(struct keel_defrag *d);

/*
 * End it: unless give_up or FAILED, with the live store committed at applied index `applied` and
 * no write open, the copy takes what it was handed last and is swapped in; otherwise it is
 * discarded. Frees d. 0 (swapped), or KEEL_E* with why in msg (KEEL_ECANCELED: given up); the
 * store is then as it was.
 */
int keel_defrag_finish(struct keel_defrag *d, uint64_t applied, bool give_up, char *msg,
                       size_t msglen);

#endif
