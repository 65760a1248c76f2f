/* Permission ranges (see authperm.h). */
#include "authperm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* [b, e), or [b, infinity) when inf. */
struct keel_permrange {
    const uint8_t *b, *e;
    size_t bl, el;
    bool inf;
};

/* Key order: bytes, then the shorter first. */
static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c != 0)
        return c;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

/* The range of key/end by the conventions; false when it holds no key. A single key's end is
 * made in one_end (key->len + 1 bytes). */
static bool to_range(const ProtobufCBinaryData *key, const ProtobufCBinaryData *end,
                     struct keel_permrange *r, uint8_t *one_end)
{
    r->b = key->data;
    r->bl = key->len;
    r->inf = false;
    if (end->len == 1 && end->data[0] == 0) {
        r->inf = true;
        return true;
    }
    if (end->len == 0) {
        /* The key alone: [key, key "\0"), the next key there can be. */
        if (key->len > 0)
            memcpy(one_end, key->data, key->len);
        one_end[key->len] = 0;
        r->e = one_end;
        r->el = key->len + 1;
        return true;
    }
    r->e = end->data;
    r->el = end->len;
    return key_cmp(r->b, r->bl, r->e, r->el) < 0;
}

static int range_cmp(const void *x, const void *y)
{
    const struct keel_permrange *a = x, *b = y;
    return key_cmp(a->b, a->bl, b->b, b->bl);
}

/* a's end, compared with b's end (infinity after every key). */
static int end_cmp(const struct keel_permrange *a, const struct keel_permrange *b)
{
    if (a->inf || b->inf)
        return a->inf == b->inf ? 0 : a->inf ? 1 : -1;
    return key_cmp(a->e, a->el, b->e, b->el);
}

int keel_permset_build(Keel__Permission *const *perms, size_t n, Keel__Permission__Type want,
                       struct keel_arena *arena, struct keel_permset *out)
{
    out->v = NULL;
    out->n = 0;
    struct keel_permrange *v = keel_arena_alloc(arena, (n ? n : 1) * sizeof(*v));
    if (v == NULL)
        return KEEL_ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const Keel__Permission *p = perms[i];
        if (p->permtype != want && p->permtype != KEEL__PERMISSION__TYPE__READWRITE)
            continue;
        uint8_t *one = keel_arena_alloc(arena, p->key.len + 1);
        if (one == NULL)
            return KEEL_ENOMEM;
        if (to_range(&p->key, &p->range_end, &v[m], one))
            m++;
    }
    qsort(v, m, sizeof(*v), range_cmp);
    /* Merge: a range starting at or before the current one's end extends it. */
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        if (k > 0 && (v[k - 1].inf || key_cmp(v[i].b, v[i].bl, v[k - 1].e, v[k - 1].el) <= 0)) {
            if (end_cmp(&v[i], &v[k - 1]) > 0) {
                v[k - 1].e = v[i].e;
                v[k - 1].el = v[i].el;
                v[k - 1].inf = v[i].inf;
            }
            continue;
        }
        v[k++] = v[i];
    }
    out->v = v;
    out->n = k;
    return 0;
}

bool keel_permset_allows(const struct keel_permset *s, const ProtobufCBinaryData *key,
                         const ProtobufCBinaryData *range_end)
{
    uint8_t one[512 + 1];
    struct keel_permrange r;
    if (key->len > 512)
        return false; /* longer than any key the store takes */
    if (!to_range(key, range_end, &r, one)) {
        ProtobufCBinaryData none = {0, NULL};
        to_range(key, &none, &r, one); /* an empty range: its key alone */
    }
    /* The last merged range starting at or before the request's start must reach its end. */
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(s->v[mid].b, s->v[mid].bl, r.b, r.bl) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return false;
    const struct keel_permrange *p = &s->v[lo - 1];
    return end_cmp(p, &r) >= 0;
}
