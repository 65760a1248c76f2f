/*
 * The raft entry format: an 8-byte header {magic u32, payload length u32} (little-endian), the
 * packed CommandBatch, zero padding to a multiple of 8 bytes.
 *
 * The padding is not cosmetic: Debian's raft 0.15 is built without assertions and silently
 * corrupts followers and its own log on entries whose length is not a multiple of 8
 * (research/raft.md, trap 1). Every entry keel proposes is built here, and keel_entry_check is
 * applied again right before raft_apply.
 */
#ifndef KEEL_ENTRY_H
#define KEEL_ENTRY_H

#include <raft.h>

#include "keel.pb-c.h"

#define KEEL_ENTRY_MAGIC  0x4c45454bu /* "KEEL" */
#define KEEL_ENTRY_HEADER 8

/* Pack batch into a raft_malloc'd buffer (raft takes it on a successful raft_apply).
 * 0 or KEEL_ENOMEM. */
int keel_entry_encode(const Keel__CommandBatch *batch, struct raft_buffer *out);

/* 0 when buf is a well-formed keel entry (length a multiple of 8), else KEEL_EINVAL. */
int keel_entry_check(const struct raft_buffer *buf);

/* The payload of a keel entry. 0 or KEEL_ECORRUPT. */
int keel_entry_decode(const struct raft_buffer *buf, const uint8_t **payload, size_t *len);

#endif
