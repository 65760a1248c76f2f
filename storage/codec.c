/* On-disk encodings of the store: revision keys, key entries and history records. */
#include <errno.h>
#include <string.h>

#include "internal.h"

void ks_revkey_encode(int64_t rev, uint32_t sub, uint8_t out[REVKEY_LEN])
{
    keel_put_be64(out, (uint64_t)rev);
    keel_put_be32(out + 8, sub);
}

struct revkey ks_revkey_decode(const MDB_val *v)
{
    const uint8_t *p = v->mv_data;
    struct revkey rk = {(int64_t)keel_get_be64(p), keel_get_be32(p + 8)};
    return rk;
}

void ks_keyrev_encode(int64_t rev, uint32_t sub, bool tombstone, uint8_t out[KEYREV_LEN])
{
    ks_revkey_encode(rev, sub, out);
    out[12] = tombstone ? 1 : 0;
}

struct keyrev ks_keyrev_decode(const MDB_val *v)
{
    const uint8_t *p = v->mv_data;
    struct keyrev kr = {(int64_t)keel_get_be64(p), keel_get_be32(p + 8), p[12] != 0};
    return kr;
}

/*
 * Record layout: type u8, 3 bytes zero, key length u32, create_revision i64, version i64,
 * lease i64 (all native order), then the key, then the value.
 */
size_t ks_record_size(size_t key_len, size_t value_len)
{
    return RECORD_HEADER + key_len + value_len;
}

void ks_record_encode(const struct record *r, uint8_t *out)
{
    uint32_t klen = (uint32_t)r->key.mv_size;
    memset(out, 0, 4);
    out[0] = (uint8_t)r->type;
    memcpy(out + 4, &klen, 4);
    memcpy(out + 8, &r->create_revision, 8);
    memcpy(out + 16, &r->version, 8);
    memcpy(out + 24, &r->lease, 8);
    memcpy(out + RECORD_HEADER, r->key.mv_data, r->key.mv_size);
    if (r->value.mv_size > 0)
        memcpy(out + RECORD_HEADER + r->key.mv_size, r->value.mv_data, r->value.mv_size);
}

int ks_record_decode(const MDB_val *v, struct record *r)
{
    const uint8_t *p = v->mv_data;
    uint32_t klen;
    if (v->mv_size < RECORD_HEADER || p[0] > REC_DELETE)
        return KEEL_ECORRUPT;
    memcpy(&klen, p + 4, 4);
    if (klen > v->mv_size - RECORD_HEADER)
        return KEEL_ECORRUPT;
    r->type = (enum rec_type)p[0];
    memcpy(&r->create_revision, p + 8, 8);
    memcpy(&r->version, p + 16, 8);
    memcpy(&r->lease, p + 24, 8);
    r->key.mv_data = (void *)(p + RECORD_HEADER);
    r->key.mv_size = klen;
    r->value.mv_data = (void *)(p + RECORD_HEADER + klen);
    r->value.mv_size = v->mv_size - RECORD_HEADER - klen;
    return 0;
}

int ks_mdb_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return KEEL_ENOTFOUND;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
        return KEEL_EMAPFULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
        return KEEL_ECORRUPT;
    case ENOMEM:
        return KEEL_ENOMEM;
    case MDB_BAD_VALSIZE:
        /* Local, never a request result: every size LMDB refuses is refused by validation
         * first, so reaching this means this member differs from its peers. */
        return KEEL_EBADVALSIZE;
    default:
        return KEEL_EIO;
    }
}

int ks_val_cmp(const MDB_val *a, const MDB_val *b)
{
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    int c = n ? memcmp(a->mv_data, b->mv_data, n) : 0;
    if (c != 0)
        return c;
    return a->mv_size < b->mv_size ? -1 : a->mv_size > b->mv_size;
}
