#include "fetch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#include "config.h"
#include "err.h"
#include "frame.h"
#include "keel.pb-c.h"

#define FETCH_MAX_FRAME (8u << 20)

static int send_msg(int fd, const ProtobufCMessage *m)
{
    size_t n = keel_frame_size(m);
    uint8_t *buf = malloc(n);
    if (buf == NULL)
        return KEEL_ENOMEM;
    keel_frame_pack(m, buf);
    size_t off = 0;
    int rv = 0;
    while (off < n) {
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

static int dial(const char *addr, const char *bind_host, int timeout_ms)
{
    char host[KEEL_ADDR_MAX];
    int port;
    if (keel_addr_split(addr, host, sizeof(host), &port) != 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind_host != NULL) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, bind_host, &src.sin_addr) == 1)
            bind(fd, (struct sockaddr *)&src, sizeof(src));
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    /* connect() honours SO_SNDTIMEO on Linux, which bounds a dial to a dead member. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int keel_fetch_checkpoint(const char *addr, const char *bind_host, uint64_t cluster_id, int out_fd,
                          int timeout_ms, char *err, size_t errlen)
{
    int fd = dial(addr, bind_host, timeout_ms);
    if (fd < 0) {
        snprintf(err, errlen, "connect to %s: %s", addr, strerror(errno));
        return KEEL_EIO;
    }
    Keel__Hello hello = KEEL__HELLO__INIT;
    hello.protocol_version = 1;
    hello.client_name = "keeld-checkpoint-fetch";
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__SnapshotRequest snap = KEEL__SNAPSHOT_REQUEST__INIT;
    req.id = 1;
    req.body_case = KEEL__REQUEST__BODY_SNAPSHOT;
    req.snapshot = &snap;
    /* The request goes only after the handshake showed a member of this cluster: another
     * cluster's member never starts copying for us. */
    int rv = send_msg(fd, &hello.base);
    if (rv != 0) {
        snprintf(err, errlen, "send to %s failed", addr);
        close(fd);
        return rv;
    }

    struct keel_frame_decoder dec;
    keel_frame_decoder_init(&dec, FETCH_MAX_FRAME);
    int got_hello = 0, done = 0;
    size_t total = 0;
    rv = 0;
    while (!done && rv == 0) {
        const uint8_t *payload;
        size_t len;
        int f = keel_frame_decoder_next(&dec, &payload, &len);
        if (f < 0) {
            snprintf(err, errlen, "bad frame from %s", addr);
            rv = f;
            break;
        }
        if (f == 0) {
            uint8_t *space;
            size_t cap;
            if ((rv = keel_frame_decoder_space(&dec, 65536, &space, &cap)) != 0)
                break;
            ssize_t n = recv(fd, space, cap, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                snprintf(err, errlen, "connection to %s ended after %zu bytes", addr, total);
                rv = KEEL_EIO;
                break;
            }
            keel_frame_decoder_commit(&dec, (size_t)n);
            continue;
        }
        if (!got_hello) {
            ProtobufCMessage *m = NULL;
            keel_frame_unpack(&keel__hello_response__descriptor, NULL, payload, len, &m);
            Keel__HelloResponse *hr = (Keel__HelloResponse *)m;
            if (hr == NULL || hr->error != NULL) {
                snprintf(err, errlen, "%s refused the handshake: %s", addr,
                         hr && hr->error ? hr->error->message : "bad reply");
                rv = KEEL_EIO;
            } else if (hr->cluster_id != cluster_id) {
                /* A member of another cluster (or something posing as the leader): its state
                 * must never replace ours. */
                snprintf(err, errlen, "%s belongs to cluster %016llx, not %016llx", addr,
                         (unsigned long long)hr->cluster_id, (unsigned long long)cluster_id);
                rv = KEEL_EIO;
            }
            if (hr != NULL)
                keel__hello_response__free_unpacked(hr, NULL);
            got_hello = 1;
            if (rv == 0 && (rv = send_msg(fd, &req.base)) != 0)
                snprintf(err, errlen, "send to %s failed", addr);
            continue;
        }
        ProtobufCMessage *m = NULL;
        if (keel_frame_unpack(&keel__response__descriptor, NULL, payload, len, &m) != 0) {
            snprintf(err, errlen, "undecodable response from %s", addr);
            rv = KEEL_EBADFRAME;
            break;
        }
        Keel__Response *resp = (Keel__Response *)m;
        if (resp->error != NULL) {
            snprintf(err, errlen, "%s: %s", addr, resp->error->message);
            rv = keel_err_from_wire(resp->error->code);
        } else if (resp->header == NULL || resp->header->cluster_id != cluster_id) {
            snprintf(err, errlen, "%s sent a chunk without this cluster's id", addr);
            rv = KEEL_EIO;
        } else if (resp->body_case != KEEL__RESPONSE__BODY_SNAPSHOT) {
            snprintf(err, errlen, "%s answered the snapshot request with something else", addr);
            rv = KEEL_EIO;
        } else {
            const ProtobufCBinaryData *blob = &resp->snapshot->blob;
            for (size_t off = 0; off < blob->len && rv == 0;) {
                ssize_t w = write(out_fd, blob->data + off, blob->len - off);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    snprintf(err, errlen, "writing the checkpoint: %s", strerror(errno));
                    rv = KEEL_EIO;
                    break;
                }
                off += (size_t)w;
            }
            total += blob->len;
            done = resp->snapshot->remaining_bytes == 0;
        }
        keel__response__free_unpacked(resp, NULL);
    }
    keel_frame_decoder_close(&dec);
    close(fd);
    return rv;
}
