/*
 * The checkpoint fetch (server/fetch.h) against a real keeld: the client side a lagging
 * follower runs on its storage writer.
 *
 *   - a member of another cluster is refused at the handshake, before a byte of its state is
 *     written (issue 9, hole 14: the fetch used to take a copy from whoever answered);
 *   - from a member of this cluster the copy arrives straight into the restoring store's
 *     incoming directory and swaps in whole (hole 7: it used to be staged in /tmp and copied a
 *     second time).
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

#include "cluster.h"
#include "config.h"
#include "err.h"
#include "fetch.h"
#include "testutil.h"
#include "keel/keel.h"

static void wait_ready(struct tc_cluster *c)
{
    char eps[512];
    tc_endpoints(c, 1, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 10000, .dial_timeout_ms = 500};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    long long deadline = tc_now_ms() + 15000;
    int rc = -1;
    while (tc_now_ms() < deadline) {
        char key[32];
        for (int i = 0; i < 50; i++) {
            snprintf(key, sizeof(key), "fetched/%02d", i);
            rc = keel_put(k, key, strlen(key), "v", 1, NULL, NULL);
            if (rc != 0)
                break;
        }
        if (rc == 0)
            break;
        tu_sleep_ms(100);
    }
    assert_int_equal(rc, 0);
    keel_close(k);
}

static void fetch_checks_the_cluster(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 1, "fetch");
    tc_start_all(&c);
    wait_ready(&c);
    uint64_t id = keel_hash64(c.initial, strlen(c.initial)); /* keeld's cluster id */

    char *dir = tu_mkdtemp("fetch_into");
    struct keel_store *s = tu_store_open(dir, 0);
    char err[256] = "";

    /* Another cluster's member: refused, nothing written. */
    int fd = -1;
    assert_int_equal(keel_store_restore_begin(s, &fd), 0);
    int rv = keel_fetch_checkpoint(c.m[1].client, "127.0.0.1", id ^ 1, fd, 10000, err, sizeof(err));
    assert_int_not_equal(rv, 0);
    if (strstr(err, "belongs to cluster") == NULL)
        fail_msg("unexpected refusal: %s", err);
    assert_int_equal(lseek(fd, 0, SEEK_END), 0);
    keel_store_restore_abort(s, fd);

    /* This cluster's member: the copy lands in place and swaps in. A checkpoint is the
     * member's committed state: writes it acknowledged within its last commit interval may
     * not be in it yet (they are in its raft log), so fetch again until they are. */
    struct keel_arena a;
    keel_arena_init(&a, 0);
    int64_t count = 0;
    long long deadline = tc_now_ms() + 10000;
    for (int tries = 0; count < 50 && tc_now_ms() < deadline; tries++) {
        if (tries > 0)
            tu_sleep_ms(50);
        assert_int_equal(keel_store_restore_begin(s, &fd), 0);
        err[0] = '\0';
        rv = keel_fetch_checkpoint(c.m[1].client, "127.0.0.1", id, fd, 10000, err, sizeof(err));
        if (rv != 0)
            fail_msg("fetch: %s", err);
        assert_int_equal(keel_store_restore_finish(s, fd, 0), 0);
        Keel__RangeResponse *rr = NULL;
        assert_int_equal(tu_range(s, &a, "fetched/", "fetched0", 0, &rr), 0);
        assert_true(rr->count >= count); /* each copy at least as new as the one before */
        count = rr->count;
        keel_arena_reset(&a);
    }
    assert_int_equal(count, 50);
    keel_arena_close(&a);

    keel_store_close(s);
    tu_rmdir(dir);
    free(dir);
    tc_cluster_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(fetch_checks_the_cluster)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
