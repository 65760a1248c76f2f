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

/*
 * The largest gap between consecutive completions of a steady writer (keel-bench lease-churn's
 * "max write stall"). Marks before keel_gap_open only remember the last completion; from it on
 * every mark, and the close, count the time since the previous completion (or since the open,
 * when there was none).
 */
struct keel_gap {
    uint64_t last_ns; /* the last completion (or the open) */
    uint64_t max_ns;
    int open;
};

void keel_gap_init(struct keel_gap *g);
void keel_gap_mark(struct keel_gap *g, uint64_t now_ns);
void keel_gap_open(struct keel_gap *g, uint64_t now_ns);
/* Ends the window: the time since the last completion counts too (a writer stuck at the end). */
void keel_gap_close(struct keel_gap *g, uint64_t now_ns);

/*
 * lease-churn's keys: prefix then the lease's index as 8 or more lower-case hex digits.
 * keel_lease_key writes it NUL-terminated and returns its length (as snprintf);
 * keel_lease_key_index gives the index of a key so made, or -1 for any other key.
 */
int keel_lease_key(char *out, size_t len, const char *prefix, uint64_t idx);
int64_t keel_lease_key_index(const void *key, size_t klen, const char *prefix);

/* A lease's expiry lag in seconds, negative when the DELETE came before ack + ttl. */
double keel_expiry_lag(uint64_t ack_ns, int64_t ttl_s, uint64_t delete_ns);

#endif
