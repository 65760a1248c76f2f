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
    int rc = 0;
    if (t->recs == NULL)
        rc = mdb_cursor_open(t->txn, t->s->dbi_revs, &t->recs);
    if (rc == 0)
        rc = mdb_cursor_get(t->recs, &k, &v, MDB_SET_KEY);
    if (rc == MDB_NOTFOUND)
        return KEEL_ECORRUPT; /* a key entry without its record */
    if (rc != 0)
        return ks_mdb_err(rc);
    return ks_record_decode(&v, rec);
}

/*
 * With c resting on the key (on any of its entries), move it to the key's greatest entry <= rev
 * (0: its last). The newest entry is the answer for most keys at most revisions, so it is tried
 * first. 0, KEEL_ENOTFOUND (no entry <= rev), KEEL_E*.
 */
static int seek_here(MDB_cursor *c, const MDB_val *key, int64_t rev, MDB_val *entry)
{
    MDB_val k;
    int rc = mdb_cursor_get(c, &k, entry, MDB_LAST_DUP);
    if (rc != 0)
        return ks_mdb_err(rc);
    if (rev <= 0 || entry->mv_size != KEYREV_LEN || ks_keyrev_decode(entry).rev <= rev)
        return 0; /* a malformed entry is the caller's to report */
    /* The newest entry is after rev: the one before the first entry after rev is the answer. */
    uint8_t probe[KEYREV_LEN];
    ks_keyrev_encode(rev + 1, 0, false, probe);
    MDB_val d = {KEYREV_LEN, probe};
    k = *key;
    rc = mdb_cursor_get(c, &k, &d, MDB_GET_BOTH_RANGE);
    if (rc == MDB_NOTFOUND)
        return KEEL_ECORRUPT; /* there is one: the last entry is after rev */
    if (rc != 0)
        return ks_mdb_err(rc);
    return ks_mdb_err(mdb_cursor_get(c, &k, entry, MDB_PREV_DUP));
}

/* Position c on the key's greatest entry <= rev (0: its last). 0, KEEL_ENOTFOUND, KEEL_E*. */
static int seek_at(MDB_cursor *c, const MDB_val *key, int64_t rev, MDB_val *entry)
{
    MDB_val k = *key;
    int rc = mdb_cursor_get(c, &k, entry, MDB_SET);
    if (rc != 0)
        return ks_mdb_err(rc);
    return seek_here(c, key, rev, entry);
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
 * from LMDB through keys (NULL: LMDB has no entry of it either; positioned: keys already rests
 * on the key).
 */
static int state_with(struct tctx *t, MDB_cursor *keys, bool positioned, const struct ov_key *node,
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
    int err = positioned ? seek_here(keys, key, rev, &entry) : seek_at(keys, key, rev, &entry);
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
    return state_with(t, keys, false, node, key, rev, need_record, out);
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

/* ---- the keys of a range, in key order ---- */

/* A walk over the keys of a range: LMDB's keys cursor and the overlay's keys (those written
 * since the last commit, some of them new) merged, each key once. */
struct scan {
    struct tctx *t;
    const struct krange *kr;
    MDB_val k, d; /* LMDB's current key (rc == 0) */
    int rc;
    const struct ov_key *ok; /* the overlay's current key, or NULL */
    /* The current key, set by scan_valid: order < 0 only LMDB has it, > 0 only the overlay,
     * 0 both. */
    int order;
    MDB_val key;
};

/* Start at the first key of kr at or after from (NULL: the range's first key). */
static void scan_start(struct scan *sc, struct tctx *t, const struct krange *kr,
                       const MDB_val *from)
{
    sc->t = t;
    sc->kr = kr;
    sc->k = from != NULL ? *from : kr->key;
    if (kr->kind == RANGE_ONE)
        sc->rc = mdb_cursor_get(t->keys, &sc->k, &sc->d, MDB_SET);
    else if (sc->k.mv_size == 0)
        sc->rc = mdb_cursor_get(t->keys, &sc->k, &sc->d, MDB_FIRST);
    else
        sc->rc = mdb_cursor_get(t->keys, &sc->k, &sc->d, MDB_SET_RANGE);
    MDB_val at = from != NULL ? *from : kr->key;
    sc->ok = t->ov != NULL ? ks_overlay_seek(t->ov, &at) : NULL;
}

/* Whether there is a current key (then sc->key and sc->order are set). */
static bool scan_valid(struct scan *sc)
{
    bool from_lmdb = sc->rc == 0 && !ks_krange_past(sc->kr, &sc->k);
    bool from_ov = sc->ok != NULL && !ks_krange_past(sc->kr, ks_overlay_key(sc->ok));
    if (!from_lmdb && !from_ov)
        return false;
    sc->order = from_lmdb && from_ov ? ks_val_cmp(&sc->k, ks_overlay_key(sc->ok))
                : from_lmdb          ? -1
                                     : 1;
    sc->key = sc->order <= 0 ? sc->k : *ks_overlay_key(sc->ok);
    return sc->kr->kind != RANGE_ONE || ks_val_cmp(&sc->key, &sc->kr->key) == 0;
}

/* The current key's state at rev. The merge already holds the key's overlay node, if any
 * (order >= 0), and LMDB's cursor rests on the key when LMDB has it (order <= 0). */
static int scan_state(struct scan *sc, int64_t rev, bool need_record, struct kstate *st)
{
    bool lmdb = sc->order <= 0;
    return state_with(sc->t, lmdb ? sc->t->keys : NULL, lmdb, sc->order >= 0 ? sc->ok : NULL,
                      &sc->key, rev, need_record, st);
}

static void scan_next(struct scan *sc)
{
    if (sc->kr->kind == RANGE_ONE) {
        sc->rc = MDB_NOTFOUND;
        sc->ok = NULL;
        return;
    }
    if (sc->order <= 0)
        sc->rc = mdb_cursor_get(sc->t->keys, &sc->k, &sc->d, MDB_NEXT_NODUP);
    if (sc->order >= 0)
        sc->ok = ks_overlay_next(sc->ok);
}

/* 0 once the walk ended normally, else LMDB's failure. */
static int scan_err(const struct scan *sc)
{
    return sc->rc != 0 && sc->rc != MDB_NOTFOUND ? ks_mdb_err(sc->rc) : 0;
}

/* ---- Range ---- */

/* The checks every range read makes of req against the snapshot's meta. */
static int range_check(const struct meta *m, const Keel__RangeRequest *req, struct krange *kr)
{
    const char *msg;
    int err = ks_krange_make(&req->key, &req->range_end, kr, &msg);
    if (err != 0)
        return err;
    if (req->revision > m->revision)
        return KEEL_EFUTUREREV;
    if (req->revision > 0 && req->revision < m->compact_revision)
        return KEEL_ECOMPACTED;
    if (req->limit < 0)
        return KEEL_EINVAL;
    return 0;
}

static bool key_order(const Keel__RangeRequest *req)
{
    return req->sort_target == KEEL__RANGE_REQUEST__SORT_TARGET__KEY &&
           req->sort_order != KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
}

static bool has_filters(const Keel__RangeRequest *req)
{
    return req->min_mod_revision > 0 || req->max_mod_revision > 0 || req->min_create_revision > 0 ||
           req->max_create_revision > 0;
}

/*
 * The count of a range read at revision `at`, when meta already holds it: every key, at the
 * current revision, unfiltered (etcdctl get "" --from-key, a count of the whole store). -1
 * otherwise: the range is counted by walking it. Walking 5.5M keys takes ~0.3 s; a limited
 * range then stops at its limit.
 */
static int64_t known_count(const struct meta *m, const Keel__RangeRequest *req,
                           const struct krange *kr, int64_t at)
{
    const uint8_t *k = kr->key.mv_data;
    bool every_key =
        kr->kind == RANGE_FROM && (kr->key.mv_size == 0 || (kr->key.mv_size == 1 && k[0] == 0));
    if (!every_key || at != m->revision || has_filters(req) || m->live_keys == KS_LIVE_UNKNOWN)
        return -1;
    return (int64_t)m->live_keys;
}

int ks_range_in(struct tctx *t, const struct meta *m, const Keel__RangeRequest *req,
                struct keel_arena *a, struct ks_budget *budget, Keel__RangeResponse **out)
{
    bool measure = budget != NULL && budget->measure;
    struct krange kr;
    int err = range_check(m, req, &kr);
    if (err != 0)
        return err;
    int64_t rev = req->revision > 0 ? req->revision : 0;

    struct sort_spec sp = {req->sort_target,
                           req->sort_order == KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND};
    bool in_key_order = key_order(req);
    bool filters = has_filters(req);
    /* Without sorting or filtering the first `limit` keys are the answer and the rest only
     * need counting; otherwise every key is materialised, then sorted, then cut. */
    bool collect_all = !in_key_order || filters;
    size_t limit = req->limit > 0 ? (size_t)req->limit : SIZE_MAX;
    bool value_sort = !in_key_order && req->sort_target == KEEL__RANGE_REQUEST__SORT_TARGET__VALUE;

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
    int64_t known = known_count(m, req, &kr, rev > 0 ? rev : m->revision);

    struct scan sc;
    for (scan_start(&sc, t, &kr, NULL); scan_valid(&sc); scan_next(&sc)) {
        bool want = !req->count_only && (collect_all || taken < limit);
        if (!want && known >= 0)
            break; /* nothing more to return, and the count is known */
        struct kstate st;
        if ((err = scan_state(&sc, rev, want, &st)) != 0)
            return err;
        if (!st.exists)
            continue;
        count++;
        if (!want || (filters && !passes_filters(req, &st)))
            continue;
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
    if ((err = scan_err(&sc)) != 0)
        return err;
    if (measure)
        return 0;
    if (known >= 0)
        count = known;

    if (collect_all) {
        if (!in_key_order && kvs.n > 1)
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

/* ---- Range in pages ---- */

bool keel_store_range_pageable(const Keel__RangeRequest *req)
{
    return key_order(req);
}

/*
 * One page inside t (see keel_store_range_page). Filters do not change the order, so a range
 * in key order never needs more than the page it is building: each key is counted, and
 * materialised when it passes the filters below the limit; `more` is a passing key past it.
 */
static int page_in(struct tctx *t, const struct meta *m, const Keel__RangeRequest *req,
                   struct keel_range_pager *p, size_t page_bytes, size_t scan_keys,
                   struct keel_arena *a, Keel__RangeResponse **out)
{
    struct krange kr;
    int err = range_check(m, req, &kr);
    if (err != 0)
        return err;
    if (!p->started) {
        p->revision = req->revision > 0 ? req->revision : m->revision;
        p->total = known_count(m, req, &kr, p->revision);
        p->started = true;
    } else if (p->revision < m->compact_revision) {
        return KEEL_ECOMPACTED; /* compacted between two pages */
    }
    /* The current revision is read as 0: the newest entry, without a search. */
    int64_t rev = p->revision == m->revision ? 0 : p->revision;
    bool filters = has_filters(req);
    int64_t limit = req->limit > 0 ? req->limit : INT64_MAX;

    Keel__RangeResponse *resp = keel_arena_alloc(a, sizeof(*resp));
    if (resp == NULL)
        return KEEL_ENOMEM;
    keel__range_response__init(resp);
    struct pvec kvs = {0};
    size_t bytes = 0, scanned = 0;
    MDB_val from = {p->next_len, p->next};

    struct scan sc;
    bool full = false;
    for (scan_start(&sc, t, &kr, p->next_len > 0 ? &from : NULL); scan_valid(&sc); scan_next(&sc)) {
        if (p->total >= 0 && (req->count_only || p->taken == limit)) {
            p->more = p->total > p->taken && !req->count_only;
            break; /* the count is known: the walk ends with what it returns */
        }
        if (scanned == scan_keys) {
            full = true;
            break;
        }
        bool want = !req->count_only && !p->more;
        struct kstate st;
        if ((err = scan_state(&sc, rev, want, &st)) != 0)
            return err;
        if (st.exists) {
            if (want && (!filters || passes_filters(req, &st))) {
                if (p->taken == limit) {
                    p->more = true;
                } else {
                    size_t cost =
                        ks_kv_bytes(st.rec.key.mv_size, req->keys_only ? 0 : st.rec.value.mv_size);
                    if (kvs.n > 0 && (bytes + cost > KEEL_MAX_REPLY_BYTES || bytes >= page_bytes)) {
                        full = true;
                        break; /* this key starts the next page */
                    }
                    Keel__KeyValue *kv = ks_kv_from_record(a, &st.rec, st.at.rev, req->keys_only);
                    if (kv == NULL)
                        return KEEL_ENOMEM;
                    if ((err = ks_pvec_push(a, &kvs, kv)) != 0)
                        return err;
                    bytes += cost;
                    p->taken++;
                }
            }
            p->count++;
        }
        scanned++;
    }
    if ((err = scan_err(&sc)) != 0)
        return err;
    if (full) {
        memcpy(p->next, sc.key.mv_data, sc.key.mv_size);
        p->next_len = sc.key.mv_size;
    } else {
        p->done = true;
    }
    resp->kvs = (Keel__KeyValue **)kvs.v;
    resp->n_kvs = kvs.n;
    resp->count = p->total >= 0 ? p->total : p->count;
    resp->more = p->done && p->more && !req->count_only;
    resp->partial = !p->done;
    *out = resp;
    return 0;
}

int keel_store_range_page(struct keel_store *s, const Keel__RangeRequest *req,
                          struct keel_range_pager *pager, size_t page_bytes, size_t scan_keys,
                          struct keel_arena *arena, Keel__RangeResponse **out, int64_t *revision)
{
    if (!keel_store_range_pageable(req) || pager->done || scan_keys == 0)
        return KEEL_EINVAL;
    struct tctx t;
    struct meta m;
    int err = ks_read_begin(s, &t, &m);
    if (err != 0)
        return err;
    err = page_in(&t, &m, req, pager, page_bytes, scan_keys, arena, out);
    *revision = req->revision > 0 ? m.revision : pager->revision;
    ks_read_end(&t);
    return err;
}
