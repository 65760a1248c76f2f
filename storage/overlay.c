/*
 * The overlay: what the open write applied since the store's last commit, made visible to
 * readers before LMDB has it on disk.
 *
 * Why: a write is answered once raft has it in a majority's log and it is applied so that every
 * later read sees it. LMDB cannot make an unsynced commit safe (with MDB_NOSYNC an OS crash can
 * leave a meta page pointing at pages that never reached the disk), so the writer keeps one
 * write transaction open across many raft entries and commits it, with a sync, every few tens
 * of milliseconds. Readers cannot see that open transaction; they see the overlay instead:
 *   - recs: every history record applied since the commit, in (revision, sub) order;
 *   - keys: a skip list of the keys those records touched, each with its records newest first;
 *   - ops:  the changes to the small tables (leases, lease_keys, members), in apply order;
 *   - meta: the store's meta after the last publish.
 * A read merges its LMDB snapshot with the overlay. Every overlay record is newer than anything
 * in the LMDB snapshot it builds on (base_index), so for a key the overlay's newest record at or
 * below a revision, when there is one, is the answer, and LMDB's otherwise.
 *
 * Compaction applied in the overlay is not mirrored: reads check the compacted revision in
 * meta, and compaction never removes what a read at or above the compacted revision finds.
 *
 * Threads: the writer notes records as it applies them (pending: no reader sees them), then
 * publishes them under ov_lock held exclusively; readers hold ov_lock shared for the whole of a
 * read. A commit replaces the overlay by an empty one under the exclusive lock; a reader that
 * saw the commit's LMDB snapshot before the replacement ignores the old overlay, because its
 * base_index no longer matches the snapshot's applied index.
 *
 * Memory: key and value bytes of every record since the commit, plus about 100 bytes per record
 * and per key; the writer commits when ks_overlay_bytes passes its bound (server/fsm.c).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SKIP_MAX 24

struct ov_key {
    MDB_val key;
    struct ov_rec *newest; /* published records of the key, newest first */
    int height;
    struct ov_key *next[]; /* height links */
};

struct ks_overlay {
    struct keel_arena arena; /* keys, values, records and nodes; freed with the overlay */
    uint64_t base_index;     /* LMDB's applied index this overlay builds on */
    struct meta meta;        /* the state after the last publish */
    size_t bytes;            /* memory held, for the writer's commit bound */
    uint64_t rng;            /* skip list heights (the writer's only) */

    struct ov_rec **recs; /* published, in (revision, sub) order */
    size_t n_recs, cap_recs;
    struct ov_op **ops; /* published small-table changes, in apply order */
    size_t n_ops, cap_ops;
    struct ov_key *head; /* skip list head: SKIP_MAX links, no key */
    int height;

    /* Noted by the writer, not yet published. */
    struct ov_rec **pend_recs;
    size_t n_pend_recs, cap_pend_recs;
    struct ov_op **pend_ops;
    size_t n_pend_ops, cap_pend_ops;
};

static int grow(void *pv, size_t *cap, size_t need)
{
    void ***v = pv;
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 256;
    while (c < need)
        c *= 2;
    void **nv = realloc(*v, c * sizeof(void *));
    if (nv == NULL)
        return KEEL_ENOMEM;
    *v = nv;
    *cap = c;
    return 0;
}

int ks_overlay_new(const struct meta *m, struct ks_overlay **out)
{
    struct ks_overlay *ov = calloc(1, sizeof(*ov));
    if (ov == NULL)
        return KEEL_ENOMEM;
    keel_arena_init(&ov->arena, 256 * 1024);
    ov->head = calloc(1, sizeof(struct ov_key) + SKIP_MAX * sizeof(struct ov_key *));
    if (ov->head == NULL) {
        free(ov);
        return KEEL_ENOMEM;
    }
    ov->head->height = SKIP_MAX;
    ov->height = 1;
    ov->base_index = m->applied_index;
    ov->meta = *m;
    ov->rng = 0x9e3779b97f4a7c15ull ^ m->applied_index;
    *out = ov;
    return 0;
}

void ks_overlay_free(struct ks_overlay *ov)
{
    if (ov == NULL)
        return;
    keel_arena_close(&ov->arena);
    free(ov->head);
    free(ov->recs);
    free(ov->ops);
    free(ov->pend_recs);
    free(ov->pend_ops);
    free(ov);
}

uint64_t ks_overlay_base(const struct ks_overlay *ov)
{
    return ov->base_index;
}

const struct meta *ks_overlay_meta(const struct ks_overlay *ov)
{
    return &ov->meta;
}

void ks_overlay_invalidate(struct ks_overlay *ov)
{
    ov->base_index = UINT64_MAX;
}

size_t ks_overlay_bytes(const struct ks_overlay *ov)
{
    return ov->bytes;
}

size_t ks_overlay_records(const struct ks_overlay *ov)
{
    return ov->n_recs + ov->n_pend_recs;
}

/* ---- the writer's notes ---- */

static int copy_val(struct ks_overlay *ov, const MDB_val *v, MDB_val *out)
{
    out->mv_size = v->mv_size;
    out->mv_data = keel_arena_memdup(&ov->arena, v->mv_data, v->mv_size);
    return out->mv_data != NULL ? 0 : KEEL_ENOMEM;
}

int ks_overlay_note_record(struct ks_overlay *ov, int64_t rev, uint32_t sub, bool tombstone,
                           const struct record *r)
{
    struct ov_rec *o = keel_arena_alloc(&ov->arena, sizeof(*o));
    if (o == NULL || grow(&ov->pend_recs, &ov->cap_pend_recs, ov->n_pend_recs + 1) != 0)
        return KEEL_ENOMEM;
    o->rk.rev = rev;
    o->rk.sub = sub;
    o->tombstone = tombstone;
    o->rec = *r;
    if (copy_val(ov, &r->key, &o->rec.key) != 0 || copy_val(ov, &r->value, &o->rec.value) != 0)
        return KEEL_ENOMEM;
    ov->pend_recs[ov->n_pend_recs++] = o;
    ov->bytes += sizeof(*o) + r->key.mv_size + r->value.mv_size + 2 * sizeof(void *);
    return 0;
}

int ks_overlay_note_op(struct ks_overlay *ov, enum ov_table table, enum ov_kind kind,
                       const MDB_val *key, const MDB_val *data)
{
    struct ov_op *o = keel_arena_alloc(&ov->arena, sizeof(*o));
    if (o == NULL || grow(&ov->pend_ops, &ov->cap_pend_ops, ov->n_pend_ops + 1) != 0)
        return KEEL_ENOMEM;
    o->table = table;
    o->kind = kind;
    if (copy_val(ov, key, &o->key) != 0)
        return KEEL_ENOMEM;
    if (data != NULL && copy_val(ov, data, &o->data) != 0)
        return KEEL_ENOMEM;
    ov->pend_ops[ov->n_pend_ops++] = o;
    ov->bytes += sizeof(*o) + key->mv_size + (data ? data->mv_size : 0) + sizeof(void *);
    return 0;
}

/* ---- the skip list ---- */

/* The last node whose key is < key at every level (update[level]); the head when none. */
static struct ov_key *find_before(const struct ks_overlay *ov, const MDB_val *key,
                                  struct ov_key **update)
{
    struct ov_key *x = ov->head;
    for (int l = ov->height - 1; l >= 0; l--) {
        while (x->next[l] != NULL && ks_val_cmp(&x->next[l]->key, key) < 0)
            x = x->next[l];
        if (update != NULL)
            update[l] = x;
    }
    return x;
}

static int random_height(struct ks_overlay *ov)
{
    /* xorshift64: one bit per level, p = 1/2. */
    uint64_t x = ov->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    ov->rng = x;
    int h = 1;
    while (h < SKIP_MAX && (x & 1)) {
        h++;
        x >>= 1;
    }
    return h;
}

/* The node of key, created when missing. Exclusive lock held. */
static struct ov_key *key_node(struct ks_overlay *ov, const MDB_val *key)
{
    struct ov_key *update[SKIP_MAX];
    struct ov_key *x = find_before(ov, key, update)->next[0];
    if (x != NULL && ks_val_cmp(&x->key, key) == 0)
        return x;
    int h = random_height(ov);
    x = keel_arena_alloc(&ov->arena, sizeof(*x) + (size_t)h * sizeof(struct ov_key *));
    if (x == NULL)
        return NULL;
    x->key = *key; /* the record's copy, in this arena */
    x->height = h;
    for (int l = ov->height; l < h; l++)
        update[l] = ov->head;
    if (h > ov->height)
        ov->height = h;
    for (int l = 0; l < h; l++) {
        x->next[l] = update[l]->next[l];
        update[l]->next[l] = x;
    }
    ov->bytes += sizeof(*x) + (size_t)h * sizeof(void *);
    return x;
}

int ks_overlay_publish(struct ks_overlay *ov, const struct meta *m)
{
    if (grow(&ov->recs, &ov->cap_recs, ov->n_recs + ov->n_pend_recs) != 0 ||
        grow(&ov->ops, &ov->cap_ops, ov->n_ops + ov->n_pend_ops) != 0)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < ov->n_pend_recs; i++) {
        struct ov_rec *r = ov->pend_recs[i];
        struct ov_key *k = key_node(ov, &r->rec.key);
        if (k == NULL)
            return KEEL_ENOMEM; /* the records published so far stay consistent */
        r->older = k->newest;
        k->newest = r;
        ov->recs[ov->n_recs++] = r;
    }
    if (ov->n_pend_ops > 0)
        memcpy(ov->ops + ov->n_ops, ov->pend_ops, ov->n_pend_ops * sizeof(void *));
    ov->n_ops += ov->n_pend_ops;
    ov->n_pend_recs = ov->n_pend_ops = 0;
    ov->meta = *m;
    return 0;
}

/* ---- readers ---- */

const struct ov_key *ks_overlay_find(const struct ks_overlay *ov, const MDB_val *key)
{
    const struct ov_key *x = find_before(ov, key, NULL)->next[0];
    return x != NULL && ks_val_cmp(&x->key, key) == 0 ? x : NULL;
}

const struct ov_key *ks_overlay_seek(const struct ks_overlay *ov, const MDB_val *key)
{
    if (key == NULL || key->mv_size == 0)
        return ov->head->next[0];
    return find_before(ov, key, NULL)->next[0];
}

const struct ov_key *ks_overlay_next(const struct ov_key *k)
{
    return k->next[0];
}

const MDB_val *ks_overlay_key(const struct ov_key *k)
{
    return &k->key;
}

const struct ov_rec *ks_overlay_at(const struct ov_key *k, int64_t rev)
{
    const struct ov_rec *r = k->newest;
    while (r != NULL && rev > 0 && r->rk.rev > rev)
        r = r->older;
    return r;
}

size_t ks_overlay_first_rec(const struct ks_overlay *ov, int64_t rev)
{
    size_t lo = 0, hi = ov->n_recs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ov->recs[mid]->rk.rev < rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const struct ov_rec *ks_overlay_rec(const struct ks_overlay *ov, size_t i)
{
    return i < ov->n_recs ? ov->recs[i] : NULL;
}

size_t ks_overlay_n_ops(const struct ks_overlay *ov)
{
    return ov->n_ops;
}

const struct ov_op *ks_overlay_op(const struct ks_overlay *ov, size_t i)
{
    return ov->ops[i];
}
