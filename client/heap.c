/*
 * Ops by deadline: a binary min-heap. Since most requests share the default timeout, a new
 * request usually lands at the bottom and nothing moves.
 */
#include <stdlib.h>

#include "err.h"
#include "op.h"

static void set(struct kc_heap *h, size_t i, struct kc_op *op)
{
    h->v[i] = op;
    op->heap_idx = i;
}

static void up(struct kc_heap *h, size_t i)
{
    struct kc_op *op = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->deadline <= op->deadline)
            break;
        set(h, i, h->v[parent]);
        i = parent;
    }
    set(h, i, op);
}

static void down(struct kc_heap *h, size_t i)
{
    struct kc_op *op = h->v[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && h->v[child + 1]->deadline < h->v[child]->deadline)
            child++;
        if (h->v[child]->deadline >= op->deadline)
            break;
        set(h, i, h->v[child]);
        i = child;
    }
    set(h, i, op);
}

void kc_heap_init(struct kc_heap *h)
{
    h->v = NULL;
    h->n = h->cap = 0;
}

void kc_heap_close(struct kc_heap *h)
{
    free(h->v);
    kc_heap_init(h);
}

int kc_heap_push(struct kc_heap *h, struct kc_op *op)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        struct kc_op **v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL)
            return KEEL_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    set(h, h->n++, op);
    up(h, h->n - 1);
    return 0;
}

void kc_heap_remove(struct kc_heap *h, struct kc_op *op)
{
    size_t i = op->heap_idx;
    if (i == SIZE_MAX)
        return;
    struct kc_op *last = h->v[--h->n];
    if (i < h->n) {
        set(h, i, last);
        up(h, i);
        down(h, last->heap_idx);
    }
    op->heap_idx = SIZE_MAX;
}

struct kc_op *kc_heap_min(const struct kc_heap *h)
{
    return h->n > 0 ? h->v[0] : NULL;
}
