/*
 * Histograms with fixed buckets, as Prometheus reports them: each observation counts in the
 * first bucket whose upper bound is at or above it (or in +Inf), and adds to the sum.
 *
 * Any thread may observe while any other reads: the counts and the sum are atomics, updated
 * with relaxed order and no lock (the storage writer times its commits and batches on its own
 * thread while the loop scrapes). A read is not one instant across buckets: an observation
 * made during it may be in one bucket and not yet in the sum. The count a read reports is the
 * sum of the buckets it read, so +Inf always equals the count and the cumulative counts never
 * decrease within a read.
 *
 * A struct keel_histo is plain memory the caller owns (embed it, or allocate it); there is
 * nothing to free.
 */
#ifndef KEEL_HISTO_H
#define KEEL_HISTO_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define KEEL_HISTO_MAX 24 /* finite buckets at most */

struct keel_histo {
    double bounds[KEEL_HISTO_MAX];               /* upper bounds in seconds, increasing */
    unsigned n;                                  /* finite buckets in use */
    _Atomic uint64_t counts[KEEL_HISTO_MAX + 1]; /* per bucket, not cumulative; [n]: +Inf */
    _Atomic uint64_t sum_ns;                     /* everything observed, in nanoseconds */
};

/* One read: cumulative counts as Prometheus' _bucket series ([n] is +Inf), their total and the
 * sum in seconds. */
struct keel_histo_read {
    uint64_t cumulative[KEEL_HISTO_MAX + 1];
    uint64_t count;
    double sum;
};

/*
 * Set h up, empty, with n buckets whose bounds are start * factor^i (i < n), as Prometheus'
 * ExponentialBuckets (etcd's commit histogram: 0.001, 2, 14). Before any other thread sees h.
 * 0, or -1 (h untouched) when n is 0 or over KEEL_HISTO_MAX, start is not positive or factor
 * is not above 1.
 */
int keel_histo_init_exp(struct keel_histo *h, double start, double factor, unsigned n);

/* Count one observation of ns nanoseconds. Any thread; never fails, never allocates. */
void keel_histo_observe_ns(struct keel_histo *h, uint64_t ns);

/* Read h into out (see above for what a read promises). Any thread. */
void keel_histo_read(const struct keel_histo *h, struct keel_histo_read *out);

/* A monotonic clock in nanoseconds, for the two ends of what is timed. */
uint64_t keel_histo_now_ns(void);

#endif
