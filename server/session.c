/*
 * Client sessions (see session.h). The life of one session:
 *
 *   on_connection -> reading <-> paused (update_reading: in flight vs max_inflight)
 *                       |  refuse_frame: close_after_flush, stop reading
 *                       v
 *                 session_close (EOF, write error, output cap, flushed after a refusal,
 *                       |        keel_sessions_stop): out of the id map, handler->closed,
 *                       v        drain hook told closed
 *                 session_freed (uv close callback): memory released
 *
 * Output: answers are framed into `out` as they come; a uv_check_t at the end of the loop turn
 * swaps `out` with `writing` and writes it in one uv_write (start_write), so one turn's replies
 * leave in one syscall however many there are.
 */
#include "session.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "frame.h"
#include "log.h"
#include "u64map.h"

#define READ_CHUNK     (64 * 1024)
#define MAX_OUT_BYTES  (256u << 20) /* a client that reads nothing is cut off past this */
#define FRAME_OVERHEAD (64 * 1024)  /* envelope bytes allowed on top of the request limit */

struct outbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

struct keel_session {
    struct keel_sessions *ss;
    uint64_t id;
    uv_tcp_t tcp;
    struct keel_frame_decoder dec;
    int hello_done;
    int reading;
    int closing;
    int close_after_flush;
    size_t inflight;
    struct outbuf out;     /* being filled */
    struct outbuf writing; /* being written */
    uv_write_t wreq;
    int write_busy;
    struct keel_session *dirty_next;
    int dirty;
    keel_drain_cb drain_cb;
    void *drain_data;
};

struct keel_sessions {
    uv_loop_t *loop;
    const struct keel_config *cfg;
    struct keel_session_handler h;
    uv_tcp_t listener;
    uv_check_t flush;
    struct keel_u64map live;
    uint64_t next_id;
    struct keel_session *dirty;
    int closing;
    int open_handles;
    void (*close_cb)(void *data);
    void *close_data;
};

static void start_write(struct keel_session *s);
static void session_close(struct keel_session *s);

static void mark_dirty(struct keel_session *s)
{
    if (!s->dirty) {
        s->dirty = 1;
        s->dirty_next = s->ss->dirty;
        s->ss->dirty = s;
    }
}

static int out_reserve(struct outbuf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *nd = realloc(b->data, cap);
    if (nd == NULL)
        return -1;
    b->data = nd;
    b->cap = cap;
    return 0;
}

/* Queue msg, whose framed size is n. */
static void session_send(struct keel_session *s, const ProtobufCMessage *msg, size_t n)
{
    if (s->closing)
        return;
    if (s->out.len + s->writing.len + n > MAX_OUT_BYTES || out_reserve(&s->out, n) != 0) {
        KLOG_WARN("session %llu: output over %u bytes unread, closing", (unsigned long long)s->id,
                  MAX_OUT_BYTES);
        session_close(s);
        return;
    }
    s->out.len += keel_frame_pack(msg, s->out.data + s->out.len);
    mark_dirty(s);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void update_reading(struct keel_session *s)
{
    if (s->closing)
        return;
    int want = s->inflight < s->ss->cfg->max_inflight && !s->close_after_flush;
    if (want && !s->reading) {
        uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
        s->reading = 1;
    } else if (!want && s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = 0;
    }
}

static void session_done(struct keel_session *s)
{
    if (s->inflight > 0)
        s->inflight--;
    update_reading(s);
}

/* ---- the responder seam ---- */

static int respond_send(void *ctx, uint64_t id, const ProtobufCMessage *msg,
                        enum keel_respond_kind kind)
{
    struct keel_session *s = keel_u64map_get(&((struct keel_sessions *)ctx)->live, id);
    if (s == NULL)
        return KEEL_ECLOSED;
    size_t n = keel_frame_size(msg);
    /* An answer the client would refuse on its header alone: it would drop the connection and
     * retry in vain. The caller answers an error instead. */
    if (kind == KEEL_RESPOND_ANSWER && n - KEEL_FRAME_HEADER > KEEL_FRAME_DEFAULT_MAX)
        return KEEL_EREPLYTOOLARGE;
    session_send(s, msg, n);
    if (kind == KEEL_RESPOND_ANSWER)
        session_done(s);
    return 0;
}

static void respond_done(void *ctx, uint64_t id)
{
    struct keel_session *s = keel_u64map_get(&((struct keel_sessions *)ctx)->live, id);
    if (s != NULL)
        session_done(s);
}

static int respond_backlog(void *ctx, uint64_t id, size_t *bytes)
{
    struct keel_session *s = keel_u64map_get(&((struct keel_sessions *)ctx)->live, id);
    if (s == NULL)
        return KEEL_ECLOSED;
    *bytes = s->out.len + s->writing.len;
    return 0;
}

static int respond_on_drain(void *ctx, uint64_t id, keel_drain_cb cb, void *data)
{
    struct keel_session *s = keel_u64map_get(&((struct keel_sessions *)ctx)->live, id);
    if (s == NULL)
        return KEEL_ECLOSED;
    s->drain_cb = cb;
    s->drain_data = data;
    if (cb != NULL && !s->write_busy && s->out.len == 0)
        mark_dirty(s); /* already drained: say so at the end of this turn */
    return 0;
}

void keel_sessions_responder(struct keel_sessions *ss, struct keel_responder *out)
{
    out->ctx = ss;
    out->send = respond_send;
    out->done = respond_done;
    out->backlog = respond_backlog;
    out->on_drain = respond_on_drain;
}

/* ---- closing ---- */

static void sessions_maybe_closed(struct keel_sessions *ss)
{
    if (ss->closing && ss->open_handles == 0 && ss->close_cb != NULL) {
        void (*cb)(void *) = ss->close_cb;
        ss->close_cb = NULL;
        cb(ss->close_data);
    }
}

static void session_freed(uv_handle_t *h)
{
    struct keel_session *s = h->data;
    struct keel_sessions *ss = s->ss;
    if (s->dirty) {
        for (struct keel_session **pp = &ss->dirty; *pp != NULL; pp = &(*pp)->dirty_next) {
            if (*pp == s) {
                *pp = s->dirty_next;
                break;
            }
        }
    }
    keel_frame_decoder_close(&s->dec);
    free(s->out.data);
    free(s->writing.data);
    free(s);
    ss->open_handles--;
    sessions_maybe_closed(ss);
}

static void session_close(struct keel_session *s)
{
    if (s->closing)
        return;
    s->closing = 1;
    keel_u64map_del(&s->ss->live, s->id);
    if (s->ss->h.closed != NULL)
        s->ss->h.closed(s->ss->h.data, s->id);
    if (s->drain_cb != NULL) {
        keel_drain_cb cb = s->drain_cb;
        s->drain_cb = NULL;
        cb(s->drain_data, 1);
    }
    /* A write in flight completes (with an error) before the close callback runs. */
    uv_close((uv_handle_t *)&s->tcp, session_freed);
}

/* ---- writing ---- */

static void write_cb(uv_write_t *req, int status)
{
    struct keel_session *s = req->data;
    s->write_busy = 0;
    s->writing.len = 0;
    if (s->closing)
        return;
    if (status != 0) {
        session_close(s);
        return;
    }
    if (s->out.len > 0) {
        start_write(s);
        return;
    }
    if (s->close_after_flush) {
        session_close(s);
        return;
    }
    if (s->drain_cb != NULL)
        s->drain_cb(s->drain_data, 0);
}

static void start_write(struct keel_session *s)
{
    if (s->write_busy || s->closing || s->out.len == 0)
        return;
    /* Swap: what this turn produced goes out in one write; new replies fill the other buffer. */
    struct outbuf tmp = s->writing;
    s->writing = s->out;
    s->out = tmp;
    s->out.len = 0;
    uv_buf_t buf = uv_buf_init((char *)s->writing.data, (unsigned)s->writing.len);
    s->wreq.data = s;
    s->write_busy = 1;
    if (uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &buf, 1, write_cb) != 0) {
        s->write_busy = 0;
        session_close(s);
    }
}

static void flush_dirty(uv_check_t *h)
{
    struct keel_sessions *ss = h->data;
    struct keel_session *s = ss->dirty;
    ss->dirty = NULL;
    while (s != NULL) {
        struct keel_session *next = s->dirty_next;
        s->dirty = 0;
        if (!s->closing) {
            if (s->out.len > 0)
                start_write(s);
            else if (!s->write_busy && s->close_after_flush)
                session_close(s);
            else if (!s->write_busy && s->drain_cb != NULL)
                s->drain_cb(s->drain_data, 0);
        }
        s = next;
    }
}

/* ---- reading ---- */

/* The handler tells the client why; the session closes once that is written. */
static void refuse_frame(struct keel_session *s, int err, const char *msg)
{
    KLOG_INFO("session %llu: %s; closing", (unsigned long long)s->id, msg);
    s->ss->h.refuse(s->ss->h.data, s->id, err, msg);
    s->close_after_flush = 1;
    update_reading(s);
    mark_dirty(s);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct keel_session *s = h->data;
    uint8_t *p;
    size_t len;
    (void)suggested;
    if (keel_frame_decoder_space(&s->dec, READ_CHUNK, &p, &len) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)p, (unsigned)(len > READ_CHUNK * 4 ? READ_CHUNK * 4 : len));
}

static int handle_frame(struct keel_session *s, const uint8_t *payload, size_t len)
{
    struct keel_sessions *ss = s->ss;
    if (!s->hello_done) {
        Keel__Hello *h = keel__hello__unpack(NULL, len, payload);
        if (h == NULL) {
            refuse_frame(s, KEEL_EBADFRAME, "the first frame must be a Hello");
            return -1;
        }
        s->hello_done = 1;
        ss->h.hello(ss->h.data, s->id, h);
        keel__hello__free_unpacked(h, NULL);
        return 0;
    }
    Keel__Request *req = keel__request__unpack(NULL, len, payload);
    if (req == NULL) {
        refuse_frame(s, KEEL_EBADFRAME, "frame does not decode as a Request");
        return -1;
    }
    s->inflight++;
    ss->h.request(ss->h.data, s->id, req);
    return 0;
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct keel_session *s = st->data;
    (void)buf;
    if (n < 0) {
        if (n == UV_EOF && keel_frame_decoder_pending(&s->dec) > 0) {
            /* A half-closed client can still read why its last frame was dropped. */
            refuse_frame(s, KEEL_EBADFRAME, "connection ended inside a frame");
            return;
        }
        if (n != UV_EOF)
            KLOG_DEBUG("session %llu: read: %s", (unsigned long long)s->id, uv_strerror((int)n));
        session_close(s);
        return;
    }
    if (n == 0)
        return;
    keel_frame_decoder_commit(&s->dec, (size_t)n);
    for (;;) {
        if (s->closing || s->close_after_flush)
            return;
        const uint8_t *payload;
        size_t len;
        int rv = keel_frame_decoder_next(&s->dec, &payload, &len);
        if (rv == 0)
            return;
        if (rv < 0) {
            refuse_frame(s, rv == KEEL_EFRAMETOOLARGE ? KEEL_EFRAMETOOLARGE : rv,
                         rv == KEEL_EFRAMETOOLARGE ? "frame exceeds the maximum request size"
                                                   : keel_strerror(rv));
            return;
        }
        if (handle_frame(s, payload, len) != 0)
            return;
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct keel_sessions *ss = server->data;
    if (status != 0 || ss->closing)
        return;
    struct keel_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return;
    s->ss = ss;
    s->id = ++ss->next_id;
    uv_tcp_init(ss->loop, &s->tcp);
    s->tcp.data = s;
    ss->open_handles++;
    keel_frame_decoder_init(&s->dec, ss->cfg->max_request_bytes + FRAME_OVERHEAD);
    if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0 ||
        keel_u64map_get(&ss->live, s->id) != NULL || keel_u64map_put(&ss->live, s->id, s) != 0 ||
        ss->live.n > ss->cfg->max_connections) {
        if (keel_u64map_get(&ss->live, s->id) == s)
            keel_u64map_del(&ss->live, s->id);
        s->closing = 1;
        uv_close((uv_handle_t *)&s->tcp, session_freed);
        return;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    update_reading(s);
}

int keel_sessions_new(uv_loop_t *loop, const struct keel_config *cfg, struct keel_sessions **out)
{
    struct keel_sessions *ss = calloc(1, sizeof(*ss));
    if (ss == NULL)
        return KEEL_ENOMEM;
    ss->loop = loop;
    ss->cfg = cfg;
    keel_u64map_init(&ss->live);
    uv_tcp_init(loop, &ss->listener);
    ss->listener.data = ss;
    uv_check_init(loop, &ss->flush);
    ss->flush.data = ss;
    uv_check_start(&ss->flush, flush_dirty);
    ss->open_handles = 2;
    *out = ss;
    return 0;
}

int keel_sessions_listen(struct keel_sessions *ss, const struct keel_session_handler *h)
{
    ss->h = *h;
    char host[KEEL_ADDR_MAX];
    int port;
    struct sockaddr_in addr;
    keel_addr_split(ss->cfg->listen_client, host, sizeof(host), &port);
    uv_ip4_addr(host, port, &addr);
    int rv = uv_tcp_bind(&ss->listener, (const struct sockaddr *)&addr, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&ss->listener, 511, on_connection);
    if (rv != 0) {
        KLOG_ERROR("listen on %s: %s", ss->cfg->listen_client, uv_strerror(rv));
        return KEEL_EIO;
    }
    return 0;
}

static void handle_closed(uv_handle_t *h)
{
    struct keel_sessions *ss = h->data;
    ss->open_handles--;
    sessions_maybe_closed(ss);
}

void keel_sessions_stop(struct keel_sessions *ss, void (*cb)(void *data), void *data)
{
    ss->closing = 1;
    ss->close_cb = cb;
    ss->close_data = data;
    uv_close((uv_handle_t *)&ss->listener, handle_closed);
    uv_check_stop(&ss->flush);
    uv_close((uv_handle_t *)&ss->flush, handle_closed);
    /* Collect first: closing removes sessions from the map. */
    size_t n = 0;
    struct keel_session **all = calloc(ss->live.n + 1, sizeof(*all));
    for (size_t i = 0; all != NULL && i < ss->live.cap; i++)
        if (ss->live.keys[i] != 0)
            all[n++] = ss->live.vals[i];
    for (size_t i = 0; i < n; i++)
        session_close(all[i]);
    free(all);
}

void keel_sessions_free(struct keel_sessions *ss)
{
    if (ss == NULL)
        return;
    keel_u64map_close(&ss->live);
    free(ss);
}
