/*
 * gRPC's wire pieces that need no I/O (grpc/doc/PROTOCOL-HTTP2.md): the length-prefixed message
 * framing inside HTTP/2 DATA, grpc-message's percent-encoding and grpc-timeout's syntax. h2.c
 * uses them; they are apart so that each can be tested on bytes alone.
 *
 * A gRPC message on the wire is a 1-byte flag (1: compressed), a 4-byte big-endian length and that
 * many bytes of protobuf. DATA frame boundaries are independent of message boundaries: a frame may
 * hold several messages, or a piece of one.
 */
#ifndef KEEL_GW_GRPCWIRE_H
#define KEEL_GW_GRPCWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define GW_GRPC_PREFIX 5 /* flag + 4-byte length */

/*
 * Reassembles messages from DATA chunks. Memory: at most one message body of at most max bytes,
 * allocated only when a message arrives split across chunks (a message whole inside one chunk is
 * handed out in place, without a copy).
 */
struct gw_deframer {
    size_t max; /* largest message body accepted */
    uint8_t hdr[GW_GRPC_PREFIX];
    size_t hdr_have;    /* prefix bytes seen of the current message */
    uint32_t len;       /* the current message's length, once hdr_have == 5 */
    uint8_t *buf;       /* a split message's body being gathered (len bytes) */
    size_t have;        /* body bytes gathered in buf */
    const uint8_t *out; /* after GW_DEFRAME_MESSAGE: the body (in buf or in the chunk) */
    bool ready;         /* a message is handed out and gw_deframer_next not yet called */
};

enum gw_deframe {
    GW_DEFRAME_MORE = 0,       /* the chunk is used up inside a message: feed the next one */
    GW_DEFRAME_MESSAGE = 1,    /* a message is complete: gw_deframer_message, then _next */
    GW_DEFRAME_TOO_LARGE = -1, /* the prefix announces more than max bytes (nothing allocated) */
    GW_DEFRAME_NOMEM = -2,
};

/* Start empty, accepting bodies of at most max bytes. */
void gw_deframer_init(struct gw_deframer *d, size_t max);

/*
 * Consume bytes of p[0..n) up to the end of at most one message; *used says how many. Call again
 * with the rest (p + *used) after handling a message. The chunk must stay valid until
 * gw_deframer_next when MESSAGE is returned (the body may point into it). After TOO_LARGE or
 * NOMEM the deframer is unusable until gw_deframer_free/init: the stream is failed.
 */
enum gw_deframe gw_deframer_feed(struct gw_deframer *d, const uint8_t *p, size_t n, size_t *used);

/* After MESSAGE: the body (len bytes, NULL when empty) and the compressed flag (flag byte != 0). */
const uint8_t *gw_deframer_message(const struct gw_deframer *d, size_t *len, bool *compressed);

/* Done with the message handed out: the next one may start. */
void gw_deframer_next(struct gw_deframer *d);

/* Whether a message is partly received (a prefix or body byte seen, message incomplete): at the
 * client's end of stream this is a truncated message. */
bool gw_deframer_partial(const struct gw_deframer *d);

/* Bytes the deframer holds allocated (a split message's body). */
size_t gw_deframer_buffered(const struct gw_deframer *d);

/* Release what it holds; init again to reuse. */
void gw_deframer_free(struct gw_deframer *d);

/* Write the 5-byte prefix of a message of len bytes into out. */
void gw_grpc_prefix(uint8_t out[GW_GRPC_PREFIX], bool compressed, uint32_t len);

/*
 * grpc-message's value for msg: bytes outside 0x20..0x7E, and '%', become "%XX" (upper-case hex),
 * as gRPC requires. At most max_in bytes of msg are encoded (a longer message is cut there).
 * Returns a malloc'd NUL-terminated string (the caller frees), or NULL when out of memory. NULL
 * msg:
 * "".
 */
char *gw_grpc_message_encode(const char *msg, size_t max_in);

/*
 * Parse a grpc-timeout value (len bytes, not NUL-terminated): 1 to 8 ASCII digits, then one unit
 * H M S m u n. *ms gets the deadline in milliseconds, rounded up, at least 1 (0 means "no deadline"
 * to handlers, and "0n" still means "already expired"), at most UINT32_MAX. 0, or -1 when the value
 * does not parse (*ms untouched).
 */
int gw_grpc_timeout_parse(const char *v, size_t len, uint32_t *ms);

/*
 * Unpack a request body into a message of type d, as h2.c hands messages to handlers: the nesting
 * is counted first (proto/pbcheck.h: protobuf-c recurses without a limit), then protobuf-c
 * unpacks, then a field number 0 is refused (protobuf-c keeps one spelled in two bytes and writes
 * back bytes it cannot read; grpc-go refuses it as an illegal tag). The message (free with
 * protobuf_c_message_free_unpacked(m, NULL)), or NULL with *why saying what was wrong.
 */
ProtobufCMessage *gw_grpc_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                                 const char **why);

#endif
