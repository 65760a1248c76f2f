/* Reads: a key's state at a revision, and Range with etcd's options. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int ks_krange_make(const ProtobufCBinaryData *key, const ProtobufCBinaryData *end, struct krange *r,
                   const char **msg)
{
    r->key.mv_data = key->data;
    r->key.mv_size = key->len;
    r->end.mv_data = end->data;
    r->end.mv_size = end->len;
    if (end->len == 0) {
        r->kind = RANGE_ONE;
        if (key->len == 0) {
            *msg = "key is not provided";
            return KEEL_EINVAL;
        }
    } else if (end->len == 1 && end->data[0] == 0) {
        r->kind = RANGE_FROM;
    } else {
        r->kind = RANGE_SPAN;
    }
    if (key->len > KEEL_MAX_KEY_BYTES) {
        *msg = "key is longer than 511 bytes";
        return KEEL_EKEYTOOLONG;
    }
    return 0;
}

bool ks_krange_contains(const struct krange *r, const MDB_val *k)
{
    int c = ks_val_cmp(k, &r->key);
    switch (r->kind) {
    case RANGE_ONE:
        return c == 0;
    case RANGE_FROM:
        return c >= 0;
    case RANGE_SPAN:
        return c >= 0 && ks_val_cmp(k, &r->end) < 0;
    }
    return false;
}

bool ks_krange_past(const struct krange *r, const MDB_val *k)
{
    switch (r->kind) {
    case RANGE_ONE:
        return ks_val_cmp(k, &r->key) > 0;
    case RANGE_FROM:
        return false;
    case RANGE_SPAN:
        return ks_val_cmp(k, &r->end) >= 0;
    }
    return true;
}

int ks_pvec_push(struct keel_arena *a, struct pvec *pv, void *p)
{
    if (pv->n == pv->cap) {
        size_t cap = pv->cap ? pv->cap * 2 : 8;
        void **nv = keel_arena_alloc(a, cap * sizeof(void *));
        if (nv == NULL)
            return KEEL_ENOMEM;
        if (pv->n)
            memcpy(nv, pv->v, pv->n * sizeof(void *));
        pv->v = nv;
        pv->cap = cap;
    }
    pv->v[pv->n++] = p;
    return 0;
}

static int fetch_record(struct tctx *t, const struct keyrev *at, struct record *rec)
{
    uint8_t rk[REVKEY_LEN];
    ks_revkey_encode(at->rev, at->sub, rk);
    MDB_val k = {REVKEY_LEN, rk}, v;
    int rc = mdb_get(t->txn, t->s->dbi_revs, &k, &v);
    if (rc == MDB_NOTFOUND)
        return KEEL_ECORRUPT; /* a key entry without its record */
    if (rc != 0)
        return ks_mdb_err(rc);
    return ks_record_decode(&v, rec);
}

/* Position c on the key's greatest entry <= rev (0: its last). 0, KEEL_ENOTFOUND, KEEL_E*. */
static int seek_at(MDB_cursor *c, const MDB_val *key, int64_t rev, MDB_val *entry)
{
    MDB_val k = *key;
    int rc = mdb_cursor_get(c, &k, entry, MDB_SET);
    if (rc != 0)
        return ks_mdb_err(rc);
    if (rev <= 0)
        return ks_mdb_err(mdb_cursor_get(c, &k, entry, MDB_LAST_DUP));
    uint8_t probe[KEYREV_LEN];
    ks_keyrev_encode(rev + 1, 0, false, probe);
    MDB_val d = {KEYREV_LEN, probe};
    rc = mdb_cursor_get(c, &k, &d, MDB_GET_BOTH_RANGE);
    if (rc == 0) {
        /* d is the first entry after rev: the one before it is the answer. */
        return ks_mdb_err(mdb_cursor_get(c, &k, entry, MDB_PREV_DUP));
    }
    if (rc != MDB_NOTFOUND)
        return ks_mdb_err(rc);
    /* Every entry is <= rev. A failed GET_BOTH_RANGE may leave c unpositioned: seek again. */
    k = *key;
    rc = mdb_cursor_get(c, &k, entry, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_get(c, &k, entry, MDB_LAST_DUP);
    return ks_mdb_err(rc);
}

/* The key's state from its overlay record r. */
static void ov_state(const struct ov_rec *r, struct kstate *out)
{
    out->found = true;
    out->at.rev = r->rk.rev;
    out->at.sub = r->rk.sub;
    out->at.tombstone = r->tombstone;
    out->exists = !r->tombstone;
    if (out->exists)
        out->rec = r->rec;
}

/*
 * The key's state at rev: from its overlay node (NULL: the overlay has no record of it), else
 * from LMDB through keys (NULL: LMDB has no entry of it either).
 */
static int state_with(struct tctx *t, MDB_cursor *keys, const struct ov_key *node,
                      const MDB_val *key, int64_t rev, bool need_record, struct kstate *out)
{
    memset(out, 0, sizeof(*out));
    /* Every overlay record is newer than the snapshot: the node's newest at or below rev, when
     * there is one, is the answer. */
    const struct ov_rec *r = node != NULL ? ks_overlay_at(node, rev) : NULL;
    if (r != NULL) {
        ov_state(r, out);
        return 0;
    }
    if (keys == NULL)
        return 0;
    MDB_val entry;
    int err = seek_at(keys, key, rev, &entry);
    if (err == KEEL_ENOTFOUND)
        return 0;
    if (err != 0)
        return err;
    if (entry.mv_size != KEYREV_LEN)
        return KEEL_ECORRUPT;
    out->found = true;
    out->at = ks_keyrev_decode(&entry);
    out->exists = !out->at.tombstone;
    if (out->exists && need_record)
        return fetch_record(t, &out->at, &out->rec);
    return 0;
}

static int key_state_opt(struct tctx *t, MDB_cursor *keys, const MDB_val *key, int64_t rev,
                         bool need_record, struct kstate *out)
{
    const struct ov_key *node = t->ov != NULL ? ks_overlay_find(t->ov, key) : NULL;
    return state_with(t, keys, node, key, rev, need_record, out);
}

int ks_key_state(struct tctx *t, MDB_cursor *keys, const MDB_val *key, int64_t rev,
                 struct kstate *out)
{
    return key_state_opt(t, keys, key, rev, true, out);
}

Keel__KeyValue *ks_kv_from_record(struct keel_arena *a, const struct record *r, int64_t mod_rev,
                                  bool keys_only)
{
    Keel__KeyValue *kv = keel_arena_alloc(a, sizeof(*kv));
    if (kv == NULL)
        return NULL;
    keel__key_value__init(kv);
    kv->key.data = keel_arena_memdup(a, r->key.mv_data, r->key.mv_size);
    kv->key.len = r->key.mv_size;
    if (kv->key.data == NULL)
        return NULL;
    kv->create_revision = r->create_revision;
    kv->mod_revision = mod_rev;
    kv->version = r->version;
    kv->lease = r->lease;
    if (!keys_only && r->value.mv_size > 0) {
        kv->value.data = keel_arena_memdup(a, r->value.mv_data, r->value.mv_size);
        if (kv->value.data == NULL)
            return NULL;
        kv->value.len = r->value.mv_size;
    }
    return kv;
}

struct sort_spec {
    Keel__RangeRequest__SortTarget target;
    bool descend;
};

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

static int kv_cmp(const void *pa, const void *pb, void *arg)
{
    const struct sort_spec *sp = arg;
    const Keel__KeyValue *a = *(Keel__KeyValue *const *)pa;
    const Keel__KeyValue *b = *(Keel__KeyValue *const *)pb;
    MDB_val ka = {a->key.len, a->key.data}, kb = {b->key.len, b->key.data};
    MDB_val va = {a->value.len, a->value.data}, vb = {b->value.len, b->value.data};
    int c = 0;
    switch (sp->target) {
    case KEEL__RANGE_REQUEST__SORT_TARGET__VERSION:
        c = cmp_i64(a->version, b->version);
        break;
    case KEEL__RANGE_REQUEST__SORT_TARGET__CREATE:
        c = cmp_i64(a->create_revision, b->create_revision);
        break;
    case KEEL__RANGE_REQUEST__SORT_TARGET__MOD:
        c = cmp_i64(a->mod_revision, b->mod_revision);
        break;
    case KEEL__RANGE_REQUEST__SORT_TARGET__VALUE:
        c = ks_val_cmp(&va, &vb);
        break;
    default:
        break;
    }
    if (sp->descend)
        c = -c;
    if (c == 0) {
        /* Ties keep key order, so the answer does not depend on the sort algorithm. */
        c = ks_val_cmp(&ka, &kb);
        if (sp->descend && sp->target == KEEL__RANGE_REQUEST__SORT_TARGET__KEY)
            c = -c;
    }
    return c;
}

/* Decided on the stored record, before anything is copied out of the map. */
static bool passes_filters(const Keel__RangeRequest *req, const struct kstate *st)
{
    int64_t mod = st->at.rev, create = st->rec.create_revision;
    if (req->min_mod_revision > 0 && mod < req->min_mod_revision)
        return false;
    if (req->max_mod_revision > 0 && mod > req->max_mod_revision)
        return false;
    if (req->min_create_revision > 0 && create < req->min_create_revision)
        return false;
    if (req->max_create_revision > 0 && create > req->max_create_revision)
        return false;
    return true;
}

int ks_range_in(struct tctx *t, const struct meta *m, const Keel__RangeRequest *req,
                struct keel_arena *a, struct ks_budget *budget, Keel__RangeResponse **out)
{
    bool measure = budget != NULL && budget->measure;
    const char *msg;
    struct krange kr;
    int err = ks_krange_make(&req->key, &req->range_end, &kr, &msg);
    if (err != 0)
        return err;
    if (req->revision > m->revision)
        return KEEL_EFUTUREREV;
    if (req->revision > 0 && req->revision < m->compact_revision)
        return KEEL_ECOMPACTED;
    if (req->limit < 0)
        return KEEL_EINVAL;
    int64_t rev = req->revision > 0 ? req->revision : 0;

    struct sort_spec sp = {req->sort_target,
                           req->sort_order == KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND};
    bool key_order = req->sort_target == KEEL__RANGE_REQUEST__SORT_TARGET__KEY &&
                     req->sort_order != KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
    bool filters = req->min_mod_revision > 0 || req->max_mod_revision > 0 ||
                   req->min_create_revision > 0 || req->max_create_revision > 0;
    /* Without sorting or filtering the first `limit` keys are the answer and the rest only
     * need counting; otherwise every key is materialised, then sorted, then cut. */
    bool collect_all = !key_order || filters;
    size_t limit = req->limit > 0 ? (size_t)req->limit : SIZE_MAX;
    bool value_sort = !key_order && req->sort_target == KEEL__RANGE_REQUEST__SORT_TARGET__VALUE;

    Keel__RangeResponse *resp = NULL;
    if (!measure) {
        if ((resp = keel_arena_alloc(a, sizeof(*resp))) == NULL)
            return KEEL_ENOMEM;
        keel__range_response__init(resp);
    }
    struct pvec kvs = {0};
    size_t taken = 0; /* key-values materialised (or, measuring, that would be) */
    int64_t count = 0;
    bool no_value = req->keys_only && !value_sort;

    /* Keys come from two sorted sources merged: LMDB's keys cursor and the overlay's keys
     * (those written since the last commit, some of them new). */
    MDB_cursor *c = t->keys;
    MDB_val k = kr.key, d;
    int rc;
    if (kr.kind == RANGE_ONE)
        rc = mdb_cursor_get(c, &k, &d, MDB_SET);
    else if (k.mv_size == 0)
        rc = mdb_cursor_get(c, &k, &d, MDB_FIRST);
    else
        rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
    const struct ov_key *ok = t->ov != NULL ? ks_overlay_seek(t->ov, &kr.key) : NULL;
    for (;;) {
        bool from_lmdb = rc == 0 && !ks_krange_past(&kr, &k);
        bool from_ov = ok != NULL && !ks_krange_past(&kr, ks_overlay_key(ok));
        if (!from_lmdb && !from_ov)
            break;
        int order = from_lmdb && from_ov ? ks_val_cmp(&k, ks_overlay_key(ok)) : from_lmdb ? -1 : 1;
        MDB_val key = order <= 0 ? k : *ks_overlay_key(ok);
        if (kr.kind == RANGE_ONE && ks_val_cmp(&key, &kr.key) != 0)
            break;
        bool want = !req->count_only && (collect_all || taken < limit);
        struct kstate st;
        /* The merge already holds the key's overlay node, if any (order >= 0), and knows
         * whether LMDB has the key (order <= 0). */
        err = state_with(t, order <= 0 ? c : NULL, order >= 0 ? ok : NULL, &key, rev, want, &st);
        if (err != 0)
            return err;
        if (st.exists) {
            count++;
            if (want && (!filters || passes_filters(req, &st))) {
                size_t cost = ks_kv_bytes(st.rec.key.mv_size, no_value ? 0 : st.rec.value.mv_size);
                if (budget != NULL) {
                    if (cost > budget->left)
                        return KEEL_EREPLYTOOLARGE;
                    budget->left -= cost;
                }
                taken++;
                if (!measure) {
                    /* A value sort needs the values even when only keys are returned. */
                    Keel__KeyValue *kv = ks_kv_from_record(a, &st.rec, st.at.rev, no_value);
                    if (kv == NULL)
                        return KEEL_ENOMEM;
                    if ((err = ks_pvec_push(a, &kvs, kv)) != 0)
                        return err;
                }
            }
        }
        if (kr.kind == RANGE_ONE)
            break;
        if (order <= 0)
            rc = mdb_cursor_get(c, &k, &d, MDB_NEXT_NODUP);
        if (order >= 0)
            ok = ks_overlay_next(ok);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return ks_mdb_err(rc);
    if (measure)
        return 0;

    if (collect_all) {
        if (!key_order && kvs.n > 1)
            qsort_r(kvs.v, kvs.n, sizeof(void *), kv_cmp, &sp);
        resp->more = kvs.n > limit;
    } else {
        resp->more = req->limit > 0 && (size_t)count > limit;
    }
    if (req->count_only)
        resp->more = false;
    resp->n_kvs = kvs.n < limit ? kvs.n : limit;
    if (value_sort && req->keys_only) {
        for (size_t i = 0; i < resp->n_kvs; i++) {
            Keel__KeyValue *kv = kvs.v[i];
            kv->value.data = NULL;
            kv->value.len = 0;
        }
    }
    resp->kvs = (Keel__KeyValue **)kvs.v;
    resp->count = count;
    *out = resp;
    return 0;
}

int keel_store_range(struct keel_store *s, const Keel__RangeRequest *req, struct keel_arena *arena,
                     Keel__RangeResponse **out, int64_t *revision)
{
    struct tctx t;
    struct meta m;
    int err = ks_read_begin(s, &t, &m);
    if (err != 0)
        return err;
    struct ks_budget budget = {.left = KEEL_MAX_REPLY_BYTES};
    err = ks_range_in(&t, &m, req, arena, &budget, out);
    *revision = m.revision;
    ks_read_end(&t);
    return err;
}
