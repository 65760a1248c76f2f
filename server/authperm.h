/*
 * Permission ranges: which keys a user may read, or write, as one sorted set of disjoint key
 * ranges, built once from the permissions of its roles and asked per request.
 *
 * Ranges follow etcd's conventions, for permissions and requests alike: range_end empty: the key
 * alone; range_end "\0": every key >= key (from-key); otherwise [key, range_end) (a prefix p is
 * [p, p+1)). A permission whose end is not after its key grants nothing. A request is allowed
 * when the whole of its range lies inside the union of the permissions (etcd merges them the
 * same way), so [a, c) is allowed by [a, b) and [b, c) together. An empty request range (end
 * not after key) is checked as its key alone.
 */
#ifndef KEEL_AUTHPERM_H
#define KEEL_AUTHPERM_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "keel.pb-c.h"

struct keel_permrange;

struct keel_permset {
    struct keel_permrange *v; /* in the arena given to build */
    size_t n;
};

/*
 * The union of the perms (n of them, from any number of roles) that grant `want` (READ or
 * WRITE; a READWRITE permission grants both), merged. Memory from arena; the set points into
 * the perms' keys, which must outlive it. 0 or KEEL_ENOMEM.
 */
int keel_permset_build(Keel__Permission *const *perms, size_t n, Keel__Permission__Type want,
                       struct keel_arena *arena, struct keel_permset *out);

/* Whether the set covers the request range [key, range_end) (conventions above). */
bool keel_permset_allows(const struct keel_permset *s, const ProtobufCBinaryData *key,
                         const ProtobufCBinaryData *range_end);

#endif
