/*
 * Membership changes, etcd's model on canonical/raft's configuration changes: MemberAdd,
 * MemberRemove, MemberPromote and MemberUpdate served by the leader, new members promoted once they
 * caught up, and a removed member that stops.
 *
 *   MemberAdd NAME PEER [ZONE] ─ record (member_attrs) ─ raft_add ─ raft_assign standby ─ answer
 *                                  the new member starts with --initial-cluster-state existing,
 *                                  gets the log (or a checkpoint) as a standby, and unless it was
 *                                  added as a learner is made a voter once caught up (tick)
 *   MemberPromote ID ─ caught up? ─ record ─ raft_assign voter ─ answer
 *   MemberRemove ID ─ tombstone record (member_attrs removed) ─ applied here ─ two heartbeats ─
 *                     raft_remove ─ answer
 *   MemberUpdate ID PEER ─ record with the new peer address ─ applied here ─ answer (raft 0.15
 *                     cannot change an address: every member looks it up in the records first)
 *                     (on the leader itself: leadership is handed away first, and the client
 *                     is told NOT_LEADER with the new leader, to ask it)
 *
 * Why a member is a standby before it votes: raft 0.15 promotes only a member that can catch up
 * (raft_assign runs catch-up rounds), and a voter that is added before it has started counts
 * toward every quorum while it cannot vote. etcd 3.4 adds it as a voter at once; here the quorum
 * grows only when the new member can take part in it.
 *
 * Zones: a change that leaves the voters outside some zone short of a quorum (losing that zone
 * would stop the cluster) is refused unless forced, with a message naming the zone and counts.
 *
 * One change at a time (raft takes one); a second is refused with TOO_MANY_REQUESTS. A remove or a
 * promotion after which the voters that answer the leader would not be a quorum is refused
 * (INVAL): the new configuration could never commit, this change included.
 *
 * A removed member applies its own tombstone before the leader removes it from the raft
 * configuration (the barrier), then hears from no leader, or restarts to find itself outside
 * the configuration: either way it logs why and stops (on_removed).
 */
#ifndef KEEL_MEMBERSHIP_H
#define KEEL_MEMBERSHIP_H

#include <uv.h>

#include "config.h"
#include "consensus.h"
#include "fsm.h"
#include "keel.pb-c.h"
#include "members.h"
#include "node.h"
#include "propose.h"
#include "reply.h"

struct keel_membership;

struct keel_membership_options {
    uv_loop_t *loop;
    const struct keel_config *cfg;
    struct keel_node *node;
    const struct keel_consensus *raft; /* the node's seam: barrier, leader */
    struct keel_members *members;
    struct keel_propose *propose;
    const struct keel_reply *reply;
    /* This member was removed from the cluster: the callee stops it. Called once. */
    void (*on_removed)(void *data);
    void *data;
};

/* 0 or KEEL_ENOMEM. What o points to must outlive it. */
int keel_membership_new(const struct keel_membership_options *o, struct keel_membership **out);

/* Serve a MemberAdd, MemberRemove, MemberPromote or MemberUpdate from session (req stays the
 * caller's). */
void keel_membership_serve(struct keel_membership *ms, uint64_t session, const Keel__Request *req);

/* Each applied batch (main.c's on_applied, after publish has loaded the member records): a step
 * that waits for its record to be applied goes on. NULL is fine. */
void keel_membership_applied(struct keel_membership *ms, const struct keel_fsm_batch *b);

/* Leadership changed: a step still waiting for its record fails (UNKNOWN: the record may yet
 * be applied under the next leader; asking again is safe). */
void keel_membership_leader_changed(struct keel_membership *ms, bool is_leader);

/* Stop the timer (it closes before the loop ends); a change under way is answered by raft's
 * own shutdown. NULL is fine. */
void keel_membership_stop(struct keel_membership *ms);

/* After the loop ended. NULL is fine. */
void keel_membership_free(struct keel_membership *ms);

/* Of the zones of n voters (zones[i] "" for none), the first whose loss would leave the others
 * short of a quorum, with its count of voters in *in_zone; NULL when there is none. */
const char *keel_membership_critical_zone(const char **zones, size_t n, size_t *in_zone);

#endif
