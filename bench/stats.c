#include "stats.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const double keel_stats_percentiles[8] = {10, 25, 50, 75, 90, 95, 99, 99.9};

void keel_stats_init(struct keel_stats *s)
{
    memset(s, 0, sizeof(*s));
}

void keel_stats_close(struct keel_stats *s)
{
    free(s->samples);
    memset(s, 0, sizeof(*s));
}

int keel_stats_add(struct keel_stats *s, double seconds)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        double *ns = realloc(s->samples, cap * sizeof(*ns));
        if (ns == NULL)
            return -1;
        s->samples = ns;
        s->cap = cap;
    }
    s->samples[s->n++] = seconds;
    s->sorted = 0;
    return 0;
}

void keel_stats_error(struct keel_stats *s, int wire_code)
{
    s->errors[wire_code >= 0 && wire_code < 63 ? wire_code : 63]++;
    s->n_errors++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void sort_samples(struct keel_stats *s)
{
    if (!s->sorted && s->n > 1)
        qsort(s->samples, s->n, sizeof(double), cmp_double);
    s->sorted = 1;
}

double keel_stats_percentile(struct keel_stats *s, double q)
{
    if (s->n == 0)
        return 0;
    sort_samples(s);
    /* Nearest rank: the smallest sample with at least q% of the samples at or below it. */
    /* q / 100 * n is inexact (99.9 / 100 * 1000 is 999.0000000000001): a small tolerance keeps
     * the rank where exact arithmetic puts it. */
    double rank = ceil(q * (double)s->n / 100.0 - 1e-9);
    size_t i = rank < 1 ? 0 : (size_t)rank - 1;
    if (i >= s->n)
        i = s->n - 1;
    return s->samples[i];
}

void keel_stats_summarize(struct keel_stats *s, double total_s, struct keel_stats_summary *out)
{
    memset(out, 0, sizeof(*out));
    out->n = s->n;
    out->total_s = total_s;
    if (s->n == 0)
        return;
    sort_samples(s);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->samples[i];
    out->average = sum / (double)s->n;
    double var = 0;
    for (size_t i = 0; i < s->n; i++)
        var += (s->samples[i] - out->average) * (s->samples[i] - out->average);
    out->stddev = sqrt(var / (double)s->n);
    out->fastest = s->samples[0];
    out->slowest = s->samples[s->n - 1];
    out->rps = total_s > 0 ? (double)s->n / total_s : 0;
    for (int i = 0; i < 8; i++)
        out->p[i] = keel_stats_percentile(s, keel_stats_percentiles[i]);
}

void keel_stats_print(struct keel_stats *s, const struct keel_stats_summary *sum, FILE *f)
{
    fprintf(f, "\nSummary:\n");
    fprintf(f, "  Total:\t%.4f secs.\n", sum->total_s);
    fprintf(f, "  Slowest:\t%.4f secs.\n", sum->slowest);
    fprintf(f, "  Fastest:\t%.4f secs.\n", sum->fastest);
    fprintf(f, "  Average:\t%.4f secs.\n", sum->average);
    fprintf(f, "  Stddev:\t%.4f secs.\n", sum->stddev);
    fprintf(f, "  Requests/sec:\t%.4f\n", sum->rps);
    if (s->n > 0) {
        /* Ten equal-width buckets between fastest and slowest, as etcd prints them. */
        enum { BUCKETS = 10 };
        double lo = sum->fastest, hi = sum->slowest, width = (hi - lo) / BUCKETS;
        size_t counts[BUCKETS + 1] = {0};
        for (size_t i = 0; i < s->n; i++) {
            size_t b = width > 0 ? (size_t)((s->samples[i] - lo) / width) : 0;
            counts[b > BUCKETS ? BUCKETS : b]++;
        }
        size_t max = 1;
        for (int b = 0; b <= BUCKETS; b++)
            if (counts[b] > max)
                max = counts[b];
        fprintf(f, "\nResponse time histogram:\n");
        for (int b = 0; b <= BUCKETS; b++) {
            int bar = (int)(40.0 * (double)counts[b] / (double)max);
            fprintf(f, "  %.4f [%zu]\t|", lo + width * b, counts[b]);
            for (int i = 0; i < bar; i++)
                fputc('*', f);
            fputc('\n', f);
        }
        fprintf(f, "\nLatency distribution:\n");
        for (int i = 0; i < 8; i++)
            fprintf(f, "  %g%% in %.4f secs.\n", keel_stats_percentiles[i], sum->p[i]);
    }
    if (s->n_errors > 0) {
        fprintf(f, "\nError distribution:\n");
        for (int c = 0; c < 64; c++)
            if (s->errors[c])
                fprintf(f, "  [%llu]\terror code %d\n", (unsigned long long)s->errors[c], c);
    }
}

void keel_gap_init(struct keel_gap *g)
{
    memset(g, 0, sizeof(*g));
}

static void gap_count(struct keel_gap *g, uint64_t now_ns)
{
    if (now_ns > g->last_ns && now_ns - g->last_ns > g->max_ns)
        g->max_ns = now_ns - g->last_ns;
}

void keel_gap_mark(struct keel_gap *g, uint64_t now_ns)
{
    if (g->open)
        gap_count(g, now_ns);
    if (now_ns > g->last_ns)
        g->last_ns = now_ns;
}

void keel_gap_open(struct keel_gap *g, uint64_t now_ns)
{
    /* The window starts now: time before it is not a stall of the window. */
    g->open = 1;
    if (now_ns > g->last_ns)
        g->last_ns = now_ns;
}

void keel_gap_close(struct keel_gap *g, uint64_t now_ns)
{
    if (g->open)
        gap_count(g, now_ns);
    g->open = 0;
}

int keel_lease_key(char *out, size_t len, const char *prefix, uint64_t idx)
{
    return snprintf(out, len, "%s%08" PRIx64, prefix, idx);
}

int64_t keel_lease_key_index(const void *key, size_t klen, const char *prefix)
{
    size_t plen = strlen(prefix);
    const char *k = key;
    if (klen < plen + 8 || klen > plen + 16 || memcmp(k, prefix, plen) != 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = plen; i < klen; i++) {
        int d;
        if (k[i] >= '0' && k[i] <= '9')
            d = k[i] - '0';
        else if (k[i] >= 'a' && k[i] <= 'f')
            d = k[i] - 'a' + 10;
        else
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    return v > (uint64_t)INT64_MAX ? -1 : (int64_t)v;
}

double keel_expiry_lag(uint64_t ack_ns, int64_t ttl_s, uint64_t delete_ns)
{
    /* Signed arithmetic: an early DELETE gives a negative lag, not a wrapped huge one. */
    int64_t since_ack = (int64_t)(delete_ns - ack_ns);
    return (double)since_ack / 1e9 - (double)ttl_s;
}
