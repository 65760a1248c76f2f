/*
 * Prometheus exposition over a small HTTP/1.1 listener, shared by keeld's --listen-metrics
 * (metrics.c adds /health, /readyz and /livez) and keel-gateway's. It does the HTTP
 * (http-parser, keep-alive as the client asks, GET and HEAD only) and the text format
 * (version 0.0.4); what each path answers comes from the serve callback, on the loop.
 *
 * Bounds: at most KEEL_EXPOSE_MAX_CONNS connections (more are closed at once); a request's path
 * at most 256 bytes (414), its headers at most http-parser's limit (80 KiB); a connection that
 * has not completed a request in KEEL_EXPOSE_IDLE_MS is closed. A method other than GET or HEAD
 * gets 405, a malformed request 400 and the connection closed. Requests a client pipelines are
 * answered one at a time: the socket is not read while an answer is being written, so a
 * connection holds at most one read (4 KiB) and one answer. Nothing a client sends makes the
 * process hold more than that per connection.
 *
 * With a TLS context (etcd's --listen-metrics-urls https://...) the same HTTP goes through
 * tls/tls.h's codec on the loop: the handshake as the context says (a client certificate
 * required with --client-cert-auth); a client that fails it gets OpenSSL's alert and the
 * connection is closed. The context's certificates reload as its owner reloads them.
 */
#ifndef KEEL_EXPOSE_H
#define KEEL_EXPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "histo.h"

#define KEEL_EXPOSE_MAX_CONNS 64
#define KEEL_EXPOSE_IDLE_MS   10000

/* A growing text buffer. Zero it to start; a failed allocation leaves it marked failed (its text
 * cut); keel_expose_text_free after use. */
struct keel_expose_text {
    char *p;
    size_t len, cap;
    bool failed;
};

void keel_expose_add(struct keel_expose_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void keel_expose_text_free(struct keel_expose_text *t);

/* One unlabelled series with its HELP and TYPE ("counter" or "gauge") lines. */
void keel_expose_series(struct keel_expose_text *t, const char *name, const char *type,
                        const char *help, double value);

/*
 * One histogram as name_bucket{labels,le="..."} (cumulative, +Inf last), name_sum{labels} and
 * name_count{labels}; labels is "" or `a="x",b="y"` (the caller escapes values). With help
 * non-NULL the HELP and TYPE lines come first: pass it for the first label set of a name only.
 */
void keel_expose_histo(struct keel_expose_text *t, const char *name, const char *help,
                       const char *labels, const struct keel_histo *h);

/* The process's series as Prometheus' clients name them: CPU seconds, resident bytes, open
 * descriptors, and started (its start time, seconds since the epoch). */
void keel_expose_process(struct keel_expose_text *t, double started);

/* What a path answers: fill body, set *type (its Content-Type), return the HTTP status (200,
 * 404, 503, ...). Called on the loop for each GET or HEAD; path has no query string. */
typedef int (*keel_expose_serve_cb)(void *data, const char *path, struct keel_expose_text *body,
                                    const char **type);

struct keel_tls_ctx;

struct keel_expose_options {
    uv_loop_t *loop;
    const char *listen; /* "a.b.c.d:port" */
    /* NULL: plain HTTP; else HTTPS with this server context (borrowed: it must outlive every
     * connection, i.e. be freed after keel_expose_free). Its ALPN, if any, must offer
     * http/1.1 only. */
    struct keel_tls_ctx *tls;
    const char *flag; /* named in errors, e.g. "--listen-metrics" */
    keel_expose_serve_cb serve;
    void *data;
};

struct keel_expose;

/* Listen on o->listen. 0, or -1 after logging why (the address does not parse or cannot be
 * bound; *out is then still set and must be stopped and freed), or -2 out of memory (*out
 * NULL). The strings o points to and o->data must outlive it. */
int keel_expose_new(const struct keel_expose_options *o, struct keel_expose **out);

/* Stop listening and close every connection (the handles close before the loop ends). NULL is
 * fine. */
void keel_expose_stop(struct keel_expose *e);

/* After the loop ended (or before it ran, after stop). NULL is fine. */
void keel_expose_free(struct keel_expose *e);

#endif
