/*
 * The raft node: canonical/raft 0.15 with raft_uv's log under <data-dir>/raft, keel's peer
 * transport, and the fsm plugged in as raft's state machine. This is the thin interface the
 * rest of keeld uses, so a fixed raft version can be dropped in later (research/raft.md,
 * section 6, item 21). raft's RAFT_* codes are translated into KEEL_E* codes here, once: no
 * other file above the transport sees them.
 *
 * What node.c handles so nobody else has to know raft 0.15's traps:
 *  - leadership is observed by polling raft_state in a uv_check_t (0.15 has no state callback),
 *    so on_change fires on the loop in the same iteration as the transition;
 *  - a new leader appends a barrier at once: 0.15 appends no entry of its own on election,
 *    and committing one of the new term narrows its Figure-8 bug and brings the fsm up to date;
 *  - every entry is padded to a multiple of 8 bytes and checked again before raft_apply;
 *  - inside fsm->apply the entry's index is raft_last_applied + 1 (0.15 bumps it after);
 *  - the log is bounded in bytes (--snapshot-bytes, --snapshot-trailing-bytes), not only in
 *    entries as 0.15 does: raft keeps its whole log in memory and reloads it at every start;
 *  - raft is never closed while it holds a request of ours (see keel_node_stop).
 */
#ifndef KEEL_NODE_H
#define KEEL_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "consensus.h"
#include "histo.h"
#include "fsm.h"
#include "handshake.h"

struct keel_node;

struct keel_node_options {
    uv_loop_t *loop;
    const struct keel_config *cfg;
    struct keel_fsm *fsm; /* receives committed entries, snapshots and restores */
    /* Leadership or the leader changed: is_leader, and the leader's id (0 when unknown). */
    void (*on_change)(void *data, bool is_leader, uint64_t leader_id);
    /* A peer's handshake was accepted (transport.h says when, and what to do with its cluster
     * id while this member knows none). */
    void (*on_peer)(void *data, const struct keel_handshake_peer *p);
    /* The peer address a member update gave member id, NULL when the raft configuration's
     * stands. NULL: none ever does. */
    const char *(*moved_peer)(void *data, uint64_t id);
    /* A member's checkpoint fetch was accepted on the peer port (transport.h: the fetch hook;
     * fd is the callee's to close). NULL: fetches are refused. */
    void (*on_fetch)(void *data, const struct keel_handshake_peer *p, int fd);
    void *data;
};

/*
 * Set up raft on o->loop (not started); bootstraps the configured members when the log is
 * pristine. 0, or a KEEL_E* code after logging why (*out is then untouched). The node keeps
 * pointers to o's loop, cfg and fsm: they must outlive it.
 */
int keel_node_new(const struct keel_node_options *o, struct keel_node **out);

/* Load the log and snapshot (the fsm's restore runs inside) and start ticking. 0, or a KEEL_E*
 * code after logging why. */
int keel_node_start(struct keel_node *n);

/* The consensus seam (consensus.h) over this node, for propose and readindex. */
void keel_node_consensus(struct keel_node *n, struct keel_consensus *out);

bool keel_node_is_leader(struct keel_node *n);
/* The leader's id, 0 when unknown (or while this leader hands leadership over). */
uint64_t keel_node_leader(struct keel_node *n);
/* Member id's peer address as raft dials it (the raft configuration's, or a member update's;
 * --initial-cluster's before there is a configuration), NULL for no member. Valid until the
 * next configuration change: copy it. */
const char *keel_node_peer_address(struct keel_node *n, uint64_t id);
uint64_t keel_node_term(struct keel_node *n);
uint64_t keel_node_last_index(struct keel_node *n);
/* The commit index as this member knows it (0 before start). */
uint64_t keel_node_commit_index(struct keel_node *n);

/* The i-th peer this member has timed round trips to as a leader (node.c says what is timed):
 * its id, and its histogram (NULL when it is no longer a member). false past the last. On the
 * loop; *h is valid until the node is freed. */
bool keel_node_peer_rtt(struct keel_node *n, size_t i, uint64_t *id, const struct keel_histo **h);

/* How long the raft log's appends took to become durable (write and sync; node.c says why not
 * the sync alone). Valid until the node is freed. */
const struct keel_histo *keel_node_append_seconds(const struct keel_node *n);

/* Raft snapshots this member took and stored since start (a restored or received one is not
 * counted); *seconds: how long each took, from raft asking for it until it was stored (the
 * store's sync and raft's write). On the loop; *seconds is valid until the node is freed. */
uint64_t keel_node_snapshots(const struct keel_node *n, const struct keel_histo **seconds);

/* consensus.h's members; none once raft has closed (keel_node_stop's callback has run: the
 * member still answers its clients until it has stopped). */
size_t keel_node_members(struct keel_node *n, struct keel_consensus_member *out, size_t cap);

enum keel_node_change {
    KEEL_NODE_ADD,     /* id at peer joins as a learner (raft_add, then raft_assign standby) */
    KEEL_NODE_PROMOTE, /* learner id becomes a voter (raft runs its catch-up rounds first) */
    KEEL_NODE_REMOVE,  /* id leaves */
};

/*
 * On the leader, change the membership; cb(data, err) fires once the change is committed (0) or
 * failed: KEEL_EUNKNOWN when leadership was lost on the way (it may still commit), KEEL_ETIMEOUT
 * when a promotion's catch-up ran out. Refused at once: KEEL_ETOOMANYREQUESTS while a change is
 * under way (raft takes one at a time), KEEL_EMEMBERNOTFOUND / KEEL_EMEMBEREXISTS for an id or
 * address raft does not know / already has, KEEL_ENOTLEADER, KEEL_EUNAVAILABLE. peer is read
 * for KEEL_NODE_ADD only (raft copies it).
 */
int keel_node_change(struct keel_node *n, enum keel_node_change kind, uint64_t id, const char *peer,
                     void (*cb)(void *data, int err), void *data);
/* A change of keel_node_change's is under way. */
bool keel_node_changing(struct keel_node *n);

/* Hand leadership to target (0: an up-to-date voter), as consensus.h's transfer says. */
int keel_node_transfer(struct keel_node *n, uint64_t target, void (*cb)(void *data, int err),
                       void *data);

/* Read the peer TLS certificates again (SIGHUP; keel_transport_reload_tls, which logs how it
 * went). 0, or -1 when the files could not be used (the old ones stay). */
int keel_node_reload_tls(struct keel_node *n);

/* Stop raft; cb(data) fires once raft, its log and its transport are closed. From this call on,
 * propose and barrier refuse with KEEL_EUNAVAILABLE. Proposals and barriers raft still holds are
 * called back before raft closes: applied (0), or with KEEL_EUNKNOWN / KEEL_ENOTLEADER when
 * this member stops leading. A leader still holding some after an election timeout cuts its
 * peer links so that it steps down; node.c says why the wait always ends. */
void keel_node_stop(struct keel_node *n, void (*cb)(void *data), void *data);

/* Free the node once the loop has stopped after its stop callback (raft_uv may still call back
 * until then). NULL is fine. */
void keel_node_free(struct keel_node *n);

#endif
