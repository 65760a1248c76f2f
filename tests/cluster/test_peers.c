/*
 * The peer port's handshake (issue 9, hole 14): a member accepts a peer only from the host of
 * that member's configured peer address. Real keeld processes (member i on 127.0.i.1); the
 * impostor is a raw TCP client bound to another loopback address, speaking keeld's handshake
 * byte for byte, so nothing in keeld's own transport can hide a fault.
 */
#include <arpa/inet.h>
#include <errno.h>
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
#include "frame.h"
#include "keel.pb-c.h"
#include "testutil.h"

/* keeld's handshake (server/transport.c), written out here on purpose: a test that borrowed
 * the server's encoder would agree with it by construction. */
#define HELLO_MAGIC   0x4b45454c50454552ull
#define HELLO_VERSION 2
#define HELLO_LEN     (8 + 8 + 8 + 8 + 4 * 64)
#define HELLO_V1_LEN  (8 + 8 + 8 + 4 * 64) /* before the cluster id */

static struct tc_cluster cl;

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_field(uint8_t *p, const char *s)
{
    memset(p, 0, 64);
    memcpy(p, s, strnlen(s, 63));
}

struct hello {
    uint64_t version;
    uint64_t cluster;
    uint64_t id;
    const char *peer, *client, *name, *zone;
};

static size_t hello_encode(const struct hello *h, uint8_t *out)
{
    put_le64(out, HELLO_MAGIC);
    put_le64(out + 8, h->version);
    size_t off = 16;
    if (h->version >= 2) {
        put_le64(out + off, h->cluster);
        off += 8;
    }
    put_le64(out + off, h->id);
    put_field(out + off + 8, h->peer);
    put_field(out + off + 72, h->client);
    put_field(out + off + 136, h->name);
    put_field(out + off + 200, h->zone);
    return off + 264;
}

static void split(const char *addr, char *host, size_t len, int *port)
{
    snprintf(host, len, "%s", addr);
    char *colon = strrchr(host, ':');
    assert_non_null(colon);
    *colon = '\0';
    *port = atoi(colon + 1);
}

/* A TCP connection to addr whose source address is src_host (bounded retries). */
static int dial_from(const char *src_host, const char *addr)
{
    char host[32];
    int port;
    split(addr, host, sizeof(host), &port);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in src = {.sin_family = AF_INET};
    inet_pton(AF_INET, host, &dst.sin_addr);
    inet_pton(AF_INET, src_host, &src.sin_addr);
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == 0 &&
            connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == 0)
            return fd;
        close(fd);
        tu_sleep_ms(50);
    }
    fail_msg("cannot connect to %s from %s", addr, src_host);
    return -1;
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* already closed by the member: the caller checks for that */
        b += w;
        n -= (size_t)w;
    }
}

/* Whether the member closes fd within ms (EOF or reset), reading and dropping anything it
 * sends first. */
static bool closed_within(int fd, int ms)
{
    long long deadline = tc_now_ms() + ms;
    for (;;) {
        long long left = deadline - tc_now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)left) != 1)
            return false;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return true;
    }
}

/* Whether member i's log holds every one of the strings (NULL-terminated). */
static bool log_has(int i, ...)
{
    FILE *f = fopen(cl.m[i].log, "r");
    if (f == NULL)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        va_list ap;
        va_start(ap, i);
        found = true;
        for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *))
            if (strstr(line, s) == NULL)
                found = false;
        va_end(ap);
    }
    fclose(f);
    return found;
}

/* ---- the client port, raw: one request, one answer ---- */

static void send_msg(int fd, const ProtobufCMessage *m)
{
    uint8_t buf[4096];
    assert_true(keel_frame_size(m) <= sizeof(buf));
    send_all(fd, buf, keel_frame_pack(m, buf));
}

static uint8_t *read_frame(int fd, size_t *len)
{
    uint8_t hdr[4];
    uint8_t *dst = hdr;
    size_t want = 4, got = 0;
    uint8_t *payload = NULL;
    for (int phase = 0; phase < 2; phase++) {
        while (got < want) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 5000) != 1)
                fail_msg("no answer within 5 s");
            ssize_t n = recv(fd, dst + got, want - got, 0);
            if (n <= 0)
                fail_msg("connection closed while reading an answer");
            got += (size_t)n;
        }
        if (phase == 0) {
            want = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
            payload = malloc(want ? want : 1);
            dst = payload;
            got = 0;
        }
    }
    *len = want;
    return payload;
}

/* Member j's client address as member i lists it (malloc'd; "" when it lists none). */
static char *listed_client(int i, int j)
{
    int fd = dial_from("127.0.0.1", cl.m[i].client);
    Keel__Hello h = KEEL__HELLO__INIT;
    h.protocol_version = 1;
    send_msg(fd, &h.base);
    size_t len;
    free(read_frame(fd, &len));
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__MemberListRequest mr = KEEL__MEMBER_LIST_REQUEST__INIT;
    req.id = 1;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_LIST;
    req.member_list = &mr;
    send_msg(fd, &req.base);
    uint8_t *p = read_frame(fd, &len);
    close(fd);
    Keel__Response *r = keel__response__unpack(NULL, len, p);
    free(p);
    assert_non_null(r);
    assert_null(r->error);
    assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_MEMBER_LIST);
    char *out = NULL;
    for (size_t x = 0; x < r->member_list->n_members; x++) {
        Keel__Member *m = r->member_list->members[x];
        if (strcmp(m->name, cl.m[j].name) == 0)
            out = strdup(m->n_clienturls > 0 ? m->clienturls[0] : "");
    }
    keel__response__free_unpacked(r, NULL);
    assert_non_null(out);
    return out;
}

/* Every member lists every member at its real client address, waiting (bounded) for the
 * attributes the real handshakes published. */
static void assert_real_addresses(int timeout_ms)
{
    long long deadline = tc_now_ms() + timeout_ms;
    for (int i = 1; i <= cl.n; i++) {
        for (int j = 1; j <= cl.n; j++) {
            for (;;) {
                char got[64];
                char *listed = listed_client(i, j);
                snprintf(got, sizeof(got), "%s", listed);
                free(listed);
                bool ok = strcmp(got, cl.m[j].client) == 0;
                if (!ok && (got[0] != '\0' || tc_now_ms() >= deadline))
                    fail_msg("member %d lists member %d at '%s', not at its address %s", i, j, got,
                             cl.m[j].client);
                if (ok)
                    break;
                tu_sleep_ms(50); /* not learned yet: the real handshake is still to come */
            }
        }
    }
}

/* The cluster takes a write and every member applies it (bounded). */
static void assert_serving(const char *value)
{
    /* The leader, whoever it is, answers a put; followers say NOT_LEADER. */
    long long deadline = tc_now_ms() + 10000;
    bool done = false;
    while (!done && tc_now_ms() < deadline) {
        for (int i = 1; i <= cl.n && !done; i++) {
            int fd = dial_from("127.0.0.1", cl.m[i].client);
            Keel__Hello h = KEEL__HELLO__INIT;
            h.protocol_version = 1;
            send_msg(fd, &h.base);
            size_t len;
            free(read_frame(fd, &len));
            Keel__Request req = KEEL__REQUEST__INIT;
            Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
            put.key.data = (uint8_t *)"k/peers";
            put.key.len = 7;
            put.value.data = (uint8_t *)value;
            put.value.len = strlen(value);
            req.id = 2;
            req.body_case = KEEL__REQUEST__BODY_PUT;
            req.put = &put;
            send_msg(fd, &req.base);
            uint8_t *p = read_frame(fd, &len);
            close(fd);
            Keel__Response *r = keel__response__unpack(NULL, len, p);
            free(p);
            assert_non_null(r);
            done = r->error == NULL;
            keel__response__free_unpacked(r, NULL);
        }
        if (!done)
            tu_sleep_ms(50);
    }
    if (!done)
        fail_msg("no member took a write within 10 s");
    for (int i = 1; i <= cl.n; i++)
        assert_true(cl.m[i].pid > 0 && kill(cl.m[i].pid, 0) == 0);
}

static uint64_t member_id(int i)
{
    return keel_hash64(cl.m[i].name, strlen(cl.m[i].name));
}

static uint64_t cluster_id(void)
{
    return keel_hash64(cl.initial, strlen(cl.initial));
}

/* ---- tests ---- */

static int setup(void **state)
{
    (void)state;
    tc_cluster_init(&cl, 3, "peers");
    tc_start_all(&cl);
    assert_serving("before");
    assert_real_addresses(10000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tc_cluster_close(&cl);
    return 0;
}

/* An impostor on another host claims to be a member, with that member's own peer address and
 * a client address of its choosing, to each member in turn. Each closes the connection and says
 * why; no member ever lists the impostor's address; the cluster keeps serving. */
static void spoofed_member_refused(void **state)
{
    (void)state;
    int fds[TC_MAX + 1];
    for (int i = 1; i <= cl.n; i++) {
        int j = i % cl.n + 1; /* someone else: the leader is among the targets, whoever it is */
        struct hello h = {.version = HELLO_VERSION,
                          .cluster = cluster_id(),
                          .id = member_id(j),
                          .peer = cl.m[j].peer,
                          .client = "127.0.9.9:2379",
                          .name = cl.m[j].name,
                          .zone = cl.m[j].zone};
        uint8_t buf[HELLO_LEN];
        fds[i] = dial_from("127.0.9.1", cl.m[i].peer);
        send_all(fds[i], buf, hello_encode(&h, buf));
    }
    /* Had any member taken it, the leader would have published the address by now: a write
     * committed after the handshakes is applied after what they caused. */
    assert_serving("after-spoof");
    assert_real_addresses(0);
    for (int i = 1; i <= cl.n; i++) {
        int j = i % cl.n + 1;
        bool closed = closed_within(fds[i], 3000);
        close(fds[i]);
        if (!closed)
            fail_msg("member %d kept a connection from 127.0.9.1 claiming to be member %d", i, j);
        assert_true(log_has(i, "refused", "127.0.9.1", cl.m[j].name, "from another host", NULL));
    }
}

/* An id that is no member (of the raft configuration) is refused too, even from a member's own
 * host. */
static void unknown_member_refused(void **state)
{
    (void)state;
    struct hello h = {.version = HELLO_VERSION,
                      .cluster = cluster_id(),
                      .id = 0x1234567,
                      .peer = cl.m[2].peer,
                      .client = cl.m[2].client,
                      .name = "stranger",
                      .zone = "z2"};
    uint8_t buf[HELLO_LEN];
    int fd = dial_from("127.0.2.1", cl.m[1].peer);
    send_all(fd, buf, hello_encode(&h, buf));
    assert_true(closed_within(fd, 3000));
    close(fd);
    assert_true(log_has(1, "refused", "0000000001234567", "no member of this cluster", NULL));
    assert_serving("after-unknown");
}

/* A member of another cluster, even from the right host with the right id and address, never
 * gets in: the log names both clusters, so whoever reads it sees the two configurations. */
static void other_cluster_refused(void **state)
{
    (void)state;
    uint64_t other = cluster_id() ^ 0x5a5a;
    struct hello h = {.version = HELLO_VERSION,
                      .cluster = other,
                      .id = member_id(2),
                      .peer = cl.m[2].peer,
                      .client = "127.0.9.9:2379",
                      .name = cl.m[2].name,
                      .zone = cl.m[2].zone};
    uint8_t buf[HELLO_LEN];
    int fd = dial_from("127.0.2.1", cl.m[1].peer);
    send_all(fd, buf, hello_encode(&h, buf));
    assert_true(closed_within(fd, 3000));
    close(fd);
    char mine[32], theirs[32];
    snprintf(mine, sizeof(mine), "%016llx", (unsigned long long)cluster_id());
    snprintf(theirs, sizeof(theirs), "%016llx", (unsigned long long)other);
    assert_true(log_has(1, "refused", "127.0.2.1", theirs, mine, NULL));
    assert_serving("after-other-cluster");
    assert_real_addresses(0);
}

/* A handshake of the version before the cluster id is refused on its head alone, long before
 * the 5 s handshake timeout: it would otherwise wait for bytes an old peer never sends. */
static void old_version_refused(void **state)
{
    (void)state;
    struct hello h = {.version = 1,
                      .id = member_id(2),
                      .peer = cl.m[2].peer,
                      .client = cl.m[2].client,
                      .name = cl.m[2].name,
                      .zone = cl.m[2].zone};
    uint8_t buf[HELLO_LEN];
    int fd = dial_from("127.0.2.1", cl.m[3].peer);
    size_t n = hello_encode(&h, buf);
    assert_int_equal(n, HELLO_V1_LEN);
    send_all(fd, buf, n);
    assert_true(closed_within(fd, 2000));
    close(fd);
    assert_true(log_has(3, "refused", "handshake version 1", NULL));
    assert_serving("after-old-version");
}

static void members_stop_cleanly(void **state)
{
    (void)state;
    for (int i = 1; i <= cl.n; i++) {
        int status = tc_stop(&cl, i, SIGTERM);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("member %d: exit status %d", i, status);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spoofed_member_refused), cmocka_unit_test(unknown_member_refused),
        cmocka_unit_test(other_cluster_refused),  cmocka_unit_test(old_version_refused),
        cmocka_unit_test(members_stop_cleanly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
