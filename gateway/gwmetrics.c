/* keel-gateway's /metrics (see gwmetrics.h). */
#include "gwmetrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "expose.h"
#include "histo.h"
#include "log.h"
#include "methods.h"

#define CODES 17 /* gRPC codes 0..16 */

/* One method's counts. */
struct slot {
    const struct gw_method *m;
    uint64_t finished[CODES];
    struct keel_histo seconds;
};

struct gw_metrics {
    struct keel_expose *http;
    struct gw_server *srv;
    double started;
    struct slot *slots; /* gw_method_count() of them, in gw_method_at order */
    size_t n_slots;
    uint64_t in_flight, watches;
};

static const char *code_name(int code)
{
    static const char *names[CODES] = {
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    };
    return code >= 0 && code < CODES ? names[code] : "Unknown";
}

static bool is_watch(const struct gw_method *m)
{
    return m->grpc_path != NULL && strcmp(m->grpc_path, "/etcdserverpb.Watch/Watch") == 0;
}

/* "/etcdserverpb.KV/Range" -> `grpc_service="etcdserverpb.KV",grpc_method="Range"`; a method
 * served over JSON only is named by its JSON path. */
static void method_labels(const struct gw_method *m, char *out, size_t len)
{
    if (m->grpc_path == NULL) {
        snprintf(out, len, "grpc_service=\"\",grpc_method=\"%s\"",
                 m->json_path ? m->json_path : "");
        return;
    }
    const char *path = m->grpc_path + (m->grpc_path[0] == '/');
    const char *slash = strchr(path, '/');
    if (slash == NULL)
        snprintf(out, len, "grpc_service=\"\",grpc_method=\"%s\"", path);
    else
        snprintf(out, len, "grpc_service=\"%.*s\",grpc_method=\"%s\"", (int)(slash - path), path,
                 slash + 1);
}

static void metrics_text(struct gw_metrics *m, struct keel_expose_text *t)
{
    char labels[160];
    keel_expose_add(t, "# HELP keel_gateway_requests_total Calls finished, by method and gRPC "
                       "code.\n# TYPE keel_gateway_requests_total counter\n");
    for (size_t i = 0; i < m->n_slots; i++) {
        method_labels(m->slots[i].m, labels, sizeof(labels));
        for (int code = 0; code < CODES; code++)
            if (m->slots[i].finished[code] > 0)
                keel_expose_add(t, "keel_gateway_requests_total{%s,code=\"%s\"} %llu\n", labels,
                                code_name(code), (unsigned long long)m->slots[i].finished[code]);
    }
    bool first = true;
    for (size_t i = 0; i < m->n_slots; i++) {
        struct keel_histo_read r;
        keel_histo_read(&m->slots[i].seconds, &r);
        if (r.count == 0)
            continue; /* methods never called stay out, as in keeld's */
        method_labels(m->slots[i].m, labels, sizeof(labels));
        keel_expose_histo(t, "keel_gateway_request_duration_seconds",
                          first ? "Time from a call's start to its finish, by method." : NULL,
                          labels, &m->slots[i].seconds);
        first = false;
    }
    keel_expose_series(t, "keel_gateway_connections", "gauge", "Client connections open.",
                       m->srv ? (double)gw_server_connections(m->srv) : 0);
    keel_expose_series(t, "keel_gateway_calls_in_flight", "gauge",
                       "Calls started and not finished (gRPC streams and JSON requests).",
                       (double)m->in_flight);
    keel_expose_series(t, "keel_gateway_watch_streams", "gauge", "Watch calls open.",
                       (double)m->watches);
    keel_expose_process(t, m->started);
}

static int serve(void *data, const char *path, struct keel_expose_text *body, const char **type)
{
    struct gw_metrics *m = data;
    if (strcmp(path, "/metrics") == 0) {
        *type = "text/plain; version=0.0.4; charset=utf-8";
        metrics_text(m, body);
        return 200;
    }
    if (strcmp(path, "/health") == 0 || strcmp(path, "/readyz") == 0 ||
        strcmp(path, "/livez") == 0) {
        keel_expose_add(body, "ok\n");
        return 200;
    }
    keel_expose_add(body, "not found: /metrics, /health, /readyz, /livez\n");
    return 404;
}

int gw_metrics_new(uv_loop_t *loop, const char *listen, struct keel_tls_ctx *tls,
                   struct gw_server *srv, struct gw_metrics **out)
{
    *out = NULL;
    struct gw_metrics *m = calloc(1, sizeof(*m));
    size_t n = gw_method_count();
    if (m == NULL || (m->slots = calloc(n ? n : 1, sizeof(*m->slots))) == NULL) {
        free(m);
        KLOG_ERROR("--listen-metrics: out of memory");
        return -1;
    }
    m->n_slots = n;
    for (size_t i = 0; i < n; i++) {
        m->slots[i].m = gw_method_at(i);
        keel_histo_init_exp(&m->slots[i].seconds, 0.0001, 2, 20); /* as keeld's requests */
    }
    m->srv = srv;
    m->started = (double)time(NULL);
    struct keel_expose_options eo = {.loop = loop,
                                     .listen = listen,
                                     .tls = tls,
                                     .flag = "--listen-metrics",
                                     .serve = serve,
                                     .data = m};
    int rv = keel_expose_new(&eo, &m->http);
    *out = m;
    if (rv != 0)
        return -1;
    KLOG_INFO("serving /metrics on %s://%s", tls != NULL ? "https" : "http", listen);
    return 0;
}

void gw_metrics_stop(struct gw_metrics *m)
{
    if (m == NULL)
        return;
    m->srv = NULL;
    keel_expose_stop(m->http);
}

void gw_metrics_free(struct gw_metrics *m)
{
    if (m == NULL)
        return;
    keel_expose_free(m->http);
    free(m->slots);
    free(m);
}

void gw_metrics_begin(struct gw_call *c)
{
    struct gw_metrics *m = c->ctx ? c->ctx->metrics : NULL;
    if (m == NULL || c->method == NULL || c->metrics_slot != 0)
        return;
    for (size_t i = 0; i < m->n_slots; i++) {
        if (m->slots[i].m != c->method)
            continue;
        c->metrics_slot = (unsigned)i + 1;
        c->metrics_began_ns = keel_histo_now_ns();
        m->in_flight++;
        m->watches += is_watch(c->method);
        return;
    }
}

void gw_metrics_end(struct gw_call *c, enum gw_code code)
{
    struct gw_metrics *m = c->ctx ? c->ctx->metrics : NULL;
    if (m == NULL || c->metrics_slot == 0)
        return;
    struct slot *s = &m->slots[c->metrics_slot - 1];
    c->metrics_slot = 0;
    s->finished[(int)code >= 0 && (int)code < CODES ? (int)code : GW_UNKNOWN]++;
    keel_histo_observe_ns(&s->seconds, keel_histo_now_ns() - c->metrics_began_ns);
    m->in_flight--;
    m->watches -= is_watch(c->method);
}
