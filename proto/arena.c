#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN         16
#define ARENA_DEFAULT_CHUNK (64 * 1024)

struct keel_arena_chunk {
    struct keel_arena_chunk *next;
    size_t size; /* usable bytes in data */
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

static void *arena_pb_alloc(void *data, size_t size)
{
    return keel_arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr;
}

void keel_arena_init(struct keel_arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : ARENA_DEFAULT_CHUNK;
    a->used = 0;
    a->pb.alloc = arena_pb_alloc;
    a->pb.free = arena_pb_free;
    a->pb.allocator_data = a;
}

static void free_chunks(struct keel_arena_chunk *c)
{
    while (c != NULL) {
        struct keel_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

void keel_arena_close(struct keel_arena *a)
{
    free_chunks(a->head);
    a->head = NULL;
    a->used = 0;
}

void *keel_arena_alloc(struct keel_arena *a, size_t size)
{
    size_t need = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < size)
        return NULL;
    struct keel_arena_chunk *c = a->head;
    if (c == NULL || c->size - c->used < need) {
        size_t csize = need > a->chunk_size ? need : a->chunk_size;
        if (csize > SIZE_MAX - sizeof(*c))
            return NULL;
        c = malloc(sizeof(*c) + csize);
        if (c == NULL)
            return NULL;
        c->size = csize;
        c->used = 0;
        /* An oversized chunk goes behind the current one so the current keeps filling. */
        if (a->head != NULL && need > a->chunk_size) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += need;
    a->used += need;
    memset(p, 0, size);
    return p;
}

void *keel_arena_memdup(struct keel_arena *a, const void *src, size_t n)
{
    void *p = keel_arena_alloc(a, n ? n : 1);
    if (p != NULL && n > 0)
        memcpy(p, src, n);
    return p;
}

void keel_arena_reset(struct keel_arena *a)
{
    if (a->head == NULL)
        return;
    /* Keep the most recent normal-sized chunk; drop the rest. */
    struct keel_arena_chunk *keep = a->head;
    free_chunks(keep->next);
    keep->next = NULL;
    if (keep->size > a->chunk_size) {
        free(keep);
        a->head = NULL;
    } else {
        keep->used = 0;
    }
    a->used = 0;
}

ProtobufCAllocator *keel_arena_pb(struct keel_arena *a)
{
    return &a->pb;
}
