/*
 * Applying write commands: Put, DeleteRange, Txn, lease grant and revoke, compaction.
 *
 * Every request-level check happens before anything is written, so a failed command leaves no
 * trace while earlier commands of the batch stay applied. A Txn is applied in two passes, as
 * etcd does: the first evaluates every compare (nested ones too) against the state before the
 * txn, follows the chosen branches and checks what could fail there (leases, keys that must
 * exist, read revisions, quota); the second writes. Validation has already refused txns whose
 * puts and deletes overlap, so nothing the second pass does can fail at request level: if it
 * does, the store is inconsistent and the error is fatal.
 */
#include <string.h>

#include "internal.h"

/* Commands are validated at apply too (a log entry is data from the network); these limits only
 * guard the store itself, the server's intake applies the configured ones. No total across a
 * txn's levels: apply must accept whatever any member's intake, or an older keel's, accepted. */
#define APPLY_MAX_TXN_OPS       ((size_t)1 << 20)
#define APPLY_MAX_TXN_TOTAL_OPS SIZE_MAX

static bool is_request_error(int err)
{
    return err < 0 && !keel_err_is_local(err);
}

/* The revision this command writes at: taken (current + 1) on first use. */
static int64_t wctx_rev(struct wctx *c)
{
    if (!c->changed) {
        c->changed = true;
        c->m->revision++;
    }
    return c->m->revision;
}

static void *alloc_msg(struct keel_arena *a, size_t size, void (*init)(void *))
{
    void *p = keel_arena_alloc(a, size);
    if (p != NULL)
        init(p);
    return p;
}

#define NEW_MSG(a, type, init) ((type *)alloc_msg((a), sizeof(type), (void (*)(void *))(init)))

static int push_event(struct wctx *c, Keel__Event__EventType type, Keel__KeyValue *kv,
                      Keel__KeyValue *prev)
{
    Keel__Event *ev = NEW_MSG(c->a, Keel__Event, keel__event__init);
    if (ev == NULL)
        return KEEL_ENOMEM;
    ev->type = type;
    ev->kv = kv;
    ev->prev_kv = prev;
    return ks_pvec_push(c->a, &c->events, ev);
}

/* While the NOSPACE alarm is raised every addition fails: writes that add data fail until the
 * alarm is cleared, as etcd's do (deletes, compaction and revokes, which add nothing, go on). */
bool ks_over_quota(struct wctx *c, uint64_t add)
{
    if (c->m->logical_size + add > ks_quota(c->m))
        c->quota_passed = true;
    return c->quota_passed || c->m->nospace_member != 0;
}

static int check_key(const ProtobufCBinaryData *key)
{
    if (key->len == 0)
        return KEEL_EINVAL;
    if (key->len > KEEL_MAX_KEY_BYTES)
        return KEEL_EKEYTOOLONG;
    return 0;
}

/* Write one history record and the key's entry for it. */
static int write_version(struct wctx *c, const struct record *r, bool tombstone, bool key_known)
{
    struct tctx *t = c->t;
    int64_t rev = wctx_rev(c);
    uint32_t sub = c->sub++;
    uint8_t rk[REVKEY_LEN];
    ks_revkey_encode(rev, sub, rk);
    size_t size = ks_record_size(r->key.mv_size, r->value.mv_size);
    MDB_val k = {REVKEY_LEN, rk}, v = {size, NULL};
    /* Revisions only grow, so every record goes to the end of the tree. */
    int rc = mdb_cursor_put(t->revs, &k, &v, MDB_RESERVE | MDB_APPEND);
    if (rc == MDB_KEYEXIST)
        return KEEL_ECORRUPT;
    if (rc != 0)
        return ks_mdb_err(rc);
    ks_record_encode(r, v.mv_data);

    uint8_t kr[KEYREV_LEN];
    ks_keyrev_encode(rev, sub, tombstone, kr);
    MDB_val key = r->key, entry = {KEYREV_LEN, kr};
    rc = mdb_cursor_put(t->keys, &key, &entry, 0);
    if (rc != 0)
        return ks_mdb_err(rc);
    if (t->note != NULL && ks_overlay_note_record(t->note, rev, sub, tombstone, r) != 0)
        return KEEL_ENOMEM;
    c->m->logical_size += REVKEY_LEN + size + KEYREV_LEN + (key_known ? 0 : r->key.mv_size);
    return 0;
}

static int do_put(struct wctx *c, const Keel__PutRequest *req, Keel__PutResponse **out)
{
    struct tctx *t = c->t;
    int err = check_key(&req->key);
    if (err != 0)
        return err;
    MDB_val key = {req->key.len, req->key.data};
    struct kstate st;
    if ((err = ks_key_state(t, t->keys, &key, 0, &st)) != 0)
        return err;
    if ((req->ignore_value || req->ignore_lease) && !st.exists)
        return KEEL_EKEYNOTFOUND;
    int64_t lease = req->ignore_lease ? st.rec.lease : req->lease;
    if (lease < 0)
        return KEEL_ELEASENOTFOUND;
    if (lease != 0 && !req->ignore_lease) {
        bool found;
        if ((err = ks_lease_exists(t, lease, &found)) != 0)
            return err;
        if (!found)
            return KEEL_ELEASENOTFOUND;
    }

    /* st.rec points into pages the writes below may move: copy what is needed first. */
    Keel__KeyValue *prev = NULL;
    if (st.exists && (prev = ks_kv_from_record(c->a, &st.rec, st.at.rev, false)) == NULL)
        return KEEL_ENOMEM;
    struct record r = {.type = REC_PUT, .lease = lease};
    r.key.mv_data = key.mv_data;
    r.key.mv_size = key.mv_size;
    if (req->ignore_value) {
        r.value.mv_data = prev->value.data;
        r.value.mv_size = prev->value.len;
    } else {
        r.value.mv_data = req->value.data;
        r.value.mv_size = req->value.len;
    }
    uint64_t add =
        REVKEY_LEN + ks_record_size(r.key.mv_size, r.value.mv_size) + KEYREV_LEN + r.key.mv_size;
    if (!c->planned && ks_over_quota(c, add))
        return KEEL_ENOSPACE; /* a planned txn checked its quota as a whole */

    int64_t rev = wctx_rev(c);
    r.create_revision = st.exists ? prev->create_revision : rev;
    r.version = st.exists ? prev->version + 1 : 1;
    if ((err = write_version(c, &r, false, st.found)) != 0)
        return err;
    if (!st.exists)
        ks_live_add(c->m, 1);
    int64_t old_lease = st.exists ? prev->lease : 0;
    if (old_lease != lease) {
        if (old_lease != 0 && (err = ks_lease_detach(c, old_lease, &key)) != 0)
            return err;
        if (lease != 0 && (err = ks_lease_attach(c, lease, &key)) != 0)
            return err;
    }

    Keel__KeyValue *kv = ks_kv_from_record(c->a, &r, rev, false);
    if (kv == NULL || (err = push_event(c, KEEL__EVENT__EVENT_TYPE__PUT, kv, prev)) != 0)
        return err ? err : KEEL_ENOMEM;
    if (out != NULL) {
        Keel__PutResponse *resp = NEW_MSG(c->a, Keel__PutResponse, keel__put_response__init);
        if (resp == NULL)
            return KEEL_ENOMEM;
        if (req->prev_kv)
            resp->prev_kv = prev;
        *out = resp;
    }
    return 0;
}

/* Delete one live key whose current state is prev (already copied to the arena). */
static int delete_key(struct wctx *c, Keel__KeyValue *prev)
{
    struct record r = {.type = REC_DELETE};
    r.key.mv_data = prev->key.data;
    r.key.mv_size = prev->key.len;
    int err = write_version(c, &r, true, true);
    ks_live_add(c->m, -1);
    if (err == 0 && prev->lease != 0)
        err = ks_lease_detach(c, prev->lease, &r.key);
    if (err != 0)
        return err;
    Keel__KeyValue *kv = NEW_MSG(c->a, Keel__KeyValue, keel__key_value__init);
    if (kv == NULL)
        return KEEL_ENOMEM;
    kv->key = prev->key;
    kv->mod_revision = c->m->revision;
    return push_event(c, KEEL__EVENT__EVENT_TYPE__DELETE, kv, prev);
}

/*
 * Calls fn for each live key of a range (latest state, key order) until it returns non-zero,
 * which is returned. Nothing is copied: st points into the map for the duration of the call.
 */
static int each_live(struct wctx *c, const struct krange *kr,
                     int (*fn)(const struct kstate *st, void *arg), void *arg)
{
    struct tctx *t = c->t;
    MDB_cursor *cur = t->keys;
    MDB_val k = kr->key, d;
    int rc;
    if (kr->kind == RANGE_ONE)
        rc = mdb_cursor_get(cur, &k, &d, MDB_SET);
    else if (k.mv_size == 0)
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
    else
        rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE);
    while (rc == 0 && !ks_krange_past(kr, &k)) {
        struct kstate st;
        MDB_val key = k;
        int err = ks_key_state(t, cur, &key, 0, &st);
        if (err != 0)
            return err;
        if (st.exists && (err = fn(&st, arg)) != 0)
            return err;
        if (kr->kind == RANGE_ONE)
            break;
        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT_NODUP);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return ks_mdb_err(rc);
    return 0;
}

/* Charges a live key-value, value included, to a budget (each_live callback). */
static int charge_kv(const struct kstate *st, void *arg)
{
    struct ks_budget *b = arg;
    size_t cost = ks_kv_bytes(st->rec.key.mv_size, st->rec.value.mv_size);
    if (cost > b->left)
        return KEEL_EREPLYTOOLARGE;
    b->left -= cost;
    return 0;
}

struct collect {
    struct keel_arena *a;
    struct pvec *out;
};

static int collect_kv(const struct kstate *st, void *arg)
{
    struct collect *col = arg;
    Keel__KeyValue *kv = ks_kv_from_record(col->a, &st->rec, st->at.rev, false);
    if (kv == NULL)
        return KEEL_ENOMEM;
    return ks_pvec_push(col->a, col->out, kv);
}

/* The live key-values of a range, latest state, copied into the arena (key order). */
static int live_in_range(struct wctx *c, const struct krange *kr, struct pvec *out)
{
    struct collect col = {c->a, out};
    return each_live(c, kr, collect_kv, &col);
}

static int do_delete_range(struct wctx *c, const Keel__DeleteRangeRequest *req,
                           Keel__DeleteRangeResponse **out)
{
    const char *msg;
    struct krange kr;
    int err = ks_krange_make(&req->key, &req->range_end, &kr, &msg);
    if (err != 0)
        return err;
    if (req->prev_kv && !c->planned) {
        /* The reply carries every deleted key-value: refuse before deleting anything if it
         * could not be sent. (A txn's deletes were priced with the rest of the txn.) */
        struct ks_budget b = {.left = KEEL_MAX_REPLY_BYTES};
        if ((err = each_live(c, &kr, charge_kv, &b)) != 0)
            return err;
    }
    struct pvec live = {0};
    if ((err = live_in_range(c, &kr, &live)) != 0)
        return err;
    for (size_t i = 0; i < live.n; i++) {
        if ((err = delete_key(c, live.v[i])) != 0)
            return err;
    }
    if (out != NULL) {
        Keel__DeleteRangeResponse *resp =
            NEW_MSG(c->a, Keel__DeleteRangeResponse, keel__delete_range_response__init);
        if (resp == NULL)
            return KEEL_ENOMEM;
        resp->deleted = (int64_t)live.n;
        if (req->prev_kv) {
            resp->n_prev_kvs = live.n;
            resp->prev_kvs = (Keel__KeyValue **)live.v;
        }
        *out = resp;
    }
    return 0;
}

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

/* A key's state as a compare sees it; a missing key is all zeros. */
struct cmp_view {
    int64_t version, create_revision, mod_revision, lease;
    MDB_val value;
};

/*
 * The operand of a compare is the member of its target_union oneof that its target names, or,
 * when the client set another member or none, the zero value (etcd's compareKV). The members
 * share their memory: a version read as a value's length and pointer crashed every member that
 * applied the txn (found by fuzz_apply).
 */
static int64_t operand(const Keel__Compare *cmp, Keel__Compare__TargetUnionCase which, int64_t v)
{
    return cmp->target_union_case == which ? v : 0;
}

static bool compare_kv(const Keel__Compare *cmp, const struct cmp_view *kv)
{
    int r;
    switch (cmp->target) {
    case KEEL__COMPARE__COMPARE_TARGET__VERSION:
        r = cmp_i64(kv->version, operand(cmp, KEEL__COMPARE__TARGET_UNION_VERSION, cmp->version));
        break;
    case KEEL__COMPARE__COMPARE_TARGET__CREATE:
        r = cmp_i64(kv->create_revision, operand(cmp, KEEL__COMPARE__TARGET_UNION_CREATE_REVISION,
                                                 cmp->create_revision));
        break;
    case KEEL__COMPARE__COMPARE_TARGET__MOD:
        r = cmp_i64(kv->mod_revision,
                    operand(cmp, KEEL__COMPARE__TARGET_UNION_MOD_REVISION, cmp->mod_revision));
        break;
    case KEEL__COMPARE__COMPARE_TARGET__LEASE:
        r = cmp_i64(kv->lease, operand(cmp, KEEL__COMPARE__TARGET_UNION_LEASE, cmp->lease));
        break;
    case KEEL__COMPARE__COMPARE_TARGET__VALUE: {
        MDB_val b = {0, NULL};
        if (cmp->target_union_case == KEEL__COMPARE__TARGET_UNION_VALUE)
            b = (MDB_val){cmp->value.len, cmp->value.data};
        r = ks_val_cmp(&kv->value, &b);
        break;
    }
    default:
        return false;
    }
    switch (cmp->result) {
    case KEEL__COMPARE__COMPARE_RESULT__EQUAL:
        return r == 0;
    case KEEL__COMPARE__COMPARE_RESULT__GREATER:
        return r > 0;
    case KEEL__COMPARE__COMPARE_RESULT__LESS:
        return r < 0;
    case KEEL__COMPARE__COMPARE_RESULT__NOT_EQUAL:
        return r != 0;
    default:
        return false;
    }
}

struct cmp_scan {
    const Keel__Compare *cmp;
    size_t seen;
    bool ok;
};

/* Stops the scan at the first key that fails the compare (each_live callback). */
static int compare_one(const struct kstate *st, void *arg)
{
    struct cmp_scan *s = arg;
    struct cmp_view v = {st->rec.version, st->rec.create_revision, st->at.rev, st->rec.lease,
                         st->rec.value};
    s->seen++;
    s->ok = compare_kv(s->cmp, &v);
    return s->ok ? 0 : 1;
}

/*
 * A compare over a range holds when it holds for every live key in it, so the scan streams over
 * the map and stops at the first miss: it copies nothing, whatever the range's size. etcd's
 * rule: with no key in range a VALUE compare fails; any other target compares 0.
 */
static int eval_compare(struct wctx *c, const Keel__Compare *cmp, bool *ok)
{
    const char *msg;
    struct krange kr;
    int err = ks_krange_make(&cmp->key, &cmp->range_end, &kr, &msg);
    if (err != 0)
        return err;
    struct cmp_scan s = {.cmp = cmp, .ok = true};
    err = each_live(c, &kr, compare_one, &s);
    if (err < 0)
        return err;
    if (s.seen == 0) {
        struct cmp_view zero = {0};
        *ok = cmp->target != KEEL__COMPARE__COMPARE_TARGET__VALUE && compare_kv(cmp, &zero);
        return 0;
    }
    *ok = s.ok;
    return 0;
}

static int run_txn(struct wctx *c, const Keel__TxnRequest *req, Keel__TxnResponse **out);

static int run_op(struct wctx *c, const Keel__RequestOp *op, Keel__ResponseOp *rop)
{
    int err;
    switch (op->request_case) {
    case KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE:
        rop->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
        /* Priced by plan_txn: no bound here. */
        return ks_range_in(c->t, c->m, op->request_range, c->a, NULL, &rop->response_range);
    case KEEL__REQUEST_OP__REQUEST_REQUEST_PUT:
        rop->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
        return do_put(c, op->request_put, &rop->response_put);
    case KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
        rop->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
        return do_delete_range(c, op->request_delete_range, &rop->response_delete_range);
    case KEEL__REQUEST_OP__REQUEST_REQUEST_TXN:
        rop->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
        err = run_txn(c, op->request_txn, &rop->response_txn);
        return err;
    default:
        return KEEL_EINVAL;
    }
}

static int run_txn(struct wctx *c, const Keel__TxnRequest *req, Keel__TxnResponse **out)
{
    int err;
    if (c->plan_pos >= c->plan_n)
        return KEEL_ECORRUPT;
    bool ok = c->plan[c->plan_pos++];
    Keel__RequestOp **ops = ok ? req->success : req->failure;
    size_t n = ok ? req->n_success : req->n_failure;
    Keel__TxnResponse *resp = NEW_MSG(c->a, Keel__TxnResponse, keel__txn_response__init);
    if (resp == NULL)
        return KEEL_ENOMEM;
    resp->succeeded = ok;
    if (n > 0) {
        resp->responses = keel_arena_alloc(c->a, n * sizeof(*resp->responses));
        if (resp->responses == NULL)
            return KEEL_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        Keel__ResponseOp *rop = NEW_MSG(c->a, Keel__ResponseOp, keel__response_op__init);
        if (rop == NULL)
            return KEEL_ENOMEM;
        if ((err = run_op(c, ops[i], rop)) != 0)
            return err;
        resp->responses[resp->n_responses++] = rop;
    }
    *out = resp;
    return 0;
}

/*
 * Pass one of a txn: decide every branch and check every operation on the way, and price the
 * reply: what its ranges, prev_kvs and (as ranges later in the txn may see them) its own puts
 * would put in it, against one budget for the whole txn. Pricing builds nothing, and stops as
 * soon as the budget is spent, so a txn of 128 full-store ranges costs every member a bounded
 * scan and a clear error, not 128 copies of the store. Every member prices the same state, so
 * all reach the same result.
 */
static int plan_txn(struct wctx *c, const Keel__TxnRequest *req, struct pvec *plan,
                    uint64_t *quota_add, struct ks_budget *budget)
{
    bool ok = true;
    int err;
    for (size_t i = 0; i < req->n_compare && ok; i++) {
        if ((err = eval_compare(c, req->compare[i], &ok)) != 0)
            return err;
    }
    if ((err = ks_pvec_push(c->a, plan, ok ? (void *)1 : NULL)) != 0)
        return err;
    Keel__RequestOp **ops = ok ? req->success : req->failure;
    size_t n = ok ? req->n_success : req->n_failure;
    for (size_t i = 0; i < n; i++) {
        const Keel__RequestOp *op = ops[i];
        switch (op->request_case) {
        case KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE: {
            const Keel__RangeRequest *r = op->request_range;
            if (r->revision > c->m->revision)
                return KEEL_EFUTUREREV;
            if (r->revision > 0 && r->revision < c->m->compact_revision)
                return KEEL_ECOMPACTED;
            if (r->limit < 0)
                return KEEL_EINVAL;
            if ((err = ks_range_in(c->t, c->m, r, NULL, budget, NULL)) != 0)
                return err;
            break;
        }
        case KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE: {
            const Keel__DeleteRangeRequest *d = op->request_delete_range;
            if (!d->prev_kv)
                break;
            const char *msg;
            struct krange kr;
            if ((err = ks_krange_make(&d->key, &d->range_end, &kr, &msg)) != 0)
                return err;
            if ((err = each_live(c, &kr, charge_kv, budget)) != 0)
                return err;
            break;
        }
        case KEEL__REQUEST_OP__REQUEST_REQUEST_PUT: {
            const Keel__PutRequest *p = op->request_put;
            MDB_val key = {p->key.len, p->key.data};
            struct kstate st;
            if ((err = ks_key_state(c->t, c->t->keys, &key, 0, &st)) != 0)
                return err;
            if ((p->ignore_value || p->ignore_lease) && !st.exists)
                return KEEL_EKEYNOTFOUND;
            if (p->lease != 0 && !p->ignore_lease) {
                bool found;
                if ((err = ks_lease_exists(c->t, p->lease, &found)) != 0)
                    return err;
                if (!found)
                    return KEEL_ELEASENOTFOUND;
            }
            size_t vlen = p->ignore_value ? st.rec.value.mv_size : p->value.len;
            *quota_add += REVKEY_LEN + ks_record_size(p->key.len, vlen) + KEYREV_LEN + p->key.len;
            size_t cost = ks_kv_bytes(p->key.len, vlen);
            if (p->prev_kv && st.exists)
                cost += ks_kv_bytes(st.rec.key.mv_size, st.rec.value.mv_size);
            if (cost > budget->left)
                return KEEL_EREPLYTOOLARGE;
            budget->left -= cost;
            break;
        }
        case KEEL__REQUEST_OP__REQUEST_REQUEST_TXN:
            if ((err = plan_txn(c, op->request_txn, plan, quota_add, budget)) != 0)
                return err;
            break;
        default:
            break;
        }
    }
    return 0;
}

static int apply_txn(struct wctx *c, const Keel__TxnRequest *req, Keel__TxnResponse **out)
{
    struct pvec plan = {0};
    uint64_t quota_add = 0;
    struct ks_budget budget = {.left = KEEL_MAX_REPLY_BYTES, .measure = true};
    int err = plan_txn(c, req, &plan, &quota_add, &budget);
    if (err != 0)
        return err;
    if (quota_add > 0 && ks_over_quota(c, quota_add))
        return KEEL_ENOSPACE;
    bool *decided = keel_arena_alloc(c->a, plan.n + 1);
    if (decided == NULL)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < plan.n; i++)
        decided[i] = plan.v[i] != NULL;
    c->planned = true;
    c->plan = decided;
    c->plan_n = plan.n;
    c->plan_pos = 0;
    err = run_txn(c, req, out);
    c->planned = false;
    /* Everything that can fail was checked: a failure now means the store is inconsistent. */
    if (is_request_error(err))
        err = KEEL_ECORRUPT;
    return err;
}

static int do_lease_revoke(struct wctx *c, const Keel__LeaseRevokeRequest *req,
                           Keel__LeaseRevokeResponse **out)
{
    bool found;
    int err = ks_lease_exists(c->t, req->id, &found);
    if (err != 0)
        return err;
    if (!found)
        return KEEL_ELEASENOTFOUND;
    ProtobufCBinaryData *keys;
    size_t n;
    if ((err = ks_lease_keys(c->t, req->id, c->a, &keys, &n)) != 0)
        return err;
    for (size_t i = 0; i < n; i++) {
        MDB_val key = {keys[i].len, keys[i].data};
        struct kstate st;
        if ((err = ks_key_state(c->t, c->t->keys, &key, 0, &st)) != 0)
            return err;
        if (!st.exists || st.rec.lease != req->id)
            return KEEL_ECORRUPT; /* attachments follow every put and delete */
        Keel__KeyValue *prev = ks_kv_from_record(c->a, &st.rec, st.at.rev, false);
        if (prev == NULL)
            return KEEL_ENOMEM;
        if ((err = delete_key(c, prev)) != 0)
            return err;
    }
    if ((err = ks_lease_drop(c, req->id)) != 0)
        return err;
    *out = NEW_MSG(c->a, Keel__LeaseRevokeResponse, keel__lease_revoke_response__init);
    return *out ? 0 : KEEL_ENOMEM;
}

/* Member attributes are cluster metadata: no revision, no event. */
static int do_member_attrs(struct wctx *c, const Keel__Member *m)
{
    size_t n = keel__member__get_packed_size(m);
    uint8_t key[8];
    keel_put_be64(key, m->id);
    MDB_val k = {8, key}, v = {n, NULL};
    int rc = mdb_put(c->t->txn, c->t->s->dbi_members, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return ks_mdb_err(rc);
    keel__member__pack(m, v.mv_data);
    if (c->t->note != NULL)
        return ks_overlay_note_op(c->t->note, OV_MEMBERS, OV_PUT, &k, &v);
    return 0;
}

/* Raise or clear the NOSPACE alarm; the answer lists the alarm raised or cleared. */
static int do_alarm(struct wctx *c, const Keel__Command *cmd, Keel__AlarmResponse **out)
{
    const Keel__AlarmRequest *req = cmd->alarm;
    Keel__AlarmResponse *resp = NEW_MSG(c->a, Keel__AlarmResponse, keel__alarm_response__init);
    if (resp == NULL)
        return KEEL_ENOMEM;
    *out = resp;
    uint64_t member = 0;
    if (req->action == KEEL__ALARM_REQUEST__ALARM_ACTION__ACTIVATE) {
        if (c->m->nospace_member == 0)
            c->m->nospace_member = req->memberid ? req->memberid : cmd->origin ? cmd->origin : 1;
        member = c->m->nospace_member;
    } else if (c->m->nospace_member != 0 &&
               (req->memberid == 0 || req->memberid == c->m->nospace_member)) {
        member = c->m->nospace_member;
        c->m->nospace_member = 0;
    }
    if (member == 0)
        return 0;
    Keel__AlarmMember *am = NEW_MSG(c->a, Keel__AlarmMember, keel__alarm_member__init);
    resp->alarms = keel_arena_alloc(c->a, sizeof(*resp->alarms));
    if (am == NULL || resp->alarms == NULL)
        return KEEL_ENOMEM;
    am->memberid = member;
    am->alarm = KEEL__ALARM_MEMBER__ALARM_TYPE__NOSPACE;
    resp->alarms[0] = am;
    resp->n_alarms = 1;
    return 0;
}

static int dispatch(struct wctx *c, const Keel__Command *cmd, Keel__Response *resp)
{
    int err;
    switch (cmd->op_case) {
    case KEEL__COMMAND__OP_PUT:
        resp->body_case = KEEL__RESPONSE__BODY_PUT;
        return do_put(c, cmd->put, &resp->put);
    case KEEL__COMMAND__OP_DELETE_RANGE:
        resp->body_case = KEEL__RESPONSE__BODY_DELETE_RANGE;
        return do_delete_range(c, cmd->delete_range, &resp->delete_range);
    case KEEL__COMMAND__OP_TXN:
        resp->body_case = KEEL__RESPONSE__BODY_TXN;
        return apply_txn(c, cmd->txn, &resp->txn);
    case KEEL__COMMAND__OP_COMPACTION:
        resp->body_case = KEEL__RESPONSE__BODY_COMPACTION;
        err = ks_compact_apply(c, cmd->compaction->revision);
        if (err == 0) {
            resp->compaction =
                NEW_MSG(c->a, Keel__CompactionResponse, keel__compaction_response__init);
            err = resp->compaction ? 0 : KEEL_ENOMEM;
        }
        return err;
    case KEEL__COMMAND__OP_LEASE_GRANT:
        resp->body_case = KEEL__RESPONSE__BODY_LEASE_GRANT;
        return ks_lease_grant(c, cmd->lease_grant, &resp->lease_grant);
    case KEEL__COMMAND__OP_LEASE_REVOKE:
        resp->body_case = KEEL__RESPONSE__BODY_LEASE_REVOKE;
        return do_lease_revoke(c, cmd->lease_revoke, &resp->lease_revoke);
    case KEEL__COMMAND__OP_LEASE_CHECKPOINT:
        /* The leader's countdowns, like member attributes: no revision, no event. */
        return ks_lease_checkpoint(c, cmd->lease_checkpoint);
    case KEEL__COMMAND__OP_MEMBER_ATTRS:
        return do_member_attrs(c, cmd->member_attrs);
    case KEEL__COMMAND__OP_ALARM:
        /* Cluster state like the quota: no revision, no event. */
        resp->body_case = KEEL__RESPONSE__BODY_ALARM;
        return do_alarm(c, cmd, &resp->alarm);
    case KEEL__COMMAND__OP_QUOTA:
        /* Cluster metadata like member attributes: no revision, no event. */
        if (!cmd->quota->if_unset || c->m->quota == 0)
            c->m->quota = cmd->quota->bytes;
        return 0;
    default:
        if (ks_auth_is_change(cmd))
            return ks_auth_apply(c, cmd, resp, &c->msg);
        return KEEL_EUNSUPPORTED;
    }
}

int ks_mvcc_apply(struct keel_store_write *w, const Keel__Command *cmd, struct keel_arena *a,
                  struct keel_apply_result *res)
{
    struct keel_limits limits = {.max_txn_ops = APPLY_MAX_TXN_OPS,
                                 .max_txn_total_ops = APPLY_MAX_TXN_TOTAL_OPS};
    const char *msg = NULL;
    int err = ks_validate_command(cmd, &limits, &msg);
    if (err != 0 && !is_request_error(err))
        return err; /* ENOMEM and the like: this member's trouble, not the request's result */
    if (err != 0) {
        res->err = err;
        res->msg = msg;
        return 0;
    }
    /* etcd's ErrAuthOldRevision: the intake check saw auth state older than this, and a
     * permission revoked since must not let the write through. Nothing is done: the client
     * sends it again, to be checked against the state now. */
    if (cmd->auth != NULL && w->m.auth_enabled && cmd->auth->revision < w->m.auth_revision) {
        res->err = KEEL_EAUTHOLDREV;
        res->msg = keel_strerror(KEEL_EAUTHOLDREV);
        return 0;
    }
    Keel__Response *resp = NEW_MSG(a, Keel__Response, keel__response__init);
    if (resp == NULL)
        return KEEL_ENOMEM;
    struct wctx c = {.t = &w->t, .m = &w->m, .a = a};
    struct meta saved = w->m;
    err = dispatch(&c, cmd, resp);
    if (is_request_error(err)) {
        /* Single operations check before they write, so nothing was changed. */
        w->m = saved;
        /* A write past the quota raises the NOSPACE alarm, in this same entry on every member
         * (the sizes are replicated state): from now on every write that adds data fails until
         * an operator disarms it, as etcd's alarm does. */
        if (c.quota_passed && w->m.nospace_member == 0)
            w->m.nospace_member = cmd->origin ? cmd->origin : 1;
        res->err = err;
        res->msg = c.msg != NULL ? c.msg : keel_strerror(err);
        return 0;
    }
    if (err != 0)
        return err;
    res->response = resp;
    res->events = (Keel__Event **)c.events.v;
    res->n_events = c.events.n;
    return 0;
}
