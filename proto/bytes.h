/*
 * Fixed-width integers in byte buffers, in an explicit byte order. Big-endian where byte order
 * must equal numeric order (LMDB keys, frame lengths); little-endian for fixed headers.
 */
#ifndef KEEL_BYTES_H
#define KEEL_BYTES_H

#include <stdint.h>

static inline void keel_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t keel_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline void keel_put_be64(uint8_t *p, uint64_t v)
{
    keel_put_be32(p, (uint32_t)(v >> 32));
    keel_put_be32(p + 4, (uint32_t)v);
}

static inline uint64_t keel_get_be64(const uint8_t *p)
{
    return (uint64_t)keel_get_be32(p) << 32 | keel_get_be32(p + 4);
}

static inline void keel_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t keel_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void keel_put_le64(uint8_t *p, uint64_t v)
{
    keel_put_le32(p, (uint32_t)v);
    keel_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t keel_get_le64(const uint8_t *p)
{
    return (uint64_t)keel_get_le32(p) | (uint64_t)keel_get_le32(p + 4) << 32;
}

#endif
