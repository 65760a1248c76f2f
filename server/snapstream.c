/*
 * Checkpoint streaming (see snapstream.h). One stream's life:
 *
 *   keel_snapstream_start -> copy_work (pool: write the copy) -> copy_done (loop)
 *     -> drained (each time the output drained: send one chunk) ... -> last chunk: done
 *   A failure at any step answers the client with an error; the session closing frees it.
 */
#include "snapstream.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

#define CHUNK (1u << 20)

struct stream {
    uv_work_t work;
    struct keel_snapstream *ss;
    uint64_t session;
    uint64_t client_id;
    int fd;
    off_t size;
    off_t off;
    int err;
    uint8_t *chunk;
};

static void stream_free(struct stream *st)
{
    st->ss->active--;
    if (st->fd >= 0)
        close(st->fd);
    free(st->chunk);
    free(st);
}

static void copy_work(uv_work_t *w)
{
    struct stream *st = w->data;
    const char *dir = st->ss->data_dir;
    st->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (st->fd < 0) {
        char path[600];
        snprintf(path, sizeof(path), "%s/checkpoint-XXXXXX", dir);
        st->fd = mkstemp(path);
        if (st->fd >= 0)
            unlink(path);
    }
    if (st->fd < 0) {
        st->err = KEEL_EIO;
        return;
    }
    st->err = keel_store_snapshot(st->ss->store, st->fd);
    if (st->err == 0) {
        st->size = lseek(st->fd, 0, SEEK_END);
        if (st->size < 0)
            st->err = KEEL_EIO;
    }
}

static void drained(void *data, int closed)
{
    struct stream *st = data;
    const struct keel_reply *r = st->ss->reply;
    if (closed) {
        stream_free(st);
        return;
    }
    size_t n = st->size - st->off > CHUNK ? CHUNK : (size_t)(st->size - st->off);
    ssize_t got = n ? pread(st->fd, st->chunk, n, st->off) : 0;
    if (got < 0 || (size_t)got != n) {
        r->out->on_drain(r->out->ctx, st->session, NULL, NULL);
        keel_reply_error(r, st->session, st->client_id, KEEL_EIO, "reading the checkpoint failed");
        stream_free(st);
        return;
    }
    st->off += got;
    Keel__SnapshotResponse sr = KEEL__SNAPSHOT_RESPONSE__INIT;
    sr.blob.data = st->chunk;
    sr.blob.len = (size_t)got;
    sr.remaining_bytes = (uint64_t)(st->size - st->off);
    sr.version = KEEL_VERSION;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = st->client_id;
    resp.body_case = KEEL__RESPONSE__BODY_SNAPSHOT;
    resp.snapshot = &sr;
    keel_reply_send(r, st->session, &resp, -1, KEEL_RESPOND_PUSH);
    if (sr.remaining_bytes == 0) {
        r->out->on_drain(r->out->ctx, st->session, NULL, NULL);
        r->out->done(r->out->ctx, st->session);
        stream_free(st);
    }
}

static void copy_done(uv_work_t *w, int status)
{
    struct stream *st = w->data;
    const struct keel_reply *r = st->ss->reply;
    if (status != 0 || st->err != 0) {
        keel_reply_error(r, st->session, st->client_id, st->err ? st->err : KEEL_EIO,
                         "writing the checkpoint failed");
        stream_free(st);
        return;
    }
    if (r->out->on_drain(r->out->ctx, st->session, drained, st) != 0) {
        stream_free(st); /* the session is gone */
        return;
    }
    KLOG_INFO("streaming a %lld-byte checkpoint to session %llu", (long long)st->size,
              (unsigned long long)st->session);
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
    if (st == NULL || chunk == NULL) {
        free(st);
        free(chunk);
        keel_reply_error(ss->reply, session, id, KEEL_ENOMEM, NULL);
        return;
    }
    st->ss = ss;
    ss->active++;
    st->session = session;
    st->client_id = id;
    st->fd = -1;
    st->chunk = chunk;
    st->work.data = st;
    /* Writing the copy is disk work: off the loop, on libuv's pool. */
    uv_queue_work(ss->loop, &st->work, copy_work, copy_done);
}
