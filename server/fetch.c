/*
 * Checkpoint fetch (see fetch.h): the snapshot stream (proto/snapread.h), from a member that
 * proves it belongs to this cluster, written to the caller's file as it arrives.
 */
#include "fetch.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "err.h"
#include "snapread.h"
#include "tls.h"
#include "tls_relay.h"

struct fetch {
    const char *addr;
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

int keel_fetch_checkpoint(const char *addr, const char *bind_host, uint64_t cluster_id, int out_fd,
                          int timeout_ms, char *err, size_t errlen)
{
    return keel_fetch_checkpoint_as(addr, bind_host, NULL, cluster_id, NULL, out_fd, timeout_ms,
                                    err, errlen);
}

int keel_fetch_checkpoint_as(const char *addr, const char *bind_host,
                             const struct keel_tls_options *tls, uint64_t cluster_id,
                             const char *token, int out_fd, int timeout_ms, char *err,
                             size_t errlen)
{
    struct keel_tls_ctx *ctx = NULL;
    char why[400];
    if (tls != NULL && keel_tls_ctx_new(tls, &ctx, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "TLS for the fetch from %s: %s", addr, why);
        return KEEL_EIO;
    }
    int fd = keel_snapread_dial(addr, bind_host, timeout_ms);
    if (fd < 0) {
        snprintf(err, errlen, "connect to %s: %s", addr, strerror(errno));
        keel_tls_ctx_free(ctx);
        return KEEL_EIO;
    }
    /* TLS: the stream is read from the relay's plain end (tls_relay.h). */
    struct keel_tls_relay *relay = NULL;
    int sfd = fd;
    if (ctx != NULL) {
        char host[64];
        snprintf(host, sizeof(host), "%.*s", (int)strcspn(addr, ":"), addr);
        int rv = keel_tls_relay_start(ctx, host, fd, timeout_ms, &relay, &sfd, why, sizeof(why));
        keel_tls_ctx_free(ctx);
        if (rv != 0) {
            snprintf(err, errlen, "%s: %s", addr, why);
            close(fd);
            return KEEL_EIO;
        }
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        setsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    struct fetch f = {addr, cluster_id, out_fd};
    int rv = keel_snapread_run_token(sfd, "keeld-checkpoint-fetch", token, check_hello, write_chunk,
                                     &f, why, sizeof(why));
    if (relay != NULL) {
        close(sfd);
        char tls_why[256];
        keel_tls_relay_finish(relay, tls_why, sizeof(tls_why));
        if (rv != 0 && tls_why[0] != '\0')
            snprintf(why, sizeof(why), "%s", tls_why); /* what ended the stream */
    }
    if (rv != 0)
        snprintf(err, errlen, "%s: %s", addr, why);
    close(fd);
    return rv;
}
