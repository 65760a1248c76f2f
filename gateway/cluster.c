/*
 * etcd's Cluster service: MemberList, MemberRemove, MemberPromote and MemberUpdate on keel's;
 * MemberAdd is refused (etcd's request has no name, keel's member ids come from names) with the
 * keelctl command to use.
 *
 * Every member's clientURLs are the gateway's advertised URLs, never keel's native client
 * addresses: etcd clients (etcdctl --cluster, clientv3 Sync, Patroni) dial what they find there,
 * and keel's port speaks another protocol. IDs, names and peer addresses are keel's own, so member
 * IDs agree with the header's member_id and Status.leader; a bare "host:port" peer address gets
 * etcd's "http://" (Go's url.Parse, which clientv3 users call on peerURLs, refuses it without).
 */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "methods.h"
#include "unary.h"

/* peer as a URL in the arena: as it is when it has a scheme, else "http://" + peer. */
static char *peer_url(struct keel_arena *a, const char *peer)
{
    if (strstr(peer, "://"))
        return (char *)peer;
    size_t n = strlen(peer) + sizeof("http://");
    char *u = keel_arena_alloc(a, n);
    if (u)
        snprintf(u, n, "http://%s", peer);
    return u;
}

/* keel's members as etcd's, in the arena; NULL on memory. */
static Etcdserverpb__Member **members_of(const struct gw_call *c, struct keel_arena *a,
                                         Keel__Member **km, size_t n)
{
    Etcdserverpb__Member **v = keel_arena_alloc(a, (n + 1) * sizeof(*v));
    Etcdserverpb__Member *m = keel_arena_alloc(a, (n + 1) * sizeof(*m));
    if (!v || !m)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        etcdserverpb__member__init(&m[i]);
        m[i].id = km[i]->id;
        m[i].name = km[i]->name;
        if (km[i]->n_peerurls &&
            !(m[i].peerurls = keel_arena_alloc(a, km[i]->n_peerurls * sizeof(char *))))
            return NULL;
        for (size_t j = 0; j < km[i]->n_peerurls; j++)
            if (!(m[i].peerurls[j] = peer_url(a, km[i]->peerurls[j])))
                return NULL;
        m[i].n_peerurls = km[i]->n_peerurls;
        m[i].clienturls = c->ctx->advertise_urls;
        m[i].n_clienturls = c->ctx->n_advertise_urls;
        m[i].islearner = km[i]->islearner;
        v[i] = &m[i];
    }
    return v;
}

static ProtobufCMessage *list_reply(const struct gw_call *c, const Keel__Response *resp,
                                    int64_t arg, struct keel_arena *a)
{
    (void)arg;
    Etcdserverpb__MemberListResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__member_list_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    e->header->revision = 0; /* etcd's MemberList header carries none (ClusterServer.header) */
    const Keel__MemberListResponse *k = resp->member_list;
    size_t n = k ? k->n_members : 0;
    if (n == 0)
        return &e->base;
    if (!(e->members = members_of(c, a, k->members, n)))
        return NULL;
    e->n_members = n;
    return &e->base;
}

static const struct gw_unary_ops list_ops = {list_reply, NULL};

static void on_list(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__MemberListRequest k = KEEL__MEMBER_LIST_REQUEST__INIT;
    /* etcd 3.4 answers from the member's own view; keel's member list is served the same way. */
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_LIST;
    req.member_list = &k;
    gw_unary_send(c, &req, &list_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* MemberRemove and MemberPromote answer with the members after the change. */
static ProtobufCMessage *change_reply(const struct gw_call *c, const Keel__Response *resp,
                                      int64_t arg, struct keel_arena *a)
{
    (void)arg;
    Keel__Member **km = NULL;
    size_t n = 0;
    Etcdserverpb__MemberRemoveResponse *rm = NULL;
    Etcdserverpb__MemberPromoteResponse *pr = NULL;
    if (resp->body_case == KEEL__RESPONSE__BODY_MEMBER_REMOVE) {
        km = resp->member_remove->members;
        n = resp->member_remove->n_members;
        if (!(rm = keel_arena_alloc(a, sizeof(*rm))))
            return NULL;
        etcdserverpb__member_remove_response__init(rm);
        if (!(rm->header = gw_unary_header(a, resp)) || !(rm->members = members_of(c, a, km, n)))
            return NULL;
        rm->n_members = n;
        return &rm->base;
    }
    if (resp->body_case == KEEL__RESPONSE__BODY_MEMBER_UPDATE) {
        Etcdserverpb__MemberUpdateResponse *up = keel_arena_alloc(a, sizeof(*up));
        km = resp->member_update->members;
        n = resp->member_update->n_members;
        if (!up)
            return NULL;
        etcdserverpb__member_update_response__init(up);
        if (!(up->header = gw_unary_header(a, resp)) || !(up->members = members_of(c, a, km, n)))
            return NULL;
        up->n_members = n;
        return &up->base;
    }
    if (resp->body_case != KEEL__RESPONSE__BODY_MEMBER_PROMOTE)
        return NULL;
    km = resp->member_promote->members;
    n = resp->member_promote->n_members;
    if (!(pr = keel_arena_alloc(a, sizeof(*pr))))
        return NULL;
    etcdserverpb__member_promote_response__init(pr);
    if (!(pr->header = gw_unary_header(a, resp)) || !(pr->members = members_of(c, a, km, n)))
        return NULL;
    pr->n_members = n;
    return &pr->base;
}

static ProtobufCMessage *change_fail(const struct gw_call *c, int status,
                                     const Keel__Response *resp, int64_t arg, struct keel_arena *a,
                                     enum gw_code *code, const char **message)
{
    (void)c;
    (void)arg;
    (void)a;
    const char *why = resp && resp->error && resp->error->message ? resp->error->message : "";
    /* etcd's answers where etcd has one (clientv3 matches these strings), keel's reason else. */
    if (status == KEEL_EMEMBERNOTFOUND) {
        *code = GW_NOT_FOUND;
        *message = "etcdserver: member not found";
    } else if (status == KEEL_EINVAL && strstr(why, "in sync") != NULL) {
        *code = GW_FAILED_PRECONDITION;
        *message = "etcdserver: can only promote a learner member which is in sync with leader";
    } else if (status == KEEL_EINVAL && strstr(why, "votes already") != NULL) {
        *code = GW_FAILED_PRECONDITION;
        *message = "etcdserver: can only promote a learner member";
    } else if (status == KEEL_EINVAL && strstr(why, "answer the leader") != NULL) {
        *code = GW_FAILED_PRECONDITION;
        *message = "etcdserver: re-configuration failed due to not enough started members";
    } else if (status == KEEL_EINVAL) {
        *code = GW_FAILED_PRECONDITION; /* the zone rule: keel's own words name the zone */
    }
    return NULL;
}

static const struct gw_unary_ops change_ops = {change_reply, change_fail};

static void on_remove(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__MemberRemoveRequest k = KEEL__MEMBER_REMOVE_REQUEST__INIT;
    k.id = ((const Etcdserverpb__MemberRemoveRequest *)msg)->id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_REMOVE;
    req.member_remove = &k;
    gw_unary_send(c, &req, &change_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_promote(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__MemberPromoteRequest k = KEEL__MEMBER_PROMOTE_REQUEST__INIT;
    k.id = ((const Etcdserverpb__MemberPromoteRequest *)msg)->id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_PROMOTE;
    req.member_promote = &k;
    gw_unary_send(c, &req, &change_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* etcd's MemberAdd carries no name (etcdctl prints the one it was given, for the new member's
 * flags), and a keel member's id is derived from its name, so a member added without one could
 * never start as itself. */
static void on_add(struct gw_call *c, ProtobufCMessage *msg)
{
    gw_unary_fail(c, msg, GW_FAILED_PRECONDITION,
                  "keel-gateway: etcd's MemberAdd does not carry the new member's name, which "
                  "keel derives its id from; add it with keelctl member add NAME --peer-urls URL");
}

static void on_update(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__MemberUpdateRequest *e = (const Etcdserverpb__MemberUpdateRequest *)msg;
    Keel__MemberUpdateRequest k = KEEL__MEMBER_UPDATE_REQUEST__INIT;
    k.id = e->id;
    k.peerurls = e->peerurls;
    k.n_peerurls = e->n_peerurls;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_UPDATE;
    req.member_update = &k;
    gw_unary_send(c, &req, &change_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

#define MEMBER(name, json, type, handler)                                                          \
    {                                                                                              \
        "/etcdserverpb.Cluster/" name, json, &etcdserverpb__##type##_request__descriptor,          \
            &etcdserverpb__##type##_response__descriptor, GW_UNARY, handler, NULL,                 \
            gw_unary_on_cancel                                                                     \
    }

static const struct gw_method cluster_methods[] = {
    MEMBER("MemberList", "cluster/member/list", member_list, on_list),
    MEMBER("MemberAdd", "cluster/member/add", member_add, on_add),
    MEMBER("MemberRemove", "cluster/member/remove", member_remove, on_remove),
    MEMBER("MemberUpdate", "cluster/member/update", member_update, on_update),
    MEMBER("MemberPromote", "cluster/member/promote", member_promote, on_promote),
};

const struct gw_method_table gw_cluster_table = {cluster_methods, sizeof(cluster_methods) /
                                                                      sizeof(cluster_methods[0])};
