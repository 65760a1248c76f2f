/*
 * The raft log bounded in bytes (--snapshot-bytes, --snapshot-trailing-bytes; server/node.c
 * says how), through real keeld processes: `test_raftlog <group>`, one ctest entry per group.
 * Entries here are large (64 KiB values, one put each, and a few values of 1.4 MiB, larger than
 * a segment), so the entry-count bounds, left at their defaults of 65536, never bind: without
 * the byte bounds every byte written stays in every member's log.
 *
 *  - bound: 1 MiB thresholds and segments, about 21 MiB written while a follower is down for
 *    half of it. Every member's raft directory ends up within the bound worked out below; the
 *    follower, far behind the 1 MiB kept, comes back through a checkpoint with every key; a
 *    restarted member has every key, and its log stays bounded.
 *  - catchup: 8 MiB kept behind a snapshot; a follower down while 4 MiB are written comes back
 *    from the log alone (no checkpoint), with every key.
 *
 * Waits are bounded; nothing asserts on time.
 */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "cluster.h"
#include "testutil.h"
#include "keel/keel.h"

#define MIB        (1u << 20)
#define SEGMENT    MIB
#define VAL_LEN    (64u << 10)
#define BIG_LEN    (1400u << 10) /* under the 1.5 MiB request limit, over a segment */
#define ENTRY_SLOP 1024u         /* an entry's key, command, batch and raft headers, at most */
/* keeld keeps at least this many entries behind a snapshot, whatever they weigh (node.c). */
#define MIN_TRAILING 16u

static struct keel *open_client(const struct tc_cluster *c, int member)
{
    char eps[512];
    tc_endpoints(c, member, eps, sizeof(eps));
    /* A client of one member never retries: a restarted member answers serializable reads
     * UNAVAILABLE until it is back where its readers were, and a retry would take the read to
     * another member, whose answer would pass for this member's. */
    struct keel_options o = {.endpoints = eps,
                             .request_timeout_ms = 10000,
                             .dial_timeout_ms = 500,
                             .max_retries = member > 0 ? -1 : 0};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

/* Key i's value: len bytes of a pattern of its own, so a value cut short or mixed up shows. */
static void fill(uint8_t *v, size_t len, int i)
{
    for (size_t j = 0; j < len; j++)
        v[j] = (uint8_t)(i * 131 + j * 7 + (j >> 12));
}

static size_t len_of(int i)
{
    return i < 0 ? BIG_LEN : VAL_LEN;
}

static void key_of(char *key, size_t cap, int i)
{
    if (i < 0)
        snprintf(key, cap, "k/big%d", -i);
    else
        snprintf(key, cap, "k/%05d", i);
}

static void put_value(struct keel *k, int i)
{
    char key[32];
    key_of(key, sizeof(key), i);
    size_t len = len_of(i);
    uint8_t *v = malloc(len);
    fill(v, len, i);
    int rv = keel_put(k, key, strlen(key), v, len, NULL, NULL);
    free(v);
    if (rv != 0)
        fail_msg("put %s: %s (%s)", key, keel_strerror(rv), keel_errmsg());
}

/* Member i serves key (serializable: its own state) with want, within timeout_ms. */
static bool wait_key(struct tc_cluster *c, int i, const char *key, const char *want, int timeout_ms)
{
    struct keel *k = open_client(c, i);
    struct keel_get_opts o = {.serializable = true};
    long long deadline = tc_now_ms() + timeout_ms;
    bool ok = false;
    do {
        Keel__RangeResponse *r = NULL;
        if (keel_get(k, key, strlen(key), &o, &r) == 0 && r->n_kvs == 1 &&
            r->kvs[0]->value.len == strlen(want) &&
            memcmp(r->kvs[0]->value.data, want, strlen(want)) == 0)
            ok = true;
        keel_free(r);
        if (!ok)
            tu_sleep_ms(50);
    } while (!ok && tc_now_ms() < deadline);
    keel_close(k);
    return ok;
}

/* Member i holds every value written (keys first..last, and the big ones down to -bigs), each
 * whole. */
static void assert_values_on(struct tc_cluster *c, int i, int first, int last, int bigs)
{
    struct keel *k = open_client(c, i);
    struct keel_get_opts o = {.serializable = true};
    uint8_t *want = malloc(BIG_LEN);
    for (int x = -bigs; x <= last; x++) {
        if (x >= 0 && x < first)
            continue;
        char key[32];
        key_of(key, sizeof(key), x);
        Keel__RangeResponse *r = NULL;
        int rv = keel_get(k, key, strlen(key), &o, &r);
        if (rv != 0)
            fail_msg("member %d: get %s: %s (%s)", i, key, keel_strerror(rv), keel_errmsg());
        size_t len = len_of(x);
        fill(want, len, x);
        if (r->n_kvs != 1 || r->kvs[0]->value.len != len ||
            memcmp(r->kvs[0]->value.data, want, len) != 0)
            fail_msg("member %d: %s is %s", i, key, r->n_kvs != 1 ? "missing" : "not as written");
        keel_free(r);
    }
    free(want);
    keel_close(k);
}

/* Bytes the files of member i's raft directory take on disk (preallocated segments count in
 * full); the listing goes to out. */
static uint64_t raft_dir_bytes(const struct tc_cluster *c, int i, char *out, size_t cap)
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/raft", c->m[i].dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    uint64_t total = 0;
    size_t off = 0;
    out[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[900];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        uint64_t bytes = (uint64_t)st.st_blocks * 512;
        if ((uint64_t)st.st_size > bytes)
            bytes = (uint64_t)st.st_size;
        total += bytes;
        if (off < cap)
            off += (size_t)snprintf(out + off, cap - off, " %s=%llu", e->d_name,
                                    (unsigned long long)bytes);
    }
    closedir(d);
    return total;
}

/*
 * What a member's raft directory may hold once writes have stopped and a last small write has
 * let every member check its threshold, with entries of at most `entry` bytes near the end:
 *  - the entries since the last snapshot: under --snapshot-bytes, or the check after the last
 *    entry would have taken one (+ one small write);
 *  - the entries kept behind it: the trailing bytes, or MIN_TRAILING entries if more;
 *  - raft_uv trims whole segments: the oldest one kept may begin well before the span kept (one
 *    segment); open segments are allocated in full, the one being written and up to two spare,
 *    and a third while the full one is being closed (four segments);
 *  - two snapshots (a token and its metadata each) and two metadata files: 64 KiB.
 */
static uint64_t log_bound(uint64_t snapshot_bytes, uint64_t trailing_bytes, uint64_t entry)
{
    uint64_t trailing =
        trailing_bytes > MIN_TRAILING * entry ? trailing_bytes : MIN_TRAILING * entry;
    return snapshot_bytes + entry + trailing + 5 * (uint64_t)SEGMENT + (64u << 10);
}

/* Write small keys until every running member's raft directory is within bound (each write lets
 * members check their threshold; a snapshot in progress when writes stopped may have left
 * more since it). Fails with the listings after timeout_ms. */
static void wait_bounded(struct tc_cluster *c, struct keel *k, uint64_t bound, int timeout_ms)
{
    long long deadline = tc_now_ms() + timeout_ms;
    char listing[4][2048];
    uint64_t bytes[4] = {0};
    for (int round = 0;; round++) {
        char val[32];
        snprintf(val, sizeof(val), "%d", round);
        assert_int_equal(keel_put(k, "tick", 4, val, strlen(val), NULL, NULL), 0);
        bool all = true;
        for (int i = 1; i <= c->n; i++) {
            if (c->m[i].pid == 0)
                continue;
            /* The member has applied the tick (so checked its threshold after it). */
            assert_true(wait_key(c, i, "tick", val, 10000));
            bytes[i] = raft_dir_bytes(c, i, listing[i], sizeof(listing[i]));
            all = all && bytes[i] <= bound;
        }
        if (all) {
            for (int i = 1; i <= c->n; i++)
                if (c->m[i].pid != 0)
                    printf("member %d: raft directory %llu bytes (bound %llu):%s\n", i,
                           (unsigned long long)bytes[i], (unsigned long long)bound, listing[i]);
            return;
        }
        if (tc_now_ms() > deadline) {
            for (int i = 1; i <= c->n; i++)
                if (c->m[i].pid != 0)
                    printf("member %d: raft directory %llu bytes:%s\n", i,
                           (unsigned long long)bytes[i], listing[i]);
            fail_msg("a raft directory stayed above %llu bytes", (unsigned long long)bound);
        }
        tu_sleep_ms(200);
    }
}

static const char *flags(char *buf, size_t cap, uint64_t snapshot_bytes, uint64_t trailing_bytes)
{
    snprintf(buf, cap,
             "--snapshot-bytes %llu --snapshot-trailing-bytes %llu --raft-segment-bytes %u",
             (unsigned long long)snapshot_bytes, (unsigned long long)trailing_bytes, SEGMENT);
    return buf;
}

static void log_bounded_in_bytes(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "raftlog");
    flags(c.extra, sizeof(c.extra), MIB, MIB);
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    int leader = tc_find_leader(&c, k, 0, 15000);
    assert_true(leader > 0);
    int behind = leader == 3 ? 2 : 3;

    /* Two entries larger than a segment, then 10 MiB with every member up. */
    put_value(k, -1);
    put_value(k, -2);
    for (int i = 0; i < 160; i++)
        put_value(k, i);
    /* 10 MiB more while a follower is down: far more than the 1 MiB kept behind a snapshot. */
    assert_int_equal(keel_put(k, "k/mark", 6, "up", 2, NULL, NULL), 0);
    assert_true(wait_key(&c, behind, "k/mark", "up", 10000));
    tc_stop(&c, behind, SIGKILL);
    for (int i = 160; i < 320; i++)
        put_value(k, i);
    assert_int_equal(keel_put(k, "k/last", 6, "done", 4, NULL, NULL), 0);

    /* It comes back through a checkpoint, with every key. */
    assert_int_equal(tc_start(&c, behind), 0);
    assert_true(wait_key(&c, behind, "k/last", "done", 60000));
    /* (the log line comes just after the new state is visible) */
    long long deadline = tc_now_ms() + 10000;
    while (!tc_log_contains(&c, behind, "checkpoint restored") && tc_now_ms() < deadline)
        tu_sleep_ms(50);
    assert_true(tc_log_contains(&c, behind, "checkpoint restored"));
    for (int i = 1; i <= 3; i++)
        assert_values_on(&c, i, 0, 319, 2);

    uint64_t bound = log_bound(MIB, MIB, VAL_LEN + ENTRY_SLOP);
    wait_bounded(&c, k, bound, 30000);

    /* A member restarted (the leader: the others elect another) loads its bounded log and has
     * every key; its log stays bounded as writes go on. */
    int st = tc_stop(&c, leader, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(tc_start(&c, leader), 0);
    for (int i = 320; i < 336; i++)
        put_value(k, i);
    assert_int_equal(keel_put(k, "k/last", 6, "again", 5, NULL, NULL), 0);
    assert_true(wait_key(&c, leader, "k/last", "again", 30000));
    assert_values_on(&c, leader, 0, 335, 2);
    wait_bounded(&c, k, bound, 30000);
    keel_close(k);
    tc_cluster_close(&c);
}

static void follower_catches_up_from_the_log(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "raftlogcu");
    flags(c.extra, sizeof(c.extra), MIB, 8 * MIB);
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    int leader = tc_find_leader(&c, k, 0, 15000);
    assert_true(leader > 0);
    int behind = leader == 3 ? 2 : 3;
    /* Enough for several snapshots before the follower goes down. */
    for (int i = 0; i < 64; i++)
        put_value(k, i);
    assert_int_equal(keel_put(k, "k/mark", 6, "up", 2, NULL, NULL), 0);
    /* Caught up when it goes down. The put needed only the other follower, so this one may be
     * behind by however long its disk took; the bound is a liveness bound, as below (a CI
     * machine sharing its disk with other tests once took more than 10 s here). */
    long long t0 = tc_now_ms();
    assert_true(wait_key(&c, behind, "k/mark", "up", 60000));
    printf("the follower applied k/mark %lld ms after it was acknowledged\n", tc_now_ms() - t0);
    tc_stop(&c, behind, SIGKILL);
    /* 4 MiB while it is down: snapshots go on, but keep 8 MiB behind them. */
    for (int i = 64; i < 128; i++)
        put_value(k, i);
    assert_int_equal(keel_put(k, "k/last", 6, "done", 4, NULL, NULL), 0);
    assert_int_equal(tc_start(&c, behind), 0);
    assert_true(wait_key(&c, behind, "k/last", "done", 60000));
    assert_false(tc_log_contains(&c, behind, "checkpoint restored"));
    assert_values_on(&c, behind, 0, 127, 0);
    wait_bounded(&c, k, log_bound(MIB, 8 * MIB, VAL_LEN + ENTRY_SLOP), 30000);
    keel_close(k);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest bound[] = {cmocka_unit_test(log_bounded_in_bytes)};
    const struct CMUnitTest catchup[] = {cmocka_unit_test(follower_catches_up_from_the_log)};
    const struct tu_group groups[] = {TU_GROUP(bound), TU_GROUP(catchup)};
    return tu_run_groups("test_raftlog", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
