#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "entry.h"
#include "log.h"
#include "transport.h"

static void poll_state(uv_check_t *h)
{
    struct keel_node *n = h->data;
    int state = raft_state(&n->raft);
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&n->raft, &id, &addr);
    if (state != n->last_state || id != n->last_leader) {
        bool was = n->last_state == RAFT_LEADER;
        n->last_state = state;
        n->last_leader = id;
        if (state == RAFT_LEADER && !was)
            KLOG_INFO("became leader in term %llu", (unsigned long long)n->raft.current_term);
        else if (was && state != RAFT_LEADER)
            KLOG_INFO("lost leadership in term %llu", (unsigned long long)n->raft.current_term);
        n->on_change(n->data, state == RAFT_LEADER, id);
    }
}

int keel_node_init(struct keel_node *n, uv_loop_t *loop, const struct keel_config *c,
                   struct raft_fsm *fsm, keel_node_change_cb on_change, void *data,
                   void (*on_peer)(void *data, uint64_t id, const char *client, const char *zone),
                   char *err, size_t errlen)
{
    memset(n, 0, sizeof(*n));
    n->loop = loop;
    n->on_change = on_change;
    n->data = data;
    n->last_state = RAFT_UNAVAILABLE;
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/raft", c->data_dir);
    if (keel_mkdir_p(dir) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return RAFT_IOERR;
    }
    struct keel_transport_self self = {0};
    snprintf(self.client, sizeof(self.client), "%s", c->listen_client);
    snprintf(self.name, sizeof(self.name), "%s", c->name);
    snprintf(self.zone, sizeof(self.zone), "%s", c->zone);
    int rv = keel_transport_init(&n->transport, loop, &self, on_peer, data);
    if (rv != 0)
        return rv;
    rv = raft_uv_init(&n->io, loop, dir, &n->transport);
    if (rv != 0) {
        snprintf(err, errlen, "raft_uv_init: %s", n->io.errmsg);
        keel_transport_close(&n->transport);
        return rv;
    }
    rv = raft_init(&n->raft, &n->io, fsm, c->member_id, c->listen_peer);
    if (rv != 0) {
        snprintf(err, errlen, "raft_init: %s", raft_errmsg(&n->raft));
        raft_uv_close(&n->io);
        keel_transport_close(&n->transport);
        return rv;
    }
    raft_set_heartbeat_timeout(&n->raft, c->heartbeat_ms);
    raft_set_election_timeout(&n->raft, c->election_ms);
    raft_set_snapshot_threshold(&n->raft, c->snapshot_threshold);
    raft_set_snapshot_trailing(&n->raft, c->snapshot_trailing);
    raft_set_pre_vote(&n->raft, true);
    /* A follower drops an InstallSnapshot that arrives while it takes its own snapshot and the
     * leader resends only after this timeout (research/raft.md trap 6). keel's snapshots are
     * tokens, so a short timeout costs nothing. */
    raft_set_install_snapshot_timeout(&n->raft, 2 * c->election_ms);
    /* The default 1 s reconnect delay is why a restarted peer was heard from late. */
    raft_uv_set_connect_retry_delay(&n->io, c->heartbeat_ms);

    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (size_t i = 0; i < c->n_members && rv == 0; i++)
        rv = raft_configuration_add(&conf, c->members[i].id, c->members[i].peer, RAFT_VOTER);
    if (rv == 0) {
        rv = raft_bootstrap(&n->raft, &conf);
        if (rv == 0)
            KLOG_INFO("bootstrapped a new cluster of %zu members", c->n_members);
        else if (rv == RAFT_CANTBOOTSTRAP)
            rv = 0; /* not the first start */
        else
            snprintf(err, errlen, "raft_bootstrap: %s", raft_errmsg(&n->raft));
    }
    raft_configuration_close(&conf);
    return rv;
}

int keel_node_start(struct keel_node *n, char *err, size_t errlen)
{
    int rv = raft_start(&n->raft);
    if (rv != 0) {
        const char *why = raft_errmsg(&n->raft);
        /* raft 0.15 leaves the message empty when its listener cannot bind. */
        if (why[0] == '\0' && rv == RAFT_IOERR)
            why = "the peer address may be in use, or the raft directory unusable";
        snprintf(err, errlen, "raft_start: %s (%s)", raft_strerror(rv), why);
        return rv;
    }
    n->started = 1;
    uv_check_init(n->loop, &n->poll);
    n->poll.data = n;
    uv_check_start(&n->poll, poll_state);
    return 0;
}

int keel_node_propose(struct keel_node *n, struct raft_apply *req, struct raft_buffer buf,
                      raft_apply_cb cb)
{
    if (keel_entry_check(&buf) != 0)
        return RAFT_INVALID;
    return raft_apply(&n->raft, req, &buf, 1, cb);
}

int keel_node_barrier(struct keel_node *n, struct raft_barrier *req, raft_barrier_cb cb)
{
    return raft_barrier(&n->raft, req, cb);
}

bool keel_node_is_leader(struct keel_node *n)
{
    return n->started && raft_state(&n->raft) == RAFT_LEADER;
}

uint64_t keel_node_leader(struct keel_node *n)
{
    raft_id id = 0;
    const char *addr = NULL;
    if (n->started)
        raft_leader(&n->raft, &id, &addr);
    return id;
}

uint64_t keel_node_term(struct keel_node *n)
{
    return n->raft.current_term;
}

uint64_t keel_node_last_index(struct keel_node *n)
{
    return raft_last_index(&n->raft);
}

uint64_t keel_node_applying_index(struct keel_node *n)
{
    return raft_last_applied(&n->raft) + 1;
}

static void transfer_done(struct raft_transfer *req)
{
    struct keel_node *n = req->data;
    n->transfer_cb(n);
}

int keel_node_transfer(struct keel_node *n, void (*cb)(struct keel_node *n))
{
    n->transfer.data = n;
    n->transfer_cb = cb;
    return raft_transfer(&n->raft, &n->transfer, 0, transfer_done);
}

static void raft_closed(struct raft *r)
{
    struct keel_node *n = r->data;
    raft_uv_close(&n->io);
    if (n->close_cb != NULL)
        n->close_cb(n);
}

void keel_node_close(struct keel_node *n, void (*cb)(struct keel_node *n))
{
    n->close_cb = cb;
    if (n->started) {
        uv_check_stop(&n->poll);
        uv_close((uv_handle_t *)&n->poll, NULL);
    }
    n->raft.data = n;
    raft_close(&n->raft, raft_closed);
}

void keel_node_free(struct keel_node *n)
{
    keel_transport_close(&n->transport);
}
