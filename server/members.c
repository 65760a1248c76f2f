#include "members.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int keel_members_init(struct keel_members *m, const struct keel_config *c)
{
    m->v = calloc(KEEL_MEMBERS_MAX, sizeof(*m->v));
    m->n = c->n_members < KEEL_MEMBERS_MAX ? c->n_members : KEEL_MEMBERS_MAX;
    m->self = c->member_id;
    if (m->v == NULL)
        return -1;
    for (size_t i = 0; i < m->n; i++) {
        struct keel_member_info *mi = &m->v[i];
        mi->id = c->members[i].id;
        snprintf(mi->name, sizeof(mi->name), "%s", c->members[i].name);
        snprintf(mi->peer, sizeof(mi->peer), "%s", c->members[i].peer);
        snprintf(mi->zone, sizeof(mi->zone), "%s", c->members[i].zone);
        if (mi->id == c->member_id) {
            snprintf(mi->client, sizeof(mi->client), "%s", c->listen_client);
            snprintf(mi->zone, sizeof(mi->zone), "%s", c->zone);
        }
    }
    return 0;
}

void keel_members_close(struct keel_members *m)
{
    free(m->v);
    m->v = NULL;
    m->n = 0;
}

struct keel_member_info *keel_members_get(struct keel_members *m, uint64_t id)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i].id == id)
            return &m->v[i];
    return NULL;
}

const char *keel_members_moved_peer(struct keel_members *m, uint64_t id)
{
    const struct keel_member_info *mi = keel_members_get(m, id);
    return mi != NULL && mi->stored_peer[0] != '\0' ? mi->stored_peer : NULL;
}

struct keel_member_info *keel_members_put(struct keel_members *m, uint64_t id)
{
    struct keel_member_info *mi = keel_members_get(m, id);
    if (mi != NULL || m->n == KEEL_MEMBERS_MAX)
        return mi;
    mi = &m->v[m->n++];
    memset(mi, 0, sizeof(*mi));
    mi->id = id;
    return mi;
}

void keel_members_learn(struct keel_members *m, const struct keel_handshake_peer *p)
{
    struct keel_member_info *mi = keel_members_put(m, p->id);
    if (mi == NULL)
        return;
    if (mi->name[0] == '\0')
        snprintf(mi->name, sizeof(mi->name), "%s", p->name);
    snprintf(mi->peer, sizeof(mi->peer), "%s", p->peer);
    if (p->client[0] != '\0')
        snprintf(mi->client, sizeof(mi->client), "%s", p->client);
    if (p->zone[0] != '\0')
        snprintf(mi->zone, sizeof(mi->zone), "%s", p->zone);
}

int keel_members_load(struct keel_members *m, struct keel_store *store)
{
    struct keel_arena a;
    keel_arena_init(&a, 0);
    Keel__Member **v = NULL;
    size_t n = 0;
    int err = keel_store_members(store, &a, &v, &n);
    for (size_t i = 0; err == 0 && i < n; i++) {
        struct keel_member_info *mi = keel_members_put(m, v[i]->id);
        if (mi == NULL)
            continue;
        mi->learner = v[i]->islearner;
        mi->removed = v[i]->removed;
        if (mi->name[0] == '\0' && v[i]->name != NULL)
            snprintf(mi->name, sizeof(mi->name), "%s", v[i]->name);
        snprintf(mi->stored_peer, sizeof(mi->stored_peer), "%s",
                 v[i]->n_peerurls > 0 ? v[i]->peerurls[0] : "");
        if (mi->stored_peer[0] != '\0')
            snprintf(mi->peer, sizeof(mi->peer), "%s", mi->stored_peer);
        const char *client = v[i]->n_clienturls > 0 ? v[i]->clienturls[0] : "";
        const char *zone = v[i]->zone ? v[i]->zone : "";
        snprintf(mi->stored_client, sizeof(mi->stored_client), "%s", client);
        snprintf(mi->stored_zone, sizeof(mi->stored_zone), "%s", zone);
        mi->publishing = 0;
        /* A peer's own handshake is fresher than the log for the address we dial now. */
        if (mi->client[0] == '\0')
            snprintf(mi->client, sizeof(mi->client), "%s", client);
        if (mi->zone[0] == '\0')
            snprintf(mi->zone, sizeof(mi->zone), "%s", zone);
    }
    keel_arena_close(&a);
    return err;
}

static Keel__Member *member_msg(struct keel_arena *a, uint64_t id,
                                const struct keel_member_info *mi, const char *peer, bool learner)
{
    Keel__Member *m = keel_arena_alloc(a, sizeof(*m));
    char **peers = keel_arena_alloc(a, sizeof(char *));
    char **client = keel_arena_alloc(a, sizeof(char *));
    if (m == NULL || peers == NULL || client == NULL)
        return NULL;
    keel__member__init(m);
    m->id = id;
    m->name = mi ? (char *)mi->name : "";
    m->zone = mi ? (char *)mi->zone : "";
    m->islearner = learner;
    peers[0] = (char *)peer;
    m->n_peerurls = 1;
    m->peerurls = peers;
    if (mi != NULL && mi->client[0] != '\0') {
        client[0] = (char *)mi->client;
        m->n_clienturls = 1;
        m->clienturls = client;
    }
    return m;
}

Keel__Member **keel_members_msg(struct keel_members *m, const struct keel_consensus *raft,
                                struct keel_arena *a, size_t *n)
{
    struct keel_consensus_member conf[KEEL_MEMBERS_MAX];
    size_t nc = raft->members ? raft->members(raft->ctx, conf, KEEL_MEMBERS_MAX) : 0;
    if (nc > KEEL_MEMBERS_MAX)
        nc = KEEL_MEMBERS_MAX;
    size_t cap = nc > 0 ? nc : m->n;
    Keel__Member **v = keel_arena_alloc(a, (cap + 1) * sizeof(*v));
    *n = 0;
    if (v == NULL)
        return NULL;
    for (size_t i = 0; i < cap; i++) {
        Keel__Member *msg;
        if (nc > 0) {
            struct keel_member_info *mi = keel_members_get(m, conf[i].id);
            /* conf lives on this stack: the address must come from the arena */
            char *peer = keel_arena_alloc(a, sizeof(conf[i].peer));
            if (peer == NULL)
                return NULL;
            const char *moved = keel_members_moved_peer(m, conf[i].id);
            snprintf(peer, sizeof(conf[i].peer), "%s", moved ? moved : conf[i].peer);
            msg = member_msg(a, conf[i].id, mi, peer, !conf[i].voter);
        } else {
            if (m->v[i].removed)
                continue;
            msg = member_msg(a, m->v[i].id, &m->v[i], m->v[i].peer, false);
        }
        if (msg == NULL)
            return NULL;
        v[(*n)++] = msg;
    }
    return v;
}
