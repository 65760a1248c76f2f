/*
 * Large ranges in pieces: the server side of RangeResponse.partial.
 *
 * A range in key order (keel_store_range_pageable) is read a page at a time: up to PAGE_BYTES of
 * key-values after looking at most PAGE_KEYS keys, each page from a fresh read snapshot at the
 * revision of the first, so no read transaction outlives a page and the loop serves everyone
 * else between two pages. A range that fits one page is answered at once, as before; a bigger
 * one is sent as partial RangeResponses and ends with a whole one (partial false: the count,
 * more). Further pages are made only when the session's output has drained below QUEUE_BYTES,
 * the session's streams taking turns a page each: a client reading slowly costs the member one
 * page and QUEUE_BYTES of queued output per connection, whatever the size of what it asked
 * for. Each stream is a request in flight until its last page, so the session's in-flight limit
 * bounds how many it runs; a stream keeps its request and a pager (about 600 bytes).
 *
 * A read at the current revision whose revision is compacted before its last page (rare: only
 * a compaction of everything up to that moment) is answered UNAVAILABLE: the client's retry
 * reads it again at a new revision. A read at a past revision gets COMPACTED, as at its start.
 *
 * Ranges in another order are sorted in memory and answered in one reply (keel_store_range, at
 * most KEEL_MAX_REPLY_BYTES).
 */
#ifndef KEEL_RANGESTREAM_H
#define KEEL_RANGESTREAM_H

#include <stdint.h>

#include "keel.pb-c.h"
#include "reply.h"
#include "store.h"

struct keel_rangestream;

/* What reply and store point to must outlive the streamer. 0 or KEEL_ENOMEM. */
int keel_rangestream_new(const struct keel_reply *reply, struct keel_store *store,
                         struct keel_rangestream **out);

/* Answer req (its body a range) to session: at once when it fits one page, else in pieces.
 * Takes req. Failures are answered to the client. */
void keel_rangestream_serve(struct keel_rangestream *rs, uint64_t session, Keel__Request *req);

/* Drop every stream without answering (the member is stopping) and free rs. NULL is fine. */
void keel_rangestream_free(struct keel_rangestream *rs);

#endif
