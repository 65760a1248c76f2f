/*
 * Client sessions: one per TCP connection. A session reads frames, holds the connection to
 * its handshake (Hello first), hands each Request to the service, and frames the replies
 * back. Replies of one loop turn leave in one write.
 *
 * Back-pressure: past max_inflight requests handed to the service and not yet answered, the
 * session stops reading its socket until replies drain. A frame over the limit or one that
 * does not decode gets an error reply and closes that connection only.
 */
#ifndef KEEL_SESSION_H
#define KEEL_SESSION_H

#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "config.h"

struct keel_service;
struct keel_sessions;
struct keel_session;

/* Accept clients on cfg->listen_client, handing requests to svc. 0 or a libuv error with a
 * message in err. */
int keel_sessions_init(struct keel_sessions **out, uv_loop_t *loop, const struct keel_config *cfg,
                       struct keel_service *svc, char *err, size_t errlen);

/* Stop accepting and close every session; cb once all handles are closed. */
void keel_sessions_close(struct keel_sessions *ss, void (*cb)(void *data), void *data);

/* Free the registry (after the loop ended). */
void keel_sessions_free(struct keel_sessions *ss);

/* The live session with this id, or NULL (it closed). */
struct keel_session *keel_sessions_find(struct keel_sessions *ss, uint64_t id);

uint64_t keel_session_id(const struct keel_session *s);

/* Bytes queued and not yet written to the socket: how far the client is behind. */
size_t keel_session_out_bytes(const struct keel_session *s);

/* Called with the id of every session that closes (the service drops what it holds for it). */
void keel_sessions_on_close(struct keel_sessions *ss, void (*cb)(void *data, uint64_t id),
                            void *data);

/* Queue msg, framed, for this loop turn's write. */
void keel_session_send(struct keel_session *s, const ProtobufCMessage *msg);

/* Send msg as the answer to one request: the request no longer counts as in flight. */
void keel_session_reply(struct keel_session *s, const ProtobufCMessage *msg);

/* A request finished without a reply of its own (e.g. the end of a stream). */
void keel_session_done(struct keel_session *s);

/* Called when everything queued has been written (closed = 0), or when the session closes
 * (closed = 1, last call). One hook per session; NULL cb clears it. */
typedef void (*keel_session_drain_cb)(struct keel_session *s, void *data, int closed);
void keel_session_on_drain(struct keel_session *s, keel_session_drain_cb cb, void *data);

#endif
