/* The preferred leader zone (see prefer.h). */
#include "prefer.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

#define BACKOFF_ELECTIONS 10 /* election timeouts between two moves asked for */

struct keel_prefer {
    struct keel_prefer_options o;
    uv_timer_t timer;
    uint64_t next_move; /* uv_now before which no move is asked for */
    int moving;         /* a transfer asked for has not called back */
    int stopped;
};

static const struct keel_member_info *info_of(struct keel_prefer *p, uint64_t id)
{
    static const struct keel_member_info none;
    const struct keel_member_info *mi = keel_members_get(p->o.members, id);
    return mi != NULL ? mi : &none;
}

static void moved(void *data, int err)
{
    struct keel_prefer *p = data;
    p->moving = 0;
    if (err != 0)
        KLOG_WARN("handing leadership into zone %s: %s", p->o.cfg->preferred_zone,
                  keel_strerror(err));
}

static void look(uv_timer_t *t)
{
    struct keel_prefer *p = t->data;
    const struct keel_config *c = p->o.cfg;
    uint64_t now = uv_now(p->o.loop);
    if (p->moving || now < p->next_move || !keel_node_is_leader(p->o.node) ||
        strcmp(c->zone, c->preferred_zone) == 0)
        return;
    /* The members of the raft configuration: added ones count, removed ones do not. */
    struct keel_consensus_member conf[KEEL_MEMBERS_MAX];
    size_t n = keel_node_members(p->o.node, conf, KEEL_MEMBERS_MAX);
    for (size_t i = 0; i < n && i < KEEL_MEMBERS_MAX; i++) {
        const struct keel_member_info *mi = info_of(p, conf[i].id);
        if (conf[i].id == c->member_id || strcmp(mi->zone, c->preferred_zone) != 0 ||
            !conf[i].voter || !conf[i].caught_up)
            continue;
        KLOG_INFO("leader in zone %s: handing leadership to %s in the preferred zone %s", c->zone,
                  mi->name, c->preferred_zone);
        p->next_move = now + (uint64_t)c->election_ms * BACKOFF_ELECTIONS;
        if (keel_node_transfer(p->o.node, conf[i].id, moved, p) == 0)
            p->moving = 1;
        return;
    }
}

int keel_prefer_new(const struct keel_prefer_options *o, struct keel_prefer **out)
{
    *out = NULL;
    if (o->cfg->preferred_zone[0] == '\0')
        return 0;
    struct keel_prefer *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return KEEL_ENOMEM;
    p->o = *o;
    uv_timer_init(o->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, look, o->cfg->election_ms, o->cfg->election_ms);
    *out = p;
    return 0;
}

void keel_prefer_stop(struct keel_prefer *p)
{
    if (p == NULL || p->stopped)
        return;
    p->stopped = 1;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
}

void keel_prefer_free(struct keel_prefer *p)
{
    free(p);
}
