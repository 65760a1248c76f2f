/*
 * Durability of commits. LMDB commits without a sync (MDB_NOSYNC), so a commit costs the writer
 * only its page writes; a background thread then syncs the file and records the commit in the
 * synced note, "<dir>/synced": the LMDB transaction id now on disk and the boot it was synced
 * in. The durable index (keel_store_stat) is the note's; raft snapshot tokens promise only it.
 *
 * Plain MDB_NOSYNC is not crash safe: after an OS crash the newest meta page may have reached
 * the disk while pages it points to did not. Three rules make it safe here:
 *  - a commit waits until the previous commit is synced and noted before it writes anything
 *    (ks_durable_wait), so at most the newest meta page is unsynced, and the tree of the meta
 *    before it is whole on disk: LMDB reuses a page freed by transaction t only from t + 2 on
 *    (mdb_page_alloc takes free-list records older than the oldest reader and than the last
 *    commit), so the commit in flight never writes over the previous tree;
 *  - a killed process loses nothing LMDB wrote: the page cache keeps it, and the boot id is the
 *    same at the next open, which then trusts the newest meta as LMDB does;
 *  - after a machine restart (another boot id), if the newest meta is newer than the note, it
 *    may point at lost pages: ks_durable_recover clears its transaction id before LMDB opens the
 *    file, so LMDB takes the meta before it (synced). The raft log holds every entry above it:
 *    raft compacts only up to a snapshot token, and tokens wait for the note.
 *
 * The meta page layout read here is LMDB's data format version 1 (liblmdb 0.9.x, 64-bit):
 * checked by magic and version before anything is changed, and by test_store_durable against
 * LMDB's own mdb_env_info.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define NOTE_MAGIC 0x444e59534c454bull /* "KELSYND" */
#define NOTE_LEN   KS_NOTE_LEN
#define NOTE_NAME  "synced"

/* LMDB 0.9 (MDB_DATA_VERSION 1): meta pages 0 and 1, each a page header then MDB_meta. */
#define LMDB_PAGEHDR   16
#define LMDB_MAGIC     0xBEEFC0DEu
#define LMDB_VERSION   1u
#define LMDB_OFF_MAGIC 0   /* uint32_t mm_magic */
#define LMDB_OFF_VER   4   /* uint32_t mm_version */
#define LMDB_OFF_PSIZE 24  /* uint32_t mm_dbs[FREE_DBI].md_pad, the page size */
#define LMDB_OFF_TXNID 128 /* size_t mm_txnid, after two MDB_db of 48 bytes and mm_last_pg */

static uint64_t fnv64(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

void ks_note_encode(uint64_t txnid, uint64_t boot, uint8_t out[KS_NOTE_LEN])
{
    keel_put_le64(out, NOTE_MAGIC);
    keel_put_le64(out + 8, txnid);
    keel_put_le64(out + 16, boot);
    keel_put_le64(out + 24, fnv64(out, 24));
}

static int note_decode(const uint8_t *b, uint64_t *txnid, uint64_t *boot)
{
    if (keel_get_le64(b) != NOTE_MAGIC || keel_get_le64(b + 24) != fnv64(b, 24))
        return KEEL_ECORRUPT;
    *txnid = keel_get_le64(b + 8);
    *boot = keel_get_le64(b + 16);
    return 0;
}

static char *note_path(const char *dir)
{
    size_t n = strlen(dir) + sizeof(NOTE_NAME) + 1;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", dir, NOTE_NAME);
    return p;
}

static int read_at(int fd, void *buf, size_t n, off_t off)
{
    return pread(fd, buf, n, off) == (ssize_t)n ? 0 : KEEL_EIO;
}

/* The transaction id of the meta page at off, or KEEL_ECORRUPT when it is not LMDB's format. */
static int meta_txnid(int fd, off_t off, uint64_t *txnid)
{
    uint8_t m[LMDB_OFF_TXNID + 8];
    int err = read_at(fd, m, sizeof(m), off + LMDB_PAGEHDR);
    if (err != 0)
        return err;
    uint32_t magic, ver;
    memcpy(&magic, m + LMDB_OFF_MAGIC, 4);
    memcpy(&ver, m + LMDB_OFF_VER, 4);
    if (magic != LMDB_MAGIC || ver != LMDB_VERSION)
        return KEEL_ECORRUPT;
    size_t id;
    memcpy(&id, m + LMDB_OFF_TXNID, sizeof(id));
    *txnid = id;
    return 0;
}

/* Open dir/data.mdb: a descriptor, or -1 with *err (KEEL_ENOTFOUND when there is none). */
static int open_data(const char *dir, int flags, int *err)
{
    char *path = malloc(strlen(dir) + sizeof("/data.mdb"));
    if (path == NULL) {
        *err = KEEL_ENOMEM;
        return -1;
    }
    sprintf(path, "%s/data.mdb", dir);
    int fd = open(path, flags | O_CLOEXEC);
    free(path);
    if (fd < 0)
        *err = errno == ENOENT ? KEEL_ENOTFOUND : KEEL_EIO;
    return fd;
}

/* The page size (where meta page 1 starts) and both metas' transaction ids. */
static int read_metas(int fd, uint32_t *psize, uint64_t txnid[2])
{
    uint8_t m[LMDB_PAGEHDR + LMDB_OFF_PSIZE + 4];
    int err = read_at(fd, m, sizeof(m), 0);
    if (err != 0)
        return err;
    memcpy(psize, m + LMDB_PAGEHDR + LMDB_OFF_PSIZE, 4);
    if (*psize < 512 || *psize > 65536 || (*psize & (*psize - 1)) != 0)
        return KEEL_ECORRUPT;
    if ((err = meta_txnid(fd, 0, &txnid[0])) != 0)
        return err;
    return meta_txnid(fd, (off_t)*psize, &txnid[1]);
}

int ks_durable_metas(const char *dir, uint64_t txnid[2])
{
    int err = 0;
    int fd = open_data(dir, O_RDONLY, &err);
    if (fd < 0)
        return err;
    uint32_t psize;
    err = read_metas(fd, &psize, txnid);
    close(fd);
    return err;
}

/* Tell the store's owner (keel_store_options.notice), if it listens. */
static void notice(struct keel_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void notice(struct keel_store *s, const char *fmt, ...)
{
    if (s->notice == NULL)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    s->notice(s->notice_data, msg);
}

int ks_durable_recover(struct keel_store *s, const char *dir, uint64_t boot, uint64_t *dropped)
{
    *dropped = 0;
    char *np = note_path(dir);
    if (np == NULL)
        return KEEL_ENOMEM;
    uint8_t b[NOTE_LEN];
    int fd = open(np, O_RDONLY | O_CLOEXEC);
    free(np);
    if (fd < 0)
        return 0; /* a new store, or one written before the note: every commit was synced */
    int err = read_at(fd, b, sizeof(b), 0);
    close(fd);
    uint64_t synced, noted_boot;
    if (err != 0 || note_decode(b, &synced, &noted_boot) != 0) {
        /* The note is written whole in one sector after the sync it records; a torn or short
         * one means the machine stopped while writing it, and what it would have said is
         * unknown. Opening as LMDB would is then the only choice left: say so. */
        notice(s, "store: the synced note in %s is unreadable; opening the newest commit", dir);
        return 0;
    }
    /* The same boot: the page cache holds every write LMDB made. An unknown boot (no boot id
     * to read) proves nothing: dropping a commit newer than the note is always safe. */
    if (boot != 0 && noted_boot == boot)
        return 0;
    fd = open_data(dir, O_RDWR, &err);
    if (fd < 0)
        return err == KEEL_ENOTFOUND ? 0 : err;
    uint32_t psize;
    uint64_t id[2];
    if ((err = read_metas(fd, &psize, id)) != 0) {
        close(fd);
        return err;
    }
    int newest = id[1] > id[0];
    if (id[newest] <= synced) {
        close(fd);
        return 0;
    }
    if (id[!newest] > synced) {
        /* Both metas newer than the last sync: the rules above make this impossible. */
        close(fd);
        notice(s,
               "store: both LMDB meta pages (txn %llu, %llu) are newer than the last synced "
               "commit (txn %llu): refusing to guess",
               (unsigned long long)id[0], (unsigned long long)id[1], (unsigned long long)synced);
        return KEEL_ECORRUPT;
    }
    size_t zero = 0;
    off_t at = (off_t)newest * psize + LMDB_PAGEHDR + LMDB_OFF_TXNID;
    if (pwrite(fd, &zero, sizeof(zero), at) != (ssize_t)sizeof(zero) || fdatasync(fd) != 0)
        err = KEEL_EIO;
    close(fd);
    if (err == 0) {
        *dropped = id[newest];
        notice(s,
               "store: the machine restarted after commit txn %llu was written but before it "
               "was synced; opening the synced commit txn %llu (the raft log replays the rest)",
               (unsigned long long)id[newest], (unsigned long long)id[!newest]);
    }
    return err;
}

/* ---- the syncer ---- */

static int write_note(struct keel_store *s, uint64_t txnid)
{
    struct ks_durable *d = &s->dur;
    uint8_t b[NOTE_LEN];
    ks_note_encode(txnid, ks_clock_boot(), b);
    if (d->note_fd < 0 || pwrite(d->note_fd, b, sizeof(b), 0) != (ssize_t)sizeof(b) ||
        fdatasync(d->note_fd) != 0)
        return KEEL_EIO;
    return 0;
}

/*
 * Start the write-back of the file's dirty pages a slice at a time, each slice written before
 * the next is started. A commit leaves megabytes of pages dirty all over the file; one
 * fdatasync would queue them all on the device at once, and the raft log's synced writes, which
 * every answer waits for, would queue behind them. Slices keep our share of the device queue
 * small (measured: put at 256 clients, preloaded, 4 alternating runs each, 27.0-30.2k puts/s in
 * 1 MiB slices against 21.6-29.1k with one fdatasync; p99 at 64 clients 11-15 ms against 16-19).
 * The fdatasync after it still makes the commit durable: this only paces the writes. At most
 * SYNC_SLICES slices per sync, so a big file costs a bounded number of calls.
 *
 * 0, or KEEL_EIO when a slice failed to reach the disk. That error must fail the sync: waiting
 * on the slice advanced the file's write-back error cursor, so the fdatasync after it would no
 * longer report the lost pages. A file or kernel that cannot do this (EINVAL, ESPIPE, ENOSYS)
 * leaves it all to the fdatasync.
 */
#define SYNC_SLICE_MIN (1 << 20)
#define SYNC_SLICES    4096

static int write_back_paced(struct keel_store *s)
{
#ifdef SYNC_FILE_RANGE_WRITE
    mdb_filehandle_t fd;
    struct stat st;
    if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0)
        return 0; /* nothing waited on yet: the fdatasync alone does it */
    off_t slice =
        st.st_size / SYNC_SLICES > SYNC_SLICE_MIN ? st.st_size / SYNC_SLICES : SYNC_SLICE_MIN;
    for (off_t off = 0; off < st.st_size; off += slice) {
        if (sync_file_range(fd, off, slice,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER) == 0)
            continue;
        if (errno == EINVAL || errno == ESPIPE || errno == ENOSYS)
            return 0;
        return KEEL_EIO;
    }
#else
    (void)s;
#endif
    return 0;
}

/* Sync the environment, then note txnid as on disk. */
static int sync_and_note(struct keel_store *s, uint64_t txnid)
{
    if (s->no_sync)
        return 0;
    pthread_rwlock_rdlock(&s->swap_lock);
    int err = write_back_paced(s);
    int rc = err == 0 ? mdb_env_sync(s->env, 1) : 0;
    pthread_rwlock_unlock(&s->swap_lock);
    if (err != 0 || rc != 0)
        return KEEL_EIO;
    return write_note(s, txnid);
}

static void *syncer_main(void *arg)
{
    struct keel_store *s = arg;
    struct ks_durable *d = &s->dur;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->pending && !d->stop)
            pthread_cond_wait(&d->cond, &d->mu);
        if (!d->pending)
            break;
        uint64_t txnid = d->want_txnid, index = d->want_index;
        d->pending = false;
        d->busy = true;
        pthread_mutex_unlock(&d->mu);
        int err = sync_and_note(s, txnid);
        pthread_mutex_lock(&d->mu);
        d->busy = false;
        if (err != 0 && d->err == 0)
            d->err = err;
        if (err == 0)
            d->durable_index = index;
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

int ks_durable_init(struct keel_store *s)
{
    struct ks_durable *d = &s->dur;
    d->note_fd = -1;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cond, NULL);
    d->inited = true;
    if (pthread_create(&d->thread, NULL, syncer_main, s) != 0)
        return KEEL_ENOMEM;
    d->running = true;
    return 0;
}

int ks_durable_adopt(struct keel_store *s, uint64_t applied_index)
{
    struct ks_durable *d = &s->dur;
    if (d->note_fd >= 0)
        close(d->note_fd);
    d->note_fd = -1;
    int err = 0;
    if (!s->no_sync) {
        char *np = note_path(s->path);
        if (np == NULL)
            return KEEL_ENOMEM;
        d->note_fd = open(np, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        free(np);
        MDB_envinfo info;
        if (d->note_fd < 0 || mdb_env_info(s->env, &info) != 0 || mdb_env_sync(s->env, 1) != 0)
            err = KEEL_EIO;
        if (err == 0)
            err = write_note(s, info.me_last_txnid);
    }
    pthread_mutex_lock(&d->mu);
    if (err == 0)
        d->durable_index = applied_index;
    pthread_mutex_unlock(&d->mu);
    return err;
}

int ks_durable_wait(struct keel_store *s)
{
    struct ks_durable *d = &s->dur;
    pthread_mutex_lock(&d->mu);
    while (d->pending || d->busy)
        pthread_cond_wait(&d->cond, &d->mu);
    int err = d->err;
    pthread_mutex_unlock(&d->mu);
    return err;
}

void ks_durable_request(struct keel_store *s, uint64_t txnid, uint64_t applied_index)
{
    struct ks_durable *d = &s->dur;
    pthread_mutex_lock(&d->mu);
    d->pending = true;
    d->want_txnid = txnid;
    d->want_index = applied_index;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->mu);
}

uint64_t ks_durable_index(struct keel_store *s)
{
    struct ks_durable *d = &s->dur;
    pthread_mutex_lock(&d->mu);
    uint64_t i = d->durable_index;
    pthread_mutex_unlock(&d->mu);
    return i;
}

void ks_durable_close(struct keel_store *s)
{
    struct ks_durable *d = &s->dur;
    if (d->running) {
        pthread_mutex_lock(&d->mu);
        d->stop = true;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->thread, NULL); /* after the sync still pending, if any */
        d->running = false;
    }
    if (d->inited) {
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cond);
        d->inited = false;
    }
    if (d->note_fd >= 0)
        close(d->note_fd);
    d->note_fd = -1;
}
