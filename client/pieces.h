/*
 * Ranges answered in pieces (RangeResponse.partial): a member sends a large range as several
 * frames with the same request id; the op keeps copies of the key-values of each piece (its
 * frame is gone once the next one is read) and its caller gets one whole RangeResponse when the
 * last piece arrives. A retry of the op starts over: what was kept is dropped.
 */
#ifndef KEEL_CLIENT_PIECES_H
#define KEEL_CLIENT_PIECES_H

#include <stddef.h>

#include "arena.h"
#include "keel.pb-c.h"

struct kc_pieces {
    struct keel_arena arena; /* the copies of keys and values */
    Keel__KeyValue **kvs;    /* malloc'd; the copies, then (joined) the last piece's own */
    size_t n, cap;
};

/* Keep a copy of rr's key-values; *p is made on the first piece. 0 or KEEL_ENOMEM. */
int kc_pieces_add(struct kc_pieces **p, const Keel__RangeResponse *rr);

/* The whole answer in *out: the key-values kept, then those of last (the piece with partial
 * false: its count and more are the answer's). out points into p and last: valid while both
 * are. 0 or KEEL_ENOMEM. */
int kc_pieces_join(struct kc_pieces *p, const Keel__RangeResponse *last, Keel__RangeResponse *out);

/* NULL is fine. */
void kc_pieces_free(struct kc_pieces *p);

#endif
