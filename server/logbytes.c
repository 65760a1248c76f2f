/*
 * A ring of (index, cumulative bytes), oldest first: the bytes of any span of indexes are two
 * binary searches and a subtraction, so nothing is summed entry by entry on the loop.
 */
#include "logbytes.h"

#include <stdlib.h>
#include <string.h>

static struct keel_logbytes_entry *at(const struct keel_logbytes *lb, size_t k)
{
    return &lb->ring[(lb->head + k) & (lb->cap - 1)];
}

/* How many entries held have an index at or below index. */
static size_t count_upto(const struct keel_logbytes *lb, uint64_t index)
{
    size_t lo = 0, hi = lb->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (at(lb, mid)->index <= index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* `end` just before the k-th entry held (k = n: the newest's end). */
static uint64_t end_before(const struct keel_logbytes *lb, size_t k)
{
    return k == 0 ? lb->base : at(lb, k - 1)->end;
}

void keel_logbytes_init(struct keel_logbytes *lb)
{
    memset(lb, 0, sizeof(*lb));
}

void keel_logbytes_close(struct keel_logbytes *lb)
{
    free(lb->ring);
    keel_logbytes_init(lb);
}

static int grow(struct keel_logbytes *lb)
{
    size_t cap = lb->cap ? lb->cap * 2 : 1024;
    struct keel_logbytes_entry *r = malloc(cap * sizeof(*r));
    if (r == NULL)
        return -1;
    for (size_t k = 0; k < lb->n; k++)
        r[k] = *at(lb, k);
    free(lb->ring);
    lb->ring = r;
    lb->cap = cap;
    lb->head = 0;
    return 0;
}

int keel_logbytes_add(struct keel_logbytes *lb, uint64_t index, size_t len)
{
    if (lb->n > 0 && index <= at(lb, lb->n - 1)->index) {
        lb->n = 0;
        lb->head = 0;
        lb->base = lb->total;
    }
    if (lb->n == lb->cap && grow(lb) != 0)
        return -1;
    lb->total += len;
    struct keel_logbytes_entry *e = at(lb, lb->n);
    e->index = index;
    e->end = lb->total;
    lb->n++;
    return 0;
}

uint64_t keel_logbytes_since(const struct keel_logbytes *lb, uint64_t index)
{
    return lb->total - end_before(lb, count_upto(lb, index));
}

uint64_t keel_logbytes_keep(const struct keel_logbytes *lb, uint64_t last, uint64_t budget)
{
    size_t k_last = count_upto(lb, last);
    if (k_last == 0)
        return 0;
    uint64_t end_last = at(lb, k_last - 1)->end;
    if (end_last - lb->base <= budget)
        return last - at(lb, 0)->index + 1; /* every entry held fits */
    /* The first entry of the span: the smallest k whose entries k..k_last-1 fit, that is whose
     * end_before is at least end_last - budget (end_before grows with k; k_last always does). */
    uint64_t floor = end_last - budget;
    size_t lo = 0, hi = k_last;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (end_before(lb, mid) >= floor)
            hi = mid;
        else
            lo = mid + 1;
    }
    /* lo > 0 here: entry lo - 1 is the newest that does not fit; keep what comes after it. */
    return last - at(lb, lo - 1)->index;
}

void keel_logbytes_forget(struct keel_logbytes *lb, uint64_t upto)
{
    size_t k = count_upto(lb, upto);
    if (k == 0)
        return;
    lb->base = at(lb, k - 1)->end;
    lb->head = (lb->head + k) & (lb->cap - 1);
    lb->n -= k;
}
