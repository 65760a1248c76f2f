/*
 * gRPC's I/O-free wire pieces (see grpcwire.h).
 */
#include "grpcwire.h"

#include "pbcheck.h"

#include <stdlib.h>
#include <string.h>

void gw_deframer_init(struct gw_deframer *d, size_t max)
{
    *d = (struct gw_deframer){.max = max};
}

enum gw_deframe gw_deframer_feed(struct gw_deframer *d, const uint8_t *p, size_t n, size_t *used)
{
    size_t off = 0;
    *used = 0;
    if (d->ready)
        gw_deframer_next(d); /* the caller forgot: the previous message is done */
    while (d->hdr_have < GW_GRPC_PREFIX) {
        if (off == n) {
            *used = off;
            return GW_DEFRAME_MORE;
        }
        d->hdr[d->hdr_have++] = p[off++];
        if (d->hdr_have == GW_GRPC_PREFIX) {
            d->len = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
                     (uint32_t)d->hdr[3] << 8 | (uint32_t)d->hdr[4];
            if (d->len > d->max) {
                *used = off;
                return GW_DEFRAME_TOO_LARGE;
            }
        }
    }
    size_t avail = n - off;
    if (d->have == 0 && !d->buf && avail >= d->len) {
        /* The whole body is in this chunk: hand it out in place. */
        d->out = d->len ? p + off : NULL;
        off += d->len;
        d->ready = true;
        *used = off;
        return GW_DEFRAME_MESSAGE;
    }
    if (!d->buf) {
        d->buf = malloc(d->len);
        if (!d->buf) {
            *used = off;
            return GW_DEFRAME_NOMEM;
        }
    }
    size_t take = d->len - d->have;
    if (take > avail)
        take = avail;
    memcpy(d->buf + d->have, p + off, take);
    d->have += take;
    off += take;
    *used = off;
    if (d->have < d->len)
        return GW_DEFRAME_MORE;
    d->out = d->buf;
    d->ready = true;
    return GW_DEFRAME_MESSAGE;
}

const uint8_t *gw_deframer_message(const struct gw_deframer *d, size_t *len, bool *compressed)
{
    *len = d->ready ? d->len : 0;
    if (compressed)
        *compressed = d->ready && d->hdr[0] != 0;
    return d->ready ? d->out : NULL;
}

void gw_deframer_next(struct gw_deframer *d)
{
    free(d->buf);
    gw_deframer_init(d, d->max);
}

bool gw_deframer_partial(const struct gw_deframer *d)
{
    return !d->ready && d->hdr_have > 0;
}

size_t gw_deframer_buffered(const struct gw_deframer *d)
{
    return d->buf ? d->len : 0;
}

void gw_deframer_free(struct gw_deframer *d)
{
    free(d->buf);
    d->buf = NULL;
    d->ready = false;
    d->hdr_have = 0;
    d->have = 0;
}

void gw_grpc_prefix(uint8_t out[GW_GRPC_PREFIX], bool compressed, uint32_t len)
{
    out[0] = compressed ? 1 : 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

char *gw_grpc_message_encode(const char *msg, size_t max_in)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = msg ? strnlen(msg, max_in) : 0;
    char *out = malloc(3 * n + 1); /* every byte may become %XX */
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)msg[i];
        if (b >= 0x20 && b <= 0x7e && b != '%') {
            out[o++] = (char)b;
        } else {
            out[o++] = '%';
            out[o++] = hex[b >> 4];
            out[o++] = hex[b & 15];
        }
    }
    out[o] = '\0';
    return out;
}

int gw_grpc_timeout_parse(const char *v, size_t len, uint32_t *ms)
{
    if (len < 2 || len > 9)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    /* n < 10^8: every product below fits in 64 bits. */
    uint64_t out;
    switch (v[len - 1]) {
    case 'H':
        out = n * 3600000;
        break;
    case 'M':
        out = n * 60000;
        break;
    case 'S':
        out = n * 1000;
        break;
    case 'm':
        out = n;
        break;
    case 'u':
        out = (n + 999) / 1000;
        break;
    case 'n':
        out = (n + 999999) / 1000000;
        break;
    default:
        return -1;
    }
    if (out == 0)
        out = 1;
    *ms = out > UINT32_MAX ? UINT32_MAX : (uint32_t)out;
    return 0;
}

_Static_assert(KEEL_PB_MAX_DEPTH == 64, "the depth error names 64 levels");

ProtobufCMessage *gw_grpc_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                                 const char **why)
{
    if (!keel_pb_depth_ok(d, p, len, KEEL_PB_MAX_DEPTH)) {
        *why = "grpc: error unmarshalling request: messages nested deeper than 64 levels";
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, p);
    if (!m) {
        *why = "grpc: error unmarshalling request: not a valid protobuf message of the method's "
               "request type";
        return NULL;
    }
    if (!keel_pb_repackable(m)) {
        protobuf_c_message_free_unpacked(m, NULL);
        *why = "grpc: error unmarshalling request: proto: illegal tag 0";
        return NULL;
    }
    return m;
}
