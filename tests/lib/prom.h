/*
 * The Prometheus text exposition format, as the tests read /metrics: every line checked (HELP and
 * TYPE comments, samples with optional labels, a value), the first bad one failing the test with
 * the line. Types seen: counter, gauge, histogram (keeld and keel-gateway expose no others).
 */
#ifndef KEEL_TEST_PROM_H
#define KEEL_TEST_PROM_H

#include <stddef.h>

struct tp_sample {
    char name[128];
    char labels[256]; /* inside the braces, "" for none */
    double v;
};

struct tp_family {
    char name[128];
    char type[16];
};

struct tp_scrape {
    struct tp_sample *s; /* malloc'd: tp_free */
    size_t n;
    struct tp_family f[256]; /* from the TYPE lines */
    size_t nf;
};

/* Parse text into sc (which tp_free releases), failing the test at the first line that is not
 * the format. */
void tp_parse(const char *text, struct tp_scrape *sc);

/* GET addr's /metrics (it must answer 200) and parse it. */
void tp_scrape(const char *addr, struct tp_scrape *sc);

void tp_free(struct tp_scrape *sc);

/* The value of name{labels} (labels exactly as printed, "" for none), NAN when absent. */
double tp_value(const struct tp_scrape *sc, const char *name, const char *labels);

#endif
