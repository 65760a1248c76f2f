/*
 * Peer TLS: contexts and the socketpair pump (see peertls.h).
 *
 * A link's two directions:
 *   in:  TCP read -> keel_tls_conn_feed -> keel_tls_conn_read -> uv_write to our pipe end
 *   out: our pipe end read (raft's bytes) -> keel_tls_conn_write -> keel_tls_conn_take ->
 *        uv_write to TCP
 * Each stops reading its source while LINK_BOUND or more is queued towards its destination and
 * resumes when a write completes below it. Reads go into one buffer the whole module shares: the
 * loop runs one read callback at a time and every callback consumes its bytes before returning.
 */
#include "peertls.h"

#include <errno.h>
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "tls.h"

#define LINK_BOUND (256 * 1024)
#define READ_BUF   65536

struct keel_peerlink {
    struct keel_peerlink *next, *prev;
    struct keel_peertls *pt;
    uv_tcp_t *tcp;  /* raft_malloc'd, ours */
    uv_pipe_t pipe; /* our end of the socketpair, after the hand-off */
    struct keel_tls_conn *tls;
    struct keel_peerlink_events ev;
    char label[160];
    bool dial;
    bool seen_bytes; /* anything read from the socket yet */
    bool told_ready;
    bool handed_off;
    bool held;    /* keel_peerlink_hold */
    bool failed;  /* no more reading: closing or waiting for the owner to close */
    bool closing; /* keel_peerlink_close called */
    bool tcp_reading, pipe_reading, pipe_open;
    size_t to_tcp, to_pipe; /* bytes in uv_writes not completed */
    int handles;            /* handles not yet closed */
};

struct keel_peertls {
    struct keel_tls_ctx *server, *client;
    struct keel_tls_options so, co;
    struct keel_peerlink list; /* sentinel of live links */
    size_t links;
    /* TLS failures after the hand-off (a TLS 1.3 server's refusal of our certificate arrives
     * then, and raft redials every heartbeat): at most one line a second, then a count */
    struct keel_log_limit failed_log;
};

struct wreq {
    uv_write_t req;
    struct keel_peerlink *l;
    size_t len;
    bool to_pipe;
    char data[];
};

static char rbuf[READ_BUF];

/* ---- contexts ---- */

static int make_ctxs(struct keel_peertls *pt, struct keel_tls_ctx **server,
                     struct keel_tls_ctx **client, char *err, size_t errlen)
{
    *server = *client = NULL;
    if (keel_tls_ctx_new(&pt->so, server, err, errlen) != 0)
        return -1;
    if (keel_tls_ctx_new(&pt->co, client, err, errlen) != 0) {
        keel_tls_ctx_free(*server);
        *server = NULL;
        return -1;
    }
    return 0;
}

int keel_peertls_new(const struct keel_config *cfg, struct keel_peertls **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (cfg->peer_cert_file[0] == '\0')
        return 0;
    struct keel_peertls *pt = calloc(1, sizeof(*pt));
    if (pt == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* One certificate for both ends: gen-certs.sh's member certificates carry serverAuth and
     * clientAuth. The options point into cfg, which outlives the transport. */
    pt->so = (struct keel_tls_options){.role = KEEL_TLS_SERVER,
                                       .cert_file = cfg->peer_cert_file,
                                       .key_file = cfg->peer_key_file,
                                       .ca_file = cfg->peer_ca_file,
                                       .verify_peer = true};
    pt->co = pt->so;
    pt->co.role = KEEL_TLS_CLIENT;
    pt->list.next = pt->list.prev = &pt->list;
    pt->failed_log.per_sec = 1;
    if (make_ctxs(pt, &pt->server, &pt->client, err, errlen) != 0) {
        free(pt);
        return -1;
    }
    *out = pt;
    return 0;
}

int keel_peertls_reload(struct keel_peertls *pt, char *err, size_t errlen)
{
    /* New contexts first, swapped together: a half-done reload would leave the two ends of this
     * member's links on different certificates. Links hold what they need (tls.h). */
    struct keel_tls_ctx *server, *client;
    if (make_ctxs(pt, &server, &client, err, errlen) != 0)
        return -1;
    keel_tls_ctx_free(pt->server);
    keel_tls_ctx_free(pt->client);
    pt->server = server;
    pt->client = client;
    return 0;
}

void keel_peertls_close_links(struct keel_peertls *pt)
{
    /* Only links raft owns: one not handed off belongs to its pending connection, which the
     * transport ends itself (a pending that waits for the resolver closes its link from the
     * resolver's callback, and must still find it there). */
    struct keel_peerlink *next;
    for (struct keel_peerlink *l = pt->list.next; l != &pt->list; l = next) {
        next = l->next;
        if (l->handed_off)
            keel_peerlink_close(l);
    }
}

size_t keel_peertls_links(const struct keel_peertls *pt)
{
    return pt->links;
}

void keel_peertls_free(struct keel_peertls *pt)
{
    if (pt == NULL)
        return;
    keel_tls_ctx_free(pt->server);
    keel_tls_ctx_free(pt->client);
    free(pt);
}

/* ---- a link ---- */

static void update_reading(struct keel_peerlink *l);
static void pump_in(struct keel_peerlink *l);

static void handle_closed(uv_handle_t *h)
{
    struct keel_peerlink *l = h->data;
    if (--l->handles > 0)
        return;
    struct keel_peertls *pt = l->pt;
    struct keel_peerlink_events ev = l->ev;
    raft_free(l->tcp);
    keel_tls_conn_free(l->tls);
    free(l);
    pt->links--;
    if (ev.closed != NULL)
        ev.closed(ev.data);
}

void keel_peerlink_close(struct keel_peerlink *l)
{
    if (l->closing)
        return;
    l->closing = l->failed = true;
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = l;
    /* What keel_tls_conn_take gave was written at once (uv_write tries before it queues), so an
     * alert telling the peer why is on its way even though closing cancels queued writes. */
    uv_close((uv_handle_t *)l->tcp, handle_closed);
    if (l->pipe_open)
        uv_close((uv_handle_t *)&l->pipe, handle_closed);
}

/* The link is done: before the hand-off the owner hears why and closes it; after, it closes
 * itself (raft sees its stream end and reconnects) and a TLS failure is logged. */
static void link_fail(struct keel_peerlink *l, const char *why, bool tls_error)
{
    if (l->failed)
        return;
    l->failed = true;
    update_reading(l);
    if (!l->handed_off) {
        l->ev.failed(l->ev.data, why);
        return;
    }
    uint64_t left_out;
    if (tls_error && keel_log_limit_take(&l->pt->failed_log, &left_out))
        KLOG_WARN("peer link %s: TLS: %s; closed (%llu such lines left out before this one)",
                  l->label, why, (unsigned long long)left_out);
    else if (!tls_error)
        KLOG_DEBUG("peer link %s: %s; closed", l->label, why);
    keel_peerlink_close(l);
}

static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = w->data;
    struct keel_peerlink *l = r->l;
    if (r->to_pipe)
        l->to_pipe -= r->len;
    else
        l->to_tcp -= r->len;
    free(r);
    if (l->closing)
        return;
    if (status != 0) {
        link_fail(l, uv_strerror(status), false);
        return;
    }
    if (l->handed_off)
        pump_in(l);
    update_reading(l);
}

static int queue_write(struct keel_peerlink *l, bool to_pipe, struct wreq *r)
{
    r->l = l;
    r->to_pipe = to_pipe;
    r->req.data = r;
    uv_buf_t b = uv_buf_init(r->data, (unsigned)r->len);
    uv_stream_t *s = to_pipe ? (uv_stream_t *)&l->pipe : (uv_stream_t *)l->tcp;
    int rv = uv_write(&r->req, s, &b, 1, on_written);
    if (rv != 0) {
        free(r);
        link_fail(l, uv_strerror(rv), false);
        return -1;
    }
    if (to_pipe)
        l->to_pipe += r->len;
    else
        l->to_tcp += r->len;
    return 0;
}

/* Send what the codec has for the network (handshake messages, records, alerts). */
static void flush_tls(struct keel_peerlink *l)
{
    size_t n = keel_tls_conn_pending(l->tls);
    if (n == 0 || l->closing)
        return;
    struct wreq *r = malloc(sizeof(*r) + n);
    if (r == NULL) {
        link_fail(l, "out of memory", false);
        return;
    }
    r->len = keel_tls_conn_take(l->tls, r->data, n);
    queue_write(l, false, r);
}

/* After the hand-off: decrypted bytes to raft, while under the bound. */
static void pump_in(struct keel_peerlink *l)
{
    while (!l->failed && l->to_pipe < LINK_BOUND) {
        size_t n = 0;
        int rv = keel_tls_conn_read(l->tls, rbuf, sizeof(rbuf), &n);
        if (rv != 0) {
            link_fail(l,
                      rv == KEEL_ECLOSED ? "the peer closed the link" : keel_tls_conn_error(l->tls),
                      rv != KEEL_ECLOSED);
            return;
        }
        if (n == 0)
            return;
        struct wreq *r = malloc(sizeof(*r) + n);
        if (r == NULL) {
            link_fail(l, "out of memory", false);
            return;
        }
        memcpy(r->data, rbuf, n);
        r->len = n;
        if (queue_write(l, true, r) != 0)
            return;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

/* Why a handshake failed, in words an operator can act on. */
static const char *handshake_failure(struct keel_peerlink *l, int rv, const char *first, size_t n)
{
    static const char plain[] = "KEELPEER"; /* handshake.c's magic, little-endian */
    if (!l->seen_bytes && n >= 8) {
        char rev[8];
        for (int i = 0; i < 8; i++)
            rev[i] = plain[7 - i];
        if (memcmp(first, rev, 8) == 0)
            return "the peer sent a plaintext keel handshake: peer TLS is off there and on here";
    }
    if (rv == KEEL_ECLOSED)
        return "the peer said goodbye during the TLS handshake";
    return keel_tls_conn_error(l->tls);
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct keel_peerlink *l = s->data;
    if (l->failed)
        return;
    if (n < 0) {
        const char *why = n == UV_EOF ? (keel_tls_conn_established(l->tls)
                                             ? "the peer closed the connection"
                                             : "the peer closed the connection during the TLS "
                                               "handshake (peer TLS off there, or it refused "
                                               "this member's certificate)")
                                      : uv_strerror((int)n);
        link_fail(l, why, false);
        return;
    }
    if (n == 0)
        return;
    bool was_established = keel_tls_conn_established(l->tls);
    int rv = keel_tls_conn_feed(l->tls, buf->base, (size_t)n);
    flush_tls(l); /* handshake replies, or the alert saying why it failed */
    if (rv != 0 && !(rv == KEEL_ECLOSED && l->handed_off)) {
        const char *why = was_established ? keel_tls_conn_error(l->tls)
                                          : handshake_failure(l, rv, buf->base, (size_t)n);
        l->seen_bytes = true;
        link_fail(l, why, true);
        return;
    }
    l->seen_bytes = true;
    if (!l->told_ready && keel_tls_conn_established(l->tls)) {
        l->told_ready = true;
        if (l->ev.ready != NULL)
            l->ev.ready(l->ev.data);
        if (l->failed)
            return;
    }
    if (!l->handed_off) {
        if (keel_tls_conn_established(l->tls) && l->ev.readable != NULL)
            l->ev.readable(l->ev.data);
        return;
    }
    pump_in(l); /* a close_notify ends the link from here, once the bytes before it are raft's */
    update_reading(l);
}

static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct keel_peerlink *l = s->data;
    if (l->failed)
        return;
    if (n < 0) {
        /* raft closed its stream: say goodbye to the peer, then close. */
        keel_tls_conn_shutdown(l->tls);
        flush_tls(l);
        link_fail(l, "raft closed the link", false);
        return;
    }
    if (n == 0)
        return;
    int rv = keel_tls_conn_write(l->tls, buf->base, (size_t)n);
    if (rv != 0) {
        link_fail(l, keel_tls_conn_error(l->tls), true);
        return;
    }
    flush_tls(l);
    update_reading(l);
}

static void set_reading(uv_stream_t *s, bool *reading, bool want, uv_read_cb cb)
{
    if (want == *reading)
        return;
    *reading = want;
    if (want)
        uv_read_start(s, on_alloc, cb);
    else
        uv_read_stop(s);
}

/* Read a side only while the other side's queue is under the bound (see peertls.h). */
static void update_reading(struct keel_peerlink *l)
{
    bool tcp = !l->failed && (l->handed_off ? l->to_pipe < LINK_BOUND : !l->held);
    bool pipe = !l->failed && l->handed_off && l->to_tcp < LINK_BOUND;
    if (!l->closing)
        set_reading((uv_stream_t *)l->tcp, &l->tcp_reading, tcp, on_tcp_read);
    if (l->pipe_open && !l->closing)
        set_reading((uv_stream_t *)&l->pipe, &l->pipe_reading, pipe, on_pipe_read);
}

int keel_peerlink_start(struct keel_peertls *pt, uv_tcp_t *tcp, bool dial, const char *peer_name,
                        const char *label, const struct keel_peerlink_events *ev,
                        struct keel_peerlink **out)
{
    struct keel_peerlink *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return KEEL_ENOMEM;
    int rv = keel_tls_conn_new(dial ? pt->client : pt->server, dial ? peer_name : NULL, &l->tls);
    if (rv != 0) {
        free(l);
        return rv;
    }
    l->pt = pt;
    l->tcp = tcp;
    l->dial = dial;
    l->ev = *ev;
    l->handles = 1;
    snprintf(l->label, sizeof(l->label), "%s", label);
    tcp->data = l;
    l->next = pt->list.next;
    l->prev = &pt->list;
    pt->list.next->prev = l;
    pt->list.next = l;
    pt->links++;
    *out = l;
    flush_tls(l); /* a client's first flight */
    update_reading(l);
    return 0;
}

int keel_peerlink_write(struct keel_peerlink *l, const void *data, size_t len)
{
    int rv = keel_tls_conn_write(l->tls, data, len);
    if (rv == 0)
        flush_tls(l);
    return rv;
}

int keel_peerlink_read(struct keel_peerlink *l, void *buf, size_t cap, size_t *n)
{
    return keel_tls_conn_read(l->tls, buf, cap, n);
}

void keel_peerlink_hold(struct keel_peerlink *l)
{
    l->held = true;
    update_reading(l);
}

static void free_raft_handle(uv_handle_t *h)
{
    raft_free(h);
}

int keel_peerlink_handoff_fd(struct keel_peerlink *l, const struct keel_peerlink_events *ev,
                             int *fd)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        return errno == EMFILE || errno == ENFILE ? KEEL_EIO : KEEL_ENOMEM;
    uv_loop_t *loop = l->tcp->loop;
    uv_pipe_init(loop, &l->pipe, 0);
    l->pipe.data = l;
    l->handles++;
    l->pipe_open = true; /* initialised: keel_peerlink_close closes it */
    /* uv_pipe_open fails only on a bad descriptor; a handle that did take its fd closes it. */
    if (uv_pipe_open(&l->pipe, fds[1]) != 0) {
        close(fds[0]);
        close(fds[1]);
        return KEEL_EIO;
    }
    l->handed_off = true;
    l->ev = *ev;
    *fd = fds[0];
    /* Plaintext that came with the handshake waits in the codec: the other end's now. */
    pump_in(l);
    update_reading(l);
    return 0;
}

int keel_peerlink_handoff(struct keel_peerlink *l, const struct keel_peerlink_events *ev,
                          uv_stream_t **stream)
{
    uv_pipe_t *theirs = raft_malloc(sizeof(*theirs));
    if (theirs == NULL)
        return KEEL_ENOMEM;
    uv_pipe_init(l->tcp->loop, theirs, 0);
    int fd = -1;
    /* The link starts pumping into its end at once; raft's end only buffers until raft reads. */
    int rv = keel_peerlink_handoff_fd(l, ev, &fd);
    if (rv == 0 && uv_pipe_open(theirs, fd) != 0) {
        /* Cannot happen for a fresh descriptor; the link sees its other end close. */
        close(fd);
        rv = KEEL_EIO;
    }
    if (rv != 0) {
        uv_close((uv_handle_t *)theirs, free_raft_handle);
        return rv;
    }
    *stream = (uv_stream_t *)theirs;
    return 0;
}

bool keel_peerlink_names(const struct keel_peerlink *l, const char *host)
{
    return l->tls != NULL && keel_tls_conn_peer_names(l->tls, host);
}
