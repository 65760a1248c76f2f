/*
 * keeld: parse the configuration, wire the modules together, run the loop. No logic of its own
 * beyond the order of start-up and shutdown and the fan-out of events to the modules.
 *
 * A put's path, in the order of the files it passes through:
 *   session -> dispatch -> propose -> node (raft) -> fsm (storage writer) -> storage
 *   -> on_applied here: propose answers it, lessor, publish, membership, watch and readindex see
 *      the batch
 *   -> reply -> the responder seam -> session.
 *
 * SIGHUP reads the TLS certificates and keys again (new connections get them).
 *
 * Shutdown (SIGTERM/SIGINT): a leader first hands leadership to an up-to-date voter; then the
 * request path stops taking work, the node waits until raft has called back every request it
 * holds (writes it could not commit are answered "outcome unknown") and closes raft, the storage
 * writer finishes what raft handed it, and the sessions close.
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "dispatch.h"
#include "fdlimit.h"
#include "compactor.h"
#include "diskwatch.h"
#include "keel/keel.h"
#include "fsm.h"
#include "lessor.h"
#include "log.h"
#include "members.h"
#include "node.h"
#include "membership.h"
#include "metrics.h"
#include "notify.h"
#include "prefer.h"
#include "propose.h"
#include "publish.h"
#include "readindex.h"
#include "reqkind.h"
#include "reply.h"
#include "responder.h"
#include "session.h"
#include "rangestream.h"
#include "snapstream.h"
#include "store.h"
#include "tls.h"
#include "watch.h"

struct keeld {
    uv_loop_t loop;
    struct keel_config cfg;
    struct keel_members members;
    struct keel_store *store;
    struct keel_fsm *fsm;
    struct keel_sessions *sessions;
    struct keel_responder responder;
    struct keel_consensus raft;
    struct keel_reply reply;
    struct keel_snapstream snapstream;
    struct keel_watch_hub *watch;
    struct keel_propose *propose;
    struct keel_lessor *lessor;
    struct keel_compactor *compactor;
    struct keel_prefer *prefer; /* NULL without --preferred-leader-zone */
    struct keel_membership *membership;
    struct keel_metrics *metrics;                    /* NULL without --listen-metrics */
    struct keel_histo apply_seconds, commit_seconds; /* the storage writer records them */
    struct keel_log_limit rejected_log;              /* reply.h's */
    uint64_t leader_changes;                         /* leaders seen (metrics) */
    uint64_t last_leader_seen;
    struct keel_diskwatch *diskwatch;
    /* A follower asks the leader for the NOSPACE alarm as a client would (raise_nospace). */
    struct keel_aclient *alarm_client;
    bool alarm_asking;
    struct keel_readindex *readindex;
    struct keel_publish *publish;
    struct keel_dispatch *dispatch;
    struct keel_auth *auth;
    struct keel_rangestream *rangestream;
    struct keel_node *node;
    int node_ready;
    uv_signal_t sigterm, sigint, sighup;
    char peer_cn[256];                 /* session_peer_cn's answer */
    struct keel_tls_ctx *client_tls;   /* --cert-file: the client port's TLS; NULL: plaintext */
    struct keel_tls_options fetch_tls; /* peer TLS: how to fetch a checkpoint from the leader */
    struct keel_handshake fetch_as;    /* what this member says when it fetches one */
    struct keel_session_handler fetch_handler; /* fetch connections of members (on_fetch) */
    unsigned fetches;                          /* ... being served */
    uv_timer_t stop_timer;
    int stopping;
};

/* ---- events fanned out to the modules ---- */

/* A committed batch, in log order: answer its writes, then everything that reads state. */
static void on_applied(void *data, struct keel_fsm_batch *b)
{
    struct keeld *k = data;
    keel_propose_applied(k->propose, b);
    keel_lessor_applied(k->lessor, b);
    keel_publish_applied(k->publish, b);
    keel_membership_applied(k->membership, b);
    keel_watch_applied(k->watch, b);
    keel_readindex_applied(k->readindex);
}

static void leader_changed(struct keeld *k, bool is_leader, uint64_t leader)
{
    if (leader != 0 && leader != k->last_leader_seen) {
        k->leader_changes++;
        k->last_leader_seen = leader;
    }
    /* A checkpoint comes from the leader's peer port (transport.h): its address as raft
     * dials it. */
    const char *peer = leader != 0 && leader != k->cfg.member_id && k->node != NULL
                           ? keel_node_peer_address(k->node, leader)
                           : NULL;
    keel_fsm_set_leader(k->fsm, peer ? peer : "");
    keel_publish_leader_changed(k->publish, is_leader);
    keel_readindex_leader_changed(k->readindex, is_leader);
    keel_lessor_leader_changed(k->lessor, is_leader);
    if (k->membership != NULL)
        keel_membership_leader_changed(k->membership, is_leader);
    if (k->dispatch != NULL)
        keel_dispatch_leader_changed(k->dispatch);
}

static void on_change(void *data, bool is_leader, uint64_t leader)
{
    leader_changed(data, is_leader, leader);
}

static void on_peer(void *data, const struct keel_handshake_peer *p)
{
    struct keeld *k = data;
    if (k->cfg.cluster_id == 0) {
        /* A joining member's first word from its cluster (transport.h): that is its cluster
         * from now on, kept in the data dir for its restarts. */
        k->cfg.cluster_id = p->cluster_id;
        if (keel_cluster_id_save(k->cfg.data_dir, p->cluster_id) != 0)
            KLOG_WARN("cannot keep the cluster id in %s/cluster-id: %s (learned again at the "
                      "next start)",
                      k->cfg.data_dir, strerror(errno));
        KLOG_INFO("joined cluster %016llx: member %s (%s) spoke first",
                  (unsigned long long)p->cluster_id, p->name, p->peer);
    }
    keel_members_learn(&k->members, p);
    if (!k->node_ready)
        return;
    keel_publish_learned(k->publish);
    /* A follower may learn the leader's client address only now. */
    if (p->id == keel_node_leader(k->node))
        leader_changed(k, keel_node_is_leader(k->node), p->id);
}

static const char *moved_peer(void *data, uint64_t id)
{
    struct keeld *k = data;
    return keel_members_moved_peer(&k->members, id);
}

/* metrics.h's look at the member: everything read here is the loop's own. */
static void collect(void *data, struct keel_metrics_sample *s)
{
    struct keeld *k = data;
    struct keel_store_stat st;
    keel_store_stat(k->store, &st);
    s->has_leader = k->node_ready && !k->stopping && keel_node_leader(k->node) != 0;
    s->is_leader = k->node_ready && keel_node_is_leader(k->node);
    s->leader_changes = k->leader_changes;
    s->term = k->node_ready ? keel_node_term(k->node) : 0;
    s->last_index = k->node_ready ? keel_node_last_index(k->node) : 0;
    s->commit_index = k->node_ready ? keel_node_commit_index(k->node) : 0;
    s->applied_index = st.applied_index;
    s->durable_index = st.durable_index;
    s->revision = st.revision;
    s->compact_revision = st.compact_revision;
    s->db_size = st.db_size;
    s->logical_size = st.logical_size;
    s->quota_bytes = st.quota_bytes;
    s->keys = st.keys;
    s->nospace = st.nospace_member != 0;
    s->watchers = k->watch ? keel_watch_count(k->watch) : 0;
    s->proposal_backlog_bytes = k->propose ? keel_propose_backlog(k->propose) : 0;
    s->proposals_failed = k->propose ? keel_propose_failed(k->propose) : 0;
    if (k->sessions != NULL) {
        struct keel_sessions_stat ss;
        keel_sessions_stat(k->sessions, &ss);
        s->connections = ss.sessions;
        s->requests_inflight = ss.inflight;
    }
    s->watch_streams = k->watch ? keel_watch_streams(k->watch) : 0;
    s->slow_watchers = k->watch ? keel_watch_unsynced(k->watch) : 0;
    if (k->lessor != NULL) {
        struct keel_lessor_stat ls;
        keel_lessor_stat(k->lessor, &ls);
        s->leases = ls.leases;
        s->leases_granted = ls.granted;
        s->leases_revoked = ls.revoked;
        s->leases_expired = ls.expired;
    }
    struct keel_consensus_member conf[KEEL_MEMBERS_MAX];
    size_t n = k->node_ready ? keel_node_members(k->node, conf, KEEL_MEMBERS_MAX) : 0;
    for (size_t i = 0; i < n && i < KEEL_MEMBERS_MAX; i++) {
        if (conf[i].voter)
            s->voters++;
        else
            s->learners++;
    }
    keel_metrics_add_histo(s, "keel_disk_backend_commit_duration_seconds",
                           "Latency of the store's commits (page writes; the sync is in the "
                           "background).",
                           &k->commit_seconds, "");
    if (k->node_ready)
        keel_metrics_add_histo(s, "keel_disk_wal_append_duration_seconds",
                               "Time for an append to the raft log to become durable (its write "
                               "and fdatasync).",
                               keel_node_append_seconds(k->node), "");
    keel_metrics_add_histo(s, "keel_server_apply_duration_seconds",
                           "Time the storage writer took to apply one batch of committed entries.",
                           &k->apply_seconds, "");
    const struct keel_histo *h_snap = NULL, *h_fetch = NULL;
    if (k->node_ready) {
        s->snapshots = keel_node_snapshots(k->node, &h_snap);
        keel_metrics_add_histo(s, "keel_server_snapshot_duration_seconds",
                               "Time a raft snapshot of this member took, from raft asking for it "
                               "until it was stored (the store's sync and raft's write).",
                               h_snap, "");
    }
    if (k->fsm != NULL) {
        keel_fsm_fetches(k->fsm, &s->fetches_ok, &s->fetches_failed, &h_fetch);
        keel_metrics_add_histo(s, "keel_server_checkpoint_fetch_duration_seconds",
                               "Time one checkpoint fetch attempt took: the copy from the leader "
                               "and its swap into place.",
                               h_fetch, "");
    }
    for (int body = 0; k->sessions != NULL && body < KEEL_SESSIONS_BODY_CASES; body++) {
        const struct keel_histo *h = keel_sessions_request_seconds(k->sessions, body);
        const struct keel_reqkind *kind = keel_reqkind_of((Keel__Request__BodyCase)body);
        if (h == NULL || kind == NULL)
            continue;
        char labels[48] = "op=\"";
        size_t len = 4;
        for (const char *c = kind->name; *c != '\0' && len + 3 < sizeof(labels); c++)
            labels[len++] = (char)tolower((unsigned char)*c);
        memcpy(labels + len, "\"", 2);
        keel_metrics_add_histo(s, "keel_server_request_duration_seconds",
                               "Time from a request's arrival to its answer, by operation.", h,
                               labels);
    }
    uint64_t id;
    const struct keel_histo *rtt;
    for (size_t i = 0; k->node_ready && keel_node_peer_rtt(k->node, i, &id, &rtt); i++) {
        struct keel_member_info *mi = keel_members_get(&k->members, id);
        char labels[160];
        snprintf(labels, sizeof(labels), "To=\"%llx\",zone=\"%s\"", (unsigned long long)id,
                 mi == NULL    ? ""
                 : mi->zone[0] ? mi->zone
                               : mi->stored_zone);
        if (rtt != NULL)
            keel_metrics_add_histo(s, "keel_network_peer_round_trip_time_seconds",
                                   "Round trip of a heartbeat from the leader to a follower.", rtt,
                                   labels);
    }
}

static void session_hello(void *data, uint64_t session, const Keel__Hello *h)
{
    struct keeld *k = data;
    keel_dispatch_hello(k->dispatch, session, h);
}

static void session_request(void *data, uint64_t session, Keel__Request *req)
{
    struct keeld *k = data;
    keel_dispatch_request(k->dispatch, session, req);
}

static void session_refuse(void *data, uint64_t session, int err, const char *msg)
{
    struct keeld *k = data;
    keel_dispatch_refuse(k->dispatch, session, err, msg);
}

static void session_closed(void *data, uint64_t session)
{
    struct keeld *k = data;
    keel_watch_session_closed(k->watch, session);
}

/* ---- checkpoint fetches on the peer port ---- */

/* Fetch connections served at once: the one being streamed and one retrying behind it. Each
 * holds a descriptor and a session's buffers, not a copy. */
#define MAX_FETCHES 2

/* A member's fetch connection: a session whose requests go to dispatch's fetch path (a
 * checkpoint, no auth), so nothing but the snapstream ever hears from it. */
static void fetch_request(void *data, uint64_t session, Keel__Request *req)
{
    struct keeld *k = data;
    keel_dispatch_fetch_request(k->dispatch, session, req);
}

static void fetch_closed(void *data, uint64_t session)
{
    struct keeld *k = data;
    (void)session;
    k->fetches--;
}

/* A member's checkpoint fetch, accepted on the peer port (transport.h): served as a session of
 * its own, at most MAX_FETCHES at once (the snapstream copies for one of them at a time; a
 * member that retries while one runs is told TOO_MANY_REQUESTS by it). */
static void on_fetch(void *data, const struct keel_handshake_peer *p, int fd)
{
    struct keeld *k = data;
    if (k->stopping || k->fetches >= MAX_FETCHES) {
        KLOG_WARN("checkpoint fetch from member %016llx (%s) closed: %s", (unsigned long long)p->id,
                  p->name, k->stopping ? "this member is stopping" : "as many fetches run already");
        close(fd);
        return;
    }
    uint64_t session;
    int rv = keel_sessions_adopt(k->sessions, fd, &k->fetch_handler, &session);
    if (rv != 0) {
        KLOG_WARN("checkpoint fetch from member %016llx (%s) dropped: %s",
                  (unsigned long long)p->id, p->name, keel_strerror(rv));
        return;
    }
    k->fetches++;
}

/* What the sessions yield to: writes taken and not yet applied, from intake to the writer's
 * commit. On a leader that is what its clients queue ahead of the store; a follower's writer
 * queue fills from the leader, and its clients pausing only stops it adding reads. */
static uint64_t unapplied_bytes(void *data)
{
    struct keeld *k = data;
    return keel_propose_backlog(k->propose) + keel_fsm_progress(k->fsm)->backlog_bytes;
}

/* The verified client-certificate CN of a session, for authentication by certificate (auth.h):
 * in k's buffer, valid until the next call (auth reads it at once, on the loop). */
static const char *session_peer_cn(void *data, uint64_t session)
{
    struct keeld *k = data;
    return keel_sessions_peer_cn(k->sessions, session, k->peer_cn, sizeof(k->peer_cn)) == 0
               ? k->peer_cn
               : NULL;
}

/* ---- shutdown ---- */

static void sessions_stopped(void *data)
{
    struct keeld *k = data;
    uv_close((uv_handle_t *)&k->sigterm, NULL);
    uv_close((uv_handle_t *)&k->sigint, NULL);
    uv_close((uv_handle_t *)&k->sighup, NULL);
    uv_close((uv_handle_t *)&k->stop_timer, NULL);
}

static void fsm_stopped(void *data)
{
    struct keeld *k = data;
    keel_sessions_stop(k->sessions, sessions_stopped, k);
}

static void node_stopped(void *data)
{
    struct keeld *k = data;
    keel_fsm_stop(k->fsm, fsm_stopped, k);
}

/* The compactor's seams: leadership, and a Compaction proposed like a client's. */
static bool compactor_is_leader(void *data)
{
    struct keeld *k = data;
    return k->raft.is_leader(k->raft.ctx);
}

static int compactor_compact(void *data, int64_t rev)
{
    struct keeld *k = data;
    Keel__CompactionRequest *req = malloc(sizeof(*req));
    if (req == NULL)
        return KEEL_ENOMEM;
    keel__compaction_request__init(req);
    req->revision = rev;
    req->physical = true;
    Keel__Command cmd = KEEL__COMMAND__INIT;
    cmd.op_case = KEEL__COMMAND__OP_COMPACTION;
    cmd.compaction = req;
    /* The batch owns req from here and frees it with protobuf-c's free once proposed. */
    return keel_propose_command(k->propose, &cmd, &req->base, NULL);
}

/* ---- the disk reserve's seam: NOSPACE into the log ---- */

static void alarm_answered(int status, const Keel__Response *resp, void *data)
{
    struct keeld *k = data;
    k->alarm_asking = false;
    if (status != 0 && status != KEEL_ECANCELED)
        KLOG_WARN("disk reserve: asking the leader for the NOSPACE alarm failed: %s",
                  resp->error && resp->error->message ? resp->error->message
                                                      : keel_strerror(status));
}

/* The leader proposes it; a follower, which cannot, sends it to the leader through libkeel as
 * `keelctl alarm` would (an ACTIVATE naming this member), over a client kept for that. */
static int raise_nospace(void *data, uint64_t free_bytes, uint64_t reserve)
{
    struct keeld *k = data;
    (void)free_bytes;
    (void)reserve;
    if (k->stopping)
        return 0;
    if (k->raft.is_leader(k->raft.ctx)) {
        Keel__AlarmRequest *req = malloc(sizeof(*req));
        if (req == NULL)
            return KEEL_ENOMEM;
        keel__alarm_request__init(req);
        req->action = KEEL__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
        req->alarm = KEEL__ALARM_MEMBER__ALARM_TYPE__NOSPACE;
        req->memberid = k->cfg.member_id;
        Keel__Command cmd = KEEL__COMMAND__INIT;
        cmd.op_case = KEEL__COMMAND__OP_ALARM;
        cmd.alarm = req;
        return keel_propose_command(k->propose, &cmd, &req->base, NULL); /* takes req */
    }
    if (k->alarm_asking)
        return 0; /* the last request is still on its way */
    if (k->alarm_client == NULL) {
        size_t cap = k->members.n * (KEEL_ADDR_MAX + 1) + 1, len = 0;
        char *endpoints = calloc(1, cap);
        if (endpoints == NULL)
            return KEEL_ENOMEM;
        for (size_t i = 0; i < k->members.n; i++) {
            const char *c = k->members.v[i].client;
            if (c[0] != '\0' && k->members.v[i].id != k->cfg.member_id)
                len += (size_t)snprintf(endpoints + len, cap - len, "%s%s", len ? "," : "", c);
        }
        if (len == 0) {
            free(endpoints);
            return KEEL_EUNAVAILABLE; /* no other member's client address known yet */
        }
        char host[KEEL_ADDR_MAX];
        int port;
        keel_addr_split(k->cfg.listen_peer, host, sizeof(host), &port);
        struct keel_options co = {
            .endpoints = endpoints, .source_address = host, .client_name = "keeld disk reserve"};
        if (k->cfg.cert_file[0] != '\0') {
            /* The other members' client ports speak TLS too: this member's certificate (made
             * for client use as well, as gen-certs.sh makes them) is its client certificate. */
            co.ca_file = k->cfg.trusted_ca_file[0] ? k->cfg.trusted_ca_file : NULL;
            co.cert_file = k->cfg.cert_file;
            co.key_file = k->cfg.key_file;
        }
        int err = keel_aclient_init(&k->alarm_client, &k->loop, &co); /* copies endpoints */
        free(endpoints);
        if (err != 0)
            return err;
    }
    Keel__AlarmRequest ar = KEEL__ALARM_REQUEST__INIT;
    ar.action = KEEL__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    ar.alarm = KEEL__ALARM_MEMBER__ALARM_TYPE__NOSPACE;
    ar.memberid = k->cfg.member_id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ALARM;
    req.alarm = &ar;
    int err = keel_aclient_request(k->alarm_client, &req, 0, alarm_answered, k);
    if (err == 0)
        k->alarm_asking = true;
    return err;
}

static void close_alarm_client(struct keeld *k)
{
    if (k->alarm_client != NULL)
        keel_aclient_close(k->alarm_client, NULL, NULL);
    k->alarm_client = NULL;
}

/* A client's compaction the compactor carried out in steps: the last step is its own request. */
static void compactor_finish(void *data, uint64_t session, Keel__Request *req)
{
    struct keeld *k = data;
    keel_propose_request(k->propose, session, req);
}

static void compactor_refuse(void *data, uint64_t session, Keel__Request *req, int err,
                             const char *msg)
{
    struct keeld *k = data;
    keel_reply_error(&k->reply, session, req->id, err, msg);
    keel__request__free_unpacked(req, NULL);
}

static void stop_now(struct keeld *k)
{
    if (k->stopping > 1)
        return;
    k->stopping = 2;
    uv_timer_stop(&k->stop_timer);
    KLOG_INFO("stopping");
    keel_notify("STOPPING=1");
    keel_dispatch_stop(k->dispatch);
    keel_auth_stop(k->auth);
    keel_propose_stop(k->propose);
    keel_lessor_stop(k->lessor);
    keel_compactor_stop(k->compactor);
    keel_prefer_stop(k->prefer);
    keel_membership_stop(k->membership);
    keel_metrics_stop(k->metrics);
    keel_diskwatch_stop(k->diskwatch);
    close_alarm_client(k);
    keel_readindex_stop(k->readindex);
    keel_watch_stop(k->watch);
    /* raft closes only once it holds none of our requests: node.c waits for them, and says why
     * that wait always ends. */
    keel_node_stop(k->node, node_stopped, k);
}

static void transfer_done(void *data, int err)
{
    struct keeld *k = data;
    (void)err; /* stopping either way */
    KLOG_INFO("leadership handed to %llu", (unsigned long long)keel_node_leader(k->node));
    stop_now(k);
}

/* membership.h: this member was removed; it stops as for a signal, with nothing to hand over. */
static void on_removed(void *data)
{
    struct keeld *k = data;
    if (k->stopping)
        return;
    k->stopping = 1;
    stop_now(k);
}

static void member_change(void *ctx, uint64_t session, const Keel__Request *req)
{
    struct keeld *k = ctx;
    if (k->membership != NULL)
        keel_membership_serve(k->membership, session, req);
    else
        keel_reply_error(&k->reply, session, req->id, KEEL_EUNAVAILABLE, "member is starting");
}

static void stop_timeout(uv_timer_t *t)
{
    stop_now(t->data);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct keeld *k = h->data;
    if (k->stopping) {
        if (signum == SIGINT)
            stop_now(k);
        return;
    }
    k->stopping = 1;
    KLOG_INFO("signal %d: shutting down", signum);
    /* Bounded either way: the transfer callback fires within an election timeout. */
    uv_timer_start(&k->stop_timer, stop_timeout, k->cfg.election_ms * 2, 0);
    if (keel_node_is_leader(k->node) && k->cfg.n_members > 1 &&
        keel_node_transfer(k->node, 0, transfer_done, k) == 0)
        return;
    stop_now(k);
}

/* SIGHUP: certificates renewed on disk are read again, without a restart. A file that does not
 * read or a key that does not match keeps the old ones, and the log says which file and why. */
static void on_sighup(uv_signal_t *h, int signum)
{
    struct keeld *k = h->data;
    (void)signum;
    if (k->node != NULL && !k->stopping)
        keel_node_reload_tls(k->node); /* the peer port's (logs how it went) */
    if (k->client_tls == NULL) {
        KLOG_INFO("SIGHUP: no client port certificates to reload (no --cert-file)");
        return;
    }
    char err[512];
    if (keel_tls_ctx_reload(k->client_tls, err, sizeof(err)) != 0)
        KLOG_WARN("SIGHUP: client port certificates not reloaded, the old ones stay: %s", err);
    else
        KLOG_INFO("SIGHUP: client port%s certificates reloaded from %s and %s",
                  k->cfg.metrics_tls ? " and --listen-metrics" : "", k->cfg.cert_file,
                  k->cfg.key_file);
}

/* The client port's TLS context from --cert-file and the rest; 0 or -1 after logging why. */
static int client_tls_new(struct keeld *k)
{
    const struct keel_config *c = &k->cfg;
    if (c->cert_file[0] == '\0')
        return 0;
    struct keel_tls_options o = {.role = KEEL_TLS_SERVER,
                                 .cert_file = c->cert_file,
                                 .key_file = c->key_file,
                                 .ca_file = c->trusted_ca_file[0] ? c->trusted_ca_file : NULL,
                                 .verify_peer = c->client_cert_auth};
    char err[512];
    if (keel_tls_ctx_new(&o, &k->client_tls, err, sizeof(err)) != 0) {
        KLOG_ERROR("client port TLS: %s", err);
        return -1;
    }
    KLOG_INFO("client port TLS: certificate %s%s%s", c->cert_file,
              c->client_cert_auth ? ", client certificates required, CAs " : "",
              c->client_cert_auth ? c->trusted_ca_file : "");
    return 0;
}

/* ---- start-up ---- */

/* Create the modules between the fsm and raft, in the order they depend on each other. 0, or
 * KEEL_E* with what was made so far left in k. */
static int wire(struct keeld *k)
{
    char host[KEEL_ADDR_MAX];
    int port;
    keel_addr_split(k->cfg.listen_peer, host, sizeof(host), &port);
    char mark[600];
    snprintf(mark, sizeof(mark), "%s/state.shown", k->cfg.data_dir);
    struct keel_fsm_options fo = {.loop = &k->loop,
                                  .store = k->store,
                                  .cluster_id = &k->cfg.cluster_id,
                                  .bind_host = host,
                                  .done = on_applied,
                                  .data = k,
                                  .mark_path = mark,
                                  .commit_interval_ms = k->cfg.backend_batch_ms,
                                  .commit_bytes = k->cfg.backend_batch_bytes,
                                  .apply_seconds = &k->apply_seconds,
                                  .commit_seconds = &k->commit_seconds,
                                  .warn_apply_us = k->cfg.warn_apply_us};
    /* A checkpoint comes from the leader's peer port, as a member: the peer handshake raft
     * links open with (transport.c's), and with peer TLS this member's peer certificate. */
    const struct keel_member_conf *self = keel_config_member(&k->cfg, k->cfg.member_id);
    k->fetch_as = (struct keel_handshake){.kind = KEEL_HANDSHAKE_FETCH,
                                          .id = k->cfg.member_id,
                                          .peer = self ? self->peer : k->cfg.listen_peer,
                                          .client = k->cfg.listen_client,
                                          .name = k->cfg.name,
                                          .zone = k->cfg.zone};
    fo.fetch_as = &k->fetch_as;
    if (k->cfg.peer_cert_file[0] != '\0') {
        k->fetch_tls = (struct keel_tls_options){.role = KEEL_TLS_CLIENT,
                                                 .cert_file = k->cfg.peer_cert_file,
                                                 .key_file = k->cfg.peer_key_file,
                                                 .ca_file = k->cfg.peer_ca_file,
                                                 .verify_peer = true};
        fo.fetch_tls = &k->fetch_tls;
    }
    /* etcd's layouts: its backend commit histogram, and its apply histogram */
    keel_histo_init_exp(&k->commit_seconds, 0.001, 2, 14);
    keel_histo_init_exp(&k->apply_seconds, 0.0001, 2, 20);
    int rv = keel_fsm_new(&fo, &k->fsm);
    if (rv != 0) {
        KLOG_ERROR("cannot start the storage writer: %s", keel_strerror(rv));
        return rv;
    }
    if ((rv = keel_sessions_new(&k->loop, &k->cfg, &k->sessions)) != 0)
        return rv;
    if ((rv = keel_sessions_set_tls(k->sessions, k->client_tls)) != 0)
        return rv;
    keel_sessions_responder(k->sessions, &k->responder);
    /* k->raft is filled once the node exists; nothing calls it before. */
    k->reply = (struct keel_reply){.out = &k->responder,
                                   .raft = &k->raft,
                                   .members = &k->members,
                                   .store = k->store,
                                   .cluster_id = &k->cfg.cluster_id,
                                   .member_id = k->cfg.member_id,
                                   .rejected_log = &k->rejected_log};
    k->rejected_log = (struct keel_log_limit){.per_sec = 10};
    k->snapstream = (struct keel_snapstream){
        .loop = &k->loop, .store = k->store, .reply = &k->reply, .fsm = k->fsm};
    struct keel_watch_options wo = {.loop = &k->loop,
                                    .store = k->store,
                                    .reply = &k->reply,
                                    .max_per_session = k->cfg.max_watches,
                                    .session_out_cap = 8u << 20,
                                    .progress_ms = k->cfg.watch_progress_ms};
    if ((rv = keel_watch_new(&wo, &k->watch)) != 0)
        return rv;
    struct keel_propose_options po = {
        .loop = &k->loop,
        .raft = &k->raft,
        .reply = &k->reply,
        .member_id = k->cfg.member_id,
        .limits = {.max_txn_ops = k->cfg.max_txn_ops, .max_value_bytes = k->cfg.max_request_bytes}};
    if ((rv = keel_propose_new(&po, &k->propose)) != 0)
        return rv;
    struct keel_lessor_options lo = {.loop = &k->loop,
                                     .raft = &k->raft,
                                     .reply = &k->reply,
                                     .propose = k->propose,
                                     .store = k->store,
                                     .progress = keel_fsm_progress(k->fsm),
                                     .election_ms = k->cfg.election_ms,
                                     .checkpoint_ms = k->cfg.lease_checkpoint_ms};
    if ((rv = keel_lessor_new(&lo, &k->lessor)) != 0) {
        KLOG_ERROR("cannot load the lease table: %s", keel_strerror(rv));
        return rv;
    }
    struct keel_compactor_options co = {.loop = &k->loop,
                                        .store = k->store,
                                        .mode = (enum keel_compact_mode)k->cfg.compact_mode,
                                        .retention_ms = k->cfg.compact_retention_ms,
                                        .retention_revs = k->cfg.compact_retention_revs,
                                        .check_ms = k->cfg.compact_check_ms,
                                        .is_leader = compactor_is_leader,
                                        .compact = compactor_compact,
                                        .finish = compactor_finish,
                                        .refuse = compactor_refuse,
                                        .data = k};
    if ((rv = keel_compactor_new(&co, &k->compactor)) != 0)
        return rv;
    struct keel_diskwatch_options dw = {.loop = &k->loop,
                                        .path = k->cfg.data_dir,
                                        .reserve = k->cfg.disk_reserve_bytes,
                                        .reserve_set = k->cfg.disk_reserve_set,
                                        .check_ms = k->cfg.disk_check_ms,
                                        .store = k->store,
                                        .raise = raise_nospace,
                                        .data = k};
    if ((rv = keel_diskwatch_new(&dw, &k->diskwatch)) != 0)
        return rv;
    struct keel_sessions_pressure sp = {.bytes = unapplied_bytes,
                                        .data = k,
                                        .high = k->cfg.max_apply_backlog_bytes,
                                        .low = k->cfg.max_apply_backlog_bytes / 2};
    keel_sessions_set_pressure(k->sessions, &sp);
    struct keel_readindex_options ro = {.raft = &k->raft, .progress = keel_fsm_progress(k->fsm)};
    if ((rv = keel_readindex_new(&ro, &k->readindex)) != 0)
        return rv;
    struct keel_publish_options pbo = {.members = &k->members,
                                       .store = k->store,
                                       .propose = k->propose,
                                       .raft = &k->raft,
                                       .quota_bytes = k->cfg.quota_bytes};
    if ((rv = keel_publish_new(&pbo, &k->publish)) != 0)
        return rv;
    if ((rv = keel_rangestream_new(&k->reply, k->store, &k->rangestream)) != 0)
        return rv;
    struct keel_auth_options ao = {.loop = &k->loop,
                                   .store = k->store,
                                   .reply = &k->reply,
                                   .token_ttl_s = k->cfg.auth_token_ttl_s,
                                   .peer_cn = session_peer_cn,
                                   .peer_ctx = k};
    if ((rv = keel_auth_new(&ao, &k->auth)) != 0)
        return rv;
    struct keel_dispatch_options dopt = {.cfg = &k->cfg,
                                         .reply = &k->reply,
                                         .raft = &k->raft,
                                         .store = k->store,
                                         .members = &k->members,
                                         .propose = k->propose,
                                         .readindex = k->readindex,
                                         .snapstream = &k->snapstream,
                                         .watch = k->watch,
                                         .lessor = k->lessor,
                                         .progress = keel_fsm_progress(k->fsm),
                                         .fsm = k->fsm,
                                         .rangestream = k->rangestream,
                                         .compactor = k->compactor,
                                         .member_change = member_change,
                                         .member_ctx = k,
                                         .auth = k->auth};
    if ((rv = keel_dispatch_new(&dopt, &k->dispatch)) != 0)
        return rv;
    k->fetch_handler = (struct keel_session_handler){.data = k,
                                                     .hello = session_hello,
                                                     .request = fetch_request,
                                                     .refuse = session_refuse,
                                                     .closed = fetch_closed};
    struct keel_node_options no = {.loop = &k->loop,
                                   .cfg = &k->cfg,
                                   .fsm = k->fsm,
                                   .on_change = on_change,
                                   .on_peer = on_peer,
                                   .moved_peer = moved_peer,
                                   .on_fetch = on_fetch,
                                   .data = k};
    if ((rv = keel_node_new(&no, &k->node)) != 0)
        return rv;
    keel_node_consensus(k->node, &k->raft);
    struct keel_membership_options mso = {.loop = &k->loop,
                                          .cfg = &k->cfg,
                                          .node = k->node,
                                          .raft = &k->raft,
                                          .members = &k->members,
                                          .propose = k->propose,
                                          .reply = &k->reply,
                                          .on_removed = on_removed,
                                          .data = k};
    if ((rv = keel_membership_new(&mso, &k->membership)) != 0)
        return rv;
    struct keel_prefer_options pfo = {
        .loop = &k->loop, .cfg = &k->cfg, .node = k->node, .members = &k->members};
    return keel_prefer_new(&pfo, &k->prefer);
}

/* After a failed wire: close what holds loop handles, let the loop finish closing them. */
static void unwind(struct keeld *k)
{
    if (k->sessions != NULL)
        keel_sessions_stop(k->sessions, NULL, NULL);
    if (k->propose != NULL)
        keel_propose_stop(k->propose);
    keel_lessor_stop(k->lessor);
    keel_compactor_stop(k->compactor);
    keel_prefer_stop(k->prefer);
    keel_membership_stop(k->membership);
    keel_metrics_stop(k->metrics);
    keel_diskwatch_stop(k->diskwatch);
    if (k->watch != NULL)
        keel_watch_stop(k->watch);
    if (k->fsm != NULL)
        keel_fsm_stop(k->fsm, NULL, NULL);
    uv_run(&k->loop, UV_RUN_DEFAULT);
}

static void free_modules(struct keeld *k)
{
    keel_node_free(k->node);
    keel_rangestream_free(k->rangestream); /* its drain hooks go while the sessions exist */
    keel_sessions_free(k->sessions);
    keel_dispatch_free(k->dispatch);
    keel_auth_free(k->auth);
    keel_publish_free(k->publish);
    keel_readindex_free(k->readindex);
    keel_lessor_free(k->lessor);
    keel_compactor_free(k->compactor);
    keel_prefer_free(k->prefer);
    keel_membership_free(k->membership);
    keel_metrics_free(k->metrics);
    keel_diskwatch_free(k->diskwatch);
    keel_propose_free(k->propose);
    keel_watch_free(k->watch);
    keel_fsm_free(k->fsm);
}

/* What the store did on its own at open (e.g. dropped a commit an OS crash may have torn). */
static void store_notice(void *data, const char *msg)
{
    (void)data;
    KLOG_WARN("%s", msg);
}

/* Said once at start, so that a log shows what a member ran with (flags as given, defaults as
 * applied, --max-connections as fitted to the descriptor limit). */
static void log_config(const struct keel_config *c)
{
    static const char *const modes[] = {"off", "periodic", "revision"};
    char members[512];
    size_t off = 0;
    members[0] = '\0';
    for (size_t i = 0; i < c->n_members && off < sizeof(members); i++)
        off += (size_t)snprintf(members + off, sizeof(members) - off, "%s%s=%s%s%s", i ? "," : "",
                                c->members[i].name, c->members[i].peer,
                                c->members[i].zone[0] ? "@" : "", c->members[i].zone);
    KLOG_INFO("effective configuration: name=%s zone=%s data-dir=%s listen-client=%s "
              "listen-peer=%s listen-metrics=%s initial-cluster=%s initial-cluster-state=%s "
              "cluster=%016llx heartbeat-ms=%u election-ms=%u snapshot-bytes=%llu "
              "snapshot-trailing-bytes=%llu quota-bytes=%llu max-connections=%zu "
              "max-inflight=%zu backend-batch-interval-ms=%u auto-compaction-mode=%s "
              "preferred-leader-zone=%s log-format=%s version=%s",
              c->name, c->zone, c->data_dir, c->listen_client, c->listen_peer,
              c->listen_metrics[0] ? c->listen_metrics : "-", members, c->join ? "existing" : "new",
              (unsigned long long)c->cluster_id, c->heartbeat_ms, c->election_ms,
              (unsigned long long)c->snapshot_bytes, (unsigned long long)c->snapshot_trailing_bytes,
              (unsigned long long)c->quota_bytes, c->max_connections, c->max_inflight,
              c->backend_batch_ms,
              c->compact_mode >= 0 && c->compact_mode <= 2 ? modes[c->compact_mode] : "?",
              c->preferred_zone[0] ? c->preferred_zone : "-", c->log_json ? "json" : "text",
              KEEL_VERSION);
}

/* A new cluster whose members sit so that one zone's loss stops it: said once, at start (member
 * changes refuse to make a cluster so; membership.h). Two members or one cannot be otherwise. */
static void warn_zones(const struct keel_config *c)
{
    const char *zones[KEEL_MEMBERS_MAX];
    size_t n = 0, count = 0;
    for (size_t i = 0; i < c->n_members && n < KEEL_MEMBERS_MAX; i++)
        zones[n++] = c->members[i].zone;
    const char *z = n >= 3 ? keel_membership_critical_zone(zones, n, &count) : NULL;
    if (z != NULL && !c->join)
        KLOG_WARN("--initial-cluster puts %zu of its %zu members in zone %s: losing that zone "
                  "would leave %zu, short of a quorum of %zu",
                  count, n, z, n - count, n / 2 + 1);
}

int main(int argc, char **argv)
{
    /* A peer closing its socket must not kill the leader (research/raft.md trap 2). */
    signal(SIGPIPE, SIG_IGN);
    /* SIGHUP reloads certificates (on_sighup, once the loop runs): not a reason to die before. */
    signal(SIGHUP, SIG_IGN);
    /* raft_uv's disk work and checkpoint copies share libuv's pool. */
    setenv("UV_THREADPOOL_SIZE", "8", 0);

    static struct keeld k;
    char err[512];
    int rv = keel_config_parse(&k.cfg, argc, argv, err, sizeof(err));
    if (rv != 0) {
        keel_config_close(&k.cfg);
        if (rv > 0)
            return 0;
        fprintf(stderr, "keeld: %s (see keeld --help)\n", err);
        return 2;
    }
    keel_log_setup(k.cfg.log_level, k.cfg.name);
    keel_log_format(k.cfg.log_json, k.cfg.zone);
    keel_config_warn(&k.cfg);
    int status = 1;
    /* Certificates are checked before anything is made: a bad file stops the start at once. */
    if (client_tls_new(&k) != 0)
        goto out_config;
    if (keel_fdlimit_fit(&k.cfg.max_connections, err, sizeof(err)) != 0) {
        KLOG_ERROR("%s", err);
        goto out_config;
    }
    if (keel_mkdir_p(k.cfg.data_dir) != 0) {
        KLOG_ERROR("cannot create data dir %s", k.cfg.data_dir);
        goto out_config;
    }
    if (keel_cluster_id_settle(&k.cfg, err, sizeof(err)) != 0) {
        KLOG_ERROR("%s", err);
        goto out_config;
    }
    if (keel_members_init(&k.members, &k.cfg) != 0)
        goto out_config;
    warn_zones(&k.cfg);
    log_config(&k.cfg);
    uv_loop_init(&k.loop);

    char path[600];
    snprintf(path, sizeof(path), "%s/state", k.cfg.data_dir);
    struct keel_store_options so = {
        .path = path, .quota_bytes = k.cfg.quota_bytes, .notice = store_notice};
    if ((rv = keel_store_open(&so, &k.store)) != 0) {
        KLOG_ERROR("cannot open the store at %s: %s", path, keel_strerror(rv));
        goto out_loop;
    }
    keel_members_load(&k.members, k.store);
    struct keel_store_stat st;
    keel_store_stat(k.store, &st);
    KLOG_INFO("store at %s: applied index %llu, revision %lld", path,
              (unsigned long long)st.applied_index, (long long)st.revision);

    if (wire(&k) != 0) {
        unwind(&k);
        free_modules(&k);
        goto out_store;
    }
    int failed = 0;
    if (keel_node_start(k.node) != 0) {
        failed = 1;
    } else {
        k.node_ready = 1;
        struct keel_session_handler h = {.data = &k,
                                         .hello = session_hello,
                                         .request = session_request,
                                         .refuse = session_refuse,
                                         .closed = session_closed};
        if (keel_sessions_listen(k.sessions, &h) != 0)
            failed = 1;
        struct keel_metrics_options mo = {.loop = &k.loop,
                                          .listen = k.cfg.listen_metrics,
                                          .tls = k.cfg.metrics_tls ? k.client_tls : NULL,
                                          .name = k.cfg.name,
                                          .zone = k.cfg.zone,
                                          .version = KEEL_VERSION,
                                          .collect = collect,
                                          .data = &k};
        if (!failed && k.cfg.listen_metrics[0] != '\0' && keel_metrics_new(&mo, &k.metrics) != 0)
            failed = 1;
    }
    /* A failed start unwinds through the normal shutdown, so raft closes its files. */
    if (failed)
        k.stopping = 1;
    uv_signal_init(&k.loop, &k.sigterm);
    uv_signal_init(&k.loop, &k.sigint);
    uv_signal_init(&k.loop, &k.sighup);
    uv_timer_init(&k.loop, &k.stop_timer);
    k.sigterm.data = k.sigint.data = k.sighup.data = k.stop_timer.data = &k;
    uv_signal_start(&k.sigterm, on_signal, SIGTERM);
    uv_signal_start(&k.sigint, on_signal, SIGINT);
    uv_signal_start(&k.sighup, on_sighup, SIGHUP);
    if (k.stopping)
        stop_now(&k); /* after a failed start */
    else if (keel_notify("READY=1") != 0)
        KLOG_WARN("cannot tell systemd this member is ready (NOTIFY_SOCKET): %s", strerror(errno));
    if (!k.stopping)
        KLOG_INFO("serving clients on %s, peers on %s, zone %s, cluster %016llx",
                  k.cfg.listen_client, k.cfg.listen_peer, k.cfg.zone,
                  (unsigned long long)k.cfg.cluster_id);
    uv_run(&k.loop, UV_RUN_DEFAULT);
    status = failed ? 1 : 0;
    if (uv_loop_close(&k.loop) != 0)
        KLOG_WARN("handles left open at exit");
    free_modules(&k);
    keel_tls_ctx_free(k.client_tls);
    keel_store_close(k.store);
    keel_members_close(&k.members);
    keel_config_close(&k.cfg);
    KLOG_INFO("stopped");
    return status;

out_store:
    keel_store_close(k.store);
out_loop:
    uv_loop_close(&k.loop);
    keel_members_close(&k.members);
out_config:
    keel_tls_ctx_free(k.client_tls);
    keel_config_close(&k.cfg);
    return status;
}
