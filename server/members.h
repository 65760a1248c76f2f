/*
 * What a member knows about its peers at run time: the configured members (id, name, peer
 * address, zone) plus each one's client address, learned from the peer handshake. A follower
 * learns the leader's client address as soon as the leader connects to it, which is what a
 * NOT_LEADER answer carries.
 */
#ifndef KEEL_MEMBERS_H
#define KEEL_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "config.h"
#include "consensus.h"
#include "handshake.h"
#include "store.h"

struct keel_member_info {
    uint64_t id;
    char name[KEEL_NAME_MAX];
    char peer[KEEL_ADDR_MAX];
    char client[KEEL_ADDR_MAX]; /* "" until learned */
    char zone[KEEL_NAME_MAX];
    /* What the replicated state says (member_attrs commands): the leader publishes a member's
     * attributes when they differ from these. */
    char stored_client[KEEL_ADDR_MAX];
    char stored_zone[KEEL_NAME_MAX];
    char stored_peer[KEEL_ADDR_MAX]; /* the record's peer address: a member update's wins */
    int publishing;                  /* a member_attrs for it is in flight */
    bool learner; /* added as a learner: stays one until promoted (else promoted once caught up) */
    bool removed; /* the store says member remove took it out */
};

/* Members ever known to one keeld process: --initial-cluster's and those added since. A member
 * past it is left out of names and zones (raft still replicates to it). */
#define KEEL_MEMBERS_MAX 64

struct keel_members {
    struct keel_member_info *v; /* KEEL_MEMBERS_MAX entries: pointers into it stay valid */
    size_t n;
    uint64_t self;
};

/* From the configuration; the own member gets its client address at once. 0 or -1 (memory). */
int keel_members_init(struct keel_members *m, const struct keel_config *c);
/* The entry of id, added (zeroed but for its id) when there is none; NULL when the table is full.
 */
struct keel_member_info *keel_members_put(struct keel_members *m, uint64_t id);
void keel_members_close(struct keel_members *m);
struct keel_member_info *keel_members_get(struct keel_members *m, uint64_t id);
/* Take the attributes stored in the replicated state: they survive restarts, and every member
 * gets every other member's client address through them. 0 or KEEL_E*. */
int keel_members_load(struct keel_members *m, struct keel_store *store);

/* The peer address member id has by a member update, NULL when the raft configuration's
 * stands (no update, or no such member). */
const char *keel_members_moved_peer(struct keel_members *m, uint64_t id);

/* Record what a peer that passed the handshake said about itself (an unknown one is added: the
 * raft configuration has it). */
void keel_members_learn(struct keel_members *m, const struct keel_handshake_peer *p);

/*
 * Every member as MemberList answers it, built in arena a (its strings point into m): the
 * members of raft's configuration (raft->members) with the names, zones and client addresses m
 * holds for them, or every entry of m where raft gives none. *n gets the count; NULL when the
 * arena ran out of memory.
 */
Keel__Member **keel_members_msg(struct keel_members *m, const struct keel_consensus *raft,
                                struct keel_arena *a, size_t *n);

#endif
