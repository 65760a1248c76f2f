/*
 * Members and clients addressed by DNS name, as in a Kubernetes StatefulSet
 * (keel-0.keel-peer...:2380): `test_hostnames <group>`.
 *
 * names         --initial-cluster m1=localhost:P1,...: the members find each other by name (each
 *               connect resolves it, each incoming handshake is checked against its addresses),
 *               libkeel and keelctl dial --endpoints localhost:PORT, a member killed and
 *               restarted rejoins and catches up, and a handshake claiming a member from an
 *               address its name does not resolve to is refused.
 * join          a member added by name (keelctl member add --peer-urls http://localhost:P)
 *               joins, and the others reach it by that name.
 * unresolvable  one member's address is nosuch.invalid:P (RFC 6761: never resolves): the other
 *               two form a quorum and serve, stay up, and log the name and the member.
 *
 * "localhost" must resolve to 127.0.0.1 (IPv4; keel asks for IPv4 only): else the test skips.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "config.h"
#include "handshake.h"
#include "keel/keel.h"
#include "testutil.h"

#define NAME "localhost"
#define IP   "127.0.0.1"

#ifndef KEELCTL_PATH
#error "KEELCTL_PATH must name the keelctl binary"
#endif

/* Whether name's IPv4 addresses include ip, as keeld and libkeel will resolve it. */
static bool resolves_to(const char *name, const char *ip)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(name, NULL, &hints, &res) != 0)
        return false;
    bool found = false;
    for (struct addrinfo *a = res; a && !found; a = a->ai_next) {
        char buf[INET_ADDRSTRLEN];
        const struct sockaddr_in *sin = (const struct sockaddr_in *)a->ai_addr;
        found = inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)) && strcmp(buf, ip) == 0;
    }
    freeaddrinfo(res);
    return found;
}

/* "localhost:PORT" for member i's client address (or every member's, i == 0). */
static void named_endpoints(const struct tc_cluster *c, int i, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int j = 1; j <= c->n && off < len; j++)
        if (i == 0 || j == i)
            off += (size_t)snprintf(buf + off, len - off, "%s%s:%s", off ? "," : "", NAME,
                                    strrchr(c->m[j].client, ':') + 1);
}

static struct keel *open_named(const struct tc_cluster *c, int i, int max_retries)
{
    char eps[256];
    named_endpoints(c, i, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps,
                             .request_timeout_ms = 4000,
                             .dial_timeout_ms = 1000,
                             .max_retries = max_retries};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

/* A put that the cluster may need a few tries to take (an election in progress); bounded. */
static void put_str(struct keel *k, const char *key, const char *val)
{
    int rv = -1;
    for (int tries = 0; tries < 50 && rv != 0; tries++) {
        rv = keel_put(k, key, strlen(key), val, strlen(val), NULL, NULL);
        if (rv != 0)
            tu_sleep_ms(100);
    }
    if (rv != 0)
        fail_msg("put %s: %s", key, keel_strerror(rv));
}

/* Whether member i's own store (a serializable read there) shows key = val within timeout_ms. */
static bool wait_value(const struct tc_cluster *c, int i, const char *key, const char *val,
                       int timeout_ms)
{
    struct keel *k = open_named(c, i, -1);
    struct keel_get_opts go = {.serializable = true};
    bool ok = false;
    for (long long end = tc_now_ms() + timeout_ms; !ok && tc_now_ms() < end;) {
        Keel__RangeResponse *r = NULL;
        if (keel_get(k, key, strlen(key), &go, &r) == 0)
            ok = r->n_kvs == 1 && r->kvs[0]->value.len == strlen(val) &&
                 memcmp(r->kvs[0]->value.data, val, strlen(val)) == 0;
        keel_free(r);
        if (!ok)
            tu_sleep_ms(50);
    }
    keel_close(k);
    return ok;
}

static bool any_log_contains(const struct tc_cluster *c, const char *needle)
{
    for (int i = 1; i <= c->n; i++)
        if (tc_log_contains(c, i, needle))
            return true;
    return false;
}

/* A connection to addr bound to the source address src (bounded retries); -1 when none. */
static int dial_from(const char *src, const char *addr)
{
    struct sockaddr_in dst = {.sin_family = AF_INET}, from = {.sin_family = AF_INET};
    char host[32];
    snprintf(host, sizeof(host), "%s", addr);
    *strrchr(host, ':') = '\0';
    dst.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    inet_pton(AF_INET, host, &dst.sin_addr);
    inet_pton(AF_INET, src, &from.sin_addr);
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && bind(fd, (struct sockaddr *)&from, sizeof(from)) == 0 &&
            connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == 0)
            return fd;
        if (fd >= 0)
            close(fd);
        tu_sleep_ms(50);
    }
    return -1;
}

/* Whether the member closes fd within ms (EOF or an error), dropping what it sends first. */
static bool closed_within(int fd, int ms)
{
    for (long long end = tc_now_ms() + ms; tc_now_ms() < end;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1)
            continue;
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return true;
    }
    return false;
}

/* A handshake claiming member 2 (by its name address) from 127.0.0.2, which "localhost" does not
 * resolve to: member 1 resolves the name, refuses it and says why. */
static void impostor_refused(const struct tc_cluster *c)
{
    char peer2[64];
    snprintf(peer2, sizeof(peer2), "%s:%s", NAME, strrchr(c->m[2].peer, ':') + 1);
    struct keel_handshake h = {.cluster_id = keel_hash64(c->initial, strlen(c->initial)),
                               .id = keel_hash64("m2", 2),
                               .peer = peer2,
                               .client = "127.0.0.2:1",
                               .name = "m2",
                               .zone = "z2"};
    uint8_t buf[KEEL_HANDSHAKE_LEN];
    keel_handshake_encode(&h, buf);
    int fd = dial_from("127.0.0.2", c->m[1].peer);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, buf, sizeof(buf), MSG_NOSIGNAL), (ssize_t)sizeof(buf));
    assert_true(closed_within(fd, 10000));
    close(fd);
    bool logged = false;
    for (long long end = tc_now_ms() + 5000; !logged && tc_now_ms() < end; tu_sleep_ms(50))
        logged = tc_log_contains(c, 1, "resolves to other addresses");
    assert_true(logged);
}

static void members_by_name(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init_named(&c, 3, "names", IP, NAME);
    assert_non_null(strstr(c.initial, "m1=" NAME ":"));
    tc_start_all(&c);
    struct keel *all = open_named(&c, 0, 0);
    /* Every member learns the leader over links dialled by name. */
    put_str(all, "k/first", "v1");
    for (int i = 1; i <= 3; i++)
        assert_true(wait_value(&c, i, "k/first", "v1", 10000));

    /* keelctl dials a member by name too. */
    char eps[256], out[512];
    named_endpoints(&c, 2, eps, sizeof(eps));
    assert_int_equal(tc_keelctl(&c, KEELCTL_PATH, out, sizeof(out), "--endpoints", eps, "put",
                                "k/ctl", "viactl", NULL),
                     0);
    assert_int_equal(
        tc_keelctl(&c, KEELCTL_PATH, out, sizeof(out), "--endpoints", eps, "get", "k/ctl", NULL),
        0);
    assert_non_null(strstr(out, "viactl"));
    /* keelctl snapshot save dials its one endpoint by name (a blocking download of its own). */
    char snap[600];
    snprintf(snap, sizeof(snap), "%s/by-name.db", c.root);
    int rv = tc_keelctl(&c, KEELCTL_PATH, out, sizeof(out), "--endpoints", eps, "snapshot", "save",
                        snap, NULL);
    if (rv != 0)
        fail_msg("keelctl --endpoints %s snapshot save: %s", eps, out);
    assert_non_null(strstr(out, "Snapshot saved at"));
    assert_int_equal(access(snap, R_OK), 0);

    /* A member killed and restarted finds its peers (and they it) by name again, and catches up
     * with what was written while it was down. */
    assert_true(tc_stop(&c, 3, SIGKILL) != -1);
    put_str(all, "k/while-down", "v2");
    assert_int_equal(tc_start(&c, 3), 0);
    assert_true(wait_value(&c, 3, "k/while-down", "v2", 15000));
    put_str(all, "k/after", "v3");
    assert_true(wait_value(&c, 3, "k/after", "v3", 10000));

    /* No handshake was refused: each named peer came from an address its name resolves to. */
    assert_false(any_log_contains(&c, "refused"));
    /* One that comes from elsewhere is. */
    impostor_refused(&c);
    keel_close(all);
    /* Each stops cleanly: the leader cuts its links by the addresses it dialled (names never
     * compared with IPs), hands leadership over and exits. */
    for (int i = 1; i <= 3; i++) {
        int st = tc_stop(&c, i, SIGTERM);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("m%d did not stop cleanly (status %d)", i, st);
    }
    tc_cluster_close(&c);
}

static void unresolvable_peer(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init_named(&c, 3, "unresolvable", IP, NAME);
    /* m3's entry: nosuch.invalid instead of localhost (same port). */
    char *m3 = strstr(c.initial, "m3=" NAME ":");
    assert_non_null(m3);
    char rest[256];
    snprintf(rest, sizeof(rest), "%s", m3 + strlen("m3=" NAME));
    snprintf(m3, sizeof(c.initial) - (size_t)(m3 - c.initial), "m3=nosuch.invalid%s", rest);
    tc_start(&c, 1);
    tc_start(&c, 2);
    struct keel *k = open_named(&c, 0, 0);
    put_str(k, "k/quorum", "two");
    for (int i = 1; i <= 2; i++)
        assert_true(wait_value(&c, i, "k/quorum", "two", 10000));
    /* The leader keeps trying m3 (at every retry); it stays up and keeps serving meanwhile. */
    for (int n = 0; n < 20; n++) {
        char key[32];
        snprintf(key, sizeof(key), "k/more%d", n);
        put_str(k, key, "x");
        tu_sleep_ms(50);
    }
    bool logged = false;
    for (long long end = tc_now_ms() + 10000; !logged && tc_now_ms() < end; tu_sleep_ms(100))
        logged = any_log_contains(&c, "peer m3 (") && any_log_contains(&c, "nosuch.invalid:");
    assert_true(logged);
    /* Rate-limited: dozens of attempts (one per heartbeat), one line each in 30 s. */
    for (int i = 1; i <= 2; i++)
        assert_in_range(tc_log_count(&c, i, "does not resolve"), 0, 1);
    for (int i = 1; i <= 2; i++)
        assert_int_equal(waitpid(c.m[i].pid, NULL, WNOHANG), 0); /* still running */
    Keel__RangeResponse *r = NULL;
    assert_int_equal(keel_get(k, "k/more19", 8, NULL, &r), 0);
    assert_int_equal(r->n_kvs, 1);
    keel_free(r);
    keel_close(k);
    /* Both stop cleanly (under ASan: nothing leaked) with m3's name still being retried. */
    for (int i = 1; i <= 2; i++) {
        int st = tc_stop(&c, i, SIGTERM);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("m%d did not stop cleanly (status %d)", i, st);
    }
    tc_cluster_close(&c);
}

/* keelctl member add with a peer URL by name; the new member joins, and the others dial it by
 * that name. */
static void member_added_by_name(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init_named(&c, 4, "namejoin", IP, NAME);
    char full[sizeof(c.initial)];
    snprintf(full, sizeof(full), "%s", c.initial);
    *strstr(c.initial, ",m4=") = '\0'; /* m1..m3 start the cluster */
    for (int i = 1; i <= 3; i++)
        assert_int_equal(tc_start(&c, i), 0);
    struct keel *k = open_named(&c, 0, 0);
    put_str(k, "k/before", "v1");
    char eps[256], url[96], out[2048];
    named_endpoints(&c, 1, eps, sizeof(eps));
    snprintf(url, sizeof(url), "http://%s:%s", NAME, strrchr(c.m[4].peer, ':') + 1);
    int rv = -1;
    for (int tries = 0; tries < 20 && rv != 0; tries++) {
        rv = tc_keelctl(&c, KEELCTL_PATH, out, sizeof(out), "--endpoints", eps, "member", "add",
                        "m4", "--peer-urls", url, "--zone", "z4", NULL);
        if (rv != 0)
            tu_sleep_ms(200);
    }
    assert_int_equal(rv, 0);
    /* What keelctl says to start it with: the name in the list, an IPv4 listen address. */
    char want[128];
    snprintf(want, sizeof(want), ",m4=%s:%s", NAME, strrchr(c.m[4].peer, ':') + 1);
    if (strstr(out, want) == NULL)
        fail_msg("member add printed no '%s':\n%s", want, out);
    snprintf(want, sizeof(want), "KEEL_LISTEN_PEER=\"0.0.0.0:%s\"", strrchr(c.m[4].peer, ':') + 1);
    if (strstr(out, want) == NULL)
        fail_msg("member add printed no '%s':\n%s", want, out);
    snprintf(c.initial, sizeof(c.initial), "%s", full);
    snprintf(c.m[4].extra, sizeof(c.m[4].extra), "--initial-cluster-state existing");
    assert_int_equal(tc_start(&c, 4), 0);
    assert_true(wait_value(&c, 4, "k/before", "v1", 20000));
    put_str(k, "k/after", "v2");
    assert_true(wait_value(&c, 4, "k/after", "v2", 10000));
    assert_false(any_log_contains(&c, "refused"));
    keel_close(k);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    if (!resolves_to(NAME, IP)) {
        printf("SKIPPED: %s does not resolve to %s here\n", NAME, IP);
        return 77;
    }
    const struct CMUnitTest names[] = {cmocka_unit_test(members_by_name)};
    const struct CMUnitTest unresolvable[] = {cmocka_unit_test(unresolvable_peer)};
    const struct CMUnitTest join[] = {cmocka_unit_test(member_added_by_name)};
    const struct tu_group groups[] = {TU_GROUP(names), TU_GROUP(unresolvable), TU_GROUP(join)};
    return tu_run_groups("test_hostnames", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
