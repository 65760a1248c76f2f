/*
 * Client sessions: one per TCP connection. A session reads frames, holds the connection to its
 * handshake (Hello first), hands each Request up through a handler main wires to dispatch, and
 * frames the answers that come back through the responder seam (responder.h), by session id.
 * Replies of one loop turn leave in one write.
 *
 * Back-pressure: past max_inflight requests handed up and not yet answered, the session stops
 * reading its socket until answers drain. A frame over the limit or one that does not decode is
 * refused (the handler answers why) and closes that connection only, once the answer is
 * written. A client that reads nothing is cut off past 256 MiB of queued output.
 */
#ifndef KEEL_SESSION_H
#define KEEL_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "keel.pb-c.h"
#include "responder.h"

struct keel_sessions;

/* Where a session's input goes. Every call is on the loop, with the session's id. */
struct keel_session_handler {
    void *data;
    /* The handshake (the caller keeps h): answer with a HelloResponse, KEEL_RESPOND_PUSH. */
    void (*hello)(void *data, uint64_t session, const Keel__Hello *h);
    /* One request, counted in flight until answered (KEEL_RESPOND_ANSWER) or done. The
     * handler takes req (free it with keel__request__free_unpacked). */
    void (*request)(void *data, uint64_t session, Keel__Request *req);
    /* A frame the session cannot take (err, msg: why): send the client a last message; the
     * session closes once it is written. */
    void (*refuse)(void *data, uint64_t session, int err, const char *msg);
    /* The session is gone: drop what is held for it. */
    void (*closed)(void *data, uint64_t session);
};

/* The registry, with no listener yet (its responder works at once). 0 or KEEL_ENOMEM. loop and
 * cfg must outlive it. */
int keel_sessions_new(uv_loop_t *loop, const struct keel_config *cfg, struct keel_sessions **out);

/* The responder seam over these sessions (valid for the registry's life). */
void keel_sessions_responder(struct keel_sessions *ss, struct keel_responder *out);

/* Accept clients on cfg->listen_client and hand their input to h (copied). 0, or KEEL_EIO
 * after logging why (the address is taken or not ours). */
int keel_sessions_listen(struct keel_sessions *ss, const struct keel_session_handler *h);

/* Stop accepting and close every session; cb(data) once all handles are closed (cb may be
 * NULL). */
void keel_sessions_stop(struct keel_sessions *ss, void (*cb)(void *data), void *data);

/* Free the registry (after the loop ended). NULL is fine. */
void keel_sessions_free(struct keel_sessions *ss);

#endif
