/* The snapshot stream's reader (see snapread.h). */
#include "snapread.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "err.h"
#include "frame.h"
#include "hostport.h"

/* A piece is at most 1 MiB of copy (server/snapstream.c) plus its envelope. */
#define MAX_FRAME (8u << 20)

/* A socket connected to sa, from bind_host when not NULL, every wait bounded by timeout_ms. A
 * descriptor, or -1 with errno set. */
static int dial_one(const struct sockaddr_in *sa, const char *bind_host, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind_host != NULL) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, bind_host, &src.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            int e = errno ? errno : EINVAL;
            close(fd);
            errno = e;
            return -1;
        }
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    /* connect() honours SO_SNDTIMEO on Linux, which bounds a dial to a dead member. */
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int keel_snapread_dial(const char *addr, const char *bind_host, int timeout_ms)
{
    char host[256];
    int port = 0;
    int kind = keel_hostport_split(addr, strlen(addr), host, sizeof(host), &port, NULL, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (kind == KEEL_HOST_IPV4 && inet_pton(AF_INET, host, &sa.sin_addr) == 1)
        return dial_one(&sa, bind_host, timeout_ms);
    if (kind != KEEL_HOST_NAME) {
        errno = EINVAL;
        return -1;
    }
    /* A name: its IPv4 addresses in the resolver's order, the first that answers. */
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) {
        errno = ENXIO;
        return -1;
    }
    int fd = -1;
    for (const struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        sa.sin_addr = ((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
        fd = dial_one(&sa, bind_host, timeout_ms);
    }
    int e = errno;
    freeaddrinfo(res);
    errno = e;
    return fd;
}

static int send_msg(int fd, const ProtobufCMessage *m)
{
    size_t n = keel_frame_size(m);
    uint8_t *buf = malloc(n);
    if (buf == NULL)
        return KEEL_ENOMEM;
    keel_frame_pack(m, buf);
    int rv = 0;
    for (size_t off = 0; off < n;) {
        ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rv = KEEL_EIO;
            break;
        }
        off += (size_t)w;
    }
    free(buf);
    return rv;
}

/* The next frame's payload (valid until the next call), reading as needed. */
static int next_frame(int fd, struct keel_frame_decoder *dec, const uint8_t **payload, size_t *len,
                      size_t got, char *err, size_t errlen)
{
    for (;;) {
        int f = keel_frame_decoder_next(dec, payload, len);
        if (f < 0) {
            snprintf(err, errlen, "a frame from the member is malformed or too large");
            return f;
        }
        if (f > 0)
            return 0;
        uint8_t *space;
        size_t cap;
        int rv = keel_frame_decoder_space(dec, 65536, &space, &cap);
        if (rv != 0) {
            snprintf(err, errlen, "out of memory reading the stream");
            return rv;
        }
        ssize_t n = recv(fd, space, cap, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            snprintf(err, errlen, "the member sent nothing within the timeout (after %zu bytes)",
                     got);
            return KEEL_ETIMEOUT;
        }
        if (n <= 0) {
            snprintf(err, errlen, "the connection ended after %zu bytes of the snapshot", got);
            return KEEL_EIO;
        }
        keel_frame_decoder_commit(dec, (size_t)n);
    }
}

int keel_snapread_run(int fd, const char *client_name, keel_snapread_hello_cb on_hello,
                      keel_snapread_chunk_cb on_chunk, void *data, char *err, size_t errlen)
{
    return keel_snapread_run_token(fd, client_name, NULL, on_hello, on_chunk, data, err, errlen);
}

int keel_snapread_run_token(int fd, const char *client_name, const char *token,
                            keel_snapread_hello_cb on_hello, keel_snapread_chunk_cb on_chunk,
                            void *data, char *err, size_t errlen)
{
    Keel__Hello hello = KEEL__HELLO__INIT;
    hello.protocol_version = 1;
    hello.client_name = (char *)client_name;
    int rv = send_msg(fd, &hello.base);
    if (rv != 0) {
        snprintf(err, errlen, "sending the handshake failed");
        return rv;
    }
    struct keel_frame_decoder dec;
    keel_frame_decoder_init(&dec, MAX_FRAME);
    const uint8_t *payload;
    size_t len, got = 0;
    if ((rv = next_frame(fd, &dec, &payload, &len, got, err, errlen)) == 0) {
        ProtobufCMessage *m = NULL;
        keel_frame_unpack(&keel__hello_response__descriptor, NULL, payload, len, &m);
        Keel__HelloResponse *hr = (Keel__HelloResponse *)m;
        if (hr == NULL) {
            snprintf(err, errlen, "the member's handshake answer does not decode");
            rv = KEEL_EBADFRAME;
        } else if (hr->error != NULL) {
            snprintf(err, errlen, "the member refused the handshake: %s", hr->error->message);
            rv = keel_err_from_wire(hr->error->code);
        } else if (on_hello != NULL) {
            rv = on_hello(data, hr, err, errlen);
        }
        if (hr != NULL)
            keel__hello_response__free_unpacked(hr, NULL);
    }
    Keel__SnapshotRequest snap = KEEL__SNAPSHOT_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = 1;
    req.body_case = KEEL__REQUEST__BODY_SNAPSHOT;
    req.snapshot = &snap;
    if (token != NULL && token[0] != '\0')
        req.token = (char *)token;
    if (rv == 0 && (rv = send_msg(fd, &req.base)) != 0)
        snprintf(err, errlen, "sending the snapshot request failed");
    for (bool done = false; rv == 0 && !done;) {
        if ((rv = next_frame(fd, &dec, &payload, &len, got, err, errlen)) != 0)
            break;
        ProtobufCMessage *m = NULL;
        if (keel_frame_unpack(&keel__response__descriptor, NULL, payload, len, &m) != 0) {
            snprintf(err, errlen, "a response from the member does not decode");
            rv = KEEL_EBADFRAME;
            break;
        }
        Keel__Response *resp = (Keel__Response *)m;
        if (resp->error != NULL) {
            snprintf(err, errlen, "%s", resp->error->message);
            rv = keel_err_from_wire(resp->error->code);
        } else if (resp->body_case != KEEL__RESPONSE__BODY_SNAPSHOT || resp->id != req.id) {
            snprintf(err, errlen, "the member answered the snapshot request with something else");
            rv = KEEL_EBADFRAME;
        } else {
            rv = on_chunk(data, resp, err, errlen);
            got += resp->snapshot->blob.len;
            done = resp->snapshot->remaining_bytes == 0;
        }
        keel__response__free_unpacked(resp, NULL);
    }
    keel_frame_decoder_close(&dec);
    return rv;
}
