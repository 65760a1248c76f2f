/*
 * The responder seam: how everything above the sessions answers a client, by session id.
 * session.c implements it (keel_sessions_responder) and main.c hands it to the modules that
 * answer; a unit test implements it with a recorder. Nothing that answers includes session.h,
 * so calls go one way: session -> dispatch -> ... and answers come back through here.
 *
 * A session id names one client connection for its whole life and is never reused; once the
 * connection is gone every call below does nothing (and says KEEL_ECLOSED where it returns a
 * code), so holding an id in a pending write, a waiting read or a watcher is always safe.
 *
 * Call through the pointers, r->send(r->ctx, ...). Most answers go through reply.h instead,
 * which fills the response header first.
 */
#ifndef KEEL_RESPONDER_H
#define KEEL_RESPONDER_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* What a message is to the request it belongs to. */
enum keel_respond_kind {
    KEEL_RESPOND_PUSH,   /* one of several (a watch event, a stream chunk, the Hello answer) */
    KEEL_RESPOND_ANSWER, /* the answer: the request no longer counts as in flight */
};

/* The session's queued output has all been written (closed = 0), or the session is closing
 * (closed = 1, the last call). */
typedef void (*keel_drain_cb)(void *data, int closed);

struct keel_responder {
    void *ctx; /* the implementation's; passed to every function below */

    /* Queue msg, framed, for this loop turn's write to session (msg is copied; the caller
     * keeps it). 0, KEEL_ECLOSED when the session is gone, or KEEL_EREPLYTOOLARGE (nothing
     * queued) for an ANSWER over a client's default frame limit. */
    int (*send)(void *ctx, uint64_t session, const ProtobufCMessage *msg,
                enum keel_respond_kind kind);

    /* A request of session finished without an answer of its own (the end of a stream). */
    void (*done)(void *ctx, uint64_t session);

    /* Bytes queued for session and not yet written: how far the client is behind.
     * 0, or KEEL_ECLOSED when the session is gone. */
    int (*backlog)(void *ctx, uint64_t session, size_t *bytes);

    /* Call cb(data, 0) each time session's queued output has drained (also at the end of
     * this turn when it already has), and cb(data, 1) once when it closes (the hook is then
     * gone). A session has one hook per data: a second call with the same data replaces its
     * cb; NULL cb removes it. 0, KEEL_ECLOSED, or KEEL_ENOMEM. */
    int (*on_drain)(void *ctx, uint64_t session, keel_drain_cb cb, void *data);
};

#endif
