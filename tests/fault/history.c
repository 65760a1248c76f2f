#include "history.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const fh_key_names[FH_KEYS] = {"f/a", "f/b", "f/c"};

int fh_key_index(const void *key, size_t len)
{
    for (int k = 0; k < FH_KEYS; k++)
        if (len == strlen(fh_key_names[k]) && memcmp(key, fh_key_names[k], len) == 0)
            return k;
    return -1;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        abort();
    return q;
}

void fh_add(struct fh_history *h, const struct fh_op *op)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 4096;
        h->v = xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    h->v[h->n] = *op;
    h->v[h->n].op.key = fh_key_names[op->key];
    h->n++;
}

void fh_free(struct fh_history *h)
{
    free(h->v);
    *h = (struct fh_history){0};
}

int fh_save(const struct fh_history *h, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    for (size_t i = 0; i < h->n; i++) {
        const struct fh_op *o = &h->v[i];
        fprintf(f,
                "%d\t%d\t%d\t%" PRId64 "\t%" PRId64 "\t%d\t%" PRId64 "\t%" PRId64 "\t%u\t%" PRIu64
                "\t%" PRId64 "\n",
                o->client, o->key, (int)o->op.kind, o->op.value, o->op.value2, o->op.ok ? 1 : 0,
                o->op.call, o->op.ret, o->flags, o->member, o->rev);
    }
    return fclose(f) == 0 ? 0 : -1;
}

int fh_load(struct fh_history *h, const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_len, "%s: cannot open", path);
        return -1;
    }
    char line[512];
    int lineno = 0, rv = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        struct fh_op o = {0};
        int kind = 0, ok = 0;
        if (sscanf(line,
                   "%d\t%d\t%d\t%" SCNd64 "\t%" SCNd64 "\t%d\t%" SCNd64 "\t%" SCNd64
                   "\t%u\t%" SCNu64 "\t%" SCNd64,
                   &o.client, &o.key, &kind, &o.op.value, &o.op.value2, &ok, &o.op.call, &o.op.ret,
                   &o.flags, &o.member, &o.rev) != 11 ||
            o.key < 0 || o.key >= FH_KEYS || kind < LINCHECK_READ || kind > LINCHECK_CAS_BLIND) {
            snprintf(err, err_len, "%s:%d: not an operation", path, lineno);
            rv = -1;
            break;
        }
        o.op.kind = (enum lincheck_kind)kind;
        o.op.ok = ok != 0;
        fh_add(h, &o);
    }
    fclose(f);
    return rv;
}

enum lincheck_verdict fh_lincheck(const struct fh_history *h, int64_t time_bound_ms,
                                  struct lincheck_result *res)
{
    struct lincheck_op *ops = xrealloc(NULL, h->n * sizeof(*ops));
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!(h->v[i].flags & FH_SERIAL))
            ops[n++] = h->v[i].op;
    enum lincheck_verdict v = lincheck_check(ops, n, time_bound_ms, res);
    free(ops);
    return v;
}

/* ---- revisions never go backwards ---- */

static int by_call(const void *a, const void *b)
{
    int64_t x = (*(const struct fh_op *const *)a)->op.call;
    int64_t y = (*(const struct fh_op *const *)b)->op.call;
    return x < y ? -1 : x > y;
}

static int by_ret(const void *a, const void *b)
{
    int64_t x = (*(const struct fh_op *const *)a)->op.ret;
    int64_t y = (*(const struct fh_op *const *)b)->op.ret;
    return x < y ? -1 : x > y;
}

/* Among the n operations in ops: one invoked after another completed must not carry a lower
 * revision. A sweep in call order over the completions before each call: O(n log n). */
static const char *monotonic(const struct fh_op **ops, size_t n, const char *what, char *buf,
                             size_t len)
{
    const struct fh_op **calls = xrealloc(NULL, n * sizeof(*calls));
    memcpy(calls, ops, n * sizeof(*calls));
    qsort(ops, n, sizeof(*ops), by_ret);
    qsort(calls, n, sizeof(*calls), by_call);
    const struct fh_op *high = NULL;
    const char *bad = NULL;
    for (size_t i = 0, j = 0; i < n && bad == NULL; i++) {
        const struct fh_op *b = calls[i];
        for (; j < n && ops[j]->op.ret < b->op.call; j++)
            if (high == NULL || ops[j]->rev > high->rev)
                high = ops[j];
        if (high != NULL && b->rev < high->rev) {
            snprintf(buf, len,
                     "%s: revision went back from %" PRId64 " (client %d, completed at %" PRId64
                     " us, member %" PRIx64 ") to %" PRId64 " (client %d, invoked at %" PRId64
                     " us, member %" PRIx64 ")",
                     what, high->rev, high->client, high->op.ret, high->member, b->rev, b->client,
                     b->op.call, b->member);
            bad = buf;
        }
    }
    free(calls);
    return bad;
}

const char *fh_check_revisions(const struct fh_history *h, char *buf, size_t len)
{
    const struct fh_op **sel = xrealloc(NULL, h->n * sizeof(*sel));
    const char *bad = NULL;
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].rev > 0 && h->v[i].op.ret != LINCHECK_NEVER && !(h->v[i].flags & FH_SERIAL))
            sel[n++] = &h->v[i];
    bad = monotonic(sel, n, "linearizable operations", buf, len);
    /* Each member on its own, serializable reads included (a cluster has a few members). */
    uint64_t members[16];
    size_t nm = 0;
    for (size_t i = 0; i < h->n; i++) {
        size_t j = 0;
        while (j < nm && members[j] != h->v[i].member)
            j++;
        if (j == nm && h->v[i].member != 0 && nm < sizeof(members) / sizeof(members[0]))
            members[nm++] = h->v[i].member;
    }
    for (size_t m = 0; m < nm && bad == NULL; m++) {
        n = 0;
        for (size_t i = 0; i < h->n; i++)
            if (h->v[i].member == members[m] && h->v[i].rev > 0 && h->v[i].op.ret != LINCHECK_NEVER)
                sel[n++] = &h->v[i];
        char what[64];
        snprintf(what, sizeof(what), "member %" PRIx64, members[m]);
        bad = monotonic(sel, n, what, buf, len);
    }
    free(sel);
    return bad;
}

/* ---- durability and serializable reads against the revision history ---- */

/* The index of the first event above rev (events are in revision order). */
static size_t after(const struct fh_event *ev, size_t n, int64_t rev)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ev[mid].rev <= rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The key's value as of revision rev: its last event at or below rev (a few keys only, so the
 * walk back is short). */
static int64_t value_at(const struct fh_event *ev, size_t n, int key, int64_t rev)
{
    int64_t v = LINCHECK_ABSENT;
    for (size_t i = after(ev, n, rev); i-- > 0;)
        if (ev[i].key == key) {
            v = ev[i].value;
            break;
        }
    return v;
}

const char *fh_check_against(const struct fh_history *h, const struct fh_event *ev, size_t n,
                             char *buf, size_t len)
{
    for (size_t i = 0; i < h->n; i++) {
        const struct fh_op *o = &h->v[i];
        if (o->op.ret == LINCHECK_NEVER || o->rev <= 0)
            continue;
        if (o->flags & FH_APPLIED) {
            int64_t want = o->op.kind == LINCHECK_CAS ? o->op.value2 : o->op.value;
            bool found = false;
            for (size_t j = after(ev, n, o->rev - 1); j < n && ev[j].rev == o->rev && !found; j++)
                found = ev[j].key == o->key && ev[j].value == want;
            if (!found) {
                snprintf(buf, len,
                         "client %d's acknowledged change of %s to %" PRId64 " at revision %" PRId64
                         " is not in the revision history",
                         o->client, fh_key_names[o->key], want, o->rev);
                return buf;
            }
        }
        if ((o->flags & FH_SERIAL) && o->op.kind == LINCHECK_READ) {
            int64_t want = value_at(ev, n, o->key, o->rev);
            if (want != o->op.value) {
                snprintf(buf, len,
                         "client %d's serializable read of %s at revision %" PRId64
                         " (member %" PRIx64 ") returned %" PRId64 ", the history has %" PRId64,
                         o->client, fh_key_names[o->key], o->rev, o->member, o->op.value, want);
                return buf;
            }
        }
    }
    return NULL;
}
