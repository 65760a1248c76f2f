#include "members.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int keel_members_init(struct keel_members *m, const struct keel_config *c)
{
    m->v = calloc(c->n_members, sizeof(*m->v));
    m->n = c->n_members;
    if (m->v == NULL)
        return -1;
    for (size_t i = 0; i < c->n_members; i++) {
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

void keel_members_learn(struct keel_members *m, uint64_t id, const char *client, const char *zone)
{
    struct keel_member_info *mi = keel_members_get(m, id);
    if (mi == NULL)
        return;
    if (client[0] != '\0')
        snprintf(mi->client, sizeof(mi->client), "%s", client);
    if (zone[0] != '\0')
        snprintf(mi->zone, sizeof(mi->zone), "%s", zone);
}

int keel_members_load(struct keel_members *m, struct keel_store *store)
{
    struct keel_arena a;
    keel_arena_init(&a, 0);
    Keel__Member **v = NULL;
    size_t n = 0;
    int err = keel_store_members(store, &a, &v, &n);
    for (size_t i = 0; err == 0 && i < n; i++) {
        struct keel_member_info *mi = keel_members_get(m, v[i]->id);
        if (mi == NULL)
            continue;
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
