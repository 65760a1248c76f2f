/*
 * Whether the keel cluster has a leader, cheaply, for etcd's "hasleader" streams.
 *
 * etcdctl watch, kube-apiserver's watches and clientv3's lease keep-alives open their streams
 * with `hasleader: true` metadata (WithRequireLeader): etcd refuses such a stream with
 * Unavailable "etcdserver: no leader" when its member knows no leader, and cancels it the same
 * way when the leader stays lost (etcd's monitorLeader). The gateway has no raft of its own: it
 * asks keel. One Status request (answered by whichever member libkeel picks; its `leader` field
 * is 0 when that member knows none) serves every stream asking within GW_LEADER_FRESH_MS, so a
 * gateway with thousands of such streams costs keel at most one Status per interval.
 *
 * Process-wide state on the gateway's one loop; keyed by the keel client it was learned through.
 */
#ifndef KEEL_GW_LEADER_H
#define KEEL_GW_LEADER_H

#include <stdbool.h>

#include "call.h"

#define GW_LEADER_FRESH_MS 1000 /* an answer younger than this is reused */

typedef void (*gw_leader_cb)(bool has_leader, void *data);

/* One pending question; owned by the asker (embed it), valid until answered or forgotten. */
struct gw_leader_ask {
    gw_leader_cb cb;
    void *data;
    struct gw_leader_ask *prev, *next;
    bool queued;
};

/*
 * Does the cluster behind ctx->ac have a leader? 1 yes, 0 no (a fresh answer was known), or -1:
 * a Status request is in flight and cb(has_leader, data) will be called once, from the loop,
 * unless gw_leader_forget(a) comes first. A Status that fails counts as "no leader".
 */
int gw_leader_check(struct gw_ctx *ctx, struct gw_leader_ask *a, gw_leader_cb cb, void *data);

/* Withdraw a question still pending (no callback after this); a no-op otherwise. */
void gw_leader_forget(struct gw_leader_ask *a);

#endif
