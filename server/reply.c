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

int keel_reply_error_at(const struct keel_reply *r, uint64_t session, uint64_t id, int err,
                        const char *msg, int64_t revision)
{
    Keel__Response resp = KEEL__RESPONSE__INIT;
    Keel__Error e;
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
    keel_reply_error_fill(r, err, msg, &e);
    resp.error = &e;
    return r->out->send(r->out->ctx, session, &resp.base, KEEL_RESPOND_PUSH);
}
