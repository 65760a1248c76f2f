/*
 * Replies: the only place that builds a response header and an Error. Every answer keeld sends
 * (writes, reads, watches, streams, refusals) goes through here to the responder seam, so the
 * header always carries the same cluster id, member id, term and revision rules, and every
 * NOT_LEADER names the leader's client address.
 *
 * struct keel_reply is a plain value the caller fills (main.c; a test): no allocation, no
 * verbs. What it points to must outlive it.
 */
#ifndef KEEL_REPLY_H
#define KEEL_REPLY_H

#include <stdint.h>

#include "consensus.h"
#include "keel.pb-c.h"
#include "log.h"
#include "members.h"
#include "responder.h"
#include "store.h"

struct keel_reply {
    const struct keel_responder *out;  /* where answers go */
    const struct keel_consensus *raft; /* the term for headers, the leader for NOT_LEADER */
    struct keel_members *members;      /* the leader's client address for NOT_LEADER */
    struct keel_store *store;          /* the current revision for headers */
    const uint64_t *cluster_id;        /* read at each use (a joining member learns it late) */
    uint64_t member_id;
    /* Where refusals the client should act on are logged (too large, too many operations, no
     * space, overload: see reply.c), rate-limited; NULL: not logged. */
    struct keel_log_limit *rejected_log;
};

/* Fill out (initialised here) for an answer at revision; revision < 0: the store's current
 * revision. */
void keel_reply_header(const struct keel_reply *r, int64_t revision, Keel__ResponseHeader *out);

/*
 * Fill out (initialised here) for a KEEL_E* code: its wire code, msg (or the code's own message
 * when NULL; not copied: it must live as long as out), and for KEEL_ENOTLEADER the leader's id
 * and client address.
 */
void keel_reply_error_fill(const struct keel_reply *r, int err, const char *msg, Keel__Error *out);

/* Send resp to session with its header filled for revision (< 0: current). The caller keeps
 * resp (its header is set back to NULL). 0, or KEEL_ECLOSED. */
int keel_reply_send(const struct keel_reply *r, uint64_t session, Keel__Response *resp,
                    int64_t revision, enum keel_respond_kind kind);

/* Answer request id of session with err (see keel_reply_error_fill), header at the current
 * revision. 0, or KEEL_ECLOSED. */
int keel_reply_error(const struct keel_reply *r, uint64_t session, uint64_t id, int err,
                     const char *msg);

/* The same with the header at revision (a watch answers at the revision it delivered). */
int keel_reply_error_at(const struct keel_reply *r, uint64_t session, uint64_t id, int err,
                        const char *msg, int64_t revision);

/* Tell session why its connection ends (a frame it cannot take): an Error with no request id and
 * no header, pushed. 0, or KEEL_ECLOSED. */
int keel_reply_refuse(const struct keel_reply *r, uint64_t session, int err, const char *msg);

#endif
