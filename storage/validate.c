/* Checks of a write before it is proposed and again when it is applied. */
#include <string.h>

#include "internal.h"

#define MAX_TXN_DEPTH 8

struct vctx {
    const struct keel_limits *limits;
    const char **msg;
};

static int fail(struct vctx *v, int err, const char *msg)
{
    *v->msg = msg;
    return err;
}

static int check_key(struct vctx *v, const ProtobufCBinaryData *key)
{
    if (key->len == 0)
        return fail(v, KEEL_EINVAL, "key is not provided");
    if (key->len > KEEL_MAX_KEY_BYTES)
        return fail(v, KEEL_EKEYTOOLONG, "key is longer than 511 bytes");
    return 0;
}

static int check_range(struct vctx *v, const ProtobufCBinaryData *key,
                       const ProtobufCBinaryData *end)
{
    struct krange kr;
    int err = krange_make(&kr, key, end, v->msg);
    if (err == 0 && end->len > KEEL_MAX_KEY_BYTES)
        return fail(v, KEEL_EKEYTOOLONG, "range_end is longer than 511 bytes");
    return err;
}

static int check_put(struct vctx *v, const Keel__PutRequest *p)
{
    int err = check_key(v, &p->key);
    if (err != 0)
        return err;
    if (p->ignore_value && p->value.len > 0)
        return fail(v, KEEL_EINVAL, "value is provided with ignore_value");
    if (p->ignore_lease && p->lease != 0)
        return fail(v, KEEL_EINVAL, "lease is provided with ignore_lease");
    if (p->lease < 0)
        return fail(v, KEEL_EINVAL, "lease id is negative");
    if (v->limits->max_value_bytes && p->value.len > v->limits->max_value_bytes)
        return fail(v, KEEL_ETOOLARGE, "value is larger than the limit");
    return 0;
}

static int check_txn(struct vctx *v, const Keel__TxnRequest *t, int depth);

static int check_ops(struct vctx *v, Keel__RequestOp **ops, size_t n, int depth)
{
    size_t max = v->limits->max_txn_ops ? v->limits->max_txn_ops : 128;
    if (n > max)
        return fail(v, KEEL_ETOOMANYOPS, "too many operations in txn request");
    for (size_t i = 0; i < n; i++) {
        const Keel__RequestOp *op = ops[i];
        int err;
        switch (op->request_case) {
        case KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE:
            err = check_range(v, &op->request_range->key, &op->request_range->range_end);
            break;
        case KEEL__REQUEST_OP__REQUEST_REQUEST_PUT:
            err = check_put(v, op->request_put);
            /* etcd's rule: one key is written at most once per branch. */
            for (size_t j = 0; err == 0 && j < i; j++) {
                const Keel__RequestOp *o = ops[j];
                if (o->request_case == KEEL__REQUEST_OP__REQUEST_REQUEST_PUT &&
                    o->request_put->key.len == op->request_put->key.len &&
                    memcmp(o->request_put->key.data, op->request_put->key.data,
                           op->request_put->key.len) == 0)
                    err = fail(v, KEEL_EDUPKEY, "duplicate key given in txn request");
            }
            break;
        case KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
            err = check_range(v, &op->request_delete_range->key,
                              &op->request_delete_range->range_end);
            break;
        case KEEL__REQUEST_OP__REQUEST_REQUEST_TXN:
            err = check_txn(v, op->request_txn, depth + 1);
            break;
        default:
            err = fail(v, KEEL_EINVAL, "txn operation has no request");
        }
        if (err != 0)
            return err;
    }
    return 0;
}

static int check_txn(struct vctx *v, const Keel__TxnRequest *t, int depth)
{
    if (depth > MAX_TXN_DEPTH)
        return fail(v, KEEL_EINVAL, "txn requests nested too deep");
    size_t max = v->limits->max_txn_ops ? v->limits->max_txn_ops : 128;
    if (t->n_compare > max)
        return fail(v, KEEL_ETOOMANYOPS, "too many compares in txn request");
    for (size_t i = 0; i < t->n_compare; i++) {
        int err = check_range(v, &t->compare[i]->key, &t->compare[i]->range_end);
        if (err != 0)
            return err;
        if ((int)t->compare[i]->target > KEEL__COMPARE__COMPARE_TARGET__LEASE ||
            (int)t->compare[i]->result > KEEL__COMPARE__COMPARE_RESULT__NOT_EQUAL)
            return fail(v, KEEL_EINVAL, "unknown compare target or result");
    }
    int err = check_ops(v, t->success, t->n_success, depth);
    if (err == 0)
        err = check_ops(v, t->failure, t->n_failure, depth);
    return err;
}

int validate_command(const Keel__Command *cmd, const struct keel_limits *limits, const char **msg)
{
    struct vctx v = {limits, msg};
    switch (cmd->op_case) {
    case KEEL__COMMAND__OP_PUT:
        return check_put(&v, cmd->put);
    case KEEL__COMMAND__OP_DELETE_RANGE:
        return check_range(&v, &cmd->delete_range->key, &cmd->delete_range->range_end);
    case KEEL__COMMAND__OP_TXN:
        return check_txn(&v, cmd->txn, 0);
    case KEEL__COMMAND__OP_COMPACTION:
        if (cmd->compaction->revision <= 0)
            return fail(&v, KEEL_EINVAL, "compaction revision must be positive");
        return 0;
    case KEEL__COMMAND__OP_LEASE_GRANT:
        if (cmd->lease_grant->ttl <= 0)
            return fail(&v, KEEL_EINVAL, "lease TTL must be positive");
        if (cmd->lease_grant->id < 0)
            return fail(&v, KEEL_EINVAL, "lease id is negative");
        return 0;
    case KEEL__COMMAND__OP_LEASE_REVOKE:
        if (cmd->lease_revoke->id <= 0)
            return fail(&v, KEEL_ELEASENOTFOUND, "lease id must be positive");
        return 0;
    case KEEL__COMMAND__OP_MEMBER_ADD:
    case KEEL__COMMAND__OP_MEMBER_REMOVE:
        return 0;
    case KEEL__COMMAND__OP_MEMBER_ATTRS:
        if (cmd->member_attrs->id == 0)
            return fail(&v, KEEL_EINVAL, "member id is 0");
        return 0;
    default:
        return fail(&v, KEEL_EINVAL, "command carries no operation");
    }
}

int keel_store_validate(const Keel__Command *cmd, const struct keel_limits *limits,
                        const char **msg)
{
    struct keel_limits none = {0};
    return validate_command(cmd, limits ? limits : &none, msg);
}
