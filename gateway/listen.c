/*
 * The gateway's listener and its connections (see conn.h).
 *
 * A connection's life:
 *
 *   accepted -> sniffing (bytes compared with the HTTP/2 preface as they arrive; the first
 *        |               mismatch means HTTP/1.1, 24 matching bytes HTTP/2; nothing for 10 s:
 * closed)
 *        v
 *   attached (h2.c or http1.c gets the bytes so far, then every read through its vtab)
 *        |  gw_conn_close: reading stops, staged and in-flight writes are flushed (5 s at most)
 *        v
 *   handle closing -> closed (uv close callback: the protocol's destroy, then the memory)
 *
 * Output: gw_conn_write appends to the connection's staged buffer and puts the connection on the
 * dirty list; a uv_check at the end of the loop turn writes each staged buffer with one
 * uv_try_write, and what the socket does not take whole with one uv_write. An idle handle runs
 * while the dirty list is non-empty, so that bytes staged from a phase after the check (close
 * callbacks, a protocol's on_drain after a write that went whole) never wait for the next event.
 *
 * TLS (--cert-file; ctx->tls): the connection's bytes go through tls.h's codec here, below the
 * sniffing and the protocols, which see only plaintext. A socket read is fed to the codec and
 * every byte it decrypts is handed on at once (so a protocol that pauses reading may still get
 * the rest of that one read, at most READ_BUF of plaintext, as it would get a whole plain read);
 * the staged output is encrypted when the check writes it, and write_pending counts its
 * plaintext bytes until the write that carries them completes. Handshake messages and alerts
 * are written as the codec makes them. The server offers ALPN "h2" and "http/1.1"; the protocol
 * is still told by the first bytes, as without TLS.
 *
 * Memory per connection: struct conn_impl (~250 bytes), the staged buffer (what the protocol
 * writes in one turn; h2.c stops producing past 4 MiB pending) and the writes in flight. Reads go
 * into one 64 KiB buffer the whole server shares (the loop runs one read callback at a time).
 */
#include "conn.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "tls.h"

#define SNIFF_TIMEOUT_MS 10000 /* no protocol shown by then: closed */
#define CLOSE_FLUSH_MS   5000  /* a closing connection's last bytes not taken by then: cut */
#define STOP_DRAIN_MS    20000 /* after gw_server_stop, connections still open are cut */
#define SWEEP_MS         1000
#define READ_BUF         65536
#define STAGE_MIN        4096

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN 24

/* Bytes staged during one loop turn, then the uv_write request that writes them. */
struct wbuf {
    uv_write_t req;
    struct conn_impl *c;
    size_t len, cap;
    size_t acct; /* bytes of write_pending this write settles (TLS: plaintext, not len) */
    char data[];
};

struct conn_impl {
    struct gw_conn pub; /* first: a gw_conn * is a conn_impl * */
    char sniff[H2_PREFACE_LEN];
    size_t sniff_len;
    bool attached;       /* a protocol has it */
    bool paused;         /* the protocol asked to stop reading */
    bool handle_closing; /* uv_close called */
    uint64_t born_ms, close_ms;
    struct wbuf *staged;
    struct keel_tls_conn *tls; /* NULL: plaintext */
    bool dirty;
    struct conn_impl *dprev, *dnext; /* the server's dirty list */
    bool drain_due;                  /* on on_flush's list of on_drain calls owed */
    struct conn_impl *drain_next;
};

struct gw_server {
    uv_loop_t *loop;
    struct gw_ctx *ctx;
    uv_tcp_t listener;
    uv_timer_t sweep;
    uv_check_t flush;
    uv_idle_t kick;
    int open_handles;
    struct gw_conn *conns;
    size_t n_conns;
    struct conn_impl *dirty;
    bool stopping, listener_closed, finishing;
    uint64_t stop_ms, cap_logged_ms, tls_logged_ms;
    uint64_t tls_refused; /* TLS handshakes that failed */
    void (*stop_cb)(void *data);
    void *stop_data;
    char rbuf[READ_BUF];
    char pbuf[READ_BUF]; /* TLS: plaintext taken from the codec */
};

static struct conn_impl *impl(struct gw_conn *c)
{
    return (struct conn_impl *)c;
}

/* ---- server teardown ---- */

static void on_server_handle_closed(uv_handle_t *h)
{
    struct gw_server *s = h->data;
    if (--s->open_handles > 0)
        return;
    void (*cb)(void *) = s->stop_cb;
    void *data = s->stop_data;
    free(s);
    if (cb)
        cb(data);
}

static void maybe_finish(struct gw_server *s)
{
    if (!s->stopping || s->finishing || !s->listener_closed || s->conns)
        return;
    s->finishing = true;
    uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->flush, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->kick, on_server_handle_closed);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct gw_server *s = h->data;
    s->listener_closed = true;
    maybe_finish(s);
    on_server_handle_closed(h);
}

/* ---- closing a connection ---- */

static void dirty_remove(struct conn_impl *ci)
{
    if (!ci->dirty)
        return;
    struct gw_server *s = ci->pub.srv;
    if (ci->dprev)
        ci->dprev->dnext = ci->dnext;
    else
        s->dirty = ci->dnext;
    if (ci->dnext)
        ci->dnext->dprev = ci->dprev;
    ci->dprev = ci->dnext = NULL;
    ci->dirty = false;
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn_impl *ci = h->data;
    struct gw_conn *c = &ci->pub;
    struct gw_server *s = c->srv;
    dirty_remove(ci);
    free(ci->staged);
    keel_tls_conn_free(ci->tls);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    if (c->vt && c->vt->destroy)
        c->vt->destroy(c);
    free(ci);
    maybe_finish(s);
}

/* Close the socket now; writes still pending are cancelled. */
static void close_handle(struct conn_impl *ci)
{
    if (ci->handle_closing)
        return;
    ci->handle_closing = true;
    ci->pub.closing = true;
    if (ci->tls != NULL && keel_tls_conn_established(ci->tls)) {
        /* close_notify, best effort: a client can tell a finished reply from a cut one. */
        char bye[128];
        keel_tls_conn_shutdown(ci->tls);
        size_t n = keel_tls_conn_take(ci->tls, bye, sizeof(bye));
        uv_buf_t b = uv_buf_init(bye, (unsigned)n);
        if (n > 0)
            (void)uv_try_write((uv_stream_t *)&ci->pub.tcp, &b, 1);
    }
    uv_close((uv_handle_t *)&ci->pub.tcp, on_conn_closed);
}

void gw_conn_close(struct gw_conn *c)
{
    struct conn_impl *ci = impl(c);
    if (c->closing)
        return;
    c->closing = true;
    ci->close_ms = uv_now(c->srv->loop);
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->write_pending == 0)
        close_handle(ci);
    /* else: the check writes what is staged; the last write callback closes. */
}

/* ---- output ---- */

static void on_written(uv_write_t *req, int status)
{
    struct wbuf *wb = req->data;
    struct conn_impl *ci = wb->c;
    struct gw_conn *c = &ci->pub;
    c->write_pending -= wb->acct;
    free(wb);
    if (status < 0) {
        if (!ci->handle_closing && status != UV_ECANCELED)
            KLOG_DEBUG("%s: write failed: %s", c->peer, uv_strerror(status));
        close_handle(ci);
        return;
    }
    if (c->closing) {
        if (c->write_pending == 0)
            close_handle(ci);
        return;
    }
    if (c->vt && c->vt->on_drain)
        c->vt->on_drain(c);
}

/* Write wb (its acct bytes of write_pending settled when it completes). What the socket takes
 * whole goes out at once (uv_try_write): a write request's completion costs libuv an epoll_ctl
 * each way and a pass of the loop, for every reply of a one-request-at-a-time client. Only what
 * does not fit waits for a request. Returns true when wb was written whole now (its bytes are
 * settled and it is freed): the caller owes the protocol its on_drain, which is never called
 * from here (it may write again, and a stream would then keep this going). */
static bool write_wbuf(struct conn_impl *ci, struct wbuf *wb)
{
    struct gw_conn *c = &ci->pub;
    if (ci->handle_closing) {
        c->write_pending -= wb->acct;
        free(wb);
        return false;
    }
    uv_buf_t b = uv_buf_init(wb->data, (unsigned)wb->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)wb->len) {
        c->write_pending -= wb->acct;
        free(wb);
        if (c->closing && c->write_pending == 0)
            close_handle(ci);
        return true;
    }
    if (n > 0) { /* the rest waits for a request (wb lives until it completes, acct settled then) */
        b.base += n;
        b.len -= (unsigned)n;
    } else if (n != UV_EAGAIN) {
        KLOG_DEBUG("%s: write failed: %s", c->peer, uv_strerror(n));
        c->write_pending -= wb->acct;
        free(wb);
        close_handle(ci);
        return false;
    }
    wb->req.data = wb;
    int rc = uv_write(&wb->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc != 0) {
        KLOG_DEBUG("%s: write failed: %s", c->peer, uv_strerror(rc));
        c->write_pending -= wb->acct;
        free(wb);
        close_handle(ci);
    }
    return false;
}

/* TLS: write what the codec has for the network, settling acct bytes of write_pending. True as
 * write_wbuf. */
static bool tls_send(struct conn_impl *ci, size_t acct)
{
    size_t n = keel_tls_conn_pending(ci->tls);
    struct wbuf *wb = n > 0 ? malloc(sizeof(*wb) + n) : NULL;
    if (wb == NULL) {
        ci->pub.write_pending -= acct;
        if (n > 0) {
            KLOG_WARN("%s: out of memory writing %zu bytes: closing", ci->pub.peer, n);
            close_handle(ci);
        } else if (ci->pub.closing && ci->pub.write_pending == 0) {
            close_handle(ci);
        }
        return false;
    }
    wb->c = ci;
    wb->len = wb->cap = keel_tls_conn_take(ci->tls, wb->data, n);
    wb->acct = acct;
    return write_wbuf(ci, wb);
}

/* Write what ci staged. True as write_wbuf. */
static bool flush_conn(struct conn_impl *ci)
{
    struct wbuf *wb = ci->staged;
    ci->staged = NULL;
    if (!wb)
        return false;
    wb->acct = wb->len;
    if (ci->tls == NULL || ci->handle_closing)
        return write_wbuf(ci, wb);
    int rc = keel_tls_conn_write(ci->tls, wb->data, wb->len);
    size_t acct = wb->len;
    free(wb);
    if (rc != 0) {
        KLOG_DEBUG("%s: TLS: %s", ci->pub.peer, keel_tls_conn_error(ci->tls));
        ci->pub.write_pending -= acct;
        close_handle(ci);
        return false;
    }
    return tls_send(ci, acct);
}

static void on_flush(uv_check_t *h)
{
    struct gw_server *s = h->data;
    struct conn_impl *drained = NULL;
    /* Bounded: each pass takes one connection off the list, and writing adds none (on_drain,
     * which may, runs after the walk: what it writes waits for the next turn's check). */
    while (s->dirty) {
        struct conn_impl *ci = s->dirty;
        dirty_remove(ci);
        if (flush_conn(ci) && !ci->pub.closing && ci->pub.vt && ci->pub.vt->on_drain &&
            !ci->drain_due) {
            ci->drain_due = true;
            ci->drain_next = drained;
            drained = ci;
        }
    }
    /* A connection's memory goes only in its close callback, never during this walk. */
    while (drained) {
        struct conn_impl *ci = drained;
        drained = ci->drain_next;
        ci->drain_due = false;
        if (!ci->pub.closing)
            ci->pub.vt->on_drain(&ci->pub);
    }
    if (!s->dirty)
        uv_idle_stop(&s->kick);
}

static void on_kick(uv_idle_t *h)
{
    (void)h; /* only there to keep the loop from blocking before the check runs */
}

int gw_conn_write(struct gw_conn *c, const void *buf, size_t n)
{
    struct conn_impl *ci = impl(c);
    if (ci->handle_closing)
        return UV_EPIPE;
    if (n == 0)
        return 0;
    struct wbuf *wb = ci->staged;
    if (!wb || wb->cap - wb->len < n) {
        size_t have = wb ? wb->len : 0;
        size_t cap = wb ? wb->cap : STAGE_MIN;
        while (cap - have < n)
            cap *= 2;
        struct wbuf *nw = realloc(wb, sizeof(*nw) + cap);
        if (!nw) {
            KLOG_WARN("%s: out of memory queueing %zu bytes: closing", c->peer, n);
            if (wb) {
                c->write_pending -= wb->len;
                free(wb);
                ci->staged = NULL;
            }
            close_handle(ci);
            return UV_ENOMEM;
        }
        if (!wb)
            nw->len = 0;
        nw->cap = cap;
        nw->c = ci;
        ci->staged = wb = nw;
    }
    memcpy(wb->data + wb->len, buf, n);
    wb->len += n;
    c->write_pending += n;
    if (!ci->dirty) {
        struct gw_server *s = c->srv;
        ci->dirty = true;
        ci->dprev = NULL;
        ci->dnext = s->dirty;
        if (s->dirty)
            s->dirty->dprev = ci;
        s->dirty = ci;
        uv_idle_start(&s->kick, on_kick);
    }
    return 0;
}

/* ---- input ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn_impl *ci = h->data;
    buf->base = ci->pub.srv->rbuf;
    buf->len = READ_BUF;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

void gw_conn_read_pause(struct gw_conn *c, bool paused)
{
    struct conn_impl *ci = impl(c);
    if (ci->paused == paused)
        return;
    ci->paused = paused;
    if (c->closing)
        return;
    if (paused)
        uv_read_stop((uv_stream_t *)&c->tcp);
    else
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* Hand the connection to its protocol with the first n bytes. */
static void attach(struct conn_impl *ci, bool h2, const char *first, size_t n)
{
    struct gw_conn *c = &ci->pub;
    ci->attached = true;
    int rc = h2 ? gw_h2_attach(c, first, n) : gw_http1_attach(c, first, n);
    if (rc != 0) {
        KLOG_WARN("%s: %s could not start: closing", c->peer, h2 ? "HTTP/2" : "HTTP/1.1");
        gw_conn_close(c);
    }
}

/* Compare the new bytes with the preface; attach once the protocol is known. */
static void sniff(struct conn_impl *ci, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && ci->sniff_len + i < H2_PREFACE_LEN) {
        if (p[i] != h2_preface[ci->sniff_len + i])
            break;
        i++;
    }
    bool h2 = ci->sniff_len + i == H2_PREFACE_LEN;
    if (!h2 && i == n) { /* all matched so far: wait for more */
        memcpy(ci->sniff + ci->sniff_len, p, n);
        ci->sniff_len += n;
        return;
    }
    if (ci->sniff_len == 0) {
        attach(ci, h2, p, n);
        return;
    }
    char *all = malloc(ci->sniff_len + n);
    if (!all) {
        gw_conn_close(&ci->pub);
        return;
    }
    memcpy(all, ci->sniff, ci->sniff_len);
    memcpy(all + ci->sniff_len, p, n);
    attach(ci, h2, all, ci->sniff_len + n);
    free(all);
}

static void on_eof(struct conn_impl *ci, int status)
{
    struct gw_conn *c = &ci->pub;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (ci->attached && c->vt && c->vt->on_eof)
        c->vt->on_eof(c, status);
    else
        gw_conn_close(c);
}

static void deliver(struct conn_impl *ci, const char *p, size_t n)
{
    if (ci->attached)
        ci->pub.vt->on_read(&ci->pub, p, n);
    else
        sniff(ci, p, n);
}

/* A handshake that failed (a client without the CA, without a certificate when one is asked
 * for, or no TLS at all): the alert is on its way; logged at most once a second. */
static void tls_refused(struct conn_impl *ci)
{
    struct gw_server *s = ci->pub.srv;
    uint64_t now = uv_now(s->loop);
    s->tls_refused++;
    if (s->tls_logged_ms == 0 || now - s->tls_logged_ms >= 1000) {
        KLOG_WARN("%s: TLS handshake failed: %s (%llu refused so far)", ci->pub.peer,
                  keel_tls_conn_error(ci->tls), (unsigned long long)s->tls_refused);
        s->tls_logged_ms = now;
    }
    gw_conn_close(&ci->pub);
}

/* TLS: feed what arrived to the codec, send its answer, hand on the plaintext. */
static void tls_read(struct conn_impl *ci, const char *buf, size_t n)
{
    struct gw_conn *c = &ci->pub;
    bool was = keel_tls_conn_established(ci->tls);
    int rc = keel_tls_conn_feed(ci->tls, buf, n);
    tls_send(ci, 0);
    if (rc != 0) {
        if (!was)
            tls_refused(ci);
        else
            on_eof(ci, rc == KEEL_ECLOSED ? 0 : UV_EPROTO);
        return;
    }
    if (!was && keel_tls_conn_established(ci->tls))
        KLOG_DEBUG("%s: %s, ALPN '%s'", c->peer, keel_tls_conn_version(ci->tls),
                   keel_tls_conn_alpn(ci->tls));
    /* Bounded: the codec holds at most what this read brought. */
    while (!c->closing) {
        size_t got = 0;
        rc = keel_tls_conn_read(ci->tls, c->srv->pbuf, sizeof(c->srv->pbuf), &got);
        tls_send(ci, 0); /* TLS 1.3 may answer (a key update) */
        if (rc != 0) {
            if (rc != KEEL_ECLOSED)
                KLOG_DEBUG("%s: TLS: %s", c->peer, keel_tls_conn_error(ci->tls));
            on_eof(ci, rc == KEEL_ECLOSED ? 0 : UV_EPROTO);
            return;
        }
        if (got == 0)
            return;
        deliver(ci, c->srv->pbuf, got);
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn_impl *ci = st->data;
    struct gw_conn *c = &ci->pub;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        on_eof(ci, nread == UV_EOF ? 0 : (int)nread);
        return;
    }
    if (ci->tls != NULL)
        tls_read(ci, buf->base, (size_t)nread);
    else
        deliver(ci, buf->base, (size_t)nread);
}

size_t gw_server_connections(const struct gw_server *s)
{
    return s->n_conns;
}

/* ---- accepting ---- */

static void peer_name(uv_tcp_t *t, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    snprintf(out, len, "?");
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &sl) != 0)
        return;
    char ip[48];
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        uv_ip4_name(a, ip, sizeof(ip));
        snprintf(out, len, "%s:%d", ip, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, ip, sizeof(ip));
        snprintf(out, len, "[%s]:%d", ip, ntohs(a->sin6_port));
    }
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct gw_server *s = ls->data;
    if (status < 0) {
        KLOG_WARN("accept: %s", uv_strerror(status));
        return;
    }
    struct conn_impl *ci = calloc(1, sizeof(*ci));
    if (!ci) {
        KLOG_WARN("accept: out of memory");
        return;
    }
    struct gw_conn *c = &ci->pub;
    c->srv = s;
    c->ctx = s->ctx;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = ci;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    ci->born_ms = uv_now(s->loop);
    int rc = uv_accept(ls, (uv_stream_t *)&c->tcp);
    if (rc != 0) {
        KLOG_WARN("accept: %s", uv_strerror(rc));
        close_handle(ci);
        return;
    }
    peer_name(&c->tcp, c->peer, sizeof(c->peer));
    if (s->n_conns > GW_MAX_CONNS) {
        /* One line a second at most: a flood must not also flood the log. */
        if (s->cap_logged_ms + 1000 <= ci->born_ms || s->cap_logged_ms == 0) {
            KLOG_WARN("%s: refused: %d connections open (the limit)", c->peer, GW_MAX_CONNS);
            s->cap_logged_ms = ci->born_ms;
        }
        close_handle(ci);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->ctx->tls != NULL && (rc = keel_tls_conn_new(s->ctx->tls, NULL, &ci->tls)) != 0) {
        KLOG_WARN("%s: TLS: %s: closing", c->peer, keel_strerror(rc));
        close_handle(ci);
        return;
    }
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc != 0) {
        KLOG_WARN("%s: read: %s", c->peer, uv_strerror(rc));
        close_handle(ci);
    }
}

/* Once a second: connections that never showed a protocol, closings that do not flush, and
 * (stopping) connections past the drain deadline. */
static void on_sweep(uv_timer_t *t)
{
    struct gw_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    bool cut_all = s->stopping && now - s->stop_ms >= STOP_DRAIN_MS;
    for (struct gw_conn *c = s->conns, *next; c; c = next) {
        next = c->next; /* closing a handle frees it only from its close callback */
        struct conn_impl *ci = impl(c);
        if (ci->handle_closing)
            continue;
        if (cut_all) {
            KLOG_WARN("%s: still open %d s after stop: cut off", c->peer, STOP_DRAIN_MS / 1000);
            close_handle(ci);
        } else if (c->closing && now - ci->close_ms >= CLOSE_FLUSH_MS) {
            KLOG_DEBUG("%s: last %zu bytes not taken in %d s: cut off", c->peer, c->write_pending,
                       CLOSE_FLUSH_MS / 1000);
            close_handle(ci);
        } else if (!ci->attached && now - ci->born_ms >= SNIFF_TIMEOUT_MS) {
            KLOG_DEBUG("%s: no request in %d s: closed", c->peer, SNIFF_TIMEOUT_MS / 1000);
            gw_conn_close(c);
        }
    }
}

int gw_server_start(struct gw_server **out, struct gw_ctx *ctx, const char *host, int port)
{
    *out = NULL;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } addr;
    if (uv_ip4_addr(host, port, &addr.in) != 0 && uv_ip6_addr(host, port, &addr.in6) != 0)
        return UV_EINVAL;
    struct gw_server *s = calloc(1, sizeof(*s));
    if (!s)
        return UV_ENOMEM;
    s->loop = ctx->loop;
    s->ctx = ctx;
    uv_tcp_init(s->loop, &s->listener);
    uv_timer_init(s->loop, &s->sweep);
    uv_check_init(s->loop, &s->flush);
    uv_idle_init(s->loop, &s->kick);
    s->listener.data = s->sweep.data = s->flush.data = s->kick.data = s;
    s->open_handles = 4;
    int rc = uv_tcp_bind(&s->listener, &addr.sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rc != 0) {
        /* Free from the close callbacks (the caller runs the loop to exit). */
        s->stopping = true;
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
        return rc;
    }
    uv_check_start(&s->flush, on_flush);
    uv_unref((uv_handle_t *)&s->flush);
    uv_timer_start(&s->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&s->sweep);
    *out = s;
    return 0;
}

void gw_server_stop(struct gw_server *s, void (*cb)(void *data), void *data)
{
    if (!s) {
        if (cb)
            cb(data);
        return;
    }
    if (s->stopping)
        return;
    s->stopping = true;
    s->stop_ms = uv_now(s->loop);
    s->stop_cb = cb;
    s->stop_data = data;
    /* The drain deadline must fire even when nothing else keeps the loop alive. */
    uv_ref((uv_handle_t *)&s->sweep);
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    for (struct gw_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing)
            continue;
        if (impl(c)->attached && c->vt && c->vt->on_shutdown)
            c->vt->on_shutdown(c);
        else
            gw_conn_close(c);
    }
}
