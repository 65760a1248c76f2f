/*
 * keel-gateway: etcd's v3 API in front of a keel cluster.
 *
 *   keel-gateway --listen HOST:PORT --endpoints A,B,C [--zone Z] [--advertise-client-urls U,...]
 *                [--request-timeout-ms MS] [--max-request-bytes N] [--log-level L]
 *                [--listen-metrics [http[s]://]HOST:PORT]
 *                [--cert-file F --key-file F [--trusted-ca-file F --client-cert-auth]]
 *
 * One process, one libuv loop: the listener (gRPC and JSON on one port) and libkeel's client
 * share it. The gateway keeps no state of its own: several may run behind a load balancer.
 * SIGINT/SIGTERM: stop accepting, send GOAWAY, let calls in flight finish, exit 0.
 * SIGHUP: read the TLS files again (new connections use them, on --listen and an https://
 * --listen-metrics alike).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/keel.h>

#include "conn.h"
#include "gwmetrics.h"
#include "log.h"
#include "tls.h"

#define DEFAULT_LISTEN            "127.0.0.1:23790"
#define DEFAULT_MAX_REQUEST_BYTES (1536 * 1024) /* etcd's --max-request-bytes */

struct gateway {
    uv_loop_t loop;
    struct gw_ctx ctx;
    struct gw_server *srv;
    struct gw_metrics *metrics;       /* NULL without --listen-metrics */
    struct keel_tls_ctx *metrics_tls; /* an https:// --listen-metrics's; NULL: plain HTTP */
    uv_signal_t sigint, sigterm, sighup;
    bool stopping;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keel-gateway [options]\n"
            "  --listen HOST:PORT              where etcd clients connect (default %s);\n"
            "                                  gRPC (HTTP/2) and JSON (HTTP/1.1) on one port\n"
            "  --endpoints A,B,C               keel members' client addresses (default %s)\n"
            "  --zone Z                        prefer members of zone Z for serializable reads\n"
            "  --advertise-client-urls U,...   what MemberList tells etcd clients to dial\n"
            "                                  (default http://<listen>)\n"
            "  --request-timeout-ms MS         keel request deadline when the client sets none\n"
            "                                  (default %d)\n"
            "  --max-request-bytes N           largest request message (default %d)\n"
            "  --log-level debug|info|warn|error (default info)\n"
            "  --listen-metrics URL            serve /metrics (Prometheus text), /health, /readyz\n"
            "                                  and /livez there (default: not served);\n"
            "                                  HOST:PORT or http://HOST:PORT: plain HTTP,\n"
            "                                  https://HOST:PORT: TLS with the --cert-file,\n"
            "                                  --key-file, --trusted-ca-file and\n"
            "                                  --client-cert-auth below\n"
            "  --cert-file FILE                TLS on --listen: this certificate (PEM, with any\n"
            "                                  intermediates); ALPN h2 (gRPC) and http/1.1 (JSON)\n"
            "  --key-file FILE                 its private key (PEM); with --cert-file\n"
            "  --trusted-ca-file FILE          the CAs client certificates must chain to\n"
            "  --client-cert-auth              require a client certificate of those CAs\n"
            "                                  (SIGHUP reads the TLS files again)\n"
            "  --upstream-cacert FILE          TLS to keel's members (their client port's\n"
            "                                  --cert-file): the CA their certificates chain to;\n"
            "                                  TLS is on with any of these upstream flags or an\n"
            "                                  https:// endpoint (the prefix keeps these apart\n"
            "                                  from the listener's flags above)\n"
            "  --upstream-cert FILE            this gateway's client certificate (PEM), for\n"
            "                                  members started with --client-cert-auth\n"
            "  --upstream-key FILE             its private key (PEM)\n"
            "  --upstream-insecure-skip-tls-verify\n"
            "                                  TLS to the members without checking their\n"
            "                                  certificates (tests only)\n"
            "  --version, --help\n",
            DEFAULT_LISTEN, KEEL_DEFAULT_ENDPOINT, KEEL_DEFAULT_REQUEST_TIMEOUT_MS,
            DEFAULT_MAX_REQUEST_BYTES);
}

/* "host:port" -> host (copied into buf) and port; -1 when it does not parse. */
static int split_host_port(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
        return -1;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 1 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return 0;
}

/* Split a comma-separated list into a NULL-terminated, malloc'd array; its count in *n. */
static char **split_list(const char *s, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    char **v = calloc(cap + 1, sizeof(*v));
    if (!v)
        return NULL;
    *n = 0;
    const char *start = s;
    for (;;) {
        const char *comma = strchr(start, ',');
        size_t len = comma ? (size_t)(comma - start) : strlen(start);
        if (len > 0 && !(v[(*n)++] = strndup(start, len)))
            return NULL;
        if (!comma)
            break;
        start = comma + 1;
    }
    return v;
}

static void free_list(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static void on_client_closed(void *data)
{
    (void)data;
}

static void on_server_stopped(void *data)
{
    struct gateway *g = data;
    g->srv = NULL;
    uv_close((uv_handle_t *)&g->sigint, NULL);
    uv_close((uv_handle_t *)&g->sigterm, NULL);
    uv_close((uv_handle_t *)&g->sighup, NULL);
    keel_aclient_close(g->ctx.ac, on_client_closed, g);
}

/* The server stopped before the signal handlers existed (a start that failed half-way). */
static void on_server_stopped_early(void *data)
{
    struct gateway *g = data;
    g->srv = NULL;
    keel_aclient_close(g->ctx.ac, on_client_closed, g);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct gateway *g = h->data;
    if (g->stopping)
        return;
    g->stopping = true;
    KLOG_INFO("signal %d: stopping (GOAWAY, draining calls in flight)", signum);
    gw_metrics_stop(g->metrics);
    gw_server_stop(g->srv, on_server_stopped, g);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    struct gateway *g = h->data;
    (void)signum;
    if (g->ctx.tls == NULL)
        return;
    char err[600];
    if (keel_tls_ctx_reload(g->ctx.tls, err, sizeof(err)) != 0)
        KLOG_ERROR("TLS: reload failed, keeping the certificates in use: %s", err);
    else
        KLOG_INFO("TLS: certificates reloaded; new connections use them");
    if (g->metrics_tls != NULL && keel_tls_ctx_reload(g->metrics_tls, err, sizeof(err)) != 0)
        KLOG_ERROR("TLS: --listen-metrics reload failed, keeping the certificates in use: %s", err);
    else if (g->metrics_tls != NULL)
        KLOG_INFO("TLS: --listen-metrics certificates reloaded");
}

/* The listener's TLS context from the flags; 0 (*out NULL without --cert-file) or 2 after
 * saying what is wrong. */
static int make_tls(const char *cert, const char *key, const char *ca, bool client_auth,
                    const char *alpn, struct keel_tls_ctx **out)
{
    *out = NULL;
    if (cert == NULL && key == NULL && ca == NULL && !client_auth)
        return 0;
    if (cert == NULL || key == NULL) {
        fprintf(stderr, "keel-gateway: --cert-file and --key-file go together, and "
                        "--trusted-ca-file and --client-cert-auth need them\n");
        return 2;
    }
    if (client_auth && ca == NULL) {
        fprintf(stderr, "keel-gateway: --client-cert-auth needs --trusted-ca-file\n");
        return 2;
    }
    /* etcd: --trusted-ca-file without --client-cert-auth verifies a certificate a client
     * shows but does not ask for one; tls.h's server verifies only when it asks, so the CA
     * file matters here only with --client-cert-auth. */
    struct keel_tls_options o = {.role = KEEL_TLS_SERVER,
                                 .cert_file = cert,
                                 .key_file = key,
                                 .ca_file = client_auth ? ca : NULL,
                                 .verify_peer = client_auth,
                                 .alpn = alpn};
    char err[600];
    if (keel_tls_ctx_new(&o, out, err, sizeof(err)) != 0) {
        fprintf(stderr, "keel-gateway: %s\n", err);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen_addr = DEFAULT_LISTEN, *endpoints = NULL, *zone = "", *advertise = NULL;
    const char *listen_metrics = NULL;
    const char *cert_file = NULL, *key_file = NULL, *ca_file = NULL;
    bool client_auth = false;
    const char *up_ca = NULL, *up_cert = NULL, *up_key = NULL;
    bool up_insecure = false;
    long timeout_ms = KEEL_DEFAULT_REQUEST_TIMEOUT_MS, max_request = DEFAULT_MAX_REQUEST_BYTES;
    int level = KEEL_LOG_INFO;
    enum {
        O_LISTEN = 256,
        O_ENDPOINTS,
        O_ZONE,
        O_ADVERTISE,
        O_TIMEOUT,
        O_MAXREQ,
        O_LOG,
        O_VER,
        O_METRICS,
        O_CERT,
        O_KEY,
        O_CA,
        O_CLIENT_AUTH,
        O_UP_CA,
        O_UP_CERT,
        O_UP_KEY,
        O_UP_INSECURE
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"endpoints", required_argument, NULL, O_ENDPOINTS},
        {"zone", required_argument, NULL, O_ZONE},
        {"advertise-client-urls", required_argument, NULL, O_ADVERTISE},
        {"request-timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"max-request-bytes", required_argument, NULL, O_MAXREQ},
        {"log-level", required_argument, NULL, O_LOG},
        {"listen-metrics", required_argument, NULL, O_METRICS},
        {"cert-file", required_argument, NULL, O_CERT},
        {"key-file", required_argument, NULL, O_KEY},
        {"trusted-ca-file", required_argument, NULL, O_CA},
        {"client-cert-auth", no_argument, NULL, O_CLIENT_AUTH},
        {"upstream-cacert", required_argument, NULL, O_UP_CA},
        {"upstream-cert", required_argument, NULL, O_UP_CERT},
        {"upstream-key", required_argument, NULL, O_UP_KEY},
        {"upstream-insecure-skip-tls-verify", no_argument, NULL, O_UP_INSECURE},
        {"version", no_argument, NULL, O_VER},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (o) {
        case O_LISTEN:
            listen_addr = optarg;
            break;
        case O_ENDPOINTS:
            endpoints = optarg;
            break;
        case O_ZONE:
            zone = optarg;
            break;
        case O_ADVERTISE:
            advertise = optarg;
            break;
        case O_TIMEOUT:
        case O_MAXREQ: {
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || *end || v < 1 || v > (o == O_TIMEOUT ? 3600000L : 64L << 20)) {
                fprintf(stderr, "keel-gateway: --%s: '%s' is not a number in range\n",
                        o == O_TIMEOUT ? "request-timeout-ms" : "max-request-bytes", optarg);
                return 2;
            }
            *(o == O_TIMEOUT ? &timeout_ms : &max_request) = v;
            break;
        }
        case O_LOG:
            if ((level = keel_log_parse_level(optarg)) < 0) {
                fprintf(stderr, "keel-gateway: --log-level: '%s' is not debug|info|warn|error\n",
                        optarg);
                return 2;
            }
            break;
        case O_METRICS:
            listen_metrics = optarg;
            break;
        case O_CERT:
            cert_file = optarg;
            break;
        case O_KEY:
            key_file = optarg;
            break;
        case O_CA:
            ca_file = optarg;
            break;
        case O_CLIENT_AUTH:
            client_auth = true;
            break;
        case O_UP_CA:
            up_ca = optarg;
            break;
        case O_UP_CERT:
            up_cert = optarg;
            break;
        case O_UP_KEY:
            up_key = optarg;
            break;
        case O_UP_INSECURE:
            up_insecure = true;
            break;
        case O_VER:
            printf("keel-gateway %s\n", KEEL_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "keel-gateway: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if ((up_cert == NULL) != (up_key == NULL)) {
        fprintf(stderr, "keel-gateway: --upstream-cert and --upstream-key go together\n");
        return 2;
    }
    char host[64];
    int port;
    if (split_host_port(listen_addr, host, sizeof(host), &port) != 0) {
        fprintf(stderr, "keel-gateway: --listen: '%s' is not HOST:PORT\n", listen_addr);
        return 2;
    }
    struct keel_tls_ctx *tls;
    int trc = make_tls(cert_file, key_file, ca_file, client_auth, "h2,http/1.1", &tls);
    if (trc != 0)
        return trc;
    /* etcd's --listen-metrics-urls: the scheme says whether it is TLS, with the listener's
     * files. A context of its own: the listener's offers h2, which /metrics does not speak. */
    struct keel_tls_ctx *metrics_tls = NULL;
    if (listen_metrics != NULL && strncmp(listen_metrics, "https://", 8) == 0) {
        listen_metrics += 8;
        if (tls == NULL) {
            fprintf(stderr,
                    "keel-gateway: --listen-metrics https://%s needs --cert-file and "
                    "--key-file: it is served with the listener's certificate\n",
                    listen_metrics);
            return 2;
        }
        if ((trc = make_tls(cert_file, key_file, ca_file, client_auth, "http/1.1", &metrics_tls)) !=
            0) {
            keel_tls_ctx_free(tls);
            return trc;
        }
    } else if (listen_metrics != NULL && strncmp(listen_metrics, "http://", 7) == 0) {
        listen_metrics += 7;
    }
    char mhost[64];
    int mport;
    if (listen_metrics != NULL &&
        split_host_port(listen_metrics, mhost, sizeof(mhost), &mport) != 0) {
        fprintf(stderr, "keel-gateway: --listen-metrics: '%s' is not [http[s]://]HOST:PORT\n",
                listen_metrics);
        keel_tls_ctx_free(tls);
        keel_tls_ctx_free(metrics_tls);
        return 2;
    }
    keel_log_setup((enum keel_log_level)level, "gateway");
    signal(SIGPIPE, SIG_IGN);

    struct gateway g = {0};
    g.ctx.tls = tls;
    g.metrics_tls = metrics_tls;
    char default_url[96];
    snprintf(default_url, sizeof(default_url), "%s://%s", tls ? "https" : "http", listen_addr);
    g.ctx.advertise_urls = split_list(advertise ? advertise : default_url, &g.ctx.n_advertise_urls);
    if (!g.ctx.advertise_urls || g.ctx.n_advertise_urls == 0) {
        fprintf(stderr, "keel-gateway: --advertise-client-urls: no URL given\n");
        free_list(g.ctx.advertise_urls);
        keel_tls_ctx_free(tls);
        keel_tls_ctx_free(metrics_tls);
        return 2;
    }
    g.ctx.zone = zone;
    g.ctx.endpoints = endpoints && endpoints[0] ? endpoints : KEEL_DEFAULT_ENDPOINT;
    g.ctx.request_timeout_ms = (uint32_t)timeout_ms;
    g.ctx.upstream_ca = up_ca;
    g.ctx.upstream_cert = up_cert;
    g.ctx.upstream_key = up_key;
    g.ctx.upstream_insecure = up_insecure;
    g.ctx.max_request_bytes = (size_t)max_request;
    uv_loop_init(&g.loop);
    g.ctx.loop = &g.loop;

    struct keel_options ko = {.endpoints = endpoints,
                              .zone = zone,
                              .client_name = "keel-gateway",
                              .request_timeout_ms = (uint32_t)timeout_ms,
                              .ca_file = up_ca,
                              .cert_file = up_cert,
                              .key_file = up_key,
                              .insecure_skip_verify = up_insecure};
    int rc = keel_aclient_init(&g.ctx.ac, &g.loop, &ko);
    if (rc != 0) {
        char why[320];
        fprintf(stderr, "keel-gateway: --endpoints: %s\n",
                keel_endpoints_check(endpoints, why, sizeof(why)) != 0 ? why : keel_strerror(rc));
        free_list(g.ctx.advertise_urls);
        keel_tls_ctx_free(tls);
        keel_tls_ctx_free(metrics_tls);
        uv_loop_close(&g.loop);
        return 2;
    }
    rc = gw_server_start(&g.srv, &g.ctx, host, port);
    if (rc != 0) {
        fprintf(stderr, "keel-gateway: listen on %s: %s\n", listen_addr, uv_strerror(rc));
        keel_aclient_close(g.ctx.ac, NULL, NULL);
        uv_run(&g.loop, UV_RUN_DEFAULT);
        uv_loop_close(&g.loop);
        free_list(g.ctx.advertise_urls);
        keel_tls_ctx_free(tls);
        keel_tls_ctx_free(metrics_tls);
        return 1;
    }
    if (listen_metrics != NULL) {
        g.ctx.metrics = NULL;
        if (gw_metrics_new(&g.loop, listen_metrics, metrics_tls, g.srv, &g.metrics) != 0) {
            fprintf(stderr, "keel-gateway: --listen-metrics: cannot serve on '%s'\n",
                    listen_metrics);
            gw_metrics_stop(g.metrics);
            g.stopping = true;
            gw_server_stop(g.srv, on_server_stopped_early, &g);
            uv_run(&g.loop, UV_RUN_DEFAULT);
            uv_loop_close(&g.loop);
            gw_metrics_free(g.metrics);
            free_list(g.ctx.advertise_urls);
            keel_tls_ctx_free(tls);
            keel_tls_ctx_free(metrics_tls);
            return 2;
        }
        g.ctx.metrics = g.metrics;
    }
    uv_signal_init(&g.loop, &g.sigint);
    uv_signal_init(&g.loop, &g.sigterm);
    g.sigint.data = g.sigterm.data = &g;
    uv_signal_start(&g.sigint, on_signal, SIGINT);
    uv_signal_start(&g.sigterm, on_signal, SIGTERM);
    uv_signal_init(&g.loop, &g.sighup);
    g.sighup.data = &g;
    uv_signal_start(&g.sighup, on_sighup, SIGHUP);
    KLOG_INFO("keel-gateway %s serving etcd's v3 API (gRPC and JSON) on %s%s%s for keel at %s",
              KEEL_VERSION, listen_addr, tls ? " with TLS" : "",
              tls && client_auth ? " and client certificates" : "",
              endpoints ? endpoints : KEEL_DEFAULT_ENDPOINT);

    uv_run(&g.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&g.loop);
    if (rc != 0)
        KLOG_WARN("loop closed with handles still open: %s", uv_strerror(rc));
    free_list(g.ctx.advertise_urls);
    gw_metrics_free(g.metrics);
    keel_tls_ctx_free(tls);
    keel_tls_ctx_free(metrics_tls);
    KLOG_INFO("stopped");
    return 0;
}
