/* The metrics and health listener (see metrics.h). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "expose.h"
#include "log.h"

struct keel_metrics {
    struct keel_metrics_options o;
    struct keel_expose *http;
    double started; /* wall-clock seconds at start */
};

void keel_metrics_add_histo(struct keel_metrics_sample *s, const char *name, const char *help,
                            const struct keel_histo *h, const char *labels)
{
    if (s->n_histos >= KEEL_METRICS_MAX_HISTOS)
        return;
    struct keel_metrics_histo *mh = &s->histos[s->n_histos++];
    mh->name = name;
    mh->help = help;
    mh->h = h;
    snprintf(mh->labels, sizeof(mh->labels), "%s", labels);
}

static void metrics_text(struct keel_metrics *m, struct keel_expose_text *t)
{
    struct keel_metrics_sample *sp = calloc(1, sizeof(*sp));
    if (sp == NULL) {
        t->failed = true;
        return;
    }
    m->o.collect(m->o.data, sp);
    keel_expose_add(t,
                    "# HELP keel_server_info This member: name, zone and version.\n"
                    "# TYPE keel_server_info gauge\n"
                    "keel_server_info{name=\"%s\",zone=\"%s\",version=\"%s\"} 1\n",
                    m->o.name, m->o.zone, m->o.version);
    keel_expose_series(t, "keel_server_has_leader", "gauge", "Whether this member knows a leader.",
                       sp->has_leader);
    keel_expose_series(t, "keel_server_is_leader", "gauge", "Whether this member is the leader.",
                       sp->is_leader);
    keel_expose_series(t, "keel_server_leader_changes_seen_total", "counter",
                       "Leaders this member has seen since it started.",
                       (double)sp->leader_changes);
    keel_expose_series(t, "keel_server_proposals_committed_total", "counter",
                       "The raft commit index as this member knows it.", (double)sp->commit_index);
    keel_expose_series(t, "keel_server_proposals_applied_total", "counter",
                       "The raft index of the last entry the store applied (what readers see).",
                       (double)sp->applied_index);
    keel_expose_series(t, "keel_server_proposals_pending", "gauge",
                       "Bytes of writes taken by this member and not yet applied.",
                       (double)sp->proposal_backlog_bytes);
    keel_expose_series(t, "keel_raft_term", "gauge", "The current raft term.", (double)sp->term);
    keel_expose_series(t, "keel_raft_last_index", "gauge",
                       "The index of the last entry in the raft log.", (double)sp->last_index);
    keel_expose_series(t, "keel_storage_durable_index", "gauge",
                       "The raft index of the last entry the store has synced to disk.",
                       (double)sp->durable_index);
    keel_expose_series(t, "keel_mvcc_db_total_size_in_bytes", "gauge",
                       "Bytes of the store's data file in use.", (double)sp->db_size);
    keel_expose_series(t, "keel_mvcc_db_total_size_in_use_in_bytes", "gauge",
                       "Logical bytes of the store, what the quota is checked against.",
                       (double)sp->logical_size);
    keel_expose_series(t, "keel_server_quota_backend_bytes", "gauge", "The cluster's quota.",
                       (double)sp->quota_bytes);
    keel_expose_series(t, "keel_mvcc_keys_total", "gauge", "Live keys at the current revision.",
                       (double)sp->keys);
    keel_expose_series(t, "keel_mvcc_current_revision", "gauge", "The current revision.",
                       (double)sp->revision);
    keel_expose_series(t, "keel_mvcc_compact_revision", "gauge",
                       "Revisions below this are compacted.", (double)sp->compact_revision);
    keel_expose_series(t, "keel_server_alarm_nospace", "gauge",
                       "Whether the NOSPACE alarm is raised.", sp->nospace);
    keel_expose_series(t, "keel_watch_watchers", "gauge", "Watchers on this member.",
                       (double)sp->watchers);
    keel_expose_add(t,
                    "# HELP keel_cluster_members Members of the raft configuration, by role.\n"
                    "# TYPE keel_cluster_members gauge\n"
                    "keel_cluster_members{role=\"voter\"} %llu\n"
                    "keel_cluster_members{role=\"learner\"} %llu\n",
                    (unsigned long long)sp->voters, (unsigned long long)sp->learners);
    keel_expose_series(t, "keel_server_proposals_failed_total", "counter",
                       "Writes (clients' and keeld's own) this member proposed that raft "
                       "refused, or dropped when this member lost leadership (outcome unknown).",
                       (double)sp->proposals_failed);
    keel_expose_series(t, "keel_server_client_connections", "gauge",
                       "Open client connections to this member.", (double)sp->connections);
    keel_expose_series(t, "keel_server_client_requests_inflight", "gauge",
                       "Client requests this member has taken and not yet answered.",
                       (double)sp->requests_inflight);
    keel_expose_series(t, "keel_mvcc_watch_stream_total", "gauge",
                       "Client connections holding at least one watcher on this member.",
                       (double)sp->watch_streams);
    keel_expose_series(t, "keel_mvcc_slow_watcher_total", "gauge",
                       "Watchers behind the current revision (unsynced: reading history or held "
                       "back by a slow client).",
                       (double)sp->slow_watchers);
    keel_expose_series(t, "keel_server_snapshot_total", "counter",
                       "Raft snapshots this member took and stored since it started.",
                       (double)sp->snapshots);
    keel_expose_add(t,
                    "# HELP keel_server_checkpoint_fetch_total Checkpoints this member copied from "
                    "the leader because its store was behind a raft snapshot, by outcome of each "
                    "attempt.\n"
                    "# TYPE keel_server_checkpoint_fetch_total counter\n"
                    "keel_server_checkpoint_fetch_total{result=\"ok\"} %llu\n"
                    "keel_server_checkpoint_fetch_total{result=\"failed\"} %llu\n",
                    (unsigned long long)sp->fetches_ok, (unsigned long long)sp->fetches_failed);
    keel_expose_series(t, "keel_server_lease_count", "gauge",
                       "Leases granted and not yet revoked, as applied on this member.",
                       (double)sp->leases);
    keel_expose_series(t, "keel_server_lease_expired_total", "counter",
                       "Leases this member revoked as leader because their TTL ran out.",
                       (double)sp->leases_expired);
    keel_expose_series(t, "keel_server_lease_grant_total", "counter",
                       "Lease grants applied on this member since it started.",
                       (double)sp->leases_granted);
    keel_expose_series(t, "keel_server_lease_revoke_total", "counter",
                       "Lease revokes applied on this member since it started (expiries "
                       "included).",
                       (double)sp->leases_revoked);
    for (size_t i = 0; i < sp->n_histos; i++) {
        const struct keel_metrics_histo *mh = &sp->histos[i];
        bool first = i == 0 || strcmp(sp->histos[i - 1].name, mh->name) != 0;
        keel_expose_histo(t, mh->name, first ? mh->help : NULL, mh->labels, mh->h);
    }
    keel_expose_process(t, m->started);
    free(sp);
}

/* expose.h's serve: the four paths. */
static int serve(void *data, const char *path, struct keel_expose_text *body, const char **type)
{
    struct keel_metrics *m = data;
    if (strcmp(path, "/metrics") == 0) {
        *type = "text/plain; version=0.0.4; charset=utf-8";
        metrics_text(m, body);
        return 200;
    }
    if (strcmp(path, "/health") == 0 || strcmp(path, "/readyz") == 0) {
        struct keel_metrics_sample *s = calloc(1, sizeof(*s));
        if (s == NULL) {
            body->failed = true;
            return 500;
        }
        m->o.collect(m->o.data, s);
        const char *reason = !s->has_leader                 ? "RAFT NO LEADER"
                             : s->nospace && path[1] == 'h' ? "ALARM NOSPACE"
                                                            : "";
        free(s);
        if (path[1] == 'h') {
            *type = "application/json";
            keel_expose_add(body, "{\"health\":\"%s\",\"reason\":\"%s\"}",
                            reason[0] ? "false" : "true", reason);
        } else {
            keel_expose_add(body, "%s\n", reason[0] ? reason : "ok");
        }
        return reason[0] ? 503 : 200;
    }
    if (strcmp(path, "/livez") == 0) {
        keel_expose_add(body, "ok\n");
        return 200;
    }
    keel_expose_add(body, "not found: /metrics, /health, /readyz, /livez\n");
    return 404;
}

int keel_metrics_new(const struct keel_metrics_options *o, struct keel_metrics **out)
{
    struct keel_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return KEEL_ENOMEM;
    m->o = *o;
    m->started = (double)time(NULL);
    struct keel_expose_options eo = {.loop = o->loop,
                                     .listen = o->listen,
                                     .tls = o->tls,
                                     .flag = "--listen-metrics",
                                     .serve = serve,
                                     .data = m};
    int rv = keel_expose_new(&eo, &m->http);
    *out = m; /* stopped by keel_metrics_stop either way */
    if (rv == -2)
        return KEEL_ENOMEM;
    if (rv != 0)
        return KEEL_EIO;
    KLOG_INFO("serving /metrics, /health, /readyz and /livez on %s://%s",
              o->tls != NULL ? "https" : "http", o->listen);
    return 0;
}

void keel_metrics_stop(struct keel_metrics *m)
{
    if (m != NULL)
        keel_expose_stop(m->http);
}

void keel_metrics_free(struct keel_metrics *m)
{
    if (m == NULL)
        return;
    keel_expose_free(m->http);
    free(m);
}
