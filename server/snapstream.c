/*
 * Checkpoint streaming (see snapstream.h). One stream's life:
 *
 *   keel_snapstream_start -> copier thread: LMDB's copy of the store written into a pipe
 *     loop: drained (the session's output drained) -> read what the pipe holds (up to a chunk)
 *           and send it -> the pipe is empty: wait until it is readable -> ... -> end of the
 *           pipe and the copier done: last chunk (remaining_bytes 0), done
 *   copier thread ends -> async -> copy_done (loop): join it, learn its result
 *   the session closing -> the pipe's read end closed, so the copier's next write fails and it
 *     ends; freed once it has (the member's one stream stays taken until then)
 *
 * The copy goes straight from LMDB's map through the pipe to the client: nothing is written to
 * disk on the member, and the first chunk leaves at once (a fetching follower sees it within
 * its receive timeout however large the store). The price is the copy's LMDB read transaction,
 * open while the client reads: pages the writer frees meanwhile are not reused until it ends,
 * so the store file may grow by what is written during the stream (etcd holds its snapshot's
 * bolt transaction the same way). The copy is LMDB's plain one (free pages included, as in
 * etcd's snapshots): several times faster than a compacting copy, which defrag uses.
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

#define CHUNK     (1u << 20)
#define PIPE_SIZE (1 << 20) /* asked of the kernel: fewer, larger hand-overs from the copier */

struct stream {
    struct keel_snapstream *ss;
    uint64_t session;
    uint64_t client_id;
    int rfd, wfd;   /* the pipe: the loop reads rfd; the copier writes wfd and closes it */
    off_t estimate; /* the store's size at the start: remaining_bytes until the copy is done */
    off_t off;      /* bytes sent */
    uint8_t *chunk;

    pthread_t thread;
    uint64_t sync_ticket; /* the writer's sync the copy waits for (0: none) */
    atomic_int copy_err;  /* the copier's result, set before it signals */
    uv_async_t copied_async;
    uv_poll_t readable;
    int handles;    /* of copied_async and readable, still to be closed */
    bool copying;   /* the copier thread runs (loop's view: cleared in copy_done) */
    bool eof;       /* the pipe has ended */
    bool waiting;   /* the session drained and the pipe had nothing: polling it */
    bool abandoned; /* finished, failed or the session closed: free once the copier ended */
};

/* Make the copier's writes fail from now on: a pipe's write end errs once no read end is open,
 * so the loop's read end is swapped for /dev/null's descriptor number-for-number (dup2 keeps
 * the number the poll handle knows, and closes the pipe's end). */
static void shutdown_read(struct stream *st)
{
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, st->rfd);
        close(null);
    }
}

static void handle_closed(uv_handle_t *h)
{
    struct stream *st = h->data;
    if (--st->handles > 0)
        return;
    st->ss->active--;
    if (st->rfd >= 0)
        close(st->rfd);
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
    if (st->waiting)
        uv_poll_stop(&st->readable);
    st->waiting = false;
    if (st->copying) {
        /* A copier blocked on a full pipe must end: with no reader its writes fail (EPIPE;
         * keeld ignores SIGPIPE). The poll handle still holds rfd: it is closed in
         * handle_closed, but shut for reading now. */
        shutdown_read(st);
        return; /* copy_done comes back here */
    }
    uv_close((uv_handle_t *)&st->copied_async, handle_closed);
    uv_close((uv_handle_t *)&st->readable, handle_closed);
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
        err = keel_store_snapshot(st->ss->store, st->wfd, false);
    close(st->wfd); /* the end of the pipe: the loop reads to it */
    atomic_store(&st->copy_err, err);
    uv_async_send(&st->copied_async);
    return NULL;
}

static void on_readable(uv_poll_t *p, int status, int events);

/* Send what the pipe holds (up to a chunk); at its end, once the copier has said how it went,
 * the last chunk. */
static void pump(struct stream *st)
{
    const struct keel_reply *r = st->ss->reply;
    if (st->waiting)
        uv_poll_stop(&st->readable);
    st->waiting = false;
    size_t n = 0;
    while (!st->eof && n < CHUNK) {
        ssize_t got = read(st->rfd, st->chunk + n, CHUNK - n);
        if (got > 0) {
            n += (size_t)got;
        } else if (got == 0) {
            st->eof = true;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            fail(st, KEEL_EIO, "reading the checkpoint copy failed");
            return;
        }
    }
    bool last = st->eof && !st->copying;
    if (n == 0 && !last) {
        /* The copier is behind the client (or, at the end, yet to say how it went: copy_done
         * comes back here). */
        if (!st->eof) {
            st->waiting = true;
            uv_poll_start(&st->readable, UV_READABLE, on_readable);
        }
        return;
    }
    st->off += (off_t)n;
    Keel__SnapshotResponse sr = KEEL__SNAPSHOT_RESPONSE__INIT;
    sr.blob.data = st->chunk;
    sr.blob.len = n;
    if (last) /* every byte is in this chunk or sent */
        sr.remaining_bytes = 0;
    else /* not known yet, and never 0 before the end */
        sr.remaining_bytes = st->estimate > st->off ? (uint64_t)(st->estimate - st->off) : 1;
    sr.version = KEEL_VERSION;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = st->client_id;
    resp.body_case = KEEL__RESPONSE__BODY_SNAPSHOT;
    resp.snapshot = &sr;
    keel_reply_send(r, st->session, &resp, -1, KEEL_RESPOND_PUSH);
    if (last) {
        KLOG_INFO("checkpoint of %lld bytes sent to session %llu", (long long)st->off,
                  (unsigned long long)st->session);
        r->out->done(r->out->ctx, st->session);
        stream_end(st);
    }
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    pump(p->data);
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
    if (st->abandoned) {
        stream_end(st);
        return;
    }
    if (err != 0) {
        fail(st, err,
             err == KEEL_EUNAVAILABLE
                 ? "the storage writer did not commit what it had applied within a minute"
                 : "copying the checkpoint failed");
        return;
    }
    if (st->eof)
        pump(st); /* the client had everything but the news that it was all */
}

/* The pipe the copy goes through: the loop's end non-blocking, both closed on exec. */
static int open_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    (void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_SIZE); /* a smaller pipe only costs wake-ups */
    if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    return 0;
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
    int fds[2] = {-1, -1};
    if (st == NULL || chunk == NULL || open_pipe(fds) != 0) {
        free(st);
        free(chunk);
        keel_reply_error(ss->reply, session, id, KEEL_ENOMEM, "cannot start the checkpoint copy");
        return;
    }
    uint64_t ticket = 0;
    int err = ss->fsm != NULL ? keel_fsm_sync_begin(ss->fsm, &ticket) : 0;
    if (err != 0) {
        free(st);
        free(chunk);
        close(fds[0]);
        close(fds[1]);
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
    st->rfd = fds[0];
    st->wfd = fds[1];
    st->chunk = chunk;
    st->estimate = (off_t)stat.db_size;
    uv_async_init(ss->loop, &st->copied_async, copy_done);
    uv_poll_init(ss->loop, &st->readable, st->rfd);
    st->copied_async.data = st->readable.data = st;
    st->handles = 2;
    ss->active++;
    /* Its own thread, not libuv's pool: a long copy must not take a pool thread from raft's
     * disk work. */
    st->copying = true;
    if (pthread_create(&st->thread, NULL, copier, st) != 0) {
        st->copying = false;
        close(st->wfd);
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
