/*
 * Member attributes through the log (see publish.h). The Member messages a turn's Commands
 * point to live here, one per member entry (KEEL_MEMBERS_MAX), because the proposer borrows them
 * until the end of the turn.
 */
#include "publish.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

struct attrs {
    Keel__Member msg;
    char *client_urls[1];
    char *peer_urls[1];
};

struct keel_publish {
    struct keel_publish_options o;
    struct attrs *attrs; /* one per member, in members->v order */
    bool is_leader;
    bool quota_proposed;      /* this leadership proposed the quota already */
    Keel__QuotaRequest quota; /* borrowed by the proposer until the end of the turn */
};

/* The quota, when the cluster has none yet (see publish.h). */
static void publish_quota(struct keel_publish *pb)
{
    struct keel_store_stat st;
    keel_store_stat(pb->o.store, &st);
    if (st.quota_set || pb->quota_proposed || pb->o.quota_bytes == 0)
        return;
    keel__quota_request__init(&pb->quota);
    pb->quota.bytes = pb->o.quota_bytes;
    pb->quota.if_unset = true;
    Keel__Command c = KEEL__COMMAND__INIT;
    c.op_case = KEEL__COMMAND__OP_QUOTA;
    c.quota = &pb->quota;
    if (keel_propose_command(pb->o.propose, &c, NULL, NULL) == 0)
        pb->quota_proposed = true;
}

static void publish(struct keel_publish *pb)
{
    if (!pb->o.raft->is_leader(pb->o.raft->ctx))
        return;
    publish_quota(pb);
    struct keel_members *ms = pb->o.members;
    for (size_t i = 0; i < ms->n; i++) {
        struct keel_member_info *mi = &ms->v[i];
        if (mi->publishing || mi->client[0] == '\0' || mi->removed ||
            (strcmp(mi->client, mi->stored_client) == 0 && strcmp(mi->zone, mi->stored_zone) == 0))
            continue;
        struct attrs *a = &pb->attrs[i];
        keel__member__init(&a->msg);
        a->msg.id = mi->id;
        a->msg.name = mi->name;
        a->msg.zone = mi->zone;
        a->client_urls[0] = mi->client;
        a->msg.clienturls = a->client_urls;
        a->msg.n_clienturls = 1;
        a->peer_urls[0] = mi->peer;
        a->msg.peerurls = a->peer_urls;
        a->msg.n_peerurls = mi->peer[0] != '\0';
        a->msg.islearner = mi->learner; /* what member add said, kept */
        Keel__Command c = KEEL__COMMAND__INIT;
        c.op_case = KEEL__COMMAND__OP_MEMBER_ATTRS;
        c.member_attrs = &a->msg;
        if (keel_propose_command(pb->o.propose, &c, NULL, NULL) != 0)
            return;
        mi->publishing = 1;
    }
}

void keel_publish_learned(struct keel_publish *pb)
{
    publish(pb);
}

void keel_publish_applied(struct keel_publish *pb, const struct keel_fsm_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        if (b->results[i].op == KEEL__COMMAND__OP_MEMBER_ATTRS) {
            keel_members_load(pb->o.members, pb->o.store);
            publish(pb); /* a member whose address changed meanwhile */
            return;
        }
    }
}

void keel_publish_leader_changed(struct keel_publish *pb, bool is_leader)
{
    bool was = pb->is_leader;
    pb->is_leader = is_leader;
    if (is_leader && !was) {
        pb->quota_proposed = false;
        for (size_t i = 0; i < pb->o.members->n; i++)
            pb->o.members->v[i].publishing = 0;
        publish(pb);
    }
}

int keel_publish_new(const struct keel_publish_options *o, struct keel_publish **out)
{
    struct keel_publish *pb = calloc(1, sizeof(*pb));
    struct attrs *a = calloc(KEEL_MEMBERS_MAX + 1, sizeof(*a));
    if (pb == NULL || a == NULL) {
        free(pb);
        free(a);
        return KEEL_ENOMEM;
    }
    pb->o = *o;
    pb->attrs = a;
    *out = pb;
    return 0;
}

void keel_publish_free(struct keel_publish *pb)
{
    if (pb == NULL)
        return;
    free(pb->attrs);
    free(pb);
}
