/*
 * Checkpoint fetch (see fetch.h): the peer handshake, then the snapshot stream
 * (proto/snapread.h) from a member that proves it belongs to this cluster, written to the
 * caller's file as it arrives.
 */
#include "fetch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "hostport.h"
#include "snapread.h"
#include "tls.h"
#include "tls_relay.h"

struct fetch {
    uint64_t cluster_id;
    int out_fd;
};

static int check_hello(void *data, const Keel__HelloResponse *hr, char *err, size_t errlen)
{
    struct fetch *f = data;
    if (hr->cluster_id == f->cluster_id)
        return 0;
    /* A member of another cluster (or something posing as the leader): its state must never
     * replace ours. */
    snprintf(err, errlen, "it belongs to cluster %016llx, not %016llx",
             (unsigned long long)hr->cluster_id, (unsigned long long)f->cluster_id);
    return KEEL_EIO;
}

static int write_chunk(void *data, const Keel__Response *resp, char *err, size_t errlen)
{
    struct fetch *f = data;
    if (resp->header == NULL || resp->header->cluster_id != f->cluster_id) {
        snprintf(err, errlen, "a chunk came without this cluster's id");
        return KEEL_EIO;
    }
    const ProtobufCBinaryData *blob = &resp->snapshot->blob;
    for (size_t off = 0; off < blob->len;) {
        ssize_t w = write(f->out_fd, blob->data + off, blob->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "writing the checkpoint: %s", strerror(errno));
            return KEEL_EIO;
        }
        off += (size_t)w;
    }
    return 0;
}

/* The whole of buf to fd (a blocking socket with a send timeout). */
static int send_all(int fd, const uint8_t *buf, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

int keel_fetch_checkpoint(const char *peer, const char *bind_host,
                          const struct keel_tls_options *tls, const struct keel_handshake *as,
                          int out_fd, int timeout_ms, char *err, size_t errlen)
{
    char host[KEEL_ADDR_MAX], why[400];
    int port;
    if (keel_addr_split_any(peer, host, sizeof(host), &port, NULL, 0) < 0) {
        snprintf(err, errlen, "%s is not a peer address", peer);
        return KEEL_EIO;
    }
    struct keel_tls_ctx *ctx = NULL;
    if (tls != NULL && keel_tls_ctx_new(tls, &ctx, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "peer TLS for the fetch from %s: %s", peer, why);
        return KEEL_EIO;
    }
    if (bind_host != NULL && strcmp(bind_host, "0.0.0.0") == 0)
        bind_host = NULL;
    /* A name is resolved now: this is the writer thread, which waits for the fetch anyway. */
    int fd = keel_snapread_dial(peer, bind_host, timeout_ms);
    if (fd < 0) {
        snprintf(err, errlen, "connect to %s: %s", peer,
                 errno == ENXIO ? "the name does not resolve" : strerror(errno));
        keel_tls_ctx_free(ctx);
        return KEEL_EIO;
    }
    /* Peer TLS: everything, the handshake included, goes through the relay's plain end
     * (tls_relay.h), and the member's certificate must name the host dialled. */
    struct keel_tls_relay *relay = NULL;
    int sfd = fd;
    if (ctx != NULL) {
        int rv = keel_tls_relay_start(ctx, host, fd, timeout_ms, &relay, &sfd, why, sizeof(why));
        keel_tls_ctx_free(ctx);
        if (rv != 0) {
            snprintf(err, errlen, "%s: %s", peer, why);
            close(fd);
            return KEEL_EIO;
        }
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        setsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    struct keel_handshake h = *as;
    h.kind = KEEL_HANDSHAKE_FETCH;
    uint8_t hello[KEEL_HANDSHAKE_LEN];
    keel_handshake_encode(&h, hello);
    struct fetch f = {as->cluster_id, out_fd};
    int rv = 0;
    if (send_all(sfd, hello, sizeof(hello)) != 0) {
        snprintf(why, sizeof(why), "sending the peer handshake: %s", strerror(errno));
        rv = KEEL_EIO;
    }
    if (rv == 0)
        rv = keel_snapread_run(sfd, "keeld-checkpoint-fetch", check_hello, write_chunk, &f, why,
                               sizeof(why));
    if (relay != NULL) {
        close(sfd);
        char tls_why[256];
        keel_tls_relay_finish(relay, tls_why, sizeof(tls_why));
        if (rv != 0 && tls_why[0] != '\0')
            snprintf(why, sizeof(why), "%s", tls_why); /* what ended the stream */
    }
    if (rv != 0)
        snprintf(err, errlen, "%s: %s", peer, why);
    close(fd);
    return rv;
}
