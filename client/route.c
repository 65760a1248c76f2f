/*
 * Routing: the members the client knows, and which connection a request or a watch takes.
 *
 * Members come from options.endpoints and from each HelloResponse (members, zones, who leads);
 * one peer is one client address. A peer that failed is not dialled again for routing before a
 * per-peer backoff has passed. Each pick returns a ready connection, or NULL when the caller has
 * to wait: for a dial it may have started, or for a backoff (*wake: the earliest time worth
 * looking again).
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define KC_PEER_BASE_MS 50
#define KC_PEER_CAP_MS  2000
/* A request or a first watch creation waiting for a connection gives up (KEEL_EUNAVAILABLE) once
 * this many dials per eligible member have failed since it began waiting, rather than sitting out
 * its deadline when nothing answers. */
#define KC_DIAL_ROUNDS 2

/* ---------------------------------------------------------------------------------------------
 * Members
 */

static int peer_find(struct keel_aclient *ac, const char *canon)
{
    for (int i = 0; i < ac->npeers; i++)
        if (strcmp(ac->peers[i].addr, canon) == 0)
            return i;
    return -1;
}

int kc_peer_add(struct keel_aclient *ac, const char *addr, size_t len)
{
    char canon[KC_ADDR_MAX];
    struct sockaddr_in sa;
    if (kc_parse_addr(addr, len, canon, &sa, NULL, 0) != 0)
        return -1;
    int i = peer_find(ac, canon);
    if (i >= 0 || ac->npeers == KC_MAX_PEERS)
        return i;
    struct kc_peer *p = &ac->peers[ac->npeers];
    memset(p, 0, sizeof(*p));
    memcpy(p->addr, canon, sizeof(canon));
    p->sa = sa;
    return ac->npeers++;
}

int kc_peer_named(struct keel_aclient *ac, const char *addr, uint64_t id)
{
    int peer = -1;
    if (addr && addr[0])
        peer = kc_peer_add(ac, addr, strlen(addr));
    if (peer < 0 && id != 0)
        for (int i = 0; i < ac->npeers && peer < 0; i++)
            if (ac->peers[i].member_id == id)
                peer = i;
    return peer;
}

static bool peer_eligible(const struct kc_peer *p)
{
    return p->from_endpoints || p->in_cluster;
}

static int eligible_count(const struct keel_aclient *ac)
{
    int n = 0;
    for (int i = 0; i < ac->npeers; i++)
        n += peer_eligible(&ac->peers[i]);
    return n;
}

bool kc_dials_exhausted(const struct keel_aclient *ac, bool *marked, uint32_t *mark)
{
    if (!*marked) {
        *marked = true;
        *mark = ac->dial_failures;
        return false;
    }
    int n = eligible_count(ac);
    return ac->dial_failures - *mark >= (uint32_t)(KC_DIAL_ROUNDS * (n > 0 ? n : 1));
}

void kc_peer_failed(struct keel_aclient *ac, int peer, bool dial, const char *msg)
{
    struct kc_peer *p = &ac->peers[peer];
    p->fails++;
    p->next_try = uv_now(ac->loop) + kc_backoff(ac, p->fails, KC_PEER_BASE_MS, KC_PEER_CAP_MS);
    if (dial) {
        ac->dial_failures++;
        ac->stats.dial_failures++;
    }
    snprintf(ac->last_dial_err, sizeof(ac->last_dial_err), "%s", msg);
    ac->need_route = true;
    kc_kick(ac);
}

/* The live connection to peer i, or a ready one to the same member under another address (a
 * member reached through an endpoint alias is not dialled twice). */
static struct kc_conn *peer_conn(struct keel_aclient *ac, int i)
{
    struct kc_peer *p = &ac->peers[i];
    if (p->conn)
        return p->conn;
    if (p->member_id == 0)
        return NULL;
    for (int j = 0; j < ac->npeers; j++) {
        struct kc_conn *c = ac->peers[j].conn;
        if (c && c->state == KC_READY && c->member_id == p->member_id)
            return c;
    }
    return NULL;
}

bool kc_same_member(const struct keel_aclient *ac, int peer, const struct kc_conn *c)
{
    if (peer == c->peer)
        return true;
    uint64_t id = ac->peers[peer].member_id;
    return id != 0 && id == c->member_id;
}

struct kc_conn *kc_dial(struct keel_aclient *ac, int peer)
{
    struct kc_peer *p = &ac->peers[peer];
    if (p->conn)
        return p->conn;
    char msg[KC_MSG_MAX];
    p->conn = kc_conn_init(&ac->conns, peer, p->addr, &p->sa, msg);
    if (p->conn == NULL)
        kc_peer_failed(ac, peer, true, msg);
    return p->conn;
}

/* ---------------------------------------------------------------------------------------------
 * Picking a connection
 */

/* Whether c is the member a request (or watch) should stay away from, having just been told "no
 * leader" there, or lost it. */
struct kc_avoid {
    int peer;
    uint64_t member;
};

static bool avoided(const struct kc_avoid *av, const struct kc_conn *c)
{
    return c->peer == av->peer || (av->member != 0 && c->member_id == av->member);
}

/*
 * Any member will do (to serve the request or to tell who leads): a ready connection, else a dial.
 * The member to avoid is the last resort, so a member cut off from the rest (it answers
 * UNAVAILABLE or NOT_LEADER without a leader) cannot hold a request while others could serve it.
 */
static struct kc_conn *discover(struct keel_aclient *ac, const struct kc_avoid *av, uint64_t *wake)
{
    if (ac->leader >= 0) {
        struct kc_conn *c = peer_conn(ac, ac->leader);
        if (c && c->state == KC_READY && !avoided(av, c))
            return c;
    }
    bool dialling = false;
    struct kc_conn *fallback = NULL;
    for (int i = 0; i < ac->npeers; i++) {
        struct kc_conn *c = ac->peers[i].conn;
        if (c == NULL || !peer_eligible(&ac->peers[i]))
            continue;
        if (c->state != KC_READY)
            dialling = true;
        else if (avoided(av, c))
            fallback = c;
        else
            return c;
    }
    if (dialling)
        return NULL;
    uint64_t now = uv_now(ac->loop);
    for (int k = 0; k < ac->npeers; k++) {
        int i = (ac->rr + k) % ac->npeers;
        struct kc_peer *p = &ac->peers[i];
        if (!peer_eligible(p) || p->conn ||
            (fallback && p->member_id == fallback->member_id && p->member_id != 0))
            continue;
        if (p->next_try > now) {
            if (p->next_try < *wake)
                *wake = p->next_try;
            continue;
        }
        ac->rr = (i + 1) % ac->npeers;
        if (kc_dial(ac, i))
            return NULL;
    }
    return fallback;
}

static struct kc_conn *pick_leader(struct keel_aclient *ac, const struct kc_avoid *av,
                                   uint64_t *wake)
{
    if (ac->leader >= 0) {
        struct kc_conn *c = peer_conn(ac, ac->leader);
        if (c)
            return c->state == KC_READY ? c : NULL;
        struct kc_peer *p = &ac->peers[ac->leader];
        /* A leader that failed recently is not hammered: ask another member who leads now. */
        if (p->next_try <= uv_now(ac->loop) && kc_dial(ac, ac->leader))
            return NULL;
    }
    return discover(ac, av, wake);
}

static bool zone_match(const struct keel_aclient *ac, const struct kc_peer *p)
{
    return peer_eligible(p) && p->zone[0] && strcmp(p->zone, ac->zone) == 0;
}

static struct kc_conn *pick_any(struct keel_aclient *ac, const struct kc_avoid *av, uint64_t *wake)
{
    if (ac->zone[0]) {
        for (int i = 0; i < ac->npeers; i++) {
            struct kc_conn *c;
            if (zone_match(ac, &ac->peers[i]) && (c = peer_conn(ac, i)) && c->state == KC_READY &&
                !avoided(av, c))
                return c;
        }
        for (int i = 0; i < ac->npeers; i++)
            if (zone_match(ac, &ac->peers[i]) && ac->peers[i].conn)
                return NULL; /* its dial is under way */
        uint64_t now = uv_now(ac->loop);
        for (int i = 0; i < ac->npeers; i++) {
            struct kc_peer *p = &ac->peers[i];
            if (zone_match(ac, p) && p->next_try <= now && !p->conn && kc_dial(ac, i))
                return NULL;
        }
        /* No member of our zone can be reached now: any member will do. */
    }
    return discover(ac, av, wake);
}

struct kc_conn *kc_pick_leader(struct keel_aclient *ac, int avoid_peer, uint64_t avoid_member,
                               uint64_t *wake)
{
    struct kc_avoid av = {avoid_peer, avoid_member};
    return pick_leader(ac, &av, wake);
}

struct kc_conn *kc_pick_any(struct keel_aclient *ac, int avoid_peer, uint64_t avoid_member,
                            uint64_t *wake)
{
    struct kc_avoid av = {avoid_peer, avoid_member};
    return pick_any(ac, &av, wake);
}

/* ---------------------------------------------------------------------------------------------
 * What connections tell
 */

void kc_route_learn(struct keel_aclient *ac, struct kc_conn *c, const Keel__HelloResponse *hr)
{
    struct kc_peer *p = &ac->peers[c->peer];
    p->fails = 0;
    p->next_try = 0;
    p->member_id = hr->member_id;
    if (hr->zone && hr->zone[0])
        snprintf(p->zone, sizeof(p->zone), "%s", hr->zone);
    ac->cluster_id = hr->cluster_id;

    if (hr->n_members > 0) {
        for (int i = 0; i < ac->npeers; i++)
            ac->peers[i].in_cluster = false;
        for (size_t m = 0; m < hr->n_members; m++) {
            const Keel__Member *mem = hr->members[m];
            for (size_t u = 0; u < mem->n_clienturls; u++) {
                const char *url = mem->clienturls[u];
                int i = kc_peer_add(ac, url, strlen(url));
                if (i < 0)
                    continue;
                struct kc_peer *q = &ac->peers[i];
                q->in_cluster = true;
                q->learner = mem->islearner;
                q->member_id = mem->id;
                if (mem->zone && mem->zone[0])
                    snprintf(q->zone, sizeof(q->zone), "%s", mem->zone);
            }
        }
        /* Whatever else we reached this member through stays usable. */
        p->in_cluster = true;
    }

    int leader = hr->leader_id != 0 && hr->leader_id == hr->member_id
                     ? c->peer
                     : kc_peer_named(ac, hr->leader_address, hr->leader_id);
    if (leader >= 0) {
        ac->leader = leader;
        ac->peers[leader].in_cluster = true;
    }
}

void kc_route_lost(struct keel_aclient *ac, struct kc_conn *c, bool was_ready, const char *msg)
{
    struct kc_peer *p = &ac->peers[c->peer];
    if (p->conn == c)
        p->conn = NULL;
    if (was_ready)
        ac->stats.conn_lost++;
    kc_peer_failed(ac, c->peer, !was_ready, msg);
    if (ac->leader >= 0 && kc_same_member(ac, ac->leader, c))
        ac->leader = -1;
}
