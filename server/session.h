/*
 * Client sessions: one per TCP connection. A session reads frames, holds the connection to its
 * handshake (Hello first), hands each Request up through a handler main wires to dispatch, and
 * frames the answers that come back through the responder seam (responder.h), by session id.
 * Replies of one loop turn leave in one write.
 *
 * Back-pressure: a session hands up its next request only while
 *   - it has fewer than max_inflight requests in flight (handed up, not yet answered),
 *   - all sessions together have fewer than max_inflight_total in flight,
 *   - the pressure hook (keel_sessions_set_pressure) does not hold every session, and
 *   - the output queued for all sessions is under half of max_output_bytes, or this session's
 *     own output has all been written.
 * Otherwise it stops reading its socket; the frames it has read already wait in its buffer and
 * are handed up once the limit lifts. The handshake is no request: it is answered anyway.
 *
 * A connection past max_connections gets a HelloResponse refusing it (TOO_MANY_REQUESTS) and
 * is closed at once. A frame over the limit or one that does not decode is refused (the handler
 * answers why) and closes that connection only, once the answer is written. A client that reads
 * nothing is cut off past 256 MiB of queued output, and when the output of all sessions would pass
 * max_output_bytes the sessions with the most unread output are cut off first. session.c
 * states what all this bounds.
 *
 * TLS (keel_sessions_set_tls): the codec (tls/tls.h) sits between the socket and the frame
 * decoder and output queue, on the loop: bytes read are fed to it and the plaintext it gives goes
 * to the decoder; a turn's output is encrypted into the buffer written, which counts in
 * max_output_bytes as the plaintext output does. A failed handshake or a broken record is logged
 * (rate-limited, with the client's address and OpenSSL's reason) and closes that connection once
 * the alert that tells the client why is written. A connection past max_connections is closed
 * without a word when TLS is on (a refusal would need a handshake first).
 */
#ifndef KEEL_SESSION_H
#define KEEL_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "histo.h"
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

struct keel_tls_ctx;

/* Speak TLS made from tls (a server context) on every connection accepted from now on; NULL:
 * plaintext. tls stays the caller's and must outlive the registry's listener; a reload of it
 * (keel_tls_ctx_reload) applies to the connections accepted after. 0 or KEEL_ENOMEM. */
int keel_sessions_set_tls(struct keel_sessions *ss, struct keel_tls_ctx *tls);

/*
 * The common name of the client certificate a session's TLS handshake verified (etcd's
 * authentication by certificate CN), into buf (cap bytes, NUL included). 0; KEEL_ENOTFOUND when
 * there is no such session, it is plaintext, its handshake is not complete, or it presented no
 * verified certificate (the port runs without --client-cert-auth) or one without a CN;
 * KEEL_EINVAL when the CN does not fit in cap.
 */
int keel_sessions_peer_cn(const struct keel_sessions *ss, uint64_t session, char *buf, size_t cap);

/* Accept clients on cfg->listen_client and hand their input to h (copied). 0, or KEEL_EIO
 * after logging why (the address is taken or not ours). */
int keel_sessions_listen(struct keel_sessions *ss, const struct keel_session_handler *h);

/*
 * Make a session of fd, a connected stream socket this registry takes (closed here on failure)
 * that someone else accepted and checked: a member's checkpoint fetch on the peer port
 * (transport.h). It speaks the client protocol, plaintext (any TLS is the caller's, before fd),
 * and its input goes to h (which must outlive the session) instead of the listener's handler.
 * Every limit of the other sessions applies but max_connections (the caller bounds its own).
 * *id gets its id. 0, KEEL_ECLOSED (stopping), KEEL_ENOMEM or KEEL_EIO.
 */
int keel_sessions_adopt(struct keel_sessions *ss, int fd, const struct keel_session_handler *h,
                        uint64_t *id);

/*
 * Work queued beyond the sessions that they yield to (main: writes taken and not yet applied).
 * Once bytes(data) is at or above high, no session hands up a new request until it is at or
 * below low again. bytes is called on the loop, before each request and once per loop turn.
 */
struct keel_sessions_pressure {
    uint64_t (*bytes)(void *data);
    void *data;
    uint64_t high;
    uint64_t low;
};

/* Yield to p (copied; NULL: to nothing). */
void keel_sessions_set_pressure(struct keel_sessions *ss, const struct keel_sessions_pressure *p);

/* Request body cases timed (keel.proto's Request numbers its bodies below this). */
#define KEEL_SESSIONS_BODY_CASES 128

/* How long requests with body case body (Keel__Request__BodyCase) took, from being handed up to
 * their answer being queued (session.c says what that includes); NULL when none was answered
 * yet. On the loop; valid for the registry's life. */
const struct keel_histo *keel_sessions_request_seconds(const struct keel_sessions *ss, int body);

/* What the sessions hold now, for metrics and tests. */
struct keel_sessions_stat {
    size_t sessions;     /* open connections */
    size_t inflight;     /* requests handed up and not yet answered, all sessions */
    size_t output_bytes; /* output buffer bytes allocated, all sessions (<= max_output_bytes) */
    size_t blocked;      /* sessions not reading because a limit holds their next request */
    int held;            /* the pressure hook holds every session */
};

void keel_sessions_stat(const struct keel_sessions *ss, struct keel_sessions_stat *out);

/* Stop accepting and close every session; cb(data) once all handles are closed (cb may be
 * NULL). */
void keel_sessions_stop(struct keel_sessions *ss, void (*cb)(void *data), void *data);

/* Free the registry (after the loop ended). NULL is fine. */
void keel_sessions_free(struct keel_sessions *ss);

#endif
