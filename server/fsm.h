/*
 * The state machine and the storage writer thread. It knows nothing of raft: node.c adapts
 * raft's fsm callbacks to the functions below and translates their codes.
 *
 * The node calls keel_fsm_apply on the loop for each committed entry, in index order. It only
 * copies the entry into the writer's queue: the writer thread owns the store's only write
 * transaction and keeps it open across many entries. It applies what is queued, publishes it
 * (the store's overlay makes it visible to every read), and hands the results back to the loop
 * through a uv_async_t; replies and watch events go out from there. No LMDB sync is on that
 * path: the raft log already holds every applied entry durably, and a crash replays whatever
 * LMDB had not committed. The writer commits once the write is commit_interval_ms old or its
 * overlay holds commit_bytes, when idle past that, and before a snapshot or a checkpoint fetch;
 * the store syncs each commit in the background (storage/durable.c), so the writer waits only
 * for the commit's page writes.
 *
 * Raft snapshots are tokens {magic, applied index, cluster id}: the store itself never goes
 * through raft. A token promises only committed and synced state (a SYNC job commits and waits
 * for the store's sync, keel_store_sync), so
 * raft never compacts away a log entry that LMDB does not hold on disk. A token ahead of the
 * store (a follower that fell behind the leader's log) queues a checkpoint fetch from the
 * leader on the writer, ahead of the entries raft delivers next, so the order of state changes
 * stays the log's order.
 */
#ifndef KEEL_FSM_H
#define KEEL_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "handshake.h"

#include "arena.h"
#include "histo.h"
#include "store.h"

struct keel_fsm;

#define KEEL_FSM_TOKEN_LEN 32 /* bytes of a snapshot token */

/* Default commit interval. Not etcd's 100 ms: no reply waits for a commit here, and every
 * commit rewrites (and its background sync writes) the key index leaves its puts touched, so
 * a longer interval writes each hot page once instead of many times. With 100k keys preloaded,
 * put at 256 clients: 100 ms wrote 2.2 GB to the disk in 10 s (40k writes/s) and the raft
 * log's syncs queued behind it (21k puts/s); 500 ms wrote 1.5 GB (29k puts/s) with commit
 * stalls of the writer up to 28 ms; 1000 ms did no better and stalled it up to 100 ms. */
#define KEEL_FSM_COMMIT_MS    500
#define KEEL_FSM_COMMIT_BYTES (64u << 20) /* default overlay bound: commit once it holds this */

/* One command's outcome. */
struct keel_fsm_result {
    uint64_t index;           /* raft index of its entry */
    uint64_t origin;          /* member that proposed it */
    uint64_t request_id;      /* its id on that member */
    int op;                   /* its Keel__Command op_case */
    const Keel__Command *cmd; /* the Command itself (in the batch's arena) */
    struct keel_apply_result r;
};

/* What one writer pass applied and published, delivered on the loop. Memory lives in arena. */
struct keel_fsm_batch {
    struct keel_fsm_batch *next;
    struct keel_arena arena;
    struct keel_fsm_result *results;
    size_t n;
    size_t cap;
    uint64_t applied_index; /* the store's applied (visible) index after this batch */
    bool restored;          /* a checkpoint replaced the store before this batch: whatever followed
                             * revisions through batches must re-read the store's history */
    size_t entry_bytes;     /* payload bytes of the entries it applied (the queue's accounting) */
};

/* Called on the loop for each committed batch, in order; the batch is freed after it returns. */
typedef void (*keel_fsm_done_cb)(void *data, struct keel_fsm_batch *b);

struct keel_tls_options;

struct keel_fsm_options {
    uv_loop_t *loop;
    struct keel_store *store;
    const uint64_t *cluster_id; /* read at each use: 0 until a joining member learns it */
    const char *bind_host;      /* source address of checkpoint fetches (copied; NULL: any) */
    keel_fsm_done_cb done;
    void *data;
    const char *mark_path;       /* where the highest published index is noted (NULL: nowhere) */
    uint32_t commit_interval_ms; /* 0: KEEL_FSM_COMMIT_MS */
    size_t commit_bytes;         /* 0: KEEL_FSM_COMMIT_BYTES; bounds the overlay's memory */
    /* Timings the writer records (histo.h; NULL: not recorded); they must outlive the fsm.
     * apply_seconds: applying one batch's entries in the open write (not its commit);
     * commit_seconds: one commit of the open write (its page writes: the sync is the store's,
     * in the background). */
    struct keel_histo *apply_seconds, *commit_seconds;
    /* A batch whose apply takes longer is logged (etcd's "apply request took too long");
     * 0: never. */
    uint32_t warn_apply_us;
    /* A checkpoint is fetched from the leader's peer port as a member (fetch.h): fetch_as is
     * what this member says in the peer handshake (its cluster_id is replaced by *cluster_id at
     * each fetch), fetch_tls the peer TLS client options (NULL: peer TLS off). Both must outlive
     * the fsm. */
    const struct keel_handshake *fetch_as;
    const struct keel_tls_options *fetch_tls;
};

/* How far the writer got, as the loop sees it. */
struct keel_fsm_progress {
    uint64_t queued;        /* the last index handed to the writer */
    uint64_t committed;     /* the store's applied index as of the last batch delivered */
    uint64_t backlog_bytes; /* entry bytes handed to the writer, not yet delivered back: what
                             * its queue and the batch being applied hold */
    /* The highest index readers of this member had seen before it restarted (from the mark
     * file): published, maybe not committed, so the store may restart below it. Until
     * `committed` is back there, a local read could go back in time: serializable reads wait. */
    uint64_t shown_before;
};

/* Start the writer thread. 0 or KEEL_E*. o->loop and o->store must outlive the fsm. */
int keel_fsm_new(const struct keel_fsm_options *o, struct keel_fsm **out);

/*
 * Queue the committed entry payload (a packed CommandBatch) at index for the writer (copied).
 * Never fails: a state machine that cannot take a committed entry aborts the member, which
 * replays its log on restart (research/raft.md trap 7).
 */
void keel_fsm_apply(struct keel_fsm *f, uint64_t index, const void *payload, size_t len);

/*
 * A raft snapshot in two steps, so that the loop never waits for the writer (raft's v3 fsm:
 * snapshot on the loop, snapshot_async on a pool thread).
 *
 * keel_fsm_snapshot_begin (loop): make the token for the last queued index and queue a sync
 * behind everything queued so far; *ticket names that sync. Never waits. 0, KEEL_EUNAVAILABLE
 * when the store is waiting for a checkpoint (it cannot promise the token's index; raft tries
 * again later), or KEEL_ENOMEM.
 *
 * keel_fsm_snapshot_wait (any thread but the loop): block until the writer has committed and
 * synced everything queued before begin, so the token's promise holds on disk. 0, or
 * KEEL_EUNAVAILABLE when the writer did not get there within a minute or the fsm is stopping
 * (raft then drops this snapshot and keeps its log).
 */
int keel_fsm_snapshot_begin(struct keel_fsm *f, uint8_t token[KEEL_FSM_TOKEN_LEN],
                            uint64_t *ticket);
int keel_fsm_snapshot_wait(struct keel_fsm *f, uint64_t ticket);

/*
 * Defragment the store online (defrag.h) after everything queued so far: cb(data, err, msg,
 * before, after) on the loop when it is done (err 0: the store file went from before to after
 * bytes) or failed (msg says why; KEEL_ETOOMANYREQUESTS when one is already running). 0 or
 * KEEL_ENOMEM (cb never called).
 */
typedef void (*keel_fsm_defrag_cb)(void *data, int err, const char *msg, uint64_t before,
                                   uint64_t after);
int keel_fsm_defrag(struct keel_fsm *f, keel_fsm_defrag_cb cb, void *data);

/*
 * The sync alone (loop): queue a commit and sync of everything queued so far, to be waited for
 * with keel_fsm_snapshot_wait(*ticket) off the loop (a snapshot stream copies the store only
 * then, so its copy holds every write answered before it was asked for). 0, KEEL_EUNAVAILABLE
 * (the store waits for a checkpoint) or KEEL_ENOMEM.
 */
int keel_fsm_sync_begin(struct keel_fsm *f, uint64_t *ticket);

/*
 * Take a snapshot token (the caller keeps it). At or below the store's applied index: nothing
 * to do (a restart). Ahead of it: queue a checkpoint fetch from the leader on the writer, ahead
 * of the entries applied next. Until the checkpoint is in, no entry above the token's index is
 * applied: a fetch abandoned at shutdown drops them (the raft log still has them, and the next
 * start fetches again), so the store never jumps the gap. 0, KEEL_ECORRUPT (not a token of this
 * cluster), or KEEL_ENOMEM.
 */
int keel_fsm_restore(struct keel_fsm *f, const void *token, size_t len);

/* The writer's progress (updated on the loop; the pointer stays valid for the fsm's life). */
const struct keel_fsm_progress *keel_fsm_progress(const struct keel_fsm *f);

/* Where a checkpoint can be fetched from: the leader's peer address ("" when unknown). */
void keel_fsm_set_leader(struct keel_fsm *f, const char *peer_addr);

/* Checkpoint fetch attempts of this member since start (a store behind a raft snapshot token
 * copying a checkpoint from the leader): restored in place (*ok) or failed and retried
 * (*failed); *seconds: how long each attempt took, copy and swap. Any thread (the writer
 * counts); *seconds is valid for the fsm's life. */
void keel_fsm_fetches(const struct keel_fsm *f, uint64_t *ok, uint64_t *failed,
                      const struct keel_histo **seconds);

/* Finish the queued work, stop the thread, close the async handle; cb(data) after that on the
 * loop (cb may be NULL). No apply may come after this. */
void keel_fsm_stop(struct keel_fsm *f, void (*cb)(void *data), void *data);

/* Free the fsm (after the loop ended). NULL is fine. */
void keel_fsm_free(struct keel_fsm *f);

#endif
