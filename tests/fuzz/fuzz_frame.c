/*
 * fuzz_frame: the frame decoder (proto/frame.h) on a byte stream cut into pieces of any size,
 * and the messages a frame may carry.
 *
 * Input: byte 0 picks the decoder's limit (0: the default, else byte * 64), byte 1 how the
 * stream is cut (a seed for the piece sizes, and whether pieces come through _feed or through
 * _space/_commit as the session's socket reads do); the rest is the stream.
 *
 * Checked, besides crashes, leaks and undefined behaviour: every frame handed out is the next
 * length-prefixed piece of the stream, within the limit; what is pending is exactly what was fed
 * and not handed out; the buffer never grows past a bound set by the limit and the piece size,
 * whatever the stream; a frame too large is refused for good. Each payload is unpacked as the
 * three messages that travel in frames (Hello, Request, Response); one that unpacks is packed
 * again, framed, and must come back whole through a fresh decoder.
 */
#include <string.h>

#include "bytes.h"
#include "err.h"
#include "frame.h"
#include "fuzz.h"
#include "keel.pb-c.h"

#define MAX_PIECE (64u * 1024) /* the session's and the client's read size */

static void roundtrip(const ProtobufCMessageDescriptor *desc, const uint8_t *payload, size_t len)
{
    ProtobufCMessage *m = NULL;
    if (keel_frame_unpack(desc, NULL, payload, len, &m) != 0)
        return;
    size_t n = keel_frame_size(m);
    uint8_t *buf = malloc(n);
    FZ_CHECK(buf != NULL);
    FZ_CHECK(keel_frame_pack(m, buf) == n);
    struct keel_frame_decoder d;
    keel_frame_decoder_init(&d, 0);
    const uint8_t *p;
    size_t plen;
    FZ_CHECK(keel_frame_decoder_feed(&d, buf, n) == 0);
    FZ_CHECK(keel_frame_decoder_next(&d, &p, &plen) == 1);
    FZ_CHECK(plen == n - KEEL_FRAME_HEADER && memcmp(p, buf + KEEL_FRAME_HEADER, plen) == 0);
    FZ_CHECK(keel_frame_decoder_pending(&d) == 0);
    ProtobufCMessage *again = NULL;
    FZ_CHECK(keel_frame_unpack(desc, NULL, p, plen, &again) == 0);
    protobuf_c_message_free_unpacked(again, NULL);
    keel_frame_decoder_close(&d);
    free(buf);
    protobuf_c_message_free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz in = {data, size};
    uint8_t lim = fz_u8(&in), cut = fz_u8(&in);
    size_t max = lim ? (size_t)lim * 64 : KEEL_FRAME_DEFAULT_MAX;
    const uint8_t *stream = in.p;
    size_t total = in.n, fed = 0, taken = 0;
    uint32_t rng = cut * 2654435761u + 1;
    /* Small pieces most of the time: they split headers and payloads everywhere. */
    size_t piece_max = (cut & 0x80) ? MAX_PIECE : 1 + (cut & 0x0f);
    bool use_space = (cut & 0x40) != 0;

    struct keel_frame_decoder d;
    keel_frame_decoder_init(&d, max);
    int error = 0;
    while (fed < total && error == 0) {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        size_t n = 1 + rng % piece_max;
        if (n > total - fed)
            n = total - fed;
        if (use_space) {
            uint8_t *space;
            size_t len;
            int rv = keel_frame_decoder_space(&d, MAX_PIECE, &space, &len);
            FZ_CHECK(rv == 0 || rv == d.error);
            if (rv != 0)
                break;
            FZ_CHECK(len >= MAX_PIECE);
            if (n > len)
                n = len;
            memcpy(space, stream + fed, n);
            keel_frame_decoder_commit(&d, n);
        } else {
            int rv = keel_frame_decoder_feed(&d, stream + fed, n);
            FZ_CHECK(rv == 0 || rv == d.error);
            if (rv != 0)
                break;
        }
        fed += n;
        /* Whatever was buffered before this piece is less than one whole frame. */
        FZ_CHECK(d.cap <= 4096 || d.cap < 2 * (max + KEEL_FRAME_HEADER + MAX_PIECE));
        for (;;) {
            const uint8_t *payload;
            size_t len;
            int rv = keel_frame_decoder_next(&d, &payload, &len);
            if (rv == 0)
                break;
            if (rv < 0) {
                FZ_CHECK(rv == KEEL_EFRAMETOOLARGE);
                FZ_CHECK(keel_get_be32(stream + taken) > max);
                error = rv;
                break;
            }
            FZ_CHECK(rv == 1 && len <= max);
            FZ_CHECK(taken + KEEL_FRAME_HEADER + len <= fed);
            FZ_CHECK(keel_get_be32(stream + taken) == len);
            FZ_CHECK(len == 0 || memcmp(payload, stream + taken + KEEL_FRAME_HEADER, len) == 0);
            taken += KEEL_FRAME_HEADER + len;
            roundtrip(&keel__hello__descriptor, payload, len);
            roundtrip(&keel__request__descriptor, payload, len);
            roundtrip(&keel__response__descriptor, payload, len);
        }
        FZ_CHECK(error != 0 || keel_frame_decoder_pending(&d) == fed - taken);
    }
    if (error != 0) {
        /* Sticky: the stream is out of step for good. */
        const uint8_t *p;
        size_t len;
        FZ_CHECK(keel_frame_decoder_next(&d, &p, &len) == error);
        FZ_CHECK(keel_frame_decoder_feed(&d, "x", 1) == error);
    }
    keel_frame_decoder_close(&d);
    return 0;
}
