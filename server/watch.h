/*
 * Watch: ordered, resumable event streams from the member's own applied state.
 *
 * A watcher is either synced (it receives events as batches are applied) or catching up (it
 * reads the store's history in bounded chunks, one watcher chunk per loop turn, until it reaches
 * the applied revision, then joins the synced set). Synced watchers are found through an interval
 * tree over their key ranges, so an event costs O(log n + matches), not a scan of all watchers.
 *
 * No gap, no duplicate: each watcher keeps next_rev, the first revision it has not been sent.
 * Live fan-out skips events below next_rev (a watcher that caught up from a store that was ahead
 * of the batches delivered to the loop) and history resumes at next_rev.
 *
 * Slow consumers: when a session's unsent output passes a cap, its synced watchers drop back to
 * catching up from next_rev and rejoin later, so memory stays bounded and nothing is lost.
 *
 * Everything goes out through the reply module by session id (reply.h, responder.h); the hub
 * asks the responder how far each session is behind and never sees a session itself.
 */
#ifndef KEEL_WATCH_H
#define KEEL_WATCH_H

#include <stdint.h>

#include <uv.h>

#include "fsm.h"
#include "keel.pb-c.h"
#include "reply.h"
#include "store.h"

struct keel_watch_hub;

struct keel_watch_options {
    uv_loop_t *loop;
    struct keel_store *store;
    const struct keel_reply *reply; /* answers and events; its responder tells backlogs */
    size_t max_per_session;         /* watchers per connection */
    size_t session_out_cap; /* unsent bytes past which a session's watchers catch up instead */
    unsigned progress_ms;   /* interval of progress notifications (0: off) */
};

/* 0 or KEEL_ENOMEM. What o points to must outlive the hub. */
int keel_watch_new(const struct keel_watch_options *o, struct keel_watch_hub **out);

/* Handle a watch request (create, cancel, progress) from session; the caller keeps req. */
void keel_watch_request(struct keel_watch_hub *h, uint64_t session, const Keel__Request *req);

/* Fan out the events of a committed batch (call for every batch, in order). */
void keel_watch_applied(struct keel_watch_hub *h, const struct keel_fsm_batch *b);

/* The session is gone: drop its watchers. */
void keel_watch_session_closed(struct keel_watch_hub *h, uint64_t session_id);

/* Counters for status and tests. */
size_t keel_watch_count(const struct keel_watch_hub *h);
/* Connections (sessions) holding at least one watcher now. */
size_t keel_watch_streams(const struct keel_watch_hub *h);
/* Watchers catching up now (behind the applied revision: reading history, or dropped back from
 * a slow session), the others being synced. */
size_t keel_watch_unsynced(const struct keel_watch_hub *h);

/* Stop the timers and close the hub's handles (they close before the loop ends). */
void keel_watch_stop(struct keel_watch_hub *h);

/* Drop every watcher and free the hub (after the loop ended). NULL is fine. */
void keel_watch_free(struct keel_watch_hub *h);

#endif
