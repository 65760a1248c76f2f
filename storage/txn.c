/* Transactions on the environment: a read's or a write's LMDB transaction and its cursors. */
#include <string.h>

#include "internal.h"

int ks_tctx_begin(struct keel_store *s, MDB_txn *parent, unsigned flags, struct tctx *t)
{
    memset(t, 0, sizeof(*t));
    t->s = s;
    return ks_mdb_err(mdb_txn_begin(s->env, parent, flags, &t->txn));
}

int ks_tctx_cursors(struct tctx *t)
{
    int rc = 0;
    if (t->keys == NULL && (rc = mdb_cursor_open(t->txn, t->s->dbi_keys, &t->keys)) != 0)
        return ks_mdb_err(rc);
    if (t->revs == NULL && (rc = mdb_cursor_open(t->txn, t->s->dbi_revs, &t->revs)) != 0)
        return ks_mdb_err(rc);
    if (t->aux == NULL && (rc = mdb_cursor_open(t->txn, t->s->dbi_keys, &t->aux)) != 0)
        return ks_mdb_err(rc);
    return 0;
}

void ks_tctx_close_cursors(struct tctx *t)
{
    /* Cursors of a write transaction are freed by its commit or abort; closing them first is
     * also allowed and keeps one rule for both kinds. */
    if (t->keys)
        mdb_cursor_close(t->keys);
    if (t->revs)
        mdb_cursor_close(t->revs);
    if (t->aux)
        mdb_cursor_close(t->aux);
    if (t->recs)
        mdb_cursor_close(t->recs);
    t->keys = t->revs = t->aux = t->recs = NULL;
}

int ks_read_begin(struct keel_store *s, struct tctx *t, struct meta *m)
{
    pthread_rwlock_rdlock(&s->swap_lock);
    pthread_rwlock_rdlock(&s->ov_lock);
    int err = ks_tctx_begin(s, NULL, MDB_RDONLY, t);
    if (err == 0)
        err = ks_meta_load(t->txn, s->dbi_meta, m);
    /* The overlay extends this snapshot only when it was built on it: between a commit and the
     * overlay's replacement, the snapshot already holds everything the old overlay has. */
    if (err == 0 && s->ov != NULL && ks_overlay_base(s->ov) == m->applied_index) {
        t->ov = s->ov;
        *m = *ks_overlay_meta(s->ov);
    }
    if (err == 0)
        err = ks_tctx_cursors(t);
    if (err != 0) {
        ks_read_end(t);
        return err;
    }
    return 0;
}

void ks_read_end(struct tctx *t)
{
    if (t->txn != NULL) {
        ks_tctx_close_cursors(t);
        mdb_txn_abort(t->txn);
        t->txn = NULL;
    }
    t->ov = NULL;
    pthread_rwlock_unlock(&t->s->ov_lock);
    pthread_rwlock_unlock(&t->s->swap_lock);
}
