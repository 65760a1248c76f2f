/*
 * The lessor: lease countdowns. Every member keeps the table of leases as applied (granted TTL,
 * the last checkpoint and when it was applied here); only the leader counts down, answers
 * keep-alives, time-to-live and the lease list, and decides expiry, which it proposes as a
 * revoke through the log, so every member deletes the same keys at the same revision.
 *
 * Checkpoints (etcd's lease checkpointing, made exact). A lease record carries the remaining TTL
 * the leader last wrote down, or 0 for "kept alive since". A grant writes down its full TTL, and
 * the leader writes down the remaining TTL of a lease nobody has kept alive for one checkpoint
 * interval. A keep-alive of a lease with a checkpoint in place first commits a reset (remaining 0)
 * and is answered once it is applied: so a checkpoint in the applied log always means nobody was
 * promised more since, on any leader. A new leader, once a barrier shows it has applied the log:
 *
 *   checkpoint c > 0, applied here at time a:  expires at a + c (the time since a counted: an
 *       abandoned lease expires on time however often the leader changes; never early, since
 *       a is after the old leader's reading and no keep-alive was answered since). A member
 *       restarted since takes a from the store, which keeps with each lease when this member
 *       applied its checkpoint (same boot; else its last commit, else its start: late, never
 *       early)
 *   no checkpoint (kept alive lately):  expires one election timeout plus the full TTL after the
 *       promotion (etcd's rule: a deposed leader may have answered keep-alives until it noticed)
 *
 * so a lease kept alive lately is extended at most by the checkpoint interval (plus the election
 * time) per leader change, and an abandoned one not at all.
 *
 * Bounds: expired leases are proposed as revokes at most max_revokes per loop turn and at most
 * that many in flight (not yet applied), so a mass expiry is spread over turns and a client write
 * waits behind at most max_revokes of them; at most KEEL_LESSOR_CHECKPOINTS_PER_TICK checkpoints
 * per tick. Memory: one record per lease (the store bounds leases through its quota) and one waiter
 * per keep-alive waiting for a reset (bounded by the sessions' in-flight limits).
 */
#ifndef KEEL_LESSOR_H
#define KEEL_LESSOR_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "consensus.h"
#include "fsm.h"
#include "keel.pb-c.h"
#include "propose.h"
#include "reply.h"
#include "store.h"

#define KEEL_LESSOR_CHECKPOINTS_PER_TICK 10000

struct keel_lessor;

struct keel_lessor_options {
    uv_loop_t *loop; /* timers, and uv_now for the clock */
    const struct keel_consensus *raft;
    const struct keel_reply *reply;
    struct keel_propose *propose; /* revokes, checkpoints and resets */
    struct keel_store *store;     /* the table at start and after a restore; attached keys */
    const struct keel_fsm_progress *progress; /* the applied index, for the promotion barrier */
    unsigned election_ms;   /* the minimum TTL (1.5x, rounded up to seconds) and the extension */
    unsigned checkpoint_ms; /* a lease unrenewed this long gets a checkpoint */
    unsigned max_revokes;   /* revokes proposed per loop turn; 0: 1000 */
};

/* Load the table from the store. 0 or KEEL_E*. What o points to must outlive the lessor. */
int keel_lessor_new(const struct keel_lessor_options *o, struct keel_lessor **out);

/* The TTL a grant of ttl seconds gets: raised to the minimum (1.5 election timeouts). */
int64_t keel_lessor_clamp_ttl(const struct keel_lessor *l, int64_t ttl);

/* The lease table and what was applied to it since start, for metrics. */
struct keel_lessor_stat {
    uint64_t leases;  /* granted and not yet revoked, as applied here */
    uint64_t granted; /* grants applied */
    uint64_t revoked; /* revokes applied that removed a lease (expiries included) */
    uint64_t expired; /* of those, the ones this member proposed as leader when the TTL ran out */
};

/* On the loop. */
void keel_lessor_stat(const struct keel_lessor *l, struct keel_lessor_stat *out);

/*
 * A keep-alive, time-to-live or lease-list request from session (the caller keeps req). Answered
 * now, or (a keep-alive of a checkpointed lease) once its reset is applied. Not the leader:
 * NOT_LEADER; a leader still applying its predecessors' log: UNAVAILABLE (the client retries).
 */
void keel_lessor_request(struct keel_lessor *l, uint64_t session, const Keel__Request *req);

/* A committed batch (every member): grants, revokes and checkpoints change the table. */
void keel_lessor_applied(struct keel_lessor *l, const struct keel_fsm_batch *b);

/* Leadership changed: a new leader starts its countdowns once it has applied the log. */
void keel_lessor_leader_changed(struct keel_lessor *l, bool is_leader);

/* Stop the timers and answer every waiting keep-alive UNAVAILABLE (the member is stopping). */
void keel_lessor_stop(struct keel_lessor *l);

/* NULL is fine. After keel_lessor_stop and the loop turn that closes its timers. */
void keel_lessor_free(struct keel_lessor *l);

#endif
