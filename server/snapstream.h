/*
 * Checkpoint streaming: the server side of the Snapshot request. A compacted copy of the store
 * is written to an unlinked file in the data dir on libuv's thread pool (disk work stays off the
 * loop), then sent in 1 MiB SnapshotResponse chunks, one chunk each time the session's output
 * has drained, so a slow reader holds one chunk of memory, not the whole copy. The last chunk
 * has remaining_bytes 0. The session closing ends the stream and frees it.
 *
 * struct keel_snapstream is a plain value the caller fills (main.c): no allocation of its own,
 * no verbs. What it points to must outlive every stream.
 */
#ifndef KEEL_SNAPSTREAM_H
#define KEEL_SNAPSTREAM_H

#include <stdint.h>

#include <uv.h>

#include "reply.h"
#include "store.h"

struct keel_snapstream {
    uv_loop_t *loop;
    struct keel_store *store;
    const char *data_dir; /* where the copy is staged (unlinked at once) */
    const struct keel_reply *reply;
};

/* Start streaming a checkpoint to session as the answer to request id. Failures are answered
 * to the client. */
void keel_snapstream_start(const struct keel_snapstream *ss, uint64_t session, uint64_t id);

#endif
