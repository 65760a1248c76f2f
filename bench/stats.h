/*
 * Latency statistics for keel-bench: every sample is kept (as etcd's benchmark does), so
 * percentiles are exact; plus an etcd-style histogram and an error tally by code.
 */
#ifndef KEEL_BENCH_STATS_H
#define KEEL_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct keel_stats {
    double *samples; /* seconds */
    size_t n;
    size_t cap;
    uint64_t errors[64]; /* by wire error code; [63]: anything else */
    uint64_t n_errors;
    int sorted;
};

struct keel_stats_summary {
    size_t n;
    double total_s; /* wall time of the run */
    double rps;
    double slowest, fastest, average, stddev;
    double p[8]; /* 10 25 50 75 90 95 99 99.9 */
};

extern const double keel_stats_percentiles[8];

void keel_stats_init(struct keel_stats *s);
void keel_stats_close(struct keel_stats *s);
/* 0, or -1 when out of memory (the sample is dropped). */
int keel_stats_add(struct keel_stats *s, double seconds);
void keel_stats_error(struct keel_stats *s, int wire_code);
/* The q-th percentile (0 < q <= 100) by the nearest-rank method; 0 with no samples. Sorts. */
double keel_stats_percentile(struct keel_stats *s, double q);
void keel_stats_summarize(struct keel_stats *s, double total_s, struct keel_stats_summary *out);
/* etcd's text report: summary, histogram, latency distribution, errors. */
void keel_stats_print(struct keel_stats *s, const struct keel_stats_summary *sum, FILE *f);

#endif
