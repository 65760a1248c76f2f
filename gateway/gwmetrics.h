/*
 * keel-gateway's own /metrics (--listen-metrics [http[s]://]HOST:PORT), served by server/expose.c
 * as keeld's is: keel_gateway_requests_total{grpc_service,grpc_method,code}  calls finished, by
 * gRPC code keel_gateway_request_duration_seconds{grpc_service,grpc_method}  from the call's start
 *       (its method known) to its finish: a unary call's keel round trip, a stream's whole life
 *   keel_gateway_connections  client connections open (gRPC and JSON)
 *   keel_gateway_calls_in_flight  calls started and not finished (a gRPC stream or a JSON
 *       request each)
 *   keel_gateway_watch_streams  Watch calls open
 * and the process's series. /health, /readyz and /livez answer 200 "ok" while the loop turns
 * (the gateway keeps no state whose health it could judge). Everything is on the loop.
 *
 * The transports count each call: gw_metrics_begin once its method is known, gw_metrics_end
 * when it finishes (and, to be safe, when it is freed: a second end does nothing).
 */
#ifndef KEEL_GW_METRICS_H
#define KEEL_GW_METRICS_H

#include <uv.h>

#include "call.h"

struct gw_metrics;
struct gw_server;

struct keel_tls_ctx;

/* Listen on listen ("a.b.c.d:port"; it must outlive m), over TLS with tls when not NULL (a server
 * context offering http/1.1 or no ALPN; borrowed, freed after m). srv is the gateway's listener,
 * read for its connections at each scrape until gw_metrics_stop. 0, or -1 after logging why. */
int gw_metrics_new(uv_loop_t *loop, const char *listen, struct keel_tls_ctx *tls,
                   struct gw_server *srv, struct gw_metrics **out);

/* Stop serving (before srv goes away). NULL is fine. */
void gw_metrics_stop(struct gw_metrics *m);

/* After the loop ended. NULL is fine. */
void gw_metrics_free(struct gw_metrics *m);

/* c's method is known (c->method, c->ctx set): count it in flight from now. Nothing without
 * c->ctx->metrics. */
void gw_metrics_begin(struct gw_call *c);

/* c finished with code: counted, timed, out of flight. Only the first end of a begun call
 * counts. */
void gw_metrics_end(struct gw_call *c, enum gw_code code);

#endif
