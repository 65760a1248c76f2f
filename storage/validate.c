/* Checks of a write before it is proposed and again when it is applied. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_TXN_DEPTH       8
#define DEFAULT_MAX_TXN_OPS 128
/* Without a configured total, a txn may hold as much as this many full levels. */
#define DEFAULT_TOTAL_LEVELS 8

struct vctx {
    const struct keel_limits *limits;
    const char **msg;
};

/* Messages that name numbers: the caller reads *msg before it validates again on this thread. */
static _Thread_local char msg_buf[160];

static size_t max_txn_ops(const struct keel_limits *l)
{
    return l->max_txn_ops ? l->max_txn_ops : DEFAULT_MAX_TXN_OPS;
}

static size_t max_txn_total_ops(const struct keel_limits *l)
{
    if (l->max_txn_total_ops)
        return l->max_txn_total_ops;
    size_t per = max_txn_ops(l);
    return per > SIZE_MAX / DEFAULT_TOTAL_LEVELS ? SIZE_MAX : per * DEFAULT_TOTAL_LEVELS;
}

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
    if (v->limits->max_value_bytes && p->value.len > v->limits->max_value_bytes) {
        snprintf(msg_buf, sizeof(msg_buf), "value of %zu bytes is over the limit of %zu bytes",
                 p->value.len, v->limits->max_value_bytes);
        return fail(v, KEEL_ETOOLARGE, msg_buf);
    }
    return 0;
}

static int check_txn(struct vctx *v, const Keel__TxnRequest *t, int depth);

/*
 * etcd's rule for the writes of one txn (checkIntervals in etcd's v3rpc): within a branch,
 * nested branches included, no key is put twice and no put falls inside a deleted range (the
 * two branches of a nested txn may put the same key: only one of them runs). It makes the order
 * of writes inside a txn irrelevant, which is what lets the store check everything before it
 * writes anything.
 *
 * etcd's own walk, which keel's was, tests every put against every put and every delete seen so
 * far: a request of 1.5 MiB could hold the loop for seconds, and then every replica's apply. So
 * each level sorts what it and its nested levels write and sweeps it once: O(n log n) per level,
 * at most 9 levels deep.
 *
 * The verdicts stay etcd's to the letter, quirk included: a nested txn's puts are checked
 * against the deletes of its level and of the nested txns before it, not of those after it,
 * while the level's own puts are checked against every delete. Each delete carries the position
 * (`time`) of the nested txn it came through, each put the first position whose deletes it must
 * not meet (`bound`); a put conflicts with the deletes covering it that are older than its bound.
 */
struct wput {
    const uint8_t *k;
    size_t kl;
    uint32_t src;   /* the write of this level it came through: a put, or one nested txn */
    uint32_t bound; /* deletes with time < bound must not cover it */
};

struct wdel {
    const uint8_t *s, *e; /* e NULL: no end (a point when `point`) */
    size_t sl, el;
    bool point;
    uint32_t time; /* 0: this level's own; i: through the level's i-th nested txn */
};

/* The writes of the level being checked, its nested levels' on top of its own, and the sweep's
 * heap; one set serves a whole txn. */
struct wset {
    struct wput *p;
    size_t np, capp;
    struct wdel *d;
    size_t nd, capd;
    size_t *heap; /* indexes into the level's deletes, least time on top */
    size_t nh, caph;
};

static int grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap : 16;
    while (cap2 < need)
        cap2 *= 2;
    if (cap2 > SIZE_MAX / size)
        return KEEL_ENOMEM;
    void *nv = realloc(*v, cap2 * size);
    if (nv == NULL)
        return KEEL_ENOMEM;
    *v = nv;
    *cap = cap2;
    return 0;
}

static int bcmp3(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (al < bl ? -1 : al > bl);
}

static int cmp_put(const void *a, const void *b)
{
    const struct wput *x = a, *y = b;
    return bcmp3(x->k, x->kl, y->k, y->kl);
}

static int cmp_del(const void *a, const void *b)
{
    const struct wdel *x = a, *y = b;
    return bcmp3(x->s, x->sl, y->s, y->sl);
}

/* Whether a delete that starts at or before k covers no key from k on: keys only grow in the
 * sweep, so such a delete can be dropped for good. */
static bool del_behind(const struct wdel *d, const uint8_t *k, size_t kl)
{
    if (d->point)
        return bcmp3(k, kl, d->s, d->sl) != 0;
    return d->e != NULL && bcmp3(k, kl, d->e, d->el) >= 0;
}

static bool heap_less(const struct wset *w, const struct wdel *d, size_t i, size_t j)
{
    return d[w->heap[i]].time < d[w->heap[j]].time;
}

static void heap_swap(struct wset *w, size_t i, size_t j)
{
    size_t t = w->heap[i];
    w->heap[i] = w->heap[j];
    w->heap[j] = t;
}

static void heap_push(struct wset *w, const struct wdel *d, size_t x)
{
    size_t i = w->nh++;
    w->heap[i] = x;
    while (i > 0 && heap_less(w, d, i, (i - 1) / 2)) {
        heap_swap(w, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_pop(struct wset *w, const struct wdel *d)
{
    w->heap[0] = w->heap[--w->nh];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->nh && heap_less(w, d, l, m))
            m = l;
        if (r < w->nh && heap_less(w, d, r, m))
            m = r;
        if (m == i)
            return;
        heap_swap(w, i, m);
        i = m;
    }
}

/*
 * Checks the writes of one level, found at p0 and d0 onwards, and leaves there what the level
 * passes up: its puts once each (its deletes as they are).
 */
static int check_level(struct wset *w, size_t p0, size_t d0)
{
    size_t np = w->np - p0, nd = w->nd - d0, u = 0;
    /* Nothing put, nothing to check (and w->p may not exist yet: no offset from NULL). */
    if (np == 0)
        return 0;
    struct wput *p = w->p + p0;
    if (np > 1)
        qsort(p, np, sizeof(*p), cmp_put);
    /* A key put through two different writes of this level is put twice. Through one nested
     * txn it may come twice, from its two branches, with one bound. */
    for (size_t i = 0; i < np; i++) {
        if (u > 0 && cmp_put(&p[i], &p[u - 1]) == 0) {
            if (p[i].src != p[u - 1].src)
                return KEEL_EDUPKEY;
            continue;
        }
        p[u++] = p[i];
    }
    w->np = p0 + u;
    if (nd == 0)
        return 0;
    struct wdel *d = w->d + d0;
    int err = grow((void **)&w->heap, &w->caph, nd, sizeof(*w->heap));
    if (err != 0)
        return err;
    qsort(d, nd, sizeof(*d), cmp_del);
    /* Puts in key order; the heap holds the deletes begun at or before the put's key, the
     * oldest on top once those behind it are dropped. */
    w->nh = 0;
    for (size_t i = 0, j = 0; i < u; i++) {
        while (j < nd && bcmp3(d[j].s, d[j].sl, p[i].k, p[i].kl) <= 0)
            heap_push(w, d, j++);
        while (w->nh > 0 && del_behind(&d[w->heap[0]], p[i].k, p[i].kl))
            heap_pop(w, d);
        if (w->nh > 0 && d[w->heap[0]].time < p[i].bound)
            return KEEL_EDUPKEY;
    }
    return 0;
}

static int level_writes(struct wset *w, Keel__RequestOp **ops, size_t n)
{
    size_t p0 = w->np, d0 = w->nd;
    uint32_t src = 0, nth = 0;
    int err;
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE)
            continue;
        const Keel__DeleteRangeRequest *dr = ops[i]->request_delete_range;
        if ((err = grow((void **)&w->d, &w->capd, w->nd + 1, sizeof(*w->d))) != 0)
            return err;
        struct wdel x = {dr->key.data, NULL, dr->key.len, 0, dr->range_end.len == 0, 0};
        if (dr->range_end.len > 0 && !(dr->range_end.len == 1 && dr->range_end.data[0] == 0)) {
            x.e = dr->range_end.data;
            x.el = dr->range_end.len;
        }
        w->d[w->nd++] = x;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_TXN)
            continue;
        const Keel__TxnRequest *t = ops[i]->request_txn;
        size_t pi = w->np, di = w->nd;
        if ((err = level_writes(w, t->success, t->n_success)) != 0 ||
            (err = level_writes(w, t->failure, t->n_failure)) != 0)
            return err;
        nth++;
        for (size_t j = pi; j < w->np; j++) {
            w->p[j].src = src;
            w->p[j].bound = nth;
        }
        for (size_t j = di; j < w->nd; j++)
            w->d[j].time = nth;
        src++;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_PUT)
            continue;
        const Keel__PutRequest *p = ops[i]->request_put;
        if ((err = grow((void **)&w->p, &w->capp, w->np + 1, sizeof(*w->p))) != 0)
            return err;
        w->p[w->np++] = (struct wput){p->key.data, p->key.len, src++, UINT32_MAX};
    }
    return check_level(w, p0, d0);
}

static int check_branch_writes(struct vctx *v, struct wset *w, Keel__RequestOp **ops, size_t n)
{
    w->np = w->nd = 0;
    int err = level_writes(w, ops, n);
    if (err == KEEL_EDUPKEY)
        *v->msg = "duplicate key given in txn request";
    return err;
}

static int check_ops(struct vctx *v, Keel__RequestOp **ops, size_t n, int depth)
{
    size_t max = max_txn_ops(v->limits);
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
    size_t max = max_txn_ops(v->limits);
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

/* Compares and operations of every level, nested txns counted as operations too. */
static int count_ops(struct vctx *v, const Keel__TxnRequest *t, int depth, size_t *total)
{
    if (depth > MAX_TXN_DEPTH)
        return fail(v, KEEL_EINVAL, "txn requests nested too deep");
    *total += t->n_compare + t->n_success + t->n_failure;
    for (int b = 0; b < 2; b++) {
        Keel__RequestOp **ops = b ? t->failure : t->success;
        size_t n = b ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_TXN)
                continue;
            int err = count_ops(v, ops[i]->request_txn, depth + 1, total);
            if (err != 0)
                return err;
        }
    }
    return 0;
}

/*
 * The per-level limit is etcd's; alone it lets nesting multiply a txn up to what the request
 * size allows (hundreds of thousands of operations in 1.5 MiB), and every replica's apply pays
 * for them. The total is counted first, and cheaply, so such a txn costs no more than that.
 */
static int check_top_txn(struct vctx *v, const Keel__TxnRequest *t)
{
    size_t total = 0, max = max_txn_total_ops(v->limits);
    int err = count_ops(v, t, 0, &total);
    if (err != 0)
        return err;
    if (total > max) {
        snprintf(msg_buf, sizeof(msg_buf),
                 "txn has %zu operations and compares across its nested txns, more than the "
                 "limit of %zu",
                 total, max);
        return fail(v, KEEL_ETOOMANYOPS, msg_buf);
    }
    if ((err = check_txn(v, t, 0)) != 0)
        return err;
    /* The overlap rule is checked once, from the top: it covers the nested levels itself. */
    struct wset w = {0};
    err = check_branch_writes(v, &w, t->success, t->n_success);
    if (err == 0)
        err = check_branch_writes(v, &w, t->failure, t->n_failure);
    free(w.p);
    free(w.d);
    free(w.heap);
    return err;
}

/* A user or role name: present, bounded, and not what a table key could confuse. */
static int check_name(struct vctx *v, const char *name, const char *what)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0) {
        snprintf(msg_buf, sizeof(msg_buf), "etcdserver: %s name is empty", what);
        return fail(v, KEEL_EINVAL, msg_buf);
    }
    if (n > KEEL_AUTH_MAX_NAME) {
        snprintf(msg_buf, sizeof(msg_buf), "%s name is longer than %d bytes", what,
                 KEEL_AUTH_MAX_NAME);
        return fail(v, KEEL_EINVAL, msg_buf);
    }
    return 0;
}

/* Only a hash goes into the log: a command still carrying the password is refused. */
static int check_hashed(struct vctx *v, const char *password, const char *hashed)
{
    if (password != NULL && password[0] != '\0')
        return fail(v, KEEL_EINVAL, "a password must not enter the log: hash it at intake");
    if (hashed == NULL || hashed[0] == '\0')
        return fail(v, KEEL_EINVAL, "user has no hashed password");
    /* Auth writes are not held to the quota: each user's size is bounded instead. */
    if (strlen(hashed) > KEEL_AUTH_MAX_HASH)
        return fail(v, KEEL_EINVAL, "hashed password is longer than 127 bytes");
    return 0;
}

static int check_perm(struct vctx *v, const Keel__Permission *p)
{
    if (p == NULL)
        return fail(v, KEEL_EINVAL, "permission is not provided");
    if (p->permtype != KEEL__PERMISSION__TYPE__READ &&
        p->permtype != KEEL__PERMISSION__TYPE__WRITE &&
        p->permtype != KEEL__PERMISSION__TYPE__READWRITE)
        return fail(v, KEEL_EINVAL, "permission type is not READ, WRITE or READWRITE");
    int err = check_key(v, &p->key);
    if (err == 0)
        err = check_range(v, &p->key, &p->range_end);
    return err;
}

static int check_auth(struct vctx *v, const Keel__Command *cmd)
{
    int err;
    switch (cmd->op_case) {
    case KEEL__COMMAND__OP_AUTH_ENABLE:
    case KEEL__COMMAND__OP_AUTH_DISABLE:
        return 0;
    case KEEL__COMMAND__OP_USER_ADD:
        if ((err = check_name(v, cmd->user_add->name, "user")) != 0)
            return err;
        return check_hashed(v, cmd->user_add->password, cmd->user_add->hashed_password);
    case KEEL__COMMAND__OP_USER_DELETE:
        return check_name(v, cmd->user_delete->name, "user");
    case KEEL__COMMAND__OP_USER_CHANGE_PASSWORD:
        if ((err = check_name(v, cmd->user_change_password->name, "user")) != 0)
            return err;
        return check_hashed(v, cmd->user_change_password->password,
                            cmd->user_change_password->hashed_password);
    case KEEL__COMMAND__OP_USER_GRANT_ROLE:
        if ((err = check_name(v, cmd->user_grant_role->user, "user")) != 0)
            return err;
        return check_name(v, cmd->user_grant_role->role, "role");
    case KEEL__COMMAND__OP_USER_REVOKE_ROLE:
        if ((err = check_name(v, cmd->user_revoke_role->name, "user")) != 0)
            return err;
        return check_name(v, cmd->user_revoke_role->role, "role");
    case KEEL__COMMAND__OP_ROLE_ADD:
        return check_name(v, cmd->role_add->name, "role");
    case KEEL__COMMAND__OP_ROLE_DELETE:
        return check_name(v, cmd->role_delete->role, "role");
    case KEEL__COMMAND__OP_ROLE_GRANT_PERMISSION:
        if ((err = check_name(v, cmd->role_grant_permission->name, "role")) != 0)
            return err;
        return check_perm(v, cmd->role_grant_permission->perm);
    case KEEL__COMMAND__OP_ROLE_REVOKE_PERMISSION:
        if ((err = check_name(v, cmd->role_revoke_permission->role, "role")) != 0)
            return err;
        if ((err = check_key(v, &cmd->role_revoke_permission->key)) != 0)
            return err;
        return check_range(v, &cmd->role_revoke_permission->key,
                           &cmd->role_revoke_permission->range_end);
    default:
        return fail(v, KEEL_EINVAL, "command carries no operation");
    }
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
        return check_top_txn(&v, cmd->txn);
    case KEEL__COMMAND__OP_COMPACTION:
        if (cmd->compaction->revision <= 0)
            return fail(&v, KEEL_EINVAL, "compaction revision must be positive");
        return 0;
    case KEEL__COMMAND__OP_LEASE_GRANT:
        if (cmd->lease_grant->ttl <= 0)
            return fail(&v, KEEL_EINVAL, "lease TTL must be positive");
        if (cmd->lease_grant->ttl > KEEL_LEASE_MAX_TTL)
            return fail(&v, KEEL_EINVAL, "lease TTL is over 9000000000 seconds");
        if (cmd->lease_grant->id < 0)
            return fail(&v, KEEL_EINVAL, "lease id is negative");
        return 0;
    case KEEL__COMMAND__OP_LEASE_REVOKE:
        if (cmd->lease_revoke->id <= 0)
            return fail(&v, KEEL_ELEASENOTFOUND, "lease id must be positive");
        return 0;
    case KEEL__COMMAND__OP_LEASE_CHECKPOINT:
        for (size_t i = 0; i < cmd->lease_checkpoint->n_checkpoints; i++) {
            const Keel__LeaseCheckpoint *cp = cmd->lease_checkpoint->checkpoints[i];
            if (cp->id <= 0 || cp->remaining_ms < 0)
                return fail(&v, KEEL_EINVAL, "lease checkpoint with a bad id or a negative TTL");
        }
        return 0;
    case KEEL__COMMAND__OP_MEMBER_ADD:
    case KEEL__COMMAND__OP_MEMBER_REMOVE:
        return 0;
    case KEEL__COMMAND__OP_MEMBER_ATTRS:
        if (cmd->member_attrs->id == 0)
            return fail(&v, KEEL_EINVAL, "member id is 0");
        return 0;
    case KEEL__COMMAND__OP_ALARM:
        if (cmd->alarm->action != KEEL__ALARM_REQUEST__ALARM_ACTION__ACTIVATE &&
            cmd->alarm->action != KEEL__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE)
            return fail(&v, KEEL_EINVAL, "an alarm command activates or deactivates");
        if (cmd->alarm->alarm != KEEL__ALARM_MEMBER__ALARM_TYPE__NOSPACE &&
            cmd->alarm->alarm != KEEL__ALARM_MEMBER__ALARM_TYPE__NONE)
            return fail(&v, KEEL_EUNSUPPORTED, "keel raises and clears only the NOSPACE alarm");
        return 0;
    case KEEL__COMMAND__OP_QUOTA:
        if (cmd->quota->bytes == 0)
            return fail(&v, KEEL_EINVAL, "quota of 0 bytes");
        return 0;
    default:
        if (ks_auth_is_change(cmd))
            return check_auth(&v, cmd);
        return fail(&v, KEEL_EINVAL, "command carries no operation");
    }
}

int keel_store_validate(const Keel__Command *cmd, const struct keel_limits *limits,
                        const char **msg)
{
    struct keel_limits none = {0};
    return ks_validate_command(cmd, limits ? limits : &none, msg);
}
