/* The store's environment, meta record and write transactions. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define DEFAULT_QUOTA (2ull << 30)
#define MIN_MAP_SIZE  (1ull << 30)
#define MAX_READERS   512

static const MDB_val META_KEY = {1, (void *)"m"};

int ks_meta_load(MDB_txn *txn, MDB_dbi dbi, struct meta *m)
{
    MDB_val key = META_KEY, val;
    int rc = mdb_get(txn, dbi, &key, &val);
    if (rc == MDB_NOTFOUND) {
        memset(m, 0, sizeof(*m));
        m->format = STORE_FORMAT;
        m->next_lease_id = 1;
        return 0;
    }
    if (rc != 0)
        return ks_mdb_err(rc);
    if (val.mv_size != sizeof(*m))
        return KEEL_ECORRUPT;
    memcpy(m, val.mv_data, sizeof(*m));
    if (m->format != STORE_FORMAT)
        return KEEL_ECORRUPT;
    return 0;
}

static int meta_store(MDB_txn *txn, MDB_dbi dbi, const struct meta *m)
{
    MDB_val key = META_KEY, val = {sizeof(*m), (void *)m};
    return ks_mdb_err(mdb_put(txn, dbi, &key, &val, 0));
}

static void publish(struct keel_store *s, const struct meta *m)
{
    pthread_mutex_lock(&s->stat_lock);
    s->committed = *m;
    pthread_mutex_unlock(&s->stat_lock);
}

static int open_dbis(struct keel_store *s, MDB_txn *txn)
{
    int rc;
    if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->dbi_meta)) != 0 ||
        (rc = mdb_dbi_open(txn, "revs", MDB_CREATE, &s->dbi_revs)) != 0 ||
        (rc = mdb_dbi_open(txn, "keys", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED, &s->dbi_keys)) !=
            0 ||
        (rc = mdb_dbi_open(txn, "leases", MDB_CREATE, &s->dbi_leases)) != 0 ||
        (rc = mdb_dbi_open(txn, "lease_keys", MDB_CREATE | MDB_DUPSORT, &s->dbi_lease_keys)) != 0 ||
        (rc = mdb_dbi_open(txn, "members", MDB_CREATE, &s->dbi_members)) != 0)
        return ks_mdb_err(rc);
    return 0;
}

int ks_env_open(struct keel_store *s)
{
    int rc = mdb_env_create(&s->env);
    if (rc != 0)
        return ks_mdb_err(rc);
    mdb_env_set_maxdbs(s->env, 8);
    mdb_env_set_maxreaders(s->env, MAX_READERS);
    mdb_env_set_mapsize(s->env, s->map_size);
    /* NOTLS: read transactions are not tied to threads (the writer thread and the loop both
     * read). NOMETASYNC: data pages are synced per commit, the meta page lazily; an OS crash
     * may lose the last transaction, which the raft log replays, but never corrupts the tree. */
    unsigned flags = MDB_NOTLS | MDB_NOMETASYNC | MDB_NORDAHEAD;
    if (s->no_sync)
        flags |= MDB_NOSYNC;
    rc = mdb_env_open(s->env, s->path, flags, 0600);
    if (rc != 0)
        goto fail;
    MDB_txn *txn;
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        goto fail;
    int err = open_dbis(s, txn);
    struct meta m;
    if (err == 0)
        err = ks_meta_load(txn, s->dbi_meta, &m);
    if (err != 0) {
        mdb_txn_abort(txn);
        mdb_env_close(s->env);
        s->env = NULL;
        return err;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        goto fail;
    publish(s, &m);
    return 0;
fail:
    mdb_env_close(s->env);
    s->env = NULL;
    return ks_mdb_err(rc);
}

void ks_env_close(struct keel_store *s)
{
    if (s->env != NULL) {
        mdb_env_close(s->env);
        s->env = NULL;
    }
}

int keel_store_open(const struct keel_store_options *opts, struct keel_store **out)
{
    if (opts == NULL || opts->path == NULL || opts->path[0] == '\0')
        return KEEL_EINVAL;
    struct keel_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KEEL_ENOMEM;
    s->path = strdup(opts->path);
    if (s->path == NULL) {
        free(s);
        return KEEL_ENOMEM;
    }
    s->quota = opts->quota_bytes ? opts->quota_bytes : DEFAULT_QUOTA;
    s->map_size = opts->map_size ? opts->map_size : s->quota * 4;
    if (s->map_size < MIN_MAP_SIZE)
        s->map_size = MIN_MAP_SIZE;
    s->no_sync = opts->no_sync;
    pthread_rwlock_init(&s->swap_lock, NULL);
    pthread_mutex_init(&s->stat_lock, NULL);

    int err = ks_env_recover(s->path);
    if (err == 0 && mkdir(s->path, 0700) != 0 && errno != EEXIST)
        err = KEEL_EIO;
    if (err == 0)
        err = ks_env_open(s);
    if (err != 0) {
        keel_store_close(s);
        return err;
    }
    *out = s;
    return 0;
}

void keel_store_close(struct keel_store *s)
{
    if (s == NULL)
        return;
    ks_env_close(s);
    pthread_rwlock_destroy(&s->swap_lock);
    pthread_mutex_destroy(&s->stat_lock);
    free(s->path);
    free(s);
}

int keel_store_sync(struct keel_store *s)
{
    pthread_rwlock_rdlock(&s->swap_lock);
    int rc = mdb_env_sync(s->env, 1);
    pthread_rwlock_unlock(&s->swap_lock);
    return rc == 0 ? 0 : KEEL_EIO;
}

void keel_store_stat(struct keel_store *s, struct keel_store_stat *st)
{
    pthread_mutex_lock(&s->stat_lock);
    struct meta m = s->committed;
    pthread_mutex_unlock(&s->stat_lock);
    memset(st, 0, sizeof(*st));
    st->applied_index = m.applied_index;
    st->revision = m.revision;
    st->compact_revision = m.compact_revision;
    st->logical_size = m.logical_size;
    st->quota_bytes = s->quota;
    pthread_rwlock_rdlock(&s->swap_lock);
    MDB_envinfo info;
    MDB_stat mst;
    if (s->env != NULL && mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &mst) == 0)
        st->db_size = (uint64_t)(info.me_last_pgno + 1) * mst.ms_psize;
    pthread_rwlock_unlock(&s->swap_lock);
}

/* ---- transaction contexts ---- */

int ks_tctx_begin(struct tctx *t, struct keel_store *s, MDB_txn *parent, unsigned flags)
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
    t->keys = t->revs = t->aux = NULL;
}

int ks_read_begin(struct keel_store *s, struct tctx *t, struct meta *m)
{
    pthread_rwlock_rdlock(&s->swap_lock);
    int err = ks_tctx_begin(t, s, NULL, MDB_RDONLY);
    if (err == 0)
        err = ks_meta_load(t->txn, s->dbi_meta, m);
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
    pthread_rwlock_unlock(&t->s->swap_lock);
}

/* ---- writes ---- */

int keel_store_write_begin(struct keel_store *s, struct keel_store_write **out)
{
    struct keel_store_write *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return KEEL_ENOMEM;
    int err = ks_tctx_begin(&w->t, s, NULL, 0);
    if (err == 0)
        err = ks_meta_load(w->t.txn, s->dbi_meta, &w->m);
    if (err == 0)
        err = ks_tctx_cursors(&w->t);
    if (err != 0) {
        keel_store_write_abort(w);
        return err;
    }
    *out = w;
    return 0;
}

int keel_store_write_apply(struct keel_store_write *w, uint64_t index, const Keel__Command *cmd,
                           struct keel_arena *arena, struct keel_apply_result *result)
{
    return keel_store_write_apply_entry(w, index, &cmd, 1, arena, result);
}

int keel_store_write_apply_entry(struct keel_store_write *w, uint64_t index,
                                 const Keel__Command *const *cmds, size_t n,
                                 struct keel_arena *arena, struct keel_apply_result *results)
{
    bool skip = index <= w->m.applied_index;
    for (size_t i = 0; i < n; i++) {
        struct keel_apply_result *r = &results[i];
        memset(r, 0, sizeof(*r));
        if (skip) {
            r->skipped = 1;
        } else {
            int err = ks_mvcc_apply(w, cmds[i], arena, r);
            if (err != 0)
                return err;
        }
        r->revision = w->m.revision;
    }
    if (!skip)
        w->m.applied_index = index;
    return 0;
}

uint64_t keel_store_write_applied_index(const struct keel_store_write *w)
{
    return w->m.applied_index;
}

int keel_store_write_commit(struct keel_store_write *w)
{
    struct keel_store *s = w->t.s;
    int err = meta_store(w->t.txn, s->dbi_meta, &w->m);
    ks_tctx_close_cursors(&w->t);
    if (err == 0) {
        err = ks_mdb_err(mdb_txn_commit(w->t.txn));
        w->t.txn = NULL;
    }
    if (err == 0)
        publish(s, &w->m);
    keel_store_write_abort(w);
    return err;
}

void keel_store_write_abort(struct keel_store_write *w)
{
    if (w == NULL)
        return;
    if (w->t.txn != NULL) {
        ks_tctx_close_cursors(&w->t);
        mdb_txn_abort(w->t.txn);
    }
    free(w);
}

int keel_store_apply(struct keel_store *s, uint64_t index, const Keel__Command *cmd,
                     struct keel_arena *arena, struct keel_apply_result *result)
{
    struct keel_store_write *w;
    int err = keel_store_write_begin(s, &w);
    if (err != 0)
        return err;
    err = keel_store_write_apply(w, index, cmd, arena, result);
    if (err != 0) {
        keel_store_write_abort(w);
        return err;
    }
    return keel_store_write_commit(w);
}
