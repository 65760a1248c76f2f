/*
 * Checkpoint streaming: the server side of the Snapshot request. A copy of the store (LMDB's,
 * page for page) is written by a thread of its own into a pipe and sent as it comes, in chunks
 * of up to 1 MiB, one chunk each time the session's output has drained, so a slow reader holds
 * one chunk of memory (and the pipe's), not the whole copy, and the first chunk leaves at once. The
 * copy begins once the storage writer has committed every entry it had been given when the request
 * came: it holds at least every write answered before the snapshot was asked for (a user's snapshot
 * save expects no less). The last chunk has remaining_bytes 0; before it, remaining_bytes is an
 * estimate (never 0). The session closing ends the stream.
 *
 * One stream per member at a time: a copy of the whole store is the most expensive thing a
 * client can ask for; a second request while one runs (its copy included), on any session, is
 * refused with TOO_MANY_REQUESTS.
 *
 * Two kinds of session ask: clients on the client port (keelctl snapshot save: root only with
 * auth on, dispatch.h) and members fetching a checkpoint on the peer port (transport.h's fetch
 * hook: a session adopted for them, keel_sessions_adopt, whose only request is this one). Both
 * share the one stream and its bounds.
 *
 * struct keel_snapstream is a plain value the caller fills (main.c): no allocation of its own,
 * no verbs. What it points to must outlive every stream.
 */
#ifndef KEEL_SNAPSTREAM_H
#define KEEL_SNAPSTREAM_H

#include <stdint.h>

#include <uv.h>

#include "fsm.h"
#include "reply.h"
#include "store.h"

struct keel_snapstream {
    uv_loop_t *loop;
    struct keel_store *store;
    const struct keel_reply *reply;
    struct keel_fsm *fsm; /* the copy waits for it to commit what it was given (NULL: it does
                           * not: the copy holds what was committed when it began) */
    unsigned active;      /* streams running: 0 or 1 (zero it when filling the struct) */
};

/* Start streaming a checkpoint to session as the answer to request id. Failures are answered
 * to the client. */
void keel_snapstream_start(struct keel_snapstream *ss, uint64_t session, uint64_t id);

#endif
