/*
 * The calls of the synchronous API that carry one request each (keel_put, keel_get, ...): they
 * build the request, run it through keel_do_ex (sync.c) and hand back the body of the reply.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Run req and hand the caller the body of the expected kind, detached from its envelope. */
static int do_body(struct keel *k, const Keel__Request *req, const struct keel_call_opts *opts,
                   Keel__Response__BodyCase want, void **out)
{
    if (out == NULL)
        return keel_do_ex(k, req, opts, NULL);
    *out = NULL;
    Keel__Response *resp;
    int rv = keel_do_ex(k, req, opts, &resp);
    if (rv != 0)
        return rv;
    if (resp->body_case != want || resp->range == NULL) {
        char msg[128];
        snprintf(msg, sizeof(msg), "unexpected reply: body %d for a request expecting %d",
                 (int)resp->body_case, (int)want);
        keel_free(resp);
        kc_set_errmsg(msg);
        return KEEL_EINTERNAL;
    }
    /* Every body member is a pointer in one union: detach it through any of them. */
    *out = resp->range;
    resp->range = NULL;
    resp->body_case = KEEL__RESPONSE__BODY__NOT_SET;
    keel_free(resp);
    return 0;
}

static ProtobufCBinaryData bytes_of(const void *p, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)(uintptr_t)p};
    return b;
}

int keel_put(struct keel *k, const void *key, size_t klen, const void *val, size_t vlen,
             const struct keel_put_opts *opts, Keel__PutResponse **out)
{
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key = bytes_of(key, klen);
    put.value = bytes_of(val, vlen);
    if (opts) {
        put.lease = opts->lease;
        put.prev_kv = opts->prev_kv;
        put.ignore_value = opts->ignore_value;
        put.ignore_lease = opts->ignore_lease;
    }
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    return do_body(k, &req, NULL, KEEL__RESPONSE__BODY_PUT, (void **)out);
}

int keel_get(struct keel *k, const void *key, size_t klen, const struct keel_get_opts *opts,
             Keel__RangeResponse **out)
{
    if (out == NULL) {
        kc_set_errmsg("keel_get: out is NULL");
        return KEEL_EINVAL;
    }
    Keel__RangeRequest range = KEEL__RANGE_REQUEST__INIT;
    range.key = bytes_of(key, klen);
    if (opts) {
        range.range_end = bytes_of(opts->range_end, opts->range_end ? opts->range_end_len : 0);
        range.limit = opts->limit;
        range.revision = opts->revision;
        range.serializable = opts->serializable;
        range.keys_only = opts->keys_only;
        range.count_only = opts->count_only;
        range.sort_order = opts->sort_order;
        range.sort_target = opts->sort_target;
    }
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &range;
    return do_body(k, &req, NULL, KEEL__RESPONSE__BODY_RANGE, (void **)out);
}

int keel_delete(struct keel *k, const void *key, size_t klen, const struct keel_delete_opts *opts,
                Keel__DeleteRangeResponse **out)
{
    Keel__DeleteRangeRequest del = KEEL__DELETE_RANGE_REQUEST__INIT;
    del.key = bytes_of(key, klen);
    if (opts) {
        del.range_end = bytes_of(opts->range_end, opts->range_end ? opts->range_end_len : 0);
        del.prev_kv = opts->prev_kv;
    }
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_DELETE_RANGE;
    req.delete_range = &del;
    return do_body(k, &req, NULL, KEEL__RESPONSE__BODY_DELETE_RANGE, (void **)out);
}

int keel_txn(struct keel *k, const Keel__TxnRequest *txn, Keel__TxnResponse **out)
{
    if (txn == NULL) {
        kc_set_errmsg("keel_txn: txn is NULL");
        return KEEL_EINVAL;
    }
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_TXN;
    req.txn = (Keel__TxnRequest *)(uintptr_t)txn;
    return do_body(k, &req, NULL, KEEL__RESPONSE__BODY_TXN, (void **)out);
}

int keel_compact(struct keel *k, int64_t rev)
{
    Keel__CompactionRequest c = KEEL__COMPACTION_REQUEST__INIT;
    c.revision = rev;
    c.physical = true;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_COMPACTION;
    req.compaction = &c;
    return keel_do(k, &req, NULL);
}

int keel_status(struct keel *k, const char *endpoint, Keel__StatusResponse **out)
{
    if (out == NULL) {
        kc_set_errmsg("keel_status: out is NULL");
        return KEEL_EINVAL;
    }
    Keel__StatusRequest s = KEEL__STATUS_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &s;
    struct keel_call_opts opts = {.endpoint = endpoint};
    return do_body(k, &req, &opts, KEEL__RESPONSE__BODY_STATUS, (void **)out);
}

int keel_member_list(struct keel *k, Keel__MemberListResponse **out)
{
    if (out == NULL) {
        kc_set_errmsg("keel_member_list: out is NULL");
        return KEEL_EINVAL;
    }
    Keel__MemberListRequest m = KEEL__MEMBER_LIST_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_LIST;
    req.member_list = &m;
    return do_body(k, &req, NULL, KEEL__RESPONSE__BODY_MEMBER_LIST, (void **)out);
}

int keel_lease_grant(struct keel *k, int64_t ttl, int64_t id, Keel__LeaseGrantResponse **out)
{
    Keel__LeaseGrantRequest g = KEEL__LEASE_GRANT_REQUEST__INIT;
    g.ttl = ttl;
    g.id = id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_GRANT;
    req.lease_grant = &g;
    return do_body(k, &req, NULL, KEEL__RESPONSE__BODY_LEASE_GRANT, (void **)out);
}

int keel_lease_revoke(struct keel *k, int64_t id)
{
    Keel__LeaseRevokeRequest r = KEEL__LEASE_REVOKE_REQUEST__INIT;
    r.id = id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_REVOKE;
    req.lease_revoke = &r;
    return keel_do(k, &req, NULL);
}

int keel_lease_time_to_live(struct keel *k, int64_t id, bool keys,
                            Keel__LeaseTimeToLiveResponse **out)
{
    if (out == NULL) {
        kc_set_errmsg("keel_lease_time_to_live: out is NULL");
        return KEEL_EINVAL;
    }
    Keel__LeaseTimeToLiveRequest t = KEEL__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    t.id = id;
    t.keys = keys;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE;
    req.lease_time_to_live = &t;
    return do_body(k, &req, NULL, KEEL__RESPONSE__BODY_LEASE_TIME_TO_LIVE, (void **)out);
}

int keel_lease_leases(struct keel *k, Keel__LeaseLeasesResponse **out)
{
    if (out == NULL) {
        kc_set_errmsg("keel_lease_leases: out is NULL");
        return KEEL_EINVAL;
    }
    Keel__LeaseLeasesRequest l = KEEL__LEASE_LEASES_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_LEASES;
    req.lease_leases = &l;
    return do_body(k, &req, NULL, KEEL__RESPONSE__BODY_LEASE_LEASES, (void **)out);
}

int keel_lease_keep_alive_once(struct keel *k, int64_t id, int64_t *ttl)
{
    if (ttl)
        *ttl = 0;
    Keel__LeaseKeepAliveRequest r = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
    r.id = id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
    req.lease_keep_alive = &r;
    Keel__LeaseKeepAliveResponse *resp;
    int rv = do_body(k, &req, NULL, KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE, (void **)&resp);
    if (rv != 0)
        return rv;
    int64_t got = resp->ttl;
    keel_free(resp);
    if (got <= 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "lease %016" PRIx64 " expired or revoked", (uint64_t)id);
        kc_set_errmsg(msg);
        return KEEL_ELEASENOTFOUND;
    }
    if (ttl)
        *ttl = got;
    return 0;
}

size_t keel_prefix_end(const void *key, size_t klen, uint8_t *out)
{
    const uint8_t *k = key;
    for (size_t i = klen; i > 0; i--) {
        if (k[i - 1] < 0xff) {
            memcpy(out, k, i - 1);
            out[i - 1] = (uint8_t)(k[i - 1] + 1);
            return i;
        }
    }
    out[0] = 0;
    return 1;
}
