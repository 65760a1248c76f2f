#include "convert.h"

#include <string.h>

#include "err.h"

Etcdserverpb__ResponseHeader *gw_header(struct keel_arena *a, const Keel__ResponseHeader *h)
{
    Etcdserverpb__ResponseHeader *o = keel_arena_alloc(a, sizeof(*o));
    if (!o)
        return NULL;
    etcdserverpb__response_header__init(o);
    if (h) {
        o->cluster_id = h->cluster_id;
        o->member_id = h->member_id;
        o->revision = h->revision;
        o->raft_term = h->raft_term;
    }
    return o;
}

Etcdserverpb__KeyValue *gw_kv(struct keel_arena *a, const Keel__KeyValue *kv)
{
    if (!kv)
        return NULL;
    Etcdserverpb__KeyValue *o = keel_arena_alloc(a, sizeof(*o));
    if (!o)
        return NULL;
    etcdserverpb__key_value__init(o);
    o->key = kv->key;
    o->create_revision = kv->create_revision;
    o->mod_revision = kv->mod_revision;
    o->version = kv->version;
    o->value = kv->value;
    o->lease = kv->lease;
    return o;
}

Etcdserverpb__KeyValue **gw_kvs(struct keel_arena *a, Keel__KeyValue *const *kvs, size_t n)
{
    if (n == 0)
        return NULL;
    Etcdserverpb__KeyValue **o = keel_arena_alloc(a, n * sizeof(*o));
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(o[i] = gw_kv(a, kvs[i])))
            return NULL;
    return o;
}

Etcdserverpb__Event *gw_event(struct keel_arena *a, const Keel__Event *e)
{
    if (!e)
        return NULL;
    Etcdserverpb__Event *o = keel_arena_alloc(a, sizeof(*o));
    if (!o)
        return NULL;
    etcdserverpb__event__init(o);
    /* Both enums are etcd's: PUT = 0, DELETE = 1. */
    o->type = e->type == KEEL__EVENT__EVENT_TYPE__DELETE ? ETCDSERVERPB__EVENT__EVENT_TYPE__DELETE
                                                         : ETCDSERVERPB__EVENT__EVENT_TYPE__PUT;
    o->kv = gw_kv(a, e->kv);
    o->prev_kv = gw_kv(a, e->prev_kv);
    if ((e->kv && !o->kv) || (e->prev_kv && !o->prev_kv))
        return NULL;
    return o;
}

/* keel refuses auth requests with etcd's own messages (server/auth.c, storage/auth.c) under
 * keel's codes; etcd gives each its gRPC code (api/v3rpc/rpctypes/error.go). */
static const struct {
    const char *message;
    enum gw_code code;
} auth_codes[] = {
    {"etcdserver: root user does not exist", GW_FAILED_PRECONDITION},
    {"etcdserver: root user does not have root role", GW_FAILED_PRECONDITION},
    {"etcdserver: user name already exists", GW_FAILED_PRECONDITION},
    {"etcdserver: user name is empty", GW_INVALID_ARGUMENT},
    {"etcdserver: user name not found", GW_FAILED_PRECONDITION},
    {"etcdserver: role name already exists", GW_FAILED_PRECONDITION},
    {"etcdserver: role name not found", GW_FAILED_PRECONDITION},
    {"etcdserver: role name is empty", GW_INVALID_ARGUMENT},
    {"etcdserver: authentication failed, invalid user ID or password", GW_INVALID_ARGUMENT},
    {"etcdserver: permission denied", GW_PERMISSION_DENIED},
    {"etcdserver: role is not granted to the user", GW_FAILED_PRECONDITION},
    {"etcdserver: permission is not granted to the role", GW_FAILED_PRECONDITION},
    {"etcdserver: authentication is not enabled", GW_FAILED_PRECONDITION},
    {"etcdserver: invalid auth token", GW_UNAUTHENTICATED},
    {"etcdserver: invalid auth management", GW_INVALID_ARGUMENT},
    {"etcdserver: revision of auth store is old", GW_INVALID_ARGUMENT},
};

enum gw_code gw_error(int status, const Keel__Response *resp, const char **message)
{
    /* The member's own words where etcd has none of its own; else keel's table. */
    const char *theirs = resp && resp->error && resp->error->message && resp->error->message[0]
                             ? resp->error->message
                             : keel_strerror(status);
    for (size_t i = 0; i < sizeof(auth_codes) / sizeof(auth_codes[0]); i++)
        if (strcmp(theirs, auth_codes[i].message) == 0) {
            *message = auth_codes[i].message;
            return auth_codes[i].code;
        }
    switch (status) {
    case KEEL_ECOMPACTED:
        *message = "etcdserver: mvcc: required revision has been compacted";
        return GW_OUT_OF_RANGE;
    case KEEL_EFUTUREREV:
        *message = "etcdserver: mvcc: required revision is a future revision";
        return GW_OUT_OF_RANGE;
    case KEEL_ETOOLARGE:
    case KEEL_EFRAMETOOLARGE:
        *message = "etcdserver: request is too large";
        return GW_INVALID_ARGUMENT;
    case KEEL_ENOSPACE:
        *message = "etcdserver: mvcc: database space exceeded";
        return GW_RESOURCE_EXHAUSTED;
    case KEEL_ELEASENOTFOUND:
        *message = "etcdserver: requested lease not found";
        return GW_NOT_FOUND;
    case KEEL_ELEASEEXISTS:
        *message = "etcdserver: lease already exists";
        return GW_FAILED_PRECONDITION;
    case KEEL_EKEYNOTFOUND:
        *message = "etcdserver: key not found";
        return GW_INVALID_ARGUMENT;
    case KEEL_ETOOMANYOPS:
        *message = "etcdserver: too many operations in txn request";
        return GW_INVALID_ARGUMENT;
    case KEEL_EDUPKEY:
        *message = "etcdserver: duplicate key given in txn request";
        return GW_INVALID_ARGUMENT;
    case KEEL_EINVAL:
    case KEEL_EKEYTOOLONG:
    case KEEL_EBADFRAME:
        *message = theirs;
        return GW_INVALID_ARGUMENT;
    case KEEL_EUNAVAILABLE:
        *message = "etcdserver: no leader";
        return GW_UNAVAILABLE;
    case KEEL_ENOTLEADER:
        /* libkeel follows redirects itself: one that surfaces means leadership moved under it. */
        *message = "etcdserver: leader changed";
        return GW_UNAVAILABLE;
    case KEEL_ETIMEOUT:
        *message = "etcdserver: request timed out";
        return GW_UNAVAILABLE;
    case KEEL_EUNKNOWN:
        *message = "etcdserver: request timed out, possibly due to previous leader failure";
        return GW_UNAVAILABLE;
    case KEEL_EUNAUTHENTICATED:
        /* etcd's for a request without a valid token (a wrong password is in the table). */
        *message = "etcdserver: invalid auth token";
        return GW_UNAUTHENTICATED;
    case KEEL_EAUTHOLDREV:
        *message = "etcdserver: revision of auth store is old";
        return GW_INVALID_ARGUMENT;
    case KEEL_EPERMDENIED:
        *message = "etcdserver: permission denied";
        return GW_PERMISSION_DENIED;
    case KEEL_EMEMBERNOTFOUND:
        *message = "etcdserver: member not found";
        return GW_NOT_FOUND;
    case KEEL_EMEMBEREXISTS:
        *message = "etcdserver: member ID already exist";
        return GW_FAILED_PRECONDITION;
    case KEEL_ETOOMANYREQUESTS:
        *message = "etcdserver: too many requests";
        return GW_RESOURCE_EXHAUSTED;
    case KEEL_EREPLYTOOLARGE:
        *message = theirs;
        return GW_RESOURCE_EXHAUSTED;
    case KEEL_EUNSUPPORTED:
        *message = theirs;
        return GW_UNIMPLEMENTED;
    case KEEL_ECANCELED:
        *message = "context canceled";
        return GW_CANCELLED;
    case KEEL_ECLOSED:
        *message = "etcdserver: server stopped";
        return GW_UNAVAILABLE;
    default:
        *message = theirs;
        return GW_INTERNAL;
    }
}
