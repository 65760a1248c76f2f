/* The metrics and health listener (see metrics.h). */
#include "metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "config.h"
#include "err.h"
#include "log.h"

#define URL_MAX 256

struct conn {
    struct conn *next, *prev;
    struct keel_metrics *m;
    uv_tcp_t tcp;
    http_parser parser;
    char url[URL_MAX + 1];
    size_t url_len;
    bool url_long;
    bool closing;
    int writes;       /* responses being written */
    uint64_t idle_at; /* uv_now when it began waiting for a request */
    char rbuf[4096];
};

struct keel_metrics {
    struct keel_metrics_options o;
    uv_tcp_t listener;
    uv_timer_t sweep;
    struct conn conns; /* sentinel */
    size_t n_conns;
    int handles;    /* listener and sweep, open */
    double started; /* wall-clock seconds at start */
};

struct response {
    uv_write_t req;
    struct conn *c;
    bool close_after;
    size_t len;
    char data[];
};

/* ---- connections ---- */

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->m->n_conns--;
    free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void written(uv_write_t *w, int status)
{
    struct response *r = w->data;
    struct conn *c = r->c;
    c->writes--;
    if (status != 0 || r->close_after)
        conn_close(c);
    free(r);
}

/* Queue an answer: status line, headers, body (NULL for none, as for HEAD). */
static void respond(struct conn *c, int code, const char *reason, const char *type,
                    const char *body, size_t body_len, bool head, bool close_after)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", code,
                     reason, type, body_len, close_after ? "Connection: close\r\n" : "");
    size_t blen = head || body == NULL ? 0 : body_len;
    struct response *r = malloc(sizeof(*r) + (size_t)n + blen);
    if (r == NULL) {
        conn_close(c);
        return;
    }
    memcpy(r->data, hdr, (size_t)n);
    if (blen)
        memcpy(r->data + n, body, blen);
    r->len = (size_t)n + blen;
    r->c = c;
    r->close_after = close_after;
    r->req.data = r;
    uv_buf_t buf = uv_buf_init(r->data, (unsigned)r->len);
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &buf, 1, written) != 0) {
        free(r);
        conn_close(c);
        return;
    }
    c->writes++;
}

/* ---- what is served ---- */

/* A growing text buffer; a failed allocation leaves it marked and its text cut. */
struct text {
    char *p;
    size_t len, cap;
    bool failed;
};

static void add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct text *t, const char *fmt, ...)
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

static void series(struct text *t, const char *name, const char *type, const char *help,
                   double value)
{
    add(t, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
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

static void metrics_text(struct keel_metrics *m, struct text *t)
{
    struct keel_metrics_sample s;
    memset(&s, 0, sizeof(s));
    m->o.collect(m->o.data, &s);
    add(t,
        "# HELP keel_server_info This member: name, zone and version.\n"
        "# TYPE keel_server_info gauge\n"
        "keel_server_info{name=\"%s\",zone=\"%s\",version=\"%s\"} 1\n",
        m->o.name, m->o.zone, m->o.version);
    series(t, "keel_server_has_leader", "gauge", "Whether this member knows a leader.",
           s.has_leader);
    series(t, "keel_server_is_leader", "gauge", "Whether this member is the leader.", s.is_leader);
    series(t, "keel_server_leader_changes_seen_total", "counter",
           "Leaders this member has seen since it started.", (double)s.leader_changes);
    series(t, "keel_server_proposals_committed_total", "counter",
           "The raft commit index as this member knows it.", (double)s.commit_index);
    series(t, "keel_server_proposals_applied_total", "counter",
           "The raft index of the last entry the store applied (what readers see).",
           (double)s.applied_index);
    series(t, "keel_server_proposals_pending", "gauge",
           "Bytes of writes taken by this member and not yet applied.",
           (double)s.proposal_backlog_bytes);
    series(t, "keel_raft_term", "gauge", "The current raft term.", (double)s.term);
    series(t, "keel_raft_last_index", "gauge", "The index of the last entry in the raft log.",
           (double)s.last_index);
    series(t, "keel_storage_durable_index", "gauge",
           "The raft index of the last entry the store has synced to disk.",
           (double)s.durable_index);
    series(t, "keel_mvcc_db_total_size_in_bytes", "gauge", "Bytes of the store's data file in use.",
           (double)s.db_size);
    series(t, "keel_mvcc_db_total_size_in_use_in_bytes", "gauge",
           "Logical bytes of the store, what the quota is checked against.",
           (double)s.logical_size);
    series(t, "keel_server_quota_backend_bytes", "gauge", "The cluster's quota.",
           (double)s.quota_bytes);
    series(t, "keel_mvcc_keys_total", "gauge", "Live keys at the current revision.",
           (double)s.keys);
    series(t, "keel_mvcc_current_revision", "gauge", "The current revision.", (double)s.revision);
    series(t, "keel_mvcc_compact_revision", "gauge", "Revisions below this are compacted.",
           (double)s.compact_revision);
    series(t, "keel_server_alarm_nospace", "gauge", "Whether the NOSPACE alarm is raised.",
           s.nospace);
    series(t, "keel_watch_watchers", "gauge", "Watchers on this member.", (double)s.watchers);
    add(t,
        "# HELP keel_cluster_members Members of the raft configuration, by role.\n"
        "# TYPE keel_cluster_members gauge\n"
        "keel_cluster_members{role=\"voter\"} %llu\n"
        "keel_cluster_members{role=\"learner\"} %llu\n",
        (unsigned long long)s.voters, (unsigned long long)s.learners);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    series(t, "process_cpu_seconds_total", "counter", "User and system CPU time spent.", cpu);
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    series(t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           (double)rss * (double)sysconf(_SC_PAGESIZE));
    series(t, "process_open_fds", "gauge", "Open file descriptors.", (double)open_fds());
    series(t, "process_start_time_seconds", "gauge",
           "Start time of the process since the epoch in seconds.", m->started);
}

static void serve(struct conn *c, bool head, bool keep)
{
    struct keel_metrics *m = c->m;
    bool close_after = !keep;
    if (c->url_long) {
        respond(c, 414, "URI Too Long", "text/plain", "path too long\n", 14, head, true);
        return;
    }
    char path[URL_MAX + 1];
    size_t n = strcspn(c->url, "?");
    memcpy(path, c->url, n);
    path[n] = '\0';
    if (strcmp(path, "/metrics") == 0) {
        struct text t = {0};
        metrics_text(m, &t);
        if (t.failed)
            respond(c, 500, "Internal Server Error", "text/plain", "out of memory\n", 14, head,
                    true);
        else
            respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", t.p, t.len, head,
                    close_after);
        free(t.p);
        return;
    }
    if (strcmp(path, "/health") == 0 || strcmp(path, "/readyz") == 0) {
        struct keel_metrics_sample s;
        memset(&s, 0, sizeof(s));
        m->o.collect(m->o.data, &s);
        const char *reason = !s.has_leader                 ? "RAFT NO LEADER"
                             : s.nospace && path[1] == 'h' ? "ALARM NOSPACE"
                                                           : "";
        char body[96];
        int len;
        if (path[1] == 'h')
            len = snprintf(body, sizeof(body), "{\"health\":\"%s\",\"reason\":\"%s\"}",
                           reason[0] ? "false" : "true", reason);
        else
            len = snprintf(body, sizeof(body), "%s\n", reason[0] ? reason : "ok");
        respond(c, reason[0] ? 503 : 200, reason[0] ? "Service Unavailable" : "OK",
                path[1] == 'h' ? "application/json" : "text/plain", body, (size_t)len, head,
                close_after);
        return;
    }
    if (strcmp(path, "/livez") == 0) {
        respond(c, 200, "OK", "text/plain", "ok\n", 3, head, close_after);
        return;
    }
    respond(c, 404, "Not Found", "text/plain", "not found: /metrics, /health, /readyz, /livez\n",
            46, head, close_after);
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
        respond(c, 405, "Method Not Allowed", "text/plain", "GET or HEAD only\n", 17, false, !keep);
    else
        serve(c, p->method == HTTP_HEAD, keep);
    c->idle_at = uv_now(c->m->o.loop);
    return 0;
}

static const http_parser_settings settings = {.on_message_begin = on_message_begin,
                                              .on_url = on_url,
                                              .on_message_complete = on_message_complete};

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0 || c->closing)
        return;
    size_t used = http_parser_execute(&c->parser, &settings, buf->base, (size_t)n);
    if (c->parser.http_errno != HPE_OK || used != (size_t)n) {
        if (!c->closing && c->writes == 0)
            respond(c, 400, "Bad Request", "text/plain", "malformed request\n", 18, false, true);
        else
            conn_close(c);
        uv_read_stop(s);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct keel_metrics *m = server->data;
    if (status != 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->m = m;
    uv_tcp_init(m->o.loop, &c->tcp);
    c->tcp.data = c;
    c->next = m->conns.next;
    c->prev = &m->conns;
    m->conns.next->prev = c;
    m->conns.next = c;
    m->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || m->n_conns > KEEL_METRICS_MAX_CONNS) {
        conn_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->idle_at = uv_now(m->o.loop);
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        conn_close(c);
}

static void sweep(uv_timer_t *t)
{
    struct keel_metrics *m = t->data;
    uint64_t now = uv_now(m->o.loop);
    for (struct conn *c = m->conns.next; c != &m->conns; c = c->next)
        if (c->writes == 0 && now - c->idle_at > KEEL_METRICS_IDLE_MS)
            conn_close(c);
}

int keel_metrics_new(const struct keel_metrics_options *o, struct keel_metrics **out)
{
    char host[KEEL_ADDR_MAX];
    int port;
    struct sockaddr_in sa;
    if (keel_addr_split(o->listen, host, sizeof(host), &port) != 0 ||
        uv_ip4_addr(host, port, &sa) != 0) {
        KLOG_ERROR("--listen-metrics %s is not a.b.c.d:port", o->listen);
        return KEEL_EIO;
    }
    struct keel_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return KEEL_ENOMEM;
    m->o = *o;
    m->conns.next = m->conns.prev = &m->conns;
    m->started = (double)time(NULL);
    uv_tcp_init(o->loop, &m->listener);
    m->listener.data = m;
    uv_timer_init(o->loop, &m->sweep);
    m->sweep.data = m;
    m->handles = 2;
    int rv = uv_tcp_bind(&m->listener, (const struct sockaddr *)&sa, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&m->listener, 64, on_connection);
    *out = m; /* closed by keel_metrics_stop either way */
    if (rv != 0) {
        KLOG_ERROR("cannot listen for metrics on %s: %s", o->listen, uv_strerror(rv));
        return KEEL_EIO;
    }
    uv_timer_start(&m->sweep, sweep, 1000, 1000);
    KLOG_INFO("serving /metrics, /health, /readyz and /livez on %s", o->listen);
    return 0;
}

void keel_metrics_stop(struct keel_metrics *m)
{
    if (m == NULL || m->handles == 0)
        return;
    m->handles = 0;
    uv_close((uv_handle_t *)&m->listener, NULL);
    uv_close((uv_handle_t *)&m->sweep, NULL);
    for (struct conn *c = m->conns.next; c != &m->conns; c = c->next)
        conn_close(c);
}

void keel_metrics_free(struct keel_metrics *m)
{
    free(m);
}
