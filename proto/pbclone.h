/*
 * A deep copy of an unpacked protobuf-c message, owned as protobuf_c_message_unpack's are: every
 * submessage, array, string and bytes field its own allocation from `alloc`, so that
 * protobuf_c_message_free_unpacked(copy, alloc) releases it. The source may live anywhere (an
 * arena, a frame being read); nothing of it is referred to afterwards.
 *
 * Why not pack and unpack again: the copy skips the encoding and the parse, about a third of
 * what a client spent handing a 250k-key range from its loop thread to a caller.
 */
#ifndef KEEL_PBCLONE_H
#define KEEL_PBCLONE_H

#include <protobuf-c/protobuf-c.h>

/* The copy, or NULL when an allocation failed (nothing is left allocated). alloc NULL: malloc.
 * Recursive, one level per nesting level: m must have come through keel_frame_unpack's depth
 * check (pbcheck.h) or be built by keel itself. */
ProtobufCMessage *keel_pb_clone(const ProtobufCMessage *m, ProtobufCAllocator *alloc);

/* The same into c, a message of m's type that the caller provides (not itself allocated here).
 * 0, or -1 when an allocation failed: c then holds what was copied so far and nothing of m, so
 * that releasing its fields as protobuf_c_message_free_unpacked would (or the arena they came
 * from) frees everything. */
int keel_pb_clone_into(ProtobufCMessage *c, const ProtobufCMessage *m, ProtobufCAllocator *alloc);

/* The bytes protobuf-c lays one value of type t out in (a field, an element of a repeated
 * field): 8 for the 64-bit numbers, a pointer for strings and messages, a ProtobufCBinaryData
 * for bytes, 4 for the rest. */
size_t keel_pb_value_size(ProtobufCType t);

#endif
