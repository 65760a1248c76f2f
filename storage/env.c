/*
 * The store's environment: open, close, the meta record, and the crash-safe swap of a restore.
 *
 * A restore (snapshot.c) never leaves a half-written store behind. The copy is written into
 * "<path>.incoming", synced, checked, and renamed to "<path>.ready": from that moment it is
 * complete. The swap then renames <path> to "<path>.old" and "<path>.ready" to <path>.
 * ks_env_recover finishes a swap a crash interrupted (a ready copy exists) and discards an
 * incomplete incoming copy; keel_store_open runs it before it opens the environment, and
 * ks_env_swap runs it for a restore's own swap, so both take the same path.
 *
 * Nothing here calls the write path or the snapshot code: they call this file.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MIN_MAP_SIZE (1ull << 30)
#define MAX_READERS  512

static const MDB_val META_KEY = {1, (void *)"m"};

/* ---- meta ---- */

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
    if (val.mv_size != sizeof(*m) && val.mv_size != KS_META_V1_SIZE &&
        val.mv_size != KS_META_V2_SIZE && val.mv_size != KS_META_V3_SIZE &&
        val.mv_size != KS_META_V4_SIZE && val.mv_size != KS_META_V5_SIZE)
        return KEEL_ECORRUPT;
    memset(m, 0, sizeof(*m));
    memcpy(m, val.mv_data, val.mv_size);
    if (val.mv_size < KS_META_V5_SIZE)
        m->live_keys = KS_LIVE_UNKNOWN;
    if (m->format != STORE_FORMAT)
        return KEEL_ECORRUPT;
    return 0;
}

int ks_meta_store(MDB_txn *txn, MDB_dbi dbi, const struct meta *m)
{
    MDB_val key = META_KEY, val = {sizeof(*m), (void *)m};
    return ks_mdb_err(mdb_put(txn, dbi, &key, &val, 0));
}

static uint64_t boot_hash;

static void read_boot_id(void)
{
    char id[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f == NULL)
        return;
    size_t n = fread(id, 1, sizeof(id) - 1, f);
    fclose(f);
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)id[i]) * 1099511628211ull;
    boot_hash = n > 0 ? (h | 1) : 0;
}

uint64_t ks_clock_boot(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, read_boot_id);
    return boot_hash;
}

uint64_t ks_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int64_t ks_clock_age_ms(uint64_t boot, uint64_t at)
{
    uint64_t now = ks_clock_ms();
    return boot != 0 && boot == ks_clock_boot() && at <= now ? (int64_t)(now - at) : -1;
}

void ks_meta_publish(struct keel_store *s, const struct meta *m)
{
    pthread_mutex_lock(&s->stat_lock);
    s->committed = *m;
    s->visible = *m;
    pthread_mutex_unlock(&s->stat_lock);
}

void ks_meta_publish_visible(struct keel_store *s, const struct meta *m)
{
    pthread_mutex_lock(&s->stat_lock);
    s->visible = *m;
    pthread_mutex_unlock(&s->stat_lock);
}

int ks_overlay_reset(struct keel_store *s, const struct meta *m)
{
    struct ks_overlay *fresh = NULL;
    int err = ks_overlay_new(m, &fresh);
    pthread_rwlock_wrlock(&s->ov_lock);
    struct ks_overlay *old = s->ov;
    if (err == 0)
        s->ov = fresh;
    else if (old != NULL)
        ks_overlay_invalidate(old);
    pthread_rwlock_unlock(&s->ov_lock);
    /* No reader can hold the old one: each holds ov_lock shared while it reads. */
    if (err == 0)
        ks_overlay_free(old);
    return err;
}

/* ---- the files of a swap ---- */

static char *path_with(const char *path, const char *suffix)
{
    char *p = NULL;
    if (asprintf(&p, "%s%s", path, suffix) < 0)
        return NULL;
    return p;
}

int ks_swap_paths_init(struct ks_swap_paths *p, const char *path)
{
    p->incoming = path_with(path, ".incoming");
    p->ready = path_with(path, ".ready");
    p->old = path_with(path, ".old");
    if (p->incoming == NULL || p->ready == NULL || p->old == NULL) {
        ks_swap_paths_close(p);
        return KEEL_ENOMEM;
    }
    return 0;
}

void ks_swap_paths_close(struct ks_swap_paths *p)
{
    free(p->incoming);
    free(p->ready);
    free(p->old);
    p->incoming = p->ready = p->old = NULL;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int ks_rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : KEEL_EIO;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : KEEL_EIO;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int ks_sync_parent(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return KEEL_ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0)
        return KEEL_EIO;
    int rv = fsync(fd);
    close(fd);
    return rv == 0 ? 0 : KEEL_EIO;
}

int ks_env_recover(const char *path)
{
    struct ks_swap_paths p;
    int err = ks_swap_paths_init(&p, path);
    if (err != 0)
        return err;
    if ((err = ks_rm_tree(p.incoming)) != 0)
        goto out;
    if (exists(p.ready)) {
        /* A complete copy waits: finish the swap. */
        if (exists(path)) {
            if ((err = ks_rm_tree(p.old)) != 0)
                goto out;
            if (rename(path, p.old) != 0) {
                err = KEEL_EIO;
                goto out;
            }
        }
        if (rename(p.ready, path) != 0) {
            err = KEEL_EIO;
            goto out;
        }
        if ((err = ks_sync_parent(path)) != 0)
            goto out;
    }
    err = ks_rm_tree(p.old);
out:
    ks_swap_paths_close(&p);
    return err;
}

/* ---- the environment ---- */

/* An environment and its databases, before it becomes the store's. */
struct opened {
    MDB_env *env;
    MDB_dbi meta, revs, keys, leases, lease_keys, members, auth;
    struct meta m;
};

static int open_dbis(MDB_txn *txn, unsigned create, struct opened *o)
{
    int rc;
    if ((rc = mdb_dbi_open(txn, "meta", create, &o->meta)) != 0 ||
        (rc = mdb_dbi_open(txn, "revs", create, &o->revs)) != 0 ||
        (rc = mdb_dbi_open(txn, "keys", create | MDB_DUPSORT | MDB_DUPFIXED, &o->keys)) != 0 ||
        (rc = mdb_dbi_open(txn, "leases", create, &o->leases)) != 0 ||
        (rc = mdb_dbi_open(txn, "lease_keys", create | MDB_DUPSORT, &o->lease_keys)) != 0 ||
        (rc = mdb_dbi_open(txn, "members", create, &o->members)) != 0)
        return ks_mdb_err(rc);
    /* A copy made before auth has no auth table: read-only looks go on without it (the store
     * creates it when it opens the copy). */
    rc = mdb_dbi_open(txn, "auth", create, &o->auth);
    if (rc == MDB_NOTFOUND && !create)
        rc = 0;
    return ks_mdb_err(rc);
}

/* Keys whose latest entry is not a tombstone, as txn sees them: a walk over every key. */
static int count_live(MDB_txn *txn, MDB_dbi keys, uint64_t *out)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, keys, &cur);
    if (rc != 0)
        return ks_mdb_err(rc);
    uint64_t n = 0;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP)) {
        if ((rc = mdb_cursor_get(cur, &k, &v, MDB_LAST_DUP)) != 0)
            break;
        if (v.mv_size == KEYREV_LEN && !ks_keyrev_decode(&v).tombstone)
            n++;
    }
    mdb_cursor_close(cur);
    *out = n;
    return rc == MDB_NOTFOUND ? 0 : ks_mdb_err(rc);
}

/* Count what a read transaction sees: live keys, history records, leases. */
static int count_all(MDB_txn *txn, const struct opened *o, struct keel_store_info *info)
{
    MDB_stat st;
    int rc = mdb_stat(txn, o->revs, &st);
    if (rc != 0)
        return ks_mdb_err(rc);
    info->revisions = st.ms_entries;
    if ((rc = mdb_stat(txn, o->leases, &st)) != 0)
        return ks_mdb_err(rc);
    info->leases = st.ms_entries;
    uint64_t n = 0;
    int err = count_live(txn, o->keys, &n);
    info->keys = n;
    return err;
}

/*
 * Look into the environment at path read-only, without a lock file (nothing is written, and a
 * copy beside the store or a snapshot file may have no lock to share): every database opened
 * with the flags the store opens it with, and meta read, so that what would not open as a store
 * is refused (KEEL_ECORRUPT) before anything relies on it. extra: MDB_NOSUBDIR for a file.
 * count: also count keys, history and leases.
 */
static int peek(const char *path, unsigned extra, bool count, struct keel_store_info *info)
{
    memset(info, 0, sizeof(*info));
    struct opened o = {0};
    int rc = mdb_env_create(&o.env);
    if (rc != 0)
        return ks_mdb_err(rc);
    mdb_env_set_maxdbs(o.env, 8);
    int err = KEEL_ECORRUPT;
    MDB_txn *txn;
    rc = mdb_env_open(o.env, path, MDB_RDONLY | MDB_NOTLS | MDB_NOLOCK | extra, 0600);
    if (rc == ENOENT || rc == EACCES)
        err = rc == ENOENT ? KEEL_ENOTFOUND : KEEL_EIO;
    if (rc == 0 && mdb_txn_begin(o.env, NULL, MDB_RDONLY, &txn) == 0) {
        if (open_dbis(txn, 0, &o) == 0 && ks_meta_load(txn, o.meta, &o.m) == 0) {
            info->applied_index = o.m.applied_index;
            info->revision = o.m.revision;
            info->compact_revision = o.m.compact_revision;
            info->logical_size = o.m.logical_size;
            err = count ? count_all(txn, &o, info) : 0;
        }
        mdb_txn_abort(txn);
    }
    mdb_env_close(o.env);
    return err;
}

int ks_env_check(const char *dir, uint64_t *applied_index)
{
    struct keel_store_info info;
    int err = peek(dir, 0, false, &info);
    if (err == 0)
        *applied_index = info.applied_index;
    return err == KEEL_ENOTFOUND ? KEEL_ECORRUPT : err;
}

int keel_store_inspect(const char *file, struct keel_store_info *info)
{
    /* The file itself: bytes past its last page (a snapshot file's trailer) are outside every
     * page LMDB reads. */
    return peek(file, MDB_NOSUBDIR, true, info);
}

int keel_store_rebase(const char *dir, uint64_t map_size)
{
    struct opened o = {0};
    int rc = mdb_env_create(&o.env);
    if (rc != 0)
        return ks_mdb_err(rc);
    mdb_env_set_maxdbs(o.env, 8);
    mdb_env_set_mapsize(o.env, map_size ? map_size : MIN_MAP_SIZE);
    /* Synced commits, as LMDB makes them by default: no synced note exists for this copy yet,
     * and the next open trusts a store without one to be wholly on disk. */
    MDB_txn *txn = NULL;
    int err = 0;
    rc = mdb_env_open(o.env, dir, MDB_NOTLS, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(o.env, NULL, 0, &txn);
    if (rc != 0) {
        err = rc == ENOENT ? KEEL_ENOTFOUND : ks_mdb_err(rc);
    } else {
        err = open_dbis(txn, 0, &o) != 0 ? KEEL_ECORRUPT : 0;
        if (err == 0)
            err = ks_meta_load(txn, o.meta, &o.m);
        if (err == 0) {
            o.m.applied_index = 0;
            o.m.clock_boot = 0;
            o.m.clock_ms = 0;
            err = ks_meta_store(txn, o.meta, &o.m);
        }
        if (err == 0)
            err = ks_mdb_err(mdb_drop(txn, o.members, 0));
        if (err == 0)
            err = ks_mdb_err(mdb_txn_commit(txn));
        else
            mdb_txn_abort(txn);
    }
    mdb_env_close(o.env);
    return err;
}

static int open_at(struct keel_store *s, const char *dir, struct opened *o)
{
    int rc = mdb_env_create(&o->env);
    if (rc != 0)
        return ks_mdb_err(rc);
    mdb_env_set_maxdbs(o->env, 8);
    mdb_env_set_maxreaders(o->env, MAX_READERS);
    mdb_env_set_mapsize(o->env, s->map_size);
    /* NOTLS: read transactions are not tied to threads (the writer thread and the loop both
     * read). NOSYNC: commits are synced in the background, each before the next commit writes
     * (durable.c says why that is crash safe), so the writer never waits for the disk. Not
     * MDB_NORDAHEAD: it also turns off the kernel's fault-around, so every 4 KiB page a read
     * touches faults on its own, cached or not (a keys-only range of 250k of 5.5M keys after a
     * restart with the page cache dropped: 6.8 s with it, 2.7 s without; random single-key
     * gets were faster without it too), and the kernel stops reading ahead by itself for a
     * file read at random (its mmap miss count). */
    unsigned flags = MDB_NOTLS | MDB_NOSYNC;
    MDB_txn *txn;
    int err = 0;
    rc = mdb_env_open(o->env, dir, flags, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(o->env, NULL, 0, &txn);
    if (rc != 0) {
        err = ks_mdb_err(rc);
    } else {
        err = open_dbis(txn, MDB_CREATE, o);
        if (err == 0)
            err = ks_meta_load(txn, o->meta, &o->m);
        /* A store from before live_keys was kept: counted once, here (the commit is synced by
         * adopt before anything else writes). */
        if (err == 0 && o->m.live_keys == KS_LIVE_UNKNOWN &&
            (err = count_live(txn, o->keys, &o->m.live_keys)) == 0)
            err = ks_meta_store(txn, o->meta, &o->m);
        if (err == 0)
            err = ks_mdb_err(mdb_txn_commit(txn));
        else
            mdb_txn_abort(txn);
    }
    if (err != 0) {
        mdb_env_close(o->env);
        o->env = NULL;
    }
    return err;
}

static int adopt(struct keel_store *s, const struct opened *o)
{
    s->env = o->env;
    s->dbi_meta = o->meta;
    s->dbi_revs = o->revs;
    s->dbi_keys = o->keys;
    s->dbi_leases = o->leases;
    s->dbi_lease_keys = o->lease_keys;
    s->dbi_members = o->members;
    s->dbi_auth = o->auth;
    ks_meta_publish(s, &o->m);
    int err = ks_durable_adopt(s, o->m.applied_index);
    return err != 0 ? err : ks_overlay_reset(s, &o->m);
}

int ks_env_open(struct keel_store *s)
{
    uint64_t dropped;
    int err = ks_durable_recover(s, s->path, ks_clock_boot(), &dropped);
    struct opened o = {0};
    if (err == 0)
        err = open_at(s, s->path, &o);
    if (err == 0)
        err = adopt(s, &o);
    return err;
}

void ks_env_close(struct keel_store *s)
{
    if (s->env != NULL) {
        mdb_env_close(s->env);
        s->env = NULL;
    }
}

static void *close_later(void *arg)
{
    close((int)(intptr_t)arg);
    return NULL;
}

/*
 * Remove the replaced state. Freeing a big file's blocks is what takes the time of an unlink
 * (191 ms for 600 MB here, on the writer's path: writes waited for it): the file is held open
 * while its entries go, and its last descriptor is closed, which frees the blocks, on a thread
 * of its own.
 */
static int rm_old(const char *old)
{
    char *file = path_with(old, "/data.mdb");
    int hold = file != NULL ? open(file, O_RDONLY | O_CLOEXEC) : -1;
    free(file);
    int err = ks_rm_tree(old);
    if (hold >= 0) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, close_later, (void *)(intptr_t)hold) != 0)
            close(hold);
        pthread_attr_destroy(&attr);
    }
    return err;
}

int ks_env_swap(struct keel_store *s)
{
    /* The copy is complete and durable. Open it where it lies first: if it does not open, the
     * old environment stays the store's and nothing moved (a failed swap used to leave no
     * environment at all, and the next read dereferenced it). An open environment survives
     * the rename of its directory: LMDB holds descriptors, not the path. */
    struct ks_swap_paths p;
    int err = ks_swap_paths_init(&p, s->path);
    if (err != 0)
        return err;
    struct opened o = {0};
    if ((err = open_at(s, p.ready, &o)) != 0) {
        ks_rm_tree(p.ready);
        ks_swap_paths_close(&p);
        return err;
    }
    /* The old environment's last commit synced (and noted) before it goes. */
    (void)ks_durable_wait(s);
    pthread_rwlock_wrlock(&s->swap_lock);
    if (ks_rm_tree(p.old) != 0 || rename(s->path, p.old) != 0) {
        err = KEEL_EIO;
    } else if (rename(p.ready, s->path) != 0) {
        err = KEEL_EIO;
        rename(p.old, s->path); /* put the old state back where it was */
    }
    if (err == 0) {
        ks_env_close(s);
        err = adopt(s, &o);
    } else {
        mdb_env_close(o.env);
    }
    pthread_rwlock_unlock(&s->swap_lock);
    if (err == 0)
        err = ks_sync_parent(s->path);
    if (err == 0)
        err = rm_old(p.old);
    ks_swap_paths_close(&p);
    return err;
}

/* ---- the store ---- */

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
    s->quota = opts->quota_bytes ? opts->quota_bytes : KS_DEFAULT_QUOTA;
    s->map_size = opts->map_size ? opts->map_size : s->quota * 4;
    if (s->map_size < MIN_MAP_SIZE)
        s->map_size = MIN_MAP_SIZE;
    s->no_sync = opts->no_sync;
    s->notice = opts->notice;
    s->notice_data = opts->notice_data;
    pthread_rwlock_init(&s->swap_lock, NULL);
    pthread_rwlock_init(&s->ov_lock, NULL);
    pthread_mutex_init(&s->stat_lock, NULL);

    int err = ks_durable_init(s);
    if (err == 0)
        err = ks_env_recover(s->path);
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
    ks_durable_close(s); /* the last commit's sync first */
    ks_env_close(s);
    ks_overlay_free(s->ov);
    pthread_rwlock_destroy(&s->swap_lock);
    pthread_rwlock_destroy(&s->ov_lock);
    pthread_mutex_destroy(&s->stat_lock);
    free(s->path);
    free(s);
}

int keel_store_sync(struct keel_store *s)
{
    return ks_durable_wait(s);
}

int64_t keel_store_commit_age_ms(struct keel_store *s)
{
    pthread_mutex_lock(&s->stat_lock);
    uint64_t boot = s->committed.clock_boot, at = s->committed.clock_ms;
    pthread_mutex_unlock(&s->stat_lock);
    return ks_clock_age_ms(boot, at);
}

int keel_store_reserve(struct keel_store *s, uint64_t bytes)
{
    int err = 0;
    pthread_rwlock_rdlock(&s->swap_lock);
    MDB_envinfo info;
    MDB_stat mst;
    int fd = -1;
    if (s->env == NULL || mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &mst) != 0 ||
        mdb_env_get_fd(s->env, &fd) != 0) {
        err = KEEL_EIO;
    } else if (bytes > 0) {
        off_t used = (off_t)(info.me_last_pgno + 1) * mst.ms_psize;
        if (fallocate(fd, FALLOC_FL_KEEP_SIZE, used, (off_t)bytes) != 0)
            err = errno == ENOSPC                          ? KEEL_ENOSPACE
                  : errno == EOPNOTSUPP || errno == ENOSYS ? 0
                                                           : KEEL_EIO;
    }
    pthread_rwlock_unlock(&s->swap_lock);
    return err;
}

void keel_store_stat(struct keel_store *s, struct keel_store_stat *st)
{
    pthread_mutex_lock(&s->stat_lock);
    struct meta m = s->visible;
    pthread_mutex_unlock(&s->stat_lock);
    uint64_t durable = ks_durable_index(s);
    memset(st, 0, sizeof(*st));
    st->applied_index = m.applied_index;
    st->durable_index = durable;
    st->revision = m.revision;
    st->compact_revision = m.compact_revision;
    st->logical_size = m.logical_size;
    st->quota_bytes = ks_quota(&m);
    st->nospace_member = m.nospace_member;
    st->quota_set = m.quota != 0;
    st->keys = m.live_keys;
    pthread_rwlock_rdlock(&s->swap_lock);
    MDB_envinfo info;
    MDB_stat mst;
    if (s->env != NULL && mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &mst) == 0)
        st->db_size = (uint64_t)(info.me_last_pgno + 1) * mst.ms_psize;
    pthread_rwlock_unlock(&s->swap_lock);
}
