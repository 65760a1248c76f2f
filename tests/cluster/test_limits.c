/*
 * What one request may cost a cluster, through real keeld processes: `test_limits <group>`.
 *
 * txn_memory (issue 9, hole 1): on 3 members holding 40,001 keys of 1 KiB (over 40 MB), one Txn
 * of 100 keys-only ranges over every key used to raise every member's memory by hundreds of MB
 * at the same log index (and again on every replay). Now the txn is priced before it is applied
 * and refused with REPLY_TOO_LARGE; every member's peak RSS stays within TXN_RSS_BOUND of what
 * it was, and the cluster keeps serving. A plain range of every value is refused the same way,
 * at once, not after 30 retries that rebuild it (hole 15).
 *
 * The session limits (holes 10 and 8), through a raw socket that writes many requests in one
 * write. What a member has in flight shows in its raft log: the writes of one entry were all in
 * flight at once (none is answered before its entry applies), so K writes with at most M in
 * flight take at least K / M entries. Past these limits a client gets no error: the member reads
 * it more slowly. A bystander (tests/lib/bystander.h) writes and reads its own key on another
 * connection throughout, and must see no error either.
 *   inflight:       --max-inflight 4, 200 puts in one write: at least 50 entries (1 before).
 *   inflight_total: --max-inflight-total 8, two connections of 100 puts: at least 25 entries.
 *   apply_backlog:  --max-apply-backlog-bytes 1 MiB, 20 puts of 600 KiB in one stream: no more
 *                   than two taken before they are applied, so at least 10 entries.
 *   output_memory:  --max-output-bytes 16 MiB, 6 clients that read nothing each ask 40 times for
 *                   a 1.25 MiB value (300 MiB of answers): the member's peak RSS rises by less
 *                   than OUTPUT_RSS_BOUND_KB, the clients that read nothing are cut off, and a
 *                   client that reads is served meanwhile.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bystander.h"
#include "cluster.h"
#include "err.h"
#include "frame.h"
#include "rawconn.h"
#include "testutil.h"
#include "keel/keel.h"

#define NKEYS     40001
#define VAL_BYTES 1024
#define TXN_PUTS  128
/* What a member's peak RSS may rise while it refuses the txn, and then sends a 41 MB range in
 * pieces. Without pricing the txn it rose by 550-650 MB (measured in release builds); an ASan
 * build adds its own bookkeeping. */
#define TXN_RSS_BOUND_KB (64 * 1024)
/* What a member's peak RSS may rise while clients that read nothing ask for 300 MiB of answers:
 * 16 MiB of queued output, a reply being built, the allocator's and ASan's slack. Without the
 * global output bound it rose by about the 300 MiB less what the kernel's socket buffers took. */
#define OUTPUT_RSS_BOUND_KB (64 * 1024)
#define BIG_VALUE           (1280 * 1024)

static struct keel *open_client(const struct tc_cluster *c, int member)
{
    char eps[512];
    tc_endpoints(c, member, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 20000, .dial_timeout_ms = 500};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

static Keel__RequestOp *new_op(void)
{
    Keel__RequestOp *op = calloc(1, sizeof(*op));
    assert_non_null(op);
    keel__request_op__init(op);
    return op;
}

/* NKEYS keys "key%06d" of VAL_BYTES each, TXN_PUTS per txn. */
static void load(struct keel *k)
{
    static char val[VAL_BYTES];
    memset(val, 'v', sizeof(val));
    char keys[TXN_PUTS][16];
    Keel__PutRequest puts[TXN_PUTS];
    Keel__RequestOp ops[TXN_PUTS], *opp[TXN_PUTS];
    for (int base = 0; base < NKEYS; base += TXN_PUTS) {
        Keel__TxnRequest t = KEEL__TXN_REQUEST__INIT;
        int n = NKEYS - base < TXN_PUTS ? NKEYS - base : TXN_PUTS;
        for (int i = 0; i < n; i++) {
            snprintf(keys[i], sizeof(keys[i]), "key%06d", base + i);
            keel__put_request__init(&puts[i]);
            puts[i].key.data = (uint8_t *)keys[i];
            puts[i].key.len = strlen(keys[i]);
            puts[i].value.data = (uint8_t *)val;
            puts[i].value.len = sizeof(val);
            keel__request_op__init(&ops[i]);
            ops[i].request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
            ops[i].request_put = &puts[i];
            opp[i] = &ops[i];
        }
        t.n_success = (size_t)n;
        t.success = opp;
        Keel__TxnResponse *out = NULL;
        int rc = keel_txn(k, &t, &out);
        if (rc != 0)
            fail_msg("load at key %d: %s", base, keel_errmsg());
        keel_free(out);
    }
}

static void txn_memory(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "limits");
    /* 1 GiB on every member: the first leader writes it into the log (hole 4). */
    snprintf(c.extra, sizeof(c.extra), "--quota-bytes 1073741824");
    tc_start_all(&c);
    struct keel *k = open_client(&c, 0);
    /* Members come up and elect a leader: the first write waits for that, bounded. */
    long long ready = tc_now_ms() + 20000;
    while (keel_put(k, "ready", 5, "1", 1, NULL, NULL) != 0 && tc_now_ms() < ready)
        tu_sleep_ms(100);
    load(k);

    /* Every member has applied everything: a serializable count from each. */
    for (int i = 1; i <= 3; i++) {
        struct keel *ki = open_client(&c, i);
        long long deadline = tc_now_ms() + 20000;
        int64_t count = 0;
        while (tc_now_ms() < deadline) {
            struct keel_get_opts go = {
                .range_end = "\0", .range_end_len = 1, .count_only = true, .serializable = true};
            Keel__RangeResponse *rr = NULL;
            if (keel_get(ki, "", 0, &go, &rr) == 0) {
                count = rr->count;
                keel_free(rr);
                if (count == NKEYS + 1)
                    break;
            }
            tu_sleep_ms(100);
        }
        assert_int_equal(count, NKEYS + 1); /* and "ready" */
        keel_close(ki);
    }

    /* The quota is cluster state: every member reports the one the log set. */
    for (int i = 1; i <= 3; i++) {
        Keel__StatusResponse *st = NULL;
        long long deadline = tc_now_ms() + 10000;
        int64_t quota = 0;
        while (quota != 1073741824 && tc_now_ms() < deadline) {
            if (keel_status(k, c.m[i].client, &st) == 0) {
                quota = st->quotabytes;
                keel_free(st);
            }
            if (quota != 1073741824)
                tu_sleep_ms(50);
        }
        assert_int_equal(quota, 1073741824);
    }

    long before[4];
    for (int i = 1; i <= 3; i++) {
        before[i] = tc_status_kb(c.m[i].pid, "VmRSS");
        tc_reset_peak(c.m[i].pid);
    }

    /* The Txn of hole 1: a put and 100 keys-only ranges over every key. */
    Keel__TxnRequest t = KEEL__TXN_REQUEST__INIT;
    Keel__RequestOp *ops[101];
    Keel__RangeRequest ranges[100];
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)"marker";
    put.key.len = 6;
    ops[0] = new_op();
    ops[0]->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    ops[0]->request_put = &put;
    for (int i = 0; i < 100; i++) {
        keel__range_request__init(&ranges[i]);
        ranges[i].range_end.data = (uint8_t *)"\0";
        ranges[i].range_end.len = 1;
        ranges[i].keys_only = true;
        ops[i + 1] = new_op();
        ops[i + 1]->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
        ops[i + 1]->request_range = &ranges[i];
    }
    t.n_success = 101;
    t.success = ops;
    Keel__TxnResponse *out = NULL;
    long long t0 = tc_now_ms();
    int rc = keel_txn(k, &t, &out);
    long long txn_ms = tc_now_ms() - t0;
    assert_int_equal(rc, KEEL_EREPLYTOOLARGE);
    print_message("txn refused in %lld ms: %s\n", txn_ms, keel_errmsg());
    assert_non_null(strstr(keel_errmsg(), "2031616-byte"));
    for (int i = 0; i < 101; i++)
        free(ops[i]);

    for (int i = 1; i <= 3; i++) {
        long peak = tc_status_kb(c.m[i].pid, "VmHWM");
        print_message("member %d: RSS %ld kB before the txn, peak %ld kB (+%ld kB; bound %d kB)\n",
                      i, before[i], peak, peak - before[i], TXN_RSS_BOUND_KB);
        assert_true(peak - before[i] <= TXN_RSS_BOUND_KB);
        before[i] = tc_status_kb(c.m[i].pid, "VmRSS");
        tc_reset_peak(c.m[i].pid);
    }
    /* A plain range of every value (41 MB): answered whole, in pieces, under the same bound: a
     * member holds a page and its queued output, not the answer. */
    t0 = tc_now_ms();
    struct keel_get_opts all = {.range_end = "\0", .range_end_len = 1};
    Keel__RangeResponse *rr = NULL;
    assert_int_equal(keel_get(k, "", 0, &all, &rr), 0);
    long long range_ms = tc_now_ms() - t0;
    assert_int_equal(rr->n_kvs, NKEYS + 1);
    assert_int_equal(rr->count, NKEYS + 1);
    assert_int_equal(rr->kvs[NKEYS - 1]->value.len, VAL_BYTES);
    keel_free(rr);
    print_message("range of every value (%d key-values) answered in %lld ms\n", NKEYS + 1,
                  range_ms);

    for (int i = 1; i <= 3; i++) {
        long peak = tc_status_kb(c.m[i].pid, "VmHWM");
        print_message("member %d: RSS %ld kB before the range, peak %ld kB (+%ld kB; bound %d "
                      "kB)\n",
                      i, before[i], peak, peak - before[i], TXN_RSS_BOUND_KB);
        assert_true(peak - before[i] <= TXN_RSS_BOUND_KB);
    }

    /* Nothing of the txn was written, and the cluster serves: a write, then a linearizable
     * read and a serializable read on every member. */
    Keel__RangeResponse *g = NULL;
    assert_int_equal(keel_get(k, "marker", 6, NULL, &g), 0);
    assert_int_equal(g->n_kvs, 0);
    keel_free(g);
    assert_int_equal(keel_put(k, "after", 5, "ok", 2, NULL, NULL), 0);
    assert_int_equal(keel_get(k, "after", 5, NULL, &g), 0);
    assert_int_equal(g->n_kvs, 1);
    keel_free(g);
    for (int i = 1; i <= 3; i++) {
        struct keel *ki = open_client(&c, i);
        struct keel_get_opts so = {.serializable = true};
        long long deadline = tc_now_ms() + 10000;
        size_t n = 0;
        while (n == 0 && tc_now_ms() < deadline) {
            g = NULL;
            if (keel_get(ki, "after", 5, &so, &g) == 0) {
                n = g->n_kvs;
                keel_free(g);
            }
            if (n == 0)
                tu_sleep_ms(50);
        }
        assert_int_equal(n, 1);
        keel_close(ki);
    }
    keel_close(k);
    tc_cluster_close(&c);
}

/* The bystander went on and none of its rounds failed. */
static void bystander_unharmed(struct tb_bystander *b)
{
    assert_true(tb_progress(b, 3, 20000));
    long rounds = tb_stop(b);
    print_message("bystander: %ld rounds, none failed\n", rounds);
    assert_true(rounds > 0);
}

/* Send k puts on each of the fds (all written before any answer is read), read every answer:
 * each id once, none an error. The values are val_len bytes. */
static void pipelined_puts(const int *fds, int n_fds, int k, size_t val_len)
{
    uint8_t *val = malloc(val_len + 1);
    assert_non_null(val);
    memset(val, 'v', val_len);
    for (int c = 0; c < n_fds; c++) {
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0;
        char key[32];
        for (int i = 0; i < k; i++) {
            snprintf(key, sizeof(key), "c%d-%04d", c, i);
            raw_append_put(&buf, &len, &cap, (uint64_t)i + 1, key, val, val_len);
        }
        raw_send(fds[c], buf, len);
        free(buf);
    }
    for (int c = 0; c < n_fds; c++) {
        bool *seen = calloc((size_t)k + 1, sizeof(bool));
        assert_non_null(seen);
        for (int i = 0; i < k; i++) {
            Keel__Response *r = raw_response(fds[c]);
            assert_true(r->id >= 1 && r->id <= (uint64_t)k);
            assert_false(seen[r->id]);
            seen[r->id] = true;
            if (r->error != NULL)
                fail_msg("put %llu: %s", (unsigned long long)r->id, r->error->message);
            keel__response__free_unpacked(r, NULL);
        }
        free(seen);
    }
    free(val);
}

static void inflight(void **state)
{
    (void)state;
    struct tc_cluster c;
    int fd = raw_one_member(&c, "limits-inflight", "--max-inflight 4");
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    uint64_t before = raw_raft_index(fd, 1);
    pipelined_puts(&fd, 1, 200, 1);
    uint64_t entries = raw_raft_index(fd, 2) - before;
    print_message("200 puts in one write, --max-inflight 4: %llu raft entries\n",
                  (unsigned long long)entries);
    assert_true(entries >= 200 / 4);
    bystander_unharmed(b);
    close(fd);
    tc_cluster_close(&c);
}

static void inflight_total(void **state)
{
    (void)state;
    struct tc_cluster c;
    int fds[2];
    fds[0] = raw_one_member(&c, "limits-inflight-total", "--max-inflight-total 8");
    fds[1] = raw_open(c.m[1].client, 0);
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    uint64_t before = raw_raft_index(fds[0], 1);
    pipelined_puts(fds, 2, 100, 1);
    uint64_t entries = raw_raft_index(fds[0], 2) - before;
    print_message("2 x 100 puts, --max-inflight-total 8: %llu raft entries\n",
                  (unsigned long long)entries);
    assert_true(entries >= 200 / 8);
    bystander_unharmed(b);
    close(fds[0]);
    close(fds[1]);
    tc_cluster_close(&c);
}

static void apply_backlog(void **state)
{
    (void)state;
    struct tc_cluster c;
    int fd = raw_one_member(&c, "limits-apply-backlog", "--max-apply-backlog-bytes 1048576");
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    uint64_t before = raw_raft_index(fd, 1);
    pipelined_puts(&fd, 1, 20, 600 * 1024);
    uint64_t entries = raw_raft_index(fd, 2) - before;
    print_message("20 puts of 600 KiB, --max-apply-backlog-bytes 1 MiB: %llu raft entries\n",
                  (unsigned long long)entries);
    assert_true(entries >= 20 / 2);
    bystander_unharmed(b);
    assert_int_equal(raw_put(fd, 3, "after", (const uint8_t *)"ok", 2), 0);
    close(fd);
    tc_cluster_close(&c);
}

static void output_memory(void **state)
{
    (void)state;
    /* ASan keeps freed memory in a quarantine (256 MiB by default) that counts as RSS; bound it
     * so RSS shows what keeld holds. */
    char *asan = tu_asan_options_add("quarantine_size_mb=8");
    struct tc_cluster c;
    int reader = raw_one_member(&c, "limits-output", "--max-output-bytes 16777216");
    uint8_t *val = malloc(BIG_VALUE);
    assert_non_null(val);
    memset(val, 'b', BIG_VALUE);
    assert_int_equal(raw_put(reader, 1, "big", val, BIG_VALUE), 0);
    free(val);

    pid_t pid = c.m[1].pid;
    long before = tc_status_kb(pid, "VmRSS");
    tc_reset_peak(pid);

    /* Six clients that read nothing, forty serializable reads of the value each. */
    int idle[6];
    Keel__RangeRequest rr = KEEL__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)"big";
    rr.key.len = 3;
    rr.serializable = true;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &rr;
    for (int i = 0; i < 6; i++) {
        idle[i] = raw_open(c.m[1].client, 4096);
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0;
        for (int j = 0; j < 40; j++) {
            req.id = (uint64_t)j + 1;
            raw_append(&buf, &len, &cap, &req);
        }
        raw_send(idle[i], buf, len);
        free(buf);
    }

    /* Meanwhile a client that reads is served: writes, and reads of the same value. */
    for (int i = 0; i < 10; i++) {
        char key[16];
        snprintf(key, sizeof(key), "r%d", i);
        assert_int_equal(raw_put(reader, 10 + (uint64_t)i, key, (const uint8_t *)"x", 1), 0);
        req.id = 100 + (uint64_t)i;
        Keel__Response *r = raw_call(reader, &req);
        assert_int_equal(r->id, 100 + (uint64_t)i);
        assert_null(r->error);
        assert_int_equal(r->range->n_kvs, 1);
        assert_int_equal(r->range->kvs[0]->value.len, BIG_VALUE);
        keel__response__free_unpacked(r, NULL);
        tu_sleep_ms(100);
    }

    long peak = tc_status_kb(pid, "VmHWM");
    print_message("RSS %ld kB before, peak %ld kB (+%ld kB; bound %d kB)\n", before, peak,
                  peak - before, OUTPUT_RSS_BOUND_KB);
    assert_true(peak - before <= OUTPUT_RSS_BOUND_KB);
    /* What a client that reads nothing gets: its connection closed. */
    assert_true(tc_log_contains(&c, 1, "cut off"));

    for (int i = 0; i < 6; i++)
        close(idle[i]);
    assert_int_equal(raw_put(reader, 200, "after", (const uint8_t *)"ok", 2), 0);
    close(reader);
    tc_cluster_close(&c);
    tu_asan_options_restore(asan);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest txn[] = {cmocka_unit_test(txn_memory)};
    const struct CMUnitTest inflight_t[] = {cmocka_unit_test(inflight)};
    const struct CMUnitTest inflight_total_t[] = {cmocka_unit_test(inflight_total)};
    const struct CMUnitTest apply_backlog_t[] = {cmocka_unit_test(apply_backlog)};
    const struct CMUnitTest output_memory_t[] = {cmocka_unit_test(output_memory)};
    const struct tu_group groups[] = {{"txn_memory", txn, 1},
                                      {"inflight", inflight_t, 1},
                                      {"inflight_total", inflight_total_t, 1},
                                      {"apply_backlog", apply_backlog_t, 1},
                                      {"output_memory", output_memory_t, 1}};
    return tu_run_groups("test_limits", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
