#include "model.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---------------------------------------------------------------------------------------
 * Helpers
 */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "model: out of memory\n");
        abort();
    }
    return q;
}

static void *xdup(const void *p, size_t n)
{
    if (n == 0)
        return NULL;
    void *q = xrealloc(NULL, n);
    memcpy(q, p, n);
    return q;
}

static void *anew(struct keel_arena *a, size_t n)
{
    void *p = keel_arena_alloc(a, n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "model: arena exhausted\n");
        abort();
    }
    return p;
}

static ProtobufCBinaryData abytes(struct keel_arena *a, const uint8_t *p, size_t n)
{
    ProtobufCBinaryData b = {.len = n, .data = NULL};
    b.data = keel_arena_memdup(a, n ? p : (const uint8_t *)"", n);
    if (b.data == NULL)
        abort();
    return b;
}

/* Byte-wise order, a proper prefix first: the order of LMDB keys and of etcd values. */
static int bcmp3(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

static int is_inf_end(const uint8_t *e, size_t el)
{
    return el == 1 && e[0] == 0;
}

static int in_span(const uint8_t *k, size_t kl, const uint8_t *s, size_t sl, const uint8_t *e,
                   size_t el)
{
    if (el == 0)
        return bcmp3(k, kl, s, sl) == 0;
    if (bcmp3(k, kl, s, sl) < 0)
        return 0;
    return is_inf_end(e, el) || bcmp3(k, kl, e, el) < 0;
}

static int64_t i64cmp(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------
 * State
 */

struct mver {
    int64_t rev;
    int64_t create;
    int64_t version;
    int64_t lease;
    uint8_t *value;
    size_t value_len;
    int sub;
    int del;
};

struct mkey {
    uint8_t *key;
    size_t len;
    struct mver *v; /* in (rev, sub) order */
    size_t n, cap;
};

struct mevent {
    struct mkey *k;
    size_t vi;
};

struct mlease {
    int64_t id;
    int64_t ttl;
};

struct model {
    struct mkey **keys; /* sorted by key */
    size_t n_keys, cap_keys;
    struct mevent *log; /* every version ever written, in (rev, sub) order */
    size_t n_log, cap_log;
    struct mlease *leases; /* sorted by id */
    size_t n_leases, cap_leases;
    int64_t rev;
    int64_t compact_rev;
    uint64_t applied;
    /* The write being applied: its revision and the next sub. */
    int64_t wrev;
    int wsub;
};

struct model *model_open(void)
{
    struct model *m = xrealloc(NULL, sizeof(*m));
    memset(m, 0, sizeof(*m));
    return m;
}

void model_close(struct model *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_keys; i++) {
        struct mkey *k = m->keys[i];
        for (size_t j = 0; j < k->n; j++)
            free(k->v[j].value);
        free(k->v);
        free(k->key);
        free(k);
    }
    free(m->keys);
    free(m->log);
    free(m->leases);
    free(m);
}

uint64_t model_applied_index(const struct model *m)
{
    return m->applied;
}

int64_t model_revision(const struct model *m)
{
    return m->rev;
}

int64_t model_compact_revision(const struct model *m)
{
    return m->compact_rev;
}

static size_t key_lower_bound(const struct model *m, const uint8_t *k, size_t kl)
{
    size_t lo = 0, hi = m->n_keys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bcmp3(m->keys[mid]->key, m->keys[mid]->len, k, kl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct mkey *key_find(const struct model *m, const uint8_t *k, size_t kl)
{
    size_t i = key_lower_bound(m, k, kl);
    if (i < m->n_keys && bcmp3(m->keys[i]->key, m->keys[i]->len, k, kl) == 0)
        return m->keys[i];
    return NULL;
}

static struct mkey *key_get(struct model *m, const uint8_t *k, size_t kl)
{
    size_t i = key_lower_bound(m, k, kl);
    if (i < m->n_keys && bcmp3(m->keys[i]->key, m->keys[i]->len, k, kl) == 0)
        return m->keys[i];
    if (m->n_keys == m->cap_keys) {
        m->cap_keys = m->cap_keys ? 2 * m->cap_keys : 64;
        m->keys = xrealloc(m->keys, m->cap_keys * sizeof(*m->keys));
    }
    struct mkey *nk = xrealloc(NULL, sizeof(*nk));
    memset(nk, 0, sizeof(*nk));
    nk->key = xdup(k, kl);
    nk->len = kl;
    memmove(&m->keys[i + 1], &m->keys[i], (m->n_keys - i) * sizeof(*m->keys));
    m->keys[i] = nk;
    m->n_keys++;
    return nk;
}

/* The key's greatest version <= rev, or NULL. */
static const struct mver *ver_at(const struct mkey *k, int64_t rev)
{
    size_t lo = 0, hi = k->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (k->v[mid].rev <= rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? &k->v[lo - 1] : NULL;
}

static const struct mver *live_at(const struct mkey *k, int64_t rev)
{
    const struct mver *v = ver_at(k, rev);
    return v != NULL && !v->del ? v : NULL;
}

/* Latest state, including the writes of a txn being applied. */
static const struct mver *live_now(const struct mkey *k)
{
    return k->n && !k->v[k->n - 1].del ? &k->v[k->n - 1] : NULL;
}

static struct mver *push_ver(struct model *m, struct mkey *k)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 4;
        k->v = xrealloc(k->v, k->cap * sizeof(*k->v));
    }
    struct mver *v = &k->v[k->n++];
    memset(v, 0, sizeof(*v));
    v->rev = m->wrev;
    v->sub = m->wsub++;
    if (m->n_log == m->cap_log) {
        m->cap_log = m->cap_log ? 2 * m->cap_log : 1024;
        m->log = xrealloc(m->log, m->cap_log * sizeof(*m->log));
    }
    m->log[m->n_log].k = k;
    m->log[m->n_log].vi = k->n - 1;
    m->n_log++;
    return v;
}

/* Undo every version written since mark: a failed txn changes nothing. */
static void rollback(struct model *m, size_t mark)
{
    while (m->n_log > mark) {
        struct mevent *e = &m->log[--m->n_log];
        struct mver *v = &e->k->v[--e->k->n];
        free(v->value);
    }
}

static struct mlease *lease_find(const struct model *m, int64_t id)
{
    size_t lo = 0, hi = m->n_leases;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->leases[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->n_leases && m->leases[lo].id == id ? &m->leases[lo] : NULL;
}

static void lease_add(struct model *m, int64_t id, int64_t ttl)
{
    if (m->n_leases == m->cap_leases) {
        m->cap_leases = m->cap_leases ? 2 * m->cap_leases : 16;
        m->leases = xrealloc(m->leases, m->cap_leases * sizeof(*m->leases));
    }
    size_t i = 0;
    while (i < m->n_leases && m->leases[i].id < id)
        i++;
    memmove(&m->leases[i + 1], &m->leases[i], (m->n_leases - i) * sizeof(*m->leases));
    m->leases[i].id = id;
    m->leases[i].ttl = ttl;
    m->n_leases++;
}

static void lease_del(struct model *m, int64_t id)
{
    struct mlease *l = lease_find(m, id);
    size_t i = (size_t)(l - m->leases);
    memmove(&m->leases[i], &m->leases[i + 1], (m->n_leases - i - 1) * sizeof(*m->leases));
    m->n_leases--;
}

/* ---------------------------------------------------------------------------------------
 * Building responses
 */

static Keel__KeyValue *mk_kv(struct keel_arena *a, const struct mkey *k, const struct mver *v,
                             int keys_only)
{
    Keel__KeyValue *kv = anew(a, sizeof(*kv));
    keel__key_value__init(kv);
    kv->key = abytes(a, k->key, k->len);
    kv->create_revision = v->create;
    kv->mod_revision = v->rev;
    kv->version = v->version;
    kv->lease = v->lease;
    if (!keys_only)
        kv->value = abytes(a, v->value, v->value_len);
    return kv;
}

static Keel__Event *mk_event(struct keel_arena *a, const struct mevent *e)
{
    const struct mver *v = &e->k->v[e->vi];
    Keel__Event *ev = anew(a, sizeof(*ev));
    keel__event__init(ev);
    if (v->del) {
        ev->type = KEEL__EVENT__EVENT_TYPE__DELETE;
        ev->kv = anew(a, sizeof(*ev->kv));
        keel__key_value__init(ev->kv);
        ev->kv->key = abytes(a, e->k->key, e->k->len);
        ev->kv->mod_revision = v->rev;
    } else {
        ev->type = KEEL__EVENT__EVENT_TYPE__PUT;
        ev->kv = mk_kv(a, e->k, v, 0);
    }
    if (e->vi > 0 && !e->k->v[e->vi - 1].del)
        ev->prev_kv = mk_kv(a, e->k, &e->k->v[e->vi - 1], 0);
    return ev;
}

/* ---------------------------------------------------------------------------------------
 * Range
 */

struct sort_ctx {
    Keel__RangeRequest__SortTarget target;
    int desc;
};

static int kv_target_cmp(const Keel__KeyValue *a, const Keel__KeyValue *b,
                         Keel__RangeRequest__SortTarget t)
{
    switch (t) {
    case KEEL__RANGE_REQUEST__SORT_TARGET__VERSION:
        return (int)i64cmp(a->version, b->version);
    case KEEL__RANGE_REQUEST__SORT_TARGET__CREATE:
        return (int)i64cmp(a->create_revision, b->create_revision);
    case KEEL__RANGE_REQUEST__SORT_TARGET__MOD:
        return (int)i64cmp(a->mod_revision, b->mod_revision);
    case KEEL__RANGE_REQUEST__SORT_TARGET__VALUE:
        return bcmp3(a->value.data, a->value.len, b->value.data, b->value.len);
    default:
        return bcmp3(a->key.data, a->key.len, b->key.data, b->key.len);
    }
}

/* Insertion sort keeps ties in key order and needs no global comparator context. */
static void sort_kvs(Keel__KeyValue **kv, size_t n, Keel__RangeRequest__SortTarget t, int desc)
{
    for (size_t i = 1; i < n; i++) {
        Keel__KeyValue *x = kv[i];
        size_t j = i;
        while (j > 0) {
            int c = kv_target_cmp(kv[j - 1], x, t);
            if (desc ? c >= 0 : c <= 0)
                break;
            kv[j] = kv[j - 1];
            j--;
        }
        kv[j] = x;
    }
}

static int do_range(const struct model *m, const Keel__RangeRequest *req, struct keel_arena *a,
                    Keel__RangeResponse **out)
{
    int64_t rev = req->revision;
    if (rev > m->rev)
        return KEEL_EFUTUREREV;
    if (rev > 0 && rev < m->compact_rev)
        return KEEL_ECOMPACTED;
    size_t first = key_lower_bound(m, req->key.data, req->key.len);
    size_t cap = 0;
    for (size_t i = first; i < m->n_keys; i++) {
        if (!in_span(m->keys[i]->key, m->keys[i]->len, req->key.data, req->key.len,
                     req->range_end.data, req->range_end.len))
            break;
        cap++;
    }
    Keel__KeyValue **kvs = anew(a, (cap ? cap : 1) * sizeof(*kvs));
    size_t n = 0;
    for (size_t i = first; i < first + cap; i++) {
        const struct mkey *k = m->keys[i];
        const struct mver *v = rev > 0 ? live_at(k, rev) : live_now(k);
        if (v != NULL)
            kvs[n++] = mk_kv(a, k, v, 0);
    }
    /* Sorting by value looks at the values even when they are not returned (as etcd does). */
    if (req->sort_order != KEEL__RANGE_REQUEST__SORT_ORDER__NONE)
        sort_kvs(kvs, n, req->sort_target,
                 req->sort_order == KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND);
    if (req->keys_only)
        for (size_t i = 0; i < n; i++)
            kvs[i]->value.len = 0;
    Keel__RangeResponse *r = anew(a, sizeof(*r));
    keel__range_response__init(r);
    r->count = (int64_t)n;
    if (!req->count_only) {
        size_t take = n;
        if (req->limit > 0 && (uint64_t)req->limit < n) {
            take = (size_t)req->limit;
            r->more = 1;
        }
        r->kvs = kvs;
        r->n_kvs = take;
    }
    *out = r;
    return 0;
}

int model_range(const struct model *m, const Keel__RangeRequest *req, struct keel_arena *a,
                Keel__RangeResponse **out, int64_t *revision)
{
    *revision = m->rev;
    *out = NULL;
    return do_range(m, req, a, out);
}

/* ---------------------------------------------------------------------------------------
 * Writes
 */

static int do_put(struct model *m, const Keel__PutRequest *p, struct keel_arena *a,
                  Keel__PutResponse **out)
{
    if (p->key.len == 0)
        return KEEL_EINVAL;
    if (p->key.len > KEEL_MAX_KEY_BYTES)
        return KEEL_EKEYTOOLONG;
    struct mkey *k = key_find(m, p->key.data, p->key.len);
    const struct mver *cur = k != NULL ? live_now(k) : NULL;
    if ((p->ignore_value || p->ignore_lease) && cur == NULL)
        return KEEL_EKEYNOTFOUND;
    int64_t lease = p->ignore_lease ? cur->lease : p->lease;
    if (!p->ignore_lease && lease != 0 && lease_find(m, lease) == NULL)
        return KEEL_ELEASENOTFOUND;

    Keel__PutResponse *r = anew(a, sizeof(*r));
    keel__put_response__init(r);
    if (p->prev_kv && cur != NULL)
        r->prev_kv = mk_kv(a, k, cur, 0);
    /* Copy what we need from cur: push_ver may move the versions. */
    uint8_t *value =
        p->ignore_value ? xdup(cur->value, cur->value_len) : xdup(p->value.data, p->value.len);
    size_t value_len = p->ignore_value ? cur->value_len : p->value.len;
    int64_t create = cur != NULL ? cur->create : m->wrev;
    int64_t version = cur != NULL ? cur->version + 1 : 1;
    if (k == NULL)
        k = key_get(m, p->key.data, p->key.len);
    struct mver *v = push_ver(m, k);
    v->create = create;
    v->version = version;
    v->lease = lease;
    v->value = value;
    v->value_len = value_len;
    *out = r;
    return 0;
}

static size_t span_first(const struct model *m, const ProtobufCBinaryData *key)
{
    return key_lower_bound(m, key->data, key->len);
}

static int do_delete(struct model *m, const Keel__DeleteRangeRequest *d, struct keel_arena *a,
                     Keel__DeleteRangeResponse **out)
{
    size_t first = span_first(m, &d->key);
    size_t n = 0;
    for (size_t i = first; i < m->n_keys; i++) {
        const struct mkey *k = m->keys[i];
        if (!in_span(k->key, k->len, d->key.data, d->key.len, d->range_end.data, d->range_end.len))
            break;
        if (live_now(k) != NULL)
            n++;
    }
    Keel__DeleteRangeResponse *r = anew(a, sizeof(*r));
    keel__delete_range_response__init(r);
    r->deleted = (int64_t)n;
    if (d->prev_kv && n > 0)
        r->prev_kvs = anew(a, n * sizeof(*r->prev_kvs));
    for (size_t i = first; i < m->n_keys; i++) {
        struct mkey *k = m->keys[i];
        if (!in_span(k->key, k->len, d->key.data, d->key.len, d->range_end.data, d->range_end.len))
            break;
        const struct mver *cur = live_now(k);
        if (cur == NULL)
            continue;
        if (d->prev_kv)
            r->prev_kvs[r->n_prev_kvs++] = mk_kv(a, k, cur, 0);
        struct mver *v = push_ver(m, k);
        v->del = 1;
    }
    *out = r;
    return 0;
}

static int compare_one(const Keel__Compare *c, const struct mver *v)
{
    int r;
    if (c->target == KEEL__COMPARE__COMPARE_TARGET__VALUE) {
        if (v == NULL)
            return 0; /* nothing to compare a value with: never holds */
        r = bcmp3(v->value, v->value_len, c->value.data, c->value.len);
    } else {
        int64_t have = 0, want = 0;
        switch (c->target) {
        case KEEL__COMPARE__COMPARE_TARGET__VERSION:
            have = v ? v->version : 0;
            want = c->version;
            break;
        case KEEL__COMPARE__COMPARE_TARGET__CREATE:
            have = v ? v->create : 0;
            want = c->create_revision;
            break;
        case KEEL__COMPARE__COMPARE_TARGET__MOD:
            have = v ? v->rev : 0;
            want = c->mod_revision;
            break;
        default:
            have = v ? v->lease : 0;
            want = c->lease;
            break;
        }
        r = (int)i64cmp(have, want);
    }
    switch (c->result) {
    case KEEL__COMPARE__COMPARE_RESULT__EQUAL:
        return r == 0;
    case KEEL__COMPARE__COMPARE_RESULT__GREATER:
        return r > 0;
    case KEEL__COMPARE__COMPARE_RESULT__LESS:
        return r < 0;
    default:
        return r != 0;
    }
}

/* etcd's applyCompare: every live key in the span must hold; no live key compares as missing. */
static int compare_holds(const struct model *m, const Keel__Compare *c)
{
    size_t seen = 0;
    for (size_t i = key_lower_bound(m, c->key.data, c->key.len); i < m->n_keys; i++) {
        const struct mkey *k = m->keys[i];
        if (!in_span(k->key, k->len, c->key.data, c->key.len, c->range_end.data, c->range_end.len))
            break;
        const struct mver *v = live_now(k);
        if (v == NULL)
            continue;
        seen++;
        if (!compare_one(c, v))
            return 0;
    }
    return seen > 0 || compare_one(c, NULL);
}

static int do_txn(struct model *m, const Keel__TxnRequest *t, struct keel_arena *a,
                  Keel__TxnResponse **out)
{
    int ok = 1;
    for (size_t i = 0; i < t->n_compare && ok; i++)
        ok = compare_holds(m, t->compare[i]);
    Keel__RequestOp **ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    Keel__TxnResponse *r = anew(a, sizeof(*r));
    keel__txn_response__init(r);
    r->succeeded = ok;
    r->n_responses = n;
    if (n > 0)
        r->responses = anew(a, n * sizeof(*r->responses));
    for (size_t i = 0; i < n; i++) {
        const Keel__RequestOp *op = ops[i];
        Keel__ResponseOp *ro = anew(a, sizeof(*ro));
        keel__response_op__init(ro);
        r->responses[i] = ro;
        int err;
        switch (op->request_case) {
        case KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE:
            ro->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
            err = do_range(m, op->request_range, a, &ro->response_range);
            break;
        case KEEL__REQUEST_OP__REQUEST_REQUEST_PUT:
            ro->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
            err = do_put(m, op->request_put, a, &ro->response_put);
            break;
        case KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
            ro->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
            err = do_delete(m, op->request_delete_range, a, &ro->response_delete_range);
            break;
        case KEEL__REQUEST_OP__REQUEST_REQUEST_TXN:
            ro->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
            err = do_txn(m, op->request_txn, a, &ro->response_txn);
            break;
        default:
            err = KEEL_EINVAL;
            break;
        }
        if (err != 0)
            return err;
    }
    *out = r;
    return 0;
}

static int do_compact(struct model *m, const Keel__CompactionRequest *c)
{
    if (c->revision <= m->compact_rev)
        return KEEL_ECOMPACTED;
    if (c->revision > m->rev)
        return KEEL_EFUTUREREV;
    m->compact_rev = c->revision;
    return 0;
}

static int do_grant(struct model *m, const Keel__LeaseGrantRequest *g, int64_t picked,
                    struct keel_arena *a, Keel__LeaseGrantResponse **out)
{
    if (g->ttl <= 0)
        return KEEL_EINVAL;
    int64_t id = g->id;
    if (id == 0) {
        id = picked;
        if (id == 0)
            id = m->n_leases ? m->leases[m->n_leases - 1].id + 1 : 1;
    }
    if (lease_find(m, id) != NULL)
        return KEEL_ELEASEEXISTS;
    lease_add(m, id, g->ttl);
    Keel__LeaseGrantResponse *r = anew(a, sizeof(*r));
    keel__lease_grant_response__init(r);
    r->id = id;
    r->ttl = g->ttl;
    *out = r;
    return 0;
}

static int do_revoke(struct model *m, int64_t id)
{
    if (lease_find(m, id) == NULL)
        return KEEL_ELEASENOTFOUND;
    for (size_t i = 0; i < m->n_keys; i++) {
        struct mkey *k = m->keys[i];
        const struct mver *cur = live_now(k);
        if (cur != NULL && cur->lease == id) {
            struct mver *v = push_ver(m, k);
            v->del = 1;
        }
    }
    lease_del(m, id);
    return 0;
}

static void apply_one(struct model *m, const Keel__Command *cmd, int64_t picked_lease,
                      struct keel_arena *a, struct keel_apply_result *res)
{
    memset(res, 0, sizeof(*res));
    m->wrev = m->rev + 1;
    m->wsub = 0;
    size_t mark = m->n_log;
    Keel__Response *r = anew(a, sizeof(*r));
    keel__response__init(r);
    int err;
    switch (cmd->op_case) {
    case KEEL__COMMAND__OP_PUT:
        r->body_case = KEEL__RESPONSE__BODY_PUT;
        err = do_put(m, cmd->put, a, &r->put);
        break;
    case KEEL__COMMAND__OP_DELETE_RANGE:
        r->body_case = KEEL__RESPONSE__BODY_DELETE_RANGE;
        err = do_delete(m, cmd->delete_range, a, &r->delete_range);
        break;
    case KEEL__COMMAND__OP_TXN:
        r->body_case = KEEL__RESPONSE__BODY_TXN;
        err = do_txn(m, cmd->txn, a, &r->txn);
        break;
    case KEEL__COMMAND__OP_COMPACTION:
        r->body_case = KEEL__RESPONSE__BODY_COMPACTION;
        r->compaction = anew(a, sizeof(*r->compaction));
        keel__compaction_response__init(r->compaction);
        err = do_compact(m, cmd->compaction);
        break;
    case KEEL__COMMAND__OP_LEASE_GRANT:
        r->body_case = KEEL__RESPONSE__BODY_LEASE_GRANT;
        err = do_grant(m, cmd->lease_grant, picked_lease, a, &r->lease_grant);
        break;
    case KEEL__COMMAND__OP_LEASE_REVOKE:
        r->body_case = KEEL__RESPONSE__BODY_LEASE_REVOKE;
        r->lease_revoke = anew(a, sizeof(*r->lease_revoke));
        keel__lease_revoke_response__init(r->lease_revoke);
        err = do_revoke(m, cmd->lease_revoke->id);
        break;
    default:
        err = KEEL_EUNSUPPORTED;
        break;
    }
    if (err != 0) {
        rollback(m, mark);
        res->err = err;
        res->revision = m->rev;
        return;
    }
    if (m->n_log > mark)
        m->rev = m->wrev;
    res->revision = m->rev;
    res->response = r;
    res->n_events = m->n_log - mark;
    if (res->n_events > 0) {
        res->events = anew(a, res->n_events * sizeof(*res->events));
        for (size_t i = 0; i < res->n_events; i++)
            res->events[i] = mk_event(a, &m->log[mark + i]);
    }
}

void model_apply(struct model *m, uint64_t index, const Keel__Command *cmd, int64_t picked_lease,
                 struct keel_arena *a, struct keel_apply_result *res)
{
    model_apply_entry(m, index, &cmd, 1, &picked_lease, a, res);
}

void model_apply_entry(struct model *m, uint64_t index, const Keel__Command *const *cmds, size_t n,
                       const int64_t *picked_lease, struct keel_arena *a,
                       struct keel_apply_result *results)
{
    int skip = index <= m->applied;
    for (size_t i = 0; i < n; i++) {
        if (skip) {
            memset(&results[i], 0, sizeof(results[i]));
            results[i].skipped = 1;
        } else {
            apply_one(m, cmds[i], picked_lease ? picked_lease[i] : 0, a, &results[i]);
        }
    }
    if (!skip)
        m->applied = index;
}

struct model_mark {
    size_t n_log;
    int64_t rev;
    int64_t compact_rev;
    uint64_t applied;
    struct mlease *leases;
    size_t n_leases;
};

struct model_mark *model_mark(const struct model *m)
{
    struct model_mark *mk = xrealloc(NULL, sizeof(*mk));
    mk->n_log = m->n_log;
    mk->rev = m->rev;
    mk->compact_rev = m->compact_rev;
    mk->applied = m->applied;
    mk->n_leases = m->n_leases;
    mk->leases = xdup(m->leases, m->n_leases * sizeof(*m->leases));
    return mk;
}

void model_mark_free(struct model_mark *mk)
{
    if (mk == NULL)
        return;
    free(mk->leases);
    free(mk);
}

/* Versions are only ever appended, so dropping the log's tail undoes every write since the mark.
 * Keys created since then stay behind with no versions, which reads treat as absent. */
void model_rollback(struct model *m, struct model_mark *mk)
{
    rollback(m, mk->n_log);
    m->rev = mk->rev;
    m->compact_rev = mk->compact_rev;
    m->applied = mk->applied;
    if (m->cap_leases < mk->n_leases) {
        m->cap_leases = mk->n_leases;
        m->leases = xrealloc(m->leases, m->cap_leases * sizeof(*m->leases));
    }
    if (mk->n_leases > 0)
        memcpy(m->leases, mk->leases, mk->n_leases * sizeof(*m->leases));
    m->n_leases = mk->n_leases;
    model_mark_free(mk);
}

/* ---------------------------------------------------------------------------------------
 * History and leases
 */

int model_history(const struct model *m, const uint8_t *key, size_t key_len,
                  const uint8_t *range_end, size_t range_end_len, int64_t start_revision,
                  struct keel_arena *a, struct keel_history *out)
{
    memset(out, 0, sizeof(*out));
    out->revision = m->rev;
    out->next_revision = m->rev + 1;
    if (start_revision < m->compact_rev)
        return KEEL_ECOMPACTED;
    if (range_end == NULL)
        range_end_len = 0;
    size_t lo = 0, hi = m->n_log;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->log[mid].k->v[m->log[mid].vi].rev < start_revision)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    for (size_t i = lo; i < m->n_log; i++) {
        const struct mkey *k = m->log[i].k;
        if (in_span(k->key, k->len, key, key_len, range_end, range_end_len))
            n++;
    }
    if (n == 0)
        return 0;
    out->events = anew(a, n * sizeof(*out->events));
    for (size_t i = lo; i < m->n_log; i++) {
        const struct mkey *k = m->log[i].k;
        if (in_span(k->key, k->len, key, key_len, range_end, range_end_len))
            out->events[out->n_events++] = mk_event(a, &m->log[i]);
    }
    return 0;
}

size_t model_lease_count(const struct model *m)
{
    return m->n_leases;
}

struct keel_lease_info model_lease_at(const struct model *m, size_t i)
{
    struct keel_lease_info li = {.id = m->leases[i].id, .ttl = m->leases[i].ttl};
    return li;
}

int model_lease_get(const struct model *m, int64_t id, struct keel_arena *a,
                    struct keel_lease_info *info, ProtobufCBinaryData **keys, size_t *n_keys)
{
    const struct mlease *l = lease_find(m, id);
    if (l == NULL)
        return KEEL_ELEASENOTFOUND;
    info->id = l->id;
    info->ttl = l->ttl;
    if (keys == NULL)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < m->n_keys; i++) {
        const struct mver *v = live_now(m->keys[i]);
        if (v != NULL && v->lease == id)
            n++;
    }
    *keys = anew(a, (n ? n : 1) * sizeof(**keys));
    *n_keys = 0;
    for (size_t i = 0; i < m->n_keys; i++) {
        const struct mver *v = live_now(m->keys[i]);
        if (v != NULL && v->lease == id)
            (*keys)[(*n_keys)++] = abytes(a, m->keys[i]->key, m->keys[i]->len);
    }
    return 0;
}

int model_get(const struct model *m, const uint8_t *key, size_t key_len, struct model_kv *out)
{
    const struct mkey *k = key_find(m, key, key_len);
    const struct mver *v = k != NULL ? live_now(k) : NULL;
    if (v == NULL)
        return 0;
    out->create_revision = v->create;
    out->mod_revision = v->rev;
    out->version = v->version;
    out->lease = v->lease;
    out->value = v->value;
    out->value_len = v->value_len;
    return 1;
}

/* ---------------------------------------------------------------------------------------
 * Comparison
 */

#define PATH_MAX_ 320

__attribute__((format(printf, 3, 4))) static int diff(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return 1;
}

__attribute__((format(printf, 3, 4))) static void subpath(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static void fmt_bytes(char *dst, size_t n, const uint8_t *p, size_t len)
{
    size_t o = 0;
    if (n < 8)
        return;
    dst[o++] = '"';
    for (size_t i = 0; i < len && o + 12 < n; i++) {
        if (i == 40) {
            o += (size_t)snprintf(dst + o, n - o, "...(%zu bytes)", len);
            break;
        }
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            dst[o++] = (char)p[i];
        else
            o += (size_t)snprintf(dst + o, n - o, "\\x%02x", p[i]);
    }
    if (o + 2 < n)
        dst[o++] = '"';
    dst[o < n ? o : n - 1] = '\0';
}

static int cmp_i64(char *why, size_t n, const char *path, const char *field, int64_t want,
                   int64_t got)
{
    if (want == got)
        return 0;
    return diff(why, n, "%s.%s: want %" PRId64 ", got %" PRId64, path, field, want, got);
}

static int cmp_bytes(char *why, size_t n, const char *path, const char *field,
                     ProtobufCBinaryData want, ProtobufCBinaryData got)
{
    if (bcmp3(want.data, want.len, got.data, got.len) == 0)
        return 0;
    char w[128], g[128];
    fmt_bytes(w, sizeof(w), want.data, want.len);
    fmt_bytes(g, sizeof(g), got.data, got.len);
    return diff(why, n, "%s.%s: want %s, got %s", path, field, w, g);
}

int model_cmp_kv(char *why, size_t n, const char *path, const Keel__KeyValue *w,
                 const Keel__KeyValue *g)
{
    if (w == NULL || g == NULL) {
        if (w == g)
            return 0;
        return diff(why, n, "%s: want %s, got %s", path, w ? "a key-value" : "none",
                    g ? "a key-value" : "none");
    }
    return cmp_bytes(why, n, path, "key", w->key, g->key) ||
           cmp_i64(why, n, path, "create_revision", w->create_revision, g->create_revision) ||
           cmp_i64(why, n, path, "mod_revision", w->mod_revision, g->mod_revision) ||
           cmp_i64(why, n, path, "version", w->version, g->version) ||
           cmp_bytes(why, n, path, "value", w->value, g->value) ||
           cmp_i64(why, n, path, "lease", w->lease, g->lease);
}

static int present(char *why, size_t n, const char *path, const void *w, const void *g)
{
    if ((w == NULL) == (g == NULL))
        return 0;
    return diff(why, n, "%s: want %s, got %s", path, w ? "present" : "absent",
                g ? "present" : "absent");
}

static int cmp_range_exact(char *why, size_t n, const char *path, const Keel__RangeResponse *w,
                           const Keel__RangeResponse *g)
{
    if (present(why, n, path, w, g))
        return 1;
    if (w == NULL)
        return 0;
    if (cmp_i64(why, n, path, "count", w->count, g->count) ||
        cmp_i64(why, n, path, "more", w->more, g->more) ||
        cmp_i64(why, n, path, "n_kvs", (int64_t)w->n_kvs, (int64_t)g->n_kvs))
        return 1;
    char p[PATH_MAX_];
    for (size_t i = 0; i < w->n_kvs; i++) {
        subpath(p, sizeof(p), "%s.kvs[%zu]", path, i);
        if (model_cmp_kv(why, n, p, w->kvs[i], g->kvs[i]))
            return 1;
    }
    return 0;
}

static int cmp_txn(char *why, size_t n, const char *path, const Keel__TxnResponse *w,
                   const Keel__TxnResponse *g);

static int cmp_response_op(char *why, size_t n, const char *path, const Keel__ResponseOp *w,
                           const Keel__ResponseOp *g)
{
    if (present(why, n, path, w, g))
        return 1;
    if (w == NULL)
        return 0;
    if (cmp_i64(why, n, path, "response_case", w->response_case, g->response_case))
        return 1;
    char p[PATH_MAX_];
    switch (w->response_case) {
    case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
        subpath(p, sizeof(p), "%s.response_range", path);
        return cmp_range_exact(why, n, p, w->response_range, g->response_range);
    case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
        subpath(p, sizeof(p), "%s.response_put", path);
        if (present(why, n, p, w->response_put, g->response_put))
            return 1;
        subpath(p, sizeof(p), "%s.response_put.prev_kv", path);
        return model_cmp_kv(why, n, p, w->response_put->prev_kv, g->response_put->prev_kv);
    case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE: {
        const Keel__DeleteRangeResponse *wd = w->response_delete_range;
        const Keel__DeleteRangeResponse *gd = g->response_delete_range;
        subpath(p, sizeof(p), "%s.response_delete_range", path);
        if (present(why, n, p, wd, gd) || cmp_i64(why, n, p, "deleted", wd->deleted, gd->deleted) ||
            cmp_i64(why, n, p, "n_prev_kvs", (int64_t)wd->n_prev_kvs, (int64_t)gd->n_prev_kvs))
            return 1;
        for (size_t i = 0; i < wd->n_prev_kvs; i++) {
            subpath(p, sizeof(p), "%s.response_delete_range.prev_kvs[%zu]", path, i);
            if (model_cmp_kv(why, n, p, wd->prev_kvs[i], gd->prev_kvs[i]))
                return 1;
        }
        return 0;
    }
    case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
        subpath(p, sizeof(p), "%s.response_txn", path);
        return cmp_txn(why, n, p, w->response_txn, g->response_txn);
    default:
        return 0;
    }
}

static int cmp_txn(char *why, size_t n, const char *path, const Keel__TxnResponse *w,
                   const Keel__TxnResponse *g)
{
    if (present(why, n, path, w, g))
        return 1;
    if (cmp_i64(why, n, path, "succeeded", !!w->succeeded, !!g->succeeded) ||
        cmp_i64(why, n, path, "n_responses", (int64_t)w->n_responses, (int64_t)g->n_responses))
        return 1;
    char p[PATH_MAX_];
    for (size_t i = 0; i < w->n_responses; i++) {
        subpath(p, sizeof(p), "%s.responses[%zu]", path, i);
        if (cmp_response_op(why, n, p, w->responses[i], g->responses[i]))
            return 1;
    }
    return 0;
}

int model_cmp_events(char *why, size_t n, const char *path, Keel__Event *const *w, size_t nw,
                     Keel__Event *const *g, size_t ng, int64_t lenient_prev_rev)
{
    char p[PATH_MAX_];
    for (size_t i = 0; i < nw && i < ng; i++) {
        subpath(p, sizeof(p), "%s[%zu]", path, i);
        if (present(why, n, p, w[i], g[i]) || cmp_i64(why, n, p, "type", w[i]->type, g[i]->type))
            return 1;
        subpath(p, sizeof(p), "%s[%zu].kv", path, i);
        if (model_cmp_kv(why, n, p, w[i]->kv, g[i]->kv))
            return 1;
        subpath(p, sizeof(p), "%s[%zu].prev_kv", path, i);
        if (g[i]->prev_kv == NULL && w[i]->kv != NULL && w[i]->kv->mod_revision == lenient_prev_rev)
            continue;
        if (model_cmp_kv(why, n, p, w[i]->prev_kv, g[i]->prev_kv))
            return 1;
    }
    if (nw != ng)
        return diff(why, n, "%s: want %zu events, got %zu", path, nw, ng);
    return 0;
}

int model_cmp_result(char *why, size_t n, const struct keel_apply_result *w,
                     const struct keel_apply_result *g)
{
    const char *path = "result";
    if (cmp_i64(why, n, path, "skipped", w->skipped, g->skipped))
        return 1;
    if (w->skipped)
        return cmp_i64(why, n, path, "err", 0, g->err) ||
               cmp_i64(why, n, path, "n_events", 0, (int64_t)g->n_events) ||
               present(why, n, "result.response", NULL, g->response);
    if (w->err != g->err)
        return diff(why, n, "result.err: want %s, got %s (%s)", keel_err_name(w->err),
                    keel_err_name(g->err), g->msg ? g->msg : "");
    if (cmp_i64(why, n, path, "revision", w->revision, g->revision))
        return 1;
    if (w->err != 0) {
        if (g->msg == NULL)
            return diff(why, n, "result.msg: none for %s", keel_err_name(g->err));
        return cmp_i64(why, n, path, "n_events", 0, (int64_t)g->n_events);
    }
    if (present(why, n, "result.response", w->response, g->response))
        return 1;
    const Keel__Response *wr = w->response, *gr = g->response;
    if (cmp_i64(why, n, "result.response", "body_case", wr->body_case, gr->body_case))
        return 1;
    int d = 0;
    switch (wr->body_case) {
    case KEEL__RESPONSE__BODY_PUT:
        d = present(why, n, "result.response.put", wr->put, gr->put) ||
            model_cmp_kv(why, n, "result.response.put.prev_kv", wr->put->prev_kv, gr->put->prev_kv);
        break;
    case KEEL__RESPONSE__BODY_DELETE_RANGE: {
        Keel__ResponseOp wo = KEEL__RESPONSE_OP__INIT, go = KEEL__RESPONSE_OP__INIT;
        wo.response_case = go.response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
        wo.response_delete_range = wr->delete_range;
        go.response_delete_range = gr->delete_range;
        d = cmp_response_op(why, n, "result.response", &wo, &go);
        break;
    }
    case KEEL__RESPONSE__BODY_TXN:
        d = cmp_txn(why, n, "result.response.txn", wr->txn, gr->txn);
        break;
    case KEEL__RESPONSE__BODY_LEASE_GRANT:
        d = present(why, n, "result.response.lease_grant", wr->lease_grant, gr->lease_grant) ||
            cmp_i64(why, n, "result.response.lease_grant", "ID", wr->lease_grant->id,
                    gr->lease_grant->id) ||
            cmp_i64(why, n, "result.response.lease_grant", "TTL", wr->lease_grant->ttl,
                    gr->lease_grant->ttl);
        if (!d && gr->lease_grant->error != NULL && gr->lease_grant->error[0] != '\0')
            d = diff(why, n, "result.response.lease_grant.error: want \"\", got \"%s\"",
                     gr->lease_grant->error);
        break;
    case KEEL__RESPONSE__BODY_COMPACTION:
        d = present(why, n, "result.response.compaction", wr->compaction, gr->compaction);
        break;
    case KEEL__RESPONSE__BODY_LEASE_REVOKE:
        d = present(why, n, "result.response.lease_revoke", wr->lease_revoke, gr->lease_revoke);
        break;
    default:
        break;
    }
    if (d)
        return 1;
    return model_cmp_events(why, n, "result.events", w->events, w->n_events, g->events, g->n_events,
                            -1);
}

static size_t find_kv(const Keel__RangeResponse *all, const Keel__KeyValue *kv)
{
    size_t lo = 0, hi = all->n_kvs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bcmp3(all->kvs[mid]->key.data, all->kvs[mid]->key.len, kv->key.data, kv->key.len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < all->n_kvs &&
        bcmp3(all->kvs[lo]->key.data, all->kvs[lo]->key.len, kv->key.data, kv->key.len) == 0)
        return lo;
    return SIZE_MAX;
}

int model_cmp_range(char *why, size_t n, const Keel__RangeRequest *req,
                    const Keel__RangeResponse *all, const Keel__RangeResponse *w,
                    const Keel__RangeResponse *g)
{
    const char *path = "range";
    if (req->sort_order == KEEL__RANGE_REQUEST__SORT_ORDER__NONE ||
        req->sort_target == KEEL__RANGE_REQUEST__SORT_TARGET__KEY || all == NULL)
        return cmp_range_exact(why, n, path, w, g);
    if (present(why, n, path, w, g) || cmp_i64(why, n, path, "count", w->count, g->count) ||
        cmp_i64(why, n, path, "more", w->more, g->more) ||
        cmp_i64(why, n, path, "n_kvs", (int64_t)w->n_kvs, (int64_t)g->n_kvs))
        return 1;
    /* Ties may come in any order. Position by position the sort values (taken from the full
     * key-values in all, as keys_only hides values) must match the model's, and each kv must be
     * the key's state at that revision, each key once. */
    unsigned char *seen = calloc(all->n_kvs + 1, 1);
    if (seen == NULL)
        abort();
    int d = 0;
    char p[PATH_MAX_];
    for (size_t i = 0; i < g->n_kvs && !d; i++) {
        subpath(p, sizeof(p), "%s.kvs[%zu]", path, i);
        size_t gi = find_kv(all, g->kvs[i]), wi = find_kv(all, w->kvs[i]);
        if (gi == SIZE_MAX) {
            d = diff(why, n, "%s: key not in the range at that revision", p);
            break;
        }
        if (wi == SIZE_MAX)
            abort(); /* the model contradicts itself */
        if (kv_target_cmp(all->kvs[wi], all->kvs[gi], req->sort_target) != 0) {
            d = diff(why, n, "%s: sort value differs from the model's at this position", p);
            break;
        }
        if (seen[gi]++) {
            d = diff(why, n, "%s: key returned twice", p);
            break;
        }
        Keel__KeyValue want = *all->kvs[gi];
        if (req->keys_only)
            want.value.len = 0;
        d = model_cmp_kv(why, n, p, &want, g->kvs[i]);
    }
    free(seen);
    return d;
}

/* ---------------------------------------------------------------------------------------
 * Printing
 */

void model_dump_bytes(FILE *f, const uint8_t *p, size_t n)
{
    char buf[256];
    fmt_bytes(buf, sizeof(buf), p, n);
    fputs(buf, f);
}

static void ind(FILE *f, int indent)
{
    fprintf(f, "%*s", indent, "");
}

void model_dump_kv(FILE *f, int indent, const Keel__KeyValue *kv)
{
    ind(f, indent);
    if (kv == NULL) {
        fputs("(none)\n", f);
        return;
    }
    fputs("{key ", f);
    model_dump_bytes(f, kv->key.data, kv->key.len);
    fprintf(f, " create %" PRId64 " mod %" PRId64 " ver %" PRId64 " lease %" PRId64 " value ",
            kv->create_revision, kv->mod_revision, kv->version, kv->lease);
    model_dump_bytes(f, kv->value.data, kv->value.len);
    fputs("}\n", f);
}

static void dump_range_resp(FILE *f, int indent, const Keel__RangeResponse *r)
{
    ind(f, indent);
    if (r == NULL) {
        fputs("range (none)\n", f);
        return;
    }
    fprintf(f, "range count %" PRId64 " more %d n_kvs %zu\n", r->count, (int)r->more, r->n_kvs);
    for (size_t i = 0; i < r->n_kvs; i++)
        model_dump_kv(f, indent + 2, r->kvs[i]);
}

void model_dump_range(FILE *f, const Keel__RangeResponse *r)
{
    dump_range_resp(f, 2, r);
}

static void dump_span(FILE *f, ProtobufCBinaryData k, ProtobufCBinaryData e)
{
    model_dump_bytes(f, k.data, k.len);
    if (e.len > 0) {
        fputs(" .. ", f);
        model_dump_bytes(f, e.data, e.len);
    }
}

static void dump_range_req(FILE *f, int indent, const Keel__RangeRequest *r)
{
    ind(f, indent);
    fputs("range ", f);
    dump_span(f, r->key, r->range_end);
    fprintf(f, " rev %" PRId64 " limit %" PRId64 " sort %d/%d keys_only %d count_only %d\n",
            r->revision, r->limit, (int)r->sort_order, (int)r->sort_target, (int)r->keys_only,
            (int)r->count_only);
}

void model_dump_range_request(FILE *f, const Keel__RangeRequest *r)
{
    dump_range_req(f, 2, r);
}

static void dump_put_req(FILE *f, int indent, const Keel__PutRequest *p)
{
    ind(f, indent);
    fputs("put ", f);
    model_dump_bytes(f, p->key.data, p->key.len);
    fputs(" = ", f);
    model_dump_bytes(f, p->value.data, p->value.len);
    fprintf(f, " lease %" PRId64 " prev_kv %d ignore_value %d ignore_lease %d\n", p->lease,
            (int)p->prev_kv, (int)p->ignore_value, (int)p->ignore_lease);
}

static void dump_del_req(FILE *f, int indent, const Keel__DeleteRangeRequest *d)
{
    ind(f, indent);
    fputs("delete ", f);
    dump_span(f, d->key, d->range_end);
    fprintf(f, " prev_kv %d\n", (int)d->prev_kv);
}

static void dump_txn_req(FILE *f, int indent, const Keel__TxnRequest *t)
{
    static const char *const targets[] = {"version", "create", "mod", "value", "lease"};
    static const char *const results[] = {"==", ">", "<", "!="};
    ind(f, indent);
    fputs("txn\n", f);
    for (size_t i = 0; i < t->n_compare; i++) {
        const Keel__Compare *c = t->compare[i];
        ind(f, indent + 2);
        fputs("if ", f);
        dump_span(f, c->key, c->range_end);
        fprintf(f, " %s %s ", (unsigned)c->target < 5 ? targets[c->target] : "?",
                (unsigned)c->result < 4 ? results[c->result] : "?");
        if (c->target == KEEL__COMPARE__COMPARE_TARGET__VALUE)
            model_dump_bytes(f, c->value.data, c->value.len);
        else
            fprintf(f, "%" PRId64, c->version);
        fprintf(f, " (union case %d)\n", (int)c->target_union_case);
    }
    for (int b = 0; b < 2; b++) {
        Keel__RequestOp **ops = b == 0 ? t->success : t->failure;
        size_t n = b == 0 ? t->n_success : t->n_failure;
        ind(f, indent + 2);
        fputs(b == 0 ? "then\n" : "else\n", f);
        for (size_t i = 0; i < n; i++) {
            const Keel__RequestOp *op = ops[i];
            switch (op->request_case) {
            case KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE:
                dump_range_req(f, indent + 4, op->request_range);
                break;
            case KEEL__REQUEST_OP__REQUEST_REQUEST_PUT:
                dump_put_req(f, indent + 4, op->request_put);
                break;
            case KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                dump_del_req(f, indent + 4, op->request_delete_range);
                break;
            case KEEL__REQUEST_OP__REQUEST_REQUEST_TXN:
                dump_txn_req(f, indent + 4, op->request_txn);
                break;
            default:
                ind(f, indent + 4);
                fputs("(empty op)\n", f);
                break;
            }
        }
    }
}

void model_dump_command(FILE *f, const Keel__Command *cmd)
{
    switch (cmd->op_case) {
    case KEEL__COMMAND__OP_PUT:
        dump_put_req(f, 2, cmd->put);
        break;
    case KEEL__COMMAND__OP_DELETE_RANGE:
        dump_del_req(f, 2, cmd->delete_range);
        break;
    case KEEL__COMMAND__OP_TXN:
        dump_txn_req(f, 2, cmd->txn);
        break;
    case KEEL__COMMAND__OP_COMPACTION:
        fprintf(f, "  compact %" PRId64 "\n", cmd->compaction->revision);
        break;
    case KEEL__COMMAND__OP_LEASE_GRANT:
        fprintf(f, "  lease grant ID %" PRId64 " TTL %" PRId64 "\n", cmd->lease_grant->id,
                cmd->lease_grant->ttl);
        break;
    case KEEL__COMMAND__OP_LEASE_REVOKE:
        fprintf(f, "  lease revoke ID %" PRId64 "\n", cmd->lease_revoke->id);
        break;
    default:
        fprintf(f, "  command op %d\n", (int)cmd->op_case);
        break;
    }
}

static void dump_txn_resp(FILE *f, int indent, const Keel__TxnResponse *t);

static void dump_response_op(FILE *f, int indent, const Keel__ResponseOp *o)
{
    switch (o->response_case) {
    case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
        dump_range_resp(f, indent, o->response_range);
        break;
    case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
        ind(f, indent);
        fputs("put prev_kv:\n", f);
        model_dump_kv(f, indent + 2, o->response_put ? o->response_put->prev_kv : NULL);
        break;
    case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
        ind(f, indent);
        if (o->response_delete_range == NULL) {
            fputs("delete (none)\n", f);
            break;
        }
        fprintf(f, "delete deleted %" PRId64 " prev_kvs %zu\n", o->response_delete_range->deleted,
                o->response_delete_range->n_prev_kvs);
        for (size_t i = 0; i < o->response_delete_range->n_prev_kvs; i++)
            model_dump_kv(f, indent + 2, o->response_delete_range->prev_kvs[i]);
        break;
    case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
        dump_txn_resp(f, indent, o->response_txn);
        break;
    default:
        ind(f, indent);
        fprintf(f, "response op case %d\n", (int)o->response_case);
        break;
    }
}

static void dump_txn_resp(FILE *f, int indent, const Keel__TxnResponse *t)
{
    ind(f, indent);
    if (t == NULL) {
        fputs("txn (none)\n", f);
        return;
    }
    fprintf(f, "txn succeeded %d responses %zu\n", (int)t->succeeded, t->n_responses);
    for (size_t i = 0; i < t->n_responses; i++)
        if (t->responses[i] != NULL)
            dump_response_op(f, indent + 2, t->responses[i]);
}

void model_dump_events(FILE *f, int indent, Keel__Event *const *ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ind(f, indent);
        fprintf(f, "event %zu %s\n", i,
                ev[i]->type == KEEL__EVENT__EVENT_TYPE__DELETE ? "DELETE" : "PUT");
        model_dump_kv(f, indent + 4, ev[i]->kv);
        ind(f, indent + 2);
        fputs("prev:\n", f);
        model_dump_kv(f, indent + 4, ev[i]->prev_kv);
    }
}

void model_dump_result(FILE *f, const struct keel_apply_result *r)
{
    fprintf(f, "  skipped %d err %s revision %" PRId64 " events %zu\n", r->skipped,
            keel_err_name(r->err), r->revision, r->n_events);
    if (r->err != 0 && r->msg != NULL)
        fprintf(f, "  msg: %s\n", r->msg);
    const Keel__Response *resp = r->response;
    if (resp != NULL) {
        Keel__ResponseOp o = KEEL__RESPONSE_OP__INIT;
        switch (resp->body_case) {
        case KEEL__RESPONSE__BODY_PUT:
            o.response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
            o.response_put = resp->put;
            dump_response_op(f, 2, &o);
            break;
        case KEEL__RESPONSE__BODY_DELETE_RANGE:
            o.response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
            o.response_delete_range = resp->delete_range;
            dump_response_op(f, 2, &o);
            break;
        case KEEL__RESPONSE__BODY_TXN:
            dump_txn_resp(f, 2, resp->txn);
            break;
        case KEEL__RESPONSE__BODY_LEASE_GRANT:
            if (resp->lease_grant != NULL)
                fprintf(f, "  lease_grant ID %" PRId64 " TTL %" PRId64 "\n", resp->lease_grant->id,
                        resp->lease_grant->ttl);
            break;
        default:
            fprintf(f, "  response body %d\n", (int)resp->body_case);
            break;
        }
    }
    model_dump_events(f, 2, r->events, r->n_events);
}

/* ---------------------------------------------------------------------------------------
 * Generator
 */

#define GEN_MAX_KEYS 200
#define GEN_LONG_KEY 511

static uint8_t gen_pool[4096];
static ProtobufCBinaryData gen_keys[GEN_MAX_KEYS];
static size_t gen_n_keys;

static void gen_add(size_t *used, const void *p, size_t n)
{
    if (gen_n_keys == GEN_MAX_KEYS || *used + n > sizeof(gen_pool))
        abort();
    memcpy(gen_pool + *used, p, n);
    gen_keys[gen_n_keys].data = gen_pool + *used;
    gen_keys[gen_n_keys].len = n;
    gen_n_keys++;
    *used += n;
}

/* Prefix families of unequal lengths so prefix ranges and byte order both matter, plus keys with
 * zero and 0xff bytes and one of the maximum length. */
static void gen_keys_init(void)
{
    if (gen_n_keys > 0)
        return;
    size_t used = 0;
    char buf[32];
    for (int i = 0; i < 60; i++)
        gen_add(&used, buf, (size_t)snprintf(buf, sizeof(buf), "a/%d", i));
    for (int i = 0; i < 50; i++)
        gen_add(&used, buf, (size_t)snprintf(buf, sizeof(buf), "b/%02d", i));
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 10; j++)
            gen_add(&used, buf, (size_t)snprintf(buf, sizeof(buf), "c/%d/%d", i, j));
    static const struct {
        const char *p;
        size_t n;
    } odd[] = {{"a", 1},        {"a/", 2},       {"b", 1},  {"c", 1},    {"d", 1},
               {"\0", 1},       {"\0\1", 2},     {"\1", 1}, {"k\0z", 3}, {"\xff", 1},
               {"\xff\xff", 2}, {"\xfe\xff", 2}, {"zz", 2}};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        gen_add(&used, odd[i].p, odd[i].n);
    uint8_t longk[GEN_LONG_KEY];
    memset(longk, '#', sizeof(longk));
    longk[0] = 'm';
    gen_add(&used, longk, sizeof(longk));
}

size_t model_gen_key_count(void)
{
    gen_keys_init();
    return gen_n_keys;
}

ProtobufCBinaryData model_gen_key(size_t i)
{
    gen_keys_init();
    return gen_keys[i];
}

static uint64_t rnd(struct model_gen *g, uint64_t n)
{
    return n ? tu_rand(g->rng) % n : 0;
}

static int chance(struct model_gen *g, unsigned pct)
{
    return rnd(g, 100) < pct;
}

static ProtobufCBinaryData pick_key(struct model_gen *g)
{
    gen_keys_init();
    return gen_keys[rnd(g, gen_n_keys)];
}

static ProtobufCBinaryData gen_value(struct model_gen *g)
{
    /* Mostly tiny values from a tiny alphabet, so value compares meet equal values and common
     * prefixes; sometimes values that take LMDB overflow pages. */
    static const uint8_t alpha[] = {'a', 'b', 'c', 0, 0xff};
    uint64_t r = rnd(g, 100);
    size_t n;
    int small = 0;
    if (r < 8) {
        n = 0;
    } else if (r < 70) {
        n = 1 + rnd(g, 6);
        small = 1;
    } else if (r < 97) {
        n = 7 + rnd(g, 58);
    } else {
        n = 65 + rnd(g, 2500);
    }
    uint8_t *p = anew(g->a, n);
    for (size_t i = 0; i < n; i++)
        p[i] = small ? alpha[rnd(g, sizeof(alpha))] : (uint8_t)(' ' + rnd(g, 95));
    ProtobufCBinaryData b = {.len = n, .data = p};
    return b;
}

static ProtobufCBinaryData inf_end(struct model_gen *g)
{
    uint8_t *z = anew(g->a, 1);
    z[0] = 0;
    ProtobufCBinaryData b = {.len = 1, .data = z};
    return b;
}

/* key + "\0": the end of the span holding key alone. */
static ProtobufCBinaryData key_succ(struct keel_arena *a, ProtobufCBinaryData k)
{
    uint8_t *e = anew(a, k.len + 1);
    if (k.len > 0)
        memcpy(e, k.data, k.len);
    e[k.len] = 0;
    ProtobufCBinaryData b = {.len = k.len + 1, .data = e};
    return b;
}

static ProtobufCBinaryData prefix_end(struct model_gen *g, const uint8_t *p, size_t n)
{
    uint8_t *e = anew(g->a, n + 1);
    memcpy(e, p, n);
    while (n > 0 && e[n - 1] == 0xff)
        n--;
    if (n == 0)
        return inf_end(g);
    e[n - 1]++;
    ProtobufCBinaryData b = {.len = n, .data = e};
    return b;
}

static void gen_span_mode(struct model_gen *g, ProtobufCBinaryData *key, ProtobufCBinaryData *end,
                          int allow_all)
{
    ProtobufCBinaryData none = {0, NULL};
    ProtobufCBinaryData k = pick_key(g);
    uint64_t r = rnd(g, 100);
    *key = k;
    *end = none;
    if (r < 45)
        return;
    if (r < 75) {
        ProtobufCBinaryData k2 = pick_key(g);
        int c = bcmp3(k.data, k.len, k2.data, k2.len);
        if (c == 0) {
            if (k.len < KEEL_MAX_KEY_BYTES)
                *end = key_succ(g->a, k);
        } else if (c < 0) {
            *end = k2;
        } else {
            *key = k2;
            *end = k;
        }
        return;
    }
    if (r < 87) {
        size_t plen = 1 + rnd(g, k.len < 3 ? k.len : 3);
        key->len = plen;
        *end = prefix_end(g, k.data, plen);
        return;
    }
    if (r < 94) {
        *end = inf_end(g);
        return;
    }
    if (r < 97 || !allow_all) {
        /* A range_end is held to the key length limit too. */
        if (k.len < KEEL_MAX_KEY_BYTES)
            *end = key_succ(g->a, k);
        return;
    }
    key->len = 0;
    key->data = NULL;
    *end = inf_end(g);
}

void model_gen_span(struct model_gen *g, ProtobufCBinaryData *key, ProtobufCBinaryData *end)
{
    gen_span_mode(g, key, end, 1);
}

/* Key intervals a txn branch has written, [s, e) or [s, inf). */
struct ival {
    const uint8_t *s;
    size_t sl;
    const uint8_t *e;
    size_t el;
    int inf;
};

#define CLAIMS_MAX 64

struct claims {
    struct ival v[CLAIMS_MAX];
    size_t n;
};

static struct ival span_ival(struct keel_arena *a, ProtobufCBinaryData key, ProtobufCBinaryData end)
{
    struct ival iv = {.s = key.data, .sl = key.len};
    if (end.len == 0) {
        ProtobufCBinaryData e = key_succ(a, key);
        iv.e = e.data;
        iv.el = e.len;
    } else if (is_inf_end(end.data, end.len)) {
        iv.inf = 1;
    } else {
        iv.e = end.data;
        iv.el = end.len;
    }
    return iv;
}

static int ival_overlap(const struct ival *a, const struct ival *b)
{
    int a_first = !a->inf && bcmp3(a->e, a->el, b->s, b->sl) <= 0;
    int b_first = !b->inf && bcmp3(b->e, b->el, a->s, a->sl) <= 0;
    return !a_first && !b_first;
}

/* Whether iv is clear of every claim. A full list refuses everything, so that no write can slip
 * past a claim that was not recorded. */
static int claims_free(const struct claims *c, const struct ival *iv)
{
    if (c->n == CLAIMS_MAX)
        return 0;
    for (size_t i = 0; i < c->n; i++)
        if (ival_overlap(&c->v[i], iv))
            return 0;
    return 1;
}

static int64_t gen_rev(struct model_gen *g)
{
    return g->m ? model_revision(g->m) : g->rev_hint;
}

static int64_t existing_lease(struct model_gen *g)
{
    if (g->m == NULL)
        return 1 + (int64_t)rnd(g, 10);
    size_t n = model_lease_count(g->m);
    return n ? model_lease_at(g->m, rnd(g, n)).id : 0;
}

static int64_t missing_lease(struct model_gen *g)
{
    if (g->m == NULL)
        return 1 + (int64_t)rnd(g, 10);
    for (int i = 0; i < 8; i++) {
        int64_t id = 1 + (int64_t)rnd(g, 16);
        if (lease_find(g->m, id) == NULL)
            return id;
    }
    return 1000000 + (int64_t)rnd(g, 1000);
}

static Keel__PutRequest *gen_put(struct model_gen *g, ProtobufCBinaryData key)
{
    Keel__PutRequest *p = anew(g->a, sizeof(*p));
    keel__put_request__init(p);
    p->key = key;
    p->prev_kv = chance(g, 50);
    /* Keep KEYNOTFOUND from failing most txns: a missing key rarely gets the ignore flags. */
    struct model_kv kv;
    unsigned pct = g->m != NULL && !model_get(g->m, key.data, key.len, &kv) ? 1 : 6;
    p->ignore_value = chance(g, pct);
    p->ignore_lease = chance(g, pct);
    if (!p->ignore_value)
        p->value = gen_value(g);
    /* One possible failure per put: which check comes first is not part of the contract. */
    if (p->ignore_lease) {
        p->lease = 0;
    } else if (p->ignore_value) {
        p->lease = g->m != NULL && chance(g, 50) ? existing_lease(g) : 0;
    } else {
        uint64_t r = rnd(g, 100);
        p->lease = r < 60 ? 0 : r < 95 ? existing_lease(g) : missing_lease(g);
    }
    return p;
}

static Keel__DeleteRangeRequest *gen_del(struct model_gen *g, ProtobufCBinaryData key,
                                         ProtobufCBinaryData end)
{
    Keel__DeleteRangeRequest *d = anew(g->a, sizeof(*d));
    keel__delete_range_request__init(d);
    d->key = key;
    d->range_end = end;
    d->prev_kv = chance(g, 50);
    return d;
}

static ProtobufCBinaryData copy_bytes(struct model_gen *g, const uint8_t *p, size_t n)
{
    return abytes(g->a, p, n);
}

static Keel__Compare *gen_compare(struct model_gen *g, const struct claims *avoid)
{
    ProtobufCBinaryData key, end = {0, NULL};
    int found = 0;
    for (int tries = 0; tries < 8 && !found; tries++) {
        if (chance(g, 85)) {
            key = pick_key(g);
            end.len = 0;
            end.data = NULL;
        } else {
            gen_span_mode(g, &key, &end, 0);
        }
        struct ival iv = span_ival(g->a, key, end);
        found = avoid == NULL || claims_free(avoid, &iv);
    }
    if (!found)
        return NULL;
    Keel__Compare *c = anew(g->a, sizeof(*c));
    keel__compare__init(c);
    c->key = key;
    c->range_end = end;
    c->target = (Keel__Compare__CompareTarget)rnd(g, 5);
    c->result = (Keel__Compare__CompareResult)rnd(g, 4);
    struct model_kv kv;
    int have = g->m != NULL && end.len == 0 && model_get(g->m, key.data, key.len, &kv);
    int near = have && chance(g, 60);
    int64_t rev = gen_rev(g);
    switch (c->target) {
    case KEEL__COMPARE__COMPARE_TARGET__VERSION:
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
        c->version = near ? kv.version + (int64_t)rnd(g, 3) - 1 : (int64_t)rnd(g, 4);
        break;
    case KEEL__COMPARE__COMPARE_TARGET__CREATE:
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_CREATE_REVISION;
        c->create_revision =
            near ? kv.create_revision + (int64_t)rnd(g, 3) - 1 : (int64_t)rnd(g, (uint64_t)rev + 2);
        break;
    case KEEL__COMPARE__COMPARE_TARGET__MOD:
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_MOD_REVISION;
        c->mod_revision =
            near ? kv.mod_revision + (int64_t)rnd(g, 3) - 1 : (int64_t)rnd(g, (uint64_t)rev + 2);
        break;
    case KEEL__COMPARE__COMPARE_TARGET__VALUE:
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
        c->value = near ? copy_bytes(g, kv.value, kv.value_len) : gen_value(g);
        break;
    default:
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_LEASE;
        c->lease = near ? kv.lease : chance(g, 50) ? 0 : existing_lease(g);
        break;
    }
    return c;
}

Keel__RangeRequest *model_gen_range(struct model_gen *g, int flags)
{
    Keel__RangeRequest *r = anew(g->a, sizeof(*r));
    keel__range_request__init(r);
    gen_span_mode(g, &r->key, &r->range_end, 1);
    if (g->m != NULL) {
        int64_t rev = model_revision(g->m), comp = model_compact_revision(g->m);
        int64_t lo = comp > 1 ? comp : 1;
        uint64_t u = rnd(g, 100);
        if (u < 45 || rev == 0)
            r->revision = 0;
        else if (u < 48)
            r->revision = -1 - (int64_t)rnd(g, 3);
        else if (u < 83)
            r->revision = lo + (int64_t)rnd(g, (uint64_t)(rev - lo + 1));
        else if (u < 88)
            r->revision = comp > 0 ? comp : rev;
        else if (u < 94 && comp > 1 && (flags & MODEL_GEN_COMPACTED_REV))
            r->revision = 1 + (int64_t)rnd(g, (uint64_t)(comp - 1));
        else if (u >= 94 && (flags & MODEL_GEN_FUTURE_REV))
            r->revision = rev + 1 + (int64_t)rnd(g, 3);
        else
            r->revision = rev;
    }
    if (chance(g, 30))
        r->limit = 1 + (int64_t)rnd(g, 10);
    r->keys_only = chance(g, 10);
    if (chance(g, 7)) {
        r->count_only = 1;
        r->limit = 0;
    }
    if (chance(g, 25)) {
        r->sort_order = (Keel__RangeRequest__SortOrder)(1 + rnd(g, 2));
        if (flags & MODEL_GEN_ANY_SORT)
            r->sort_target = (Keel__RangeRequest__SortTarget)rnd(g, 5);
    }
    return r;
}

static Keel__TxnRequest *gen_txn(struct model_gen *g, int depth, struct claims *outer);

static Keel__RequestOp *gen_txn_op(struct model_gen *g, int depth, struct claims *cl)
{
    Keel__RequestOp *op = anew(g->a, sizeof(*op));
    keel__request_op__init(op);
    uint64_t u = rnd(g, 100);
    if (u < 40) {
        for (int tries = 0; tries < 8; tries++) {
            ProtobufCBinaryData key = pick_key(g), none = {0, NULL};
            struct ival iv = span_ival(g->a, key, none);
            if (claims_free(cl, &iv)) {
                cl->v[cl->n++] = iv;
                op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
                op->request_put = gen_put(g, key);
                return op;
            }
        }
    } else if (u < 58) {
        for (int tries = 0; tries < 8; tries++) {
            ProtobufCBinaryData key, end;
            gen_span_mode(g, &key, &end, chance(g, 20));
            struct ival iv = span_ival(g->a, key, end);
            if (g->overlap || claims_free(cl, &iv)) {
                if (!g->overlap)
                    cl->v[cl->n++] = iv;
                op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
                op->request_delete_range = gen_del(g, key, end);
                return op;
            }
        }
    } else if (u >= 90 && depth == 0) {
        op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
        op->request_txn = gen_txn(g, 1, cl);
        return op;
    }
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = model_gen_range(g, g->m != NULL ? MODEL_GEN_COMPACTED_REV : 0);
    if (g->m == NULL)
        op->request_range->revision = 0;
    return op;
}

/*
 * depth 0: compares see the state before the txn; each branch gets its own claims.
 * depth 1 (nested): compares avoid keys the enclosing branch wrote already, so it does not
 * matter whether they are evaluated before the txn or when reached; both nested branches write
 * into the enclosing branch's claims.
 */
static Keel__TxnRequest *gen_txn(struct model_gen *g, int depth, struct claims *outer)
{
    Keel__TxnRequest *t = anew(g->a, sizeof(*t));
    keel__txn_request__init(t);
    size_t nc = rnd(g, 4);
    t->compare = anew(g->a, (nc ? nc : 1) * sizeof(*t->compare));
    for (size_t i = 0; i < nc; i++) {
        Keel__Compare *c = gen_compare(g, depth && !g->overlap ? outer : NULL);
        if (c != NULL)
            t->compare[t->n_compare++] = c;
    }
    for (int b = 0; b < 2; b++) {
        struct claims local = {.n = 0};
        struct claims *cl = depth ? outer : &local;
        size_t n = rnd(g, depth ? 4 : 7);
        Keel__RequestOp **ops = anew(g->a, (n ? n : 1) * sizeof(*ops));
        for (size_t i = 0; i < n; i++)
            ops[i] = gen_txn_op(g, depth, cl);
        if (b == 0) {
            t->success = ops;
            t->n_success = n;
        } else {
            t->failure = ops;
            t->n_failure = n;
        }
    }
    return t;
}

static int64_t gen_compact_rev(struct model_gen *g)
{
    if (g->m == NULL)
        return 1 + (int64_t)rnd(g, (uint64_t)(g->rev_hint > 1 ? g->rev_hint : 1));
    int64_t rev = model_revision(g->m), comp = model_compact_revision(g->m);
    uint64_t u = rnd(g, 100);
    if (u < 75 && rev > comp)
        /* Advance by up to a quarter of the uncompacted window, so a good stretch of history
         * always remains to be read. */
        return comp + 1 + (int64_t)rnd(g, (uint64_t)((rev - comp) / 4 + 1));
    if (u < 85 && comp >= 1)
        return 1 + (int64_t)rnd(g, (uint64_t)comp);
    if (u < 95 || rev == 0)
        return rev + 1 + (int64_t)rnd(g, 5);
    return rev;
}

Keel__Command *model_gen_command(struct model_gen *g)
{
    gen_keys_init();
    g->valid = 1;
    Keel__Command *c = anew(g->a, sizeof(*c));
    keel__command__init(c);
    uint64_t u = rnd(g, 1000);
    if (u < 430) {
        ProtobufCBinaryData key = pick_key(g);
        uint64_t odd = rnd(g, 400);
        if (odd == 0) {
            key.len = 0;
            key.data = NULL;
            g->valid = 0;
        } else if (odd == 1) {
            uint8_t *k = anew(g->a, KEEL_MAX_KEY_BYTES + 1);
            memset(k, 'x', KEEL_MAX_KEY_BYTES + 1);
            key.data = k;
            key.len = KEEL_MAX_KEY_BYTES + 1;
            g->valid = 0;
        }
        c->op_case = KEEL__COMMAND__OP_PUT;
        c->put = gen_put(g, key);
        if (!g->valid) {
            /* The key is the only thing wrong with it. */
            c->put->ignore_value = c->put->ignore_lease = 0;
            c->put->lease = 0;
        }
    } else if (u < 580) {
        ProtobufCBinaryData key, end;
        gen_span_mode(g, &key, &end, chance(g, 30));
        c->op_case = KEEL__COMMAND__OP_DELETE_RANGE;
        c->delete_range = gen_del(g, key, end);
    } else if (u < 880) {
        c->op_case = KEEL__COMMAND__OP_TXN;
        c->txn = gen_txn(g, 0, NULL);
    } else if (u < 892) {
        c->op_case = KEEL__COMMAND__OP_COMPACTION;
        c->compaction = anew(g->a, sizeof(*c->compaction));
        keel__compaction_request__init(c->compaction);
        c->compaction->revision = gen_compact_rev(g);
        c->compaction->physical = 1;
    } else if (u < 945) {
        c->op_case = KEEL__COMMAND__OP_LEASE_GRANT;
        c->lease_grant = anew(g->a, sizeof(*c->lease_grant));
        keel__lease_grant_request__init(c->lease_grant);
        Keel__LeaseGrantRequest *lg = c->lease_grant;
        lg->ttl = 1 + (int64_t)rnd(g, 3600);
        if (g->m == NULL) {
            lg->id = 1 + (int64_t)rnd(g, 10);
        } else {
            uint64_t r = rnd(g, 100);
            if (r < 20) {
                lg->id = 0;
            } else if (r < 90) {
                lg->id = 1 + (int64_t)rnd(g, 16);
            } else if (r < 96) {
                lg->id = existing_lease(g);
                if (lg->id == 0)
                    lg->id = 1;
            } else {
                /* One failure at a time: a bad TTL only with an id that is free. */
                lg->id = missing_lease(g);
                lg->ttl = -(int64_t)rnd(g, 3);
                g->valid = 0;
            }
        }
    } else {
        c->op_case = KEEL__COMMAND__OP_LEASE_REVOKE;
        c->lease_revoke = anew(g->a, sizeof(*c->lease_revoke));
        keel__lease_revoke_request__init(c->lease_revoke);
        int64_t id = g->m != NULL && chance(g, 75) ? existing_lease(g) : 0;
        c->lease_revoke->id = id != 0 ? id : 1 + (int64_t)rnd(g, g->m != NULL ? 16 : 10);
    }
    return c;
}
