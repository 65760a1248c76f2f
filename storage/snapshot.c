/*
 * Snapshots: a compacted copy of the environment written to a descriptor, and the restore
 * that replaces the environment with such a copy.
 *
 * Restore never leaves a half-written store behind. The copy is written into
 * "<path>.incoming", synced, opened once to check it is a keel store, and renamed to
 * "<path>.ready": from that moment it is complete. The swap then renames <path> to
 * "<path>.old" and "<path>.ready" to <path>. keel_store_open finishes a swap a crash
 * interrupted (a ready copy exists) and discards an incomplete incoming copy.
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

int keel_store_snapshot(struct keel_store *s, int fd)
{
    pthread_rwlock_rdlock(&s->swap_lock);
    int rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->swap_lock);
    return rc == 0 ? 0 : ks_mdb_err(rc);
}

static char *path_with(const char *path, const char *suffix)
{
    char *p = NULL;
    if (asprintf(&p, "%s%s", path, suffix) < 0)
        return NULL;
    return p;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int rm_tree(const char *path)
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

/* fsync the directory holding path, so renames in it are durable. */
static int sync_parent(const char *path)
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
    char *incoming = path_with(path, ".incoming");
    char *ready = path_with(path, ".ready");
    char *old = path_with(path, ".old");
    int err = 0;
    if (incoming == NULL || ready == NULL || old == NULL) {
        err = KEEL_ENOMEM;
        goto out;
    }
    if ((err = rm_tree(incoming)) != 0)
        goto out;
    if (exists(ready)) {
        /* A complete copy waits: finish the swap. */
        if (exists(path)) {
            if ((err = rm_tree(old)) != 0)
                goto out;
            if (rename(path, old) != 0) {
                err = KEEL_EIO;
                goto out;
            }
        }
        if (rename(ready, path) != 0) {
            err = KEEL_EIO;
            goto out;
        }
        if ((err = sync_parent(path)) != 0)
            goto out;
    }
    err = rm_tree(old);
out:
    free(incoming);
    free(ready);
    free(old);
    return err;
}

/* Copy fd to its end into dir/data.mdb and sync it. */
static int receive(int fd, const char *dir)
{
    char *file = path_with(dir, "/data.mdb");
    if (file == NULL)
        return KEEL_ENOMEM;
    int out = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    free(file);
    if (out < 0)
        return KEEL_EIO;
    int err = 0;
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    if (buf == NULL)
        err = KEEL_ENOMEM;
    while (err == 0) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = KEEL_EIO;
            break;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                err = KEEL_EIO;
                break;
            }
            off += w;
        }
    }
    free(buf);
    if (err == 0 && fsync(out) != 0)
        err = KEEL_EIO;
    close(out);
    return err;
}

/* Open the copy at dir once: it must be an LMDB environment holding keel's meta. */
static int check_copy(const char *dir)
{
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (rc != 0)
        return ks_mdb_err(rc);
    mdb_env_set_maxdbs(env, 8);
    int err = KEEL_ECORRUPT;
    MDB_txn *txn;
    MDB_dbi dbi;
    struct meta m;
    if (mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS | MDB_NOLOCK, 0600) == 0 &&
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
        if (mdb_dbi_open(txn, "meta", 0, &dbi) == 0 && ks_meta_load(txn, dbi, &m) == 0)
            err = 0;
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return err;
}

int keel_store_restore(struct keel_store *s, int fd)
{
    char *incoming = path_with(s->path, ".incoming");
    char *ready = path_with(s->path, ".ready");
    char *old = path_with(s->path, ".old");
    int err = 0;
    if (incoming == NULL || ready == NULL || old == NULL) {
        err = KEEL_ENOMEM;
        goto out;
    }
    if ((err = rm_tree(incoming)) != 0 || (err = rm_tree(ready)) != 0)
        goto out;
    if (mkdir(incoming, 0700) != 0) {
        err = KEEL_EIO;
        goto out;
    }
    if ((err = receive(fd, incoming)) != 0 || (err = check_copy(incoming)) != 0) {
        rm_tree(incoming);
        goto out;
    }
    if (rename(incoming, ready) != 0 || sync_parent(s->path) != 0) {
        err = KEEL_EIO;
        rm_tree(incoming);
        goto out;
    }

    /* The copy is complete and durable: swap it in with readers excluded. */
    pthread_rwlock_wrlock(&s->swap_lock);
    ks_env_close(s);
    err = ks_env_recover(s->path);
    if (err == 0)
        err = ks_env_open(s);
    pthread_rwlock_unlock(&s->swap_lock);
out:
    free(incoming);
    free(ready);
    free(old);
    return err;
}
