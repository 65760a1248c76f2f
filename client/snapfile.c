/* keelctl's snapshot file (see snapfile.h). */
#include "snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define MAGIC "KEELSNP1"
#define BUF   (1u << 20)
/* The writer's buffer: whole blocks of it go to the file with O_DIRECT, past the page cache. A
 * buffered write of gigabytes costs a copy into the page cache and the reclaim of as much of it
 * (measured: 2.2 GB took 0.7-3.2 s of system time, against none direct); what is written must
 * reach the disk before the rename anyway. */
#define WBUF  (4u << 20)
#define NBUF  4 /* buffers: one filling, the others queued for or in the disk thread */
#define ALIGN 4096u
#define PAGE  4096u /* LMDB's page here: a copy is whole pages */

/*
 * The disk thread writes full buffers while the caller receives and hashes the next ones: a
 * direct write blocks for the disk's time, which would otherwise stall the stream. Buffers go
 * round a ring: [out, in) are full and queued; the caller fills buf[in % NBUF] once fewer than
 * NBUF are queued.
 */
struct snapfile_writer {
    char *path, *part;
    int fd;
    bool direct;        /* fd is O_DIRECT: only whole ALIGN blocks from a buffer */
    uint8_t *buf[NBUF]; /* WBUF bytes each, ALIGN-aligned */
    size_t held;        /* bytes in the filling buffer */
    uint64_t len;
    EVP_MD_CTX *md;

    pthread_t thread;
    bool thread_on;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    unsigned in, out; /* under mu: buffers queued, buffers written */
    bool stop;        /* under mu: the caller is done (finish, abort) */
    int werr;         /* under mu: the disk thread's errno, 0: none */
};

static int fail(char err[SNAPFILE_ERR_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(char err[SNAPFILE_ERR_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, SNAPFILE_ERR_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding path, so a rename in it is durable. */
static int sync_parent(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -1;
    int rv = fsync(fd);
    close(fd);
    return rv;
}

static void *disk_thread(void *arg)
{
    struct snapfile_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->out == w->in && !w->stop)
            pthread_cond_wait(&w->cond, &w->mu);
        if (w->out == w->in)
            break; /* stopped, and nothing queued */
        uint8_t *b = w->buf[w->out % NBUF];
        int err = w->werr;
        pthread_mutex_unlock(&w->mu);
        if (err == 0 && write_all(w->fd, b, WBUF) != 0)
            err = errno ? errno : EIO;
        pthread_mutex_lock(&w->mu);
        if (err != 0 && w->werr == 0)
            w->werr = err;
        w->out++;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Wait until the disk thread has written everything queued (and stop it): 0 or its errno. */
static int drain_thread(struct snapfile_writer *w)
{
    if (!w->thread_on)
        return 0;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->thread_on = false;
    return w->werr;
}

static void writer_free(struct snapfile_writer *w)
{
    drain_thread(w);
    if (w->fd >= 0)
        close(w->fd);
    for (int i = 0; i < NBUF; i++)
        free(w->buf[i]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cond);
    EVP_MD_CTX_free(w->md);
    free(w->path);
    free(w->part);
    free(w);
}

int snapfile_create(const char *path, struct snapfile_writer **out, char err[SNAPFILE_ERR_MAX])
{
    struct snapfile_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return fail(err, "out of memory");
    w->fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->path = strdup(path);
    w->md = EVP_MD_CTX_new();
    if (w->path == NULL || w->md == NULL || asprintf(&w->part, "%s.part", path) < 0) {
        w->part = NULL;
        writer_free(w);
        return fail(err, "out of memory");
    }
    if (EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
        writer_free(w);
        return fail(err, "SHA-256 is not available");
    }
    for (int i = 0; i < NBUF; i++) {
        if (posix_memalign((void **)&w->buf[i], ALIGN, WBUF) != 0) {
            w->buf[i] = NULL;
            writer_free(w);
            return fail(err, "out of memory");
        }
    }
    /* Direct where the filesystem allows it (not tmpfs, for one). */
    w->fd = open(w->part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0600);
    w->direct = w->fd >= 0;
    if (w->fd < 0 && errno == EINVAL)
        w->fd = open(w->part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        int e = errno;
        fail(err, "could not create %s: %s", w->part, strerror(e));
        writer_free(w);
        return -1;
    }
    if (pthread_create(&w->thread, NULL, disk_thread, w) != 0) {
        fail(err, "cannot start a thread to write %s", w->part);
        unlink(w->part);
        writer_free(w);
        return -1;
    }
    w->thread_on = true;
    *out = w;
    return 0;
}

/* Append n bytes to the buffer, writing it out each time it fills. */
static int put(struct snapfile_writer *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        uint8_t *cur = w->buf[w->in % NBUF]; /* the caller's alone: fewer than NBUF queued */
        size_t take = WBUF - w->held < n ? WBUF - w->held : n;
        memcpy(cur + w->held, b, take);
        w->held += take;
        b += take;
        n -= take;
        if (w->held < WBUF)
            continue;
        pthread_mutex_lock(&w->mu);
        w->in++;
        pthread_cond_broadcast(&w->cond);
        while (w->in - w->out == NBUF && w->werr == 0)
            pthread_cond_wait(&w->cond, &w->mu);
        int err = w->werr;
        pthread_mutex_unlock(&w->mu);
        w->held = 0;
        if (err != 0) {
            errno = err;
            return -1;
        }
    }
    return 0;
}

/* Write what the buffer holds: its whole blocks as they are, the rest (the file's end) with
 * O_DIRECT turned off. */
static int flush_tail(struct snapfile_writer *w)
{
    int err = drain_thread(w);
    if (err != 0) {
        errno = err;
        return -1;
    }
    uint8_t *cur = w->buf[w->in % NBUF];
    size_t whole = w->direct ? w->held / ALIGN * ALIGN : w->held;
    if (whole > 0 && write_all(w->fd, cur, whole) != 0)
        return -1;
    if (whole < w->held) {
        int fl = fcntl(w->fd, F_GETFL);
        if (fl < 0 || fcntl(w->fd, F_SETFL, fl & ~O_DIRECT) != 0)
            return -1;
        w->direct = false;
        if (write_all(w->fd, cur + whole, w->held - whole) != 0)
            return -1;
    }
    w->held = 0;
    return 0;
}

int snapfile_write(struct snapfile_writer *w, const void *p, size_t n, char err[SNAPFILE_ERR_MAX])
{
    if (put(w, p, n) != 0)
        return fail(err, "writing %s: %s", w->part, strerror(errno));
    EVP_DigestUpdate(w->md, p, n);
    w->len += n;
    return 0;
}

void snapfile_abort(struct snapfile_writer *w)
{
    if (w == NULL)
        return;
    unlink(w->part);
    writer_free(w);
}

int snapfile_finish(struct snapfile_writer *w, uint8_t sha256[32], char err[SNAPFILE_ERR_MAX])
{
    uint8_t t[SNAPFILE_TRAILER];
    unsigned dlen = 0;
    memcpy(t, MAGIC, 8);
    for (int i = 0; i < 8; i++)
        t[8 + i] = (uint8_t)(w->len >> (8 * i));
    int rv = EVP_DigestFinal_ex(w->md, t + 16, &dlen) == 1 && dlen == 32 ? 0 : -1;
    if (rv != 0)
        fail(err, "SHA-256 failed");
    else if (put(w, t, sizeof(t)) != 0 || flush_tail(w) != 0 || fsync(w->fd) != 0)
        rv = fail(err, "writing %s: %s", w->part, strerror(errno));
    else if (close(w->fd) != 0)
        rv = fail(err, "closing %s: %s", w->part, strerror(errno));
    else if ((w->fd = -1, rename(w->part, w->path) != 0))
        rv = fail(err, "renaming %s to %s: %s", w->part, w->path, strerror(errno));
    else if (sync_parent(w->path) != 0)
        rv = fail(err, "syncing the directory of %s: %s", w->path, strerror(errno));
    if (rv == 0 && sha256 != NULL)
        memcpy(sha256, t + 16, 32);
    if (rv != 0)
        unlink(w->part);
    writer_free(w);
    return rv;
}

/* SHA-256 of the first len bytes of fd (read from its start). */
static int digest(int fd, uint64_t len, uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t *buf = malloc(BUF);
    int rv = md != NULL && buf != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? 0 : -1;
    for (uint64_t off = 0; rv == 0 && off < len;) {
        size_t want = len - off < BUF ? (size_t)(len - off) : BUF;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rv = -1;
            break;
        }
        EVP_DigestUpdate(md, buf, (size_t)n);
        off += (uint64_t)n;
    }
    unsigned dlen = 0;
    if (rv == 0 && (EVP_DigestFinal_ex(md, out, &dlen) != 1 || dlen != 32))
        rv = -1;
    free(buf);
    EVP_MD_CTX_free(md);
    return rv;
}

/*
 * etcd's shape, which keel-gateway gives the copy for etcdctl snapshot save: the copy (whole
 * pages) then the SHA-256 of it, 32 bytes. Sets info->has_trailer, copy_len and sha256 when the
 * file is that and its digest holds; 0, or -1 when it cannot be read (errno).
 */
static int etcd_shaped(int fd, struct snapfile_info *info)
{
    uint64_t size = info->file_size;
    if (size < 32 + PAGE || (size - 32) % PAGE != 0)
        return 0;
    uint8_t want[32], got[32];
    if (pread(fd, want, sizeof(want), (off_t)(size - 32)) != (ssize_t)sizeof(want))
        return -1;
    if (digest(fd, size - 32, got) != 0)
        return -1;
    if (memcmp(want, got, 32) == 0) {
        info->has_trailer = true;
        info->copy_len = size - 32;
        memcpy(info->sha256, got, 32);
    }
    return 0;
}

int snapfile_check(const char *path, bool allow_raw, struct snapfile_info *info,
                   char err[SNAPFILE_ERR_MAX])
{
    memset(info, 0, sizeof(*info));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, "cannot open snapshot %s: %s", path, strerror(errno));
    struct stat st;
    uint8_t t[SNAPFILE_TRAILER];
    int rv = 0;
    if (fstat(fd, &st) != 0) {
        rv = fail(err, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    info->file_size = (uint64_t)st.st_size;
    if (info->file_size < SNAPFILE_TRAILER ||
        pread(fd, t, sizeof(t), st.st_size - SNAPFILE_TRAILER) != (ssize_t)sizeof(t) ||
        memcmp(t, MAGIC, 8) != 0) {
        if ((rv = etcd_shaped(fd, info)) != 0) {
            rv = fail(err, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (info->has_trailer)
            goto out;
        if (allow_raw) {
            info->copy_len = info->file_size; /* a bare copy, taken as it is */
            goto out;
        }
        rv = fail(err,
                  "%s is not a complete keel snapshot: it ends neither with keelctl's snapshot "
                  "trailer nor with the SHA-256 of what precedes it (what etcdctl snapshot save "
                  "through keel-gateway writes): cut short while it was saved or copied, altered, "
                  "or not a snapshot (--skip-hash-check restores a bare copy)",
                  path);
        goto out;
    }
    info->has_trailer = true;
    uint64_t len = 0;
    for (int i = 0; i < 8; i++)
        len |= (uint64_t)t[8 + i] << (8 * i);
    if (len != info->file_size - SNAPFILE_TRAILER) {
        rv =
            fail(err, "%s is damaged: its trailer records a copy of %llu bytes but %llu precede it",
                 path, (unsigned long long)len,
                 (unsigned long long)(info->file_size - SNAPFILE_TRAILER));
        goto out;
    }
    info->copy_len = len;
    memcpy(info->sha256, t + 16, 32);
    uint8_t got[32];
    if (digest(fd, len, got) != 0) {
        rv = fail(err, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    if (memcmp(got, info->sha256, 32) != 0 && !allow_raw)
        rv = fail(err,
                  "%s is damaged or altered: the SHA-256 of its copy does not match the "
                  "one recorded when it was saved",
                  path);
out:
    close(fd);
    return rv;
}

int snapfile_extract(const char *path, uint64_t len, const char *out_path,
                     char err[SNAPFILE_ERR_MAX])
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return fail(err, "cannot open %s: %s", path, strerror(errno));
    int out = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        int e = errno;
        close(in);
        return fail(err, "cannot create %s: %s", out_path, strerror(e));
    }
    uint8_t *buf = malloc(BUF);
    int rv = buf != NULL ? 0 : fail(err, "out of memory");
    for (uint64_t off = 0; rv == 0 && off < len;) {
        size_t want = len - off < BUF ? (size_t)(len - off) : BUF;
        ssize_t n = pread(in, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rv = fail(err, "reading %s: %s", path, n == 0 ? "unexpected end" : strerror(errno));
        else if (write_all(out, buf, (size_t)n) != 0)
            rv = fail(err, "writing %s: %s", out_path, strerror(errno));
        else
            off += (uint64_t)n;
    }
    if (rv == 0 && fsync(out) != 0)
        rv = fail(err, "syncing %s: %s", out_path, strerror(errno));
    free(buf);
    close(in);
    if (close(out) != 0 && rv == 0)
        rv = fail(err, "closing %s: %s", out_path, strerror(errno));
    if (rv == 0 && sync_parent(out_path) != 0)
        rv = fail(err, "syncing the directory of %s: %s", out_path, strerror(errno));
    return rv;
}
