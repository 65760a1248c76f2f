/*
 * Checkpoint streaming (see snapstream.h). One stream's life:
 *
 *   keel_snapstream_start -> copier thread writes the copy to an unlinked file in the data dir
 *     loop: drained (the session's output drained) -> send what the copier has written since
 *           -> nothing new yet: look again in POLL_MS -> ... -> copier done and all sent: last
 *           chunk (remaining_bytes 0), done
 *   copier thread ends -> async -> copy_done (loop): join it, note the final size
 *   the session closing -> abandoned: freed once the copier has ended (it cannot be stopped
 *     inside LMDB's copy, and the member's one stream stays taken until then)
 *
 * Streaming while copying is what lets a fetching follower see its first chunk within its
 * receive timeout on a large store; copying to a file at disk speed (rather than into a pipe at
 * the client's pace) is what keeps the copy's LMDB read transaction short whatever the client
 * does. A compacted LMDB copy is written sequentially, so every byte below the file's size is
 * final.
 */
#include "snapstream.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

#define CHUNK   (1u << 20)
#define POLL_MS 20 /* how soon to look again when the client is waiting for the copier */

struct stream {
    struct keel_snapstream *ss;
    uint64_t session;
    uint64_t client_id;
    int fd;
    off_t estimate; /* the store's size at the start: remaining_bytes until the copy is done */
    off_t off;      /* bytes sent */
    uint8_t *chunk;

    pthread_t thread;
    uint64_t sync_ticket; /* the writer's sync the copy waits for (0: none) */
    atomic_int copy_err;  /* the copier's result, set before it signals */
    uv_async_t copied_async;
    uv_timer_t poll;
    int handles;    /* of copied_async and poll, still to be closed */
    bool copying;   /* the copier thread runs (loop's view: cleared in copy_done) */
    off_t size;     /* the final size, once copied */
    bool waiting;   /* the session drained and nothing was there to send */
    bool abandoned; /* finished, failed or the session closed: free once the copier ended */
};

static void handle_closed(uv_handle_t *h)
{
    struct stream *st = h->data;
    if (--st->handles > 0)
        return;
    st->ss->active--;
    if (st->fd >= 0)
        close(st->fd);
    free(st->chunk);
    free(st);
}

/* The stream is over for the client; the memory goes once the copier has ended. */
static void stream_end(struct stream *st)
{
    const struct keel_responder *out = st->ss->reply->out;
    if (!st->abandoned)
        out->on_drain(out->ctx, st->session, NULL, st);
    st->abandoned = true;
    uv_timer_stop(&st->poll);
    if (st->copying)
        return; /* copy_done comes back here */
    uv_close((uv_handle_t *)&st->copied_async, handle_closed);
    uv_close((uv_handle_t *)&st->poll, handle_closed);
}

static void fail(struct stream *st, int err, const char *msg)
{
    keel_reply_error(st->ss->reply, st->session, st->client_id, err, msg);
    stream_end(st);
}

static void *copier(void *arg)
{
    struct stream *st = arg;
    int err = 0;
    if (st->sync_ticket != 0 && keel_fsm_snapshot_wait(st->ss->fsm, st->sync_ticket) != 0)
        err = KEEL_EUNAVAILABLE;
    if (err == 0)
        err = keel_store_snapshot(st->ss->store, st->fd);
    atomic_store(&st->copy_err, err);
    uv_async_send(&st->copied_async);
    return NULL;
}

static void poll_timer(uv_timer_t *t);

/* Send the next chunk if there is one; the last one when the copy is complete and sent. */
static void pump(struct stream *st)
{
    const struct keel_reply *r = st->ss->reply;
    st->waiting = false;
    off_t avail = st->size;
    if (st->copying) {
        struct stat sb;
        if (fstat(st->fd, &sb) != 0) {
            fail(st, KEEL_EIO, "reading the checkpoint failed");
            return;
        }
        avail = sb.st_size;
    }
    size_t n = avail - st->off > CHUNK ? CHUNK : (size_t)(avail - st->off);
    if (n == 0 && st->copying) {
        st->waiting = true; /* the copier is behind the client: look again shortly */
        uv_timer_start(&st->poll, poll_timer, POLL_MS, 0);
        return;
    }
    ssize_t got = n ? pread(st->fd, st->chunk, n, st->off) : 0;
    if (got < 0 || (size_t)got != n) {
        fail(st, KEEL_EIO, "reading the checkpoint failed");
        return;
    }
    st->off += got;
    Keel__SnapshotResponse sr = KEEL__SNAPSHOT_RESPONSE__INIT;
    sr.blob.data = st->chunk;
    sr.blob.len = (size_t)got;
    if (!st->copying)
        sr.remaining_bytes = (uint64_t)(st->size - st->off);
    else /* not known yet, and never 0 before the end */
        sr.remaining_bytes = st->estimate > st->off ? (uint64_t)(st->estimate - st->off) : 1;
    sr.version = KEEL_VERSION;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = st->client_id;
    resp.body_case = KEEL__RESPONSE__BODY_SNAPSHOT;
    resp.snapshot = &sr;
    keel_reply_send(r, st->session, &resp, -1, KEEL_RESPOND_PUSH);
    if (sr.remaining_bytes == 0) {
        r->out->done(r->out->ctx, st->session);
        stream_end(st);
    }
}

static void poll_timer(uv_timer_t *t)
{
    pump(t->data);
}

static void drained(void *data, int closed)
{
    struct stream *st = data;
    if (closed) {
        st->abandoned = true; /* the hook is gone with the session */
        stream_end(st);
        return;
    }
    pump(st);
}

static void copy_done(uv_async_t *a)
{
    struct stream *st = a->data;
    pthread_join(st->thread, NULL);
    st->copying = false;
    int err = atomic_load(&st->copy_err);
    struct stat sb;
    if (err == 0 && fstat(st->fd, &sb) != 0)
        err = KEEL_EIO;
    if (st->abandoned) {
        stream_end(st);
        return;
    }
    if (err != 0) {
        fail(st, err,
             err == KEEL_EUNAVAILABLE
                 ? "the storage writer did not commit what it had applied within a minute"
                 : "writing the checkpoint failed");
        return;
    }
    st->size = sb.st_size;
    KLOG_INFO("checkpoint of %lld bytes copied for session %llu", (long long)st->size,
              (unsigned long long)st->session);
    if (st->waiting) {
        uv_timer_stop(&st->poll);
        pump(st);
    }
}

static int open_staging(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        char path[600];
        snprintf(path, sizeof(path), "%s/checkpoint-XXXXXX", dir);
        fd = mkstemp(path);
        if (fd >= 0)
            unlink(path);
    }
    return fd;
}

void keel_snapstream_start(struct keel_snapstream *ss, uint64_t session, uint64_t id)
{
    if (ss->active > 0) {
        keel_reply_error(ss->reply, session, id, KEEL_ETOOMANYREQUESTS,
                         "a checkpoint stream is already running on this member: retry when it "
                         "has ended");
        return;
    }
    struct stream *st = calloc(1, sizeof(*st));
    uint8_t *chunk = malloc(CHUNK);
    int fd = open_staging(ss->data_dir);
    if (st == NULL || chunk == NULL || fd < 0) {
        free(st);
        free(chunk);
        if (fd >= 0)
            close(fd);
        keel_reply_error(ss->reply, session, id, fd < 0 ? KEEL_EIO : KEEL_ENOMEM,
                         fd < 0 ? "cannot stage the checkpoint in the data dir" : NULL);
        return;
    }
    uint64_t ticket = 0;
    int err = ss->fsm != NULL ? keel_fsm_sync_begin(ss->fsm, &ticket) : 0;
    if (err != 0) {
        free(st);
        free(chunk);
        close(fd);
        keel_reply_error(ss->reply, session, id, err,
                         err == KEEL_EUNAVAILABLE
                             ? "this member waits for a checkpoint of its own: ask another member"
                             : NULL);
        return;
    }
    struct keel_store_stat stat;
    keel_store_stat(ss->store, &stat);
    st->ss = ss;
    st->sync_ticket = ticket;
    st->session = session;
    st->client_id = id;
    st->fd = fd;
    st->chunk = chunk;
    st->estimate = (off_t)stat.db_size;
    uv_async_init(ss->loop, &st->copied_async, copy_done);
    uv_timer_init(ss->loop, &st->poll);
    st->copied_async.data = st->poll.data = st;
    st->handles = 2;
    ss->active++;
    /* Its own thread, not libuv's pool: a long copy must not take a pool thread from raft's
     * disk work. */
    st->copying = true;
    if (pthread_create(&st->thread, NULL, copier, st) != 0) {
        st->copying = false;
        fail(st, KEEL_ENOMEM, "cannot start the checkpoint copy");
        return;
    }
    if (ss->reply->out->on_drain(ss->reply->out->ctx, session, drained, st) != 0) {
        st->abandoned = true; /* the session is gone */
        stream_end(st);
        return;
    }
    KLOG_INFO("streaming a checkpoint to session %llu", (unsigned long long)session);
}
