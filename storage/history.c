/* History scans: the events of a key range from a revision on, for watch catch-up. */
#include <string.h>

#include "internal.h"

/* The key's live state just before (rk) in LMDB: its previous entry there, unless that is a
 * tombstone (before_all: its last entry, for a record newer than the whole snapshot). */
static int prev_kv(struct tctx *t, const struct revkey *rk, const struct record *r, bool before_all,
                   struct keel_arena *a, Keel__KeyValue **out)
{
    *out = NULL;
    uint8_t probe[KEYREV_LEN];
    ks_keyrev_encode(rk->rev, rk->sub, false, probe);
    MDB_val k = r->key, d = {KEYREV_LEN, probe};
    int rc;
    if (before_all) {
        rc = mdb_cursor_get(t->aux, &k, &d, MDB_SET);
        if (rc == 0)
            rc = mdb_cursor_get(t->aux, &k, &d, MDB_LAST_DUP);
    } else {
        /* The smallest entry >= (rev, sub, 0) is this event's own entry. */
        rc = mdb_cursor_get(t->aux, &k, &d, MDB_GET_BOTH_RANGE);
        if (rc == 0)
            rc = mdb_cursor_get(t->aux, &k, &d, MDB_PREV_DUP);
    }
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return ks_mdb_err(rc);
    struct keyrev prev = ks_keyrev_decode(&d);
    if (prev.tombstone)
        return 0;
    uint8_t pk[REVKEY_LEN];
    ks_revkey_encode(prev.rev, prev.sub, pk);
    MDB_val rkey = {REVKEY_LEN, pk}, rval;
    struct record pr;
    rc = mdb_get(t->txn, t->s->dbi_revs, &rkey, &rval);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? KEEL_ECORRUPT : ks_mdb_err(rc);
    int err = ks_record_decode(&rval, &pr);
    if (err != 0)
        return err;
    *out = ks_kv_from_record(a, &pr, prev.rev, false);
    return *out ? 0 : KEEL_ENOMEM;
}

/* The event of a history record: from LMDB (o NULL) or from the overlay (o). */
static int event_build(struct tctx *t, struct keel_arena *a, const struct revkey *rk,
                       const struct record *r, const struct ov_rec *o, Keel__Event **out)
{
    Keel__Event *ev = keel_arena_alloc(a, sizeof(*ev));
    if (ev == NULL)
        return KEEL_ENOMEM;
    keel__event__init(ev);
    if (r->type == REC_PUT) {
        ev->type = KEEL__EVENT__EVENT_TYPE__PUT;
        ev->kv = ks_kv_from_record(a, r, rk->rev, false);
    } else {
        ev->type = KEEL__EVENT__EVENT_TYPE__DELETE;
        ev->kv = keel_arena_alloc(a, sizeof(*ev->kv));
        if (ev->kv != NULL) {
            keel__key_value__init(ev->kv);
            ev->kv->key.data = keel_arena_memdup(a, r->key.mv_data, r->key.mv_size);
            ev->kv->key.len = r->key.mv_size;
            ev->kv->mod_revision = rk->rev;
            if (ev->kv->key.data == NULL)
                return KEEL_ENOMEM;
        }
    }
    if (ev->kv == NULL)
        return KEEL_ENOMEM;
    int err = 0;
    if (o == NULL) {
        err = prev_kv(t, rk, r, false, a, &ev->prev_kv);
    } else if (o->older == NULL) {
        err = prev_kv(t, rk, r, true, a, &ev->prev_kv);
    } else if (!o->older->tombstone) {
        ev->prev_kv = ks_kv_from_record(a, &o->older->rec, o->older->rk.rev, false);
        err = ev->prev_kv != NULL ? 0 : KEEL_ENOMEM;
    }
    if (err != 0)
        return err;
    *out = ev;
    return 0;
}

int ks_event_build(struct tctx *t, struct keel_arena *a, const struct revkey *rk,
                   const struct record *r, Keel__Event **out)
{
    return event_build(t, a, rk, r, NULL, out);
}

/* History records from LMDB, then from the overlay (all newer than the snapshot). */
struct hsource {
    struct tctx *t;
    MDB_val rkey, rval; /* the revs cursor's record, when rc is 0 */
    int rc;             /* LMDB cursor state: 0 positioned, else exhausted or failed */
    size_t next;        /* overlay position once LMDB is exhausted */
    bool in_ov;
};

/* The current record: 1 with *rk, *r, *o set; 0 at the end; < 0 a KEEL_E* code. */
static int hsource_get(struct hsource *h, struct revkey *rk, struct record *r,
                       const struct ov_rec **o)
{
    if (!h->in_ov) {
        if (h->rc == 0) {
            if (h->rkey.mv_size != REVKEY_LEN)
                return KEEL_ECORRUPT;
            *rk = ks_revkey_decode(&h->rkey);
            *o = NULL;
            int err = ks_record_decode(&h->rval, r);
            return err != 0 ? err : 1;
        }
        if (h->rc != MDB_NOTFOUND)
            return ks_mdb_err(h->rc);
        if (h->t->ov == NULL)
            return 0;
        h->in_ov = true;
    }
    const struct ov_rec *x = ks_overlay_rec(h->t->ov, h->next);
    if (x == NULL)
        return 0;
    *rk = x->rk;
    *r = x->rec;
    *o = x;
    return 1;
}

static void hsource_next(struct hsource *h)
{
    if (h->in_ov)
        h->next++;
    else
        h->rc = mdb_cursor_get(h->t->revs, &h->rkey, &h->rval, MDB_NEXT);
}

int keel_store_history(struct keel_store *s, const uint8_t *key, size_t key_len,
                       const uint8_t *range_end, size_t range_end_len, int64_t start_revision,
                       size_t max_events, struct keel_arena *arena, struct keel_history *out)
{
    memset(out, 0, sizeof(*out));
    ProtobufCBinaryData k = {key_len, (uint8_t *)key}, e = {range_end_len, (uint8_t *)range_end};
    const char *msg;
    struct krange kr;
    int err = ks_krange_make(&k, &e, &kr, &msg);
    if (err != 0)
        return err;
    struct tctx t;
    struct meta m;
    if ((err = ks_read_begin(s, &t, &m)) != 0)
        return err;
    out->revision = m.revision;
    if (start_revision < m.compact_revision) {
        ks_read_end(&t);
        return KEEL_ECOMPACTED;
    }
    if (start_revision < 1)
        start_revision = 1;

    struct pvec evs = {0};
    uint8_t sk[REVKEY_LEN];
    ks_revkey_encode(start_revision, 0, sk);
    int64_t next = m.revision + 1;
    int64_t last_rev = 0; /* revision of the last record scanned */
    size_t scanned = 0;
    /* Scanning, not only returning, is bounded: a narrow watch far behind on a busy store
     * must not hold the read transaction for the whole history. */
    size_t scan_limit = max_events > 0 ? max_events * 64 : 64;
    struct hsource h = {.t = &t, .rkey = {REVKEY_LEN, sk}};
    h.rc = mdb_cursor_get(t.revs, &h.rkey, &h.rval, MDB_SET_RANGE);
    if (t.ov != NULL)
        h.next = ks_overlay_first_rec(t.ov, start_revision);
    for (;;) {
        struct revkey rk = {0};
        struct record r;
        const struct ov_rec *o;
        int got = hsource_get(&h, &rk, &r, &o);
        if (got <= 0) {
            err = got;
            break;
        }
        if (scanned > 0 && (evs.n >= max_events || scanned >= scan_limit) && rk.rev != last_rev) {
            next = rk.rev;
            break;
        }
        if (ks_krange_contains(&kr, &r.key)) {
            Keel__Event *ev;
            if ((err = event_build(&t, arena, &rk, &r, o, &ev)) != 0 ||
                (err = ks_pvec_push(arena, &evs, ev)) != 0)
                break;
        }
        last_rev = rk.rev;
        scanned++;
        hsource_next(&h);
    }
    ks_read_end(&t);
    out->events = (Keel__Event **)evs.v;
    out->n_events = evs.n;
    out->next_revision = next;
    return err;
}
