/*
 * The metrics and health listener (--listen-metrics [http[s]://]HOST:PORT): HTTP/1.1 (over TLS
 * with the client port's context when the address is https://) on the member's loop,
 * parsed with http-parser (as keel-gateway's JSON side), serving
 *   GET /metrics  Prometheus text exposition format 0.0.4: keel's series (etcd's names where
 *                 the concept matches, with a keel_ prefix) and the process's;
 *   GET /health   200 {"health":"true","reason":""} when this member knows a leader and no
 *                 NOSPACE alarm is raised, else 503 with etcd's reason ("RAFT NO LEADER",
 *                 "ALARM NOSPACE"), as etcd's /health;
 *   GET /readyz   200 "ok" when this member knows a leader (it can serve), else 503;
 *   GET /livez    200 "ok" while the loop turns.
 * Anything else: 404. The HTTP side, its bounds and the text format are expose.h's (shared with
 * keel-gateway's /metrics).
 *
 * What is reported comes from the collect callback, called on the loop for each request:
 * gauges and counters as values, histograms as pointers to what the modules record
 * (histo.h; the storage writer records on its own thread).
 */
#ifndef KEEL_METRICS_H
#define KEEL_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "histo.h"

#define KEEL_METRICS_MAX_HISTOS 160 /* histogram label sets in one sample */

/* One histogram's label set to report. The first of a name carries its HELP: keep a name's
 * label sets together. */
struct keel_metrics_histo {
    const char *name, *help; /* static strings */
    char labels[160];        /* "" or `a="x",b="y"` */
    const struct keel_histo *h;
};

/* One look at the member, filled by the collect callback. */
struct keel_metrics_sample {
    bool has_leader, is_leader;
    uint64_t leader_changes; /* leaders seen since start (this member's view) */
    uint64_t term, last_index, commit_index;
    uint64_t applied_index, durable_index; /* the store's (readers see; on disk) */
    int64_t revision, compact_revision;
    uint64_t db_size, logical_size, quota_bytes, keys;
    bool nospace;
    uint64_t watchers;
    uint64_t proposal_backlog_bytes; /* writes taken and not yet applied here */
    uint64_t voters, learners;
    uint64_t proposals_failed;               /* propose.h's keel_propose_failed */
    uint64_t connections, requests_inflight; /* client sessions, requests in flight */
    uint64_t watch_streams, slow_watchers;   /* connections with watchers; unsynced ones */
    uint64_t snapshots;                      /* raft snapshots taken and stored */
    uint64_t fetches_ok, fetches_failed;     /* checkpoint fetch attempts */
    uint64_t leases, leases_granted, leases_revoked, leases_expired; /* lessor.h's stat */
    struct keel_metrics_histo histos[KEEL_METRICS_MAX_HISTOS];
    size_t n_histos;
};

/* Append a histogram to s: labels "" or `a="x",b="y"` (copied, cut to fit); past
 * KEEL_METRICS_MAX_HISTOS it is left out. For the collect callback. */
void keel_metrics_add_histo(struct keel_metrics_sample *s, const char *name, const char *help,
                            const struct keel_histo *h, const char *labels);

struct keel_tls_ctx;

struct keel_metrics_options {
    uv_loop_t *loop;
    const char *listen; /* "a.b.c.d:port" */
    /* NULL: plain HTTP; else served over TLS with this server context (expose.h; borrowed, it
     * must outlive keel_metrics_free) */
    struct keel_tls_ctx *tls;
    const char *name, *zone, *version;
    void (*collect)(void *data, struct keel_metrics_sample *out);
    void *data;
};

struct keel_metrics;

/* Listen on o->listen. 0, KEEL_ENOMEM, or KEEL_EIO (the address could not be bound; logged).
 * The strings o points to must outlive it. */
int keel_metrics_new(const struct keel_metrics_options *o, struct keel_metrics **out);

/* Stop listening and close every connection (the handles close before the loop ends). NULL is
 * fine. */
void keel_metrics_stop(struct keel_metrics *m);

/* After the loop ended. NULL is fine. */
void keel_metrics_free(struct keel_metrics *m);

#endif
