#include "rawconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "frame.h"
#include "testutil.h"

int raw_dial(const char *addr, int rcvbuf)
{
    char host[32];
    snprintf(host, sizeof(host), "%s", addr);
    char *colon = strrchr(host, ':');
    assert_non_null(colon);
    *colon = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    long long deadline = tc_now_ms() + RAW_WAIT_MS;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        if (rcvbuf > 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return fd;
        close(fd);
        if (tc_now_ms() > deadline)
            fail_msg("cannot connect to %s", addr);
        tu_sleep_ms(50);
    }
}

void raw_hello_send(int fd)
{
    Keel__Hello h = KEEL__HELLO__INIT;
    h.protocol_version = 1;
    uint8_t buf[64];
    size_t n = keel_frame_pack(&h.base, buf);
    raw_send(fd, buf, n);
}

Keel__HelloResponse *raw_hello_response(int fd)
{
    size_t len;
    uint8_t *p = raw_read(fd, &len);
    if (p == NULL)
        return NULL;
    Keel__HelloResponse *h = keel__hello_response__unpack(NULL, len, p);
    free(p);
    assert_non_null(h);
    return h;
}

int raw_open(const char *addr, int rcvbuf)
{
    int fd = raw_dial(addr, rcvbuf);
    raw_hello_send(fd);
    /* Its answer comes first: read it now, so every later frame is a Response. */
    Keel__HelloResponse *h = raw_hello_response(fd);
    if (h == NULL)
        fail_msg("%s closed the connection instead of answering Hello", addr);
    if (h->error != NULL)
        fail_msg("%s refused the handshake: %s", addr, h->error->message);
    keel__hello_response__free_unpacked(h, NULL);
    return fd;
}

void raw_send(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            fail_msg("send: the member closed the connection");
        b += w;
        n -= (size_t)w;
    }
}

/* Fill dst with want bytes: 1, 0 at EOF or reset; fails after RAW_WAIT_MS without a byte. */
static int read_full(int fd, uint8_t *dst, size_t want)
{
    size_t got = 0;
    while (got < want) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, RAW_WAIT_MS) != 1)
            fail_msg("no frame within %d ms", RAW_WAIT_MS);
        ssize_t r = recv(fd, dst + got, want - got, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return 0;
        if (r < 0)
            fail_msg("recv: %s", strerror(errno));
        got += (size_t)r;
    }
    return 1;
}

uint8_t *raw_read(int fd, size_t *len)
{
    uint8_t hdr[4];
    if (!read_full(fd, hdr, 4))
        return NULL;
    size_t want = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    uint8_t *payload = malloc(want ? want : 1);
    assert_non_null(payload);
    if (!read_full(fd, payload, want)) {
        free(payload);
        return NULL;
    }
    *len = want;
    return payload;
}

Keel__Response *raw_response(int fd)
{
    size_t len;
    uint8_t *p = raw_read(fd, &len);
    if (p == NULL)
        fail_msg("the member closed the connection");
    Keel__Response *r = keel__response__unpack(NULL, len, p);
    free(p);
    assert_non_null(r);
    return r;
}

bool raw_closed(int fd, int timeout_ms)
{
    long long deadline = tc_now_ms() + timeout_ms;
    uint8_t buf[4096];
    for (;;) {
        long long left = deadline - tc_now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)left) != 1)
            return false;
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return true;
        if (r < 0 && errno != EINTR && errno != EAGAIN)
            fail_msg("recv: %s", strerror(errno));
    }
}

void raw_append(uint8_t **buf, size_t *len, size_t *cap, const Keel__Request *req)
{
    size_t n = keel_frame_size(&req->base);
    if (*len + n > *cap) {
        *cap = (*len + n) * 2;
        *buf = realloc(*buf, *cap);
        assert_non_null(*buf);
    }
    *len += keel_frame_pack(&req->base, *buf + *len);
}

void raw_append_put(uint8_t **buf, size_t *len, size_t *cap, uint64_t id, const char *key,
                    const uint8_t *val, size_t val_len)
{
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)key;
    put.key.len = strlen(key);
    put.value.data = (uint8_t *)val;
    put.value.len = val_len;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    raw_append(buf, len, cap, &req);
}

int raw_put(int fd, uint64_t id, const char *key, const uint8_t *val, size_t val_len)
{
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    raw_append_put(&buf, &len, &cap, id, key, val, val_len);
    raw_send(fd, buf, len);
    free(buf);
    Keel__Response *r = raw_response(fd);
    assert_int_equal(r->id, id);
    int code = r->error ? r->error->code : 0;
    keel__response__free_unpacked(r, NULL);
    return code;
}

Keel__Response *raw_call(int fd, const Keel__Request *req)
{
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    raw_append(&buf, &len, &cap, req);
    raw_send(fd, buf, len);
    free(buf);
    return raw_response(fd);
}

uint64_t raw_raft_index(int fd, uint64_t id)
{
    Keel__StatusRequest sr = KEEL__STATUS_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &sr;
    Keel__Response *r = raw_call(fd, &req);
    assert_int_equal(r->id, id);
    assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_STATUS);
    uint64_t index = r->status->raftindex;
    keel__response__free_unpacked(r, NULL);
    return index;
}

int raw_one_member(struct tc_cluster *c, const char *tag, const char *flags)
{
    tc_cluster_init(c, 1, tag);
    snprintf(c->extra, sizeof(c->extra), "%s", flags);
    return raw_start(c);
}

int raw_start(struct tc_cluster *c)
{
    tc_start_all(c);
    int fd = raw_open(c->m[1].client, 0);
    long long deadline = tc_now_ms() + 20000;
    uint64_t id = 1000000;
    while (raw_put(fd, id++, "ready", (const uint8_t *)"1", 1) != 0) {
        if (tc_now_ms() > deadline)
            fail_msg("no leader within 20 s");
        tu_sleep_ms(50);
    }
    return fd;
}
