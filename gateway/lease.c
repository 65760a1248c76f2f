/*
 * etcd's Lease service, unary part (LeaseGrant, LeaseRevoke, LeaseTimeToLive, LeaseLeases), on
 * keel's lease requests. LeaseKeepAlive, a stream, is keepalive.c's.
 *
 * keel's lease semantics are etcd's (ID 0: the cluster picks one; TTLs raised to the minimum;
 * TimeToLive of an unknown lease: TTL -1), so the translation is field for field, plus etcd's own
 * answers where keel is stricter: a TTL <= 0 is granted at the minimum, as etcd's lessor does,
 * and one above etcd's MaxLeaseTTL fails OutOfRange "etcdserver: too large lease TTL".
 */
#include "methods.h"
#include "unary.h"

#include "err.h"

#define MAX_LEASE_TTL 9000000000LL /* etcd's lease.MaxLeaseTTL (keel's KEEL_LEASE_MAX_TTL too) */

static ProtobufCMessage *grant_reply(const struct gw_call *c, const Keel__Response *resp,
                                     int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    Etcdserverpb__LeaseGrantResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__lease_grant_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    if (resp->lease_grant) {
        e->id = resp->lease_grant->id;
        e->ttl = resp->lease_grant->ttl;
        if (resp->lease_grant->error && resp->lease_grant->error[0])
            e->error = resp->lease_grant->error;
    }
    return &e->base;
}

static ProtobufCMessage *revoke_reply(const struct gw_call *c, const Keel__Response *resp,
                                      int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    Etcdserverpb__LeaseRevokeResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__lease_revoke_response__init(e);
    e->header = gw_unary_header(a, resp);
    return e->header ? &e->base : NULL;
}

/* arg: the lease asked about (etcd echoes it even when the lease is unknown). */
static ProtobufCMessage *ttl_reply(const struct gw_call *c, const Keel__Response *resp, int64_t arg,
                                   struct keel_arena *a)
{
    (void)c;
    Etcdserverpb__LeaseTimeToLiveResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__lease_time_to_live_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    e->id = arg;
    e->ttl = -1;
    const Keel__LeaseTimeToLiveResponse *k = resp ? resp->lease_time_to_live : NULL;
    if (k) {
        e->id = k->id ? k->id : arg;
        e->ttl = k->ttl;
        e->grantedttl = k->grantedttl;
        e->keys = k->keys; /* bytes pointing into resp: valid until the send */
        e->n_keys = k->n_keys;
    }
    return &e->base;
}

/* etcd answers TimeToLive of an unknown lease with TTL -1, not an error (v3rpc/lease.go). */
static ProtobufCMessage *ttl_fail(const struct gw_call *c, int status, const Keel__Response *resp,
                                  int64_t arg, struct keel_arena *a, enum gw_code *code,
                                  const char **message)
{
    (void)c;
    (void)code;
    (void)message;
    if (status != KEEL_ELEASENOTFOUND)
        return NULL;
    Keel__Response shell = KEEL__RESPONSE__INIT;
    shell.header = resp ? resp->header : NULL;
    return ttl_reply(c, &shell, arg, a);
}

static ProtobufCMessage *leases_reply(const struct gw_call *c, const Keel__Response *resp,
                                      int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    Etcdserverpb__LeaseLeasesResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__lease_leases_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    const Keel__LeaseLeasesResponse *k = resp->lease_leases;
    size_t n = k ? k->n_leases : 0;
    if (n == 0)
        return &e->base;
    e->leases = keel_arena_alloc(a, n * sizeof(*e->leases));
    Etcdserverpb__LeaseStatus *st = keel_arena_alloc(a, n * sizeof(*st));
    if (!e->leases || !st)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        etcdserverpb__lease_status__init(&st[i]);
        st[i].id = k->leases[i]->id;
        e->leases[i] = &st[i];
    }
    e->n_leases = n;
    return &e->base;
}

static const struct gw_unary_ops grant_ops = {grant_reply, NULL};
static const struct gw_unary_ops revoke_ops = {revoke_reply, NULL};
static const struct gw_unary_ops ttl_ops = {ttl_reply, ttl_fail};
static const struct gw_unary_ops leases_ops = {leases_reply, NULL};

static void on_grant(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__LeaseGrantRequest *e = (const Etcdserverpb__LeaseGrantRequest *)msg;
    if (e->ttl > MAX_LEASE_TTL) {
        gw_unary_fail(c, msg, GW_OUT_OF_RANGE, GW_MSG_TTL_TOO_LARGE);
        return;
    }
    Keel__LeaseGrantRequest k = KEEL__LEASE_GRANT_REQUEST__INIT;
    k.ttl = e->ttl > 0 ? e->ttl : 1; /* keel raises it to its minimum, as etcd does for <= 0 */
    k.id = e->id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_GRANT;
    req.lease_grant = &k;
    gw_unary_send(c, &req, &grant_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_revoke(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__LeaseRevokeRequest k = KEEL__LEASE_REVOKE_REQUEST__INIT;
    k.id = ((const Etcdserverpb__LeaseRevokeRequest *)msg)->id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_REVOKE;
    req.lease_revoke = &k;
    gw_unary_send(c, &req, &revoke_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_ttl(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__LeaseTimeToLiveRequest *e =
        (const Etcdserverpb__LeaseTimeToLiveRequest *)msg;
    Keel__LeaseTimeToLiveRequest k = KEEL__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    k.id = e->id;
    k.keys = e->keys;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE;
    req.lease_time_to_live = &k;
    gw_unary_send(c, &req, &ttl_ops, e->id);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_leases(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__LeaseLeasesRequest k = KEEL__LEASE_LEASES_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_LEASES;
    req.lease_leases = &k;
    gw_unary_send(c, &req, &leases_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* grpc NULL: a JSON-only alias (etcd 3.4 also serves kv/lease/{revoke,timetolive,leases}); the
 * gRPC lookup skips it. */
#define LEASE(grpc, json, type, handler)                                                           \
    {                                                                                              \
        grpc, json, &etcdserverpb__##type##_request__descriptor,                                   \
            &etcdserverpb__##type##_response__descriptor, GW_UNARY, handler, NULL,                 \
            gw_unary_on_cancel                                                                     \
    }

static const struct gw_method lease_methods[] = {
    LEASE("/etcdserverpb.Lease/LeaseGrant", "lease/grant", lease_grant, on_grant),
    LEASE("/etcdserverpb.Lease/LeaseRevoke", "lease/revoke", lease_revoke, on_revoke),
    LEASE("/etcdserverpb.Lease/LeaseTimeToLive", "lease/timetolive", lease_time_to_live, on_ttl),
    LEASE("/etcdserverpb.Lease/LeaseLeases", "lease/leases", lease_leases, on_leases),
    LEASE(NULL, "kv/lease/revoke", lease_revoke, on_revoke),
    LEASE(NULL, "kv/lease/timetolive", lease_time_to_live, on_ttl),
    LEASE(NULL, "kv/lease/leases", lease_leases, on_leases),
};

const struct gw_method_table gw_lease_table = {lease_methods,
                                               sizeof(lease_methods) / sizeof(lease_methods[0])};
