/*
 * Snapshots: a copy of the environment (compacted, or page for page) written to a descriptor, and
 * the restore that replaces the environment with such a copy. The copy is received and checked
 * here; the files it moves through and the swap itself belong to the environment (env.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/*
 * Reading ahead for a copy. A compacting copy walks the trees and faults pages in in their
 * order, not the file's; a copy of a store no longer in the page cache read it a page at a time
 * (with the map opened MDB_NORDAHEAD, as it was then: a 2.2 GB defrag took 32 s instead of 5).
 * While a copy runs, a thread reads the file through once, in order, into a scratch buffer,
 * when it fits in half the memory available: the disk's sequential speed fills the cache ahead
 * of the copy (11 s then). posix_fadvise(WILLNEED) and readahead(2) returned at once and
 * changed nothing here. A bigger store is copied at the faults' pace rather than thrash the
 * cache.
 */
#define PREFETCH_STEP ((size_t)4 << 20)

struct prefetch {
    int fd;
    off_t size;
    uint8_t *buf;
    atomic_bool stop;
};

static void *prefetch_run(void *arg)
{
    struct prefetch *p = arg;
    for (off_t off = 0; off < p->size && !atomic_load(&p->stop); off += (off_t)PREFETCH_STEP)
        if (pread(p->fd, p->buf, PREFETCH_STEP, off) <= 0)
            break;
    return NULL;
}

/* Start reading ahead for a copy of s; false when it is not worth it (or failed to start). */
static bool prefetch_start(struct keel_store *s, struct prefetch *p, pthread_t *th)
{
    struct stat st;
    long pages = sysconf(_SC_AVPHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (mdb_env_get_fd(s->env, &p->fd) != 0 || fstat(p->fd, &st) != 0 || pages <= 0 || psize <= 0 ||
        (double)st.st_size > (double)pages * (double)psize / 2)
        return false;
    p->size = st.st_size;
    atomic_init(&p->stop, false);
    if ((p->buf = malloc(PREFETCH_STEP)) == NULL)
        return false;
    if (pthread_create(th, NULL, prefetch_run, p) != 0) {
        free(p->buf);
        return false;
    }
    return true;
}

int keel_store_snapshot(struct keel_store *s, int fd, bool compact)
{
    pthread_rwlock_rdlock(&s->swap_lock);
    struct prefetch p;
    pthread_t th;
    bool ahead = prefetch_start(s, &p, &th);
    int rc = mdb_env_copyfd2(s->env, fd, compact ? MDB_CP_COMPACT : 0);
    if (ahead) {
        atomic_store(&p.stop, true);
        pthread_join(th, NULL);
        free(p.buf);
    }
    pthread_rwlock_unlock(&s->swap_lock);
    return rc == 0 ? 0 : ks_mdb_err(rc);
}

/* fsync a directory, so the entries made in it are durable. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return KEEL_EIO;
    int rv = fsync(fd);
    close(fd);
    return rv == 0 ? 0 : KEEL_EIO;
}

int keel_store_restore_begin(struct keel_store *s, int *fd)
{
    struct ks_swap_paths p;
    int err = ks_swap_paths_init(&p, s->path);
    if (err != 0)
        return err;
    char *file = NULL;
    if ((err = ks_rm_tree(p.incoming)) != 0 || (err = ks_rm_tree(p.ready)) != 0)
        goto out;
    if (mkdir(p.incoming, 0700) != 0 || asprintf(&file, "%s/data.mdb", p.incoming) < 0) {
        err = KEEL_EIO;
        goto out;
    }
    *fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (*fd < 0) {
        err = KEEL_EIO;
        ks_rm_tree(p.incoming);
    }
out:
    free(file);
    ks_swap_paths_close(&p);
    return err;
}

void keel_store_restore_abort(struct keel_store *s, int fd)
{
    if (fd >= 0)
        close(fd);
    struct ks_swap_paths p;
    if (ks_swap_paths_init(&p, s->path) == 0) {
        ks_rm_tree(p.incoming);
        ks_swap_paths_close(&p);
    }
}

/* The copy in "incoming" is whole on disk (the caller synced its files): check it, promise it
 * ("ready") and swap it in; on failure it is removed and the store keeps its state. */
static int swap_in(struct keel_store *s, int err, uint64_t min_index)
{
    struct ks_swap_paths p;
    int perr = ks_swap_paths_init(&p, s->path);
    if (perr != 0)
        return perr;
    uint64_t applied = 0;
    if (err == 0)
        err = sync_dir(p.incoming);
    if (err == 0)
        err = ks_env_check(p.incoming, &applied);
    if (err == 0 && applied < min_index)
        err = KEEL_ESTALE; /* revisions would go backwards */
    if (err == 0 && (rename(p.incoming, p.ready) != 0 || ks_sync_parent(s->path) != 0))
        err = KEEL_EIO;
    if (err != 0) {
        ks_rm_tree(p.incoming);
        ks_rm_tree(p.ready);
    }
    ks_swap_paths_close(&p);
    return err == 0 ? ks_env_swap(s) : err;
}

int keel_store_restore_finish(struct keel_store *s, int fd, uint64_t min_index)
{
    /* The file, then its directory entry: a crash after the rename below must find the whole
     * copy, and "ready" promises exactly that to ks_env_recover. */
    int err = fsync(fd) == 0 ? 0 : KEEL_EIO;
    if (close(fd) != 0 && err == 0)
        err = KEEL_EIO;
    return swap_in(s, err, min_index);
}

int keel_store_defrag_open(struct keel_store *s, int fd, struct keel_store **copy)
{
    /* The copy's file, synced, then opened where it lies as a store of its own. */
    int err = fsync(fd) == 0 ? 0 : KEEL_EIO;
    if (close(fd) != 0 && err == 0)
        err = KEEL_EIO;
    struct ks_swap_paths p;
    if (err == 0)
        err = ks_swap_paths_init(&p, s->path);
    if (err != 0)
        return err;
    struct keel_store_options o = {.path = p.incoming,
                                   .map_size = s->map_size,
                                   .quota_bytes = s->map_size / 4,
                                   .no_sync = s->no_sync};
    err = keel_store_open(&o, copy);
    if (err != 0)
        ks_rm_tree(p.incoming);
    ks_swap_paths_close(&p);
    return err;
}

int keel_store_defrag_swap(struct keel_store *s, struct keel_store *copy, uint64_t min_index)
{
    /* Closing the copy waits for its last sync: its files are whole on disk. */
    int err = keel_store_sync(copy);
    keel_store_close(copy);
    return swap_in(s, err, min_index);
}

void keel_store_defrag_abort(struct keel_store *s, struct keel_store *copy)
{
    if (copy != NULL)
        keel_store_close(copy);
    keel_store_restore_abort(s, -1);
}

int keel_store_restore(struct keel_store *s, int fd, uint64_t min_index)
{
    int out;
    int err = keel_store_restore_begin(s, &out);
    if (err != 0)
        return err;
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
    if (err != 0) {
        keel_store_restore_abort(s, out);
        return err;
    }
    return keel_store_restore_finish(s, out, min_index);
}
