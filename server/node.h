/*
 * The raft node: canonical/raft 0.15 with raft_uv's log under <data-dir>/raft and keel's peer
 * transport. This is the thin interface the rest of keeld uses, so a fixed raft version can be
 * dropped in later (research/raft.md, section 6, item 21).
 *
 * Leadership is observed by polling raft_state in a uv_check_t (0.15 has no state callback):
 * on_change fires on the loop, in the same iteration as the transition.
 */
#ifndef KEEL_NODE_H
#define KEEL_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "config.h"

struct keel_node;

/* Leadership or leader changed: is_leader, and the leader's id (0 when unknown). */
typedef void (*keel_node_change_cb)(void *data, bool is_leader, uint64_t leader_id);

struct keel_node {
    uv_loop_t *loop;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    uv_check_t poll;
    int last_state;
    uint64_t last_leader;
    keel_node_change_cb on_change;
    void *data;
    int started;
    void (*close_cb)(struct keel_node *n);
    struct raft_transfer transfer;
    void (*transfer_cb)(struct keel_node *n);
};

/*
 * Set up raft on loop with the given fsm (not started). Bootstraps the configured members
 * when the log is pristine. 0, or a raft error code with a message in err.
 */
int keel_node_init(struct keel_node *n, uv_loop_t *loop, const struct keel_config *c,
                   struct raft_fsm *fsm, keel_node_change_cb on_change, void *data,
                   void (*on_peer)(void *data, uint64_t id, const char *client, const char *zone),
                   char *err, size_t errlen);

/* Load the log and snapshot (fsm->restore runs inside) and start ticking. 0 or raft code. */
int keel_node_start(struct keel_node *n, char *err, size_t errlen);

/*
 * Propose one entry (built by keel_entry_encode; raft takes buf on success). 0, RAFT_NOTLEADER,
 * or another raft code. An entry whose length is not a multiple of 8 is refused with
 * RAFT_INVALID and never reaches raft.
 */
int keel_node_propose(struct keel_node *n, struct raft_apply *req, struct raft_buffer buf,
                      raft_apply_cb cb);

/* Append a barrier; cb fires once everything before it has been handed to the fsm. */
int keel_node_barrier(struct keel_node *n, struct raft_barrier *req, raft_barrier_cb cb);

bool keel_node_is_leader(struct keel_node *n);
uint64_t keel_node_leader(struct keel_node *n);
uint64_t keel_node_term(struct keel_node *n);
uint64_t keel_node_last_index(struct keel_node *n);
/* Inside fsm->apply: the index of the entry being applied (0.15 bumps last_applied after). */
uint64_t keel_node_applying_index(struct keel_node *n);

/* Hand leadership to an up-to-date voter; cb fires when done or after an election timeout. */
int keel_node_transfer(struct keel_node *n, void (*cb)(struct keel_node *n));

/* Stop raft; cb fires once raft, its log and its transport are closed (pending applies get
 * RAFT_LEADERSHIPLOST first). */
void keel_node_close(struct keel_node *n, void (*cb)(struct keel_node *n));

/* Free what survives the loop (call after uv_run returned). */
void keel_node_free(struct keel_node *n);

#endif
