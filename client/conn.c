/*
 * One TCP connection to one member: dial, handshake, batched writes, framed reads. What
 * happens to requests when a connection ends is the owner's business (see conn.h): this file
 * only moves bytes and reports events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "conn.h"
#include "hostport.h"

/* TLS: plaintext encrypted at a time (one record's worth), so that the ciphertext the codec holds
 * on its way to tbuf stays small. */
#define KC_TLS_CHUNK (16u * 1024)
/* Frames handed to one uv_write: large enough to amortise the syscall, small enough that one
 * connection's backlog does not hold a huge buffer. */
#define KC_WRITE_BATCH (1u << 20)
#define KC_ARENA_CHUNK (64u * 1024)
/* A watch connection may stay idle for hours: without probes, a member whose host vanished
 * (no FIN, no RST) would hold its watches forever. Idle 10 s, then 3 probes 3 s apart. */
#define KC_KEEPALIVE_IDLE_S  10
#define KC_KEEPALIVE_INTVL_S 3
#define KC_KEEPALIVE_CNT     3

int kc_parse_addr(const char *in, size_t len, char *out, struct sockaddr_in *sa, char *why,
                  size_t whylen)
{
    /* Members advertise client URLs; accept them with or without a scheme and a trailing slash. */
    static const char *const schemes[] = {"http://", "https://", "tcp://"};
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i]);
        if (len >= n && strncmp(in, schemes[i], n) == 0) {
            in += n;
            len -= n;
            break;
        }
    }
    while (len > 0 && (in[len - 1] == '/' || in[len - 1] == ' '))
        len--;
    while (len > 0 && *in == ' ') {
        in++;
        len--;
    }
    char host[KC_ADDR_MAX - 6]; /* room for ":65535" in out */
    int port;
    int kind = keel_hostport_split(in, len, host, sizeof(host), &port, why, whylen);
    if (kind < 0)
        return KEEL_EINVAL;
    struct sockaddr_in tmp = {.sin_family = AF_UNSPEC};
    if (kind == KEEL_HOST_IPV4 && uv_ip4_addr(host, port, &tmp) != 0)
        return KEEL_EINVAL; /* cannot be: inet_pton took it */
    /* A name is kept (lower case: one member, one peer) and resolved at each dial; an IPv4
     * literal as inet_pton takes it is a strict dotted quad, canonical already. */
    for (char *h = host; kind == KEEL_HOST_NAME && *h; h++)
        if (*h >= 'A' && *h <= 'Z')
            *h = (char)(*h - 'A' + 'a');
    if (out)
        snprintf(out, KC_ADDR_MAX, "%s:%d", host, port);
    if (sa)
        *sa = tmp;
    return 0;
}

/* Report to the owner, through its callbacks. */
static void lost(struct kc_conn *c, int status, const char *msg)
{
    c->ctx->ev->lost(c, status, msg);
}

/* One of what keeps c's memory (its two handles, a name being resolved) is done with it. */
static void conn_release(struct kc_conn *c)
{
    if (--c->open_handles > 0)
        return;
    struct kc_conn_ctx *ctx = c->ctx;
    keel_frame_decoder_close(&c->dec);
    keel_arena_close(&c->arena);
    keel_tls_conn_free(c->tls);
    free(c->wbuf);
    free(c->tbuf);
    free(c);
    ctx->live--;
    ctx->ev->closed(ctx->data);
}

static void conn_handle_closed(uv_handle_t *h)
{
    conn_release(h->data);
}

void kc_conn_close(struct kc_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    c->state = KC_CLOSED;
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->gai); /* its callback lets go of c */
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static int wbuf_reserve(struct kc_conn *c, size_t n)
{
    if (c->wcap >= n)
        return 0;
    size_t cap = c->wcap ? c->wcap : 4096;
    while (cap < n)
        cap *= 2;
    uint8_t *b = realloc(c->wbuf, cap);
    if (b == NULL)
        return KEEL_ENOMEM;
    c->wbuf = b;
    c->wcap = cap;
    return 0;
}

static void on_write(uv_write_t *req, int status);
static void flush_batch(struct kc_conn *c);

/* TLS: encrypt len bytes of data (none: only what the codec queued itself, the handshake's
 * messages) into tbuf. 0, or the codec's error. */
static int tls_seal(struct kc_conn *c, const uint8_t *data, size_t len)
{
    c->tlen = 0;
    for (size_t off = 0;;) {
        size_t n = keel_tls_conn_pending(c->tls);
        if (n > 0) {
            if (c->tlen + n > c->tcap) {
                size_t cap = c->tcap ? c->tcap : 4096;
                while (cap < c->tlen + n)
                    cap *= 2;
                uint8_t *b = realloc(c->tbuf, cap);
                if (b == NULL)
                    return KEEL_ENOMEM;
                c->tbuf = b;
                c->tcap = cap;
            }
            c->tlen += keel_tls_conn_take(c->tls, c->tbuf + c->tlen, n);
        }
        if (off == len)
            return 0;
        size_t k = len - off < KC_TLS_CHUNK ? len - off : KC_TLS_CHUNK;
        int rv = keel_tls_conn_write(c->tls, data + off, k);
        if (rv != 0)
            return rv;
        off += k;
    }
}

/* Why TLS with c failed, with a hint where OpenSSL's reason alone would leave one guessing. */
static void tls_lost(struct kc_conn *c, int rv)
{
    char msg[KC_MSG_MAX];
    const char *why = keel_tls_conn_error(c->tls);
    const char *hint = "";
    if (strstr(why, "certificate required") != NULL)
        hint = " (the member requires a client certificate)";
    else if (strstr(why, "alert unknown ca") != NULL || strstr(why, "alert bad certificate"))
        hint = " (the member does not trust this client's certificate)";
    if (rv == KEEL_ECLOSED)
        snprintf(msg, sizeof(msg), "connection to %s closed by the server", c->addr);
    else if (rv == KEEL_ENOMEM)
        snprintf(msg, sizeof(msg), "TLS with %s: out of memory", c->addr);
    else
        snprintf(msg, sizeof(msg), "TLS %s %s failed: %s%s",
                 c->state == KC_READY ? "with" : "handshake with", c->addr,
                 why[0] ? why : "TLS error", hint);
    lost(c, rv == KEEL_ENOMEM ? KEEL_ENOMEM : KEEL_EUNAVAILABLE, msg);
}

/* Write len bytes of data (TLS: encrypted first, with what the codec has queued; none: only
 * that) as c's one write. 0, or -1 once c was reported lost (what says what was being done). */
static int write_out(struct kc_conn *c, const uint8_t *data, size_t len, const char *what)
{
    char msg[KC_MSG_MAX];
    if (c->tls != NULL) {
        int rv = tls_seal(c, data, len);
        if (rv != 0) {
            tls_lost(c, rv);
            return -1;
        }
        if (c->tlen == 0)
            return 0; /* plaintext written before the handshake completed waits in the codec */
        data = c->tbuf;
        len = c->tlen;
    }
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    /* Written at once when the socket's buffer takes it all, as it mostly does: a write request
     * costs libuv an epoll_ctl to watch for writability, another to stop, and a pass of the
     * loop for its callback. Only what does not fit waits for one (c->writing: none is out). */
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n == (int)len)
        return 0;
    if (n > 0) {
        buf.base += n;
        buf.len -= (unsigned)n;
    } else if (n != UV_EAGAIN) {
        snprintf(msg, sizeof(msg), "%s %s: %s", what, c->addr, uv_strerror(n));
        lost(c, KEEL_EUNAVAILABLE, msg);
        return -1;
    }
    c->write_req.data = c;
    int rv = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rv != 0) {
        snprintf(msg, sizeof(msg), "%s %s: %s", what, c->addr, uv_strerror(rv));
        lost(c, KEEL_EUNAVAILABLE, msg);
        return -1;
    }
    c->writing = true;
    return 0;
}

/* TLS: send what the codec has for the server (handshake messages), unless a write is out (its
 * callback comes back here). */
static void tls_flush(struct kc_conn *c)
{
    if (c->tls != NULL && !c->writing && c->state != KC_CLOSED && keel_tls_conn_pending(c->tls) > 0)
        (void)write_out(c, NULL, 0, "write to");
}

static void on_write(uv_write_t *req, int status)
{
    struct kc_conn *c = req->data;
    c->writing = false;
    if (c->state == KC_CLOSED)
        return;
    if (status < 0) {
        char msg[KC_MSG_MAX];
        snprintf(msg, sizeof(msg), "write to %s: %s", c->addr, uv_strerror(status));
        lost(c, KEEL_EUNAVAILABLE, msg);
        return;
    }
    /* Whatever queued up while this write was out goes now, as one more batch. */
    if (c->state == KC_READY && c->pending.n > 0)
        kc_conn_flush(c);
    else
        tls_flush(c);
}

void kc_conn_flush(struct kc_conn *c)
{
    /* A batch the socket took at once leaves no write out: the next one goes now (bounded by
     * what is pending; a write request's callback, on_write, takes the rest otherwise). */
    while (c->state == KC_READY && !c->writing && c->pending.n > 0)
        flush_batch(c);
}

/* Write one batch of c's pending ops (at most KC_WRITE_BATCH bytes, or one op). */
static void flush_batch(struct kc_conn *c)
{
    struct keel_aclient_stats *stats = c->ctx->stats;
    size_t total = 0, count = 0;
    for (struct kc_op *op = c->pending.head; op; op = op->next) {
        if (count > 0 && total + op->frame_len > KC_WRITE_BATCH)
            break;
        total += op->frame_len;
        count++;
    }
    if (wbuf_reserve(c, total) != 0) {
        lost(c, KEEL_ENOMEM, "out of memory for the write buffer");
        return;
    }
    /* Copy rather than point at the ops' frames: an op may time out and be freed while the write
     * that carries it is still in the kernel's hands. */
    size_t off = 0;
    struct kc_op *op = c->pending.head;
    for (size_t i = 0; i < count; i++, op = op->next) {
        memcpy(c->wbuf + off, op->frame, op->frame_len);
        off += op->frame_len;
    }
    /* On failure nothing was handed over: the ops are still pending, hence safe to retry. */
    if (write_out(c, c->wbuf, total, "write to") != 0)
        return;
    stats->writes++;
    stats->frames_out += count;
    for (size_t i = 0; i < count; i++) {
        op = c->pending.head;
        kc_list_remove(&c->pending, op);
        if (op->oneway) {
            op->where = KC_NOWHERE;
            op->conn = NULL;
            c->ctx->ev->written(c, op);
            continue;
        }
        if (op->sent)
            stats->retries++;
        op->sent = true;
        op->where = KC_INFLIGHT;
        kc_list_push(&c->inflight, op);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct kc_conn *c = h->data;
    uint8_t *p;
    size_t len;
    if (c->tls != NULL) {
        buf->base = (char *)c->ctx->tls_rbuf;
        buf->len = KC_READ_CHUNK;
        return;
    }
    /* Read straight into the decoder: no copy between the socket and the frame parser. */
    if (keel_frame_decoder_space(&c->dec, KC_READ_CHUNK, &p, &len) != 0) {
        buf->base = NULL;
        buf->len = 0; /* read_cb gets UV_ENOBUFS */
        return;
    }
    buf->base = (char *)p;
    buf->len = len;
}

/* The handshake's answer: a refusal or a newer protocol ends c, anything else makes it ready. */
static void hello_answered(struct kc_conn *c, const Keel__HelloResponse *hr)
{
    char msg[KC_MSG_MAX];
    if (hr->error && hr->error->code != 0) {
        snprintf(msg, sizeof(msg), "handshake refused by %s: %s", c->addr,
                 hr->error->message && hr->error->message[0]
                     ? hr->error->message
                     : keel_strerror(keel_err_from_wire(hr->error->code)));
        lost(c, keel_err_from_wire(hr->error->code), msg);
        return;
    }
    if (hr->protocol_version > KEEL_PROTOCOL_VERSION) {
        snprintf(msg, sizeof(msg), "%s speaks protocol version %u, this client %u", c->addr,
                 hr->protocol_version, KEEL_PROTOCOL_VERSION);
        lost(c, KEEL_EUNSUPPORTED, msg);
        return;
    }
    c->state = KC_READY;
    c->member_id = hr->member_id;
    uv_timer_stop(&c->timer);
    c->ctx->ev->ready(c, hr);
}

static void process_frames(struct kc_conn *c)
{
    const char *addr = c->addr;
    char msg[KC_MSG_MAX];
    for (;;) {
        const uint8_t *p;
        size_t n;
        int rc = keel_frame_decoder_next(&c->dec, &p, &n);
        if (rc == 0)
            return;
        if (rc < 0) {
            snprintf(msg, sizeof(msg), "frame from %s exceeds the %zu-byte limit", addr,
                     c->dec.max_frame);
            lost(c, rc, msg);
            return;
        }
        if (c->state == KC_HELLO) {
            ProtobufCMessage *m;
            if (keel_frame_unpack(&keel__hello_response__descriptor, NULL, p, n, &m) != 0) {
                snprintf(msg, sizeof(msg), "handshake with %s: reply does not decode", addr);
                lost(c, KEEL_EBADFRAME, msg);
                return;
            }
            hello_answered(c, (Keel__HelloResponse *)m);
            protobuf_c_message_free_unpacked(m, NULL);
        } else {
            ProtobufCMessage *m;
            if (keel_frame_unpack(&keel__response__descriptor, keel_arena_pb(&c->arena), p, n,
                                  &m) != 0) {
                keel_arena_reset(&c->arena);
                snprintf(msg, sizeof(msg), "reply from %s does not decode", addr);
                lost(c, KEEL_EBADFRAME, msg);
                return;
            }
            c->ctx->ev->response(c, (Keel__Response *)m);
            keel_arena_reset(&c->arena);
        }
        /* A callback may have closed the client, or the handshake may have been refused. */
        if (c->state != KC_READY)
            return;
    }
}

/* TLS: nread bytes came (in ctx->tls_rbuf): feed them, move the plaintext into the decoder, send
 * what the codec has to say back. 0, or -1 once c was reported lost. */
static int tls_read(struct kc_conn *c, const uint8_t *data, size_t nread)
{
    int rv = keel_tls_conn_feed(c->tls, data, nread);
    while (rv == 0) {
        uint8_t *p;
        size_t len, n = 0;
        if (keel_frame_decoder_space(&c->dec, KC_READ_CHUNK, &p, &len) != 0) {
            lost(c, KEEL_ENOMEM, "out of memory for a reply");
            return -1;
        }
        rv = keel_tls_conn_read(c->tls, p, len, &n);
        if (rv != 0 || n == 0)
            break;
        keel_frame_decoder_commit(&c->dec, n);
    }
    if (rv != 0) {
        tls_lost(c, rv);
        return -1;
    }
    tls_flush(c);
    return c->state == KC_CLOSED ? -1 : 0;
}

/* The first bytes from the server tell a port that speaks TLS from one that does not: say so
 * rather than what a frame decoder or OpenSSL makes of the other's bytes. A TLS record starts
 * with its type (22 handshake, 21 alert) and version 3.x. 0, or -1 once c was reported lost. */
static int first_bytes(struct kc_conn *c, const uint8_t *b, size_t n)
{
    if (c->heard || n == 0)
        return 0;
    c->heard = true;
    bool tls_record = (b[0] == 22 || b[0] == 21) && (n < 2 || b[1] == 3);
    char msg[KC_MSG_MAX];
    if (c->tls != NULL && !tls_record)
        snprintf(msg, sizeof(msg),
                 "TLS handshake with %s failed: the member does not answer in TLS (its client "
                 "port is plaintext: drop https:// and the TLS options)",
                 c->addr);
    else if (c->tls == NULL && tls_record && c->state == KC_HELLO)
        snprintf(msg, sizeof(msg),
                 "handshake with %s: the member answered in TLS (its client port needs TLS: an "
                 "https:// endpoint or a CA file)",
                 c->addr);
    else
        return 0;
    lost(c, KEEL_EUNAVAILABLE, msg);
    return -1;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct kc_conn *c = s->data;
    if (c->state == KC_CLOSED)
        return;
    if (nread < 0) {
        char msg[KC_MSG_MAX];
        const char *addr = c->addr;
        if (nread == UV_EOF && c->state == KC_HELLO && !c->heard && c->tls == NULL)
            snprintf(msg, sizeof(msg),
                     "connection to %s closed by the server during the handshake (does its "
                     "client port need TLS? then an https:// endpoint or a CA file)",
                     addr);
        else if (nread == UV_EOF)
            snprintf(msg, sizeof(msg), "connection to %s closed by the server", addr);
        else
            snprintf(msg, sizeof(msg), "read from %s: %s", addr, uv_strerror((int)nread));
        lost(c, KEEL_EUNAVAILABLE, msg);
        return;
    }
    if (nread == 0)
        return;
    if (first_bytes(c, (const uint8_t *)buf->base, (size_t)nread) != 0)
        return;
    if (c->tls != NULL) {
        if (tls_read(c, (const uint8_t *)buf->base, (size_t)nread) != 0)
            return;
    } else {
        keel_frame_decoder_commit(&c->dec, (size_t)nread);
    }
    process_frames(c);
}

static void send_hello(struct kc_conn *c)
{
    struct kc_conn_ctx *ctx = c->ctx;
    Keel__Hello hello = KEEL__HELLO__INIT;
    hello.protocol_version = KEEL_PROTOCOL_VERSION;
    hello.client_name = (char *)ctx->client_name;
    if (ctx->token)
        hello.token = (char *)ctx->token;
    size_t n = keel_frame_size(&hello.base);
    if (wbuf_reserve(c, n) != 0) {
        lost(c, KEEL_ENOMEM, "out of memory for the handshake");
        return;
    }
    keel_frame_pack(&hello.base, c->wbuf);
    /* TLS: the Hello waits in the codec until its handshake completes; the ClientHello goes. */
    c->state = KC_HELLO;
    (void)write_out(c, c->wbuf, n, "handshake with");
}

static void on_connect(uv_connect_t *req, int status)
{
    struct kc_conn *c = req->data;
    if (c->state == KC_CLOSED)
        return;
    const char *addr = c->addr;
    char msg[KC_MSG_MAX];
    if (status < 0) {
        snprintf(msg, sizeof(msg), "dial %s: %s", addr, uv_strerror(status));
        lost(c, KEEL_EUNAVAILABLE, msg);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, KC_KEEPALIVE_IDLE_S);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        /* libuv sets the idle time only; the kernel's default probing would take 11 minutes. */
        int intvl = KC_KEEPALIVE_INTVL_S, cnt = KC_KEEPALIVE_CNT;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
    if (c->ctx->tls != NULL) {
        /* The name the member's certificate must carry: the host this client dialled. */
        char host[KC_ADDR_MAX];
        snprintf(host, sizeof(host), "%s", c->addr);
        char *colon = strrchr(host, ':');
        if (colon != NULL)
            *colon = '\0';
        int trv = keel_tls_conn_new(c->ctx->tls, host, &c->tls);
        if (trv != 0) {
            snprintf(msg, sizeof(msg), "TLS with %s: %s", addr, keel_strerror(trv));
            lost(c, trv == KEEL_ENOMEM ? KEEL_ENOMEM : KEEL_EUNAVAILABLE, msg);
            return;
        }
    }
    int rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rv != 0) {
        snprintf(msg, sizeof(msg), "read from %s: %s", addr, uv_strerror(rv));
        lost(c, KEEL_EUNAVAILABLE, msg);
        return;
    }
    send_hello(c);
}

static void on_dial_timeout(uv_timer_t *t)
{
    struct kc_conn *c = t->data;
    if (c->state == KC_CLOSED || c->state == KC_READY)
        return;
    char msg[KC_MSG_MAX];
    snprintf(msg, sizeof(msg), "%s %s: timed out after %u ms",
             c->resolving                ? "resolve"
             : c->state == KC_CONNECTING ? "dial"
                                         : "handshake with",
             c->addr, c->ctx->dial_timeout_ms);
    lost(c, KEEL_EUNAVAILABLE, msg);
}

/* Bind to the owner's source address, if any, and connect to sa. 0 or a libuv error. */
static int dial(struct kc_conn *c, const struct sockaddr_in *sa)
{
    int rv = 0;
    if (c->ctx->source)
        rv = uv_tcp_bind(&c->tcp, (const struct sockaddr *)c->ctx->source, 0);
    if (rv == 0)
        rv = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)sa, on_connect);
    return rv;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct kc_conn *c = req->data;
    c->resolving = false;
    bool closed = c->state == KC_CLOSED;
    struct sockaddr_in sa = {.sin_family = AF_UNSPEC};
    for (const struct addrinfo *a = res; status == 0 && a != NULL; a = a->ai_next) {
        if (a->ai_family == AF_INET && a->ai_addrlen >= sizeof(sa)) {
            memcpy(&sa, a->ai_addr, sizeof(sa));
            sa.sin_port = htons((uint16_t)c->port);
            break;
        }
    }
    uv_freeaddrinfo(res);
    conn_release(c); /* frees c only when it was closed meanwhile and its handles are gone */
    if (closed)
        return;
    char msg[KC_MSG_MAX];
    if (status != 0 || sa.sin_family != AF_INET) {
        snprintf(msg, sizeof(msg), "resolve %s: %s", c->addr,
                 status != 0 ? uv_strerror(status) : "no IPv4 address");
        lost(c, KEEL_EUNAVAILABLE, msg);
        return;
    }
    int rv = dial(c, &sa);
    if (rv != 0) {
        snprintf(msg, sizeof(msg), "dial %s: %s", c->addr, uv_strerror(rv));
        lost(c, KEEL_EUNAVAILABLE, msg);
    }
}

/* Start resolving the name in c->addr ("name:port") on libuv's thread pool: never on the loop,
 * where getaddrinfo would block it for as long as the resolver takes. 0 or a libuv error. */
static int resolve(struct kc_conn *c)
{
    char host[KC_ADDR_MAX];
    snprintf(host, sizeof(host), "%s", c->addr);
    char *colon = strrchr(host, ':');
    if (colon == NULL)
        return UV_EINVAL;
    *colon = '\0';
    c->port = atoi(colon + 1);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    c->gai.data = c;
    int rv = uv_getaddrinfo(c->ctx->loop, &c->gai, on_resolved, host, NULL, &hints);
    if (rv == 0) {
        c->resolving = true;
        c->open_handles++;
    }
    return rv;
}

struct kc_conn *kc_conn_init(struct kc_conn_ctx *ctx, int peer, const char *addr,
                             const struct sockaddr_in *sa, char *msg)
{
    struct kc_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(msg, KC_MSG_MAX, "out of memory for a connection");
        return NULL;
    }
    c->ctx = ctx;
    c->peer = peer;
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    c->state = KC_CONNECTING;
    keel_frame_decoder_init(&c->dec, ctx->max_frame);
    keel_arena_init(&c->arena, KC_ARENA_CHUNK);
    int rv = uv_tcp_init(ctx->loop, &c->tcp);
    if (rv != 0) {
        keel_frame_decoder_close(&c->dec);
        free(c);
        snprintf(msg, KC_MSG_MAX, "dial %s: %s", addr, uv_strerror(rv));
        return NULL;
    }
    uv_timer_init(ctx->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->connect_req.data = c;
    c->open_handles = 2;
    ctx->live++;
    ctx->stats->dials++;
    /* A name is resolved anew at each dial: a member that came back at another IP (a restarted
     * pod) is found there. The dial timeout covers the resolution too. */
    rv = sa->sin_family == AF_INET ? dial(c, sa) : resolve(c);
    if (rv != 0)
        goto fail;
    uv_timer_start(&c->timer, on_dial_timeout, ctx->dial_timeout_ms, 0);
    return c;

fail:
    snprintf(msg, KC_MSG_MAX, "%s %s: %s", sa->sin_family == AF_INET ? "dial" : "resolve", addr,
             uv_strerror(rv));
    kc_conn_close(c);
    return NULL;
}
