/*
 * Member attributes through the log: the leader puts a member's client address and zone into
 * the replicated state (a member_attrs Command) whenever what it learned from that member's
 * handshake differs from what the state says, so every member can name every other member's
 * client address (NOT_LEADER answers, member lists, checkpoint fetches) after restarts too.
 *
 * At most one member_attrs per member is in flight; the flag clears when the state is reloaded
 * from a committed batch or on a new leadership.
 *
 * The cluster's quota goes the same way: a leader that finds none in the state proposes its
 * --quota-bytes "if unset", so the first one applied becomes cluster state and members started
 * with other flags never decide a write differently (the flag is ignored once a quota is set).
 */
#ifndef KEEL_PUBLISH_H
#define KEEL_PUBLISH_H

#include <stdbool.h>

#include "consensus.h"
#include "fsm.h"
#include "members.h"
#include "propose.h"
#include "store.h"

struct keel_publish;

struct keel_publish_options {
    struct keel_members *members;
    struct keel_store *store; /* the replicated attributes are reloaded from here */
    struct keel_propose *propose;
    const struct keel_consensus *raft;
    uint64_t quota_bytes; /* this member's --quota-bytes: proposed when the cluster has none */
};

/* 0 or KEEL_ENOMEM. What o points to must outlive it. */
int keel_publish_new(const struct keel_publish_options *o, struct keel_publish **out);

/* A peer told us its attributes (members.h, keel_members_learn): publish what changed. */
void keel_publish_learned(struct keel_publish *pb);

/* A committed batch: when it holds member attributes, reload them and publish what is still
 * stale (an address that changed meanwhile). */
void keel_publish_applied(struct keel_publish *pb, const struct keel_fsm_batch *b);

/* Leadership changed: a new leader forgets what was in flight and publishes afresh. */
void keel_publish_leader_changed(struct keel_publish *pb, bool is_leader);

/* NULL is fine. */
void keel_publish_free(struct keel_publish *pb);

#endif
