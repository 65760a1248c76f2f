/* Prometheus exposition over a small HTTP/1.1 listener (see expose.h). */
#include "expose.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <http_parser.h>

#include "err.h"
#include "log.h"
#include "tls.h"

#define URL_MAX 256

struct conn {
    struct conn *next, *prev;
    struct keel_expose *e;
    uv_tcp_t tcp;
    http_parser parser;
    char url[URL_MAX + 1];
    size_t url_len;
    bool url_long;
    bool closing;
    bool reading;     /* the socket is read (stopped while an answer is being written) */
    bool failed;      /* a malformed request or a broken TLS record: closed once written */
    int writes;       /* uv_writes in flight (answers, TLS handshake flights) */
    uint64_t idle_at; /* uv_now when it began waiting for a request */
    /* Bytes read and not yet parsed: requests behind one being answered wait here (a pipelining
     * client gets one answer at a time, so what a connection holds stays bounded). With TLS,
     * the plaintext taken from tls; more waits inside it, at most one read's worth. */
    size_t held_off, held_len;
    struct keel_tls_conn *tls; /* NULL: plain HTTP */
    char rbuf[4096];
    char pbuf[4096]; /* TLS: plaintext */
};

struct keel_expose {
    struct keel_expose_options o;
    uv_tcp_t listener;
    uv_timer_t sweep;
    struct conn conns; /* sentinel */
    size_t n_conns;
    int handles; /* listener and sweep, open */
};

struct response {
    uv_write_t req;
    struct conn *c;
    bool close_after;
    size_t len;
    char data[];
};

/* ---- the text format ---- */

void keel_expose_add(struct keel_expose_text *t, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !t->failed; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if (t->p != NULL && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap <= t->len + (size_t)n)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (p == NULL) {
            t->failed = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
}

void keel_expose_text_free(struct keel_expose_text *t)
{
    free(t->p);
    memset(t, 0, sizeof(*t));
}

void keel_expose_series(struct keel_expose_text *t, const char *name, const char *type,
                        const char *help, double value)
{
    keel_expose_add(t, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name,
                    value);
}

void keel_expose_histo(struct keel_expose_text *t, const char *name, const char *help,
                       const char *labels, const struct keel_histo *h)
{
    struct keel_histo_read r;
    keel_histo_read(h, &r);
    if (help != NULL)
        keel_expose_add(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    const char *sep = labels[0] ? "," : "";
    for (unsigned i = 0; i < h->n; i++)
        keel_expose_add(t, "%s_bucket{%s%sle=\"%.6g\"} %llu\n", name, labels, sep, h->bounds[i],
                        (unsigned long long)r.cumulative[i]);
    keel_expose_add(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                    (unsigned long long)r.cumulative[h->n]);
    if (labels[0]) {
        keel_expose_add(t, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, r.sum, name,
                        labels, (unsigned long long)r.count);
    } else {
        keel_expose_add(t, "%s_sum %.9g\n%s_count %llu\n", name, r.sum, name,
                        (unsigned long long)r.count);
    }
}

static uint64_t open_fds(void)
{
    uint64_t n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n > 0 ? n - 1 : 0; /* not the one opendir holds */
}

void keel_expose_process(struct keel_expose_text *t, double started)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    keel_expose_series(t, "process_cpu_seconds_total", "counter", "User and system CPU time spent.",
                       cpu);
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    keel_expose_series(t, "process_resident_memory_bytes", "gauge",
                       "Resident memory size in bytes.",
                       (double)rss * (double)sysconf(_SC_PAGESIZE));
    keel_expose_series(t, "process_open_fds", "gauge", "Open file descriptors.",
                       (double)open_fds());
    keel_expose_series(t, "process_start_time_seconds", "gauge",
                       "Start time of the process since the epoch in seconds.", started);
}

/* ---- connections ---- */

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->e->n_conns--;
    keel_tls_conn_free(c->tls);
    free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void process(struct conn *c);

static void written(uv_write_t *w, int status)
{
    struct response *r = w->data;
    struct conn *c = r->c;
    c->writes--;
    if (status != 0 || r->close_after)
        conn_close(c);
    free(r);
    if (c->writes == 0 && !c->closing)
        process(c); /* the requests held behind this answer, then the socket again */
}

/* A response of len bytes for c, to fill and send_raw; NULL (c closed) when out of memory. */
static struct response *response_new(struct conn *c, size_t len)
{
    struct response *r = malloc(sizeof(*r) + len);
    if (r == NULL) {
        conn_close(c);
        return NULL;
    }
    r->len = len;
    r->c = c;
    r->req.data = r;
    return r;
}

/* Write r's bytes (plain HTTP, or records already encrypted) to c's socket; close_after: close c
 * once they are written. */
static void send_raw(struct conn *c, struct response *r, bool close_after)
{
    r->close_after = close_after;
    uv_buf_t buf = uv_buf_init(r->data, (unsigned)r->len);
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &buf, 1, written) != 0) {
        free(r);
        conn_close(c);
        return;
    }
    c->writes++;
}

/* TLS: send what the codec has for the network (handshake flights, records, alerts). */
static void tls_flush(struct conn *c, bool close_after)
{
    size_t n = keel_tls_conn_pending(c->tls);
    if (n == 0) {
        if (close_after)
            conn_close(c);
        return;
    }
    struct response *r = response_new(c, n);
    if (r == NULL)
        return;
    r->len = keel_tls_conn_take(c->tls, r->data, n);
    send_raw(c, r, close_after);
}

static const char *reason_of(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 414:
        return "URI Too Long";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* Queue an answer: status line, headers, body (none for HEAD). */
static void respond(struct conn *c, int code, const char *type, const char *body, size_t body_len,
                    bool head, bool close_after)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", code,
                     reason_of(code), type, body_len, close_after ? "Connection: close\r\n" : "");
    size_t blen = head || body == NULL ? 0 : body_len;
    if (c->tls == NULL) {
        struct response *r = response_new(c, (size_t)n + blen);
        if (r == NULL)
            return;
        memcpy(r->data, hdr, (size_t)n);
        if (blen)
            memcpy(r->data + n, body, blen);
        send_raw(c, r, close_after);
        return;
    }
    /* The records go out at once (tls_flush): the codec holds them no longer than this. */
    if (keel_tls_conn_write(c->tls, hdr, (size_t)n) != 0 ||
        (blen > 0 && keel_tls_conn_write(c->tls, body, blen) != 0)) {
        conn_close(c);
        return;
    }
    if (close_after)
        keel_tls_conn_shutdown(c->tls); /* close_notify: the client knows the answer is whole */
    tls_flush(c, close_after);
}

static void serve(struct conn *c, bool head, bool keep)
{
    if (c->url_long) {
        respond(c, 414, "text/plain", "path too long\n", 14, head, true);
        return;
    }
    char path[URL_MAX + 1];
    size_t n = strcspn(c->url, "?");
    memcpy(path, c->url, n);
    path[n] = '\0';
    struct keel_expose_text t = {0};
    const char *type = "text/plain";
    int code = c->e->o.serve(c->e->o.data, path, &t, &type);
    if (t.failed)
        respond(c, 500, "text/plain", "out of memory\n", 14, head, true);
    else
        respond(c, code, type, t.p ? t.p : "", t.len, head, !keep);
    keel_expose_text_free(&t);
}

/* ---- parsing ---- */

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->url_len = 0;
    c->url_long = false;
    c->url[0] = '\0';
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->url_len + n > URL_MAX) {
        c->url_long = true;
        return 0;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    bool keep = http_should_keep_alive(p) != 0;
    if (p->method != HTTP_GET && p->method != HTTP_HEAD)
        respond(c, 405, "text/plain", "GET or HEAD only\n", 17, false, !keep);
    else
        serve(c, p->method == HTTP_HEAD, keep);
    c->idle_at = uv_now(c->e->o.loop);
    /* One answer at a time: the rest of what was read waits until this one is written. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {.on_message_begin = on_message_begin,
                                              .on_url = on_url,
                                              .on_message_complete = on_message_complete};

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

/* Stop or start reading c's socket: it is read only while nothing is being written to it and
 * nothing read waits to be parsed. */
static void want_read(struct conn *c, bool on)
{
    if (c->closing || c->reading == on)
        return;
    if (on ? uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0
           : uv_read_stop((uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    c->reading = on;
}

/* A request that does not parse: 400 and close (or just close when an answer is on its way). */
static void malformed(struct conn *c)
{
    c->failed = true;
    want_read(c, false);
    if (!c->closing && c->writes == 0)
        respond(c, 400, "text/plain", "malformed request\n", 18, false, true);
    else
        conn_close(c);
}

/* Parse what is held, answering one request at a time; read the socket again once all is
 * parsed and answered. */
static void process(struct conn *c)
{
    while (!c->closing && !c->failed && c->writes == 0) {
        if (c->held_len == 0 && c->tls != NULL) {
            size_t n = 0;
            int rv = keel_tls_conn_read(c->tls, c->pbuf, sizeof(c->pbuf), &n);
            if (rv != 0) {
                c->failed = true;
                tls_flush(c, true);
                return;
            }
            c->held_off = 0;
            c->held_len = n;
        }
        if (c->held_len == 0)
            break;
        const char *base = (c->tls != NULL ? c->pbuf : c->rbuf) + c->held_off;
        size_t used = http_parser_execute(&c->parser, &settings, base, c->held_len);
        c->held_off += used;
        c->held_len -= used;
        if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            continue;
        }
        if (c->parser.http_errno != HPE_OK || c->held_len != 0) {
            malformed(c);
            return;
        }
    }
    want_read(c, !c->closing && !c->failed && c->writes == 0 && c->held_len == 0);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0 || c->closing || c->failed)
        return;
    if (c->tls != NULL) {
        int rv = keel_tls_conn_feed(c->tls, buf->base, (size_t)n);
        if (rv != 0) {
            /* A failed handshake (no client certificate, an unknown CA) or a broken record:
             * the alert that says why goes out, then the connection closes. */
            KLOG_DEBUG("%s: TLS connection closed: %s", c->e->o.flag,
                       rv == KEEL_ECLOSED ? "the client said goodbye"
                                          : keel_tls_conn_error(c->tls));
            c->failed = true;
            want_read(c, false);
            tls_flush(c, true);
            return;
        }
        tls_flush(c, false); /* handshake flights */
    } else {
        c->held_off = 0;
        c->held_len = (size_t)n;
    }
    process(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct keel_expose *e = server->data;
    if (status != 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->e = e;
    uv_tcp_init(e->o.loop, &c->tcp);
    c->tcp.data = c;
    c->next = e->conns.next;
    c->prev = &e->conns;
    e->conns.next->prev = c;
    e->conns.next = c;
    e->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || e->n_conns > KEEL_EXPOSE_MAX_CONNS) {
        conn_close(c);
        return;
    }
    if (e->o.tls != NULL && keel_tls_conn_new(e->o.tls, NULL, &c->tls) != 0) {
        conn_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->idle_at = uv_now(e->o.loop);
    want_read(c, true);
}

static void sweep(uv_timer_t *t)
{
    struct keel_expose *e = t->data;
    uint64_t now = uv_now(e->o.loop);
    for (struct conn *c = e->conns.next; c != &e->conns; c = c->next)
        if (c->writes == 0 && now - c->idle_at > KEEL_EXPOSE_IDLE_MS)
            conn_close(c);
}

/* "a.b.c.d:port" -> sa; -1 when it does not parse. */
static int parse_listen(const char *s, struct sockaddr_in *sa)
{
    const char *colon = strrchr(s, ':');
    char host[64];
    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof(host))
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 1 || port > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    return uv_ip4_addr(host, (int)port, sa) == 0 ? 0 : -1;
}

int keel_expose_new(const struct keel_expose_options *o, struct keel_expose **out)
{
    struct sockaddr_in sa;
    *out = NULL;
    if (parse_listen(o->listen, &sa) != 0) {
        KLOG_ERROR("%s %s is not a.b.c.d:port", o->flag, o->listen);
        return -1;
    }
    struct keel_expose *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -2;
    e->o = *o;
    e->conns.next = e->conns.prev = &e->conns;
    uv_tcp_init(o->loop, &e->listener);
    e->listener.data = e;
    uv_timer_init(o->loop, &e->sweep);
    e->sweep.data = e;
    e->handles = 2;
    int rv = uv_tcp_bind(&e->listener, (const struct sockaddr *)&sa, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&e->listener, 64, on_connection);
    *out = e; /* closed by keel_expose_stop either way */
    if (rv != 0) {
        KLOG_ERROR("%s %s: cannot listen: %s", o->flag, o->listen, uv_strerror(rv));
        return -1;
    }
    uv_timer_start(&e->sweep, sweep, 1000, 1000);
    return 0;
}

void keel_expose_stop(struct keel_expose *e)
{
    if (e == NULL || e->handles == 0)
        return;
    e->handles = 0;
    uv_close((uv_handle_t *)&e->listener, NULL);
    uv_close((uv_handle_t *)&e->sweep, NULL);
    for (struct conn *c = e->conns.next; c != &e->conns; c = c->next)
        conn_close(c);
}

void keel_expose_free(struct keel_expose *e)
{
    free(e);
}
