/*
 * Dispatch (see dispatch.h). The cheap answers are built here, in one arena reset around each
 * answer: members and status replies point into it until the responder has framed them.
 */
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>

#include "arena.h"
#include "err.h"
#include "reqkind.h"

#define PROTOCOL_VERSION 1

struct keel_dispatch {
    struct keel_dispatch_options o;
    struct keel_arena arena; /* per answer, reset after each */
    int stopped;
    /* The MoveLeader raft is carrying out (one at a time): whom to answer. Kept here rather
     * than allocated, so that a transfer raft never calls back (shutdown) leaves nothing. */
    struct {
        int busy;
        uint64_t session, id, target;
    } move;
    /* Requests for the leader that came while it handed leadership over, in order: raft would
     * refuse them with no leader to name, and a client told that backs off for tens of ms.
     * Held until the transfer ends (an election timeout at most), then taken again; their
     * number is bounded by the sessions' in-flight limits. */
    struct held *held_head, *held_tail;
};

struct held {
    struct held *next;
    uint64_t session;
    Keel__Request *req;
};

/* A linearizable range waiting for readindex. */
struct read {
    struct keel_dispatch *d;
    uint64_t session;
    Keel__Request *req;
};

static bool session_alive(struct keel_dispatch *d, uint64_t session)
{
    const struct keel_responder *out = d->o.reply->out;
    size_t bytes;
    return out->backlog(out->ctx, session, &bytes) == 0;
}

/* ---- reads ---- */

/* Takes req. Ranges in key order go to the streamer (pieces when large); the others are sorted
 * here, in one reply. */
static void serve_range(struct keel_dispatch *d, uint64_t session, Keel__Request *req)
{
    if (d->o.rangestream != NULL && keel_store_range_pageable(req->range)) {
        keel_rangestream_serve(d->o.rangestream, session, req);
        return;
    }
    Keel__RangeResponse *rr = NULL;
    int64_t rev = 0;
    keel_arena_reset(&d->arena);
    int err = keel_store_range(d->o.store, req->range, &d->arena, &rr, &rev);
    if (err != 0) {
        keel_reply_error(d->o.reply, session, req->id, err, NULL);
    } else {
        Keel__Response resp = KEEL__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = KEEL__RESPONSE__BODY_RANGE;
        resp.range = rr;
        keel_reply_send(d->o.reply, session, &resp, rev, KEEL_RESPOND_ANSWER);
    }
    keel_arena_reset(&d->arena);
    keel__request__free_unpacked(req, NULL);
}

static void read_ready(void *data, int err)
{
    struct read *r = data;
    const char *msg = NULL;
    if (err == 0 && r->d->o.auth != NULL)
        err = keel_auth_check(r->d->o.auth, r->session, r->req, &msg);
    if (err != 0)
        keel_reply_error(r->d->o.reply, r->session, r->req->id, err, msg);
    if (err == 0 && session_alive(r->d, r->session))
        serve_range(r->d, r->session, r->req);
    else
        keel__request__free_unpacked(r->req, NULL);
    free(r);
}

/* Takes req. */
static void linearizable_range(struct keel_dispatch *d, uint64_t session, Keel__Request *req)
{
    struct read *r = malloc(sizeof(*r));
    int err = r == NULL ? KEEL_ENOMEM : 0;
    if (err == 0) {
        r->d = d;
        r->session = session;
        r->req = req;
        err = keel_readindex_wait(d->o.readindex, read_ready, r);
    }
    if (err != 0) {
        keel_reply_error(d->o.reply, session, req->id, err, NULL);
        keel__request__free_unpacked(req, NULL);
        free(r);
    }
}

/* ---- cluster information ---- */

/* Every member, in the arena; *n_out of them. */
static Keel__Member **members_msg(struct keel_dispatch *d, size_t *n_out)
{
    return keel_members_msg(d->o.members, d->o.raft, &d->arena, n_out);
}

void keel_dispatch_hello(struct keel_dispatch *d, uint64_t session, const Keel__Hello *h)
{
    const struct keel_config *cfg = d->o.cfg;
    Keel__HelloResponse hr = KEEL__HELLO_RESPONSE__INIT;
    Keel__Error e;
    keel_arena_reset(&d->arena);
    hr.protocol_version = PROTOCOL_VERSION;
    hr.cluster_id = cfg->cluster_id;
    hr.member_id = cfg->member_id;
    hr.zone = (char *)cfg->zone;
    hr.version = KEEL_VERSION;
    hr.leader_id = d->o.raft->leader(d->o.raft->ctx);
    struct keel_member_info *li = keel_members_get(d->o.members, hr.leader_id);
    hr.leader_address = li ? li->client : "";
    hr.members = members_msg(d, &hr.n_members);
    if (h->protocol_version != PROTOCOL_VERSION) {
        keel_reply_error_fill(d->o.reply, KEEL_EUNSUPPORTED, "unsupported protocol version", &e);
        hr.error = &e;
    }
    const struct keel_responder *out = d->o.reply->out;
    out->send(out->ctx, session, &hr.base, KEEL_RESPOND_PUSH);
    keel_arena_reset(&d->arena);
}

static void serve_status(struct keel_dispatch *d, uint64_t session, const Keel__Request *req)
{
    const struct keel_config *cfg = d->o.cfg;
    struct keel_store_stat st;
    keel_store_stat(d->o.store, &st);
    Keel__StatusResponse sr = KEEL__STATUS_RESPONSE__INIT;
    sr.version = KEEL_VERSION;
    sr.dbsize = (int64_t)st.db_size;
    sr.dbsizeinuse = (int64_t)st.logical_size;
    sr.leader = d->o.raft->leader(d->o.raft->ctx);
    sr.raftindex = d->o.raft->last_index(d->o.raft->ctx);
    sr.raftterm = d->o.raft->term(d->o.raft->ctx);
    sr.raftappliedindex = st.applied_index;
    sr.zone = (char *)cfg->zone;
    sr.name = (char *)cfg->name;
    sr.compactrevision = st.compact_revision;
    sr.quotabytes = (int64_t)st.quota_bytes;
    /* etcd lists raised alarms among a status's errors, in this form. */
    char alarm[64];
    char *errors[1] = {alarm};
    if (st.nospace_member != 0) {
        snprintf(alarm, sizeof(alarm), "memberID:%llu alarm:NOSPACE",
                 (unsigned long long)st.nospace_member);
        sr.errors = errors;
        sr.n_errors = 1;
    }
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_STATUS;
    resp.status = &sr;
    keel_reply_send(d->o.reply, session, &resp, st.revision, KEEL_RESPOND_ANSWER);
}

/* The alarms raised (cluster state this member has applied): etcd's AlarmList. */
static void serve_alarm_list(struct keel_dispatch *d, uint64_t session, const Keel__Request *req)
{
    struct keel_store_stat st;
    keel_store_stat(d->o.store, &st);
    Keel__AlarmMember am = KEEL__ALARM_MEMBER__INIT;
    Keel__AlarmMember *list[1] = {&am};
    Keel__AlarmResponse ar = KEEL__ALARM_RESPONSE__INIT;
    if (st.nospace_member != 0) {
        am.memberid = st.nospace_member;
        am.alarm = KEEL__ALARM_MEMBER__ALARM_TYPE__NOSPACE;
        ar.alarms = list;
        ar.n_alarms = 1;
    }
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_ALARM;
    resp.alarm = &ar;
    keel_reply_send(d->o.reply, session, &resp, st.revision, KEEL_RESPOND_ANSWER);
}

/* ---- MoveLeader ---- */

static void move_done(void *data, int err)
{
    struct keel_dispatch *d = data;
    d->move.busy = 0;
    uint64_t target = d->move.target;
    uint64_t leader = d->o.raft->leader(d->o.raft->ctx);
    char msg[160];
    if (err == 0 && target != 0 && leader != 0 && leader != target) {
        snprintf(msg, sizeof(msg), "leadership went to %016llx, not to %016llx",
                 (unsigned long long)leader, (unsigned long long)target);
        keel_reply_error(d->o.reply, d->move.session, d->move.id, KEEL_ETIMEOUT, msg);
        return;
    }
    if (err != 0) {
        snprintf(msg, sizeof(msg),
                 "leadership transfer to %016llx timed out (it was not caught up, or did not win "
                 "the election)",
                 (unsigned long long)target);
        keel_reply_error(d->o.reply, d->move.session, d->move.id, err, msg);
        return;
    }
    Keel__MoveLeaderResponse ml = KEEL__MOVE_LEADER_RESPONSE__INIT;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = d->move.id;
    resp.body_case = KEEL__RESPONSE__BODY_MOVE_LEADER;
    resp.move_leader = &ml;
    keel_reply_send(d->o.reply, d->move.session, &resp, -1, KEEL_RESPOND_ANSWER);
}

/* etcd's MoveLeader: only the leader hands leadership over; the answer comes once the target
 * leads (or raft gave up after an election timeout). */
static void serve_move_leader(struct keel_dispatch *d, uint64_t session, const Keel__Request *req)
{
    uint64_t target = req->move_leader->targetid;
    const struct keel_consensus *raft = d->o.raft;
    char msg[160];
    if (!raft->is_leader(raft->ctx)) {
        keel_reply_error(d->o.reply, session, req->id, KEEL_ENOTLEADER, NULL);
        return;
    }
    if (target != 0 && target == d->o.cfg->member_id) {
        Keel__MoveLeaderResponse ml = KEEL__MOVE_LEADER_RESPONSE__INIT;
        Keel__Response resp = KEEL__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = KEEL__RESPONSE__BODY_MOVE_LEADER;
        resp.move_leader = &ml;
        keel_reply_send(d->o.reply, session, &resp, -1, KEEL_RESPOND_ANSWER);
        return;
    }
    if (d->move.busy) {
        keel_reply_error(d->o.reply, session, req->id, KEEL_ETOOMANYREQUESTS,
                         "a leadership transfer is already under way");
        return;
    }
    int err = raft->transfer(raft->ctx, target, move_done, d);
    if (err == KEEL_EMEMBERNOTFOUND) {
        snprintf(msg, sizeof(msg), "member %016llx is not a voting member of this cluster",
                 (unsigned long long)target);
        keel_reply_error(d->o.reply, session, req->id, err, msg);
        return;
    }
    if (err != 0) {
        keel_reply_error(d->o.reply, session, req->id, err,
                         err == KEEL_EUNAVAILABLE ? "no voting member to hand leadership to"
                                                  : NULL);
        return;
    }
    d->move.busy = 1;
    d->move.session = session;
    d->move.id = req->id;
    d->move.target = target;
}

/* A Defragment waiting for the storage writer: whom to answer. */
struct defrag_wait {
    struct keel_dispatch *d;
    uint64_t session, id;
};

static void defrag_done(void *data, int err, const char *msg, uint64_t before, uint64_t after)
{
    struct defrag_wait *w = data;
    if (err != 0) {
        keel_reply_error(w->d->o.reply, w->session, w->id, err, msg);
    } else {
        Keel__DefragmentResponse dr = KEEL__DEFRAGMENT_RESPONSE__INIT;
        dr.db_size_before = (int64_t)before;
        dr.db_size_after = (int64_t)after;
        Keel__Response resp = KEEL__RESPONSE__INIT;
        resp.id = w->id;
        resp.body_case = KEEL__RESPONSE__BODY_DEFRAGMENT;
        resp.defragment = &dr;
        keel_reply_send(w->d->o.reply, w->session, &resp, -1, KEEL_RESPOND_ANSWER);
    }
    free(w);
}

static void serve_defragment(struct keel_dispatch *d, uint64_t session, const Keel__Request *req)
{
    struct defrag_wait *w = d->o.fsm != NULL ? malloc(sizeof(*w)) : NULL;
    if (w == NULL) {
        keel_reply_error(d->o.reply, session, req->id, d->o.fsm ? KEEL_ENOMEM : KEEL_EUNSUPPORTED,
                         NULL);
        return;
    }
    *w = (struct defrag_wait){d, session, req->id};
    if (keel_fsm_defrag(d->o.fsm, defrag_done, w) != 0) {
        free(w);
        keel_reply_error(d->o.reply, session, req->id, KEEL_ENOMEM, NULL);
    }
}

static void serve_member_list(struct keel_dispatch *d, uint64_t session, const Keel__Request *req)
{
    keel_arena_reset(&d->arena);
    Keel__MemberListResponse ml = KEEL__MEMBER_LIST_RESPONSE__INIT;
    ml.members = members_msg(d, &ml.n_members);
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_MEMBER_LIST;
    resp.member_list = &ml;
    keel_reply_send(d->o.reply, session, &resp, -1, KEEL_RESPOND_ANSWER);
    keel_arena_reset(&d->arena);
}

/* ---- the switch ---- */

static void dispatch_checked(void *ctx, uint64_t session, Keel__Request *req);

void keel_dispatch_request(struct keel_dispatch *d, uint64_t session, Keel__Request *req)
{
    if (d->stopped) {
        keel_reply_error(d->o.reply, session, req->id, KEEL_EUNAVAILABLE, "member is stopping");
        keel__request__free_unpacked(req, NULL);
        return;
    }
    const struct keel_consensus *raft = d->o.raft;
    if (raft->transferring != NULL && keel_reqkind_is_leader_only(req) &&
        req->body_case != KEEL__REQUEST__BODY_MOVE_LEADER && raft->transferring(raft->ctx)) {
        struct held *h = malloc(sizeof(*h));
        if (h != NULL) {
            h->next = NULL;
            h->session = session;
            h->req = req;
            if (d->held_tail)
                d->held_tail->next = h;
            else
                d->held_head = h;
            d->held_tail = h;
            return;
        }
        /* No memory to hold it: raft refuses it now, as it would have. */
    }
    if (d->o.auth != NULL)
        keel_auth_intake(d->o.auth, session, req, dispatch_checked, d); /* takes req */
    else
        dispatch_checked(d, session, req);
}

/* A request past its auth intake (auth.h). Takes req. */
static void dispatch_checked(void *ctx, uint64_t session, Keel__Request *req)
{
    struct keel_dispatch *d = ctx;
    if (d->stopped) {
        keel_reply_error(d->o.reply, session, req->id, KEEL_EUNAVAILABLE, "member is stopping");
        keel__request__free_unpacked(req, NULL);
        return;
    }
    const struct keel_reqkind *kind = keel_reqkind_of(req->body_case);
    if (req->body_case == KEEL__REQUEST__BODY_ALARM && req->alarm != NULL &&
        req->alarm->action == KEEL__ALARM_REQUEST__ALARM_ACTION__GET) {
        serve_alarm_list(d, session, req); /* a read: the rest of ALARM goes through the log */
        keel__request__free_unpacked(req, NULL);
        return;
    }
    if (kind != NULL && kind->command != KEEL__COMMAND__OP__NOT_SET) {
        if (req->body_case == KEEL__REQUEST__BODY_COMPACTION &&
            keel_compactor_take(d->o.compactor, session, req))
            return; /* req is owned by the compactor */
        if (req->body_case == KEEL__REQUEST__BODY_LEASE_GRANT)
            req->lease_grant->ttl = keel_lessor_clamp_ttl(d->o.lessor, req->lease_grant->ttl);
        keel_propose_request(d->o.propose, session, req);
        return; /* req is owned by the batch */
    }
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_RANGE:
        if (!req->range->serializable) {
            linearizable_range(d, session, req);
            return; /* req is owned by the read */
        }
        if (d->o.progress != NULL && d->o.progress->committed < d->o.progress->shown_before) {
            /* Its store restarted behind what its readers saw: answering now could go back in
             * time. Raft's replay brings it back once it hears from the leader. */
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "member restarted and is replaying its log (applied index %llu of %llu it "
                     "had shown): try another member",
                     (unsigned long long)d->o.progress->committed,
                     (unsigned long long)d->o.progress->shown_before);
            keel_reply_error(d->o.reply, session, req->id, KEEL_EUNAVAILABLE, msg);
            break;
        }
        serve_range(d, session, req);
        return; /* req was taken */
    case KEEL__REQUEST__BODY_STATUS:
        serve_status(d, session, req);
        break;
    case KEEL__REQUEST__BODY_MEMBER_LIST:
        serve_member_list(d, session, req);
        break;
    case KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE:
    case KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE:
    case KEEL__REQUEST__BODY_LEASE_LEASES:
        keel_lessor_request(d->o.lessor, session, req);
        break;
    case KEEL__REQUEST__BODY_SNAPSHOT:
        keel_snapstream_start(d->o.snapstream, session, req->id);
        break;
    case KEEL__REQUEST__BODY_DEFRAGMENT:
        serve_defragment(d, session, req);
        break;
    case KEEL__REQUEST__BODY_MOVE_LEADER:
        serve_move_leader(d, session, req);
        break;
    case KEEL__REQUEST__BODY_MEMBER_ADD:
    case KEEL__REQUEST__BODY_MEMBER_REMOVE:
    case KEEL__REQUEST__BODY_MEMBER_PROMOTE:
    case KEEL__REQUEST__BODY_MEMBER_UPDATE:
        if (d->o.member_change != NULL)
            d->o.member_change(d->o.member_ctx, session, req);
        else
            keel_reply_error(d->o.reply, session, req->id, KEEL_EUNSUPPORTED,
                             "membership changes are not served here");
        break;
    case KEEL__REQUEST__BODY_WATCH_CREATE:
    case KEEL__REQUEST__BODY_WATCH_CANCEL:
    case KEEL__REQUEST__BODY_WATCH_PROGRESS:
        keel_watch_request(d->o.watch, session, req);
        break;
    case KEEL__REQUEST__BODY__NOT_SET:
        keel_reply_error(d->o.reply, session, req->id, KEEL_EINVAL, "request carries no body");
        break;
    default:
        keel_reply_error(d->o.reply, session, req->id, KEEL_EUNSUPPORTED,
                         "request type not supported yet");
        break;
    }
    keel__request__free_unpacked(req, NULL);
}

void keel_dispatch_fetch_request(struct keel_dispatch *d, uint64_t session, Keel__Request *req)
{
    if (req->body_case == KEEL__REQUEST__BODY_SNAPSHOT)
        keel_snapstream_start(d->o.snapstream, session, req->id);
    else
        keel_reply_error(d->o.reply, session, req->id, KEEL_EUNSUPPORTED,
                         "a member's checkpoint fetch connection may ask for a checkpoint only");
    keel__request__free_unpacked(req, NULL);
}

void keel_dispatch_refuse(struct keel_dispatch *d, uint64_t session, int err, const char *msg)
{
    keel_reply_refuse(d->o.reply, session, err, msg);
}

void keel_dispatch_leader_changed(struct keel_dispatch *d)
{
    const struct keel_consensus *raft = d->o.raft;
    if (d->held_head == NULL || (raft->transferring != NULL && raft->transferring(raft->ctx)))
        return;
    struct held *h = d->held_head;
    d->held_head = d->held_tail = NULL;
    while (h != NULL) {
        struct held *next = h->next;
        keel_dispatch_request(d, h->session, h->req); /* takes req; a closed session is fine */
        free(h);
        h = next;
    }
}

void keel_dispatch_stop(struct keel_dispatch *d)
{
    d->stopped = 1;
}

int keel_dispatch_new(const struct keel_dispatch_options *o, struct keel_dispatch **out)
{
    struct keel_dispatch *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return KEEL_ENOMEM;
    d->o = *o;
    keel_arena_init(&d->arena, 0);
    *out = d;
    return 0;
}

void keel_dispatch_free(struct keel_dispatch *d)
{
    if (d == NULL)
        return;
    for (struct held *h = d->held_head, *next; h != NULL; h = next) {
        next = h->next;
        keel__request__free_unpacked(h->req, NULL);
        free(h);
    }
    keel_arena_close(&d->arena);
    free(d);
}
