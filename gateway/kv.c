/*
 * etcd's KV service (Range, Put, DeleteRange, Txn, Compact) on keel's requests of the same names.
 *
 * keel's KV messages follow etcd's field for field, so each request is copied across (bytes
 * pointing into the etcd message, which outlives the send) and each answer is copied back with
 * keel's outer header as etcd's per-response header. The checks etcd's API layer makes before
 * its raft round trip (v3rpc/key.go: empty key, value/lease provided with ignore_*, an empty txn
 * op) are made here with etcd's messages; everything else (too many ops, duplicate keys, revisions
 * compacted or in the future) is keel's to judge and comes back through gw_error.
 */
#include "methods.h"
#include "unary.h"

/* ---- etcd -> keel ---- */

static void range_to_keel(Keel__RangeRequest *k, const Etcdserverpb__RangeRequest *e)
{
    keel__range_request__init(k);
    k->key = e->key;
    k->range_end = e->range_end;
    k->limit = e->limit;
    k->revision = e->revision;
    /* Both enums are etcd's numbering; keel refuses values it does not know. */
    k->sort_order = (Keel__RangeRequest__SortOrder)e->sort_order;
    k->sort_target = (Keel__RangeRequest__SortTarget)e->sort_target;
    k->serializable = e->serializable;
    k->keys_only = e->keys_only;
    k->count_only = e->count_only;
    k->min_mod_revision = e->min_mod_revision;
    k->max_mod_revision = e->max_mod_revision;
    k->min_create_revision = e->min_create_revision;
    k->max_create_revision = e->max_create_revision;
}

static void put_to_keel(Keel__PutRequest *k, const Etcdserverpb__PutRequest *e)
{
    keel__put_request__init(k);
    k->key = e->key;
    k->value = e->value;
    k->lease = e->lease;
    k->prev_kv = e->prev_kv;
    k->ignore_value = e->ignore_value;
    k->ignore_lease = e->ignore_lease;
}

static void delete_to_keel(Keel__DeleteRangeRequest *k, const Etcdserverpb__DeleteRangeRequest *e)
{
    keel__delete_range_request__init(k);
    k->key = e->key;
    k->range_end = e->range_end;
    k->prev_kv = e->prev_kv;
}

/* etcd's checkPutRequest. NULL: fine. */
static const char *check_put(const Etcdserverpb__PutRequest *p)
{
    if (p->key.len == 0)
        return GW_MSG_EMPTY_KEY;
    if (p->ignore_value && p->value.len != 0)
        return GW_MSG_VALUE_PROVIDED;
    if (p->ignore_lease && p->lease != 0)
        return GW_MSG_LEASE_PROVIDED;
    return NULL;
}

/* keel's limit on txn nesting (storage/validate.c); etcd has none, but it bounds the recursion
 * here and in the translation whatever a request holds. */
#define TXN_MAX_DEPTH 8

/* etcd's checkTxnRequest without the op count (keel counts, with etcd's limit and message). */
static const char *check_txn(const Etcdserverpb__TxnRequest *t, int depth)
{
    if (depth > TXN_MAX_DEPTH)
        return "keel-gateway: txn requests nested too deep (keel allows 8 levels)";
    for (size_t i = 0; i < t->n_compare; i++)
        if (t->compare[i]->key.len == 0)
            return GW_MSG_EMPTY_KEY;
    for (int branch = 0; branch < 2; branch++) {
        Etcdserverpb__RequestOp **ops = branch ? t->failure : t->success;
        size_t n = branch ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++) {
            const Etcdserverpb__RequestOp *op = ops[i];
            const char *bad = NULL;
            switch (op->request_case) {
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
                bad = op->request_range->key.len == 0 ? GW_MSG_EMPTY_KEY : NULL;
                break;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
                bad = check_put(op->request_put);
                break;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                bad = op->request_delete_range->key.len == 0 ? GW_MSG_EMPTY_KEY : NULL;
                break;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
                bad = check_txn(op->request_txn, depth + 1);
                break;
            default:
                bad = GW_MSG_KEY_NOT_FOUND; /* an empty op: etcd's answer */
                break;
            }
            if (bad)
                return bad;
        }
    }
    return NULL;
}

/*
 * etcd compares the oneof member matching the target and treats any other (or none: a member
 * set to 0 may be absent from JSON) as the zero value, so keel gets exactly the member its
 * target names.
 */
static void compare_to_keel(Keel__Compare *k, const Etcdserverpb__Compare *e)
{
    keel__compare__init(k);
    k->result = (Keel__Compare__CompareResult)e->result;
    k->target = (Keel__Compare__CompareTarget)e->target;
    k->key = e->key;
    k->range_end = e->range_end;
    switch (e->target) {
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION:
        k->target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
        if (e->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION)
            k->version = e->version;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE:
        k->target_union_case = KEEL__COMPARE__TARGET_UNION_CREATE_REVISION;
        if (e->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION)
            k->create_revision = e->create_revision;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD:
        k->target_union_case = KEEL__COMPARE__TARGET_UNION_MOD_REVISION;
        if (e->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION)
            k->mod_revision = e->mod_revision;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE:
        k->target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
        if (e->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE)
            k->value = e->value;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE:
        k->target_union_case = KEEL__COMPARE__TARGET_UNION_LEASE;
        if (e->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE)
            k->lease = e->lease;
        break;
    default:
        break; /* an unknown target: keel refuses it (InvalidArgument) */
    }
}

static Keel__TxnRequest *txn_to_keel(struct keel_arena *a, const Etcdserverpb__TxnRequest *e);

static Keel__RequestOp **ops_to_keel(struct keel_arena *a, Etcdserverpb__RequestOp *const *ops,
                                     size_t n)
{
    if (n == 0)
        return NULL;
    Keel__RequestOp **v = keel_arena_alloc(a, n * sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        Keel__RequestOp *k = keel_arena_alloc(a, sizeof(*k));
        if (!k)
            return NULL;
        keel__request_op__init(k);
        const Etcdserverpb__RequestOp *e = ops[i];
        switch (e->request_case) {
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
            if (!(k->request_range = keel_arena_alloc(a, sizeof(*k->request_range))))
                return NULL;
            range_to_keel(k->request_range, e->request_range);
            k->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
            if (!(k->request_put = keel_arena_alloc(a, sizeof(*k->request_put))))
                return NULL;
            put_to_keel(k->request_put, e->request_put);
            k->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
            if (!(k->request_delete_range = keel_arena_alloc(a, sizeof(*k->request_delete_range))))
                return NULL;
            delete_to_keel(k->request_delete_range, e->request_delete_range);
            k->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
            if (!(k->request_txn = txn_to_keel(a, e->request_txn)))
                return NULL;
            k->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
            break;
        default:
            break; /* refused by check_txn before we get here */
        }
        v[i] = k;
    }
    return v;
}

/* NULL: out of memory. */
static Keel__TxnRequest *txn_to_keel(struct keel_arena *a, const Etcdserverpb__TxnRequest *e)
{
    Keel__TxnRequest *k = keel_arena_alloc(a, sizeof(*k));
    if (!k)
        return NULL;
    keel__txn_request__init(k);
    if (e->n_compare) {
        if (!(k->compare = keel_arena_alloc(a, e->n_compare * sizeof(*k->compare))))
            return NULL;
        for (size_t i = 0; i < e->n_compare; i++) {
            if (!(k->compare[i] = keel_arena_alloc(a, sizeof(*k->compare[i]))))
                return NULL;
            compare_to_keel(k->compare[i], e->compare[i]);
        }
        k->n_compare = e->n_compare;
    }
    k->success = ops_to_keel(a, e->success, e->n_success);
    k->failure = ops_to_keel(a, e->failure, e->n_failure);
    if ((e->n_success && !k->success) || (e->n_failure && !k->failure))
        return NULL;
    k->n_success = e->n_success;
    k->n_failure = e->n_failure;
    return k;
}

/* ---- keel -> etcd ---- */

/*
 * The revisions etcd puts in the headers of a txn's nested responses (apply.go, mvcc's
 * storeTxnWrite): only a revision, the txn's read revision (base) until the txn's first change
 * and its new revision (rev) from then on, in execution order; a nested txn's own header is
 * empty. kube-apiserver reads the nested put and delete headers.
 */
struct txn_revs {
    int64_t base, rev;
    bool changed; /* a change has been applied so far, in execution order */
};

static Etcdserverpb__ResponseHeader *nested_header(struct keel_arena *a, const struct txn_revs *r)
{
    Etcdserverpb__ResponseHeader *h = gw_header(a, NULL);
    if (h && r)
        h->revision = r->changed ? r->rev : r->base;
    return h;
}

/* Whether the txn's executed ops changed anything (a put, or a delete that deleted). */
static bool txn_changes(const Keel__TxnResponse *k)
{
    for (size_t i = 0; k && i < k->n_responses; i++) {
        const Keel__ResponseOp *o = k->responses[i];
        if ((o->response_case == KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT) ||
            (o->response_case == KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE &&
             o->response_delete_range && o->response_delete_range->deleted > 0) ||
            (o->response_case == KEEL__RESPONSE_OP__RESPONSE_RESPONSE_TXN &&
             txn_changes(o->response_txn)))
            return true;
    }
    return false;
}

static Etcdserverpb__RangeResponse *
range_to_etcd(struct keel_arena *a, const Keel__RangeResponse *k, Etcdserverpb__ResponseHeader *h)
{
    Etcdserverpb__RangeResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e || !h)
        return NULL;
    etcdserverpb__range_response__init(e);
    e->header = h;
    if (k) {
        e->kvs = gw_kvs(a, k->kvs, k->n_kvs);
        if (k->n_kvs && !e->kvs)
            return NULL;
        e->n_kvs = k->n_kvs;
        e->more = k->more;
        e->count = k->count;
    }
    return e;
}

static Etcdserverpb__PutResponse *put_to_etcd(struct keel_arena *a, const Keel__PutResponse *k,
                                              Etcdserverpb__ResponseHeader *h)
{
    Etcdserverpb__PutResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e || !h)
        return NULL;
    etcdserverpb__put_response__init(e);
    e->header = h;
    if (k && k->prev_kv && !(e->prev_kv = gw_kv(a, k->prev_kv)))
        return NULL;
    return e;
}

static Etcdserverpb__DeleteRangeResponse *delete_to_etcd(struct keel_arena *a,
                                                         const Keel__DeleteRangeResponse *k,
                                                         Etcdserverpb__ResponseHeader *h)
{
    Etcdserverpb__DeleteRangeResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e || !h)
        return NULL;
    etcdserverpb__delete_range_response__init(e);
    e->header = h;
    if (k) {
        e->deleted = k->deleted;
        e->prev_kvs = gw_kvs(a, k->prev_kvs, k->n_prev_kvs);
        if (k->n_prev_kvs && !e->prev_kvs)
            return NULL;
        e->n_prev_kvs = k->n_prev_kvs;
    }
    return e;
}

/* revs: where the outer txn's execution stands (see struct txn_revs). */
static Etcdserverpb__TxnResponse *txn_to_etcd(struct keel_arena *a, const Keel__TxnResponse *k,
                                              Etcdserverpb__ResponseHeader *h,
                                              struct txn_revs *revs)
{
    Etcdserverpb__TxnResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e || !h)
        return NULL;
    etcdserverpb__txn_response__init(e);
    e->header = h;
    if (!k || k->n_responses == 0) {
        e->succeeded = k && k->succeeded;
        return e;
    }
    e->succeeded = k->succeeded;
    if (!(e->responses = keel_arena_alloc(a, k->n_responses * sizeof(*e->responses))))
        return NULL;
    for (size_t i = 0; i < k->n_responses; i++) {
        const Keel__ResponseOp *ko = k->responses[i];
        Etcdserverpb__ResponseOp *eo = keel_arena_alloc(a, sizeof(*eo));
        if (!eo)
            return NULL;
        etcdserverpb__response_op__init(eo);
        void *body = NULL;
        switch (ko->response_case) {
        case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
            body = eo->response_range =
                range_to_etcd(a, ko->response_range, nested_header(a, revs));
            eo->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
            break;
        case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
            revs->changed = true;
            body = eo->response_put = put_to_etcd(a, ko->response_put, nested_header(a, revs));
            eo->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
            break;
        case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
            if (ko->response_delete_range && ko->response_delete_range->deleted > 0)
                revs->changed = true;
            body = eo->response_delete_range =
                delete_to_etcd(a, ko->response_delete_range, nested_header(a, revs));
            eo->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
            break;
        case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
            body = eo->response_txn =
                txn_to_etcd(a, ko->response_txn, nested_header(a, NULL), revs);
            eo->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
            break;
        default:
            body = eo; /* an empty op: etcd's is an empty union too */
            break;
        }
        if (!body)
            return NULL;
        e->responses[i] = eo;
    }
    e->n_responses = k->n_responses;
    return e;
}

/* ---- translators ---- */

static ProtobufCMessage *range_reply(const struct gw_call *c, const Keel__Response *resp,
                                     int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    return (ProtobufCMessage *)range_to_etcd(a, resp->range, gw_unary_header(a, resp));
}

static ProtobufCMessage *put_reply(const struct gw_call *c, const Keel__Response *resp, int64_t arg,
                                   struct keel_arena *a)
{
    (void)c;
    (void)arg;
    return (ProtobufCMessage *)put_to_etcd(a, resp->put, gw_unary_header(a, resp));
}

static ProtobufCMessage *delete_reply(const struct gw_call *c, const Keel__Response *resp,
                                      int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    return (ProtobufCMessage *)delete_to_etcd(a, resp->delete_range, gw_unary_header(a, resp));
}

static ProtobufCMessage *txn_reply(const struct gw_call *c, const Keel__Response *resp, int64_t arg,
                                   struct keel_arena *a)
{
    (void)c;
    (void)arg;
    /* keel's header has the txn's revision: its new one when it changed anything. */
    struct txn_revs revs = {.rev = resp->header ? resp->header->revision : 0};
    revs.base = txn_changes(resp->txn) ? revs.rev - 1 : revs.rev;
    return (ProtobufCMessage *)txn_to_etcd(a, resp->txn, gw_unary_header(a, resp), &revs);
}

static ProtobufCMessage *compact_reply(const struct gw_call *c, const Keel__Response *resp,
                                       int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    Etcdserverpb__CompactionResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__compaction_response__init(e);
    e->header = gw_unary_header(a, resp);
    return e->header ? &e->base : NULL;
}

static const struct gw_unary_ops range_ops = {range_reply, NULL};
static const struct gw_unary_ops put_ops = {put_reply, NULL};
static const struct gw_unary_ops delete_ops = {delete_reply, NULL};
static const struct gw_unary_ops txn_ops = {txn_reply, NULL};
static const struct gw_unary_ops compact_ops = {compact_reply, NULL};

/* ---- handlers ---- */

static void on_range(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__RangeRequest *e = (const Etcdserverpb__RangeRequest *)msg;
    if (e->key.len == 0) {
        gw_unary_fail(c, msg, GW_INVALID_ARGUMENT, GW_MSG_EMPTY_KEY);
        return;
    }
    Keel__RangeRequest k;
    range_to_keel(&k, e);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &k;
    gw_unary_send(c, &req, &range_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_put(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__PutRequest *e = (const Etcdserverpb__PutRequest *)msg;
    const char *bad = check_put(e);
    if (bad) {
        gw_unary_fail(c, msg, GW_INVALID_ARGUMENT, bad);
        return;
    }
    Keel__PutRequest k;
    put_to_keel(&k, e);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &k;
    gw_unary_send(c, &req, &put_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_delete(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__DeleteRangeRequest *e = (const Etcdserverpb__DeleteRangeRequest *)msg;
    if (e->key.len == 0) {
        gw_unary_fail(c, msg, GW_INVALID_ARGUMENT, GW_MSG_EMPTY_KEY);
        return;
    }
    Keel__DeleteRangeRequest k;
    delete_to_keel(&k, e);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_DELETE_RANGE;
    req.delete_range = &k;
    gw_unary_send(c, &req, &delete_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_txn(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__TxnRequest *e = (const Etcdserverpb__TxnRequest *)msg;
    const char *bad = check_txn(e, 0);
    if (bad) {
        gw_unary_fail(c, msg, GW_INVALID_ARGUMENT, bad);
        return;
    }
    /* The translated tree lives in an arena until it is packed (a few pointers per op). */
    struct keel_arena a;
    keel_arena_init(&a, 0);
    Keel__TxnRequest *k = txn_to_keel(&a, e);
    if (!k) {
        keel_arena_close(&a);
        gw_unary_fail(c, msg, GW_INTERNAL, GW_MSG_NO_MEMORY);
        return;
    }
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_TXN;
    req.txn = k;
    gw_unary_send(c, &req, &txn_ops, 0);
    keel_arena_close(&a);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_compact(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__CompactionRequest *e = (const Etcdserverpb__CompactionRequest *)msg;
    Keel__CompactionRequest k = KEEL__COMPACTION_REQUEST__INIT;
    k.revision = e->revision;
    k.physical = e->physical; /* keel always answers once the compaction is applied */
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_COMPACTION;
    req.compaction = &k;
    gw_unary_send(c, &req, &compact_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

#define KV(name, json, type, handler)                                                              \
    {                                                                                              \
        "/etcdserverpb.KV/" name, json, &etcdserverpb__##type##_request__descriptor,               \
            &etcdserverpb__##type##_response__descriptor, GW_UNARY, handler, NULL,                 \
            gw_unary_on_cancel                                                                     \
    }

static const struct gw_method kv_methods[] = {
    KV("Range", "kv/range", range, on_range),
    KV("Put", "kv/put", put, on_put),
    KV("DeleteRange", "kv/deleterange", delete_range, on_delete),
    KV("Txn", "kv/txn", txn, on_txn),
    KV("Compact", "kv/compaction", compaction, on_compact),
};

const struct gw_method_table gw_kv_table = {kv_methods, sizeof(kv_methods) / sizeof(kv_methods[0])};
