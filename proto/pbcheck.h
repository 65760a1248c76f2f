/*
 * What protobuf-c (1.4, Debian 12) does not check in the bytes it unpacks, and keel must before
 * trusting a message from the network (keel_frame_unpack runs both checks):
 *
 *  - Nesting. protobuf-c unpacks, packs and frees a message recursively, one C stack frame or
 *    more per level, with no limit: a Request of a few tens of KiB holding thousands of nested
 *    txns overflows the stack of the member that decodes it.
 *  - Field number 0. protobuf-c refuses a tag of 0 in one byte, but takes it spelled in two
 *    (0x80 0x00) and keeps it as an unknown field, which it writes back in one byte: the packed
 *    message no longer unpacks. keel packs a Request's write into the raft log, where no member
 *    could read it.
 *
 * Nothing here allocates.
 */
#ifndef KEEL_PBCHECK_H
#define KEEL_PBCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Levels of messages a frame may nest, the outermost counted: well above the deepest message
 * keel accepts (a txn nested 8 deep is about 20 levels), far below what protobuf-c's recursion
 * can take. */
#define KEEL_PB_MAX_DEPTH 64

/*
 * Whether the bytes nest messages of type desc at most max_depth levels deep, the outermost
 * counted; found without recursion and before unpacking. Bytes that are not well-formed
 * protobuf pass when their nesting is within the limit up to where they break: protobuf-c
 * refuses them, at a level it has not descended from.
 */
bool keel_pb_depth_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                      unsigned max_depth);

/* Whether an unpacked message packs into bytes protobuf-c unpacks again: no unknown field of
 * number 0 in it, at any level. Recursive: check the depth of its bytes first. */
bool keel_pb_repackable(const ProtobufCMessage *m);

#endif
