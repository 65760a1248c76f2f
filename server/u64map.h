/*
 * A hash map from non-zero 64-bit ids to pointers (open addressing, linear probing,
 * backward-shift deletion). Pending proposals and sessions are found by id through it.
 */
#ifndef KEEL_U64MAP_H
#define KEEL_U64MAP_H

#include <stddef.h>
#include <stdint.h>

struct keel_u64map {
    uint64_t *keys; /* 0: empty slot */
    void **vals;
    size_t cap; /* a power of two, or 0 */
    size_t n;
};

void keel_u64map_init(struct keel_u64map *m);
void keel_u64map_close(struct keel_u64map *m);
/* Insert or replace. 0, or -1 when out of memory. key must not be 0. */
int keel_u64map_put(struct keel_u64map *m, uint64_t key, void *val);
void *keel_u64map_get(const struct keel_u64map *m, uint64_t key);
/* Remove and return the value, or NULL. */
void *keel_u64map_del(struct keel_u64map *m, uint64_t key);

#endif
