/* Checks of a write before it is proposed and again when it is applied. */
#include <stdlib.h>
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
    int err = ks_krange_make(key, end, &kr, v->msg);
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

/*
 * etcd's rule for the writes of one txn (checkIntervals in etcd's v3rpc): within a branch,
 * nested branches included, no key is put twice and no put falls inside a deleted range (the
 * two branches of a nested txn may put the same key: only one of them runs). It makes the order
 * of writes inside a txn irrelevant, which is what lets the store check everything before it
 * writes anything.
 */
struct ival {
    const uint8_t *s;
    size_t sl;
    const uint8_t *e; /* NULL: no end */
    size_t el;
    bool point;
};

struct ivec {
    struct ival *v;
    size_t n, cap;
};

static int ivec_push(struct ivec *iv, struct ival x)
{
    if (iv->n == iv->cap) {
        size_t cap = iv->cap ? iv->cap * 2 : 16;
        struct ival *nv = realloc(iv->v, cap * sizeof(*nv));
        if (nv == NULL)
            return KEEL_ENOMEM;
        iv->v = nv;
        iv->cap = cap;
    }
    iv->v[iv->n++] = x;
    return 0;
}

static int bcmp3(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (al < bl ? -1 : al > bl);
}

static bool ival_has(const struct ival *d, const uint8_t *k, size_t kl)
{
    if (d->point)
        return bcmp3(d->s, d->sl, k, kl) == 0;
    return bcmp3(k, kl, d->s, d->sl) >= 0 && (d->e == NULL || bcmp3(k, kl, d->e, d->el) < 0);
}

static bool in_dels(const struct ivec *dels, const struct ival *p)
{
    for (size_t i = 0; i < dels->n; i++)
        if (ival_has(&dels->v[i], p->s, p->sl))
            return true;
    return false;
}

static bool in_puts(const struct ivec *puts, const struct ival *p)
{
    for (size_t i = 0; i < puts->n; i++)
        if (bcmp3(puts->v[i].s, puts->v[i].sl, p->s, p->sl) == 0)
            return true;
    return false;
}

static int intervals(struct vctx *v, Keel__RequestOp **ops, size_t n, struct ivec *puts,
                     struct ivec *dels)
{
    int err = 0;
    for (size_t i = 0; i < n && err == 0; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE)
            continue;
        const Keel__DeleteRangeRequest *d = ops[i]->request_delete_range;
        struct ival x = {d->key.data, d->key.len, NULL, 0, d->range_end.len == 0};
        if (d->range_end.len > 0 && !(d->range_end.len == 1 && d->range_end.data[0] == 0)) {
            x.e = d->range_end.data;
            x.el = d->range_end.len;
        }
        err = ivec_push(dels, x);
    }
    for (size_t i = 0; i < n && err == 0; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_TXN)
            continue;
        const Keel__TxnRequest *t = ops[i]->request_txn;
        struct ivec pt = {0}, dt = {0}, pe = {0}, de = {0};
        err = intervals(v, t->success, t->n_success, &pt, &dt);
        if (err == 0)
            err = intervals(v, t->failure, t->n_failure, &pe, &de);
        for (size_t j = 0; err == 0 && j < pt.n; j++) {
            if (in_puts(puts, &pt.v[j]) || in_dels(dels, &pt.v[j]))
                err = KEEL_EDUPKEY;
            else
                err = ivec_push(puts, pt.v[j]);
        }
        for (size_t j = 0; err == 0 && j < pe.n; j++) {
            bool then_put = in_puts(&pt, &pe.v[j]);
            if ((in_puts(puts, &pe.v[j]) && !then_put) || in_dels(dels, &pe.v[j]))
                err = KEEL_EDUPKEY;
            else if (!then_put)
                err = ivec_push(puts, pe.v[j]);
        }
        for (size_t j = 0; err == 0 && j < dt.n; j++)
            err = ivec_push(dels, dt.v[j]);
        for (size_t j = 0; err == 0 && j < de.n; j++)
            err = ivec_push(dels, de.v[j]);
        free(pt.v);
        free(dt.v);
        free(pe.v);
        free(de.v);
    }
    for (size_t i = 0; i < n && err == 0; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_PUT)
            continue;
        const Keel__PutRequest *p = ops[i]->request_put;
        struct ival x = {p->key.data, p->key.len, NULL, 0, true};
        if (in_puts(puts, &x) || in_dels(dels, &x))
            err = KEEL_EDUPKEY;
        else
            err = ivec_push(puts, x);
    }
    if (err == KEEL_EDUPKEY)
        *v->msg = "duplicate key given in txn request";
    return err;
}

static int check_branch_writes(struct vctx *v, Keel__RequestOp **ops, size_t n)
{
    struct ivec puts = {0}, dels = {0};
    int err = intervals(v, ops, n, &puts, &dels);
    free(puts.v);
    free(dels.v);
    return err;
}

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
    /* The overlap rule is checked once, from the top: it covers the nested levels itself. */
    if (err == 0 && depth == 0)
        err = check_branch_writes(v, t->success, t->n_success);
    if (err == 0 && depth == 0)
        err = check_branch_writes(v, t->failure, t->n_failure);
    return err;
}

int ks_validate_command(const Keel__Command *cmd, const struct keel_limits *limits,
                        const char **msg)
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
    case KEEL__COMMAND__OP_QUOTA:
        if (cmd->quota->bytes == 0)
            return fail(&v, KEEL_EINVAL, "quota of 0 bytes");
        return 0;
    default:
        return fail(&v, KEEL_EINVAL, "command carries no operation");
    }
}

int keel_store_validate(const Keel__Command *cmd, const struct keel_limits *limits,
                        const char **msg)
{
    struct keel_limits none = {0};
    return ks_validate_command(cmd, limits ? limits : &none, msg);
}
