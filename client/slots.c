/* The id -> object table of requests and watch streams. */
#include <stdlib.h>

#include "err.h"
#include "slots.h"

#define KC_SLOTS_FIRST 64

void kc_slots_init(struct kc_slots *s)
{
    s->v = NULL;
    s->free = NULL;
    s->n = s->nfree = 0;
}

void kc_slots_close(struct kc_slots *s)
{
    free(s->v);
    free(s->free);
    kc_slots_init(s);
}

int kc_slots_take(struct kc_slots *s, uint32_t *slot)
{
    if (s->nfree == 0) {
        /* Doubling stops at 2^31 slots (the next size wraps to 0), so KC_NO_SLOT is never
         * reached. */
        uint32_t n = s->n ? s->n * 2 : KC_SLOTS_FIRST;
        if (n <= s->n)
            return KEEL_ENOMEM;
        void **v = realloc(s->v, n * sizeof(*v));
        if (v == NULL)
            return KEEL_ENOMEM;
        s->v = v;
        uint32_t *f = realloc(s->free, n * sizeof(*f));
        if (f == NULL)
            return KEEL_ENOMEM;
        s->free = f;
        for (uint32_t i = n; i > s->n; i--) {
            s->v[i - 1] = NULL;
            s->free[s->nfree++] = i - 1;
        }
        s->n = n;
    }
    *slot = s->free[--s->nfree];
    return 0;
}

void kc_slots_set(struct kc_slots *s, uint32_t slot, void *p)
{
    s->v[slot] = p;
}

void *kc_slots_get(const struct kc_slots *s, uint32_t slot)
{
    return slot < s->n ? s->v[slot] : NULL;
}

void kc_slots_give(struct kc_slots *s, uint32_t slot, const void *p)
{
    if (slot < s->n && s->v[slot] == p) {
        s->v[slot] = NULL;
        s->free[s->nfree++] = slot;
    }
}
