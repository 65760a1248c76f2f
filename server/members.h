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

struct keel_member_info {
    uint64_t id;
    char name[KEEL_NAME_MAX];
    char peer[KEEL_ADDR_MAX];
    char client[KEEL_ADDR_MAX]; /* "" until learned */
    char zone[KEEL_NAME_MAX];
};

struct keel_members {
    struct keel_member_info *v;
    size_t n;
};

/* From the configuration; the own member gets its client address at once. 0 or -1 (memory). */
int keel_members_init(struct keel_members *m, const struct keel_config *c);
void keel_members_close(struct keel_members *m);
struct keel_member_info *keel_members_get(struct keel_members *m, uint64_t id);
/* Record what a peer said about itself; unknown ids are ignored. */
void keel_members_learn(struct keel_members *m, uint64_t id, const char *client, const char *zone);

#endif
