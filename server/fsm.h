/*
 * The raft state machine and the storage writer thread.
 *
 * raft calls fsm->apply on the loop for each committed entry, in index order. apply only copies
 * the entry into the writer's queue: the writer thread owns the store's only write transaction,
 * applies everything queued in one LMDB transaction, commits (one data sync per batch), and
 * hands the results back to the loop through a uv_async_t. Replies and watch events go out
 * from there, after the commit, so a reply never promises state that a crash could lose
 * without the raft log being able to replay it.
 *
 * Raft snapshots are tokens {magic, applied index, cluster id}: the store itself never goes
 * through raft. A token ahead of the store (a follower that fell behind the leader's log)
 * queues a checkpoint fetch from the leader on the writer, ahead of the entries raft delivers
 * next, so the order of state changes stays the log's order.
 */
#ifndef KEEL_FSM_H
#define KEEL_FSM_H

#include <stdint.h>

#include <raft.h>
#include <uv.h>

#include "arena.h"
#include "store.h"

struct keel_fsm;
struct keel_node;

/* One command's outcome. */
struct keel_fsm_result {
    uint64_t index;      /* raft index of its entry */
    uint64_t origin;     /* member that proposed it */
    uint64_t request_id; /* its id on that member */
    int op;              /* its Keel__Command op_case */
    struct keel_apply_result r;
};

/* What one LMDB commit applied, delivered on the loop. Memory lives in arena. */
struct keel_fsm_batch {
    struct keel_fsm_batch *next;
    struct keel_arena arena;
    struct keel_fsm_result *results;
    size_t n;
    size_t cap;
    uint64_t applied_index; /* the store's applied index after this commit */
};

/* Called on the loop for each committed batch, in order; the batch is freed after it returns. */
typedef void (*keel_fsm_done_cb)(void *data, struct keel_fsm_batch *b);

struct keel_fsm_options {
    uv_loop_t *loop;
    struct keel_store *store;
    uint64_t cluster_id;
    const char *bind_host; /* source address of checkpoint fetches */
    keel_fsm_done_cb done;
    void *data;
};

/* Start the writer thread. 0 or KEEL_E*. */
int keel_fsm_init(struct keel_fsm **out, const struct keel_fsm_options *o);

/* The raft_fsm to give raft; bind the node before raft starts (apply needs its index). */
struct raft_fsm *keel_fsm_raft(struct keel_fsm *f);
void keel_fsm_bind(struct keel_fsm *f, struct keel_node *node);

/* The last index handed to the writer (loop side). */
uint64_t keel_fsm_queued_index(struct keel_fsm *f);

/* The store's applied index as of the last batch delivered to the loop. */
uint64_t keel_fsm_committed_index(struct keel_fsm *f);

/* Where a checkpoint can be fetched from: the leader's client address ("" when unknown). */
void keel_fsm_set_leader(struct keel_fsm *f, const char *client_addr);

/* Finish the queued work, stop the thread, close the async handle; cb after that on the
 * loop. No apply may come after this. */
void keel_fsm_stop(struct keel_fsm *f, void (*cb)(struct keel_fsm *f, void *data), void *data);

/* Free the fsm (after the loop ended). */
void keel_fsm_free(struct keel_fsm *f);

#endif
