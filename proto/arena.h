/*
 * keel_arena: a bump allocator for the short-lived memory of one request or one apply batch.
 *
 * Everything allocated from an arena is freed together by keel_arena_reset or keel_arena_close;
 * there is no per-object free. Decoded protobuf messages and the responses the store builds
 * live here, so a request costs a handful of mallocs instead of one per field.
 */
#ifndef KEEL_ARENA_H
#define KEEL_ARENA_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

struct keel_arena_chunk;

struct keel_arena {
    struct keel_arena_chunk *head; /* current chunk; older chunks follow */
    size_t chunk_size;             /* size of a normal chunk */
    size_t used;                   /* bytes handed out since the last reset */
    ProtobufCAllocator pb;         /* protobuf-c view of this arena */
};

/* Prepare an empty arena; chunk_size 0 picks a default. Allocates nothing yet. */
void keel_arena_init(struct keel_arena *a, size_t chunk_size);

/* Free every chunk. The arena may be initialised again. */
void keel_arena_close(struct keel_arena *a);

/* size bytes aligned for any type, or NULL when memory is exhausted. Zero-filled: protobuf-c
 * and the store rely on that. */
void *keel_arena_alloc(struct keel_arena *a, size_t size);

/* A copy of n bytes of src in the arena (n may be 0: a valid non-NULL pointer comes back). */
void *keel_arena_memdup(struct keel_arena *a, const void *src, size_t n);

/* Forget every allocation but keep the first chunk for reuse. */
void keel_arena_reset(struct keel_arena *a);

/* The arena as a protobuf-c allocator (its free is a no-op). Valid while the arena lives. */
ProtobufCAllocator *keel_arena_pb(struct keel_arena *a);

#endif
