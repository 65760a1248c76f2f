#include "entry.h"

#include <string.h>

#include "bytes.h"
#include "err.h"

int keel_entry_encode(const Keel__CommandBatch *batch, struct raft_buffer *out)
{
    size_t n = keel__command_batch__get_packed_size(batch);
    if (n > UINT32_MAX - 16)
        return KEEL_ETOOLARGE;
    size_t total = (KEEL_ENTRY_HEADER + n + 7) & ~(size_t)7;
    uint8_t *p = raft_malloc(total);
    if (p == NULL)
        return KEEL_ENOMEM;
    keel_put_le32(p, KEEL_ENTRY_MAGIC);
    keel_put_le32(p + 4, (uint32_t)n);
    keel__command_batch__pack(batch, p + KEEL_ENTRY_HEADER);
    memset(p + KEEL_ENTRY_HEADER + n, 0, total - KEEL_ENTRY_HEADER - n);
    out->base = p;
    out->len = total;
    return 0;
}

int keel_entry_check(const struct raft_buffer *buf)
{
    if (buf->len < KEEL_ENTRY_HEADER || buf->len % 8 != 0)
        return KEEL_EINVAL;
    const uint8_t *p = buf->base;
    if (keel_get_le32(p) != KEEL_ENTRY_MAGIC || keel_get_le32(p + 4) > buf->len - KEEL_ENTRY_HEADER)
        return KEEL_EINVAL;
    return 0;
}

int keel_entry_decode(const struct raft_buffer *buf, const uint8_t **payload, size_t *len)
{
    if (keel_entry_check(buf) != 0)
        return KEEL_ECORRUPT;
    const uint8_t *p = buf->base;
    *payload = p + KEEL_ENTRY_HEADER;
    *len = keel_get_le32(p + 4);
    return 0;
}
