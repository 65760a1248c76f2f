/*
 * An id -> object table, shared by requests and watch streams.
 *
 * The low 32 bits of a request id (or of a watch stream id) index the table, so a reply finds its
 * request without a hash table; the high bits are a sequence number kept by the caller, so a late
 * reply to a finished request never matches the one that reuses its slot.
 */
#ifndef KEEL_CLIENT_SLOTS_H
#define KEEL_CLIENT_SLOTS_H

#include <stdint.h>

/* A slot number no table ever hands out: ids carrying it match nothing. */
#define KC_NO_SLOT UINT32_MAX

struct kc_slots {
    void **v;       /* slot -> object; NULL when free or taken and not yet set */
    uint32_t n;     /* slots allocated */
    uint32_t *free; /* free slot numbers, used as a stack */
    uint32_t nfree;
};

/* An empty table (no allocation until the first take). */
void kc_slots_init(struct kc_slots *s);
void kc_slots_close(struct kc_slots *s);

/* Take a free slot, empty until kc_slots_set. 0 or KEEL_ENOMEM; never KC_NO_SLOT. */
int kc_slots_take(struct kc_slots *s, uint32_t *slot);
void kc_slots_set(struct kc_slots *s, uint32_t slot, void *p);
/* The object in slot, NULL when none (slot may be anything, KC_NO_SLOT included). */
void *kc_slots_get(const struct kc_slots *s, uint32_t slot);
/* Give slot back if it holds p (p NULL: a slot taken and never set). Otherwise nothing. */
void kc_slots_give(struct kc_slots *s, uint32_t slot, const void *p);

#endif
