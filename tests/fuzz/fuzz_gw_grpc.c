/*
 * fuzz_gw_grpc: what keel-gateway does with the bytes of a gRPC request stream before a handler
 * sees them: the deframer (gateway/grpcwire.h) on DATA chunks cut anywhere, the nesting check
 * (proto/pbcheck.h) and protobuf-c's unpacking into the method's etcd request type.
 *
 * The unpacking is gw_grpc_unpack, the function h2.c calls.
 *
 * Input: byte 0 picks the method (gw_method_at, modulo gw_method_count), byte 1 the largest message
 * body (0: 1.5 MiB, etcd's limit; else byte * 16), byte 2 how the stream is cut (a seed for the
 * chunk sizes); the rest is the stream of length-prefixed messages.
 *
 * Checked, besides crashes, leaks and undefined behaviour: every message handed out is the next
 * prefixed piece of the stream and within the bound; the deframer never holds more than one body;
 * a message that passes the depth check and unpacks packs into bytes that unpack again and pack
 * the same (h2.c hands handlers only such messages).
 */
#include <string.h>

#include "fuzz.h"
#include "grpcwire.h"
#include "methods.h"

static void check_message(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len)
{
    const char *why = NULL;
    ProtobufCMessage *m = gw_grpc_unpack(desc, p, len, &why);
    if (!m) {
        FZ_CHECK(why != NULL);
        return;
    }
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *a = malloc(n ? n : 1), *b = malloc(n ? n : 1);
    FZ_CHECK(a && b);
    FZ_CHECK(protobuf_c_message_pack(m, a) == n);
    ProtobufCMessage *again = protobuf_c_message_unpack(desc, NULL, n, a);
    FZ_CHECK(again != NULL);
    FZ_CHECK(protobuf_c_message_get_packed_size(again) == n);
    FZ_CHECK(protobuf_c_message_pack(again, b) == n && memcmp(a, b, n) == 0);
    protobuf_c_message_free_unpacked(again, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz in = {data, size};
    const struct gw_method *m = gw_method_at(fz_u8(&in) % gw_method_count());
    uint8_t lim = fz_u8(&in), cut = fz_u8(&in);
    size_t max = lim ? (size_t)lim * 16 : 1536 * 1024;
    uint32_t rng = cut * 2654435761u + 1;
    struct gw_deframer d;
    gw_deframer_init(&d, max);
    const uint8_t *p = in.p;
    size_t left = in.n, pos = 0; /* pos: offset in the stream of the next unread byte */
    size_t msg_start = 0;        /* where the current message's prefix began */
    while (left > 0) {
        rng = rng * 1103515245u + 12345u;
        size_t chunk = 1 + (rng >> 16) % ((cut & 0x80) ? 4096 : 8);
        if (chunk > left)
            chunk = left;
        const uint8_t *c = p;
        size_t n = chunk;
        while (n > 0) {
            size_t used = 0;
            enum gw_deframe r = gw_deframer_feed(&d, c, n, &used);
            FZ_CHECK(used <= n && (r != GW_DEFRAME_MORE || used == n));
            c += used, n -= used, pos += used;
            if (r == GW_DEFRAME_TOO_LARGE) {
                uint32_t announced = (uint32_t)in.p[msg_start + 1] << 24 |
                                     (uint32_t)in.p[msg_start + 2] << 16 |
                                     (uint32_t)in.p[msg_start + 3] << 8 | in.p[msg_start + 4];
                FZ_CHECK(announced > max);
                gw_deframer_free(&d);
                return 0;
            }
            FZ_CHECK(r != GW_DEFRAME_NOMEM);
            if (r == GW_DEFRAME_MESSAGE) {
                size_t len;
                bool compressed;
                const uint8_t *body = gw_deframer_message(&d, &len, &compressed);
                FZ_CHECK(len <= max && pos - msg_start == GW_GRPC_PREFIX + len);
                FZ_CHECK(len == 0 || memcmp(body, in.p + msg_start + GW_GRPC_PREFIX, len) == 0);
                FZ_CHECK(compressed == (in.p[msg_start] != 0));
                if (!compressed)
                    check_message(m->req, body, len);
                gw_deframer_next(&d);
                msg_start = pos;
            }
            FZ_CHECK(gw_deframer_buffered(&d) <= max);
        }
        p += chunk, left -= chunk;
    }
    FZ_CHECK(gw_deframer_partial(&d) == (pos > msg_start));
    gw_deframer_free(&d);
    return 0;
}
