/*
 * keel_snapshot (keel.h): the snapshot stream (proto/snapread.h) on a blocking connection of its
 * own. A snapshot is one long download that the caller usually writes to a file as it comes;
 * the asynchronous client's request/response slots and reconnects have nothing to offer it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "snapread.h"
#include "tls_relay.h"

struct download {
    keel_snapshot_sink sink;
    void *data;
    struct keel_snapshot_info info;
    bool first;
};

static int on_hello(void *data, const Keel__HelloResponse *hr, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct download *d = data;
    d->info.cluster_id = hr->cluster_id;
    d->info.member_id = hr->member_id;
    return 0;
}

static int on_chunk(void *data, const Keel__Response *resp, char *err, size_t errlen)
{
    struct download *d = data;
    if (d->first && resp->header != NULL)
        d->info.revision = resp->header->revision;
    d->first = false;
    const ProtobufCBinaryData *blob = &resp->snapshot->blob;
    int rv = blob->len > 0 ? d->sink(d->data, blob->data, blob->len) : 0;
    if (rv != 0) {
        snprintf(err, errlen, "%s", keel_strerror(rv));
        return rv;
    }
    d->info.bytes += blob->len;
    return 0;
}

int keel_snapshot(const struct keel_options *opts, const char *endpoint, keel_snapshot_sink sink,
                  void *data, struct keel_snapshot_info *info)
{
    char msg[KEEL_ERRMSG_MAX];
    if (endpoint == NULL || sink == NULL) {
        kc_set_errmsg(keel_strerror(KEEL_EINVAL));
        return KEEL_EINVAL;
    }
    bool tls = strncmp(endpoint, "https://", 8) == 0 ||
               (opts != NULL && (opts->ca_file != NULL || opts->cert_file != NULL ||
                                 opts->key_file != NULL || opts->insecure_skip_verify));
    if (strncmp(endpoint, "http://", 7) == 0)
        endpoint += 7;
    else if (strncmp(endpoint, "https://", 8) == 0)
        endpoint += 8;
    struct keel_tls_ctx *ctx = NULL;
    if (tls) {
        struct keel_tls_options to = {.role = KEEL_TLS_CLIENT,
                                      .cert_file = opts ? opts->cert_file : NULL,
                                      .key_file = opts ? opts->key_file : NULL,
                                      .ca_file = opts ? opts->ca_file : NULL,
                                      .verify_peer = !(opts && opts->insecure_skip_verify)};
        char err[KEEL_ERRMSG_MAX - 80];
        int rv = keel_tls_ctx_new(&to, &ctx, err, sizeof(err));
        if (rv != 0) {
            kc_set_errmsg(rv == KEEL_ENOMEM ? keel_strerror(rv) : err);
            return rv;
        }
    }
    uint32_t dial_ms =
        opts && opts->dial_timeout_ms ? opts->dial_timeout_ms : KEEL_DEFAULT_DIAL_TIMEOUT_MS;
    uint32_t wait_ms = opts && opts->request_timeout_ms ? opts->request_timeout_ms
                                                        : KEEL_DEFAULT_REQUEST_TIMEOUT_MS;
    int fd = keel_snapread_dial(endpoint, opts ? opts->source_address : NULL, (int)dial_ms);
    if (fd < 0) {
        int rv = errno == EINVAL ? KEEL_EINVAL : KEEL_EIO;
        snprintf(msg, sizeof(msg), "%s: %s", endpoint,
                 rv == KEEL_EINVAL ? "not a HOST:PORT (or a bad --source-address)"
                 : errno == ENXIO  ? "the name does not resolve"
                                   : strerror(errno));
        kc_set_errmsg(msg);
        keel_tls_ctx_free(ctx);
        return rv;
    }
    /* The connect is bounded by the dial timeout; from here on each wait by the request's. */
    struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    /* TLS: the stream is read from the relay's plain end (tls/tls_relay.h). */
    struct keel_tls_relay *relay = NULL;
    int sfd = fd;
    if (ctx != NULL) {
        char host[64];
        snprintf(host, sizeof(host), "%.*s", (int)strcspn(endpoint, ":"), endpoint);
        int rv = keel_tls_relay_start(ctx, host, fd, (int)wait_ms, &relay, &sfd, msg, sizeof(msg));
        keel_tls_ctx_free(ctx);
        if (rv != 0) {
            close(fd);
            kc_set_errmsg(msg);
            return rv;
        }
        setsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    struct download d = {.sink = sink, .data = data, .first = true};
    char why[KEEL_ERRMSG_MAX - 80];
    int rv = keel_snapread_run_token(sfd, opts && opts->client_name ? opts->client_name : "libkeel",
                                     opts ? opts->token : NULL, on_hello, on_chunk, &d, why,
                                     sizeof(why));
    if (relay != NULL) {
        close(sfd);
        char tls_why[256];
        keel_tls_relay_finish(relay, tls_why, sizeof(tls_why));
        if (rv != 0 && tls_why[0] != '\0')
            snprintf(why, sizeof(why), "%s", tls_why); /* what ended the stream */
    }
    close(fd);
    if (rv != 0) {
        snprintf(msg, sizeof(msg), "snapshot from %s: %s", endpoint, why);
        kc_set_errmsg(msg);
        return rv;
    }
    if (info != NULL)
        *info = d.info;
    return 0;
}
