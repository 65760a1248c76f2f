/*
 * gRPC over HTTP/2 cleartext (h2c with prior knowledge): one nghttp2 server session per
 * connection, fed from listen.c's reads (nghttp2_session_mem_recv) and drained into gw_conn_write
 * (nghttp2_session_mem_send); nghttp2 does no I/O of its own.
 *
 * A stream is a call: its request headers pick the method (:path), the deadline (grpc-timeout),
 * require_leader ("hasleader: true") and the authority; its DATA is cut into messages (grpcwire.h)
 * and each is decoded with protobuf-c into the method's request type. Unary and server-stream
 * methods get their one message after the client's END_STREAM; bidi methods get each message as
 * it completes and on_half_close at END_STREAM. Answers: HEADERS(:status 200, content-type
 * application/grpc) at the first message, DATA, then the trailers (grpc-status, grpc-message
 * percent-encoded); an error before any message is one Trailers-Only HEADERS. When we end a stream
 * the client has not ended, RST_STREAM(NO_ERROR) follows the trailers, as gRPC asks.
 *
 * Stream lifetime (call.h's rule). A stream's struct is the call. It is freed once the stream is
 * closed and either the handler finished or the handler never got the call (no message handed
 * to it yet). A stream that closes while its handler holds the call gets on_cancel; the handler's
 * finish then frees it. A stream's struct outlives its connection in that case (h == NULL).
 *
 * Errors the transport decides itself (unknown method, bad content-type, a message too large, a
 * message that does not decode, a compressed message) end the stream with a gRPC status and
 * leave the connection serving others. When the handler already holds the call, the transport
 * cancels it (on_cancel) and answers with its own status once the handler has finished.
 *
 * Bounds, per connection:
 *   - streams at once: H2_MAX_STREAMS (SETTINGS_MAX_CONCURRENT_STREAMS; nghttp2 refuses more);
 *   - request bytes held (messages being gathered, unary requests waiting for END_STREAM):
 *     H2_MAX_HELD; a stream that would pass it ends with ResourceExhausted. One message is at
 *     most ctx->max_request_bytes (InvalidArgument "etcdserver: request is too large");
 *   - output: nghttp2 is not asked for more bytes while c->write_pending >= H2_WRITE_HIGH, and the
 *     socket is not read meanwhile (a client that sends without reading stalls itself); both
 *     resume at on_drain below H2_WRITE_LOW. Bytes a handler queues on a stream
 *     (gw_call_pending) are the handler's to bound (watch.c). A reply waits whole in its
 *     stream's queue until the client's flow-control window takes it. Past H2_MAX_QUEUED_OUT
 *     queued on the connection, a request message is refused (ResourceExhausted) instead of
 *     dispatched, so output grows only by the replies of requests already dispatched: at most
 *     H2_MAX_QUEUED_OUT + H2_MAX_STREAMS replies of keel's reply limit, as with grpc-go;
 *   - per stream otherwise: struct h2_stream (~600 bytes) plus nghttp2's own state.
 *
 * Shutdown (gw_server_stop -> on_shutdown): GOAWAY shutdown notice and a PING; at its ACK the
 * final GOAWAY with the last stream id processed. Unary calls in flight finish; streaming calls are
 * cancelled and end with Unavailable "etcdserver: server stopped" (clients retry elsewhere, as they
 * do when etcd stops). Once no stream is left and nothing is to be written the connection closes.
 */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "grpcwire.h"
#include "gwmetrics.h"
#include "log.h"

#define H2_MAX_STREAMS      4096
#define H2_STREAM_WINDOW    (1 << 20)  /* SETTINGS_INITIAL_WINDOW_SIZE */
#define H2_CONN_WINDOW      (16 << 20) /* the connection's receive window */
#define H2_MAX_HELD         (64u << 20)
#define H2_MAX_QUEUED_OUT   (64u << 20)
#define H2_WRITE_HIGH       (4u << 20)
#define H2_WRITE_LOW        (1u << 20)
#define H2_MAX_MESSAGE_OUT  0x7fffffffu /* gRPC's length prefix; grpc-go's send limit */
#define H2_GRPC_MESSAGE_MAX 4096        /* grpc-message is cut past this many bytes */

#define MSG_TOO_LARGE "etcdserver: request is too large"
#define MSG_STOPPED   "etcdserver: server stopped"

static const uint8_t stop_ping[8] = {'k', 'e', 'e', 'l', 's', 't', 'o', 'p'};

struct chunk {
    struct chunk *next;
    size_t len, off;
    uint8_t data[];
};

struct h2_conn;

struct h2_stream {
    struct gw_call call; /* first: a gw_call * is an h2_stream * */
    struct h2_conn *h;   /* NULL once the connection is gone */
    int32_t id;
    struct h2_stream *prev, *next; /* the connection's open streams */

    /* Request headers. */
    char path[256];
    size_t path_len;
    char authority[128];
    char *token; /* "token" metadata (malloc'd, at most GW_TOKEN_MAX), NULL: none */
    char ctype[64];
    char encoding[32];
    bool post, ctype_ok, timeout_bad;

    /* Request body. */
    struct gw_deframer df;
    size_t df_bytes;        /* what df holds, counted in h->held */
    ProtobufCMessage *held; /* unary/server-stream: the request until END_STREAM */
    size_t held_bytes;

    /* State. */
    bool started;      /* headers accepted: a known method */
    bool ignore_input; /* answered or failed: DATA is dropped */
    bool owned;        /* the handler has the call: it must finish it */
    bool finished;     /* finish called (by the handler, or by the transport when not owned) */
    bool cancelled;    /* on_cancel given (or due): sends refused */
    bool closed;       /* the HTTP/2 stream is gone */
    int dispatching;   /* inside a handler callback: do not free */
    bool override;     /* the transport's status replaces the handler's at finish */
    enum gw_code override_code;
    const char *override_msg;

    /* Response. */
    struct chunk *out_head, *out_tail;
    size_t out_bytes;
    bool headers_sent, deferred;
    enum gw_code code;
    char *message; /* percent-encoded grpc-message */
};

struct h2_conn {
    struct gw_conn *c;
    nghttp2_session *ng;
    struct h2_stream *streams;
    size_t held;       /* request bytes held by all streams */
    size_t out_queued; /* reply bytes queued on open streams, not yet taken by nghttp2 */
    bool in_recv, in_send, destroying, shutting_down, final_goaway;
    bool hold; /* walking the stream list: no flush (it could close and free streams) */
};

static void h2_flush(struct h2_conn *h);
static void stream_maybe_free(struct h2_stream *s);

/* ---- streams ---- */

static void stream_release_input(struct h2_stream *s)
{
    if (s->h)
        s->h->held -= s->df_bytes + s->held_bytes;
    s->df_bytes = s->held_bytes = 0;
    gw_deframer_free(&s->df);
    if (s->held)
        protobuf_c_message_free_unpacked(s->held, NULL);
    s->held = NULL;
}

static void stream_free(struct h2_stream *s)
{
    gw_metrics_end(&s->call, GW_CANCELLED); /* nothing when it ended already */
    stream_release_input(s);
    for (struct chunk *k = s->out_head, *next; k; k = next) {
        next = k->next;
        free(k);
    }
    free(s->message);
    free(s->token);
    free(s);
}

static void stream_maybe_free(struct h2_stream *s)
{
    if (s->dispatching == 0 && s->closed && (s->finished || !s->owned))
        stream_free(s);
}

/* Run a handler callback with the stream kept alive across it. */
#define DISPATCH(s, expr)                                                                          \
    do {                                                                                           \
        (s)->dispatching++;                                                                        \
        expr;                                                                                      \
        (s)->dispatching--;                                                                        \
    } while (0)

static void stream_cancel(struct h2_stream *s)
{
    if (!s->owned || s->finished || s->cancelled)
        return;
    s->cancelled = true;
    if (s->call.method->on_cancel)
        DISPATCH(s, s->call.method->on_cancel(&s->call));
}

/* The HTTP/2 stream is gone (closed, reset, or the connection ended). */
static void stream_closed(struct h2_stream *s)
{
    struct h2_conn *h = s->h;
    if (s->closed)
        return;
    s->closed = true;
    stream_release_input(s);
    if (h) {
        h->out_queued -= s->out_bytes;
        if (s->prev)
            s->prev->next = s->next;
        else
            h->streams = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->prev = s->next = NULL;
    }
    /* Closed: nothing reaches the session from here on, and the connection may be freed before
     * the handler finishes (a reset call whose keel request is still in flight). */
    s->h = NULL;
    stream_cancel(s);
    stream_maybe_free(s);
}

static void h2_kick(struct h2_conn *h)
{
    if (h && !h->destroying && !h->in_recv && !h->in_send && !h->hold)
        h2_flush(h);
}

/* ---- responses ---- */

static ssize_t read_data(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud);

static void submit_trailers(struct h2_stream *s)
{
    char status[12];
    snprintf(status, sizeof(status), "%d", (int)s->code);
    const char *msg = s->message ? s->message : "";
    nghttp2_nv nva[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)status, 11, strlen(status), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-message", (uint8_t *)msg, 12, strlen(msg), NGHTTP2_NV_FLAG_NONE},
    };
    int rv = nghttp2_submit_trailer(s->h->ng, s->id, nva, 2);
    if (rv != 0)
        KLOG_DEBUG("%s: stream %d: trailers: %s", s->h->c->peer, s->id, nghttp2_strerror(rv));
}

/* One HEADERS+END_STREAM with the status: Trailers-Only (http_status 200), or an HTTP-level
 * refusal (415). */
static void submit_trailers_only(struct h2_stream *s, const char *http_status)
{
    char status[12];
    snprintf(status, sizeof(status), "%d", (int)s->code);
    const char *msg = s->message ? s->message : "";
    nghttp2_nv nva[] = {
        {(uint8_t *)":status", (uint8_t *)http_status, 7, strlen(http_status),
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-status", (uint8_t *)status, 11, strlen(status), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-message", (uint8_t *)msg, 12, strlen(msg), NGHTTP2_NV_FLAG_NONE},
    };
    int rv = nghttp2_submit_response(s->h->ng, s->id, nva, 4, NULL);
    if (rv != 0)
        KLOG_DEBUG("%s: stream %d: response: %s", s->h->c->peer, s->id, nghttp2_strerror(rv));
    s->headers_sent = true;
}

/* Start the normal response (headers now, DATA as messages come). */
static int submit_headers(struct h2_stream *s)
{
    nghttp2_nv nva[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_data};
    int rv = nghttp2_submit_response(s->h->ng, s->id, nva, 2, &prd);
    if (rv != 0) {
        KLOG_DEBUG("%s: stream %d: response: %s", s->h->c->peer, s->id, nghttp2_strerror(rv));
        return -1;
    }
    s->headers_sent = true;
    return 0;
}

static void resume(struct h2_stream *s)
{
    if (s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->h->ng, s->id);
    }
}

static ssize_t read_data(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng, (void)id, (void)ud;
    struct h2_stream *s = src->ptr;
    size_t n = 0;
    while (n < length && s->out_head) {
        struct chunk *k = s->out_head;
        size_t take = k->len - k->off;
        if (take > length - n)
            take = length - n;
        memcpy(buf + n, k->data + k->off, take);
        k->off += take;
        n += take;
        if (k->off == k->len) {
            s->out_head = k->next;
            if (!s->out_head)
                s->out_tail = NULL;
            free(k);
        }
    }
    s->out_bytes -= n;
    s->h->out_queued -= n;
    if (!s->out_head && s->finished) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        submit_trailers(s);
        return (ssize_t)n;
    }
    if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* End the stream with code/message: the one place a finish reaches the wire. */
static void stream_end(struct h2_stream *s, enum gw_code code, const char *message)
{
    s->finished = true;
    s->ignore_input = true;
    if (s->override) {
        code = s->override_code;
        message = s->override_msg;
    }
    gw_metrics_end(&s->call, code);
    if (s->closed || !s->h) {
        stream_maybe_free(s);
        return;
    }
    s->code = code;
    s->message = gw_grpc_message_encode(message, H2_GRPC_MESSAGE_MAX);
    if (!s->headers_sent)
        submit_trailers_only(s, "200");
    else
        resume(s); /* the data callback sends the trailers once the queue is empty */
    h2_kick(s->h);
}

static int op_send(struct gw_call *call, const ProtobufCMessage *msg)
{
    struct h2_stream *s = (struct h2_stream *)call;
    if (s->closed || s->finished || s->cancelled || !s->h)
        return -1;
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > H2_MAX_MESSAGE_OUT) {
        KLOG_ERROR("%s: stream %d: a %zu-byte response is over gRPC's limit", s->h->c->peer, s->id,
                   len);
        return -1;
    }
    struct chunk *k = malloc(sizeof(*k) + GW_GRPC_PREFIX + len);
    if (!k)
        return -1;
    gw_grpc_prefix(k->data, false, (uint32_t)len);
    protobuf_c_message_pack(msg, k->data + GW_GRPC_PREFIX);
    k->len = GW_GRPC_PREFIX + len;
    k->off = 0;
    k->next = NULL;
    if (s->out_tail)
        s->out_tail->next = k;
    else
        s->out_head = k;
    s->out_tail = k;
    s->out_bytes += k->len;
    s->h->out_queued += k->len;
    if (!s->headers_sent) {
        if (submit_headers(s) != 0)
            return -1; /* the message stays queued and is freed with the stream */
    } else {
        resume(s);
    }
    h2_kick(s->h);
    return 0;
}

static void op_finish(struct gw_call *call, enum gw_code code, const char *message)
{
    struct h2_stream *s = (struct h2_stream *)call;
    if (s->finished) {
        KLOG_ERROR("stream %d: %s finished twice (ignored)", s->id, call->method->grpc_path);
        return;
    }
    stream_end(s, code, message);
}

static size_t op_pending(const struct gw_call *call)
{
    return ((const struct h2_stream *)call)->out_bytes;
}

static const struct gw_call_ops h2_call_ops = {op_send, op_finish, op_pending};

/* The transport ends a stream: directly when the handler has not got the call, else by
 * cancelling it and answering with this status when the handler finishes. */
static void stream_fail(struct h2_stream *s, enum gw_code code, const char *message)
{
    s->ignore_input = true;
    stream_release_input(s);
    if (s->finished)
        return;
    if (!s->owned) {
        stream_end(s, code, message);
        return;
    }
    if (!s->override) {
        s->override = true;
        s->override_code = code;
        s->override_msg = message; /* static strings only */
    }
    stream_cancel(s);
}

/* ---- requests ---- */

static void dispatch_message(struct h2_stream *s, ProtobufCMessage *msg)
{
    s->owned = true;
    DISPATCH(s, s->call.method->on_message(&s->call, msg));
}

/* Request headers complete: pick the method or answer the error. */
static void stream_start(struct h2_stream *s)
{
    char buf[sizeof(s->path) + 64];
    if (!s->post) {
        s->code = GW_UNIMPLEMENTED;
        s->message = gw_grpc_message_encode("keel-gateway: gRPC requests are POST", 256);
        s->finished = s->ignore_input = true;
        submit_trailers_only(s, "405");
        return;
    }
    if (!s->ctype_ok) {
        snprintf(buf, sizeof(buf), "invalid gRPC request content-type \"%s\"", s->ctype);
        s->code = GW_INTERNAL;
        s->message = gw_grpc_message_encode(buf, sizeof(buf));
        s->finished = s->ignore_input = true;
        submit_trailers_only(s, "415");
        return;
    }
    if (s->timeout_bad) {
        stream_end(s, GW_INTERNAL, "transport: malformed grpc-timeout");
        return;
    }
    const struct gw_method *m = gw_method_by_grpc_path(s->path, s->path_len);
    if (!m) {
        snprintf(buf, sizeof(buf), "unknown method %.*s", (int)s->path_len, s->path);
        stream_end(s, GW_UNIMPLEMENTED, buf);
        return;
    }
    s->call.method = m;
    s->call.ops = &h2_call_ops;
    s->call.ctx = s->h->c->ctx;
    s->call.authority = s->authority;
    s->call.token = s->token ? s->token : "";
    s->started = true;
    gw_metrics_begin(&s->call);
    gw_deframer_init(&s->df, s->h->c->ctx->max_request_bytes);
}

/* The client ended its side. */
static void stream_remote_end(struct h2_stream *s)
{
    if (!s->started || s->ignore_input || s->finished || s->cancelled)
        return;
    if (gw_deframer_partial(&s->df)) {
        stream_fail(s, GW_INTERNAL, "grpc: the client ended the stream inside a message");
        return;
    }
    const struct gw_method *m = s->call.method;
    if (m->kind != GW_BIDI) {
        if (!s->held) {
            stream_fail(s, GW_INTERNAL, "grpc: no request message before the end of the stream");
            return;
        }
        ProtobufCMessage *msg = s->held;
        s->held = NULL;
        s->h->held -= s->held_bytes;
        s->held_bytes = 0;
        dispatch_message(s, msg);
        return;
    }
    if (m->on_half_close) {
        s->owned = true;
        DISPATCH(s, m->on_half_close(&s->call));
    }
}

/* One complete message body. false: the stream was ended. */
static bool stream_message(struct h2_stream *s, const uint8_t *data, size_t len, bool compressed)
{
    const struct gw_method *m = s->call.method;
    if (s->h->out_queued > H2_MAX_QUEUED_OUT) {
        /* The client asks faster than it reads (its flow-control windows stay shut): every
         * request would queue one more reply. */
        stream_fail(s, GW_RESOURCE_EXHAUSTED,
                    "etcdserver: too many requests (the client does not read its replies)");
        return false;
    }
    if (compressed) {
        /* clientv3 never compresses, and we announce no grpc-accept-encoding. */
        stream_fail(s, GW_UNIMPLEMENTED,
                    s->encoding[0] ? "grpc: Decompressor is not installed for the grpc-encoding"
                                   : "grpc: compressed flag set with identity or empty encoding");
        return false;
    }
    const char *why = NULL;
    ProtobufCMessage *msg = gw_grpc_unpack(m->req, data, len, &why);
    if (!msg) {
        stream_fail(s, GW_INTERNAL, why);
        return false;
    }
    if (m->kind != GW_BIDI) {
        if (s->held) {
            protobuf_c_message_free_unpacked(msg, NULL);
            stream_fail(s, GW_INTERNAL,
                        "grpc: client streaming protocol violation: more than one request "
                        "message on a unary call");
            return false;
        }
        s->held = msg;
        s->held_bytes = len;
        s->h->held += len;
        return true;
    }
    dispatch_message(s, msg);
    return !(s->finished || s->cancelled || s->ignore_input || s->closed);
}

static void stream_data(struct h2_stream *s, const uint8_t *data, size_t len)
{
    struct h2_conn *h = s->h;
    /* Bounded: each pass consumes at least one byte or ends the stream. */
    while (len > 0 && !s->ignore_input) {
        size_t used = 0;
        enum gw_deframe r = gw_deframer_feed(&s->df, data, len, &used);
        data += used;
        len -= used;
        size_t now = gw_deframer_buffered(&s->df);
        h->held = h->held - s->df_bytes + now;
        s->df_bytes = now;
        if (r == GW_DEFRAME_TOO_LARGE) {
            stream_fail(s, GW_INVALID_ARGUMENT, MSG_TOO_LARGE);
            return;
        }
        if (r == GW_DEFRAME_NOMEM) {
            stream_fail(s, GW_RESOURCE_EXHAUSTED, "keel-gateway: out of memory");
            return;
        }
        if (h->held > H2_MAX_HELD) {
            stream_fail(s, GW_RESOURCE_EXHAUSTED,
                        "keel-gateway: too many request bytes pending on this connection");
            return;
        }
        if (r == GW_DEFRAME_MORE)
            return;
        size_t mlen;
        bool compressed;
        const uint8_t *body = gw_deframer_message(&s->df, &mlen, &compressed);
        bool go_on = stream_message(s, body, mlen, compressed);
        if (s->closed)
            return; /* released already */
        gw_deframer_next(&s->df);
        h->held -= s->df_bytes;
        s->df_bytes = 0;
        if (!go_on)
            return;
    }
}

/* ---- nghttp2 callbacks ---- */

static struct h2_stream *stream_of(struct h2_conn *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* nghttp2 resets the stream */
    s->h = h;
    s->id = f->hd.stream_id;
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    return 0;
}

static bool is(const uint8_t *name, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

static void copy_value(char *dst, size_t cap, const uint8_t *v, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, v, len);
    dst[len] = '\0';
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags, (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* the client's trailers carry nothing we use */
    struct h2_stream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s)
        return 0;
    if (is(name, namelen, ":path")) {
        /* A path longer than the buffer matches no method (none is that long). */
        s->path_len = valuelen < sizeof(s->path) ? valuelen : sizeof(s->path);
        memcpy(s->path, value, s->path_len);
    } else if (is(name, namelen, ":method")) {
        s->post = is(value, valuelen, "POST");
    } else if (is(name, namelen, ":authority") || (is(name, namelen, "host") && !s->authority[0])) {
        copy_value(s->authority, sizeof(s->authority), value, valuelen);
    } else if (is(name, namelen, "content-type")) {
        copy_value(s->ctype, sizeof(s->ctype), value, valuelen);
        /* application/grpc, application/grpc+proto, application/grpc;... */
        s->ctype_ok = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                      (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (is(name, namelen, "grpc-timeout")) {
        uint32_t ms;
        if (gw_grpc_timeout_parse((const char *)value, valuelen, &ms) == 0)
            s->call.timeout_ms = ms;
        else
            s->timeout_bad = true;
    } else if (is(name, namelen, "token")) {
        free(s->token);
        s->token = valuelen <= GW_TOKEN_MAX ? strndup((const char *)value, valuelen)
                                            : strdup(GW_TOKEN_INVALID);
        /* Out of memory: no token; keel then refuses what needs one. */
    } else if (is(name, namelen, "hasleader")) {
        s->call.require_leader = is(value, valuelen, "true");
    } else if (is(name, namelen, "grpc-encoding")) {
        if (!is(value, valuelen, "identity"))
            copy_value(s->encoding, sizeof(s->encoding), value, valuelen);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *h = ud;
    struct h2_stream *s;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!(s = stream_of(h, f->hd.stream_id)))
            break;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
            stream_start(s);
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
            stream_remote_end(s);
        break;
    case NGHTTP2_DATA:
        if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && (s = stream_of(h, f->hd.stream_id)))
            stream_remote_end(s);
        break;
    case NGHTTP2_PING:
        if ((f->hd.flags & NGHTTP2_FLAG_ACK) && h->shutting_down && !h->final_goaway &&
            memcmp(f->ping.opaque_data, stop_ping, 8) == 0) {
            /* The client has seen the notice: streams it opens from now on are refused. */
            h->final_goaway = true;
            nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(ng), NGHTTP2_NO_ERROR,
                                  NULL, 0);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)ng, (void)flags;
    struct h2_stream *s = stream_of(ud, id);
    if (s && s->started && !s->ignore_input && !s->finished && !s->cancelled)
        stream_data(s, data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    /* Our side ended first (an error before the client's END_STREAM, a server-ended stream):
     * RST_STREAM(NO_ERROR) after the trailers tells the client to stop sending. */
    if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(ng, f->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    (void)error_code, (void)ud;
    struct h2_stream *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s) {
        nghttp2_session_set_stream_user_data(ng, id, NULL);
        stream_closed(s);
    }
    return 0;
}

/* ---- the connection ---- */

/* Hand nghttp2's output to the socket, up to the write bound; close when the session is done. */
static void h2_flush(struct h2_conn *h)
{
    struct gw_conn *c = h->c;
    if (h->destroying || c->closing || h->in_send)
        return;
    h->in_send = true;
    /* Bounded by H2_WRITE_HIGH: each pass writes at least one byte. */
    while (c->write_pending < H2_WRITE_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->ng, &data);
        if (n < 0) {
            KLOG_WARN("%s: HTTP/2: %s: closing", c->peer, nghttp2_strerror((int)n));
            h->in_send = false;
            gw_conn_close(c);
            return;
        }
        if (n == 0)
            break;
        if (gw_conn_write(c, data, (size_t)n) != 0) {
            h->in_send = false;
            return;
        }
    }
    h->in_send = false;
    if (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng))
        gw_conn_close(c);
    else if (c->write_pending >= H2_WRITE_HIGH)
        gw_conn_read_pause(c, true); /* on_drain resumes */
}

static void h2_on_read(struct gw_conn *c, const char *buf, size_t n)
{
    struct h2_conn *h = c->proto;
    h->in_recv = true;
    ssize_t rv = nghttp2_session_mem_recv(h->ng, (const uint8_t *)buf, n);
    h->in_recv = false;
    if (rv < 0) {
        KLOG_DEBUG("%s: HTTP/2: %s: closing", c->peer, nghttp2_strerror((int)rv));
        h2_flush(h); /* a GOAWAY nghttp2 queued, if any */
        gw_conn_close(c);
        return;
    }
    h2_flush(h);
}

static void h2_on_eof(struct gw_conn *c, int status)
{
    if (status != 0)
        KLOG_DEBUG("%s: read: %s", c->peer, uv_strerror(status));
    gw_conn_close(c); /* destroy cancels what is left */
}

static void h2_on_drain(struct gw_conn *c)
{
    struct h2_conn *h = c->proto;
    if (c->write_pending >= H2_WRITE_LOW)
        return;
    gw_conn_read_pause(c, false);
    h2_flush(h);
}

static void h2_on_shutdown(struct gw_conn *c)
{
    struct h2_conn *h = c->proto;
    if (h->shutting_down)
        return;
    h->shutting_down = true;
    nghttp2_submit_shutdown_notice(h->ng);
    nghttp2_submit_ping(h->ng, NGHTTP2_FLAG_NONE, stop_ping);
    /* Streams never end by themselves: cancel them. A stream leaves the list only when nghttp2
     * closes it, from mem_send: held off until the walk is over. */
    h->hold = true;
    for (struct h2_stream *s = h->streams; s; s = s->next) {
        if (!s->started || s->finished || s->call.method->kind == GW_UNARY)
            continue;
        stream_fail(s, GW_UNAVAILABLE, MSG_STOPPED);
    }
    h->hold = false;
    h2_flush(h);
}

static void h2_destroy(struct gw_conn *c)
{
    struct h2_conn *h = c->proto;
    h->destroying = true;
    /* Bounded: each pass takes one stream off the list (stream_closed unlinks it, and frees it
     * unless its handler still holds the call). */
    while (h->streams) {
        nghttp2_session_set_stream_user_data(h->ng, h->streams->id, NULL);
        stream_closed(h->streams);
    }
    nghttp2_session_del(h->ng);
    free(h);
    c->proto = NULL;
}

static const struct gw_conn_vtab h2_vtab = {
    .on_read = h2_on_read,
    .on_eof = h2_on_eof,
    .on_shutdown = h2_on_shutdown,
    .destroy = h2_destroy,
    .on_drain = h2_on_drain,
};

int gw_h2_attach(struct gw_conn *c, const char *first, size_t n)
{
    struct h2_conn *h = calloc(1, sizeof(*h));
    if (!h)
        return -1;
    h->c = c;
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        free(h);
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    /* nghttp2's HTTP checks reset streams grpc-go (etcd's server) serves: grpc-go clients that
     * dial "passthrough:///http://host:port" (etcdctl endpoint status) send "http://host:port"
     * as :authority. What gRPC needs is checked here instead (POST, :path, content-type). */
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        free(h);
        return -1;
    }
    nghttp2_option_set_no_http_messaging(opt, 1);
    int rv = nghttp2_session_server_new2(&h->ng, cbs, h, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        free(h);
        return -1;
    }
    /* grpc-go is READY only once the server's SETTINGS arrive: they go out at once. */
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
    };
    rv = nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    if (rv != 0) {
        nghttp2_session_del(h->ng);
        free(h);
        return -1;
    }
    c->proto = h;
    c->vt = &h2_vtab;
    h2_on_read(c, first, n);
    return 0;
}
