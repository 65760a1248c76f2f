/* The Prometheus text format as the tests read it (prom.h). */
#include "prom.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n >= 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':';
        if (!alpha && !(i > 0 && ch >= '0' && ch <= '9'))
            return false;
    }
    return true;
}

/* Parse the exposition text, failing the test at the first line that is not the format. */
void tp_parse(const char *text, struct tp_scrape *sc)
{
    memset(sc, 0, sizeof(*sc));
    size_t cap = 0;
    char *copy = strdup(text), *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, "# HELP ", 7) == 0 || strncmp(l, "# TYPE ", 7) == 0) {
            const char *nm = l + 7;
            size_t n = strcspn(nm, " ");
            if (!name_ok(nm, n) || nm[n] != ' ')
                fail_msg("bad comment line: %s", l);
            if (l[2] == 'T') {
                const char *t = nm + n + 1;
                if (strcmp(t, "counter") != 0 && strcmp(t, "gauge") != 0 &&
                    strcmp(t, "histogram") != 0)
                    fail_msg("bad type: %s", l);
                assert_true(sc->nf < sizeof(sc->f) / sizeof(sc->f[0]));
                snprintf(sc->f[sc->nf].name, sizeof(sc->f[0].name), "%.*s", (int)n, nm);
                snprintf(sc->f[sc->nf].type, sizeof(sc->f[0].type), "%s", t);
                sc->nf++;
            }
            continue;
        }
        if (sc->n == cap) {
            cap = cap ? cap * 2 : 256;
            sc->s = realloc(sc->s, cap * sizeof(*sc->s));
        }
        struct tp_sample *s = &sc->s[sc->n];
        size_t n = strcspn(l, "{ ");
        if (!name_ok(l, n))
            fail_msg("bad sample name: %s", l);
        snprintf(s->name, sizeof(s->name), "%.*s", (int)n, l);
        s->labels[0] = '\0';
        const char *p = l + n;
        if (*p == '{') {
            const char *end = strrchr(p, '}');
            if (end == NULL || (size_t)(end - p - 1) >= sizeof(s->labels))
                fail_msg("bad labels: %s", l);
            for (const char *q = p + 1; q < end;) {
                size_t k = strcspn(q, "=");
                if (!name_ok(q, k) || q[k + 1] != '"')
                    fail_msg("bad label: %s", l);
                const char *close_q = strchr(q + k + 2, '"');
                if (close_q == NULL || close_q > end)
                    fail_msg("bad label value: %s", l);
                q = close_q + 1;
                if (*q == ',')
                    q++;
                else if (q != end)
                    fail_msg("labels not comma separated: %s", l);
            }
            snprintf(s->labels, sizeof(s->labels), "%.*s", (int)(end - p - 1), p + 1);
            p = end + 1;
        }
        if (*p != ' ')
            fail_msg("no value: %s", l);
        char *endv = NULL;
        s->v = strtod(p + 1, &endv);
        if (endv == p + 1 || *endv != '\0')
            fail_msg("bad value: %s", l);
        sc->n++;
    }
    free(copy);
}

void tp_scrape(const char *addr, struct tp_scrape *sc)
{
    char *body = NULL;
    int st = tc_http(addr, "GET", "/metrics", NULL, &body);
    if (st != 200)
        fail_msg("GET %s/metrics: %d", addr, st);
    tp_parse(body, sc);
    free(body);
}

void tp_free(struct tp_scrape *sc)
{
    free(sc->s);
    sc->s = NULL;
}

/* The value of name{labels} (labels exactly as printed), NAN when absent. */
double tp_value(const struct tp_scrape *sc, const char *name, const char *labels)
{
    for (size_t i = 0; i < sc->n; i++)
        if (strcmp(sc->s[i].name, name) == 0 && strcmp(sc->s[i].labels, labels) == 0)
            return sc->s[i].v;
    return NAN;
}
