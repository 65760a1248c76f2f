#include "testutil.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void *need(void *p)
{
    if (p == NULL) {
        fprintf(stderr, "testutil: out of memory\n");
        abort();
    }
    return p;
}

char *tu_mkdtemp(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    char *path = NULL;
    if (asprintf(&path, "%s/keel-%s-XXXXXX", base, tag) < 0)
        abort();
    if (mkdtemp(path) == NULL) {
        perror("mkdtemp");
        abort();
    }
    return path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmdir(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct keel_store *tu_store_open(const char *dir, uint64_t quota_bytes)
{
    char *path = NULL;
    if (asprintf(&path, "%s/state", dir) < 0)
        abort();
    struct keel_store_options o = {.path = path, .quota_bytes = quota_bytes, .no_sync = 1};
    struct keel_store *s = NULL;
    int rv = keel_store_open(&o, &s);
    if (rv != 0) {
        fprintf(stderr, "keel_store_open(%s): %s\n", path, keel_strerror(rv));
        abort();
    }
    free(path);
    return s;
}

uint64_t tu_seed(const char *test_name)
{
    const char *env = getenv("KEEL_SEED");
    uint64_t seed;
    if (env != NULL && env[0] != '\0') {
        seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
    }
    printf("%s: seed %llu (replay with KEEL_SEED=%llu)\n", test_name, (unsigned long long)seed,
           (unsigned long long)seed);
    fflush(stdout);
    return seed;
}

uint64_t tu_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

ProtobufCBinaryData tu_bytes(struct keel_arena *a, const void *p, size_t n)
{
    ProtobufCBinaryData b = {.len = n, .data = need(keel_arena_memdup(a, p, n))};
    return b;
}

ProtobufCBinaryData tu_str(struct keel_arena *a, const char *s)
{
    if (s == NULL) {
        ProtobufCBinaryData none = {0, NULL};
        return none;
    }
    return tu_bytes(a, s, strlen(s));
}

#define NEW(a, type, init)                                                                         \
    ({                                                                                             \
        type *p_ = need(keel_arena_alloc((a), sizeof(type)));                                      \
        init(p_);                                                                                  \
        p_;                                                                                        \
    })

Keel__PutRequest *tu_put_req(struct keel_arena *a, const char *key, const char *value)
{
    Keel__PutRequest *p = NEW(a, Keel__PutRequest, keel__put_request__init);
    p->key = tu_str(a, key);
    p->value = tu_str(a, value);
    return p;
}

Keel__DeleteRangeRequest *tu_del_req(struct keel_arena *a, const char *key, const char *end)
{
    Keel__DeleteRangeRequest *d =
        NEW(a, Keel__DeleteRangeRequest, keel__delete_range_request__init);
    d->key = tu_str(a, key);
    d->range_end = tu_str(a, end);
    return d;
}

Keel__RangeRequest *tu_range_req(struct keel_arena *a, const char *key, const char *end)
{
    Keel__RangeRequest *r = NEW(a, Keel__RangeRequest, keel__range_request__init);
    r->key = tu_str(a, key);
    r->range_end = tu_str(a, end);
    return r;
}

static Keel__Command *new_cmd(struct keel_arena *a)
{
    return NEW(a, Keel__Command, keel__command__init);
}

Keel__Command *tu_cmd_put(struct keel_arena *a, const char *key, const char *value)
{
    Keel__Command *c = new_cmd(a);
    c->op_case = KEEL__COMMAND__OP_PUT;
    c->put = tu_put_req(a, key, value);
    return c;
}

Keel__Command *tu_cmd_put_lease(struct keel_arena *a, const char *key, const char *value,
                                int64_t lease)
{
    Keel__Command *c = tu_cmd_put(a, key, value);
    c->put->lease = lease;
    return c;
}

Keel__Command *tu_cmd_del(struct keel_arena *a, const char *key, const char *end)
{
    Keel__Command *c = new_cmd(a);
    c->op_case = KEEL__COMMAND__OP_DELETE_RANGE;
    c->delete_range = tu_del_req(a, key, end);
    return c;
}

Keel__Command *tu_cmd_txn(struct keel_arena *a, Keel__TxnRequest *txn)
{
    Keel__Command *c = new_cmd(a);
    c->op_case = KEEL__COMMAND__OP_TXN;
    c->txn = txn;
    return c;
}

Keel__Command *tu_cmd_compact(struct keel_arena *a, int64_t revision)
{
    Keel__Command *c = new_cmd(a);
    c->op_case = KEEL__COMMAND__OP_COMPACTION;
    c->compaction = NEW(a, Keel__CompactionRequest, keel__compaction_request__init);
    c->compaction->revision = revision;
    return c;
}

Keel__Command *tu_cmd_lease_grant(struct keel_arena *a, int64_t id, int64_t ttl)
{
    Keel__Command *c = new_cmd(a);
    c->op_case = KEEL__COMMAND__OP_LEASE_GRANT;
    c->lease_grant = NEW(a, Keel__LeaseGrantRequest, keel__lease_grant_request__init);
    c->lease_grant->id = id;
    c->lease_grant->ttl = ttl;
    return c;
}

Keel__Command *tu_cmd_lease_revoke(struct keel_arena *a, int64_t id)
{
    Keel__Command *c = new_cmd(a);
    c->op_case = KEEL__COMMAND__OP_LEASE_REVOKE;
    c->lease_revoke = NEW(a, Keel__LeaseRevokeRequest, keel__lease_revoke_request__init);
    c->lease_revoke->id = id;
    return c;
}

Keel__TxnRequest *tu_txn(struct keel_arena *a)
{
    return NEW(a, Keel__TxnRequest, keel__txn_request__init);
}

/* Grow an arena array by one element (arenas cannot realloc: copy). */
static void **push(struct keel_arena *a, void **arr, size_t n, void *elem)
{
    void **na = need(keel_arena_alloc(a, (n + 1) * sizeof(void *)));
    if (n > 0)
        memcpy(na, arr, n * sizeof(void *));
    na[n] = elem;
    return na;
}

Keel__Compare *tu_txn_compare(struct keel_arena *a, Keel__TxnRequest *t, const char *key,
                              Keel__Compare__CompareTarget target,
                              Keel__Compare__CompareResult result)
{
    Keel__Compare *c = NEW(a, Keel__Compare, keel__compare__init);
    c->key = tu_str(a, key);
    c->target = target;
    c->result = result;
    t->compare = (Keel__Compare **)push(a, (void **)t->compare, t->n_compare, c);
    t->n_compare++;
    return c;
}

Keel__RequestOp *tu_txn_op(struct keel_arena *a, Keel__TxnRequest *t, int success)
{
    Keel__RequestOp *op = NEW(a, Keel__RequestOp, keel__request_op__init);
    if (success) {
        t->success = (Keel__RequestOp **)push(a, (void **)t->success, t->n_success, op);
        t->n_success++;
    } else {
        t->failure = (Keel__RequestOp **)push(a, (void **)t->failure, t->n_failure, op);
        t->n_failure++;
    }
    return op;
}

void tu_op_put(Keel__RequestOp *op, Keel__PutRequest *put)
{
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = put;
}

void tu_op_del(Keel__RequestOp *op, Keel__DeleteRangeRequest *del)
{
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op->request_delete_range = del;
}

void tu_op_range(Keel__RequestOp *op, Keel__RangeRequest *range)
{
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = range;
}

void tu_apply(struct keel_store *s, uint64_t index, const Keel__Command *cmd, struct keel_arena *a,
              struct keel_apply_result *res)
{
    int rv = keel_store_apply(s, index, cmd, a, res);
    if (rv != 0) {
        fprintf(stderr, "keel_store_apply(%llu): %s\n", (unsigned long long)index,
                keel_strerror(rv));
        abort();
    }
}

int tu_range(struct keel_store *s, struct keel_arena *a, const char *key, const char *end,
             int64_t revision, Keel__RangeResponse **out)
{
    Keel__RangeRequest *r = tu_range_req(a, key, end);
    r->revision = revision;
    int64_t rev;
    return keel_store_range(s, r, a, out, &rev);
}

int tu_run_groups(const char *prog, int argc, char **argv, const struct tu_group *groups, size_t n)
{
    int matched = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc >= 2 && strcmp(argv[1], groups[i].name) != 0)
            continue;
        matched = 1;
        failed |= _cmocka_run_group_tests(groups[i].name, groups[i].tests, groups[i].n, NULL, NULL);
    }
    if (!matched) {
        fprintf(stderr, "%s: no group named %s\n", prog, argv[1]);
        return 2;
    }
    return failed ? 1 : 0;
}

void tu_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

const uint8_t *tu_nested_txns(uint8_t *end, size_t levels, size_t *len)
{
    uint8_t *p = end;
    size_t n = 0;
    for (size_t i = 0; i <= 2 * levels; i++) {
        /* TxnRequest.success = 2, RequestOp.request_txn = 4, Request.txn = 13. */
        unsigned field = i == 2 * levels ? 13 : i % 2 == 0 ? 4 : 2;
        uint8_t hdr[12];
        size_t h = 0;
        hdr[h++] = (uint8_t)(field << 3 | 2);
        for (size_t v = n;; v >>= 7) {
            hdr[h++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
            if (v < 0x80)
                break;
        }
        p -= h;
        memcpy(p, hdr, h);
        n += h;
    }
    *len = n;
    return p;
}

char *tu_asan_options_add(const char *opts)
{
    const char *old = getenv("ASAN_OPTIONS");
    char *saved = old != NULL ? strdup(old) : NULL;
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s%s%s", saved ? saved : "", saved && saved[0] ? ":" : "", opts);
    setenv("ASAN_OPTIONS", buf, 1);
    return saved;
}

void tu_asan_options_restore(char *saved)
{
    if (saved != NULL)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
}
