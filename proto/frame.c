#include "frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "err.h"
#include "pbcheck.h"

#define DECODER_MIN_CAP 4096

void keel_frame_decoder_init(struct keel_frame_decoder *d, size_t max_frame)
{
    memset(d, 0, sizeof(*d));
    d->max_frame = max_frame ? max_frame : KEEL_FRAME_DEFAULT_MAX;
}

void keel_frame_decoder_close(struct keel_frame_decoder *d)
{
    free(d->buf);
    d->buf = NULL;
    d->start = d->end = d->cap = 0;
}

int keel_frame_decoder_space(struct keel_frame_decoder *d, size_t want, uint8_t **buf, size_t *len)
{
    if (d->error)
        return d->error;
    /* Slide consumed bytes out first: a frame is contiguous only if it starts at offset 0 or
     * fits behind start, and sliding keeps the buffer from growing with the stream. */
    if (d->start > 0 && (d->start == d->end || d->cap - d->end < want)) {
        memmove(d->buf, d->buf + d->start, d->end - d->start);
        d->end -= d->start;
        d->start = 0;
    }
    /* A NULL buffer is grown even for want 0: callers do pointer arithmetic and memcpy on the
     * result, both undefined on NULL. */
    if (d->buf == NULL || d->cap - d->end < want) {
        /* Past this no power-of-two capacity fits, and doubling would wrap cap to 0 and spin. */
        if (want > SIZE_MAX / 2 - d->end)
            return KEEL_ENOMEM;
        size_t cap = d->cap ? d->cap : DECODER_MIN_CAP;
        while (cap - d->end < want)
            cap *= 2;
        uint8_t *nb = realloc(d->buf, cap);
        if (nb == NULL)
            return KEEL_ENOMEM;
        d->buf = nb;
        d->cap = cap;
    }
    *buf = d->buf + d->end;
    *len = d->cap - d->end;
    return 0;
}

void keel_frame_decoder_commit(struct keel_frame_decoder *d, size_t n)
{
    d->end += n;
}

int keel_frame_decoder_feed(struct keel_frame_decoder *d, const void *data, size_t n)
{
    uint8_t *space;
    size_t len;
    if (n == 0)
        return d->error;
    int rv = keel_frame_decoder_space(d, n, &space, &len);
    if (rv != 0)
        return rv;
    memcpy(space, data, n);
    keel_frame_decoder_commit(d, n);
    return 0;
}

int keel_frame_decoder_next(struct keel_frame_decoder *d, const uint8_t **payload, size_t *len)
{
    if (d->error)
        return d->error;
    size_t avail = d->end - d->start;
    if (avail < KEEL_FRAME_HEADER)
        return 0;
    uint32_t n = keel_get_be32(d->buf + d->start);
    if (n > d->max_frame) {
        d->error = KEEL_EFRAMETOOLARGE;
        return d->error;
    }
    if (avail - KEEL_FRAME_HEADER < n)
        return 0;
    *payload = d->buf + d->start + KEEL_FRAME_HEADER;
    *len = n;
    d->start += KEEL_FRAME_HEADER + n;
    return 1;
}

size_t keel_frame_decoder_pending(const struct keel_frame_decoder *d)
{
    return d->end - d->start;
}

size_t keel_frame_size(const ProtobufCMessage *msg)
{
    return KEEL_FRAME_HEADER + protobuf_c_message_get_packed_size(msg);
}

size_t keel_frame_pack(const ProtobufCMessage *msg, uint8_t *out)
{
    size_t n = protobuf_c_message_pack(msg, out + KEEL_FRAME_HEADER);
    keel_put_be32(out, (uint32_t)n);
    return KEEL_FRAME_HEADER + n;
}

int keel_frame_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                      const uint8_t *payload, size_t len, ProtobufCMessage **out)
{
    /* Before protobuf-c recurses into it; and after, what it could not pack back (pbcheck.h). */
    if (!keel_pb_depth_ok(desc, payload, len, KEEL_PB_MAX_DEPTH))
        return KEEL_EBADFRAME;
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, alloc, len, payload);
    if (m == NULL)
        return KEEL_EBADFRAME;
    if (!keel_pb_repackable(m)) {
        protobuf_c_message_free_unpacked(m, alloc);
        return KEEL_EBADFRAME;
    }
    *out = m;
    return 0;
}
