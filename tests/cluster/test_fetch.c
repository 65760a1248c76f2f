/*
 * The checkpoint fetch (server/fetch.h) against a real keeld's peer port: the side a lagging
 * follower runs on its storage writer, as member m2 of a two-member cluster asking m1.
 *
 *   - a handshake of another cluster, of an id that is no member, or of a member from another
 *     member's host is refused by m1 before anything is copied: no byte arrives, m1 logs why,
 *     and m1 never starts a checkpoint stream for it (a member of another cluster used to be
 *     taken at its word, issue 9 hole 14; a non-member must not get a member's state);
 *   - the same fetch, as what m2 is, is served without any auth token, and the copy arrives
 *     straight into the restoring store's incoming directory and swaps in whole (hole 7: it used
 *     to be staged in /tmp and copied a second time);
 *   - a fetch connection asks for nothing but a checkpoint: any other request is refused.
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
#include <poll.h>
#include <sys/socket.h>
#include <errno.h>

#include <cmocka.h>

#include "cluster.h"
#include "config.h"
#include "err.h"
#include "fetch.h"
#include "frame.h"
#include "handshake.h"
#include "snapread.h"
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

/* A fetch as h says, bound to bind: refused, with nothing written. */
static void refused(struct tc_cluster *c, struct keel_store *s, const char *bind,
                    const struct keel_handshake *h, const char *logged)
{
    int fd = -1;
    char err[512] = "";
    assert_int_equal(keel_store_restore_begin(s, &fd), 0);
    int rv = keel_fetch_checkpoint(c->m[1].peer, bind, NULL, h, fd, 10000, err, sizeof(err));
    if (rv == 0)
        fail_msg("a fetch as %016llx from %s was served", (unsigned long long)h->id, bind);
    assert_int_equal(lseek(fd, 0, SEEK_END), 0);
    keel_store_restore_abort(s, fd);
    bool seen = false;
    for (long long end = tc_now_ms() + 5000; !seen && tc_now_ms() < end; tu_sleep_ms(50))
        seen = tc_log_contains(c, 1, logged);
    if (!seen)
        fail_msg("m1 did not log '%s' (the fetch said: %s)", logged, err);
}

/* Whether fd is closed by the other end within ms; *got counts what arrived before. */
static bool closed_within(int fd, int ms, size_t *got)
{
    *got = 0;
    for (long long end = tc_now_ms() + ms; tc_now_ms() < end;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1)
            continue;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return true;
        if (n > 0)
            *got += (size_t)n;
    }
    return false;
}

/* A raw connection with a fetch handshake claiming a made-up member, then a Hello and a
 * Snapshot request: closed with not one byte sent back. */
static void raw_impostor_gets_nothing(struct tc_cluster *c, const struct keel_handshake *good)
{
    struct keel_handshake h = *good;
    h.kind = KEEL_HANDSHAKE_FETCH;
    h.id = 0x1234567;
    h.name = "intruder";
    uint8_t buf[KEEL_HANDSHAKE_LEN + 256];
    keel_handshake_encode(&h, buf);
    size_t len = KEEL_HANDSHAKE_LEN;
    Keel__Hello hello = KEEL__HELLO__INIT;
    hello.protocol_version = 1;
    hello.client_name = "intruder";
    len += keel_frame_pack(&hello.base, buf + len);
    Keel__SnapshotRequest sr = KEEL__SNAPSHOT_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = 1;
    req.body_case = KEEL__REQUEST__BODY_SNAPSHOT;
    req.snapshot = &sr;
    len += keel_frame_pack(&req.base, buf + len);
    assert_true(len <= sizeof(buf));
    int fd = keel_snapread_dial(c->m[1].peer, "127.0.2.1", 10000);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
    size_t got = 0;
    assert_true(closed_within(fd, 10000, &got));
    assert_int_equal(got, 0);
    close(fd);
}

/* As m2 itself, a fetch connection that asks for a write: refused as the connection's rule,
 * never applied (no auth checks this path, so nothing else may pass it). */
static void member_may_only_fetch(struct tc_cluster *c, const struct keel_handshake *m2)
{
    uint8_t buf[KEEL_HANDSHAKE_LEN + 256];
    struct keel_handshake h = *m2;
    h.kind = KEEL_HANDSHAKE_FETCH;
    keel_handshake_encode(&h, buf);
    size_t len = KEEL_HANDSHAKE_LEN;
    Keel__Hello hello = KEEL__HELLO__INIT;
    hello.protocol_version = 1;
    hello.client_name = "m2";
    len += keel_frame_pack(&hello.base, buf + len);
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key = (ProtobufCBinaryData){8, (uint8_t *)"intruded"};
    put.value = (ProtobufCBinaryData){1, (uint8_t *)"x"};
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = 7;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    len += keel_frame_pack(&req.base, buf + len);
    int fd = keel_snapread_dial(c->m[1].peer, "127.0.2.1", 10000);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
    /* The answers: the HelloResponse, then the refusal, whose message is in its bytes. */
    static const char want[] = "may ask for a checkpoint only";
    char in[8192];
    size_t got = 0;
    bool found = false;
    for (long long end = tc_now_ms() + 10000; !found && tc_now_ms() < end && got < sizeof(in);) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1)
            continue;
        ssize_t n = recv(fd, in + got, sizeof(in) - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        found = memmem(in, got, want, sizeof(want) - 1) != NULL;
    }
    close(fd);
    assert_true(found);
    char eps[64];
    tc_endpoints(c, 1, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 10000};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    Keel__RangeResponse *r = NULL;
    assert_int_equal(keel_get(k, "intruded", 8, NULL, &r), 0);
    assert_int_equal(r->n_kvs, 0);
    keel_free(r);
    keel_close(k);
}

static void fetch_checks_the_member(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 2, "fetch");
    tc_start_all(&c);
    wait_ready(&c);
    uint64_t id = keel_hash64(c.initial, strlen(c.initial)); /* keeld's cluster id */
    /* What m2 says of itself (its --initial-cluster entry is its peer address). */
    struct keel_handshake m2 = {.cluster_id = id,
                                .id = keel_hash64("m2", 2),
                                .peer = c.m[2].peer,
                                .client = c.m[2].client,
                                .name = "m2",
                                .zone = "z2"};

    char *dir = tu_mkdtemp("fetch_into");
    struct keel_store *s = tu_store_open(dir, 0);

    /* Another cluster's member, a made-up member, a member from another's host: refused before
     * a byte is copied, each logged with why. */
    struct keel_handshake h = m2;
    h.cluster_id = id ^ 1;
    refused(&c, s, "127.0.2.1", &h, "from cluster");
    h = m2;
    h.id = 0x1234567;
    refused(&c, s, "127.0.2.1", &h, "no member of this cluster");
    refused(&c, s, "127.0.3.1", &m2, "from another host");
    raw_impostor_gets_nothing(&c, &m2);
    assert_false(tc_log_contains(&c, 1, "streaming a checkpoint"));
    member_may_only_fetch(&c, &m2);

    /* m2 itself: the copy lands in place and swaps in (no token: membership is the credential).
     * A checkpoint is the member's committed state: writes it acknowledged within its last
     * commit interval may not be in it yet (they are in its raft log), so fetch again until
     * they are. */
    struct keel_arena a;
    keel_arena_init(&a, 0);
    int64_t count = 0;
    char err[512] = "";
    int fd = -1;
    long long deadline = tc_now_ms() + 10000;
    for (int tries = 0; count < 50 && tc_now_ms() < deadline; tries++) {
        if (tries > 0)
            tu_sleep_ms(50);
        assert_int_equal(keel_store_restore_begin(s, &fd), 0);
        err[0] = '\0';
        int rv =
            keel_fetch_checkpoint(c.m[1].peer, "127.0.2.1", NULL, &m2, fd, 10000, err, sizeof(err));
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
    assert_true(tc_log_contains(&c, 1, "checkpoint fetch from member"));

    keel_store_close(s);
    tu_rmdir(dir);
    free(dir);
    tc_cluster_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(fetch_checks_the_member)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
