/*
 * What a member knows about its peers at run time: the configured members (id, name, peer
 * address, zone) plus each one's client address, learned from the peer handshake. A follower
 * learns the leader's client address as soon as the leader connects to it, which is what a
 * NOT_LEADER answer carries.
 */
#ifndef KEEL_MEMBERS_H
#define KEEL_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
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
    int publishing; /* a member_attrs for it is in flight */
};

struct keel_members {
    struct keel_member_info *v;
    size_t n;
};

/* From the configuration; the own member gets its client address at once. 0 or -1 (memory). */
int keel_members_init(struct keel_members *m, const struct keel_config *c);
void keel_members_close(struct keel_members *m);
struct keel_member_info *keel_members_get(struct keel_members *m, uint64_t id);
/* Take the attributes stored in the replicated state: they survive restarts, and every member
 * gets every other member's client address through them. 0 or KEEL_E*. */
int keel_members_load(struct keel_members *m, struct keel_store *store);

/* Record what a peer said about itself; unknown ids are ignored. */
void keel_members_learn(struct keel_members *m, uint64_t id, const char *client, const char *zone);

#endif
