/* Fixed-bucket histograms on relaxed atomics (see histo.h). */
#include "histo.h"

#include <time.h>

int keel_histo_init_exp(struct keel_histo *h, double start, double factor, unsigned n)
{
    if (n == 0 || n > KEEL_HISTO_MAX || !(start > 0) || !(factor > 1))
        return -1;
    double b = start;
    for (unsigned i = 0; i < n; i++, b *= factor)
        h->bounds[i] = b;
    h->n = n;
    for (unsigned i = 0; i <= KEEL_HISTO_MAX; i++)
        atomic_init(&h->counts[i], 0);
    atomic_init(&h->sum_ns, 0);
    return 0;
}

void keel_histo_observe_ns(struct keel_histo *h, uint64_t ns)
{
    double s = (double)ns / 1e9;
    unsigned i = 0;
    while (i < h->n && s > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

void keel_histo_read(const struct keel_histo *h, struct keel_histo_read *out)
{
    uint64_t total = 0;
    for (unsigned i = 0; i <= h->n; i++) {
        total += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        out->cumulative[i] = total;
    }
    out->count = total;
    out->sum = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
}

uint64_t keel_histo_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
