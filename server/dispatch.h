/*
 * Dispatch: what a request means. The first step above the sessions on every request's path.
 * Every request passes auth's intake first (auth.h: who sent it, may they; Authenticate and the
 * auth reads are answered there), then:
 *
 *   writes (proto/reqkind.h: a kind with a Command)  -> propose (a compaction of a long
 *                                                       history: compactor, in steps)
 *   linearizable ranges                              -> readindex, then served at once
 *   serializable ranges, status, member list, Hello -> answered at once (ranges in key order
 *                                                       by rangestream: in pieces when large)
 *   lease keep-alive, time-to-live, list             -> lessor (a grant's TTL is clamped here)
 *   snapshot                                         -> snapstream
 *   (a member's checkpoint fetch, keel_dispatch_fetch_request: snapshot only, no auth)
 *   watch create / cancel / progress                 -> watch
 *   anything else                                    -> UNSUPPORTED or INVALID_ARGUMENT
 *
 * Answers go out through the reply module; dispatch never sees a session, only its id.
 */
#ifndef KEEL_DISPATCH_H
#define KEEL_DISPATCH_H

#include <stdint.h>

#include "auth.h"
#include "compactor.h"
#include "config.h"
#include "consensus.h"
#include "fsm.h"
#include "keel.pb-c.h"
#include "lessor.h"
#include "members.h"
#include "propose.h"
#include "rangestream.h"
#include "readindex.h"
#include "reply.h"
#include "snapstream.h"
#include "store.h"
#include "watch.h"

struct keel_dispatch;

struct keel_dispatch_options {
    const struct keel_config *cfg; /* name, zone, ids for Hello and status */
    const struct keel_reply *reply;
    const struct keel_consensus *raft;
    struct keel_store *store;
    struct keel_members *members;
    struct keel_propose *propose;
    struct keel_readindex *readindex;
    struct keel_snapstream *snapstream;
    struct keel_watch_hub *watch;
    struct keel_lessor *lessor;
    /* The writer's progress: a restarted member serves serializable reads only once it has
     * applied again what it had shown before (shown_before). NULL: no such wait. */
    const struct keel_fsm_progress *progress;
    struct keel_fsm *fsm;                 /* Defragment runs on its writer (NULL: refused) */
    struct keel_rangestream *rangestream; /* ranges in key order, in pieces when large (NULL:
                                           * every range in one reply, as big as allowed) */
    struct keel_compactor *compactor;     /* clients' compactions of long histories, in steps
                                           * (NULL: each in one apply) */
    /* MemberAdd, MemberRemove and MemberPromote go here (membership.h; req stays dispatch's).
     * NULL: refused as unsupported. */
    void (*member_change)(void *ctx, uint64_t session, const Keel__Request *req);
    void *member_ctx;
    /* Every request passes its intake check first, and a linearizable range its check again
     * after the read barrier (auth.h). NULL: no auth at all (tests). */
    struct keel_auth *auth;
};

/* 0 or KEEL_ENOMEM. What o points to must outlive it. */
int keel_dispatch_new(const struct keel_dispatch_options *o, struct keel_dispatch **out);

/* A session's handshake (the caller keeps h): answer with a HelloResponse. */
void keel_dispatch_hello(struct keel_dispatch *d, uint64_t session, const Keel__Hello *h);

/* One request from session. Takes req: it is freed here, or by the module that keeps it (the
 * turn's proposal batch, a read waiting for its barrier). */
void keel_dispatch_request(struct keel_dispatch *d, uint64_t session, Keel__Request *req);

/*
 * One request from a member's checkpoint fetch connection (transport.h: accepted on the peer
 * port after the peer handshake, and with peer TLS its certificate): a Snapshot goes to the
 * snapstream with no auth check (membership is the credential; the client port's Snapshot stays
 * root's with auth on), anything else is refused as UNSUPPORTED. Takes req.
 */
void keel_dispatch_fetch_request(struct keel_dispatch *d, uint64_t session, Keel__Request *req);

/* A frame the session cannot take: tell the client why before it is cut off. */
void keel_dispatch_refuse(struct keel_dispatch *d, uint64_t session, int err, const char *msg);

/* Leadership changed, or a transfer of it ended (main.c calls this on every change raft shows):
 * the requests held while this leader handed leadership over are taken again, and answered as
 * any other (NOT_LEADER naming the new leader, once there is one). */
void keel_dispatch_leader_changed(struct keel_dispatch *d);

/* The member is stopping: every request from now on is answered UNAVAILABLE. */
void keel_dispatch_stop(struct keel_dispatch *d);

/* NULL is fine. */
void keel_dispatch_free(struct keel_dispatch *d);

#endif
