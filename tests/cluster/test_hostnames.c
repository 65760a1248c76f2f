/*
 * Members and clients addressed by DNS name, as in a Kubernetes StatefulSet
 * (keel-0.keel-peer...:2380): `test_hostnames <group>`.
 *
 * names         --initial-cluster m1=localhost:P1,...: the members find each other by name (each
 *               connect resolves it, each incoming handshake is checked against its addresses),
 *               libkeel and keelctl dial --endpoints localhost:PORT, and a member killed and
 *               restarted rejoins and catches up.
 * join          a member added by name (keelctl member add --peer-urls http://localhost:P)
 *               joins, and the others reach it by that name.
 * unresolvable  one member's address is nosuch.invalid:P (RFC 6761: never resolves): the other
 *               two form a quorum and serve, stay up, and log the name and the member.
 *
 * "localhost" must resolve to 127.0.0.1 (IPv4; keel asks for IPv4 only): else the test skips.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
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

/* Run keelctl with args (NULL-terminated); its stdout into out. The exit status. Bounded. */
static int ctl(const struct tc_cluster *c, char *out, size_t outlen, ...)
{
    char *argv[16];
    int argc = 0;
    argv[argc++] = KEELCTL_PATH;
    va_list ap;
    va_start(ap, outlen);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char path[600];
    snprintf(path, sizeof(path), "%s/keelctl.out", c->root);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(path, "w", stdout);
        if (f == NULL)
            _exit(126);
        unsetenv("KEEL_ENDPOINTS");
        execv(KEELCTL_PATH, argv);
        _exit(127);
    }
    int st = 0;
    for (int i = 0; i < 3000 && waitpid(pid, &st, WNOHANG) != pid; i++) {
        tu_sleep_ms(10);
        if (i == 2999) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
    }
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, outlen - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static bool any_log_contains(const struct tc_cluster *c, const char *needle)
{
    for (int i = 1; i <= c->n; i++)
        if (tc_log_contains(c, i, needle))
            return true;
    return false;
}

/* Lines of member i's log that contain needle. */
static int log_count(const struct tc_cluster *c, int i, const char *needle)
{
    FILE *f = fopen(c->m[i].log, "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
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
    assert_int_equal(ctl(&c, out, sizeof(out), "--endpoints", eps, "put", "k/ctl", "viactl", NULL),
                     0);
    assert_int_equal(ctl(&c, out, sizeof(out), "--endpoints", eps, "get", "k/ctl", NULL), 0);
    assert_non_null(strstr(out, "viactl"));

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
    keel_close(all);
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
        assert_in_range(log_count(&c, i, "does not resolve"), 0, 1);
    for (int i = 1; i <= 2; i++)
        assert_int_equal(waitpid(c.m[i].pid, NULL, WNOHANG), 0); /* still running */
    Keel__RangeResponse *r = NULL;
    assert_int_equal(keel_get(k, "k/more19", 8, NULL, &r), 0);
    assert_int_equal(r->n_kvs, 1);
    keel_free(r);
    keel_close(k);
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
        rv = ctl(&c, out, sizeof(out), "--endpoints", eps, "member", "add", "m4", "--peer-urls",
                 url, "--zone", "z4", NULL);
        if (rv != 0)
            tu_sleep_ms(200);
    }
    assert_int_equal(rv, 0);
    /* What keelctl says to start it with: the name in the list, an IPv4 listen address. */
    char want[128];
    snprintf(want, sizeof(want), ",m4=%s:%s", NAME, strrchr(c.m[4].peer, ':') + 1);
    if (strstr(out, want) == NULL)
        fail_msg("member add printed no '%s':\n%s", want, out);
    snprintf(want, sizeof(want), "--listen-peer 0.0.0.0:%s", strrchr(c.m[4].peer, ':') + 1);
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
