/*
 * etcd's Cluster service: MemberList on keel's member list; the membership changes answer
 * Unimplemented until keel-gateway carries them.
 *
 * Every member's clientURLs are the gateway's advertised URLs, never keel's native client
 * addresses: etcd clients (etcdctl --cluster, clientv3 Sync, Patroni) dial what they find there,
 * and keel's port speaks another protocol. IDs, names and peer addresses are keel's own, so member
 * IDs agree with the header's member_id and Status.leader; a bare "host:port" peer address gets
 * etcd's "http://" (Go's url.Parse, which clientv3 users call on peerURLs, refuses it without).
 */
#include <stdio.h>
#include <string.h>

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
    e->members = keel_arena_alloc(a, n * sizeof(*e->members));
    Etcdserverpb__Member *m = keel_arena_alloc(a, n * sizeof(*m));
    if (!e->members || !m)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const Keel__Member *km = k->members[i];
        etcdserverpb__member__init(&m[i]);
        m[i].id = km->id;
        m[i].name = km->name;
        if (km->n_peerurls &&
            !(m[i].peerurls = keel_arena_alloc(a, km->n_peerurls * sizeof(char *))))
            return NULL;
        for (size_t j = 0; j < km->n_peerurls; j++)
            if (!(m[i].peerurls[j] = peer_url(a, km->peerurls[j])))
                return NULL;
        m[i].n_peerurls = km->n_peerurls;
        m[i].clienturls = c->ctx->advertise_urls;
        m[i].n_clienturls = c->ctx->n_advertise_urls;
        m[i].islearner = km->islearner;
        e->members[i] = &m[i];
    }
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

static void on_change(struct gw_call *c, ProtobufCMessage *msg)
{
    gw_unary_fail(c, msg, GW_UNIMPLEMENTED, "keel-gateway does not change membership yet");
}

#define MEMBER(name, json, type, handler)                                                          \
    {                                                                                              \
        "/etcdserverpb.Cluster/" name, json, &etcdserverpb__##type##_request__descriptor,          \
            &etcdserverpb__##type##_response__descriptor, GW_UNARY, handler, NULL,                 \
            gw_unary_on_cancel                                                                     \
    }

static const struct gw_method cluster_methods[] = {
    MEMBER("MemberList", "cluster/member/list", member_list, on_list),
    MEMBER("MemberAdd", "cluster/member/add", member_add, on_change),
    MEMBER("MemberRemove", "cluster/member/remove", member_remove, on_change),
    MEMBER("MemberUpdate", "cluster/member/update", member_update, on_change),
    MEMBER("MemberPromote", "cluster/member/promote", member_promote, on_change),
};

const struct gw_method_table gw_cluster_table = {cluster_methods, sizeof(cluster_methods) /
                                                                      sizeof(cluster_methods[0])};
