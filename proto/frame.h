/*
 * Framing: every message on a keel connection is a 4-byte big-endian length followed by that
 * many bytes of one protobuf message.
 *
 * The decoder is incremental and does no I/O: bytes are handed to it in whatever pieces the
 * socket produced, and whole frames come out. A length above the decoder's maximum is
 * KEEL_EFRAMETOOLARGE as soon as the 4 length bytes are in; a frame whose bytes do not unpack
 * as the expected message is KEEL_EBADFRAME (from keel_frame_unpack). Both are fatal for the
 * connection: the stream can no longer be trusted to be in step.
 */
#ifndef KEEL_FRAME_H
#define KEEL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define KEEL_FRAME_HEADER      4
#define KEEL_FRAME_DEFAULT_MAX (2u * 1024 * 1024)
/* The most bytes of key-values one reply may carry: a reply must fit a client's default frame
 * limit with room for its header. A constant, not a flag: a txn's reads are evaluated at apply,
 * where every member must reach the same result (the message of KEEL_EREPLYTOOLARGE names it). */
#define KEEL_MAX_REPLY_BYTES (KEEL_FRAME_DEFAULT_MAX - 64u * 1024)

struct keel_frame_decoder {
    uint8_t *buf; /* buffered bytes: [start, end) not yet consumed */
    size_t start;
    size_t end;
    size_t cap;
    size_t max_frame; /* largest accepted payload */
    int error;        /* sticky: once set, every call returns it */
};

/* Prepare a decoder accepting payloads of at most max_frame bytes (0: the default). */
void keel_frame_decoder_init(struct keel_frame_decoder *d, size_t max_frame);

/* Free the decoder's buffer. */
void keel_frame_decoder_close(struct keel_frame_decoder *d);

/* Copy n bytes of stream into the decoder. 0, KEEL_ENOMEM, or the sticky error. */
int keel_frame_decoder_feed(struct keel_frame_decoder *d, const void *data, size_t n);

/* Writable space for at least `want` more bytes (for reading a socket straight into the
 * decoder); *len gets its size. Follow with keel_frame_decoder_commit. 0 or KEEL_ENOMEM. */
int keel_frame_decoder_space(struct keel_frame_decoder *d, size_t want, uint8_t **buf, size_t *len);

/* Mark n bytes of the space returned by keel_frame_decoder_space as filled. */
void keel_frame_decoder_commit(struct keel_frame_decoder *d, size_t n);

/*
 * The next whole frame: 1 with *payload and *len set (valid until the next call on the decoder),
 * 0 when more bytes are needed, KEEL_EFRAMETOOLARGE when the announced length is over the
 * limit (sticky).
 */
int keel_frame_decoder_next(struct keel_frame_decoder *d, const uint8_t **payload, size_t *len);

/* Bytes buffered that do not yet form a frame: non-zero at end of stream means truncation. */
size_t keel_frame_decoder_pending(const struct keel_frame_decoder *d);

/* Size of msg framed: header plus packed size. */
size_t keel_frame_size(const ProtobufCMessage *msg);

/* Write msg framed into out, which has keel_frame_size(msg) bytes. Returns the bytes written. */
size_t keel_frame_pack(const ProtobufCMessage *msg, uint8_t *out);

/*
 * Unpack one frame's payload as a message of type desc, allocating through alloc (NULL: malloc,
 * to be freed with protobuf_c_message_free_unpacked). 0 or KEEL_EBADFRAME, also for what
 * protobuf-c would take but keel must not (proto/pbcheck.h): messages nested more than
 * KEEL_PB_MAX_DEPTH deep, and messages that would not unpack again once packed. Use it, not the
 * generated _unpack, for every message read from the network.
 */
int keel_frame_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                      const uint8_t *payload, size_t len, ProtobufCMessage **out);

#endif
