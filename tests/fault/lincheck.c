#include "lincheck.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------
 * Helpers
 */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "lincheck: out of memory\n");
        abort();
    }
    return q;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "lincheck: out of memory\n");
        abort();
    }
    return p;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fmt_value(char *buf, size_t len, int64_t v)
{
    if (v == LINCHECK_ABSENT)
        snprintf(buf, len, "absent");
    else
        snprintf(buf, len, "%" PRId64, v);
}

const char *lincheck_verdict_name(enum lincheck_verdict v)
{
    switch (v) {
    case LINCHECK_OK:
        return "ok";
    case LINCHECK_VIOLATION:
        return "violation";
    case LINCHECK_UNKNOWN:
        return "unknown";
    case LINCHECK_INVALID:
        return "invalid";
    }
    return "?";
}

/* ---------------------------------------------------------------------------------------
 * The register model
 */

/* Whether op can take effect on a register holding *state; if so *state becomes the value after. */
static bool step(const struct lincheck_op *op, int64_t *state)
{
    switch (op->kind) {
    case LINCHECK_READ:
        return *state == op->value;
    case LINCHECK_WRITE:
        *state = op->value;
        return true;
    case LINCHECK_CAS_BLIND:
        if (*state == op->value)
            *state = op->value2;
        return true;
    case LINCHECK_CAS:
        if (op->ret == LINCHECK_NEVER) {
            /* Its reply never came, so either outcome is possible at this point. Not taking
             * effect at all is covered by linearizing it after everything else. */
            if (*state == op->value)
                *state = op->value2;
            return true;
        }
        if (op->ok) {
            if (*state != op->value)
                return false;
            *state = op->value2;
            return true;
        }
        return *state != op->value;
    }
    return false;
}

/* ---------------------------------------------------------------------------------------
 * The cache of (linearized set, state) already explored
 */

struct cache {
    size_t words;    /* uint64_t words per bitset */
    size_t count;    /* entries */
    size_t cap;      /* slots, a power of two */
    size_t *slots;   /* entry index + 1; 0 = empty */
    int64_t *states; /* per entry */
    uint64_t *sets;  /* per entry, words each */
    size_t entries_cap;
};

static uint64_t hash_of(const uint64_t *set, size_t words, int64_t state)
{
    uint64_t h = 0x9e3779b97f4a7c15u ^ (uint64_t)state;
    for (size_t i = 0; i < words; i++) {
        h ^= set[i] + 0x9e3779b97f4a7c15u + (h << 6) + (h >> 2);
        h *= 0xbf58476d1ce4e5b9u;
    }
    return h ^ (h >> 31);
}

static void cache_init(struct cache *c, size_t words)
{
    memset(c, 0, sizeof(*c));
    c->words = words;
    c->cap = 1024;
    c->slots = xcalloc(c->cap, sizeof(*c->slots));
}

static void cache_free(struct cache *c)
{
    free(c->slots);
    free(c->states);
    free(c->sets);
}

static void cache_place(struct cache *c, size_t e)
{
    uint64_t h = hash_of(c->sets + e * c->words, c->words, c->states[e]);
    size_t i = (size_t)h & (c->cap - 1);
    while (c->slots[i] != 0)
        i = (i + 1) & (c->cap - 1);
    c->slots[i] = e + 1;
}

/* Add (set, state) unless present; returns whether it was new. */
static bool cache_add(struct cache *c, const uint64_t *set, int64_t state)
{
    uint64_t h = hash_of(set, c->words, state);
    size_t i = (size_t)h & (c->cap - 1);
    size_t bytes = c->words * sizeof(uint64_t);
    while (c->slots[i] != 0) {
        size_t e = c->slots[i] - 1;
        if (c->states[e] == state && memcmp(c->sets + e * c->words, set, bytes) == 0)
            return false;
        i = (i + 1) & (c->cap - 1);
    }
    if (c->count == c->entries_cap) {
        c->entries_cap = c->entries_cap ? 2 * c->entries_cap : 256;
        c->states = xrealloc(c->states, c->entries_cap * sizeof(*c->states));
        c->sets = xrealloc(c->sets, c->entries_cap * bytes);
    }
    size_t e = c->count++;
    c->states[e] = state;
    memcpy(c->sets + e * c->words, set, bytes);
    c->slots[i] = e + 1;
    /* Keep the table at most half full so probes stay short. */
    if (2 * c->count > c->cap) {
        free(c->slots);
        c->cap *= 2;
        c->slots = xcalloc(c->cap, sizeof(*c->slots));
        for (size_t k = 0; k < c->count; k++)
            cache_place(c, k);
    }
    return true;
}

/* ---------------------------------------------------------------------------------------
 * One key: Porcupine's checkSingle
 */

struct node {
    int64_t time;
    size_t op;          /* index into the key's operations */
    struct node *match; /* a call's return; NULL for a return */
    struct node *prev, *next;
};

static int cmp_node(const void *pa, const void *pb)
{
    const struct node *a = pa, *b = pb;
    if (a->time != b->time)
        return a->time < b->time ? -1 : 1;
    /* At equal times calls come first, so operations that touch count as overlapping. */
    bool ca = a->match != NULL, cb = b->match != NULL;
    if (ca != cb)
        return ca ? -1 : 1;
    return a->op < b->op ? -1 : a->op > b->op;
}

static void lift(struct node *call)
{
    call->prev->next = call->next;
    call->next->prev = call->prev;
    struct node *ret = call->match;
    ret->prev->next = ret->next;
    if (ret->next != NULL)
        ret->next->prev = ret->prev;
}

static void unlift(struct node *call)
{
    struct node *ret = call->match;
    ret->prev->next = ret;
    if (ret->next != NULL)
        ret->next->prev = ret;
    call->prev->next = call;
    call->next->prev = call;
}

enum key_outcome { KEY_OK, KEY_VIOLATION, KEY_TIMEOUT };

struct frame {
    struct node *call;
    int64_t state; /* the state before call took effect */
};

/*
 * Search for a linearization of the m operations ops[idx[0..m)] (all on one key). On a
 * violation, *linearized and *stuck (an index into idx) say how far it got.
 */
static enum key_outcome check_key(const struct lincheck_op *ops, const size_t *idx, size_t m,
                                  int64_t deadline_ns, size_t *linearized, size_t *stuck)
{
    struct node *nodes = xcalloc(2 * m, sizeof(*nodes));
    for (size_t j = 0; j < m; j++) {
        nodes[2 * j] = (struct node){.time = ops[idx[j]].call, .op = j, .match = &nodes[2 * j]};
        nodes[2 * j + 1] = (struct node){.time = ops[idx[j]].ret, .op = j};
    }
    /* match points at itself above only to mark calls for the sort; fixed up below. */
    qsort(nodes, 2 * m, sizeof(*nodes), cmp_node);
    struct node **ret_of = xcalloc(m, sizeof(*ret_of));
    for (size_t k = 0; k < 2 * m; k++) {
        if (nodes[k].match == NULL)
            ret_of[nodes[k].op] = &nodes[k];
    }
    struct node head = {0};
    struct node *prev = &head;
    for (size_t k = 0; k < 2 * m; k++) {
        struct node *nd = &nodes[k];
        if (nd->match != NULL)
            nd->match = ret_of[nd->op];
        nd->prev = prev;
        prev->next = nd;
        prev = nd;
    }
    prev->next = NULL;

    size_t words = (m + 63) / 64;
    uint64_t *set = xcalloc(words, sizeof(*set));
    struct frame *stack = xcalloc(m, sizeof(*stack));
    size_t depth = 0;
    struct cache cache;
    cache_init(&cache, words);

    int64_t state = LINCHECK_ABSENT;
    size_t best = 0;
    bool have_stuck = false;
    size_t stuck_depth = 0;
    enum key_outcome out = KEY_OK;
    uint64_t steps = 0;
    struct node *entry = head.next;
    while (head.next != NULL) {
        if (deadline_ns > 0 && (++steps & 1023) == 0 && now_ns() > deadline_ns) {
            out = KEY_TIMEOUT;
            break;
        }
        if (entry->match != NULL) {
            int64_t after = state;
            const struct lincheck_op *op = &ops[idx[entry->op]];
            bool placed = false;
            if (step(op, &after)) {
                set[entry->op / 64] |= (uint64_t)1 << (entry->op % 64);
                if (cache_add(&cache, set, after)) {
                    stack[depth++] = (struct frame){.call = entry, .state = state};
                    if (depth > best)
                        best = depth;
                    state = after;
                    lift(entry);
                    entry = head.next;
                    placed = true;
                } else {
                    set[entry->op / 64] &= ~((uint64_t)1 << (entry->op % 64));
                }
            }
            if (!placed)
                entry = entry->next;
        } else {
            /* A return with its call still pending: whatever was tried so far cannot be
             * extended past it. Remember the deepest such dead end for the report. */
            if (!have_stuck || depth > stuck_depth) {
                have_stuck = true;
                stuck_depth = depth;
                *stuck = entry->op;
            }
            if (depth == 0) {
                out = KEY_VIOLATION;
                break;
            }
            struct frame f = stack[--depth];
            state = f.state;
            set[f.call->op / 64] &= ~((uint64_t)1 << (f.call->op % 64));
            unlift(f.call);
            entry = f.call->next;
        }
    }
    *linearized = best;

    cache_free(&cache);
    free(stack);
    free(set);
    free(ret_of);
    free(nodes);
    return out;
}

/* ---------------------------------------------------------------------------------------
 * The whole history, one key at a time
 */

struct keyed {
    const char *key;
    size_t i; /* index into the caller's operations */
};

static int cmp_by_key(const void *pa, const void *pb)
{
    const struct keyed *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    if (c != 0)
        return c;
    return a->i < b->i ? -1 : a->i > b->i;
}

static const char *kind_name(enum lincheck_kind k)
{
    switch (k) {
    case LINCHECK_READ:
        return "read";
    case LINCHECK_WRITE:
        return "write";
    case LINCHECK_CAS:
        return "cas";
    case LINCHECK_CAS_BLIND:
        return "blind cas";
    }
    return "?";
}

enum lincheck_verdict lincheck_check(const struct lincheck_op *ops, size_t n, int64_t time_bound_ms,
                                     struct lincheck_result *res)
{
    memset(res, 0, sizeof(*res));
    for (size_t i = 0; i < n; i++) {
        const struct lincheck_op *op = &ops[i];
        if (op->key == NULL || op->ret < op->call ||
            (op->kind != LINCHECK_READ && op->kind != LINCHECK_WRITE && op->kind != LINCHECK_CAS &&
             op->kind != LINCHECK_CAS_BLIND)) {
            res->verdict = LINCHECK_INVALID;
            res->op = i;
            snprintf(res->detail, sizeof(res->detail),
                     "operation %zu: no key, an unknown kind or completes before its call", i);
            return res->verdict;
        }
    }
    int64_t deadline = time_bound_ms > 0 ? now_ns() + time_bound_ms * 1000000 : 0;

    /* Unknown-outcome reads say nothing about the register: leave them out. */
    struct keyed *byk = xcalloc(n, sizeof(*byk));
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!(ops[i].kind == LINCHECK_READ && ops[i].ret == LINCHECK_NEVER))
            byk[kept++] = (struct keyed){.key = ops[i].key, .i = i};
    qsort(byk, kept, sizeof(*byk), cmp_by_key);
    size_t *idx = xcalloc(n, sizeof(*idx));
    for (size_t k = 0; k < kept; k++)
        idx[k] = byk[k].i;
    free(byk);

    bool timed_out = false;
    res->verdict = LINCHECK_OK;
    for (size_t lo = 0; lo < kept;) {
        size_t hi = lo + 1;
        while (hi < kept && strcmp(ops[idx[hi]].key, ops[idx[lo]].key) == 0)
            hi++;
        size_t linearized = 0, stuck = 0;
        enum key_outcome o = check_key(ops, idx + lo, hi - lo, deadline, &linearized, &stuck);
        if (o == KEY_VIOLATION) {
            const struct lincheck_op *op = &ops[idx[lo + stuck]];
            char v1[32], v2[32];
            fmt_value(v1, sizeof(v1), op->value);
            fmt_value(v2, sizeof(v2), op->value2);
            res->verdict = LINCHECK_VIOLATION;
            res->key = op->key;
            res->key_ops = hi - lo;
            res->linearized = linearized;
            res->op = idx[lo + stuck];
            snprintf(
                res->detail, sizeof(res->detail),
                "key '%s': linearized at most %zu of %zu operations; operation %zu (%s %s%s%s, "
                "call %" PRId64 ", ret %" PRId64 ") cannot take effect before it completes",
                op->key, linearized, hi - lo, res->op, kind_name(op->kind), v1,
                op->kind >= LINCHECK_CAS ? "->" : "", op->kind >= LINCHECK_CAS ? v2 : "", op->call,
                op->ret);
            break;
        }
        if (o == KEY_TIMEOUT) {
            /* The deadline is shared, so the other keys would time out too. */
            timed_out = true;
            if (res->key == NULL)
                res->key = ops[idx[lo]].key;
            break;
        }
        lo = hi;
    }
    if (res->verdict == LINCHECK_OK && timed_out) {
        res->verdict = LINCHECK_UNKNOWN;
        snprintf(res->detail, sizeof(res->detail),
                 "time bound of %" PRId64 " ms ran out while checking key '%s'", time_bound_ms,
                 res->key);
    }
    free(idx);
    return res->verdict;
}

/* ---------------------------------------------------------------------------------------
 * Jepsen etcd logs
 */

static int parse_value(const char *s, int64_t *v)
{
    if (strcmp(s, "nil") == 0) {
        *v = LINCHECK_ABSENT;
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *v = x;
    return 0;
}

int lincheck_jepsen_load(const char *path, struct lincheck_op **out, size_t *n, char *err,
                         size_t err_len)
{
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct lincheck_op *ops = NULL;
    bool *dropped = NULL;
    size_t count = 0, cap = 0;
    /* The pending operation of each process, by index + 1 (0 = none). */
    size_t *pending = NULL;
    size_t procs = 0;
    char line[512];
    int64_t lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        const char *p = strstr(line, "jepsen.util - ");
        char status[16], kind[16], value[64];
        unsigned proc;
        if (p == NULL ||
            sscanf(p, "jepsen.util - %u\t:%15[a-z]\t:%15[a-z]\t%63[^\n]", &proc, status, kind,
                   value) != 4 ||
            proc > 1000) {
            snprintf(err, err_len, "%s:%" PRId64 ": cannot parse '%s'", path, lineno, line);
            rc = -1;
            break;
        }
        if (proc >= procs) {
            pending = xrealloc(pending, (proc + 1) * sizeof(*pending));
            memset(pending + procs, 0, (proc + 1 - procs) * sizeof(*pending));
            procs = proc + 1;
        }
        enum lincheck_kind k;
        if (strcmp(kind, "read") == 0)
            k = LINCHECK_READ;
        else if (strcmp(kind, "write") == 0)
            k = LINCHECK_WRITE;
        else if (strcmp(kind, "cas") == 0)
            k = LINCHECK_CAS;
        else {
            snprintf(err, err_len, "%s:%" PRId64 ": unknown operation :%s", path, lineno, kind);
            rc = -1;
            break;
        }
        int64_t v1 = LINCHECK_ABSENT, v2 = LINCHECK_ABSENT;
        int bad = 0;
        if (strcmp(status, "info") == 0) {
            /* An :info line carries the reason (":timed-out"), not a value. */
        } else if (k == LINCHECK_CAS) {
            char a[32], b[32];
            bad = sscanf(value, "[%31[^ ] %31[^]]]", a, b) != 2 || parse_value(a, &v1) != 0 ||
                  parse_value(b, &v2) != 0;
        } else {
            bad = parse_value(value, &v1);
        }
        if (bad) {
            snprintf(err, err_len, "%s:%" PRId64 ": bad value '%s'", path, lineno, value);
            rc = -1;
            break;
        }
        if (strcmp(status, "invoke") == 0) {
            if (pending[proc] != 0) {
                snprintf(err, err_len, "%s:%" PRId64 ": process %u invokes twice", path, lineno,
                         proc);
                rc = -1;
                break;
            }
            if (count == cap) {
                cap = cap ? 2 * cap : 64;
                ops = xrealloc(ops, cap * sizeof(*ops));
                dropped = xrealloc(dropped, cap * sizeof(*dropped));
            }
            ops[count] = (struct lincheck_op){.key = "x",
                                              .kind = k,
                                              .value = v1,
                                              .value2 = v2,
                                              .call = lineno,
                                              .ret = LINCHECK_NEVER};
            dropped[count] = false;
            pending[proc] = ++count;
            continue;
        }
        if (pending[proc] == 0 || ops[pending[proc] - 1].kind != k) {
            snprintf(err, err_len, "%s:%" PRId64 ": completion without a matching invocation", path,
                     lineno);
            rc = -1;
            break;
        }
        struct lincheck_op *op = &ops[pending[proc] - 1];
        pending[proc] = 0;
        if (strcmp(status, "ok") == 0) {
            op->ret = lineno;
            op->ok = true;
            if (k == LINCHECK_READ)
                op->value = v1;
        } else if (strcmp(status, "fail") == 0) {
            dropped[op - ops] = true;
        } else if (strcmp(status, "info") == 0) {
            /* Unknown outcome: ret stays LINCHECK_NEVER. */
        } else {
            snprintf(err, err_len, "%s:%" PRId64 ": unknown status :%s", path, lineno, status);
            rc = -1;
            break;
        }
    }
    fclose(f);
    free(pending);
    if (rc == 0) {
        size_t kept = 0;
        for (size_t i = 0; i < count; i++)
            if (!dropped[i])
                ops[kept++] = ops[i];
        *out = ops;
        *n = kept;
    } else {
        free(ops);
    }
    free(dropped);
    return rc;
}
