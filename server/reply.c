/*
 * Replies (see reply.h). Headers and errors live on the stack for the duration of one send:
 * the responder frames the message before returning, so nothing here outlives the call.
 */
#include "reply.h"

#include <stdio.h>

#include "err.h"
#include "frame.h"

void keel_reply_header(const struct keel_reply *r, int64_t revision, Keel__ResponseHeader *out)
{
    keel__response_header__init(out);
    out->cluster_id = *r->cluster_id;
    out->member_id = r->member_id;
    out->raft_term = r->raft->term(r->raft->ctx);
    if (revision < 0) {
        struct keel_store_stat st;
        keel_store_stat(r->store, &st);
        revision = st.revision;
    }
    out->revision = revision;
}

void keel_reply_error_fill(const struct keel_reply *r, int err, const char *msg, Keel__Error *out)
{
    keel__error__init(out);
    out->code = keel_err_to_wire(err);
    out->message = (char *)(msg ? msg : keel_strerror(err));
    if (err == KEEL_ENOTLEADER) {
        uint64_t leader = r->raft->leader(r->raft->ctx);
        struct keel_member_info *mi = keel_members_get(r->members, leader);
        out->leader_id = leader;
        out->leader_address = mi ? mi->client : "";
    }
}

int keel_reply_send(const struct keel_reply *r, uint64_t session, Keel__Response *resp,
                    int64_t revision, enum keel_respond_kind kind)
{
    Keel__ResponseHeader h;
    keel_reply_header(r, revision, &h);
    resp->header = &h;
    int rv = r->out->send(r->out->ctx, session, &resp->base, kind);
    resp->header = NULL;
    if (rv == KEEL_EREPLYTOOLARGE && resp->error == NULL) {
        /* The store bounds what it builds (KEEL_MAX_REPLY_BYTES); this catches any other
         * answer a client could not take. */
        char msg[128];
        snprintf(msg, sizeof(msg), "reply would exceed the %u-byte frame limit: ask for less",
                 KEEL_FRAME_DEFAULT_MAX);
        return keel_reply_error_at(r, session, resp->id, KEEL_EREPLYTOOLARGE, msg, revision);
    }
    return rv;
}

/*
 * A refusal for a reason the client should fix (too large, too many operations, a bad frame) or
 * that says the member is overloaded or full (too many requests, no space): one WARN line each,
 * at most r->rejected_log's per_sec lines a second, then a count of those left out. Refusals of
 * the cluster's state (not the leader, no quorum, a compacted revision) are not logged here.
 */
static void log_rejected(const struct keel_reply *r, uint64_t session, uint64_t id, int err,
                         const char *msg)
{
    switch (err) {
    case KEEL_EINVAL:
    case KEEL_EKEYTOOLONG:
    case KEEL_ETOOLARGE:
    case KEEL_ENOSPACE:
    case KEEL_ETOOMANYOPS:
    case KEEL_EDUPKEY:
    case KEEL_ETOOMANYREQUESTS:
    case KEEL_EFRAMETOOLARGE:
    case KEEL_EBADFRAME:
    case KEEL_EREPLYTOOLARGE:
        break;
    default:
        return;
    }
    uint64_t left_out;
    if (r->rejected_log == NULL || !keel_log_limit_take(r->rejected_log, &left_out))
        return;
    if (left_out > 0)
        KLOG_WARN("rejected requests: %llu more not logged (at most %u lines a second)",
                  (unsigned long long)left_out, r->rejected_log->per_sec);
    if (id == 0) /* a frame refused whole (keel_reply_refuse): the connection closes */
        KLOG_WARN("rejected request of session %llu, closing it: %s", (unsigned long long)session,
                  msg ? msg : keel_strerror(err));
    else
        KLOG_WARN("rejected request %llu of session %llu: %s", (unsigned long long)id,
                  (unsigned long long)session, msg ? msg : keel_strerror(err));
}

int keel_reply_error_at(const struct keel_reply *r, uint64_t session, uint64_t id, int err,
                        const char *msg, int64_t revision)
{
    Keel__Response resp = KEEL__RESPONSE__INIT;
    Keel__Error e;
    log_rejected(r, session, id, err, msg);
    keel_reply_error_fill(r, err, msg, &e);
    resp.id = id;
    resp.error = &e;
    return keel_reply_send(r, session, &resp, revision, KEEL_RESPOND_ANSWER);
}

int keel_reply_error(const struct keel_reply *r, uint64_t session, uint64_t id, int err,
                     const char *msg)
{
    return keel_reply_error_at(r, session, id, err, msg, -1);
}

int keel_reply_refuse(const struct keel_reply *r, uint64_t session, int err, const char *msg)
{
    Keel__Response resp = KEEL__RESPONSE__INIT;
    Keel__Error e;
    log_rejected(r, session, 0, err, msg);
    keel_reply_error_fill(r, err, msg, &e);
    resp.error = &e;
    return r->out->send(r->out->ctx, session, &resp.base, KEEL_RESPOND_PUSH);
}
