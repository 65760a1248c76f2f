/*
 * The raft peer transport. Lifetimes follow raft_uv's rules: a stream handed to raft was
 * allocated with raft_malloc and raft closes and frees it; until then it is ours, and every
 * handle we close is freed in its close callback. close() waits for all of them.
 */
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "err.h"
#include "handshake.h"
#include "hostport.h"
#include "log.h"
#include "peertls.h"

#define HELLO_TIMEOUT 5000 /* ms an incoming connection has to send its handshake */
/* Incoming connections whose handshake is not yet checked; more are closed at once. Each holds a
 * descriptor for up to HELLO_TIMEOUT, and descriptors are shared with raft's files and the
 * clients (fdlimit.h): a flood of silent connections must not take them all. Members reconnect
 * once per link, so a healthy cluster has a few in progress at most. */
#define MAX_ACCEPTING 64
/* Incoming handshakes from members addressed by name whose name is being resolved, to check the
 * source address. Each holds a thread of libuv's pool (which raft_uv's disk writes share) for as
 * long as the resolver takes: past this many, more are closed and the peers retry. */
#define MAX_RESOLVING_IN 4
/* Members whose name did not resolve, remembered to rate-limit the log (one line when it starts
 * failing, then at most one per UNRESOLVED_LOG_MS, and one when it resolves again). */
#define MAX_UNRESOLVED    16
#define UNRESOLVED_LOG_MS 30000
/* Peer addresses this member connected to (as resolved): what keel_transport_isolate cuts. */
#define MAX_DIALED 32
/* A peer TLS refusal is logged when it starts, then at most once per TLS_LOG_MS while it goes
 * on (raft redials every heartbeat). */
#define TLS_LOG_MS 10000

struct pending {
    struct pending *next, *prev;
    struct tport *t;
    uv_tcp_t *tcp; /* raft_malloc'd: it may go to raft */
    /* outgoing */
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
    uv_connect_t connect;
    uv_write_t write;
    int canceled;
    raft_id id;               /* the member dialled */
    char host[KEEL_ADDR_MAX]; /* its address's host, and ... */
    int port;                 /* ... port */
    struct sockaddr_in dst;   /* its address, or what its name resolved to */
    /* both: a name being resolved (uv_getaddrinfo on libuv's pool), and whether the connection
     * was given up meanwhile: it ends once the resolver calls back */
    uv_getaddrinfo_t gai;
    int resolving;
    int failed;
    /* incoming */
    uint64_t started; /* uv_now at accept or connect: the sweep drops slow ones */
    int connected;    /* outgoing: connected, the handshake being written */
    struct in_addr from_ip;
    char from[KEEL_ADDR_MAX]; /* "a.b.c.d:port", for the log */
    size_t got;
    uint8_t hello[KEEL_HANDSHAKE_LEN];
    struct keel_handshake_peer peer; /* a handshake that waits for its name's addresses */
    /* peer TLS: the link that owns the socket from the TCP connect or accept on (tcp is then
     * NULL); its handshake runs before the keel handshake, which travels inside it */
    struct keel_peerlink *link;
    uint64_t tls_started; /* uv_now when the link started: the sweep drops slow handshakes */
};

struct unresolved {
    raft_id id; /* 0: free */
    uint64_t fails;
    uint64_t logged_at;
};

struct tport {
    uv_loop_t *loop;
    raft_id id;
    char address[KEEL_ADDR_MAX];
    char host[KEEL_ADDR_MAX];
    const struct keel_config *cfg;
    struct keel_transport_hooks hooks;
    uv_tcp_t listener;
    int listening;
    uv_timer_t sweep;
    int sweeping;
    raft_uv_accept_cb accept_cb;
    struct pending list;          /* sentinel of pending connects and accepts */
    size_t accepting;             /* accepts in the list */
    uint64_t refused;             /* connections closed at MAX_ACCEPTING */
    size_t resolving_in;          /* accepts whose claimed name is being resolved */
    uint64_t refused_resolving;   /* closed at MAX_RESOLVING_IN */
    uint64_t refused_by_name;     /* source not among the name's addresses, since one was */
    struct sockaddr_in listen_sa; /* as bound */
    struct sockaddr_in dialed[MAX_DIALED];
    size_t n_dialed, next_dialed;
    struct unresolved unresolved[MAX_UNRESOLVED];
    /* Peer TLS refusals, rate-limited in the log as unresolved names are (raft redials every
     * heartbeat): members whose TLS handshake failed when dialled, and incoming ones. */
    struct unresolved tls_failing[MAX_UNRESOLVED];
    uint64_t refused_tls, refused_tls_logged_at;
    int isolated; /* keel_transport_isolate: no peer link any more */
    int closing;
    int handles; /* handles of ours still to be closed during shutdown */
    raft_uv_transport_close_cb close_cb;
    struct raft_uv_transport *base;
    struct keel_peertls *tls; /* NULL: peer TLS off */
};

static void list_add(struct tport *t, struct pending *p)
{
    p->next = t->list.next;
    p->prev = &t->list;
    t->list.next->prev = p;
    t->list.next = p;
}

static void list_del(struct pending *p)
{
    p->prev->next = p->next;
    p->next->prev = p->prev;
    p->next = p->prev = p;
}

static void maybe_closed(struct tport *t)
{
    if (t->closing && t->handles == 0 && t->list.next == &t->list &&
        (t->tls == NULL || keel_peertls_links(t->tls) == 0) && t->close_cb != NULL) {
        raft_uv_transport_close_cb cb = t->close_cb;
        t->close_cb = NULL;
        cb(t->base);
    }
}

/* ---- outgoing ---- */

static void connect_done(struct pending *p)
{
    struct tport *t = p->t;
    list_del(p);
    p->cb(p->req, NULL, p->canceled ? RAFT_CANCELED : RAFT_NOCONNECTION);
    free(p);
    maybe_closed(t);
}

static void connect_done_close(uv_handle_t *h)
{
    struct pending *p = h->data;
    raft_free(p->tcp);
    connect_done(p);
}

/* A link's events (peertls.h): closed links wake a transport that waits to close. */
static void link_gone(void *data)
{
    maybe_closed(data);
}

static void connect_fail(struct pending *p)
{
    if (p->link != NULL) {
        keel_peerlink_close(p->link); /* then dial_closed */
        return;
    }
    if (p->resolving) {
        /* The resolver's callback ends it (at once if it had not started). */
        p->failed = 1;
        uv_cancel((uv_req_t *)&p->gai);
        return;
    }
    if (!uv_is_closing((uv_handle_t *)p->tcp))
        uv_close((uv_handle_t *)p->tcp, connect_done_close);
}

/* The member's name for the log: its --initial-cluster name, else its id. */
static const char *member_label(const struct tport *t, raft_id id, char *buf, size_t len)
{
    const struct keel_member_conf *m = keel_config_member(t->cfg, id);
    if (m != NULL)
        snprintf(buf, len, "%s (%016llx)", m->name, (unsigned long long)id);
    else
        snprintf(buf, len, "%016llx", (unsigned long long)id);
    return buf;
}

static struct unresolved *failing_of(struct unresolved *tab, raft_id id, bool add)
{
    struct unresolved *free_slot = NULL, *oldest = &tab[0];
    for (size_t i = 0; i < MAX_UNRESOLVED; i++) {
        struct unresolved *u = &tab[i];
        if (u->id == id)
            return u;
        if (u->id == 0 && free_slot == NULL)
            free_slot = u;
        if (u->logged_at < oldest->logged_at)
            oldest = u;
    }
    if (!add)
        return NULL;
    struct unresolved *u = free_slot ? free_slot : oldest;
    memset(u, 0, sizeof(*u));
    u->id = id;
    return u;
}

/* A dial whose name did not resolve: raft retries it after its delay, as any failed connect; the
 * log says so once, then at most every UNRESOLVED_LOG_MS. */
static void note_unresolved(struct tport *t, const struct pending *p, int status)
{
    struct unresolved *u = failing_of(t->unresolved, p->id, true);
    uint64_t now = uv_now(t->loop);
    u->fails++;
    if (u->fails > 1 && now - u->logged_at < UNRESOLVED_LOG_MS)
        return;
    char who[KEEL_NAME_MAX + 24];
    KLOG_WARN("peer %s: its address %s:%d does not resolve (%s; %llu attempt%s so far); retrying",
              member_label(t, p->id, who, sizeof(who)), p->host, p->port, uv_strerror(status),
              (unsigned long long)u->fails, u->fails == 1 ? "" : "s");
    u->logged_at = now;
}

static void note_resolved(struct tport *t, const struct pending *p)
{
    struct unresolved *u = failing_of(t->unresolved, p->id, false);
    if (u == NULL)
        return;
    char who[KEEL_NAME_MAX + 24], ip[INET_ADDRSTRLEN] = "?";
    uv_ip4_name(&p->dst, ip, sizeof(ip));
    KLOG_INFO("peer %s: %s resolves again, to %s, after %llu failed attempt%s",
              member_label(t, p->id, who, sizeof(who)), p->host, ip, (unsigned long long)u->fails,
              u->fails == 1 ? "" : "s");
    memset(u, 0, sizeof(*u));
}

static void remember_dialed(struct tport *t, const struct sockaddr_in *dst)
{
    for (size_t i = 0; i < t->n_dialed; i++)
        if (t->dialed[i].sin_addr.s_addr == dst->sin_addr.s_addr &&
            t->dialed[i].sin_port == dst->sin_port)
            return;
    t->dialed[t->next_dialed] = *dst;
    t->next_dialed = (t->next_dialed + 1) % MAX_DIALED;
    if (t->n_dialed < MAX_DIALED)
        t->n_dialed++;
}

static void on_hello_written(uv_write_t *w, int status)
{
    struct pending *p = w->data;
    if (status != 0 || p->canceled) {
        connect_fail(p);
        return;
    }
    list_del(p);
    p->cb(p->req, (uv_stream_t *)p->tcp, 0);
    free(p);
}

static void dial_closed(void *data)
{
    connect_done(data);
}

/* The member dialled showed a certificate of the CA naming the address dialled: the keel
 * handshake (written into the link already) is on its way, and raft gets its stream. */
static void dial_ready(void *data)
{
    struct pending *p = data;
    struct tport *t = p->t;
    if (p->canceled || t->isolated) {
        connect_fail(p);
        return;
    }
    struct unresolved *u = failing_of(t->tls_failing, p->id, false);
    if (u != NULL) {
        char who[KEEL_NAME_MAX + 24];
        KLOG_INFO("peer %s: TLS handshake succeeds again after %llu failed attempt%s",
                  member_label(t, p->id, who, sizeof(who)), (unsigned long long)u->fails,
                  u->fails == 1 ? "" : "s");
        memset(u, 0, sizeof(*u));
    }
    struct keel_peerlink_events ev = {.data = t, .closed = link_gone};
    uv_stream_t *stream;
    int rv = keel_peerlink_handoff(p->link, &ev, &stream);
    if (rv != 0) {
        char who[KEEL_NAME_MAX + 24];
        KLOG_WARN("peer %s: cannot make the link's socketpair (%s)",
                  member_label(t, p->id, who, sizeof(who)), keel_strerror(rv));
        connect_fail(p);
        return;
    }
    list_del(p);
    p->cb(p->req, stream, 0);
    free(p);
}

static void dial_failed(void *data, const char *why)
{
    struct pending *p = data;
    struct tport *t = p->t;
    struct unresolved *u = failing_of(t->tls_failing, p->id, true);
    uint64_t now = uv_now(t->loop);
    if (++u->fails == 1 || now - u->logged_at >= TLS_LOG_MS) {
        char who[KEEL_NAME_MAX + 24];
        KLOG_WARN("peer %s at %s:%d: TLS handshake failed, link refused: %s (%llu attempt%s "
                  "so far)",
                  member_label(t, p->id, who, sizeof(who)), p->host, p->port, why,
                  (unsigned long long)u->fails, u->fails == 1 ? "" : "s");
        u->logged_at = now;
    }
    connect_fail(p);
}

/* Peer TLS on a connected socket: the link takes it over, the keel handshake waits in it until
 * the TLS handshake completes. */
static void dial_tls(struct pending *p)
{
    struct tport *t = p->t;
    char who[KEEL_NAME_MAX + 24], label[160];
    snprintf(label, sizeof(label), "to %s at %s:%d", member_label(t, p->id, who, sizeof(who)),
             p->host, p->port);
    struct keel_peerlink_events ev = {
        .data = p, .ready = dial_ready, .failed = dial_failed, .closed = dial_closed};
    p->tls_started = uv_now(t->loop);
    if (keel_peerlink_start(t->tls, p->tcp, true, p->host, label, &ev, &p->link) != 0) {
        connect_fail(p);
        return;
    }
    p->tcp = NULL;
    if (keel_peerlink_write(p->link, p->hello, KEEL_HANDSHAKE_LEN) != 0)
        connect_fail(p);
}

static void on_connect(uv_connect_t *c, int status)
{
    struct pending *p = c->data;
    if (status != 0 || p->canceled) {
        connect_fail(p);
        return;
    }
    uv_tcp_nodelay(p->tcp, 1);
    p->connected = 1;
    struct tport *t = p->t;
    remember_dialed(t, &p->dst);
    /* This member's address as given in its --initial-cluster entry: --listen-peer itself, or a
     * name for it (where --listen-peer is 0.0.0.0 or the pod's IP; config.c checks the port).
     * Not raft's configuration: a member restarted after a member update has not applied it
     * yet, and would announce the address it moved from. */
    const struct keel_member_conf *self = keel_config_member(t->cfg, t->id);
    struct keel_handshake h = {.cluster_id = t->cfg->cluster_id,
                               .id = t->id,
                               .peer = self ? self->peer : t->address,
                               .client = t->cfg->listen_client,
                               .name = t->cfg->name,
                               .zone = t->cfg->zone};
    keel_handshake_encode(&h, p->hello);
    if (t->tls != NULL) {
        dial_tls(p);
        return;
    }
    uv_buf_t buf = uv_buf_init((char *)p->hello, KEEL_HANDSHAKE_LEN);
    p->write.data = p;
    if (uv_write(&p->write, (uv_stream_t *)p->tcp, &buf, 1, on_hello_written) != 0)
        connect_fail(p);
}

/* Bind to this member's own address and connect to p->dst. */
static void start_connect(struct pending *p)
{
    struct tport *t = p->t;
    struct sockaddr_in src;
    int rv = t->isolated ? UV_ECONNREFUSED : uv_ip4_addr(t->host, 0, &src);
    /* The point of this transport: the source address is the member's own. */
    if (rv == 0)
        rv = uv_tcp_bind(p->tcp, (const struct sockaddr *)&src, 0);
    if (rv == 0)
        rv = uv_tcp_connect(&p->connect, p->tcp, (const struct sockaddr *)&p->dst, on_connect);
    if (rv != 0) {
        /* Report through the callback, as for any failed attempt: raft retries later. */
        connect_fail(p);
    }
}

/* The first IPv4 address of res, with port; -1 when there is none. */
static int first_ipv4(const struct addrinfo *res, int port, struct sockaddr_in *out)
{
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        if (a->ai_family == AF_INET && a->ai_addrlen >= sizeof(*out)) {
            memcpy(out, a->ai_addr, sizeof(*out));
            out->sin_port = htons((uint16_t)port);
            return 0;
        }
    }
    return -1;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct pending *p = req->data;
    struct tport *t = p->t;
    p->resolving = 0;
    if (status == 0 && first_ipv4(res, p->port, &p->dst) != 0)
        status = UV_EAI_ADDRFAMILY;
    uv_freeaddrinfo(res);
    if (p->failed || p->canceled) {
        connect_fail(p);
        return;
    }
    if (status != 0) {
        note_unresolved(t, p, status);
        connect_fail(p);
        return;
    }
    note_resolved(t, p);
    p->started = uv_now(t->loop); /* the connect timeout runs from the connect */
    start_connect(p);
}

/* raft dials a member: at each attempt (raft retries a failed one after its delay), so a name
 * is resolved anew each time and a member that came back at another IP is reached there. */
static int t_connect(struct raft_uv_transport *base, struct raft_uv_connect *req, raft_id id,
                     const char *address, raft_uv_connect_cb cb)
{
    struct tport *t = base->impl;
    char host[KEEL_ADDR_MAX];
    int port;
    int kind = keel_addr_split_any(address, host, sizeof(host), &port, NULL, 0);
    if (kind < 0)
        return RAFT_NOCONNECTION;
    struct pending *p = calloc(1, sizeof(*p));
    uv_tcp_t *tcp = raft_malloc(sizeof(*tcp));
    if (p == NULL || tcp == NULL) {
        free(p);
        raft_free(tcp);
        return RAFT_NOMEM;
    }
    p->t = t;
    p->tcp = tcp;
    p->req = req;
    p->id = id;
    snprintf(p->host, sizeof(p->host), "%s", host);
    p->port = port;
    p->started = uv_now(t->loop);
    p->cb = cb;
    uv_tcp_init(t->loop, tcp);
    tcp->data = p;
    p->connect.data = p;
    p->gai.data = p;
    list_add(t, p);
    if (kind == KEEL_HOST_IPV4 || t->isolated) {
        (void)uv_ip4_addr(host, port, &p->dst); /* an IPv4 literal: split checked it */
        start_connect(p);
        return 0;
    }
    /* Never getaddrinfo on the loop: it blocks for as long as the resolver takes. */
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    int rv = uv_getaddrinfo(t->loop, &p->gai, on_resolved, host, NULL, &hints);
    if (rv != 0) {
        note_unresolved(t, p, rv);
        connect_fail(p);
        return 0;
    }
    p->resolving = 1;
    return 0;
}

/* ---- incoming ---- */

static void accept_gone(struct pending *p)
{
    struct tport *t = p->t;
    list_del(p);
    t->accepting--;
    free(p);
    maybe_closed(t);
}

static void accept_closed(uv_handle_t *h)
{
    struct pending *p = h->data;
    raft_free(p->tcp);
    accept_gone(p);
}

static void accept_link_closed(void *data)
{
    accept_gone(data);
}

static void accept_drop(struct pending *p)
{
    if (p->resolving) {
        /* The resolver's callback drops it (at once if it had not started). */
        if (!p->failed)
            uv_cancel((uv_req_t *)&p->gai);
        p->failed = 1;
        return;
    }
    p->failed = 1; /* closing: the sweep leaves it alone */
    if (p->link != NULL)
        keel_peerlink_close(p->link); /* then accept_link_closed */
    else if (!uv_is_closing((uv_handle_t *)p->tcp))
        uv_close((uv_handle_t *)p->tcp, accept_closed);
}

static void accept_fetch(struct pending *p);

static void keepalive(uv_tcp_t *tcp)
{
    uv_os_fd_t fd;
    if (uv_tcp_keepalive(tcp, 1, 10) != 0 || uv_fileno((uv_handle_t *)tcp, &fd) != 0)
        return;
    int intvl = 5, cnt = 3;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/* A handshake that passed every check: the stream goes to raft (a fetch's to the fetch hook). */
static void accept_done(struct pending *p)
{
    if (p->peer.kind == KEEL_HANDSHAKE_FETCH) {
        accept_fetch(p);
        return;
    }
    struct tport *t = p->t;
    struct keel_handshake_peer peer = p->peer;
    uv_stream_t *stream = (uv_stream_t *)p->tcp;
    if (p->link != NULL) {
        struct keel_peerlink_events ev = {.data = t, .closed = link_gone};
        int rv = keel_peerlink_handoff(p->link, &ev, &stream);
        if (rv != 0) {
            KLOG_WARN("peer connection from %s dropped: cannot make its socketpair (%s)", p->from,
                      keel_strerror(rv));
            accept_drop(p);
            return;
        }
    }
    list_del(p);
    t->accepting--;
    free(p);
    t->hooks.peer(t->hooks.data, &peer);
    /* The member's address, which the checks proved equal to the claimed one. */
    t->accept_cb(t->base, peer.id, peer.peer, stream);
}

/* A checkpoint fetch that passed every check: its plaintext goes to the fetch hook as a
 * descriptor of its own: with peer TLS the other end of the link's socketpair (the link pumps
 * on, and closes once that end is closed); plain, a dup of the accepted socket, whose handle is
 * closed here (nothing past the handshake was read from it). */
static void accept_fetch(struct pending *p)
{
    struct tport *t = p->t;
    struct keel_handshake_peer peer = p->peer;
    int own = -1;
    if (p->link != NULL) {
        struct keel_peerlink_events ev = {.data = t, .closed = link_gone};
        int rv = keel_peerlink_handoff_fd(p->link, &ev, &own);
        if (rv != 0) {
            KLOG_WARN("checkpoint fetch from %s dropped: cannot make its socketpair (%s)", p->from,
                      keel_strerror(rv));
            accept_drop(p);
            return;
        }
        /* Handed off: the link is the peertls registry's now. */
        list_del(p);
        t->accepting--;
        free(p);
    } else {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)p->tcp, &fd) == 0)
            own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (own < 0)
            KLOG_WARN("checkpoint fetch from %s dropped: no descriptor for it (%s)", p->from,
                      strerror(errno));
        accept_drop(p); /* closes the handle, not the dup */
        if (own < 0)
            return;
    }
    KLOG_INFO("checkpoint fetch from member %016llx (%s) at %s", (unsigned long long)peer.id,
              peer.name, peer.peer);
    t->hooks.fetch(t->hooks.data, &peer, own);
}

/* Whether res holds the IPv4 address ip. */
static bool resolves_to(const struct addrinfo *res, struct in_addr ip)
{
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
        if (a->ai_family == AF_INET && a->ai_addrlen >= sizeof(struct sockaddr_in) &&
            ((const struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr == ip.s_addr)
            return true;
    return false;
}

/* The claimed member's name resolved: the handshake stands if the connection comes from one of
 * its addresses (what handshake.c checks directly for an IPv4 literal). */
static void on_peer_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct pending *p = req->data;
    struct tport *t = p->t;
    p->resolving = 0;
    t->resolving_in--;
    bool from_it = status == 0 && resolves_to(res, p->from_ip);
    uv_freeaddrinfo(res);
    if (p->failed || t->closing || t->isolated) {
        accept_drop(p);
        return;
    }
    if (!from_it) {
        /* A restarted pod dials before DNS has its new IP: its peers retry every heartbeat until
         * it has, so this is logged at the 1st, 2nd, 4th, 8th... refusal in a row. */
        uint64_t n = ++t->refused_by_name;
        if ((n & (n - 1)) == 0)
            KLOG_WARN("peer connection from %s refused: claims member %016llx (%s), whose peer "
                      "address is %s, which %s%s (%llu refused in a row)",
                      p->from, (unsigned long long)p->peer.id, p->peer.name, p->peer.peer,
                      status != 0 ? "does not resolve: " : "resolves to other addresses",
                      status != 0 ? uv_strerror(status) : "", (unsigned long long)n);
        accept_drop(p);
        return;
    }
    t->refused_by_name = 0;
    accept_done(p);
}

/* Resolve the name in p->peer's address to check where the connection comes from. */
static void check_by_name(struct pending *p)
{
    struct tport *t = p->t;
    char host[KEEL_ADDR_MAX];
    int port;
    if (t->resolving_in >= MAX_RESOLVING_IN) {
        /* Logged at the 1st, 2nd, 4th, 8th... refusal. */
        uint64_t n = ++t->refused_resolving;
        if ((n & (n - 1)) == 0)
            KLOG_WARN("peer connection from %s closed: %d names being resolved already (%llu "
                      "closed so far)",
                      p->from, MAX_RESOLVING_IN, (unsigned long long)n);
        accept_drop(p);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    p->gai.data = p;
    if (keel_addr_split_any(p->peer.peer, host, sizeof(host), &port, NULL, 0) != KEEL_HOST_NAME ||
        uv_getaddrinfo(t->loop, &p->gai, on_peer_resolved, host, NULL, &hints) != 0) {
        KLOG_WARN("peer connection from %s refused: the name in %s cannot be looked up", p->from,
                  p->peer.peer);
        accept_drop(p);
        return;
    }
    p->resolving = 1;
    t->resolving_in++;
}

static void hello_complete(struct pending *p);

static void hello_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct pending *p = h->data;
    (void)suggested;
    /* Never read past the head until it is checked, nor past the handshake: what follows is
     * raft's. */
    size_t want = p->got < KEEL_HANDSHAKE_HEAD ? KEEL_HANDSHAKE_HEAD : KEEL_HANDSHAKE_LEN;
    *buf = uv_buf_init((char *)p->hello + p->got, (unsigned)(want - p->got));
}

static void hello_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct pending *p = s->data;
    (void)buf;
    if (n < 0) {
        accept_drop(p);
        return;
    }
    p->got += (size_t)n;
    char why[256];
    if (p->got == KEEL_HANDSHAKE_HEAD &&
        keel_handshake_check_head(p->hello, why, sizeof(why)) != 0) {
        KLOG_WARN("peer connection from %s refused: %s", p->from, why);
        uv_read_stop(s);
        accept_drop(p);
        return;
    }
    if (p->got < KEEL_HANDSHAKE_LEN)
        return;
    uv_read_stop(s);
    hello_complete(p);
}

/* Peer TLS: plaintext arrived on an accepted link. Take the keel handshake out of it, head
 * first, as hello_read does from a plain socket; what follows stays in the link for raft. */
static void accept_readable(void *data)
{
    struct pending *p = data;
    char why[256];
    while (p->got < KEEL_HANDSHAKE_LEN) {
        size_t want = p->got < KEEL_HANDSHAKE_HEAD ? KEEL_HANDSHAKE_HEAD : KEEL_HANDSHAKE_LEN;
        size_t n = 0;
        if (keel_peerlink_read(p->link, p->hello + p->got, want - p->got, &n) != 0 || n == 0)
            return; /* an error reaches accept_failed through the link */
        p->got += n;
        if (p->got == KEEL_HANDSHAKE_HEAD &&
            keel_handshake_check_head(p->hello, why, sizeof(why)) != 0) {
            KLOG_WARN("peer connection from %s refused: %s", p->from, why);
            accept_drop(p);
            return;
        }
    }
    keel_peerlink_hold(p->link);
    hello_complete(p);
}

static void accept_failed(void *data, const char *why)
{
    struct pending *p = data;
    struct tport *t = p->t;
    uint64_t now = uv_now(t->loop);
    if (++t->refused_tls == 1 || now - t->refused_tls_logged_at >= TLS_LOG_MS) {
        KLOG_WARN("peer connection from %s refused: TLS handshake failed: %s (%llu refused "
                  "so far)",
                  p->from, why, (unsigned long long)t->refused_tls);
        t->refused_tls_logged_at = now;
    }
    accept_drop(p);
}

/* The whole keel handshake is in p->hello: check it, then hand the stream to raft. */
static void hello_complete(struct pending *p)
{
    struct tport *t = p->t;
    char why[256];
    struct keel_handshake_rule rule = {.cluster_id = t->cfg->cluster_id,
                                       .self_id = t->id,
                                       .lookup = t->hooks.lookup,
                                       .data = t->hooks.data};
    if (keel_handshake_check(&rule, p->hello, p->from_ip, &p->peer, why, sizeof(why)) != 0) {
        KLOG_WARN("peer connection from %s refused: %s", p->from, why);
        accept_drop(p);
        return;
    }
    if (p->peer.kind == KEEL_HANDSHAKE_FETCH &&
        (t->cfg->cluster_id == 0 || t->hooks.fetch == NULL)) {
        /* A member that joins a cluster has no state to give, and must not learn its cluster
         * from a fetch. */
        KLOG_WARN("checkpoint fetch from %s refused: %s", p->from,
                  t->hooks.fetch == NULL ? "this member serves none"
                                         : "this member does not know its cluster yet");
        accept_drop(p);
        return;
    }
    /* With peer TLS the certificate must be the claimed member's: it names that member's
     * address (as the dialling side checks of ours), not merely any address the CA signed. */
    char host[64];
    snprintf(host, sizeof(host), "%.*s", (int)strcspn(p->peer.peer, ":"), p->peer.peer);
    if (p->link != NULL && !keel_peerlink_names(p->link, host)) {
        KLOG_WARN("peer connection from %s refused: its certificate does not name %s, the "
                  "address of member %llx it claims to be",
                  p->from, host, (unsigned long long)p->peer.id);
        accept_drop(p);
        return;
    }
    if (p->peer.by_name)
        check_by_name(p);
    else
        accept_done(p);
}

/* A connect that has not completed in a heartbeat is given up, and raft tries again after its
 * retry delay (another heartbeat) with a fresh SYN. The kernel would resend the SYN of a connect
 * whose SYN was lost (a link down, a partition) only after 1, then 3, then 7 s: a member back from
 * a partition waited seconds for the links that a connect begun during it was still retrying. A
 * connect between zones takes a round trip, a few ms. */
static uint64_t connect_timeout(const struct tport *t)
{
    uint64_t ms = t->cfg->heartbeat_ms;
    return ms < 50 ? 50 : ms;
}

static void sweep(uv_timer_t *timer)
{
    struct tport *t = timer->data;
    uint64_t now = uv_now(t->loop);
    for (struct pending *p = t->list.next; p != &t->list; p = p->next) {
        if (p->req == NULL && p->failed)
            continue; /* already dropped: closing, or waiting for the resolver's callback */
        if (p->req == NULL && now - p->started > HELLO_TIMEOUT) {
            if (p->link != NULL)
                KLOG_WARN("peer connection from %s dropped: no TLS and keel handshake in %d ms",
                          p->from, HELLO_TIMEOUT);
            accept_drop(p);
        } else if (p->req != NULL && p->link != NULL && now - p->tls_started > HELLO_TIMEOUT) {
            char who[KEEL_NAME_MAX + 24];
            KLOG_WARN("peer %s at %s:%d: no TLS handshake in %d ms; retrying",
                      member_label(t, p->id, who, sizeof(who)), p->host, p->port, HELLO_TIMEOUT);
            connect_fail(p);
        } else if (p->req != NULL && !p->connected && !p->resolving &&
                   now - p->started > connect_timeout(t))
            connect_fail(p);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct tport *t = server->data;
    if (status != 0 || t->closing)
        return;
    struct pending *p = calloc(1, sizeof(*p));
    uv_tcp_t *tcp = raft_malloc(sizeof(*tcp));
    if (p == NULL || tcp == NULL) {
        free(p);
        raft_free(tcp);
        return;
    }
    p->t = t;
    p->tcp = tcp;
    p->started = uv_now(t->loop);
    uv_tcp_init(t->loop, tcp);
    tcp->data = p;
    list_add(t, p);
    t->accepting++;
    struct sockaddr_storage from;
    int from_len = sizeof(from);
    if (uv_accept(server, (uv_stream_t *)tcp) != 0 ||
        uv_tcp_getpeername(tcp, (struct sockaddr *)&from, &from_len) != 0 ||
        from.ss_family != AF_INET) {
        /* Members speak IPv4 only (the listener is an IPv4 socket): nothing to check here. */
        accept_drop(p);
        return;
    }
    const struct sockaddr_in *from4 = (const struct sockaddr_in *)&from;
    p->from_ip = from4->sin_addr;
    char ip[INET_ADDRSTRLEN] = "?";
    uv_ip4_name(from4, ip, sizeof(ip));
    snprintf(p->from, sizeof(p->from), "%s:%d", ip, ntohs(from4->sin_port));
    if (t->isolated) {
        accept_drop(p);
        return;
    }
    if (t->accepting > MAX_ACCEPTING) {
        /* Logged at the 1st, 2nd, 4th, 8th... refusal. */
        uint64_t n = ++t->refused;
        if ((n & (n - 1)) == 0)
            KLOG_WARN("peer connection from %s closed: %d handshakes in progress already (%llu "
                      "closed so far)",
                      p->from, MAX_ACCEPTING, (unsigned long long)n);
        accept_drop(p);
        return;
    }
    uv_tcp_nodelay(tcp, 1);
    /* A member that dies without a FIN (power, partition) must not hold what it had here
     * forever: above all a fetch connection, which sits silent once its checkpoint is sent and
     * takes one of few slots (main.c). Keep-alive probes an idle connection after 10 s, every
     * 5 s, 3 times: a dead peer's connection ends within about 25 s. A raft link is never idle
     * (heartbeats), so probes never run on it. */
    keepalive(tcp);
    if (t->tls != NULL) {
        char label[96];
        snprintf(label, sizeof(label), "from %s", p->from);
        struct keel_peerlink_events ev = {.data = p,
                                          .readable = accept_readable,
                                          .failed = accept_failed,
                                          .closed = accept_link_closed};
        if (keel_peerlink_start(t->tls, tcp, false, NULL, label, &ev, &p->link) != 0)
            accept_drop(p);
        else
            p->tcp = NULL;
        return;
    }
    uv_read_start((uv_stream_t *)tcp, hello_alloc, hello_read);
}

static int t_listen(struct raft_uv_transport *base, raft_uv_accept_cb cb)
{
    struct tport *t = base->impl;
    char host[KEEL_ADDR_MAX];
    int port;
    struct sockaddr_in addr;
    if (keel_addr_split(t->address, host, sizeof(host), &port) != 0 ||
        uv_ip4_addr(host, port, &addr) != 0)
        return RAFT_INVALID;
    t->accept_cb = cb;
    uv_tcp_init(t->loop, &t->listener);
    t->listener.data = t;
    t->listening = 1;
    int rv = uv_tcp_bind(&t->listener, (const struct sockaddr *)&addr, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&t->listener, 128, on_connection);
    int len = sizeof(t->listen_sa);
    if (rv == 0)
        uv_tcp_getsockname(&t->listener, (struct sockaddr *)&t->listen_sa, &len);
    if (rv == 0) {
        uv_timer_init(t->loop, &t->sweep);
        t->sweep.data = t;
        t->sweeping = 1;
        uv_timer_start(&t->sweep, sweep, 50, 50);
    }
    if (rv != 0) {
        snprintf(base->errmsg, sizeof(base->errmsg), "listen on %s: %s", t->address,
                 uv_strerror(rv));
        return RAFT_IOERR;
    }
    return 0;
}

static int t_init(struct raft_uv_transport *base, raft_id id, const char *address)
{
    struct tport *t = base->impl;
    int port;
    t->id = id;
    snprintf(t->address, sizeof(t->address), "%s", address);
    if (keel_addr_split(address, t->host, sizeof(t->host), &port) != 0) {
        snprintf(base->errmsg, sizeof(base->errmsg), "bad peer address %s", address);
        return RAFT_INVALID;
    }
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    struct tport *t = h->data;
    t->handles--;
    maybe_closed(t);
}

static void t_close(struct raft_uv_transport *base, raft_uv_transport_close_cb cb)
{
    struct tport *t = base->impl;
    t->closing = 1;
    t->close_cb = cb;
    if (t->listening) {
        t->handles++;
        uv_close((uv_handle_t *)&t->listener, listener_closed);
    }
    if (t->sweeping) {
        t->handles++;
        uv_close((uv_handle_t *)&t->sweep, listener_closed);
    }
    for (struct pending *p = t->list.next; p != &t->list; p = p->next) {
        if (p->req != NULL) {
            p->canceled = 1;
            connect_fail(p);
        } else {
            accept_drop(p);
        }
    }
    if (t->tls != NULL)
        keel_peertls_close_links(t->tls);
    maybe_closed(t);
}

int keel_transport_init(struct raft_uv_transport *base, uv_loop_t *loop,
                        const struct keel_config *cfg, const struct keel_transport_hooks *hooks)
{
    struct tport *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return RAFT_NOMEM;
    char err[600];
    if (keel_peertls_new(cfg, &t->tls, err, sizeof(err)) != 0) {
        KLOG_ERROR("peer TLS: %s", err);
        free(t);
        return RAFT_INVALID;
    }
    if (t->tls != NULL)
        KLOG_INFO("peer TLS on: certificate %s, CA %s; every peer link is verified both ways",
                  cfg->peer_cert_file, cfg->peer_ca_file);
    t->loop = loop;
    t->cfg = cfg;
    t->hooks = *hooks;
    t->list.next = t->list.prev = &t->list;
    t->base = base;
    memset(base, 0, sizeof(*base));
    base->impl = t;
    base->init = t_init;
    base->listen = t_listen;
    base->connect = t_connect;
    base->close = t_close;
    return 0;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_in *b)
{
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)a;
    return a->ss_family == AF_INET && a4->sin_port == b->sin_port &&
           (a4->sin_addr.s_addr == b->sin_addr.s_addr || b->sin_addr.s_addr == INADDR_ANY);
}

/* A peer link is a TCP handle accepted on this member's peer listener (its address, or its port
 * when it listens on 0.0.0.0), or connected to an address this transport dialled a member at
 * (as resolved then: names are never compared with IPs). Client sessions and checkpoint
 * fetches use client addresses, which config.c keeps apart from peer addresses. */
static void cut_peer_link(uv_handle_t *h, void *arg)
{
    struct tport *t = arg;
    if (h->type != UV_TCP || uv_is_closing(h) || h == (uv_handle_t *)&t->listener)
        return;
    struct sockaddr_storage local, remote;
    int len = sizeof(local);
    bool link = t->listen_sa.sin_family == AF_INET &&
                uv_tcp_getsockname((uv_tcp_t *)h, (struct sockaddr *)&local, &len) == 0 &&
                same_addr(&local, &t->listen_sa);
    len = sizeof(remote);
    if (!link && uv_tcp_getpeername((uv_tcp_t *)h, (struct sockaddr *)&remote, &len) == 0) {
        for (size_t i = 0; !link && i < t->n_dialed; i++)
            link = same_addr(&remote, &t->dialed[i]);
    }
    uv_os_fd_t fd;
    /* shutdown(2), never uv_close: the handle may be raft's, and raft closes what it owns. */
    if (link && uv_fileno(h, &fd) == 0)
        shutdown(fd, SHUT_RDWR);
}

void keel_transport_isolate(struct raft_uv_transport *base)
{
    struct tport *t = base->impl;
    t->isolated = 1;
    for (struct pending *p = t->list.next; p != &t->list; p = p->next) {
        if (p->req != NULL)
            connect_fail(p); /* raft hears of a failed attempt and retries later, in vain */
        else
            accept_drop(p);
    }
    uv_walk(t->loop, cut_peer_link, t);
}

int keel_transport_reload_tls(struct raft_uv_transport *base)
{
    struct tport *t = base->impl;
    if (t == NULL || t->tls == NULL)
        return 0;
    char err[600];
    if (keel_peertls_reload(t->tls, err, sizeof(err)) != 0) {
        KLOG_ERROR("peer TLS: reload failed, keeping the certificates in use: %s", err);
        return -1;
    }
    KLOG_INFO("peer TLS: reloaded %s, %s and %s; new peer links use them", t->cfg->peer_cert_file,
              t->cfg->peer_key_file, t->cfg->peer_ca_file);
    return 0;
}

void keel_transport_close(struct raft_uv_transport *base)
{
    struct tport *t = base->impl;
    if (t != NULL)
        keel_peertls_free(t->tls);
    free(base->impl);
    base->impl = NULL;
}
