/*
 * keel-bench --metrics URL: one blocking scrape of a Prometheus text endpoint (keeld
 * --listen-metrics) before the run and one after, and the series that moved between them.
 */
#ifndef KEEL_BENCH_SCRAPE_H
#define KEEL_BENCH_SCRAPE_H

#include <stddef.h>

/* Every sample of one scrape: its name with labels, and its value. */
struct scrape {
    size_t n;
    char **names;
    double *values;
};

/*
 * GET url ("http://a.b.c.d:port[/path]", path default /metrics) with a 5 s timeout and parse
 * the samples into out (initialised here; free with scrape_free). 0, or -1 with why in err.
 */
int scrape_get(const char *url, struct scrape *out, char *err, size_t errlen);

void scrape_free(struct scrape *s);

/* The value of name in s; *found says whether it was there. */
double scrape_value(const struct scrape *s, const char *name, int *found);

#endif
