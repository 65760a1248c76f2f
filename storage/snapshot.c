/*
 * Snapshots: a compacted copy of the environment written to a descriptor, and the restore
 * that replaces the environment with such a copy. The copy is received and checked here; the
 * files it moves through and the swap itself belong to the environment (env.c).
 */
#include <errno.h>
#include <fcntl.h>
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

/* Copy fd to its end into dir/data.mdb and sync it. */
static int receive(int fd, const char *dir)
{
    char *file = NULL;
    if (asprintf(&file, "%s/data.mdb", dir) < 0)
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
    struct ks_swap_paths p;
    int err = ks_swap_paths_init(&p, s->path);
    if (err != 0)
        return err;
    if ((err = ks_rm_tree(p.incoming)) != 0 || (err = ks_rm_tree(p.ready)) != 0)
        goto out;
    if (mkdir(p.incoming, 0700) != 0) {
        err = KEEL_EIO;
        goto out;
    }
    if ((err = receive(fd, p.incoming)) != 0 || (err = check_copy(p.incoming)) != 0) {
        ks_rm_tree(p.incoming);
        goto out;
    }
    if (rename(p.incoming, p.ready) != 0 || ks_sync_parent(s->path) != 0) {
        err = KEEL_EIO;
        ks_rm_tree(p.incoming);
        goto out;
    }

    err = ks_env_swap(s);
out:
    ks_swap_paths_close(&p);
    return err;
}
