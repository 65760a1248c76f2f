/*
 * storage_bench: throughput and commit latency of the storage engine, with no raft or network
 * in the way.
 *
 *   storage_bench [--dir DIR] [--keys N] [--ops N] [--value-size B] [--batch 1,64] [--no-sync]
 *
 * A fresh store in a temporary directory under DIR ($TMPDIR or /tmp) is preloaded so that every
 * key of the key space exists, then measured:
 *   put    Put commands over random keys (all overwrites), applied `batch` per write
 *          transaction as the apply loop does with one raft entry; commit latency per transaction
 *   get    single-key RangeRequests of random keys
 *   range  RangeRequests of 100 consecutive keys with limit 100
 * Results go out as a table and as one JSON line per measurement. The directory is removed at
 * the end.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "arena.h"
#include "err.h"
#include "keel.pb-c.h"
#include "store.h"

#define MAX_BATCHES   8
#define MAX_BATCH     100000
#define MAX_KEYS      100000000u /* "k%08u" stays fixed-width below this */
#define PRELOAD_BATCH 10000
#define RANGE_KEYS    100
#define KEY_BUF       16
#define SEED          0x6b65656c62656e63ull

struct options {
    const char *dir;
    uint64_t keys;
    uint64_t ops;
    size_t value_size;
    size_t batches[MAX_BATCHES];
    size_t n_batches;
    int no_sync;
};

struct result {
    const char *bench;
    size_t batch;  /* put only */
    uint64_t ops;  /* puts, gets or ranges done */
    uint64_t txns; /* put only */
    double seconds;
    double p50_us; /* put only: commit latency */
    double p99_us;
    double max_us;
    size_t per_op;    /* range only: keys each range returned */
    const char *note; /* why ops differs from --ops, or NULL */
};

/* One command slot per command of a batch: the store's contract does not say it is done with a
 * command's memory before commit, so commands of one batch never share buffers. */
struct slot {
    Keel__Command cmd;
    Keel__PutRequest put;
    char key[KEY_BUF];
    uint8_t *value;
};

struct bench {
    struct options opt;
    struct keel_store *store;
    struct keel_arena arena;
    struct slot *slots; /* max batch size of them */
    size_t n_slots;
    uint64_t index; /* raft index of the last applied command */
    uint64_t rng;
};

static char *tmp_root; /* removed by die() too, so a failed run leaves nothing behind */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "storage_bench: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void remove_tmp(void)
{
    if (tmp_root == NULL)
        return;
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(tmp_root);
    tmp_root = NULL;
}

static void die(const char *what, int err)
{
    if (err != 0)
        fprintf(stderr, "storage_bench: %s: %s (%s)\n", what, keel_strerror(err),
                keel_err_name(err));
    else
        fprintf(stderr, "storage_bench: %s\n", what);
    remove_tmp();
    exit(1);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: storage_bench [--dir DIR] [--keys N (1000000)] [--ops N (200000)]\n"
               "                     [--value-size B (256)] [--batch 1,64] [--no-sync]\n");
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64: fixed seed, so two runs touch the same keys in the same order. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t parse_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo || v > hi) {
        fprintf(stderr, "storage_bench: %s wants a number in [%" PRIu64 ", %" PRIu64 "]\n", flag,
                lo, hi);
        exit(2);
    }
    return (uint64_t)v;
}

static void parse_batches(struct options *o, const char *s)
{
    o->n_batches = 0;
    const char *p = s;
    while (*p != '\0') {
        if (o->n_batches == MAX_BATCHES) {
            fprintf(stderr, "storage_bench: at most %d batch sizes\n", MAX_BATCHES);
            exit(2);
        }
        char num[32];
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof(num)) {
            fprintf(stderr, "storage_bench: bad --batch list '%s'\n", s);
            exit(2);
        }
        memcpy(num, p, n);
        num[n] = '\0';
        o->batches[o->n_batches++] = (size_t)parse_u64("--batch", num, 1, MAX_BATCH);
        p += n;
        if (*p == ',')
            p++;
    }
    if (o->n_batches == 0) {
        fprintf(stderr, "storage_bench: empty --batch list\n");
        exit(2);
    }
}

static void parse_args(int argc, char **argv, struct options *o)
{
    memset(o, 0, sizeof(*o));
    o->keys = 1000000;
    o->ops = 200000;
    o->value_size = 256;
    o->batches[0] = 1;
    o->batches[1] = 64;
    o->n_batches = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--no-sync") == 0) {
            o->no_sync = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--dir") == 0)
            o->dir = v;
        else if (strcmp(a, "--keys") == 0)
            o->keys = parse_u64(a, v, 1, MAX_KEYS);
        else if (strcmp(a, "--ops") == 0)
            o->ops = parse_u64(a, v, 1, UINT64_C(1) << 40);
        else if (strcmp(a, "--value-size") == 0)
            o->value_size = (size_t)parse_u64(a, v, 0, 64u << 20);
        else if (strcmp(a, "--batch") == 0)
            parse_batches(o, v);
        else {
            usage(stderr);
            exit(2);
        }
    }
}

static void make_key(char *buf, uint64_t k)
{
    snprintf(buf, KEY_BUF, "k%08u", (unsigned)k);
}

/* Point slot i at key k. The value keeps its bytes but gets the index stamped in, so no two
 * writes of a key store the same value. */
static Keel__Command *slot_put(struct bench *b, size_t i, uint64_t k)
{
    struct slot *s = &b->slots[i];
    make_key(s->key, k);
    s->put.key.data = (uint8_t *)s->key;
    s->put.key.len = strlen(s->key);
    uint64_t stamp = b->index + 1 + i;
    memcpy(s->value, &stamp, b->opt.value_size < sizeof(stamp) ? b->opt.value_size : sizeof(stamp));
    return &s->cmd;
}

/* Apply n prepared slots in one write transaction. Returns the commit's duration. */
static uint64_t apply_slots(struct bench *b, size_t n)
{
    struct keel_store_write *w;
    int rv = keel_store_write_begin(b->store, &w);
    if (rv != 0)
        die("keel_store_write_begin", rv);
    for (size_t i = 0; i < n; i++) {
        struct keel_apply_result res;
        rv = keel_store_write_apply(w, ++b->index, &b->slots[i].cmd, &b->arena, &res);
        if (rv != 0) {
            keel_store_write_abort(w);
            die("keel_store_write_apply", rv);
        }
        if (res.skipped)
            die("a command was skipped as already applied", 0);
        if (res.err != 0) {
            keel_store_write_abort(w);
            die(res.msg ? res.msg : "put refused", res.err);
        }
    }
    uint64_t t0 = now_ns();
    rv = keel_store_write_commit(w);
    uint64_t t1 = now_ns();
    if (rv != 0)
        die("keel_store_write_commit", rv);
    return t1 - t0;
}

static double seconds_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e9;
}

static void preload(struct bench *b)
{
    uint64_t t0 = now_ns();
    for (uint64_t k = 0; k < b->opt.keys;) {
        size_t n = 0;
        for (; n < b->n_slots && k < b->opt.keys; n++, k++)
            slot_put(b, n, k);
        apply_slots(b, n);
        keel_arena_reset(&b->arena);
    }
    double secs = seconds_since(t0);
    struct keel_store_stat st;
    keel_store_stat(b->store, &st);
    printf("preload: %" PRIu64 " keys in %.1f s (%.0f puts/s, %zu per txn), db %.1f MiB, "
           "logical %.1f MiB\n",
           b->opt.keys, secs, (double)b->opt.keys / secs, b->n_slots,
           (double)st.db_size / (1 << 20), (double)st.logical_size / (1 << 20));
    fflush(stdout);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v. */
static double percentile_us(const uint64_t *v, size_t n, double p)
{
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)v[rank - 1] / 1e3;
}

static struct result bench_put(struct bench *b, size_t batch)
{
    struct result r = {.bench = "put", .batch = batch};
    r.ops = b->opt.ops;
    /* One fsync per op costs milliseconds on most disks: a full run would dwarf the rest. */
    if (batch == 1 && !b->opt.no_sync && r.ops >= 10) {
        r.ops /= 10;
        r.note = "--ops/10: one fsync per op";
    }
    r.txns = (r.ops + batch - 1) / batch;
    uint64_t *lat = malloc(r.txns * sizeof(*lat));
    if (lat == NULL)
        die("out of memory", 0);
    uint64_t done = 0;
    uint64_t t0 = now_ns();
    for (uint64_t t = 0; t < r.txns; t++) {
        size_t n = r.ops - done < batch ? (size_t)(r.ops - done) : batch;
        for (size_t i = 0; i < n; i++)
            slot_put(b, i, rng_next(&b->rng) % b->opt.keys);
        lat[t] = apply_slots(b, n);
        keel_arena_reset(&b->arena);
        done += n;
    }
    r.seconds = seconds_since(t0);
    qsort(lat, r.txns, sizeof(*lat), cmp_u64);
    r.p50_us = percentile_us(lat, r.txns, 50);
    r.p99_us = percentile_us(lat, r.txns, 99);
    r.max_us = (double)lat[r.txns - 1] / 1e3;
    free(lat);
    return r;
}

static struct result bench_get(struct bench *b)
{
    struct result r = {.bench = "get", .ops = b->opt.ops};
    char key[KEY_BUF];
    Keel__RangeRequest req = KEEL__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)key;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < r.ops; i++) {
        make_key(key, rng_next(&b->rng) % b->opt.keys);
        req.key.len = strlen(key);
        Keel__RangeResponse *out;
        int64_t rev;
        int rv = keel_store_range(b->store, &req, &b->arena, &out, &rev);
        if (rv != 0)
            die("keel_store_range", rv);
        /* Every key was preloaded: a miss means the store, not the bench, is wrong. */
        if (out->n_kvs != 1 || out->kvs[0]->value.len != b->opt.value_size)
            die("get did not find a preloaded key", 0);
        keel_arena_reset(&b->arena);
    }
    r.seconds = seconds_since(t0);
    return r;
}

static struct result bench_range(struct bench *b)
{
    struct result r = {.bench = "range", .ops = b->opt.ops};
    char key[KEY_BUF], end[KEY_BUF];
    Keel__RangeRequest req = KEEL__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)key;
    req.limit = RANGE_KEYS;
    size_t want = b->opt.keys < RANGE_KEYS ? (size_t)b->opt.keys : RANGE_KEYS;
    r.per_op = want;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < r.ops; i++) {
        uint64_t start = 0;
        if (b->opt.keys > RANGE_KEYS) {
            start = rng_next(&b->rng) % (b->opt.keys - RANGE_KEYS + 1);
            make_key(end, start + RANGE_KEYS);
            req.range_end.data = (uint8_t *)end;
            req.range_end.len = strlen(end);
        } else {
            /* "\0": every key from `key` on. */
            req.range_end.data = (uint8_t *)"";
            req.range_end.len = 1;
        }
        make_key(key, start);
        req.key.len = strlen(key);
        Keel__RangeResponse *out;
        int64_t rev;
        int rv = keel_store_range(b->store, &req, &b->arena, &out, &rev);
        if (rv != 0)
            die("keel_store_range", rv);
        if (out->n_kvs != want)
            die("range returned the wrong number of keys", 0);
        keel_arena_reset(&b->arena);
    }
    r.seconds = seconds_since(t0);
    return r;
}

static void print_table(const struct result *rs, size_t n)
{
    printf("\n%-6s %6s %9s %8s %10s %9s %9s %9s\n", "bench", "batch", "ops", "seconds", "ops/s",
           "p50 us", "p99 us", "max us");
    for (size_t i = 0; i < n; i++) {
        const struct result *r = &rs[i];
        double rate = (double)r->ops / r->seconds;
        if (r->batch > 0)
            printf("%-6s %6zu %9" PRIu64 " %8.2f %10.0f %9.1f %9.1f %9.1f%s%s\n", r->bench,
                   r->batch, r->ops, r->seconds, rate, r->p50_us, r->p99_us, r->max_us,
                   r->note ? "  " : "", r->note ? r->note : "");
        else if (r->per_op > 0)
            printf("%-6s %6s %9" PRIu64 " %8.2f %10.0f  ranges/s, %zu keys each\n", r->bench, "-",
                   r->ops, r->seconds, rate, r->per_op);
        else
            printf("%-6s %6s %9" PRIu64 " %8.2f %10.0f\n", r->bench, "-", r->ops, r->seconds, rate);
    }
    printf("(put: p50/p99/max are the commit latency of one write transaction)\n\n");
}

static void print_json(const struct bench *b, const struct result *r)
{
    double rate = (double)r->ops / r->seconds;
    if (strcmp(r->bench, "put") == 0)
        printf("{\"bench\":\"put\",\"batch\":%zu,\"ops\":%" PRIu64 ",\"txns\":%" PRIu64
               ",\"seconds\":%.3f,\"ops_per_sec\":%.1f,\"txns_per_sec\":%.1f,"
               "\"commit_p50_us\":%.1f,\"commit_p99_us\":%.1f,\"commit_max_us\":%.1f,",
               r->batch, r->ops, r->txns, r->seconds, rate, (double)r->txns / r->seconds, r->p50_us,
               r->p99_us, r->max_us);
    else if (strcmp(r->bench, "get") == 0)
        printf("{\"bench\":\"get\",\"ops\":%" PRIu64 ",\"seconds\":%.3f,\"ops_per_sec\":%.1f,",
               r->ops, r->seconds, rate);
    else
        printf("{\"bench\":\"range\",\"limit\":%d,\"ranges\":%" PRIu64
               ",\"seconds\":%.3f,\"ranges_per_sec\":%.1f,\"keys_per_sec\":%.1f,",
               RANGE_KEYS, r->ops, r->seconds, rate, rate * (double)r->per_op);
    printf("\"keys\":%" PRIu64 ",\"value_size\":%zu,\"sync\":%s}\n", b->opt.keys, b->opt.value_size,
           b->opt.no_sync ? "false" : "true");
}

static void slots_init(struct bench *b, size_t n)
{
    b->slots = calloc(n, sizeof(*b->slots));
    if (b->slots == NULL)
        die("out of memory", 0);
    b->n_slots = n;
    uint64_t st = SEED;
    for (size_t i = 0; i < n; i++) {
        struct slot *s = &b->slots[i];
        Keel__Command cmd = KEEL__COMMAND__INIT;
        Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
        s->cmd = cmd;
        s->put = put;
        s->cmd.op_case = KEEL__COMMAND__OP_PUT;
        s->cmd.put = &s->put;
        s->value = malloc(b->opt.value_size ? b->opt.value_size : 1);
        if (s->value == NULL)
            die("out of memory", 0);
        for (size_t j = 0; j < b->opt.value_size; j++)
            s->value[j] = (uint8_t)rng_next(&st);
        s->put.value.data = s->value;
        s->put.value.len = b->opt.value_size;
    }
}

static void slots_free(struct bench *b)
{
    for (size_t i = 0; i < b->n_slots; i++)
        free(b->slots[i].value);
    free(b->slots);
    b->slots = NULL;
}

int main(int argc, char **argv)
{
    struct bench b;
    memset(&b, 0, sizeof(b));
    parse_args(argc, argv, &b.opt);
    b.rng = SEED;

    const char *base = b.opt.dir;
    if (base == NULL)
        base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    size_t len = strlen(base) + sizeof("/keel-bench-XXXXXX");
    tmp_root = malloc(len);
    if (tmp_root == NULL)
        die("out of memory", 0);
    snprintf(tmp_root, len, "%s/keel-bench-XXXXXX", base);
    if (mkdtemp(tmp_root) == NULL) {
        fprintf(stderr, "storage_bench: mkdtemp %s: %s\n", tmp_root, strerror(errno));
        free(tmp_root);
        return 1;
    }
    char *path = malloc(len + sizeof("/state"));
    if (path == NULL)
        die("out of memory", 0);
    snprintf(path, len + sizeof("/state"), "%s/state", tmp_root);

    size_t max_batch = PRELOAD_BATCH;
    for (size_t i = 0; i < b.opt.n_batches; i++)
        if (b.opt.batches[i] > max_batch)
            max_batch = b.opt.batches[i];
    slots_init(&b, max_batch);
    keel_arena_init(&b.arena, 0);

    /* Room for every key plus every timed put as history, with slack for LMDB's overhead; the
     * default quota covers the default run. */
    uint64_t puts = b.opt.keys;
    for (size_t i = 0; i < b.opt.n_batches; i++)
        puts += b.opt.ops;
    uint64_t need = 2 * puts * (b.opt.value_size + 128);
    struct keel_store_options so = {.path = path, .no_sync = b.opt.no_sync};
    so.quota_bytes = need > (UINT64_C(2) << 30) ? need : (UINT64_C(2) << 30);
    int rv = keel_store_open(&so, &b.store);
    if (rv != 0)
        die("keel_store_open", rv);

    printf("storage_bench: keys=%" PRIu64 " ops=%" PRIu64 " value=%zuB sync=%s dir=%s\n",
           b.opt.keys, b.opt.ops, b.opt.value_size, b.opt.no_sync ? "off" : "on", tmp_root);
    fflush(stdout);
    preload(&b);
    /* The preload's batch size was only for speed; timed batches use the first slots. */
    struct result rs[MAX_BATCHES + 2];
    size_t n = 0;
    for (size_t i = 0; i < b.opt.n_batches; i++) {
        rs[n++] = bench_put(&b, b.opt.batches[i]);
        fflush(stdout);
    }
    rs[n++] = bench_get(&b);
    rs[n++] = bench_range(&b);

    struct keel_store_stat st;
    keel_store_stat(b.store, &st);
    print_table(rs, n);
    for (size_t i = 0; i < n; i++)
        print_json(&b, &rs[i]);
    printf("final: revision %" PRId64 ", applied index %" PRIu64 ", db %.1f MiB, logical %.1f "
           "MiB\n",
           st.revision, st.applied_index, (double)st.db_size / (1 << 20),
           (double)st.logical_size / (1 << 20));

    keel_store_close(b.store);
    keel_arena_close(&b.arena);
    slots_free(&b);
    free(path);
    remove_tmp();
    return 0;
}
