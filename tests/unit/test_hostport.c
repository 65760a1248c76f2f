/*
 * HOST:PORT as keel takes it (proto/hostport.h): the forms accepted and refused, with the words
 * of each refusal, through the shared splitter, keeld's flags (server/config.c) and libkeel's
 * endpoints (keel_endpoints_check).
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "handshake.h"
#include "hostport.h"
#include "keel/keel.h"

static int split(const char *addr, char *host, int *port, char *why)
{
    return keel_hostport_split(addr, strlen(addr), host, KEEL_ADDR_MAX, port, why, 200);
}

static void accepted_forms(void **state)
{
    (void)state;
    struct {
        const char *addr, *host;
        int port, kind;
    } ok[] = {
        {"127.0.0.1:2379", "127.0.0.1", 2379, KEEL_HOST_IPV4},
        {"0.0.0.0:1", "0.0.0.0", 1, KEEL_HOST_IPV4},
        {"localhost:65535", "localhost", 65535, KEEL_HOST_NAME},
        {"keel-0.keel-peer.default.svc.cluster.local:2380",
         "keel-0.keel-peer.default.svc.cluster.local", 2380, KEEL_HOST_NAME},
        {"keel-0.keel-peer.svc.:2380", "keel-0.keel-peer.svc.", 2380, KEEL_HOST_NAME},
        {"A1-b.example:80", "A1-b.example", 80, KEEL_HOST_NAME},
        {"1host:80", "1host", 80, KEEL_HOST_NAME},
        {"nosuch.invalid:2380", "nosuch.invalid", 2380, KEEL_HOST_NAME},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char host[KEEL_ADDR_MAX], why[200] = "";
        int port = 0;
        int kind = split(ok[i].addr, host, &port, why);
        if (kind != ok[i].kind || strcmp(host, ok[i].host) != 0 || port != ok[i].port)
            fail_msg("'%s': kind %d host '%s' port %d (%s)", ok[i].addr, kind, host, port, why);
    }
    /* The length given is what is read: no NUL needed. */
    char host[KEEL_ADDR_MAX];
    int port;
    assert_int_equal(
        keel_hostport_split("node-a:7,more", 6 + 2, host, sizeof(host), &port, NULL, 0),
        KEEL_HOST_NAME);
    assert_string_equal(host, "node-a");
    assert_int_equal(port, 7);
}

static void refused_forms(void **state)
{
    (void)state;
    char long_label[80], long_host[80];
    memset(long_label, 'a', 64);
    strcpy(long_label + 64, ".x:1");
    memset(long_host, 'b', 70);
    strcpy(long_host + 70, ":1");
    struct {
        const char *addr, *needle;
    } bad[] = {
        {"", "empty"},
        {"localhost", "no port"},
        {":2379", "no host"},
        {"localhost:", "port is not a number"},
        {"localhost:0", "port is not a number in 1-65535"},
        {"localhost:65536", "1-65535"},
        {"localhost:99999999999999999999", "1-65535"},
        {"localhost:12a", "port is not a number"},
        {"[::1]:2379", "IPv6 addresses are not supported"},
        {"::1:2379", "IPv6 addresses are not supported"},
        {"fe80::1:80", "IPv6"},
        {"1.2.3:80", "'1.2.3' is neither an IPv4 address"},
        {"256.1.1.1:80", "neither an IPv4 address"},
        {"under_score:80", "has the character '_'"},
        {"sp ace:80", "has the character ' '"},
        {"-lead.x:80", "begins with '-'"},
        {"trail-.x:80", "ends with '-'"},
        {"a..b:80", "empty label"},
        {".a:80", "empty label"},
        {"a.b..:80", "empty label"},
        {long_label, "longer than 63 bytes"},
        {long_host, "longer than 63 bytes"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char host[KEEL_ADDR_MAX], why[200] = "";
        int port = 0;
        int kind = split(bad[i].addr, host, &port, why);
        if (kind != -1 || strstr(why, bad[i].needle) == NULL)
            fail_msg("'%s': kind %d, message '%s', expected it to mention '%s'", bad[i].addr, kind,
                     why, bad[i].needle);
    }
    /* A label of exactly 63 bytes is fine; the buffer bounds the whole host. */
    char ok63[80];
    memset(ok63, 'c', 63);
    strcpy(ok63 + 63, ":9");
    char host[KEEL_ADDR_MAX];
    int port;
    assert_int_equal(split(ok63, host, &port, NULL), KEEL_HOST_NAME);
    char why[200];
    assert_int_equal(keel_hostport_split(ok63, strlen(ok63), host, 10, &port, why, sizeof(why)),
                     -1);
    assert_non_null(strstr(why, "longer than 9 bytes"));
    /* The embedded-NUL case: a length past a NUL is refused, not cut. */
    assert_int_equal(keel_hostport_split("ab\0c:1", 6, host, sizeof(host), &port, why, sizeof(why)),
                     -1);
}

static int parse(const char *line, struct keel_config *c, char *err, size_t errlen)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "keeld %s", line);
    char *argv[64];
    int argc = 0;
    for (char *save = NULL, *tok = strtok_r(buf, " ", &save); tok && argc < 63;
         tok = strtok_r(NULL, " ", &save))
        argv[argc++] = tok;
    argv[argc] = NULL;
    return keel_config_parse(c, argc, argv, err, errlen);
}

#define BASE "--name a --data-dir /tmp/keel-hostport-none --listen-client 127.0.0.1:2379 "

static void keeld_flags(void **state)
{
    (void)state;
    struct keel_config c;
    char err[512] = "";
    /* Names in --initial-cluster; --listen-peer on 0.0.0.0 (a pod) or the IP, with its port. */
    assert_int_equal(parse(BASE "--listen-peer 0.0.0.0:2380 --initial-cluster "
                                "a=keel-0.keel-peer:2380,b=keel-1.keel-peer:2380,c=10.0.0.3:2380",
                           &c, err, sizeof(err)),
                     0);
    assert_string_equal(c.members[0].peer, "keel-0.keel-peer:2380"); /* kept as given */
    assert_string_equal(c.listen_peer, "0.0.0.0:2380");
    keel_config_close(&c);
    assert_int_equal(parse(BASE "--listen-peer 127.0.0.1:2380 --initial-cluster a=localhost:2380",
                           &c, err, sizeof(err)),
                     0);
    keel_config_close(&c);

    struct {
        const char *line, *needle;
    } bad[] = {
        {BASE "--listen-peer 127.0.0.1:2381 --initial-cluster a=localhost:2380",
         "--listen-peer 127.0.0.1:2381 differs in its port from this member's --initial-cluster "
         "address localhost:2380"},
        {BASE "--listen-peer 127.0.0.2:2380 --initial-cluster a=127.0.0.1:2380",
         "--listen-peer 127.0.0.2:2380 differs from this member's --initial-cluster address"},
        {BASE "--listen-peer localhost:2380 --initial-cluster a=localhost:2380",
         "--listen-peer 'localhost:2380': a listen address must be an IPv4 address with a port "
         "(a.b.c.d:port; 0.0.0.0 listens on every interface), not a host name"},
        {"--name a --data-dir /tmp/x --listen-client keel-0:2379 --listen-peer 127.0.0.1:2380 "
         "--initial-cluster a=127.0.0.1:2380",
         "--listen-client 'keel-0:2379': a listen address must be an IPv4 address"},
        {BASE "--listen-peer 127.0.0.1:2380 --initial-cluster a=127.0.0.1:2380 "
              "--listen-metrics [::]:9000",
         "--listen-metrics '[::]:9000' is not an IPv4 address with a port (a.b.c.d:port): IPv6 "
         "addresses are not supported"},
        {BASE "--listen-peer 127.0.0.1:2380 --initial-cluster a=127.0.0.1:2380,b=bad_name:2380",
         "--initial-cluster address 'bad_name:2380' is not HOST:PORT (HOST an IPv4 address or a "
         "host name): host name 'bad_name' has the character '_'"},
        {BASE "--listen-peer 127.0.0.1:2380 --initial-cluster a=127.0.0.1:2380,b=[::1]:2380",
         "--initial-cluster address '[::1]:2380' is not HOST:PORT (HOST an IPv4 address or a host "
         "name): IPv6 addresses are not supported"},
        {BASE "--listen-peer 127.0.0.1:2380 --initial-cluster a=127.0.0.1:2380,b=keel-1",
         "--initial-cluster address 'keel-1' is not HOST:PORT (HOST an IPv4 address or a host "
         "name): no port"},
        /* The address (name and port) fits the 64-byte fields of the config and the handshake. */
        {BASE
         "--listen-peer 127.0.0.1:2380 --initial-cluster "
         "a=127.0.0.1:2380,b=keel-1.keel-peer.production-database-eu-west.svc.cluster.local:2380",
         "--initial-cluster address is too long (at most 63 bytes)"},
        {BASE "--listen-peer 127.0.0.1:2380 --initial-cluster a=127.0.0.1:2380,b=k1:2380,c=k1:2380",
         "--initial-cluster gives address k1:2380 to two members"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char e[512] = "";
        int rv = parse(bad[i].line, &c, e, sizeof(e));
        keel_config_close(&c);
        if (rv != -1 || strstr(e, bad[i].needle) == NULL)
            fail_msg("case %zu: rv %d, message '%s', expected it to mention '%s'", i, rv, e,
                     bad[i].needle);
    }
}

/* A peer addressed by name: the handshake names it, and the source address is left to the
 * transport, which resolves the name (handshake.h's by_name); an IPv4 literal is checked here. */
static void handshake_by_name(void **state)
{
    (void)state;
    struct keel_config c;
    char err[512] = "", why[256];
    assert_int_equal(parse(BASE "--listen-peer 0.0.0.0:2380 --initial-cluster "
                                "a=keel-0.keel-peer:2380,b=keel-1.keel-peer:2380,c=10.0.0.3:2380",
                           &c, err, sizeof(err)),
                     0);
    struct keel_handshake_rule rule = {.cluster_id = c.cluster_id,
                                       .self_id = c.member_id,
                                       .lookup = keel_handshake_config_peer,
                                       .data = &c};
    struct keel_handshake h = {.cluster_id = c.cluster_id,
                               .id = c.members[1].id,
                               .peer = "keel-1.keel-peer:2380",
                               .client = "10.0.0.2:2379",
                               .name = "b",
                               .zone = ""};
    uint8_t buf[KEEL_HANDSHAKE_LEN];
    keel_handshake_encode(&h, buf);
    struct in_addr from;
    inet_pton(AF_INET, "10.9.9.9", &from);
    struct keel_handshake_peer p;
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), 0);
    assert_true(p.by_name);
    assert_string_equal(p.peer, "keel-1.keel-peer:2380");
    /* Another text for the same member (its IP, say) is not its address. */
    h.peer = "10.9.9.9:2380";
    keel_handshake_encode(&h, buf);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "with peer address 10.9.9.9:2380, which is keel-1.keel-peer:2380"));
    /* A member given by IPv4 literal is checked against the source here, as before. */
    h.id = c.members[2].id;
    h.peer = "10.0.0.3:2380";
    keel_handshake_encode(&h, buf);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "from another host"));
    inet_pton(AF_INET, "10.0.0.3", &from);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), 0);
    assert_false(p.by_name);
    keel_config_close(&c);
}

static void client_endpoints(void **state)
{
    (void)state;
    char msg[320];
    assert_int_equal(keel_endpoints_check("127.0.0.1:2379,localhost:2379,keel-0.keel:2379,"
                                          "http://Keel-1.keel:2379/",
                                          msg, sizeof(msg)),
                     0);
    assert_int_equal(keel_endpoints_check(NULL, msg, sizeof(msg)), 0); /* the default */
    assert_int_equal(keel_endpoints_check("127.0.0.1:2379,a_b:1", msg, sizeof(msg)), KEEL_EINVAL);
    assert_non_null(strstr(msg, "endpoint 'a_b:1' is not HOST:PORT"));
    assert_non_null(strstr(msg, "has the character '_'"));
    assert_int_equal(keel_endpoints_check("[::1]:2379", msg, sizeof(msg)), KEEL_EINVAL);
    assert_non_null(strstr(msg, "IPv6 addresses are not supported"));
    assert_int_equal(keel_endpoints_check("keel-0", msg, sizeof(msg)), KEEL_EINVAL);
    assert_non_null(strstr(msg, "no port"));
    assert_int_equal(keel_endpoints_check(",,", msg, sizeof(msg)), KEEL_EINVAL);
    assert_non_null(strstr(msg, "no endpoint"));
    /* keel_open agrees: a name opens (nothing is dialled yet), a bad one does not. */
    struct keel *k = NULL;
    struct keel_options o = {.endpoints = "nosuch.invalid:2379"};
    assert_int_equal(keel_open(&k, &o), 0);
    keel_close(k);
    o.endpoints = "bad_name:2379";
    assert_int_equal(keel_open(&k, &o), KEEL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepted_forms),   cmocka_unit_test(refused_forms),
        cmocka_unit_test(keeld_flags),      cmocka_unit_test(handshake_by_name),
        cmocka_unit_test(client_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
