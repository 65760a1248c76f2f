/*
 * The consensus seam: what the request path needs from raft, as a struct of function pointers.
 * node.c implements it over canonical/raft (keel_node_consensus); a unit test implements it
 * with a fake node it drives by hand. Everything here speaks keel errors (proto/err.h): raft's
 * own codes never get past node.c.
 *
 * Callbacks run on the loop, never from inside the call that registered them.
 */
#ifndef KEEL_CONSENSUS_H
#define KEEL_CONSENSUS_H

#include <stdbool.h>
#include <stdint.h>

#include "keel.pb-c.h"

/* The outcome of a proposal or a barrier: 0 or a KEEL_E* code (see the functions). */
typedef void (*keel_consensus_cb)(void *data, int err);

/* A member of the raft configuration. */
struct keel_consensus_member {
    uint64_t id;
    char peer[64];  /* its peer address, as the configuration holds it */
    bool voter;     /* else a learner (raft's standby: it gets the log, it does not vote) */
    bool caught_up; /* on the leader: answered within the election timeout and holds every
                     * committed entry (the leader itself: true); false anywhere else */
    bool active;    /* on the leader: raft's "recent receive" flag (itself: true), which raft
                     * clears every election timeout: true means answered since the last clear */
    uint64_t match; /* on the leader: the last index it is known to hold (0 elsewhere) */
};

struct keel_consensus {
    void *ctx; /* the implementation's; passed to every function below */

    /* This member is the leader now (raft state, not a promise about the next instant). */
    bool (*is_leader)(void *ctx);

    /* The current leader's member id, 0 when unknown. */
    uint64_t (*leader)(void *ctx);

    /* The current raft term (for response headers). */
    uint64_t (*term)(void *ctx);

    /* The index of the last entry in this member's log (for status). */
    uint64_t (*last_index)(void *ctx);

    /*
     * Append batch to the log as one entry (encoded here; the caller keeps batch). 0: cb fires
     * exactly once, with 0 once the entry has been handed to the fsm on this member, or with
     * KEEL_EUNKNOWN when leadership was lost or raft failed after accepting it (the entry may
     * still commit under the next leader). Otherwise nothing was appended and cb never fires:
     * KEEL_ENOTLEADER, KEEL_ENOMEM, KEEL_EUNAVAILABLE (raft refused), KEEL_EINTERNAL (keel
     * built a malformed entry: a bug).
     */
    int (*propose)(void *ctx, const Keel__CommandBatch *batch, keel_consensus_cb cb, void *data);

    /*
     * Append a barrier. 0: cb fires exactly once, with 0 once every entry before the barrier
     * has been handed to the fsm, or with KEEL_ENOTLEADER when leadership was lost first.
     * Otherwise no barrier and no callback: KEEL_ENOTLEADER, KEEL_ENOMEM, KEEL_EUNAVAILABLE.
     */
    int (*barrier)(void *ctx, keel_consensus_cb cb, void *data);

    /*
     * Hand leadership to member target (0: whichever voter is most up to date). 0: cb fires
     * exactly once, with 0 once this member no longer leads (leader() then names who does, or
     * 0 while unknown), or with KEEL_ETIMEOUT when it still leads an election timeout later.
     * Otherwise no transfer and no callback: KEEL_ENOTLEADER, KEEL_EMEMBERNOTFOUND (target is
     * not a voter of the cluster, or is this member), KEEL_ETOOMANYREQUESTS (a transfer is under
     * way), KEEL_EUNAVAILABLE (no voter to hand it to, or stopping).
     */
    int (*transfer)(void *ctx, uint64_t target, keel_consensus_cb cb, void *data);

    /* This member leads and is handing leadership over (MoveLeader, shutdown): raft refuses
     * what would be appended until the transfer ends, within an election timeout. NULL: never. */
    bool (*transferring)(void *ctx);

    /* The raft configuration's members, at most cap of them into out; returns how many there
     * are (0 on a joining member that has not heard from its cluster yet). NULL: a fixed
     * membership that the member table (members.h) describes. */
    size_t (*members)(void *ctx, struct keel_consensus_member *out, size_t cap);
};

#endif
