/* Ranges answered in pieces (see pieces.h). */
#include "pieces.h"

#include <stdlib.h>

#include "err.h"

static int reserve(struct kc_pieces *p, size_t more)
{
    if (p->n + more <= p->cap)
        return 0;
    size_t cap = p->cap ? p->cap : 1024;
    while (cap < p->n + more)
        cap *= 2;
    Keel__KeyValue **v = realloc(p->kvs, cap * sizeof(*v));
    if (v == NULL)
        return KEEL_ENOMEM;
    p->kvs = v;
    p->cap = cap;
    return 0;
}

int kc_pieces_add(struct kc_pieces **pp, const Keel__RangeResponse *rr)
{
    struct kc_pieces *p = *pp;
    if (p == NULL) {
        if ((p = calloc(1, sizeof(*p))) == NULL)
            return KEEL_ENOMEM;
        keel_arena_init(&p->arena, 1u << 20);
        *pp = p;
    }
    if (reserve(p, rr->n_kvs) != 0)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < rr->n_kvs; i++) {
        const Keel__KeyValue *src = rr->kvs[i];
        Keel__KeyValue *kv = keel_arena_alloc(&p->arena, sizeof(*kv));
        if (kv == NULL)
            return KEEL_ENOMEM;
        *kv = *src;
        if (src->key.len > 0 &&
            (kv->key.data = keel_arena_memdup(&p->arena, src->key.data, src->key.len)) == NULL)
            return KEEL_ENOMEM;
        if (src->value.len > 0 && (kv->value.data = keel_arena_memdup(&p->arena, src->value.data,
                                                                      src->value.len)) == NULL)
            return KEEL_ENOMEM;
        p->kvs[p->n++] = kv;
    }
    return 0;
}

int kc_pieces_join(struct kc_pieces *p, const Keel__RangeResponse *last, Keel__RangeResponse *out)
{
    if (reserve(p, last->n_kvs) != 0)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < last->n_kvs; i++)
        p->kvs[p->n++] = last->kvs[i];
    *out = *last;
    out->kvs = p->kvs;
    out->n_kvs = p->n;
    return 0;
}

void kc_pieces_free(struct kc_pieces *p)
{
    if (p == NULL)
        return;
    keel_arena_close(&p->arena);
    free(p->kvs);
    free(p);
}
