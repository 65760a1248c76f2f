/*
 * Request kinds: for each body of keel.proto's Request, what it is. One table, shared by the
 * server (which writes go into the raft log, and as which Command) and the client (what may be
 * retried, and who can answer), so the list of writes is written down once.
 *
 * The table holds what the body case alone decides. A few bodies depend on their fields too:
 * a serializable range, an alarm GET and a member list that is not linearizable can be answered
 * by any member; a txn whose operations are all ranges and an alarm GET are idempotent. The
 * keel_reqkind_is_* functions below apply those refinements; use them rather than the flags
 * when a whole Request is at hand.
 *
 * Depends on the generated keel.pb-c.h only. Nothing here allocates.
 */
#ifndef KEEL_REQKIND_H
#define KEEL_REQKIND_H

#include <stdbool.h>

#include "keel.pb-c.h"

enum keel_reqkind_flag {
    /* Changes the replicated state: proposed on the leader, applied from the raft log. */
    KEEL_REQKIND_WRITE = 1u << 0,
    /* Sending it twice has the effect of sending it once: a client may retry it after a lost
     * reply or a failover without asking its caller. */
    KEEL_REQKIND_IDEMPOTENT = 1u << 1,
    /* Answered by the leader only (a follower says NOT_LEADER). */
    KEEL_REQKIND_LEADER = 1u << 2,
    /* Part of a stream on the connection (watches, snapshot): answered by several responses,
     * or by responses of another request; not a one-request-one-answer call. */
    KEEL_REQKIND_STREAM = 1u << 3,
};

struct keel_reqkind {
    const char *name; /* the body case's name, e.g. "DELETE_RANGE" (for logs and tests) */
    unsigned flags;   /* enum keel_reqkind_flag bits */
    /* The Command op a write becomes in the raft log. KEEL__COMMAND__OP__NOT_SET for reads and
     * for writes that take another way (membership changes: membership.h). */
    Keel__Command__OpCase command;
};

/*
 * The kind of a body case. NULL for KEEL__REQUEST__BODY__NOT_SET and for a case this table does
 * not know (a newer peer's request): treat those as unsupported, not retried.
 */
const struct keel_reqkind *keel_reqkind_of(Keel__Request__BodyCase body);

/* req changes the replicated state (the WRITE flag, refined: an alarm GET reads). */
bool keel_reqkind_is_write(const Keel__Request *req);

/* req may be resent safely (the IDEMPOTENT flag, refined: a txn of ranges only and an alarm GET
 * are; a nested txn counts as a write, which only costs a retry). */
bool keel_reqkind_is_idempotent(const Keel__Request *req);

/* req must go to the leader (the LEADER flag, refined: a serializable range, an alarm GET and a
 * member list that is not linearizable can be answered by any member). */
bool keel_reqkind_is_leader_only(const Keel__Request *req);

/*
 * Make cmd carry req's write: set cmd->op_case to the kind's command and point the op at req's
 * body, and its auth stamp (Request.auth) at cmd->auth. No copy: cmd borrows req's memory, so req
 * must outlive every use of cmd. cmd's other fields (request_id, origin) are left alone. 0, or
 * KEEL_EINVAL when req is not a write with a Command (see struct keel_reqkind) or its body is
 * missing.
 */
int keel_reqkind_to_command(const Keel__Request *req, Keel__Command *cmd);

#endif
