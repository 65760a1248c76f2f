/*
 * The raft node (see node.h for what it hides). Three parts:
 *  - set-up and shutdown: raft_uv's log, keel's transport, bootstrap, raft_start, raft_close;
 *  - raft's fsm callbacks, adapted to the keel fsm (fsm.h), which knows nothing of raft: the
 *    entry is unwrapped and its index computed here, and keel codes go back as raft codes;
 *  - the consensus seam (consensus.h): proposals and barriers, each a small heap request that
 *    raft holds until it calls back, with raft's status translated into keel's.
 * About 750 lines because it is the one file that sees raft: every RAFT_* code, every raft 0.15
 * workaround (v3 snapshots on an io that says v1, guarded sends and close, the drain before
 * raft_close, the log bounded in bytes through raft's entry counts) stays here, so nothing else
 * in keeld includes raft.h.
 */
#include "node.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <raft/uv.h>

#include "entry.h"
#include "err.h"
#include "log.h"
#include "logbytes.h"
#include "transport.h"

/* Entries always kept behind a snapshot, whatever they weigh: a follower a moment behind (a few
 * round trips, a quick restart) must find them in the log, not be sent a checkpoint. */
#define MIN_TRAILING 16

/* How long the log must stay quiet after a commit before a barrier carries the commit index to
 * the followers (see nudge_check). */
#define NUDGE_MS 1

struct keel_node {
    struct keel_node_options o;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    /* raft_uv's send, which guarded_send calls for the messages it lets through */
    int (*uv_send)(struct raft_io *io, struct raft_io_send *req, const struct raft_message *m,
                   raft_io_send_cb cb);
    /* raft_uv's close and raft's callback for it, which once_closed calls exactly once */
    void (*uv_close)(struct raft_io *io, raft_io_close_cb cb);
    raft_io_close_cb io_close_cb;
    int io_closed;
    struct raft_fsm raft_fsm;
    uint64_t snap_ticket;       /* the sync the snapshot in progress waits for */
    struct keel_logbytes sizes; /* what the entries in raft's log weigh (see "in bytes") */
    uv_check_t poll;
    int last_state;
    uint64_t last_leader;
    unsigned election_ms; /* the configured election timeout, restored once a leader is known */
    bool fast_first;      /* the first election's shorter timeout is in force */
    int started;
    int stopping;     /* keel_node_stop was called: raft takes nothing more of ours */
    size_t inflight;  /* applies and barriers raft holds */
    uv_timer_t drain; /* keel_node_stop waits for inflight to reach 0 */
    /* Barriers raft has called back, delivered from a timer of their own: raft 0.15 is not
     * reentrant there (a raft_barrier from within a barrier's callback, inside its apply loop,
     * crashed a leader under the fault suite), so nothing of ours runs inside that loop. */
    uv_timer_t deliver;
    struct node_req *done_head, *done_tail;
    uint64_t drain_started;  /* uv_now when it began */
    uint64_t drain_logged;   /* uv_now of the last "still waiting" line */
    int isolated;            /* the peer links were cut to make a stuck leader step down */
    int leader_barrier_busy; /* raft holds the election barrier: never submit a second */
    /* Telling the followers a commit (nudge_check): the timer, the commit index told (or about
     * to be), raft's last index when the timer was armed, and whether raft holds the barrier. */
    uv_timer_t nudge;
    uint64_t nudge_index, nudge_last;
    int nudge_armed, nudge_busy;
    /* Round trips to the followers (see "peer round trips"): raft_uv's start, raft's receive
     * callback that rtt_recv passes every message on to, and one record per peer sent to. */
    int (*uv_start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv);
    raft_io_recv_cb raft_recv;
    struct rtt_peer *rtt;
    size_t n_rtt;
    /* raft_uv's append, which timed_append calls, and how long its appends took */
    int (*uv_append)(struct raft_io *io, struct raft_io_append *req,
                     const struct raft_entry entries[], unsigned n, raft_io_append_cb cb);
    struct keel_histo append_seconds;
    /* The snapshot in progress (its index, when it began), and those stored and their times. */
    uint64_t snap_index, snap_began_ns;
    uint64_t snapshots;
    struct keel_histo snapshot_seconds;
    /* The apply watch (watch_apply): when raft or the store last moved, what was logged. */
    uint64_t watch_checked, watch_since, watch_logged;
    uint64_t watch_applied, watch_committed;
    struct raft_transfer transfer;
    void (*transfer_cb)(void *data, int err);
    void *transfer_data;
    int transfer_busy; /* raft holds n->transfer */
    /* A member change (keel_node_change): raft holds n->change while change_busy. An add is two
     * of raft's changes, raft_add then raft_assign to standby: change_then says the second. */
    struct raft_change change;
    void (*change_cb)(void *data, int err);
    void *change_data;
    int change_busy;
    uint64_t change_then; /* the id an add still assigns the standby role to, else 0 */
    /* The member leadership was last handed to, and when (uv_now): named as the leader while
     * raft names none, for an election timeout (see keel_node_leader). */
    uint64_t handed_to, handed_at;
    void (*stop_cb)(void *data);
    void *stop_data;
    /* raft_close has called back (stop_cb runs next). raft 0.15 frees its configuration, log
     * and address in its close callback (ioCloseCb) without resetting them, and the member
     * answers its clients on until the storage writer has stopped too: from then on the
     * accessors answer from what is kept here, never from raft's freed memory. */
    int closed;
    uint64_t closed_last_index; /* raft's last index just before raft_close */
};

/* A proposal or a barrier raft holds: whom to call back. */
struct node_req {
    union {
        struct raft_apply apply;
        struct raft_barrier barrier;
    } u;
    struct node_req *next; /* n->done_head: a barrier called back, not yet delivered */
    int status;
    struct keel_node *n;
    keel_consensus_cb cb;
    void *data;
};

/* ---- raft's codes in keel's terms: the one place they are translated ---- */

/* A failure of set-up or start. */
static int from_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOMEM:
        return KEEL_ENOMEM;
    case RAFT_CORRUPT:
        return KEEL_ECORRUPT;
    case RAFT_IOERR:
    case RAFT_NOSPACE:
        return KEEL_EIO;
    default:
        return KEEL_EUNAVAILABLE;
    }
}

/* A request raft refused outright: nothing was appended, so the client may try again. */
static int refused(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
        return KEEL_ENOTLEADER;
    case RAFT_NOMEM:
        return KEEL_ENOMEM;
    default:
        return KEEL_EUNAVAILABLE;
    }
}

/* keel fsm codes back into raft's, for raft's fsm callbacks. */
static int to_raft(int err)
{
    switch (err) {
    case 0:
        return 0;
    case KEEL_ENOMEM:
        return RAFT_NOMEM;
    case KEEL_ECORRUPT:
        return RAFT_CORRUPT;
    default:
        return RAFT_BUSY; /* the store is behind: raft tries again later */
    }
}

/* ---- the log bounded in bytes ----
 *
 * raft 0.15 bounds its log by entry counts only, and keel's entries are batches of any size (up
 * to propose's 4 MiB): 65536 entries can weigh gigabytes, every one of them in memory (raft
 * keeps each entry from snapshot - trailing on) and reloaded at every start. So the byte bounds
 * become the two counts raft reads, set just before it reads them. In 0.15 (read in the
 * source, and checked in the code of Debian's build):
 *  - r->snapshot.threshold is read once per apply round, after the round's entries went through
 *    fsm->apply: raft takes a snapshot when last_applied - log.snapshot.last_index >= threshold
 *    and none is in progress. fsm_apply lowers it to the entries since that snapshot as soon as
 *    their bytes reach snapshot_bytes, so the check that follows passes; otherwise it is the
 *    configured count.
 *  - r->snapshot.trailing is read when the snapshot is stored (raft_uv deletes the closed
 *    segments ending before index - trailing + 1) and when it is done (the entries up to
 *    index - trailing leave memory). Both come after fsm->snapshot, and no other snapshot can
 *    start in between, so fsm_snapshot sets it: the entries, newest first, that fit
 *    snapshot_trailing_bytes, at least MIN_TRAILING, at most the configured count, and never 0
 *    (raft_uv takes 0 for an installed snapshot: every closed segment goes).
 * Barriers and configuration entries never reach fsm->apply and weigh nothing here (8 bytes or
 * a few hundred).
 */

static void bound_threshold(struct keel_node *n, uint64_t index, size_t len)
{
    const struct keel_config *c = n->o.cfg;
    if (keel_logbytes_add(&n->sizes, index, len) != 0) {
        /* Until memory comes back only the counts bound the log. */
        KLOG_WARN("out of memory noting a raft entry's size: the log is bounded by counts only");
        return;
    }
    uint64_t snap = n->raft.log.snapshot.last_index;
    unsigned threshold = c->snapshot_threshold;
    if (index > snap && index - snap < threshold &&
        keel_logbytes_since(&n->sizes, snap) >= c->snapshot_bytes)
        threshold = (unsigned)(index - snap);
    n->raft.snapshot.threshold = threshold;
}

/* A snapshot at raft's last applied index is being taken (raft set its index so already). */
static void bound_trailing(struct keel_node *n)
{
    const struct keel_config *c = n->o.cfg;
    uint64_t index = raft_last_applied(&n->raft);
    uint64_t keep = keel_logbytes_keep(&n->sizes, index, c->snapshot_trailing_bytes);
    uint64_t min = MIN_TRAILING < c->snapshot_trailing ? MIN_TRAILING : c->snapshot_trailing;
    if (keep < min)
        keep = min;
    if (keep > c->snapshot_trailing)
        keep = c->snapshot_trailing;
    KLOG_DEBUG(
        "raft snapshot at index %llu: %llu bytes of entries since the last one; %llu "
        "entries (%llu bytes) kept behind it",
        (unsigned long long)index,
        (unsigned long long)keel_logbytes_since(&n->sizes, n->raft.log.snapshot.last_index),
        (unsigned long long)keep,
        (unsigned long long)(keel_logbytes_since(&n->sizes, index > keep ? index - keep : 0) -
                             keel_logbytes_since(&n->sizes, index)));
    n->raft.snapshot.trailing = (unsigned)keep;
    n->raft.snapshot.threshold = c->snapshot_threshold;
    /* What raft drops once the snapshot is stored; should it fail, raft keeps entries that are
     * no longer weighed here, and the next snapshot's span simply stops short of them. */
    if (index > keep)
        keel_logbytes_forget(&n->sizes, index - keep);
}

/* ---- raft's fsm, over the keel fsm ---- */

static int fsm_apply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    struct keel_node *n = rf->data;
    *result = NULL;
    const uint8_t *payload;
    size_t len;
    if (keel_entry_decode(buf, &payload, &len) != 0) {
        /* Every replica holds the same bytes: carrying on would diverge or loop forever. */
        KLOG_ERROR("a committed entry is not a keel entry; aborting");
        abort();
    }
    /* 0.15 sets last_applied after apply returns (research/raft.md, "What apply knows"). */
    uint64_t index = raft_last_applied(&n->raft) + 1;
    keel_fsm_apply(n->o.fsm, index, payload, len);
    bound_threshold(n, index, buf->len);
    /* Never an error: request-level failures travel in the results (research/raft.md trap 7). */
    return 0;
}

/*
 * Snapshots use raft's v3 fsm so the loop never waits for the storage writer (issue: a
 * synchronous snapshot blocked the loop for as long as the writer lagged, and raft retried it
 * after every apply round). snapshot() makes the token and queues a sync, on the loop;
 * snapshot_async() waits for that sync on raft's pool thread; snapshot_finalize()
 * frees the token on the loop, whatever happened. raft takes one snapshot at a time, so one ticket.
 */
static int fsm_snapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct keel_node *n = rf->data;
    struct raft_buffer *b = raft_malloc(sizeof(*b));
    uint8_t *token = raft_malloc(KEEL_FSM_TOKEN_LEN);
    if (b == NULL || token == NULL) {
        raft_free(b);
        raft_free(token);
        return RAFT_NOMEM;
    }
    int err = keel_fsm_snapshot_begin(n->o.fsm, token, &n->snap_ticket);
    if (err != 0) {
        raft_free(b);
        raft_free(token);
        return to_raft(err);
    }
    b->base = token;
    b->len = KEEL_FSM_TOKEN_LEN;
    *bufs = b;
    *n_bufs = 1;
    bound_trailing(n);
    n->snap_index = raft_last_applied(&n->raft);
    n->snap_began_ns = keel_histo_now_ns();
    KLOG_INFO("raft snapshot at applied index %llu (the log before it can be compacted once "
              "the store has synced)",
              (unsigned long long)raft_last_applied(&n->raft));
    return 0;
}

static int fsm_snapshot_async(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    (void)bufs;
    (void)n_bufs;
    struct keel_node *n = rf->data;
    return to_raft(keel_fsm_snapshot_wait(n->o.fsm, n->snap_ticket));
}

static int fsm_snapshot_finalize(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct keel_node *n = rf->data;
    /* raft calls this after the put, stored or not; a stored one has moved raft's snapshot
     * index to ours already (takeSnapshotCb: logSnapshot, then the finalize). */
    if (n->snap_index != 0 && n->raft.log.snapshot.last_index == n->snap_index) {
        n->snapshots++;
        keel_histo_observe_ns(&n->snapshot_seconds, keel_histo_now_ns() - n->snap_began_ns);
    }
    n->snap_index = 0;
    if (*bufs != NULL) {
        for (unsigned i = 0; i < *n_bufs; i++)
            raft_free((*bufs)[i].base);
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct keel_node *n = rf->data;
    KLOG_INFO("restoring a raft snapshot (%zu bytes)", buf->len);
    int err = keel_fsm_restore(n->o.fsm, buf->base, buf->len);
    /* raft hands the buffer over only when restore succeeds (snapshotRestore frees it
     * otherwise). */
    if (err == 0)
        raft_free(buf->base);
    return to_raft(err);
}

/* ---- leadership ---- */

static void leader_barrier_done(void *data, int err)
{
    struct keel_node *n = data;
    n->leader_barrier_busy = 0;
    if (err == 0)
        KLOG_INFO("leader barrier committed at index %llu",
                  (unsigned long long)keel_fsm_progress(n->o.fsm)->queued);
}

static int node_barrier(void *ctx, keel_consensus_cb cb, void *data);

/*
 * A member whose log holds committed entries that neither raft nor the store applies serves
 * stale reads and cannot catch up; nothing else reports it. Once a second: when work is
 * waiting (raft's commit index ahead of its last applied, or the writer's queue ahead of the
 * store) and neither moved for APPLY_STALL_MS, say where it stands, again every 10 s, and say
 * when it moves again.
 */
#define APPLY_STALL_MS 3000

static void watch_apply(struct keel_node *n)
{
    uint64_t now = uv_now(n->o.loop);
    if (now - n->watch_checked < 1000)
        return;
    n->watch_checked = now;
    /* raft 0.15's log storage stops for good after a failed write or segment (its uv
     * "errored" state): the member would stay up, answering from a state that no longer
     * moves. A full disk does it when it fills faster than the disk reserve's checks
     * (diskwatch.h). Stopping is the way out: the log on disk is intact, and a restart with
     * room on the disk catches up. */
    if (n->io.errmsg[0] != '\0') {
        KLOG_ERROR("raft's log storage failed: %s; raft writes nothing more after that, so this "
                   "member stops (restart it once the cause, e.g. a full disk, is gone: its log "
                   "and store are intact)",
                   n->io.errmsg);
        abort();
    }
    const struct keel_fsm_progress *p = keel_fsm_progress(n->o.fsm);
    uint64_t applied = n->raft.last_applied, committed = p->committed;
    bool waiting = n->raft.commit_index > applied || p->queued > committed;
    bool moved = applied != n->watch_applied || committed != n->watch_committed;
    n->watch_applied = applied;
    n->watch_committed = committed;
    if (moved || !waiting) {
        if (n->watch_logged != 0)
            KLOG_INFO("applying again after %llu ms (raft applied %llu, store applied %llu)",
                      (unsigned long long)(now - n->watch_since), (unsigned long long)applied,
                      (unsigned long long)committed);
        n->watch_since = now;
        n->watch_logged = 0;
        return;
    }
    if (now - n->watch_since < APPLY_STALL_MS ||
        (n->watch_logged != 0 && now - n->watch_logged < 10000))
        return;
    n->watch_logged = now;
    KLOG_WARN("nothing applied for %llu ms: raft commit %llu, raft applied %llu, last stored "
              "%llu, store queued %llu, store applied %llu, %llu bytes with the writer%s%s",
              (unsigned long long)(now - n->watch_since), (unsigned long long)n->raft.commit_index,
              (unsigned long long)applied, (unsigned long long)n->raft.last_stored,
              (unsigned long long)p->queued, (unsigned long long)committed,
              (unsigned long long)p->backlog_bytes,
              n->raft.snapshot.pending.term != 0 ? ", a snapshot being taken" : "",
              n->raft.snapshot.put.data != NULL ? ", a snapshot being stored" : "");
}

static int node_barrier(void *ctx, keel_consensus_cb cb, void *data);

/*
 * Followers learn that an entry is committed only from the leader's next message, and raft 0.15
 * sends one only with the next entry or the next heartbeat: at a few writes per second a
 * follower applies each one a heartbeat late (100 ms), and so do the watches it serves. So once
 * the leader's log has been quiet for NUDGE_MS since a commit, it appends a barrier, whose
 * append carries the commit index at once. Waiting NUDGE_MS first keeps the barrier's disk write
 * out of the way of a client that writes again right after its answer (its own append would
 * carry the commit anyway). The barrier's own commit is never told this way (nudge_index), so
 * barriers do not beget barriers: at most one per burst of writes.
 */
static void nudge_done(void *data, int err)
{
    struct keel_node *n = data;
    (void)err;
    n->nudge_busy = 0;
}

static void nudge_fire(uv_timer_t *t)
{
    struct keel_node *n = t->data;
    n->nudge_armed = 0;
    if (n->stopping || n->nudge_busy || raft_state(&n->raft) != RAFT_LEADER ||
        raft_last_index(&n->raft) != n->nudge_last)
        return; /* an entry appended since carried the commit index */
    if (node_barrier(n, nudge_done, n) == 0) {
        n->nudge_busy = 1;
        n->nudge_index = raft_last_index(&n->raft);
    }
}

static void nudge_check(struct keel_node *n)
{
    if (n->nudge_armed || n->nudge_busy || n->stopping || raft_state(&n->raft) != RAFT_LEADER)
        return;
    uint64_t commit = n->raft.commit_index;
    if (commit <= n->nudge_index || raft_last_index(&n->raft) != commit)
        return; /* told already, or entries in flight will carry it when they go out */
    n->nudge_index = commit;
    n->nudge_last = commit;
    n->nudge_armed = 1;
    uv_timer_start(&n->nudge, nudge_fire, NUDGE_MS, 0);
}

static void poll_state(uv_check_t *h)
{
    struct keel_node *n = h->data;
    watch_apply(n);
    nudge_check(n);
    int state = raft_state(&n->raft);
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&n->raft, &id, &addr);
    if (state == n->last_state && id == n->last_leader)
        return;
    bool was = n->last_state == RAFT_LEADER;
    bool changed_state = state != n->last_state, changed_leader = id != n->last_leader;
    n->last_state = state;
    n->last_leader = id;
    if (id != 0 && n->fast_first) {
        n->fast_first = false; /* from the next timer reset on */
        raft_set_election_timeout(&n->raft, n->election_ms);
    }
    if (state == RAFT_LEADER && !was) {
        KLOG_INFO("became leader in term %llu", (unsigned long long)n->raft.current_term);
        /* 0.15 appends no entry of its own on election: this barrier commits one of the new
         * term (narrowing its Figure-8 bug) and brings the fsm up to date. */
        if (!n->leader_barrier_busy && node_barrier(n, leader_barrier_done, n) == 0)
            n->leader_barrier_busy = 1;
    } else if (was && state != RAFT_LEADER) {
        KLOG_INFO("lost leadership in term %llu", (unsigned long long)n->raft.current_term);
    }
    if (state == RAFT_CANDIDATE && changed_state)
        KLOG_INFO("campaigning in term %llu: no leader heard within the election timeout",
                  (unsigned long long)n->raft.current_term);
    if (changed_leader && state != RAFT_LEADER) {
        if (id != 0)
            KLOG_INFO("leader is %016llx in term %llu", (unsigned long long)id,
                      (unsigned long long)n->raft.current_term);
        else if (!was)
            KLOG_INFO("leader lost in term %llu", (unsigned long long)n->raft.current_term);
    }
    n->o.on_change(n->o.data, state == RAFT_LEADER, id);
}

bool keel_node_is_leader(struct keel_node *n)
{
    return n->started && !n->closed && raft_state(&n->raft) == RAFT_LEADER;
}

uint64_t keel_node_leader(struct keel_node *n)
{
    raft_id id = 0;
    const char *addr = NULL;
    if (n->started && !n->closed)
        raft_leader(&n->raft, &id, &addr);
    /* Handing leadership over, raft names no leader: on the leader while the transfer runs, and
     * on the member it stepped down to until the new leader's first message. Both are moments
     * and the successor is known, so say it: a client told "no leader" backs off for tens of ms. */
    if (id == 0 && n->handed_to != 0 &&
        uv_now(n->o.loop) - n->handed_at < (uint64_t)n->o.cfg->election_ms)
        id = n->handed_to;
    return id;
}

uint64_t keel_node_term(struct keel_node *n)
{
    return n->raft.current_term;
}

uint64_t keel_node_last_index(struct keel_node *n)
{
    return n->closed ? n->closed_last_index : raft_last_index(&n->raft);
}

/* ---- the consensus seam ---- */

static void apply_done(struct raft_apply *req, int status, void *result)
{
    struct node_req *r = req->data;
    (void)result;
    r->n->inflight--;
    /* Whatever went wrong after raft took the entry, it may still commit under the next
     * leader: the outcome is unknown, never "failed". */
    r->cb(r->data, status == 0 ? 0 : KEEL_EUNKNOWN);
    free(r);
}

static int node_propose(void *ctx, const Keel__CommandBatch *batch, keel_consensus_cb cb,
                        void *data)
{
    struct keel_node *n = ctx;
    if (n->stopping)
        return KEEL_EUNAVAILABLE; /* see keel_node_stop */
    struct node_req *r = malloc(sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    struct raft_buffer buf = {0};
    int err = keel_entry_encode(batch, &buf);
    if (err == 0 && keel_entry_check(&buf) != 0) {
        /* Odd lengths corrupt followers silently (research/raft.md trap 1): never let one by. */
        KLOG_ERROR("refusing a malformed entry of %zu bytes", buf.len);
        err = KEEL_EINTERNAL;
    }
    if (err == 0) {
        r->n = n;
        r->cb = cb;
        r->data = data;
        r->u.apply.data = r;
        int rv = raft_apply(&n->raft, &r->u.apply, &buf, 1, apply_done);
        if (rv == 0) {
            n->inflight++;
            return 0;
        }
        err = refused(rv);
    }
    if (buf.base != NULL)
        raft_free(buf.base);
    free(r);
    return err;
}

/* The barriers raft called back since the last turn, in order. */
static void deliver_barriers(uv_timer_t *t)
{
    struct keel_node *n = t->data;
    struct node_req *r = n->done_head;
    n->done_head = n->done_tail = NULL;
    while (r != NULL) {
        struct node_req *next = r->next;
        n->inflight--; /* counted until delivered: keel_node_stop waits for these too */
        r->cb(r->data, r->status == 0 ? 0 : KEEL_ENOTLEADER);
        free(r);
        r = next;
    }
}

/* Raft's barrier callback: queued, delivered by deliver_barriers on the next loop turn. */
static void barrier_done(struct raft_barrier *req, int status)
{
    struct node_req *r = req->data;
    struct keel_node *n = r->n;
    r->status = status;
    r->next = NULL;
    if (n->done_tail)
        n->done_tail->next = r;
    else
        n->done_head = r;
    n->done_tail = r;
    uv_timer_start(&n->deliver, deliver_barriers, 0, 0);
}

static int node_barrier(void *ctx, keel_consensus_cb cb, void *data)
{
    struct keel_node *n = ctx;
    if (n->stopping)
        return KEEL_EUNAVAILABLE; /* see keel_node_stop */
    struct node_req *r = malloc(sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    r->n = n;
    r->cb = cb;
    r->data = data;
    r->u.barrier.data = r;
    int rv = raft_barrier(&n->raft, &r->u.barrier, barrier_done);
    if (rv != 0) {
        free(r);
        return refused(rv);
    }
    n->inflight++;
    return 0;
}

static bool node_is_leader(void *ctx)
{
    return keel_node_is_leader(ctx);
}

static uint64_t node_leader(void *ctx)
{
    return keel_node_leader(ctx);
}

static uint64_t node_term(void *ctx)
{
    return keel_node_term(ctx);
}

static uint64_t node_last_index(void *ctx)
{
    return keel_node_last_index(ctx);
}

static int node_transfer(void *ctx, uint64_t target, keel_consensus_cb cb, void *data);
static bool node_transferring(void *ctx);
static size_t node_members(void *ctx, struct keel_consensus_member *out, size_t cap)
{
    return keel_node_members(ctx, out, cap);
}

void keel_node_consensus(struct keel_node *n, struct keel_consensus *out)
{
    out->ctx = n;
    out->is_leader = node_is_leader;
    out->leader = node_leader;
    out->term = node_term;
    out->last_index = node_last_index;
    out->propose = node_propose;
    out->barrier = node_barrier;
    out->transfer = node_transfer;
    out->transferring = node_transferring;
    out->members = node_members;
}

/* ---- peer round trips (metrics) ----
 *
 * On the leader, the time from an AppendEntries heartbeat (no entries) leaving for a follower
 * to that follower's AppendEntries result coming back: the network both ways, the follower's
 * loop and raft's handling of the heartbeat (it answers a heartbeat at once, with no disk
 * write), and both members' send queues. A heartbeat is timed only when nothing else sent to
 * that follower is unanswered, so the next result from it is this heartbeat's (a follower
 * answers in order what it receives in order). Under a steady stream of appends there may be
 * no such moment: then there is no sample. Appends a lost connection swallowed are forgotten
 * after an election timeout without results. Followers send no AppendEntries: they report
 * nothing.
 */
#define RTT_PEERS_MAX 64

struct rtt_peer {
    uint64_t id;
    uint64_t sent, answered; /* AppendEntries sent to it (by raft_uv's send), results back */
    uint64_t probe_ns;       /* when the heartbeat being timed left (0: none) */
    uint64_t heard_ns;       /* the last result, or when the counts were reset */
    struct keel_histo seconds;
};

static struct rtt_peer *rtt_peer(struct keel_node *n, uint64_t id, bool add)
{
    for (size_t i = 0; i < n->n_rtt; i++)
        if (n->rtt[i].id == id)
            return &n->rtt[i];
    if (!add || n->n_rtt >= RTT_PEERS_MAX)
        return NULL;
    if (n->rtt == NULL && (n->rtt = calloc(RTT_PEERS_MAX, sizeof(*n->rtt))) == NULL)
        return NULL;
    struct rtt_peer *p = &n->rtt[n->n_rtt++];
    p->id = id;
    p->heard_ns = keel_histo_now_ns();
    keel_histo_init_exp(&p->seconds, 0.0001, 2, 16); /* etcd's: 0.1 ms .. 3.3 s */
    return p;
}

/* An AppendEntries went to m->server_id (raft_uv took it). */
static void rtt_sent(struct keel_node *n, const struct raft_message *m)
{
    if (m->type != RAFT_IO_APPEND_ENTRIES)
        return;
    struct rtt_peer *p = rtt_peer(n, m->server_id, true);
    if (p == NULL)
        return;
    uint64_t now = keel_histo_now_ns();
    if (p->sent != p->answered && now - p->heard_ns > (uint64_t)n->o.cfg->election_ms * 1000000u) {
        p->answered = p->sent; /* lost with a connection: start counting again */
        p->probe_ns = 0;
        p->heard_ns = now;
    }
    if (p->probe_ns == 0 && p->sent == p->answered && m->append_entries.n_entries == 0)
        p->probe_ns = now;
    p->sent++;
}

static void rtt_recv(struct raft_io *io, struct raft_message *m)
{
    struct keel_node *n = (struct keel_node *)((char *)io - offsetof(struct keel_node, io));
    struct rtt_peer *p =
        m->type == RAFT_IO_APPEND_ENTRIES_RESULT ? rtt_peer(n, m->server_id, false) : NULL;
    if (p != NULL && p->answered < p->sent) {
        uint64_t now = keel_histo_now_ns();
        p->answered++;
        p->heard_ns = now;
        if (p->probe_ns != 0 && p->answered == p->sent) {
            keel_histo_observe_ns(&p->seconds, now - p->probe_ns);
            p->probe_ns = 0;
        }
    }
    n->raft_recv(io, m);
}

static int rtt_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv)
{
    struct keel_node *n = (struct keel_node *)((char *)io - offsetof(struct keel_node, io));
    n->raft_recv = recv;
    return n->uv_start(io, msecs, tick, rtt_recv);
}

/* ---- the raft log's appends, timed (metrics) ----
 *
 * From raft handing entries to raft_uv to raft_uv calling back with them durable: the write
 * and its fdatasync, and the wait behind appends queued before it. raft_uv syncs inside its own
 * writer with no hook, so the sync alone (etcd's wal_fsync histogram) cannot be timed without
 * changing raft; this is the nearest. Each append carries a small heap record for its start
 * and raft's callback; without memory for one the append goes through untimed.
 */
struct timed_append {
    struct raft_io_append req; /* what raft_uv gets: first, so its callback finds the record */
    struct keel_node *n;
    struct raft_io_append *orig;
    raft_io_append_cb cb;
    uint64_t began_ns;
};

static void timed_append_done(struct raft_io_append *req, int status)
{
    struct timed_append *t = (struct timed_append *)req;
    struct raft_io_append *orig = t->orig;
    raft_io_append_cb cb = t->cb;
    if (status == 0)
        keel_histo_observe_ns(&t->n->append_seconds, keel_histo_now_ns() - t->began_ns);
    free(t);
    cb(orig, status);
}

static int timed_append(struct raft_io *io, struct raft_io_append *req,
                        const struct raft_entry entries[], unsigned n_entries, raft_io_append_cb cb)
{
    struct keel_node *n = (struct keel_node *)((char *)io - offsetof(struct keel_node, io));
    struct timed_append *t = malloc(sizeof(*t));
    if (t == NULL)
        return n->uv_append(io, req, entries, n_entries, cb);
    t->req.data = NULL;
    t->n = n;
    t->orig = req;
    t->cb = cb;
    req->cb = cb; /* as raft_uv would have set it */
    t->began_ns = keel_histo_now_ns();
    int rv = n->uv_append(io, &t->req, entries, n_entries, timed_append_done);
    if (rv != 0)
        free(t);
    return rv;
}

const struct keel_histo *keel_node_append_seconds(const struct keel_node *n)
{
    return &n->append_seconds;
}

uint64_t keel_node_snapshots(const struct keel_node *n, const struct keel_histo **seconds)
{
    *seconds = &n->snapshot_seconds;
    return n->snapshots;
}

/* ---- raft_uv's send, guarded ---- */

/*
 * raft 0.15 sends a follower's AppendEntries result to whatever its follower state names as the
 * leader when the disk write completes, even when the member has meanwhile forgotten the leader
 * (an election after a pause: id 0, address NULL, canonical/raft#350) or left follower state
 * (the union then holds other data: a garbage id and address, #339); raft_uv crashes in strlen.
 * Seen here on followers frozen past an election timeout under load (test_shutdown no_quorum).
 * Fixed upstream after 0.15 (#342 and later); until then every message goes to a configured
 * member, at its configured address, or nowhere: a refused send is an ordinary failure raft
 * already handles (it frees the request; the leader retries or a new election settles it).
 * "Configured" is peer_of's word: the members of the raft configuration.
 */
/* A member's peer address: the raft configuration's (which member changes alter), or while
 * there is none yet (a member that joins a cluster and has not heard from it) --initial-cluster's.
 */
static const char *peer_of(void *data, uint64_t id)
{
    struct keel_node *n = data;
    if (n->closed)
        return NULL; /* the configuration is gone with raft (see closed) */
    const struct raft_configuration *c = &n->raft.configuration;
    if (c->n == 0)
        return keel_handshake_config_peer((void *)n->o.cfg, id);
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id != id)
            continue;
        /* raft 0.15 cannot change a member's address: a member update is a record beside it */
        const char *moved = n->o.moved_peer ? n->o.moved_peer(n->o.data, id) : NULL;
        return moved ? moved : c->servers[i].address;
    }
    return NULL;
}

static int guarded_send(struct raft_io *io, struct raft_io_send *req, const struct raft_message *m,
                        raft_io_send_cb cb)
{
    struct keel_node *n = (struct keel_node *)((char *)io - offsetof(struct keel_node, io));
    const char *to = m->server_id == n->o.cfg->member_id ? NULL : peer_of(n, m->server_id);
    if (to == NULL) {
        KLOG_DEBUG("raft message of type %u to unknown member %llu dropped", (unsigned)m->type,
                   (unsigned long long)m->server_id);
        return RAFT_NOCONNECTION;
    }
    /* raft_uv copies what it needs (it encodes the message and copies the address). */
    struct raft_message copy = *m;
    copy.server_address = to;
    int rv = n->uv_send(io, req, &copy, cb);
    if (rv == 0)
        rtt_sent(n, m);
    return rv;
}

/*
 * raft_uv 0.15 can report its close twice: a segment writer whose close it does not track (one
 * rolled over just before shutdown, say) finishes closing after the close callback has fired and
 * calls it again (canonical/raft#341, cowsql/raft#45). raft's callback then frees its state a
 * second time, and if raft_uv's own memory was freed in between (raft_uv_close, which raft's
 * example does in raft's close callback) it runs on freed memory: keeld crashed this way in
 * shutdown under large writes (test_shutdown single). So raft hears of the close once, and
 * raft_uv's memory is freed only in keel_node_free, after the loop has stopped and nothing can
 * call back any more.
 */
static void once_closed(struct raft_io *io)
{
    struct keel_node *n = (struct keel_node *)((char *)io - offsetof(struct keel_node, io));
    if (n->io_closed) {
        KLOG_DEBUG("raft_uv reported its close a second time: ignored");
        return;
    }
    n->io_closed = 1;
    n->io_close_cb(io);
}

static void guarded_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct keel_node *n = (struct keel_node *)((char *)io - offsetof(struct keel_node, io));
    n->io_close_cb = cb;
    n->uv_close(io, once_closed);
}

static void on_handshake(void *data, const struct keel_handshake_peer *p)
{
    struct keel_node *n = data;
    n->o.on_peer(n->o.data, p);
}

static void on_fetch(void *data, const struct keel_handshake_peer *p, int fd)
{
    struct keel_node *n = data;
    n->o.on_fetch(n->o.data, p, fd);
}

const char *keel_node_peer_address(struct keel_node *n, uint64_t id)
{
    return peer_of(n, id);
}

/* ---- set-up and shutdown ---- */

static int bootstrap(struct keel_node *n)
{
    const struct keel_config *c = n->o.cfg;
    /* A member joining a running cluster starts with no configuration: it stays a follower that
     * never campaigns until the leader, which added it, sends it the log. */
    if (c->join)
        return 0;
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv = 0;
    for (size_t i = 0; i < c->n_members && rv == 0; i++)
        rv = raft_configuration_add(&conf, c->members[i].id, c->members[i].peer, RAFT_VOTER);
    if (rv == 0) {
        rv = raft_bootstrap(&n->raft, &conf);
        if (rv == 0)
            KLOG_INFO("bootstrapped a new cluster of %zu members", c->n_members);
        else if (rv == RAFT_CANTBOOTSTRAP)
            rv = 0; /* not the first start */
        else
            KLOG_ERROR("raft_bootstrap: %s", raft_errmsg(&n->raft));
    }
    raft_configuration_close(&conf);
    return rv;
}

int keel_node_new(const struct keel_node_options *o, struct keel_node **out)
{
    const struct keel_config *c = o->cfg;
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/raft", c->data_dir);
    if (keel_mkdir_p(dir) != 0) {
        KLOG_ERROR("cannot create %s: %s", dir, strerror(errno));
        return KEEL_EIO;
    }
    struct keel_node *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return KEEL_ENOMEM;
    n->o = *o;
    keel_logbytes_init(&n->sizes);
    n->last_state = RAFT_UNAVAILABLE;
    n->raft_fsm.version = 3;
    n->raft_fsm.data = n;
    n->raft_fsm.apply = fsm_apply;
    n->raft_fsm.snapshot = fsm_snapshot;
    n->raft_fsm.restore = fsm_restore;
    n->raft_fsm.snapshot_finalize = fsm_snapshot_finalize;
    n->raft_fsm.snapshot_async = fsm_snapshot_async;
    struct keel_transport_hooks hooks = {.data = n,
                                         .lookup = peer_of,
                                         .peer = on_handshake,
                                         .fetch = o->on_fetch != NULL ? on_fetch : NULL};
    int rv = keel_transport_init(&n->transport, o->loop, c, &hooks);
    if (rv != 0) {
        free(n);
        return from_raft(rv);
    }
    rv = raft_uv_init(&n->io, o->loop, dir, &n->transport);
    if (rv != 0) {
        KLOG_ERROR("raft_uv_init: %s", n->io.errmsg);
        keel_transport_close(&n->transport);
        free(n);
        return from_raft(rv);
    }
    /* raft_uv 0.15 implements async_work but still says version 1, so raft_init would refuse
     * a v3 fsm (research/raft.md, "FSM interface"; fixed upstream in 0.17.1). */
    if (n->io.version < 2 && n->io.async_work != NULL)
        n->io.version = 2;
    /* Before raft_init: its load and the segments it prepares use it. */
    raft_uv_set_segment_size(&n->io, c->raft_segment_bytes);
    n->uv_send = n->io.send;
    n->io.send = guarded_send;
    n->uv_close = n->io.close;
    n->io.close = guarded_close;
    n->uv_start = n->io.start;
    n->io.start = rtt_start;
    n->uv_append = n->io.append;
    n->io.append = timed_append;
    keel_histo_init_exp(&n->append_seconds, 0.001, 2, 14); /* etcd's wal_fsync layout */
    /* etcd's snap save layout */
    keel_histo_init_exp(&n->snapshot_seconds, 0.001, 2, 14);
    rv = raft_init(&n->raft, &n->io, &n->raft_fsm, c->member_id, c->listen_peer);
    if (rv != 0) {
        KLOG_ERROR("raft_init: %s", raft_errmsg(&n->raft));
        raft_uv_close(&n->io);
        keel_transport_close(&n->transport);
        free(n);
        return from_raft(rv);
    }
    raft_set_heartbeat_timeout(&n->raft, c->heartbeat_ms);
    /* Until it knows a leader, a starting member campaigns after a third of the election
     * timeout (at least three heartbeats): when the whole cluster restarts, nobody waits out
     * 1-2 s of a timeout meant to tell a dead leader from a slow one. A member joining a
     * running cluster hears the leader within a heartbeat, and pre-vote keeps a campaign of
     * its from deposing a leader the others still hear. */
    n->election_ms = c->election_ms;
    unsigned first =
        c->election_ms / 3 > 3 * c->heartbeat_ms ? c->election_ms / 3 : 3 * c->heartbeat_ms;
    n->fast_first = first < c->election_ms;
    raft_set_election_timeout(&n->raft, n->fast_first ? first : c->election_ms);
    raft_set_snapshot_threshold(&n->raft, c->snapshot_threshold);
    raft_set_snapshot_trailing(&n->raft, c->snapshot_trailing);
    raft_set_pre_vote(&n->raft, true);
    /* A follower drops an InstallSnapshot that arrives while it takes its own snapshot and the
     * leader resends only after this timeout (research/raft.md trap 6). keel's snapshots are
     * tokens, so a short timeout costs nothing. */
    raft_set_install_snapshot_timeout(&n->raft, 2 * c->election_ms);
    /* The default 1 s reconnect delay is why a restarted peer was heard from late. */
    raft_uv_set_connect_retry_delay(&n->io, c->heartbeat_ms);
    rv = bootstrap(n);
    if (rv != 0)
        return from_raft(rv); /* raft stays initialised, never started: keeld exits now */
    *out = n;
    return 0;
}

int keel_node_start(struct keel_node *n)
{
    int rv = raft_start(&n->raft);
    if (rv != 0) {
        const char *why = raft_errmsg(&n->raft);
        /* raft 0.15 leaves the message empty when its listener cannot bind. */
        if (why[0] == '\0' && rv == RAFT_IOERR)
            why = "the peer address may be in use, or the raft directory unusable";
        KLOG_ERROR("raft_start: %s (%s)", raft_strerror(rv), why);
        return from_raft(rv);
    }
    n->started = 1;
    /* What start left in it is no failure of the running log (watch_apply). */
    n->io.errmsg[0] = '\0';
    uv_timer_init(n->o.loop, &n->deliver);
    n->deliver.data = n;
    uv_timer_init(n->o.loop, &n->nudge);
    n->nudge.data = n;
    uv_check_init(n->o.loop, &n->poll);
    n->poll.data = n;
    uv_check_start(&n->poll, poll_state);
    return 0;
}

static void transfer_done(struct raft_transfer *req)
{
    struct keel_node *n = req->data;
    n->transfer_busy = 0;
    /* Raft calls back when the target has become leader or the election timeout passed; only
     * who leads now tells which. */
    n->transfer_cb(n->transfer_data, raft_state(&n->raft) == RAFT_LEADER ? KEEL_ETIMEOUT : 0);
}

int keel_node_transfer(struct keel_node *n, uint64_t target, void (*cb)(void *data, int err),
                       void *data)
{
    if (!n->started || n->stopping)
        return KEEL_EUNAVAILABLE;
    if (n->transfer_busy)
        return KEEL_ETOOMANYREQUESTS;
    n->transfer.data = n;
    n->transfer_cb = cb;
    n->transfer_data = data;
    int rv = raft_transfer(&n->raft, &n->transfer, target, transfer_done);
    switch (rv) {
    case 0:
        n->transfer_busy = 1;
        n->handed_to = n->transfer.id; /* raft's pick when target is 0 */
        n->handed_at = uv_now(n->o.loop);
        return 0;
    case RAFT_BADID:
        return KEEL_EMEMBERNOTFOUND;
    case RAFT_NOTFOUND:
        return KEEL_EUNAVAILABLE;
    default:
        return refused(rv);
    }
}

uint64_t keel_node_commit_index(struct keel_node *n)
{
    return n->started ? n->raft.commit_index : 0;
}

size_t keel_node_members(struct keel_node *n, struct keel_consensus_member *out, size_t cap)
{
    if (n->closed)
        return 0; /* the configuration is gone with raft (see closed): callers fall back */
    const struct raft_configuration *c = &n->raft.configuration;
    bool leader = n->started && raft_state(&n->raft) == RAFT_LEADER;
    for (unsigned i = 0; i < c->n && i < cap; i++) {
        const struct raft_server *s = &c->servers[i];
        struct keel_consensus_member *m = &out[i];
        m->id = s->id;
        snprintf(m->peer, sizeof(m->peer), "%s", s->address);
        m->voter = s->role == RAFT_VOTER;
        m->caught_up = m->active = false;
        m->match = 0;
        if (leader && s->id == n->raft.id) {
            m->caught_up = m->active = true;
        } else if (leader && s->role != RAFT_SPARE) {
            const struct raft_progress *p = &n->raft.leader_state.progress[i];
            m->active = p->recent_recv;
            m->match = p->match_index;
            m->caught_up = p->recent_recv && p->match_index >= n->raft.commit_index;
        }
    }
    return c->n;
}

static int change_err(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_BADID:
        return KEEL_EMEMBERNOTFOUND;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return KEEL_EMEMBEREXISTS;
    case RAFT_CANTCHANGE:
        return KEEL_ETOOMANYREQUESTS;
    case RAFT_NOCONNECTION:
        return KEEL_ETIMEOUT; /* a promotion whose catch-up rounds ran out */
    case RAFT_LEADERSHIPLOST:
        return KEEL_EUNKNOWN;
    default:
        return refused(rv);
    }
}

static void change_done(struct raft_change *req, int status)
{
    struct keel_node *n = req->data;
    uint64_t then = n->change_then;
    n->change_then = 0;
    if (status == 0 && then != 0 && !n->stopping) {
        /* The add committed: now make the new member a standby, so that it gets the log. */
        int rv = raft_assign(&n->raft, &n->change, then, RAFT_STANDBY, change_done);
        if (rv == 0)
            return;
        status = rv;
    }
    n->change_busy = 0;
    n->change_cb(n->change_data, change_err(status));
}

int keel_node_change(struct keel_node *n, enum keel_node_change kind, uint64_t id, const char *peer,
                     void (*cb)(void *data, int err), void *data)
{
    if (!n->started || n->stopping)
        return KEEL_EUNAVAILABLE;
    if (n->change_busy)
        return KEEL_ETOOMANYREQUESTS;
    n->change.data = n;
    n->change_cb = cb;
    n->change_data = data;
    n->change_then = 0;
    int rv;
    switch (kind) {
    case KEEL_NODE_ADD:
        rv = raft_add(&n->raft, &n->change, id, peer, change_done);
        n->change_then = id;
        break;
    case KEEL_NODE_PROMOTE:
        rv = raft_assign(&n->raft, &n->change, id, RAFT_VOTER, change_done);
        break;
    default:
        rv = raft_remove(&n->raft, &n->change, id, change_done);
        break;
    }
    if (rv != 0) {
        n->change_then = 0;
        return change_err(rv);
    }
    n->change_busy = 1;
    return 0;
}

bool keel_node_changing(struct keel_node *n)
{
    return n->change_busy;
}

static int node_transfer(void *ctx, uint64_t target, keel_consensus_cb cb, void *data)
{
    return keel_node_transfer(ctx, target, cb, data);
}

static bool node_transferring(void *ctx)
{
    struct keel_node *n = ctx;
    return n->started && !n->closed && raft_state(&n->raft) == RAFT_LEADER &&
           n->raft.transfer != NULL;
}

static void raft_closed(struct raft *r)
{
    struct keel_node *n = r->data;
    n->closed = 1;
    /* raft_uv's memory stays until keel_node_free (see once_closed). */
    if (n->stop_cb != NULL)
        n->stop_cb(n->stop_data);
}

static void close_raft(struct keel_node *n)
{
    n->raft.data = n;
    n->closed_last_index = raft_last_index(&n->raft);
    raft_close(&n->raft, raft_closed);
}

/*
 * Shutdown never calls raft_close while raft holds a request of ours. In 0.15, raft_close calls
 * pending requests back from inside itself (convertClearLeader) while raft_state still says
 * LEADER, so whatever their callbacks set off could put new entries into the queue raft is
 * emptying on its way out; nothing in 0.15 promises that is safe. (The crash once seen in
 * raft_close with a barrier pending most likely came from that barrier being submitted twice,
 * fixed since; raft_close with requests pending did not crash in our tests, the shutdown crashes
 * they did find were raft_uv's, see once_closed.) So: node_propose and node_barrier refuse
 * everything from the moment stop is called, and raft closes only once every request it holds
 * has been called back.
 *
 * Why the wait ends. Only a leader holds requests: raft calls every one back when its entry is
 * applied, or with LEADERSHIPLOST whenever the member stops leading (every conversion out of
 * leader runs convertClearLeader). A leader that hears from a majority commits them, unless the
 * others cannot persist them; a leader that hears from no majority for an election timeout
 * steps down (the contact-quorum check in raft's tick), at most two election timeouts later. To
 * make sure one of the two happens, after one election timeout of waiting the member cuts its
 * own peer links (keel_transport_isolate): it is leaving anyway, and cut off it cannot hear from
 * a majority, so it steps down and raft fails what it still holds. What is left is a leader
 * whose own disk write never completes (a single member, or a stuck disk): raft_close would wait
 * for that write as well, so waiting for it here costs nothing, and it is logged.
 */
static void drain_tick(uv_timer_t *t)
{
    struct keel_node *n = t->data;
    if (n->inflight == 0) {
        /* On a timer, never inside one of raft's callbacks: raft_close must not run within
         * raft. */
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        uv_close((uv_handle_t *)&n->deliver, NULL); /* nothing is held: nothing to deliver */
        close_raft(n);
        return;
    }
    uint64_t now = uv_now(n->o.loop);
    uint64_t waited = now - n->drain_started;
    /* A single voter never steps down: its requests wait for nothing but its own disk. */
    if (!n->isolated && n->o.cfg->n_members > 1 && waited >= n->o.cfg->election_ms) {
        KLOG_WARN("%zu requests still pending %llu ms into shutdown (%s): cutting the peer links "
                  "so that raft gives them up",
                  n->inflight, (unsigned long long)waited,
                  raft_state(&n->raft) == RAFT_LEADER ? "leader" : "not leader");
        n->isolated = 1;
        n->drain_logged = now;
        keel_transport_isolate(&n->transport);
    } else if (waited >= 5000 && now - n->drain_logged >= 5000) {
        KLOG_WARN("still waiting for %zu requests raft holds (%llu ms into shutdown; its disk?)",
                  n->inflight, (unsigned long long)waited);
        n->drain_logged = now;
    }
}

void keel_node_stop(struct keel_node *n, void (*cb)(void *data), void *data)
{
    n->stop_cb = cb;
    n->stop_data = data;
    n->stopping = 1;
    if (!n->started) {
        close_raft(n);
        return;
    }
    uv_check_stop(&n->poll);
    uv_close((uv_handle_t *)&n->poll, NULL);
    uv_close((uv_handle_t *)&n->nudge, NULL);
    if (n->inflight > 0)
        KLOG_INFO("waiting for %zu requests raft holds", n->inflight);
    n->drain_started = uv_now(n->o.loop);
    uv_timer_init(n->o.loop, &n->drain);
    n->drain.data = n;
    uv_timer_start(&n->drain, drain_tick, 0, 5);
}

int keel_node_reload_tls(struct keel_node *n)
{
    return keel_transport_reload_tls(&n->transport);
}

void keel_node_free(struct keel_node *n)
{
    if (n == NULL)
        return;
    raft_uv_close(&n->io);
    keel_transport_close(&n->transport);
    keel_logbytes_close(&n->sizes);
    free(n->rtt);
    free(n);
}

bool keel_node_peer_rtt(struct keel_node *n, size_t i, uint64_t *id, const struct keel_histo **h)
{
    if (i >= n->n_rtt)
        return false;
    *id = n->rtt[i].id;
    *h = peer_of(n, *id) != NULL ? &n->rtt[i].seconds : NULL;
    return true;
}
