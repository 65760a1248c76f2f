/*
 * A hash map from non-zero 64-bit ids to pointers (open addressing, linear probing,
 * backward-shift deletion). Pending proposals and sessions are found by id through it.
 */
#ifndef KEEL_U64MAP_H
#define KEEL_U64MAP_H

#include <stddef.h>
#include <stdint.h>

struct u64map {
    uint64_t *keys; /* 0: empty slot */
    void **vals;
    size_t cap; /* a power of two, or 0 */
    size_t n;
};

void u64map_init(struct u64map *m);
void u64map_close(struct u64map *m);
/* Insert or replace. 0, or -1 when out of memory. key must not be 0. */
int u64map_put(struct u64map *m, uint64_t key, void *val);
void *u64map_get(const struct u64map *m, uint64_t key);
/* Remove and return the value, or NULL. */
void *u64map_del(struct u64map *m, uint64_t key);

#endif
