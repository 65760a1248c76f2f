/*
 * Lease records and the keys attached to them.
 *
 * A record is {granted TTL s, checkpoint ms, boot, clock ms} in host order (8 bytes in stores
 * written before checkpoints existed: read as checkpoint 0; 16 before records carried their
 * clock: read as applied at an unknown time). The checkpoint is what the leader wrote down of
 * its countdown: > 0 means "this much was left when the record was applied, and the lease has
 * not been kept alive since"; 0 means "kept alive since": a new leader counts a full TTL. A grant
 * records its full TTL as its first checkpoint, so a lease nobody ever keeps alive expires on
 * time across any number of leader changes.
 *
 * The boot and clock say when this member applied the checkpoint (its monotonic clock): a local
 * fact, not replicated state, like meta's commit clock. A member restarted on the same boot
 * counts the checkpoint from then, not from its last commit: that commit may be much later (any
 * write, or a new leader's barrier, makes one), and counting from it would give the lease more
 * time with each restart of a member that then leads. The 16 extra bytes are not counted in
 * the quota (LEASE_RECORD is the logical size).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define LEASE_RECORD 16 /* logical bytes of one lease: id and TTL */

struct lease_rec {
    int64_t ttl;
    int64_t checkpoint_ms;
    uint64_t clock_boot; /* 0: not known */
    uint64_t clock_ms;
};

static int rec_decode(const MDB_val *v, struct lease_rec *r)
{
    memset(r, 0, sizeof(*r));
    if (v->mv_size != sizeof(int64_t) && v->mv_size != 2 * sizeof(int64_t) &&
        v->mv_size != sizeof(*r))
        return KEEL_ECORRUPT;
    memcpy(r, v->mv_data, v->mv_size);
    return 0;
}

/* Write r, its checkpoint stamped as applied now. */
static int rec_put(struct tctx *t, const uint8_t lk[8], struct lease_rec *r)
{
    r->clock_boot = ks_clock_boot();
    r->clock_ms = ks_clock_ms();
    MDB_val k = {8, (void *)lk}, v = {sizeof(*r), (void *)r};
    int rc = mdb_put(t->txn, t->s->dbi_leases, &k, &v, 0);
    if (rc != 0)
        return ks_mdb_err(rc);
    return t->note != NULL ? ks_overlay_note_op(t->note, OV_LEASES, OV_PUT, &k, &v) : 0;
}

void ks_lease_key(int64_t id, uint8_t out[8])
{
    keel_put_be64(out, (uint64_t)id);
}

int ks_lease_exists(struct tctx *t, int64_t id, bool *exists)
{
    *exists = false;
    if (id <= 0)
        return 0;
    uint8_t lk[8];
    ks_lease_key(id, lk);
    MDB_val k = {8, lk}, v;
    int rc = mdb_get(t->txn, t->s->dbi_leases, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return ks_mdb_err(rc);
    *exists = true;
    return 0;
}

int ks_lease_attach(struct wctx *c, int64_t id, const MDB_val *key)
{
    uint8_t lk[8];
    ks_lease_key(id, lk);
    MDB_val k = {8, lk}, v = *key;
    int rc = mdb_put(c->t->txn, c->t->s->dbi_lease_keys, &k, &v, MDB_NODUPDATA);
    if (rc == MDB_KEYEXIST)
        return 0;
    if (rc != 0)
        return ks_mdb_err(rc);
    c->m->logical_size += 8 + key->mv_size;
    if (c->t->note != NULL)
        return ks_overlay_note_op(c->t->note, OV_LEASE_KEYS, OV_PUT, &k, key);
    return 0;
}

int ks_lease_detach(struct wctx *c, int64_t id, const MDB_val *key)
{
    uint8_t lk[8];
    ks_lease_key(id, lk);
    MDB_val k = {8, lk}, v = *key;
    int rc = mdb_del(c->t->txn, c->t->s->dbi_lease_keys, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return ks_mdb_err(rc);
    c->m->logical_size -= 8 + key->mv_size;
    if (c->t->note != NULL)
        return ks_overlay_note_op(c->t->note, OV_LEASE_KEYS, OV_DEL_DUP, &k, key);
    return 0;
}

int ks_lease_grant(struct wctx *c, const Keel__LeaseGrantRequest *req,
                   Keel__LeaseGrantResponse **out)
{
    struct tctx *t = c->t;
    int err;
    bool found;
    if (req->ttl <= 0 || req->id < 0)
        return KEEL_EINVAL;
    if (ks_over_quota(c, LEASE_RECORD))
        return KEEL_ENOSPACE;
    int64_t id = req->id;
    if (id == 0) {
        /* Picked from a counter in meta: every replica picks the same id. */
        for (int tries = 0;; tries++) {
            if (c->m->next_lease_id <= 0)
                c->m->next_lease_id = 1;
            id = c->m->next_lease_id++;
            if ((err = ks_lease_exists(t, id, &found)) != 0)
                return err;
            if (!found)
                break;
            if (tries > 1000000)
                return KEEL_ENOSPACE;
        }
    } else {
        if ((err = ks_lease_exists(t, id, &found)) != 0)
            return err;
        if (found)
            return KEEL_ELEASEEXISTS;
    }
    uint8_t lk[8];
    ks_lease_key(id, lk);
    struct lease_rec r = {req->ttl, req->ttl * 1000, 0, 0};
    if ((err = rec_put(t, lk, &r)) != 0)
        return err;
    c->m->logical_size += LEASE_RECORD;
    Keel__LeaseGrantResponse *resp = keel_arena_alloc(c->a, sizeof(*resp));
    if (resp == NULL)
        return KEEL_ENOMEM;
    keel__lease_grant_response__init(resp);
    resp->id = id;
    resp->ttl = req->ttl;
    *out = resp;
    return 0;
}

int ks_lease_checkpoint(struct wctx *c, const Keel__LeaseCheckpointRequest *req)
{
    for (size_t i = 0; i < req->n_checkpoints; i++) {
        const Keel__LeaseCheckpoint *cp = req->checkpoints[i];
        uint8_t lk[8];
        ks_lease_key(cp->id, lk);
        MDB_val k = {8, lk}, v;
        int rc = mdb_get(c->t->txn, c->t->s->dbi_leases, &k, &v);
        if (rc == MDB_NOTFOUND)
            continue; /* revoked since the leader wrote it down */
        if (rc != 0)
            return ks_mdb_err(rc);
        struct lease_rec r;
        int err = rec_decode(&v, &r);
        if (err == 0) {
            r.checkpoint_ms = cp->remaining_ms;
            err = rec_put(c->t, lk, &r);
        }
        if (err != 0)
            return err;
    }
    return 0;
}

int ks_lease_drop(struct wctx *c, int64_t id)
{
    uint8_t lk[8];
    ks_lease_key(id, lk);
    MDB_val k = {8, lk};
    int rc = mdb_del(c->t->txn, c->t->s->dbi_lease_keys, &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return ks_mdb_err(rc);
    rc = mdb_del(c->t->txn, c->t->s->dbi_leases, &k, NULL);
    if (rc != 0)
        return ks_mdb_err(rc);
    c->m->logical_size -= LEASE_RECORD;
    if (c->t->note != NULL &&
        (ks_overlay_note_op(c->t->note, OV_LEASE_KEYS, OV_DEL, &k, NULL) != 0 ||
         ks_overlay_note_op(c->t->note, OV_LEASES, OV_DEL, &k, NULL) != 0))
        return KEEL_ENOMEM;
    return 0;
}

/*
 * A sorted list of (key, value) pairs being merged from LMDB and the overlay: the shape of
 * every small-table read. Pointers into LMDB or overlay memory, valid for the read.
 */
struct pairs {
    MDB_val *k, *v;
    size_t n, cap;
};

static int pairs_push(struct keel_arena *a, struct pairs *p, const MDB_val *k, const MDB_val *v)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        MDB_val *nk = keel_arena_alloc(a, cap * sizeof(*nk));
        MDB_val *nv = keel_arena_alloc(a, cap * sizeof(*nv));
        if (nk == NULL || nv == NULL)
            return KEEL_ENOMEM;
        if (p->n) {
            memcpy(nk, p->k, p->n * sizeof(*nk));
            memcpy(nv, p->v, p->n * sizeof(*nv));
        }
        p->k = nk;
        p->v = nv;
        p->cap = cap;
    }
    p->k[p->n] = *k;
    p->v[p->n] = *v;
    p->n++;
    return 0;
}

/* Position of k in the sorted list: *found when it is there. */
static size_t pairs_find(const struct pairs *p, const MDB_val *k, bool *found)
{
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = ks_val_cmp(&p->k[mid], k);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Put k -> v (replacing) or, v NULL, remove k. */
static int pairs_set(struct keel_arena *a, struct pairs *p, const MDB_val *k, const MDB_val *v)
{
    bool found;
    size_t i = pairs_find(p, k, &found);
    if (found && v != NULL) {
        p->v[i] = *v;
    } else if (found) {
        memmove(p->k + i, p->k + i + 1, (p->n - i - 1) * sizeof(*p->k));
        memmove(p->v + i, p->v + i + 1, (p->n - i - 1) * sizeof(*p->v));
        p->n--;
    } else if (v != NULL) {
        int err = pairs_push(a, p, k, v); /* grows, then moves into place */
        if (err != 0)
            return err;
        memmove(p->k + i + 1, p->k + i, (p->n - 1 - i) * sizeof(*p->k));
        memmove(p->v + i + 1, p->v + i, (p->n - 1 - i) * sizeof(*p->v));
        p->k[i] = *k;
        p->v[i] = *v;
    }
    return 0;
}

/* Every record from the cursor's position on (first), moving with next: key -> data, or with
 * dups, each duplicate data -> itself. 0 or KEEL_E*. */
static int pairs_scan(struct keel_arena *a, struct pairs *p, MDB_cursor *cur, MDB_val *k,
                      MDB_cursor_op first, MDB_cursor_op next, bool dups)
{
    MDB_val d;
    int err = 0;
    int rc = mdb_cursor_get(cur, k, &d, first);
    while (rc == 0 && err == 0) {
        err = pairs_push(a, p, dups ? &d : k, &d);
        rc = mdb_cursor_get(cur, k, &d, next);
    }
    if (err == 0 && rc != MDB_NOTFOUND)
        err = ks_mdb_err(rc);
    return err;
}

int ks_lease_keys(struct tctx *t, int64_t id, struct keel_arena *a, ProtobufCBinaryData **keys,
                  size_t *n)
{
    *keys = NULL;
    *n = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(t->txn, t->s->dbi_lease_keys, &cur);
    if (rc != 0)
        return ks_mdb_err(rc);
    uint8_t lk[8];
    ks_lease_key(id, lk);
    MDB_val k = {8, lk}, v;
    struct pairs p = {0};
    int err = 0;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
    if (rc == 0)
        err = pairs_scan(a, &p, cur, &k, MDB_FIRST_DUP, MDB_NEXT_DUP, true);
    else if (rc != MDB_NOTFOUND)
        err = ks_mdb_err(rc);
    /* The attachments changed since the last commit, in the order they were made. */
    MDB_val id_key = {8, lk};
    for (size_t i = 0; err == 0 && t->ov != NULL && i < ks_overlay_n_ops(t->ov); i++) {
        const struct ov_op *o = ks_overlay_op(t->ov, i);
        if (o->table != OV_LEASE_KEYS || ks_val_cmp(&o->key, &id_key) != 0)
            continue;
        if (o->kind == OV_DEL)
            p.n = 0;
        else
            err = pairs_set(a, &p, &o->data, o->kind == OV_PUT ? &o->data : NULL);
    }
    if (err == 0 && p.n > 0) {
        ProtobufCBinaryData *out = keel_arena_alloc(a, p.n * sizeof(*out));
        if (out == NULL)
            err = KEEL_ENOMEM;
        for (size_t i = 0; err == 0 && i < p.n; i++) {
            out[i].len = p.k[i].mv_size;
            out[i].data = keel_arena_memdup(a, p.k[i].mv_data, p.k[i].mv_size);
            if (out[i].data == NULL)
                err = KEEL_ENOMEM;
        }
        if (err == 0) {
            *keys = out;
            *n = p.n;
        }
    }
    mdb_cursor_close(cur);
    return err;
}

/* The shared shape of the lease, member and auth listings (internal.h). */
int ks_scan_table(struct keel_store *s, MDB_dbi dbi, enum ov_table table, struct keel_arena *arena,
                  size_t size,
                  int (*each)(const MDB_val *k, const MDB_val *v, void *slot, struct keel_arena *a),
                  void **out, size_t *n, struct meta *m_out)
{
    struct tctx t;
    struct meta m;
    int err = ks_read_begin(s, &t, &m);
    if (err != 0)
        return err;
    if (m_out != NULL)
        *m_out = m;
    *out = NULL;
    *n = 0;
    struct pairs p = {0};
    MDB_cursor *cur = NULL;
    MDB_val k;
    int rc = mdb_cursor_open(t.txn, dbi, &cur);
    if (rc == 0)
        err = pairs_scan(arena, &p, cur, &k, MDB_FIRST, MDB_NEXT, false);
    else
        err = ks_mdb_err(rc);
    for (size_t i = 0; err == 0 && t.ov != NULL && i < ks_overlay_n_ops(t.ov); i++) {
        const struct ov_op *o = ks_overlay_op(t.ov, i);
        if (o->table == table)
            err = pairs_set(arena, &p, &o->key, o->kind == OV_PUT ? &o->data : NULL);
    }
    if (err == 0 && p.n > 0) {
        uint8_t *v = keel_arena_alloc(arena, p.n * size);
        if (v == NULL)
            err = KEEL_ENOMEM;
        for (size_t i = 0; err == 0 && i < p.n; i++) {
            err = each(&p.k[i], &p.v[i], v + i * size, arena);
            if (err == 0)
                *n = i + 1;
        }
        *out = v;
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    ks_read_end(&t);
    return err;
}

static int lease_record(const MDB_val *k, const MDB_val *v, void *slot, struct keel_arena *a)
{
    struct keel_lease_info *li = slot;
    struct lease_rec r;
    (void)a;
    if (k->mv_size != 8 || rec_decode(v, &r) != 0)
        return KEEL_ECORRUPT;
    li->id = (int64_t)keel_get_be64(k->mv_data);
    li->ttl = r.ttl;
    li->checkpoint_ms = r.checkpoint_ms;
    li->checkpoint_age_ms = ks_clock_age_ms(r.clock_boot, r.clock_ms);
    return 0;
}

int keel_store_lease_list(struct keel_store *s, struct keel_arena *arena,
                          struct keel_lease_info **leases, size_t *n)
{
    return ks_scan_table(s, s->dbi_leases, OV_LEASES, arena, sizeof(**leases), lease_record,
                         (void **)leases, n, NULL);
}

int keel_store_lease_get(struct keel_store *s, int64_t id, struct keel_arena *arena,
                         struct keel_lease_info *info, ProtobufCBinaryData **keys, size_t *n_keys)
{
    struct tctx t;
    struct meta m;
    int err = ks_read_begin(s, &t, &m);
    if (err != 0)
        return err;
    if (keys != NULL) {
        *keys = NULL;
        *n_keys = 0;
    }
    uint8_t lk[8];
    ks_lease_key(id, lk);
    MDB_val k = {8, lk}, v;
    int rc = id > 0 ? mdb_get(t.txn, s->dbi_leases, &k, &v) : MDB_NOTFOUND;
    /* The last change since the commit decides. */
    for (size_t i = 0; id > 0 && t.ov != NULL && i < ks_overlay_n_ops(t.ov); i++) {
        const struct ov_op *o = ks_overlay_op(t.ov, i);
        if (o->table != OV_LEASES || ks_val_cmp(&o->key, &k) != 0)
            continue;
        rc = o->kind == OV_PUT ? 0 : MDB_NOTFOUND;
        if (rc == 0)
            v = o->data;
    }
    if (rc == MDB_NOTFOUND) {
        err = KEEL_ELEASENOTFOUND;
    } else if (rc != 0) {
        err = ks_mdb_err(rc);
    } else if (lease_record(&k, &v, info, arena) != 0) {
        err = KEEL_ECORRUPT;
    } else {
        if (keys != NULL)
            err = ks_lease_keys(&t, id, arena, keys, n_keys);
    }
    ks_read_end(&t);
    return err;
}

static int member_record(const MDB_val *k, const MDB_val *v, void *slot, struct keel_arena *a)
{
    (void)k;
    Keel__Member **m = slot;
    *m = keel__member__unpack(keel_arena_pb(a), v->mv_size, v->mv_data);
    return *m != NULL ? 0 : KEEL_ECORRUPT;
}

int keel_store_members(struct keel_store *s, struct keel_arena *arena, Keel__Member ***members,
                       size_t *n)
{
    return ks_scan_table(s, s->dbi_members, OV_MEMBERS, arena, sizeof(**members), member_record,
                         (void **)members, n, NULL);
}
