/* Membership changes (see membership.h). */
#include "membership.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "err.h"
#include "log.h"

#define TICK_MS           100 /* auto-promotion and the removed member's watch look this often */
#define REMOVED_ELECTIONS 3   /* a tombstoned member that hears no leader this long stops */

struct keel_membership {
    struct keel_membership_options o;
    uv_timer_t timer;
    uv_timer_t wait; /* a record's time to be applied; then a removal's two heartbeats */
    int timer_open;
    struct keel_arena arena; /* answers, reset after each */
    uint64_t leader_seen;    /* uv_now when a leader was last known */
    int removed_said;
    /* When each member was last seen answering the leader (raft's flag set, or its match index
     * moved): raft clears its flag every election timeout, so one look says little. */
    struct seen {
        uint64_t id, match, at;
    } seen[KEEL_MEMBERS_MAX];
    size_t n_seen;
    int leading;            /* this member led at the last look */
    uint64_t leading_since; /* uv_now when it began to */
    /* The change under way. session 0: one of keeld's own (a promotion), nobody to answer. */
    struct {
        int busy;
        enum keel_node_change kind;
        uint64_t session, req_id, id;
        char name[KEEL_NAME_MAX], peer[KEEL_ADDR_MAX], zone[KEEL_NAME_MAX];
        bool learner;
        bool update; /* a member update: a record only, no raft change (kind unused) */
        /* The member_attrs record proposed for it: the proposer borrows it until the turn's
         * end, and one change at a time means one record at a time. */
        Keel__Member rec;
        char *peer_urls[1];
        uint64_t record_id; /* the record's request id on this member (keel_propose_command) */
        /* What follows once the record is applied here (keel_membership_applied); NULL: no
         * step waits for it. */
        void (*after)(struct keel_membership *ms);
    } op;
};

/* ---- who is a member ---- */

/* The raft configuration, with active meaning "seen answering the leader within an election
 * timeout" (see struct seen). */
static size_t conf_of(struct keel_membership *ms, struct keel_consensus_member *out)
{
    size_t n = keel_node_members(ms->o.node, out, KEEL_MEMBERS_MAX);
    n = n < KEEL_MEMBERS_MAX ? n : KEEL_MEMBERS_MAX;
    uint64_t now = uv_now(ms->o.loop);
    bool leader = keel_node_is_leader(ms->o.node);
    if (leader && !ms->leading) {
        ms->leading_since = now;
        ms->n_seen = 0; /* what another leader saw is not ours to go by */
    }
    ms->leading = leader;
    /* A majority voted for a new leader a moment ago: until it has watched for an election
     * timeout itself, that is what it knows. */
    bool fresh = leader && now - ms->leading_since <= ms->o.cfg->election_ms;
    for (size_t i = 0; i < n; i++) {
        struct seen *s = NULL;
        for (size_t j = 0; j < ms->n_seen && s == NULL; j++)
            if (ms->seen[j].id == out[i].id)
                s = &ms->seen[j];
        if (s == NULL && ms->n_seen < KEEL_MEMBERS_MAX) {
            s = &ms->seen[ms->n_seen++];
            *s = (struct seen){out[i].id, out[i].match, 0};
        }
        if (s == NULL)
            continue;
        if (out[i].active || out[i].match != s->match)
            s->at = now;
        s->match = out[i].match;
        out[i].active =
            fresh || (s->at != 0 && now - s->at <= (uint64_t)ms->o.cfg->election_ms + TICK_MS);
    }
    return n;
}

static const struct keel_consensus_member *conf_find(const struct keel_consensus_member *c,
                                                     size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (c[i].id == id)
            return &c[i];
    return NULL;
}

static const char *zone_of(struct keel_membership *ms, uint64_t id)
{
    const struct keel_member_info *mi = keel_members_get(ms->o.members, id);
    return mi != NULL ? mi->zone : "";
}

static const char *name_of(struct keel_membership *ms, uint64_t id)
{
    const struct keel_member_info *mi = keel_members_get(ms->o.members, id);
    return mi != NULL && mi->name[0] ? mi->name : "(unstarted)";
}

/* ---- zones ---- */

/* The first zone (a named one) losing which would leave the other voters short of a quorum, with
 * its count of voters in *in_zone; NULL when there is none. */
const char *keel_membership_critical_zone(const char **zones, size_t n, size_t *in_zone)
{
    size_t quorum = n / 2 + 1;
    for (size_t i = 0; i < n; i++) {
        if (zones[i][0] == '\0')
            continue; /* a member of no zone is lost alone */
        size_t count = 0;
        for (size_t j = 0; j < n; j++)
            count += strcmp(zones[i], zones[j]) == 0;
        if (n - count < quorum) {
            *in_zone = count;
            return zones[i];
        }
    }
    return NULL;
}

static bool critical(const char **zones, size_t n, const char *zone)
{
    size_t quorum = n / 2 + 1, count = 0;
    for (size_t j = 0; j < n; j++)
        count += strcmp(zone, zones[j]) == 0;
    return n - count < quorum;
}

/*
 * The voters after a change (conf's, with add in add_zone, without drop): refused with why when
 * losing one zone would leave the others short of a quorum and that was not so before. A
 * cluster of fewer than three voters survives no zone's loss anyway: growing it is never
 * refused. 0 or KEEL_EINVAL.
 */
static int zone_check(struct keel_membership *ms, const struct keel_consensus_member *conf,
                      size_t n, uint64_t add, const char *add_zone, uint64_t drop, const char *what,
                      char *why, size_t len)
{
    const char *before[KEEL_MEMBERS_MAX + 1], *after[KEEL_MEMBERS_MAX + 1];
    size_t nb = 0, na = 0;
    for (size_t i = 0; i < n; i++) {
        if (!conf[i].voter)
            continue;
        before[nb++] = zone_of(ms, conf[i].id);
        if (conf[i].id != drop && conf[i].id != add)
            after[na++] = zone_of(ms, conf[i].id);
    }
    if (add != 0)
        after[na++] = add_zone;
    if (na == 0) {
        snprintf(why, len, "%s would leave the cluster without a voting member", what);
        return KEEL_EINVAL;
    }
    if (nb < 3)
        return 0;
    size_t count = 0;
    const char *z = keel_membership_critical_zone(after, na, &count);
    if (z == NULL || critical(before, nb, z))
        return 0;
    snprintf(why, len,
             "%s would put %zu of the %zu voting members in zone %s: losing that zone would leave "
             "%zu, short of a quorum of %zu (--force to do it anyway)",
             what, count, na, z, na - count, na / 2 + 1);
    return KEEL_EINVAL;
}

/*
 * The voters after a change (conf's, plus add, minus drop) that answer the leader (heard from in
 * its last election timeout): refused
 * with why when they are not a quorum of the new configuration, which could then never commit
 * anything, this change included (etcd's strict reconfiguration check). Not forceable. 0 or
 * KEEL_EINVAL (not UNAVAILABLE: clients retry that, and asking again changes nothing).
 */
static int quorum_check(const struct keel_consensus_member *conf, size_t n, uint64_t add,
                        uint64_t drop, const char *what, char *why, size_t len)
{
    size_t voters = 0, live = 0;
    for (size_t i = 0; i < n; i++) {
        if (conf[i].id == drop || !(conf[i].voter || conf[i].id == add))
            continue;
        voters++;
        live += conf[i].active;
    }
    if (voters == 0 || live >= voters / 2 + 1)
        return 0;
    snprintf(why, len,
             "%s would leave %zu voting members of which only %zu answer the leader, short of a "
             "quorum of %zu: bring members back first",
             what, voters, live, voters / 2 + 1);
    return KEEL_EINVAL;
}

/* ---- answers ---- */

static void answer(struct keel_membership *ms, Keel__Response *resp, uint64_t session)
{
    keel_reply_send(ms->o.reply, session, resp, -1, KEEL_RESPOND_ANSWER);
    keel_arena_reset(&ms->arena);
}

static void answer_done(struct keel_membership *ms)
{
    uint64_t session = ms->op.session;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = ms->op.req_id;
    size_t n = 0;
    Keel__Member **v = keel_members_msg(ms->o.members, ms->o.raft, &ms->arena, &n);
    if (v == NULL) {
        keel_arena_reset(&ms->arena);
        keel_reply_error(ms->o.reply, session, resp.id, KEEL_ENOMEM,
                         "the change is made; its answer could not be built");
        return;
    }
    Keel__MemberAddResponse add = KEEL__MEMBER_ADD_RESPONSE__INIT;
    Keel__MemberRemoveResponse rm = KEEL__MEMBER_REMOVE_RESPONSE__INIT;
    Keel__MemberPromoteResponse pr = KEEL__MEMBER_PROMOTE_RESPONSE__INIT;
    Keel__MemberUpdateResponse up = KEEL__MEMBER_UPDATE_RESPONSE__INIT;
    if (ms->op.update) {
        up.members = v;
        up.n_members = n;
        resp.body_case = KEEL__RESPONSE__BODY_MEMBER_UPDATE;
        resp.member_update = &up;
        answer(ms, &resp, session);
        return;
    }
    switch (ms->op.kind) {
    case KEEL_NODE_ADD:
        add.members = v;
        add.n_members = n;
        for (size_t i = 0; i < n; i++) {
            if (v[i]->id != ms->op.id)
                continue;
            /* Its record may not be applied here yet: say what the request said. */
            add.member = v[i];
            v[i]->name = ms->op.name;
            v[i]->zone = ms->op.zone;
        }
        resp.body_case = KEEL__RESPONSE__BODY_MEMBER_ADD;
        resp.member_add = &add;
        break;
    case KEEL_NODE_REMOVE:
        rm.members = v;
        rm.n_members = n;
        resp.body_case = KEEL__RESPONSE__BODY_MEMBER_REMOVE;
        resp.member_remove = &rm;
        break;
    default:
        pr.members = v;
        pr.n_members = n;
        resp.body_case = KEEL__RESPONSE__BODY_MEMBER_PROMOTE;
        resp.member_promote = &pr;
        break;
    }
    answer(ms, &resp, session);
}

static void fail_op(struct keel_membership *ms, int err, const char *msg)
{
    ms->op.busy = 0;
    if (ms->op.session != 0)
        keel_reply_error(ms->o.reply, ms->op.session, ms->op.req_id, err, msg);
    else
        KLOG_WARN("promoting member %s (%016llx): %s", ms->op.name, (unsigned long long)ms->op.id,
                  msg ? msg : keel_strerror(err));
}

/* ---- the steps ---- */

/* A change begins: what it is about, for the record, the log and the answer. */
static void op_begin(struct keel_membership *ms, enum keel_node_change kind, uint64_t id,
                     const char *name, const char *peer, const char *zone, bool learner)
{
    ms->op.kind = kind;
    ms->op.id = id;
    snprintf(ms->op.name, sizeof(ms->op.name), "%s", name);
    snprintf(ms->op.peer, sizeof(ms->op.peer), "%s", peer);
    snprintf(ms->op.zone, sizeof(ms->op.zone), "%s", zone);
    ms->op.learner = learner;
    ms->op.after = NULL;
    ms->op.busy = 1;
}

/* A record that has not come back applied in this many election timeouts is given up. */
#define RECORD_ELECTIONS 10

static void record_lost(uv_timer_t *t)
{
    struct keel_membership *ms = t->data;
    ms->op.after = NULL;
    fail_op(ms, KEEL_ETIMEOUT, "the change's record was not applied in time; ask again");
}

/*
 * Propose the member_attrs record of the member the op is about (removed: its tombstone). When
 * after is not NULL it runs once the record is applied on this member: every member that has
 * the log up to there knows it (keel_membership_applied, as the lessor waits for its own
 * commands).
 */
static int propose_record(struct keel_membership *ms, bool removed,
                          void (*after)(struct keel_membership *ms))
{
    Keel__Member *r = &ms->op.rec;
    keel__member__init(r);
    r->id = ms->op.id;
    r->name = ms->op.name;
    r->zone = ms->op.zone;
    r->islearner = ms->op.learner;
    r->removed = removed;
    ms->op.peer_urls[0] = ms->op.peer;
    r->peerurls = ms->op.peer_urls;
    r->n_peerurls = ms->op.peer[0] != '\0';
    Keel__Command c = KEEL__COMMAND__INIT;
    c.op_case = KEEL__COMMAND__OP_MEMBER_ATTRS;
    c.member_attrs = r;
    int err = keel_propose_command(ms->o.propose, &c, NULL, &ms->op.record_id);
    if (err == 0 && after != NULL) {
        ms->op.after = after;
        uv_timer_start(&ms->wait, record_lost, (uint64_t)RECORD_ELECTIONS * ms->o.cfg->election_ms,
                       0);
    }
    return err;
}

static void change_done(void *data, int err)
{
    struct keel_membership *ms = data;
    if (err != 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "%s%s", keel_strerror(err),
                 err == KEEL_ETIMEOUT ? ": the member did not catch up in raft's rounds" : "");
        fail_op(ms, err, msg);
        return;
    }
    ms->op.busy = 0;
    static const char *const done[] = {"added as a learner", "promoted to a voting member",
                                       "removed"};
    KLOG_INFO("member %s (%016llx, %s) %s", ms->op.name, (unsigned long long)ms->op.id, ms->op.peer,
              done[ms->op.kind]);
    if (ms->op.session != 0)
        answer_done(ms);
}

static void start_change(struct keel_membership *ms)
{
    int err = keel_node_change(ms->o.node, ms->op.kind, ms->op.id, ms->op.peer, change_done, ms);
    if (err != 0)
        fail_op(ms, err,
                err == KEEL_ETOOMANYREQUESTS ? "another membership change is under way" : NULL);
}

static void told(uv_timer_t *t)
{
    struct keel_membership *ms = t->data;
    if (!keel_node_is_leader(ms->o.node)) {
        fail_op(ms, KEEL_EUNKNOWN, "leadership was lost before the member was removed; ask again");
        return;
    }
    start_change(ms);
}

/* The tombstone is applied here. Followers learn that it is committed from the leader's next
 * message, and the member removed gets none once raft forgets it: so raft forgets it only after
 * two heartbeats, which tell every member that hears them (the member removed included) to
 * apply it. */
static void tombstone_applied(struct keel_membership *ms)
{
    uv_timer_start(&ms->wait, told, 2 * (uint64_t)ms->o.cfg->heartbeat_ms, 0);
}

/* A member update's record is applied here, so the member table (publish.c loads it first)
 * holds the new address the answer lists; every member that applies it dials it. */
static void update_applied(struct keel_membership *ms)
{
    ms->op.busy = 0;
    KLOG_INFO("member %s (%016llx) now at peer address %s", ms->op.name,
              (unsigned long long)ms->op.id, ms->op.peer);
    answer_done(ms);
}

/* Removing the leader itself: leadership goes first, and the client asks the new leader. */
static void handed_away(void *data, int err)
{
    struct keel_membership *ms = data;
    fail_op(ms, err == 0 ? KEEL_ENOTLEADER : err,
            err == 0 ? "this member handed leadership away before its own removal: ask the "
                       "leader to remove it"
                     : "could not hand leadership away before this member's own removal");
}

/* ---- requests ---- */

/* "http://HOST:PORT" or "HOST:PORT" into out, HOST an IPv4 literal or a DNS name (kept as given:
 * members resolve it at each connect); -1 when it is neither, with what is wrong in why. */
static int peer_url(const char *url, char *out, size_t len, const char *what, char *why,
                    size_t whylen)
{
    const char *p = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    char host[KEEL_ADDR_MAX], bad[160] = "too long";
    int port;
    size_t n = strlen(p);
    if (n > 0 && p[n - 1] == '/')
        n--;
    if (n < len) {
        memcpy(out, p, n);
        out[n] = '\0';
        if (keel_addr_split_any(out, host, sizeof(host), &port, bad, sizeof(bad)) > 0)
            return 0;
    }
    snprintf(why, whylen,
             "%s needs one peer URL, http://HOST:PORT or HOST:PORT (HOST an IPv4 address or a host "
             "name): %s",
             what, bad);
    return -1;
}

/* The member id of conf, or NULL after answering MEMBER_NOT_FOUND. */
static const struct keel_consensus_member *
member_or_refuse(struct keel_membership *ms, uint64_t session, const Keel__Request *req,
                 const struct keel_consensus_member *conf, size_t n, uint64_t id)
{
    const struct keel_consensus_member *m = conf_find(conf, n, id);
    if (m == NULL) {
        char why[80];
        snprintf(why, sizeof(why), "member %016llx is not a member of this cluster",
                 (unsigned long long)id);
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EMEMBERNOTFOUND, why);
    }
    return m;
}

static void serve_add(struct keel_membership *ms, uint64_t session, const Keel__Request *req,
                      const struct keel_consensus_member *conf, size_t n)
{
    const Keel__MemberAddRequest *a = req->member_add;
    char why[320];
    const char *name = a->name ? a->name : "";
    if (name[0] == '\0' || strlen(name) >= KEEL_NAME_MAX) {
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EINVAL,
                         "member add needs the new member's name (1-63 bytes): keel derives the "
                         "member id from it, as keeld --name does");
        return;
    }
    char peer[KEEL_ADDR_MAX];
    char bad[320];
    if (a->n_peerurls != 1 ||
        peer_url(a->peerurls[0], peer, sizeof(peer), "member add", bad, sizeof(bad)) != 0) {
        if (a->n_peerurls != 1)
            snprintf(bad, sizeof(bad), "member add needs one peer URL, http://HOST:PORT");
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EINVAL, bad);
        return;
    }
    const char *zone = a->zone ? a->zone : "";
    if (strlen(zone) >= KEEL_NAME_MAX) {
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EINVAL, "zone longer than 63 bytes");
        return;
    }
    uint64_t id = keel_hash64(name, strlen(name));
    for (size_t i = 0; i < n; i++) {
        if (conf[i].id == id || strcmp(conf[i].peer, peer) == 0) {
            snprintf(why, sizeof(why), "member %s (%016llx) at %s is already a member",
                     name_of(ms, conf[i].id), (unsigned long long)conf[i].id, conf[i].peer);
            keel_reply_error(ms->o.reply, session, req->id, KEEL_EMEMBEREXISTS, why);
            return;
        }
    }
    if (!a->islearner && !a->force &&
        zone_check(ms, conf, n, id, zone, 0, "adding this member", why, sizeof(why)) != 0) {
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EINVAL, why);
        return;
    }
    op_begin(ms, KEEL_NODE_ADD, id, name, peer, zone, a->islearner);
    int err = propose_record(ms, false, NULL);
    if (err != 0) {
        fail_op(ms, err, NULL);
        return;
    }
    start_change(ms);
}

static void serve_remove(struct keel_membership *ms, uint64_t session, const Keel__Request *req,
                         const struct keel_consensus_member *conf, size_t n)
{
    const Keel__MemberRemoveRequest *r = req->member_remove;
    char why[320];
    const struct keel_consensus_member *m = member_or_refuse(ms, session, req, conf, n, r->id);
    if (m == NULL)
        return;
    int err = 0;
    if (m->voter && !r->force)
        err = zone_check(ms, conf, n, 0, "", r->id, "removing this member", why, sizeof(why));
    if (err == 0 && m->voter)
        err = quorum_check(conf, n, 0, r->id, "removing this member", why, sizeof(why));
    if (err != 0) {
        keel_reply_error(ms->o.reply, session, req->id, err, why);
        return;
    }
    const struct keel_member_info *mi = keel_members_get(ms->o.members, r->id);
    op_begin(ms, KEEL_NODE_REMOVE, r->id, mi ? mi->name : "", m->peer, mi ? mi->zone : "",
             mi ? mi->learner : false);
    if (r->id == ms->o.cfg->member_id) {
        err = keel_node_transfer(ms->o.node, 0, handed_away, ms);
        if (err != 0)
            fail_op(ms, err, "could not hand leadership away before this member's own removal");
        return;
    }
    err = propose_record(ms, true, tombstone_applied);
    if (err != 0)
        fail_op(ms, err, NULL);
}

static void serve_promote(struct keel_membership *ms, uint64_t session, const Keel__Request *req,
                          const struct keel_consensus_member *conf, size_t n)
{
    const Keel__MemberPromoteRequest *p = req->member_promote;
    char why[320];
    const struct keel_consensus_member *m = member_or_refuse(ms, session, req, conf, n, p->id);
    if (m == NULL)
        return;
    if (m->voter) {
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EINVAL,
                         "can only promote a learner member (this one votes already)");
        return;
    }
    if (!m->caught_up) {
        snprintf(why, sizeof(why),
                 "can only promote a learner member which is in sync with the leader: %s "
                 "(%016llx) is behind or not answering",
                 name_of(ms, p->id), (unsigned long long)p->id);
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EINVAL, why);
        return;
    }
    int zerr = 0;
    if (!p->force)
        zerr = zone_check(ms, conf, n, p->id, zone_of(ms, p->id), 0, "promoting this member", why,
                          sizeof(why));
    if (zerr == 0)
        zerr = quorum_check(conf, n, p->id, 0, "promoting this member", why, sizeof(why));
    if (zerr != 0) {
        keel_reply_error(ms->o.reply, session, req->id, zerr, why);
        return;
    }
    const struct keel_member_info *mi = keel_members_get(ms->o.members, p->id);
    /* A voter from now on: the record says so too. */
    op_begin(ms, KEEL_NODE_PROMOTE, p->id, mi ? mi->name : "", m->peer, mi ? mi->zone : "", false);
    int err = propose_record(ms, false, NULL);
    if (err != 0) {
        fail_op(ms, err, NULL);
        return;
    }
    start_change(ms);
}

static void serve_update(struct keel_membership *ms, uint64_t session, const Keel__Request *req,
                         const struct keel_consensus_member *conf, size_t n)
{
    const Keel__MemberUpdateRequest *u = req->member_update;
    char why[320], peer[KEEL_ADDR_MAX];
    const struct keel_consensus_member *m = member_or_refuse(ms, session, req, conf, n, u->id);
    if (m == NULL)
        return;
    char bad[320];
    if (u->n_peerurls != 1 ||
        peer_url(u->peerurls[0], peer, sizeof(peer), "member update", bad, sizeof(bad)) != 0) {
        if (u->n_peerurls != 1)
            snprintf(bad, sizeof(bad), "member update needs one peer URL, http://HOST:PORT");
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EINVAL, bad);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const char *moved = keel_members_moved_peer(ms->o.members, conf[i].id);
        if (conf[i].id != u->id && strcmp(moved ? moved : conf[i].peer, peer) == 0) {
            snprintf(why, sizeof(why), "peer address %s is member %s's (%016llx)", peer,
                     name_of(ms, conf[i].id), (unsigned long long)conf[i].id);
            keel_reply_error(ms->o.reply, session, req->id, KEEL_EMEMBEREXISTS, why);
            return;
        }
    }
    const struct keel_member_info *mi = keel_members_get(ms->o.members, u->id);
    /* A record only: no raft change, so the kind is not used. */
    op_begin(ms, KEEL_NODE_ADD, u->id, mi ? mi->name : "", peer, mi ? mi->zone : "",
             mi ? mi->learner : !m->voter);
    ms->op.update = true;
    int err = propose_record(ms, false, update_applied);
    if (err != 0)
        fail_op(ms, err, NULL);
}

void keel_membership_serve(struct keel_membership *ms, uint64_t session, const Keel__Request *req)
{
    if (!keel_node_is_leader(ms->o.node)) {
        keel_reply_error(ms->o.reply, session, req->id, KEEL_ENOTLEADER, NULL);
        return;
    }
    if (ms->op.busy || keel_node_changing(ms->o.node)) {
        keel_reply_error(ms->o.reply, session, req->id, KEEL_ETOOMANYREQUESTS,
                         "another membership change is under way");
        return;
    }
    struct keel_consensus_member conf[KEEL_MEMBERS_MAX];
    size_t n = conf_of(ms, conf);
    ms->op.session = session;
    ms->op.req_id = req->id;
    ms->op.update = false;
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_MEMBER_ADD:
        serve_add(ms, session, req, conf, n);
        break;
    case KEEL__REQUEST__BODY_MEMBER_REMOVE:
        serve_remove(ms, session, req, conf, n);
        break;
    case KEEL__REQUEST__BODY_MEMBER_PROMOTE:
        serve_promote(ms, session, req, conf, n);
        break;
    case KEEL__REQUEST__BODY_MEMBER_UPDATE:
        serve_update(ms, session, req, conf, n);
        break;
    default:
        keel_reply_error(ms->o.reply, session, req->id, KEEL_EUNSUPPORTED, NULL);
        break;
    }
}

void keel_membership_applied(struct keel_membership *ms, const struct keel_fsm_batch *b)
{
    if (ms == NULL || ms->op.after == NULL)
        return;
    for (size_t i = 0; i < b->n; i++) {
        const struct keel_fsm_result *r = &b->results[i];
        if (r->origin != ms->o.cfg->member_id || r->request_id != ms->op.record_id)
            continue;
        void (*after)(struct keel_membership *) = ms->op.after;
        ms->op.after = NULL;
        uv_timer_stop(&ms->wait);
        after(ms);
        return;
    }
}

void keel_membership_leader_changed(struct keel_membership *ms, bool is_leader)
{
    if (is_leader || ms->op.after == NULL)
        return;
    ms->op.after = NULL;
    uv_timer_stop(&ms->wait);
    fail_op(ms, KEEL_EUNKNOWN, "leadership was lost before the change was made; ask again");
}

/* ---- the tick: promotions, and the member that was removed ---- */

static void promote_caught_up(struct keel_membership *ms, const struct keel_consensus_member *conf,
                              size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct keel_member_info *mi = keel_members_get(ms->o.members, conf[i].id);
        /* No record yet (its add is still being applied): wait for it. */
        if (conf[i].voter || !conf[i].caught_up || mi == NULL || mi->learner || mi->removed)
            continue;
        ms->op.session = 0;
        ms->op.update = false;
        op_begin(ms, KEEL_NODE_PROMOTE, conf[i].id, mi->name, conf[i].peer, mi->zone, false);
        KLOG_INFO("member %s (%016llx) caught up: making it a voting member", mi->name,
                  (unsigned long long)conf[i].id);
        start_change(ms);
        return;
    }
}

static void tick(uv_timer_t *t)
{
    struct keel_membership *ms = t->data;
    uint64_t now = uv_now(ms->o.loop);
    if (keel_node_leader(ms->o.node) != 0)
        ms->leader_seen = now;
    struct keel_consensus_member conf[KEEL_MEMBERS_MAX];
    size_t n = conf_of(ms, conf);
    if (keel_node_is_leader(ms->o.node) && !ms->op.busy && !keel_node_changing(ms->o.node))
        promote_caught_up(ms, conf, n);
    const struct keel_member_info *self = keel_members_get(ms->o.members, ms->o.cfg->member_id);
    if (ms->removed_said || self == NULL || !self->removed)
        return;
    bool outside = n > 0 && conf_find(conf, n, ms->o.cfg->member_id) == NULL;
    bool unheard = now - ms->leader_seen > (uint64_t)REMOVED_ELECTIONS * ms->o.cfg->election_ms;
    if (!outside && !unheard)
        return;
    ms->removed_said = 1;
    KLOG_ERROR("this member was removed from the cluster (member remove): it stops, and will not "
               "serve again from this data dir");
    ms->o.on_removed(ms->o.data);
}

int keel_membership_new(const struct keel_membership_options *o, struct keel_membership **out)
{
    struct keel_membership *ms = calloc(1, sizeof(*ms));
    if (ms == NULL)
        return KEEL_ENOMEM;
    ms->o = *o;
    keel_arena_init(&ms->arena, 0);
    ms->leader_seen = uv_now(o->loop);
    uv_timer_init(o->loop, &ms->timer);
    ms->timer.data = ms;
    ms->timer_open = 1;
    uv_timer_start(&ms->timer, tick, TICK_MS, TICK_MS);
    uv_timer_init(o->loop, &ms->wait);
    ms->wait.data = ms;
    *out = ms;
    return 0;
}

void keel_membership_stop(struct keel_membership *ms)
{
    if (ms == NULL || !ms->timer_open)
        return;
    ms->timer_open = 0;
    uv_close((uv_handle_t *)&ms->timer, NULL);
    uv_close((uv_handle_t *)&ms->wait, NULL);
}

void keel_membership_free(struct keel_membership *ms)
{
    if (ms == NULL)
        return;
    keel_arena_close(&ms->arena);
    free(ms);
}
