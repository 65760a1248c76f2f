/*
 * Proposals: writes become Commands, and the Commands of one loop turn go into one raft entry
 * (raft_apply with several buffers calls back only once, research/raft.md), up to a cap on the
 * entry's bytes: a Command that would take the entry past it closes that entry and opens the
 * next one (a Command over the cap on its own goes alone; requests are bounded already).
 *
 * The pending table remembers, by this member's request id, which session and client id to
 * answer; the answer comes from the fsm once the storage writer has committed the entry
 * (keel_propose_applied), or from the consensus seam when the entry never made it.
 *
 *   keel_propose_request ─┐                 ┌─ raft refused: answered now (client may retry)
 *   keel_propose_command ─┴─ batch ─ flush ─┼─ leadership lost: answered UNKNOWN
 *                                           └─ committed: keel_propose_applied answers
 *
 * Request ids are unique on this member only; a Command carries its origin member, so results
 * of other members' proposals pass through untouched.
 */
#ifndef KEEL_PROPOSE_H
#define KEEL_PROPOSE_H

#include <stdint.h>

#include <uv.h>

#include "consensus.h"
#include "fsm.h"
#include "keel.pb-c.h"
#include "reply.h"
#include "store.h"

struct keel_propose;

struct keel_propose_options {
    /* Flush at the end of every loop turn (a uv_check_t). NULL: no handle; the caller calls
     * keel_propose_flush (tests). */
    uv_loop_t *loop;
    const struct keel_consensus *raft;
    const struct keel_reply *reply;
    uint64_t member_id;        /* the origin of this member's Commands */
    struct keel_limits limits; /* checked at intake by keel_store_validate */
    size_t max_entry_bytes;    /* packed CommandBatch bytes per entry; 0: the default below */
};

/* One entry's cap: a writer transaction takes 8 MiB of entries, so two fit one, and a follower
 * receives no entry much larger than the largest request. */
#define KEEL_PROPOSE_ENTRY_BYTES (4u << 20)

/* 0 or KEEL_ENOMEM. What o points to must outlive the proposer. */
int keel_propose_new(const struct keel_propose_options *o, struct keel_propose **out);

/*
 * Propose a write (a request whose kind has a Command, proto/reqkind.h) from session. Takes
 * req: the Command points into it until the turn's entry is encoded. Refused at once, with an
 * answer to the client, when this member is not the leader or the request fails validation.
 */
void keel_propose_request(struct keel_propose *p, uint64_t session, Keel__Request *req);

/*
 * Propose a Command of keeld's own (member attributes, the lessor's revokes and checkpoints):
 * nobody is answered. cmd's fields are copied but what its op points to is not: it must stay
 * valid until the turn's flush. owner, when not NULL, is a message built with malloc (what the
 * op points into) that is freed with protobuf_c_message_free_unpacked once the entry is encoded,
 * or at once on failure: it is taken in every case. request_id (may be NULL) receives the id the
 * Command carries, as keel_fsm_result.request_id reports it with this member as origin. 0 or
 * KEEL_ENOMEM.
 */
int keel_propose_command(struct keel_propose *p, const Keel__Command *cmd, ProtobufCMessage *owner,
                         uint64_t *request_id);

/* Send this turn's Commands not yet sent as one entry (nothing when there are none). */
void keel_propose_flush(struct keel_propose *p);

/*
 * Bytes of Commands taken and not yet handed to the storage writer on this member: this turn's
 * batch and the entries raft holds. With the writer's own queue (keel_fsm_progress) it is what
 * this member's writes have queued ahead of the store; sessions stop taking requests past a bound
 * on the two (main.c).
 */
uint64_t keel_propose_backlog(const struct keel_propose *p);

/* Commands this member proposed that never committed through it, since start: refused at once
 * (raft refused their entry, or memory ran out), or dropped when this member lost leadership
 * (those may still commit under the next leader: their outcome is unknown). Counted per Command,
 * keeld's own included. On the loop. */
uint64_t keel_propose_failed(const struct keel_propose *p);

/* A committed batch: answer the requests of this member whose results it holds. */
void keel_propose_applied(struct keel_propose *p, const struct keel_fsm_batch *b);

/* Flush what is batched and stop the end-of-turn handle (the member is stopping). */
void keel_propose_stop(struct keel_propose *p);

/* Free the proposer and its pending table (after the loop ended). NULL is fine. */
void keel_propose_free(struct keel_propose *p);

#endif
