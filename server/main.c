/*
 * keeld: parse the configuration, wire the modules together, run the loop. No logic of its own
 * beyond the order of start-up and shutdown.
 *
 * Shutdown (SIGTERM/SIGINT): a leader first hands leadership to an up-to-date voter; then the
 * service stops taking work, raft closes (writes still pending are answered "outcome
 * unknown"), the storage writer finishes what raft handed it, and the sessions close.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config.h"
#include "fsm.h"
#include "log.h"
#include "members.h"
#include "node.h"
#include "service.h"
#include "session.h"
#include "store.h"
#include "watch.h"

struct keeld {
    uv_loop_t loop;
    struct keel_config cfg;
    struct keel_members members;
    struct keel_store *store;
    struct keel_fsm *fsm;
    struct keel_service *svc;
    struct keel_watch_hub *watch;
    struct keel_node *node;
    struct keel_consensus raft;
    int node_ready;
    struct keel_sessions *sessions;
    uv_signal_t sigterm, sigint;
    uv_timer_t stop_timer;
    uint64_t drain_deadline;
    int stopping;
};

static void on_applied(void *data, struct keel_fsm_batch *b)
{
    struct keeld *k = data;
    keel_service_applied(k->svc, b);
}

static void on_change(void *data, bool is_leader, uint64_t leader)
{
    struct keeld *k = data;
    keel_service_leader_changed(k->svc, is_leader, leader);
}

static void on_peer(void *data, uint64_t id, const char *client, const char *zone)
{
    struct keeld *k = data;
    keel_members_learn(&k->members, id, client, zone);
    if (k->svc != NULL && k->node_ready)
        keel_service_member_learned(k->svc);
    /* A follower may learn the leader's client address only now. */
    if (k->svc != NULL && k->node_ready && id == keel_node_leader(k->node))
        keel_service_leader_changed(k->svc, keel_node_is_leader(k->node), id);
}

static uint64_t current_term(void *data)
{
    struct keeld *k = data;
    return keel_node_term(k->node);
}

static void session_gone(void *data, uint64_t id)
{
    struct keeld *k = data;
    keel_watch_session_closed(k->watch, id);
}

static void sessions_closed(void *data)
{
    struct keeld *k = data;
    uv_close((uv_handle_t *)&k->sigterm, NULL);
    uv_close((uv_handle_t *)&k->sigint, NULL);
    uv_close((uv_handle_t *)&k->stop_timer, NULL);
}

static void fsm_stopped(void *data)
{
    struct keeld *k = data;
    if (k->sessions != NULL)
        keel_sessions_close(k->sessions, sessions_closed, k);
    else
        sessions_closed(k);
}

static void node_stopped(void *data)
{
    struct keeld *k = data;
    keel_fsm_stop(k->fsm, fsm_stopped, k);
}

/* raft 0.15 was seen to crash in raft_close while a request of ours was still in flight (a
 * barrier just after an election): let what is in flight finish first, for a bounded time. */
static void close_node_when_idle(uv_timer_t *t)
{
    struct keeld *k = t->data;
    if (keel_node_inflight(k->node) > 0 && uv_now(&k->loop) < k->drain_deadline) {
        uv_timer_start(&k->stop_timer, close_node_when_idle, 5, 0);
        return;
    }
    keel_node_stop(k->node, node_stopped, k);
}

static void stop_now(struct keeld *k)
{
    if (k->stopping > 1)
        return;
    k->stopping = 2;
    uv_timer_stop(&k->stop_timer);
    KLOG_INFO("stopping");
    keel_service_stop(k->svc);
    keel_watch_stop(k->watch);
    k->drain_deadline = uv_now(&k->loop) + k->cfg.election_ms;
    close_node_when_idle(&k->stop_timer);
}

static void transfer_done(void *data)
{
    struct keeld *k = data;
    KLOG_INFO("leadership handed to %llu", (unsigned long long)keel_node_leader(k->node));
    stop_now(k);
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
        keel_node_transfer(k->node, transfer_done, k) == 0)
        return;
    stop_now(k);
}

int main(int argc, char **argv)
{
    /* A peer closing its socket must not kill the leader (research/raft.md trap 2). */
    signal(SIGPIPE, SIG_IGN);
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
    int status = 1;
    if (keel_mkdir_p(k.cfg.data_dir) != 0) {
        KLOG_ERROR("cannot create data dir %s", k.cfg.data_dir);
        goto out_config;
    }
    if (keel_members_init(&k.members, &k.cfg) != 0)
        goto out_config;
    uv_loop_init(&k.loop);

    char path[600];
    snprintf(path, sizeof(path), "%s/state", k.cfg.data_dir);
    struct keel_store_options so = {.path = path, .quota_bytes = k.cfg.quota_bytes};
    if ((rv = keel_store_open(&so, &k.store)) != 0) {
        KLOG_ERROR("cannot open the store at %s: %s", path, keel_strerror(rv));
        goto out_loop;
    }
    keel_members_load(&k.members, k.store);
    struct keel_store_stat st;
    keel_store_stat(k.store, &st);
    KLOG_INFO("store at %s: applied index %llu, revision %lld", path,
              (unsigned long long)st.applied_index, (long long)st.revision);

    char host[KEEL_ADDR_MAX];
    int port;
    keel_addr_split(k.cfg.listen_peer, host, sizeof(host), &port);
    struct keel_fsm_options fo = {.loop = &k.loop,
                                  .store = k.store,
                                  .cluster_id = k.cfg.cluster_id,
                                  .bind_host = host,
                                  .done = on_applied,
                                  .data = &k};
    if ((rv = keel_fsm_new(&fo, &k.fsm)) != 0) {
        KLOG_ERROR("cannot start the storage writer: %s", keel_strerror(rv));
        goto out_store;
    }
    struct keel_watch_options wo = {.loop = &k.loop,
                                    .store = k.store,
                                    .cluster_id = k.cfg.cluster_id,
                                    .member_id = k.cfg.member_id,
                                    .max_per_session = k.cfg.max_watches,
                                    .session_out_cap = 8u << 20,
                                    .progress_ms = k.cfg.watch_progress_ms,
                                    .term = current_term,
                                    .term_data = &k};
    if (keel_watch_init(&k.watch, &wo) != 0)
        goto out_fsm;
    struct keel_service_options svo = {.loop = &k.loop,
                                       .watch = k.watch,
                                       .cfg = &k.cfg,
                                       .store = k.store,
                                       .raft = &k.raft,
                                       .fsm = k.fsm,
                                       .members = &k.members};
    if (keel_service_init(&k.svc, &svo) != 0)
        goto out_fsm;
    struct keel_node_options no = {.loop = &k.loop,
                                   .cfg = &k.cfg,
                                   .fsm = k.fsm,
                                   .on_change = on_change,
                                   .on_peer = on_peer,
                                   .data = &k};
    if (keel_node_new(&no, &k.node) != 0)
        goto out_service;
    keel_node_consensus(k.node, &k.raft);
    int failed = 0;
    if (keel_node_start(k.node) != 0) {
        failed = 1;
    } else {
        k.node_ready = 1;
        if (keel_sessions_init(&k.sessions, &k.loop, &k.cfg, k.svc, err, sizeof(err)) != 0) {
            KLOG_ERROR("%s", err);
            failed = 1;
        }
    }
    /* A failed start unwinds through the normal shutdown, so raft closes its files. */
    if (failed)
        k.stopping = 1;
    keel_service_set_sessions(k.svc, k.sessions);
    keel_watch_set_sessions(k.watch, k.sessions);
    if (k.sessions != NULL)
        keel_sessions_on_close(k.sessions, session_gone, &k);
    uv_signal_init(&k.loop, &k.sigterm);
    uv_signal_init(&k.loop, &k.sigint);
    uv_timer_init(&k.loop, &k.stop_timer);
    k.sigterm.data = k.sigint.data = k.stop_timer.data = &k;
    uv_signal_start(&k.sigterm, on_signal, SIGTERM);
    uv_signal_start(&k.sigint, on_signal, SIGINT);
    if (k.stopping)
        stop_now(&k); /* after a failed start */
    else
        KLOG_INFO("serving clients on %s, peers on %s, zone %s, cluster %016llx",
                  k.cfg.listen_client, k.cfg.listen_peer, k.cfg.zone,
                  (unsigned long long)k.cfg.cluster_id);
    uv_run(&k.loop, UV_RUN_DEFAULT);
    status = failed ? 1 : 0;
    if (uv_loop_close(&k.loop) != 0)
        KLOG_WARN("handles left open at exit");
    keel_node_free(k.node);
    keel_sessions_free(k.sessions);
    keel_service_free(k.svc);
    keel_watch_free(k.watch);
    keel_fsm_free(k.fsm);
    keel_store_close(k.store);
    keel_members_close(&k.members);
    keel_config_close(&k.cfg);
    KLOG_INFO("stopped");
    return status;

out_service:
    keel_service_free(k.svc);
    if (k.watch != NULL) {
        keel_watch_stop(k.watch);
        uv_run(&k.loop, UV_RUN_DEFAULT);
        keel_watch_free(k.watch);
    }
out_fsm:
    keel_fsm_stop(k.fsm, NULL, NULL);
    uv_run(&k.loop, UV_RUN_DEFAULT);
    keel_fsm_free(k.fsm);
out_store:
    keel_store_close(k.store);
out_loop:
    uv_loop_close(&k.loop);
    keel_members_close(&k.members);
out_config:
    keel_config_close(&k.cfg);
    return status;
}
