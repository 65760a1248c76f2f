/*
 * Compaction: drop the history below a revision C while keeping every key's state at C.
 *
 * For each key, the entries below C that are older than its newest entry <= C go, and that
 * newest entry goes too when it is a deletion older than C (a deleted key has no state to keep).
 * Entries at C itself all stay, so history from C is whole. Only keys that
 * changed since the previous compaction can have anything to drop, so the scan covers the
 * records in [previous C, C], not the whole history.
 */
#include <string.h>

#include "internal.h"

static int drop_entry(struct wctx *c, const MDB_val *key, const uint8_t entry[KEYREV_LEN])
{
    struct tctx *t = c->t;
    MDB_val ev = {KEYREV_LEN, (void *)entry};
    struct keyrev kr = ks_keyrev_decode(&ev);
    uint8_t rk[REVKEY_LEN];
    ks_revkey_encode(kr.rev, kr.sub, rk);
    MDB_val rkey = {REVKEY_LEN, rk}, rval;
    int rc = mdb_get(t->txn, t->s->dbi_revs, &rkey, &rval);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? KEEL_ECORRUPT : ks_mdb_err(rc);
    size_t rsize = rval.mv_size;
    if ((rc = mdb_del(t->txn, t->s->dbi_revs, &rkey, NULL)) != 0)
        return ks_mdb_err(rc);
    MDB_val k = *key;
    if ((rc = mdb_del(t->txn, t->s->dbi_keys, &k, &ev)) != 0)
        return ks_mdb_err(rc);
    c->m->logical_size -= REVKEY_LEN + rsize + KEYREV_LEN;
    return 0;
}

static int prune_key(struct wctx *c, const MDB_val *key, int64_t crev)
{
    MDB_cursor *cur = c->t->keys;
    for (;;) {
        MDB_val k = *key, d;
        int rc = mdb_cursor_get(cur, &k, &d, MDB_SET);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc == 0)
            rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST_DUP);
        if (rc != 0)
            return ks_mdb_err(rc);
        if (d.mv_size != KEYREV_LEN)
            return KEEL_ECORRUPT;
        uint8_t first[KEYREV_LEN];
        memcpy(first, d.mv_data, KEYREV_LEN);
        struct keyrev d0 = ks_keyrev_decode(&d);
        /* Entries at C stay: a watch may start at the compacted revision itself. */
        if (d0.rev >= crev)
            return 0;
        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT_DUP);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return ks_mdb_err(rc);
        bool last = rc == MDB_NOTFOUND;
        bool superseded = !last && ks_keyrev_decode(&d).rev <= crev;
        if (!superseded && !(d0.tombstone && d0.rev < crev))
            return 0;
        int err = drop_entry(c, key, first);
        if (err != 0)
            return err;
        if (last)
            c->m->logical_size -= key->mv_size; /* the key itself left the index */
    }
}

int ks_compact_apply(struct wctx *c, int64_t rev)
{
    if (rev <= c->m->compact_revision)
        return KEEL_ECOMPACTED;
    if (rev > c->m->revision)
        return KEEL_EFUTUREREV;
    struct tctx *t = c->t;
    int64_t pos_rev = c->m->compact_revision > 0 ? c->m->compact_revision : 1;
    uint32_t pos_sub = 0;
    for (;;) {
        uint8_t sk[REVKEY_LEN];
        ks_revkey_encode(pos_rev, pos_sub, sk);
        MDB_val rkey = {REVKEY_LEN, sk}, rval;
        /* Re-seek every time: pruning deletes records around the position. */
        int rc = mdb_cursor_get(t->revs, &rkey, &rval, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND)
            break;
        if (rc != 0)
            return ks_mdb_err(rc);
        if (rkey.mv_size != REVKEY_LEN)
            return KEEL_ECORRUPT;
        struct revkey rk = ks_revkey_decode(&rkey);
        if (rk.rev > rev)
            break;
        struct record r;
        int err = ks_record_decode(&rval, &r);
        if (err != 0)
            return err;
        uint8_t kbuf[KEEL_MAX_KEY_BYTES];
        if (r.key.mv_size > sizeof(kbuf) || r.key.mv_size == 0)
            return KEEL_ECORRUPT;
        memcpy(kbuf, r.key.mv_data, r.key.mv_size);
        MDB_val key = {r.key.mv_size, kbuf};
        if ((err = prune_key(c, &key, rev)) != 0)
            return err;
        if (rk.sub == UINT32_MAX) {
            pos_rev = rk.rev + 1;
            pos_sub = 0;
        } else {
            pos_rev = rk.rev;
            pos_sub = rk.sub + 1;
        }
    }
    c->m->compact_revision = rev;
    return 0;
}
