/*
 * Framing and error-code tests.
 *
 * The decoder sees whatever pieces a socket produces, so the same stream is fed split at every
 * point, byte by byte and in seeded random chunks, and must always yield the same frames, in
 * order, byte for byte. Hostile input (oversized lengths, malformed protobuf, random streams)
 * must end in the documented error and never in a crash: run this under ASan/UBSan.
 *
 * Every random choice comes from a fixed seed, so a failure replays exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "err.h"
#include "frame.h"
#include "keel.pb-c.h"
#include "pbclone.h"
#include "testutil.h"

#define SEED 0x6b65656c2d667261ull

/* Exhaustive split tests cost O(stream^2): a small limit keeps a near-max frame affordable. */
#define SMALL_MAX (8u * 1024)

#define MAX_FRAMES 16

/* ---------------------------------------------------------------------------------------
 * Helpers
 */

/* splitmix64: seedable and identical on every platform. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform enough in [lo, hi] for test purposes. */
static size_t rng_range(uint64_t *state, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(state) % (uint64_t)(hi - lo + 1));
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* A stream of framed messages and where each payload sits in it. */
struct stream {
    uint8_t *bytes;
    size_t len;
    size_t cap;
    size_t n;
    size_t off[MAX_FRAMES];  /* payload offset (after the header) */
    size_t plen[MAX_FRAMES]; /* payload length */
    const ProtobufCMessageDescriptor *desc[MAX_FRAMES];
    uint64_t id[MAX_FRAMES]; /* Request/Response id, a cheap field-level check after unpack */
};

static void stream_reserve(struct stream *s, size_t more)
{
    if (s->cap - s->len >= more)
        return;
    size_t cap = s->cap ? s->cap : 256;
    while (cap - s->len < more)
        cap *= 2;
    uint8_t *nb = realloc(s->bytes, cap);
    assert_non_null(nb);
    s->bytes = nb;
    s->cap = cap;
}

static void stream_add(struct stream *s, const ProtobufCMessage *m, uint64_t id)
{
    assert_true(s->n < MAX_FRAMES);
    size_t need = keel_frame_size(m);
    assert_int_equal(need, KEEL_FRAME_HEADER + protobuf_c_message_get_packed_size(m));
    stream_reserve(s, need);
    uint8_t *at = s->bytes + s->len;
    assert_int_equal(keel_frame_pack(m, at), need);
    size_t plen = need - KEEL_FRAME_HEADER;
    uint32_t hdr = (uint32_t)at[0] << 24 | (uint32_t)at[1] << 16 | (uint32_t)at[2] << 8 | at[3];
    assert_int_equal(hdr, plen);
    s->off[s->n] = s->len + KEEL_FRAME_HEADER;
    s->plen[s->n] = plen;
    s->desc[s->n] = m->descriptor;
    s->id[s->n] = id;
    s->n++;
    s->len += need;
}

static void stream_free(struct stream *s)
{
    free(s->bytes);
    memset(s, 0, sizeof(*s));
}

/* End offset (exclusive) of frame i in the stream. */
static size_t frame_end(const struct stream *s, size_t i)
{
    return s->off[i] + s->plen[i];
}

/* Frames wholly inside the first k bytes of the stream. */
static size_t frames_within(const struct stream *s, size_t k)
{
    size_t n = 0;
    while (n < s->n && frame_end(s, n) <= k)
        n++;
    return n;
}

/* Size field->len so that m packs to exactly target bytes. Length varints make the packed size
 * jump at powers of 128; targets used here sit away from those jumps. */
static void fit_packed_size(const ProtobufCMessage *m, ProtobufCBinaryData *field, size_t target)
{
    field->len = 0;
    size_t base = protobuf_c_message_get_packed_size(m);
    assert_true(base <= target);
    field->len = target - base;
    for (int i = 0; i < 8; i++) {
        size_t got = protobuf_c_message_get_packed_size(m);
        if (got == target)
            return;
        if (got > target)
            field->len -= got - target;
        else
            field->len += target - got;
    }
    fail_msg("cannot pack to exactly %zu bytes", target);
}

/* A filler buffer for large fields: a pattern, so misplaced bytes show in a comparison. */
static uint8_t *filler(size_t n)
{
    uint8_t *p = xmalloc(n);
    uint64_t st = SEED ^ n;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng_next(&st);
    return p;
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)p};
    return b;
}

static ProtobufCBinaryData str(const char *s)
{
    return bin(s, strlen(s));
}

/* ---------------------------------------------------------------------------------------
 * The messages under test
 */

static void add_empty_request(struct stream *s)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    assert_int_equal(protobuf_c_message_get_packed_size(&req.base), 0);
    stream_add(s, &req.base, 0);
}

static void add_empty_response(struct stream *s)
{
    Keel__Response resp = KEEL__RESPONSE__INIT;
    assert_int_equal(protobuf_c_message_get_packed_size(&resp.base), 0);
    stream_add(s, &resp.base, 0);
}

static void add_small_put(struct stream *s, uint64_t id)
{
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key = str("alpha");
    put.value = str("one");
    put.lease = 7;
    put.prev_kv = 1;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    stream_add(s, &req.base, id);
}

/* A RangeResponse of a few KiB: four 700-byte values. */
static void add_range_response(struct stream *s, uint64_t id)
{
    uint8_t *val = filler(700);
    Keel__KeyValue kv[4];
    Keel__KeyValue *kvs[4];
    static const char *const keys[4] = {"a", "bb", "ccc", "dddd"};
    for (int i = 0; i < 4; i++) {
        Keel__KeyValue init = KEEL__KEY_VALUE__INIT;
        kv[i] = init;
        kv[i].key = str(keys[i]);
        kv[i].value = bin(val, 700);
        kv[i].create_revision = 10 + i;
        kv[i].mod_revision = 20 + i;
        kv[i].version = 1 + i;
        kv[i].lease = i == 2 ? 0x7fffffffffffffffll : 0;
        kvs[i] = &kv[i];
    }
    Keel__RangeResponse range = KEEL__RANGE_RESPONSE__INIT;
    range.n_kvs = 4;
    range.kvs = kvs;
    range.more = 1;
    range.count = 99;
    Keel__ResponseHeader hdr = KEEL__RESPONSE_HEADER__INIT;
    hdr.cluster_id = 0xdeadbeefcafef00dull;
    hdr.member_id = 3;
    hdr.revision = 123456;
    hdr.raft_term = 9;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = id;
    resp.header = &hdr;
    resp.body_case = KEEL__RESPONSE__BODY_RANGE;
    resp.range = &range;
    size_t n = protobuf_c_message_get_packed_size(&resp.base);
    assert_true(n > 2048 && n < 4096);
    stream_add(s, &resp.base, id);
    free(val);
}

/* Nested repeated messages and oneofs, negative int64s (10-byte varints). */
static void add_txn_request(struct stream *s, uint64_t id)
{
    Keel__Compare cmp = KEEL__COMPARE__INIT;
    cmp.result = KEEL__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = KEEL__COMPARE__COMPARE_TARGET__VALUE;
    cmp.key = str("k");
    cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
    cmp.value = str("expected");
    cmp.range_end = str("l");
    Keel__Compare *cmps[1] = {&cmp};

    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key = str("k");
    put.value = str("new");
    Keel__RequestOp op_put = KEEL__REQUEST_OP__INIT;
    op_put.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op_put.request_put = &put;
    Keel__RequestOp *success[1] = {&op_put};

    Keel__RangeRequest range = KEEL__RANGE_REQUEST__INIT;
    range.key = str("k");
    range.range_end = bin("\0", 1);
    range.limit = -1;
    range.revision = INT64_MIN;
    range.sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
    range.sort_target = KEEL__RANGE_REQUEST__SORT_TARGET__MOD;
    range.keys_only = 1;
    range.max_create_revision = INT64_MAX;
    Keel__RequestOp op_range = KEEL__REQUEST_OP__INIT;
    op_range.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op_range.request_range = &range;
    Keel__RequestOp *failure[1] = {&op_range};

    Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
    txn.n_compare = 1;
    txn.compare = cmps;
    txn.n_success = 1;
    txn.success = success;
    txn.n_failure = 1;
    txn.failure = failure;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_TXN;
    req.txn = &txn;
    stream_add(s, &req.base, id);
}

/* A WatchResponse whose payload is exactly `target` bytes. */
static void add_watch_response(struct stream *s, uint64_t id, size_t target)
{
    uint8_t *val = filler(target);
    Keel__KeyValue kv = KEEL__KEY_VALUE__INIT;
    kv.key = str("watched");
    kv.mod_revision = 77;
    kv.value = bin(val, 0);
    Keel__KeyValue prev = KEEL__KEY_VALUE__INIT;
    prev.key = str("watched");
    prev.value = str("old");
    Keel__Event ev0 = KEEL__EVENT__INIT;
    ev0.type = KEEL__EVENT__EVENT_TYPE__PUT;
    ev0.kv = &kv;
    ev0.prev_kv = &prev;
    Keel__KeyValue delkv = KEEL__KEY_VALUE__INIT;
    delkv.key = str("gone");
    delkv.mod_revision = 77;
    Keel__Event ev1 = KEEL__EVENT__INIT;
    ev1.type = KEEL__EVENT__EVENT_TYPE__DELETE;
    ev1.kv = &delkv;
    Keel__Event *evs[2] = {&ev0, &ev1};
    Keel__WatchResponse watch = KEEL__WATCH_RESPONSE__INIT;
    watch.watch_id = 5;
    watch.n_events = 2;
    watch.events = evs;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = id;
    resp.body_case = KEEL__RESPONSE__BODY_WATCH;
    resp.watch = &watch;
    fit_packed_size(&resp.base, &kv.value, target);
    stream_add(s, &resp.base, id);
    free(val);
}

/* A PutRequest whose payload is exactly `target` bytes. */
static void add_sized_put(struct stream *s, uint64_t id, size_t target)
{
    uint8_t *val = filler(target);
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key = str("big");
    put.value = bin(val, 0);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = id;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &put;
    fit_packed_size(&req.base, &put.value, target);
    stream_add(s, &req.base, id);
    free(val);
}

static void add_error_response(struct stream *s, uint64_t id)
{
    Keel__Error err = KEEL__ERROR__INIT;
    err.code = KEEL__ERROR_CODE__NOT_LEADER;
    err.message = (char *)"not the leader";
    err.leader_id = 2;
    err.leader_address = (char *)"10.0.0.2:2379";
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = id;
    resp.error = &err;
    stream_add(s, &resp.base, id);
}

/*
 * The mixed stream: empty, small, a few KiB, nested, exactly max_frame and max_frame - 1
 * payloads, Requests and Responses interleaved, two empty frames back to back.
 */
static void build_mixed(struct stream *s, size_t max_frame)
{
    memset(s, 0, sizeof(*s));
    add_empty_request(s);
    add_small_put(s, 1);
    add_range_response(s, 2);
    add_empty_response(s);
    add_empty_request(s);
    add_txn_request(s, 3);
    add_watch_response(s, 4, max_frame);
    add_sized_put(s, 5, max_frame - 1);
    add_error_response(s, 6);
    add_small_put(s, UINT64_MAX);
}

/* ---------------------------------------------------------------------------------------
 * Checking what comes out of a decoder
 */

/* m packs back to exactly the bytes it came from: protobuf-c packs fields in number order, so
 * equal bytes mean equal messages, unknown fields included. */
static void assert_repacks(const ProtobufCMessage *m, const uint8_t *payload, size_t len)
{
    assert_int_equal(protobuf_c_message_get_packed_size(m), len);
    uint8_t *buf = xmalloc(len);
    assert_int_equal(protobuf_c_message_pack(m, buf), len);
    assert_true(len == 0 || memcmp(buf, payload, len) == 0);
    free(buf);
}

static void assert_id(const ProtobufCMessage *m, uint64_t id)
{
    if (m->descriptor == &keel__request__descriptor)
        assert_true(((const Keel__Request *)m)->id == id);
    else
        assert_true(((const Keel__Response *)m)->id == id);
}

/* Unpack with malloc and with an arena; both must reproduce the payload. */
static void check_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                         uint64_t id, struct keel_arena *arena)
{
    ProtobufCMessage *m = NULL;
    assert_int_equal(keel_frame_unpack(desc, NULL, p, len, &m), 0);
    assert_non_null(m);
    assert_ptr_equal(m->descriptor, desc);
    assert_id(m, id);
    assert_repacks(m, p, len);
    protobuf_c_message_free_unpacked(m, NULL);

    keel_arena_reset(arena);
    m = NULL;
    assert_int_equal(keel_frame_unpack(desc, keel_arena_pb(arena), p, len, &m), 0);
    assert_non_null(m);
    assert_ptr_equal(m->descriptor, desc);
    assert_id(m, id);
    assert_repacks(m, p, len);
    keel_arena_reset(arena);
}

struct checker {
    const struct stream *s;
    size_t next; /* index of the next expected frame */
    int unpack;  /* also unpack each frame (bytes alone already pin the message down) */
    struct keel_arena arena;
};

static void checker_init(struct checker *c, const struct stream *s, int unpack)
{
    c->s = s;
    c->next = 0;
    c->unpack = unpack;
    keel_arena_init(&c->arena, 0);
}

static void checker_close(struct checker *c)
{
    keel_arena_close(&c->arena);
}

/* Take every whole frame out of d, checking each against the stream. Returns the count. */
static size_t drain(struct keel_frame_decoder *d, struct checker *c)
{
    const struct stream *s = c->s;
    size_t got = 0;
    for (size_t guard = 0; guard <= s->n; guard++) {
        const uint8_t *p = NULL;
        size_t len = 0;
        int rv = keel_frame_decoder_next(d, &p, &len);
        assert_true(rv == 0 || rv == 1);
        if (rv == 0)
            return got;
        assert_true(c->next < s->n);
        size_t i = c->next++;
        assert_int_equal(len, s->plen[i]);
        assert_non_null(p);
        assert_true(len == 0 || memcmp(p, s->bytes + s->off[i], len) == 0);
        if (c->unpack)
            check_unpack(s->desc[i], p, len, s->id[i], &c->arena);
        got++;
    }
    fail_msg("decoder produced more frames than the stream holds");
    return got;
}

/* Feed the whole of s in pieces of the given sizes, draining after each, and check that every
 * frame comes out exactly once, as soon as its last byte is in. */
static void feed_in_pieces(const struct stream *s, size_t max_frame, const size_t *pieces,
                           size_t n_pieces, int unpack)
{
    struct keel_frame_decoder d;
    keel_frame_decoder_init(&d, max_frame);
    struct checker c;
    checker_init(&c, s, unpack);
    size_t fed = 0;
    for (size_t i = 0; i < n_pieces; i++) {
        assert_true(pieces[i] <= s->len - fed);
        assert_int_equal(keel_frame_decoder_feed(&d, s->bytes + fed, pieces[i]), 0);
        fed += pieces[i];
        drain(&d, &c);
        size_t want = frames_within(s, fed);
        assert_int_equal(c.next, want);
        size_t done = want ? frame_end(s, want - 1) : 0;
        assert_int_equal(keel_frame_decoder_pending(&d), fed - done);
    }
    assert_int_equal(fed, s->len);
    assert_int_equal(c.next, s->n);
    assert_int_equal(keel_frame_decoder_pending(&d), 0);
    checker_close(&c);
    keel_frame_decoder_close(&d);
}

/* ---------------------------------------------------------------------------------------
 * Decoding a well-formed stream
 */

static void test_pack_header(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    assert_int_equal(s.n, 10);
    /* Empty messages are 0-byte payloads: a bare header of zeros. */
    assert_int_equal(s.plen[0], 0);
    static const uint8_t zero[4] = {0};
    assert_memory_equal(s.bytes, zero, 4);
    assert_int_equal(s.plen[6], SMALL_MAX);
    assert_int_equal(s.plen[7], SMALL_MAX - 1);
    const uint8_t *h = s.bytes + s.off[6] - KEEL_FRAME_HEADER;
    static const uint8_t want[4] = {0x00, 0x00, 0x20, 0x00}; /* 8192, big-endian */
    assert_memory_equal(h, want, 4);
    stream_free(&s);
}

static void test_whole_stream(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    size_t whole = s.len;
    feed_in_pieces(&s, SMALL_MAX, &whole, 1, 1);
    stream_free(&s);
}

/* Fields survive the trip, checked by name rather than by repacking. */
static void test_unpacked_fields(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    struct keel_arena arena;
    keel_arena_init(&arena, 0);
    for (int use_arena = 0; use_arena <= 1; use_arena++) {
        ProtobufCAllocator *alloc = use_arena ? keel_arena_pb(&arena) : NULL;
        ProtobufCMessage *m = NULL;

        assert_int_equal(
            keel_frame_unpack(&keel__request__descriptor, alloc, s.bytes + s.off[1], s.plen[1], &m),
            0);
        Keel__Request *req = (Keel__Request *)m;
        assert_int_equal(req->id, 1);
        assert_int_equal(req->body_case, KEEL__REQUEST__BODY_PUT);
        assert_int_equal(req->put->key.len, 5);
        assert_memory_equal(req->put->key.data, "alpha", 5);
        assert_int_equal(req->put->value.len, 3);
        assert_memory_equal(req->put->value.data, "one", 3);
        assert_int_equal(req->put->lease, 7);
        assert_true(req->put->prev_kv);
        if (!use_arena)
            protobuf_c_message_free_unpacked(m, NULL);

        assert_int_equal(keel_frame_unpack(&keel__response__descriptor, alloc, s.bytes + s.off[2],
                                           s.plen[2], &m),
                         0);
        Keel__Response *resp = (Keel__Response *)m;
        assert_int_equal(resp->body_case, KEEL__RESPONSE__BODY_RANGE);
        assert_non_null(resp->header);
        assert_true(resp->header->cluster_id == 0xdeadbeefcafef00dull);
        assert_int_equal(resp->range->n_kvs, 4);
        assert_int_equal(resp->range->kvs[3]->key.len, 4);
        assert_int_equal(resp->range->kvs[3]->value.len, 700);
        assert_true(resp->range->kvs[2]->lease == 0x7fffffffffffffffll);
        assert_int_equal(resp->range->count, 99);
        if (!use_arena)
            protobuf_c_message_free_unpacked(m, NULL);

        assert_int_equal(
            keel_frame_unpack(&keel__request__descriptor, alloc, s.bytes + s.off[5], s.plen[5], &m),
            0);
        req = (Keel__Request *)m;
        assert_int_equal(req->body_case, KEEL__REQUEST__BODY_TXN);
        assert_int_equal(req->txn->n_compare, 1);
        assert_int_equal(req->txn->compare[0]->target_union_case,
                         KEEL__COMPARE__TARGET_UNION_VALUE);
        assert_int_equal(req->txn->compare[0]->value.len, 8);
        assert_int_equal(req->txn->failure[0]->request_case,
                         KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE);
        assert_true(req->txn->failure[0]->request_range->limit == -1);
        assert_true(req->txn->failure[0]->request_range->revision == INT64_MIN);
        assert_int_equal(req->txn->failure[0]->request_range->range_end.len, 1);
        if (!use_arena)
            protobuf_c_message_free_unpacked(m, NULL);

        assert_int_equal(keel_frame_unpack(&keel__response__descriptor, alloc, s.bytes + s.off[8],
                                           s.plen[8], &m),
                         0);
        resp = (Keel__Response *)m;
        assert_non_null(resp->error);
        assert_int_equal(resp->error->code, KEEL__ERROR_CODE__NOT_LEADER);
        assert_string_equal(resp->error->leader_address, "10.0.0.2:2379");
        assert_int_equal(resp->body_case, KEEL__RESPONSE__BODY__NOT_SET);
        if (!use_arena)
            protobuf_c_message_free_unpacked(m, NULL);
        keel_arena_reset(&arena);
    }
    keel_arena_close(&arena);
    stream_free(&s);
}

/* Two pieces, split at every byte offset including both ends. The first piece alone is also
 * the truncation check: only frames wholly inside it come out. */
static void test_every_split_point(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    for (size_t k = 0; k <= s.len; k++) {
        size_t pieces[2] = {k, s.len - k};
        /* Unpacking every frame at every split would only repeat the byte comparison. */
        feed_in_pieces(&s, SMALL_MAX, pieces, 2, k % 64 == 0);
    }
    stream_free(&s);
}

static void test_byte_by_byte(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    size_t *pieces = xmalloc(s.len * sizeof(*pieces));
    for (size_t i = 0; i < s.len; i++)
        pieces[i] = 1;
    feed_in_pieces(&s, SMALL_MAX, pieces, s.len, 1);
    free(pieces);
    stream_free(&s);
}

/* Piece sizes drawn from a few scales: tiny pieces split headers, large ones carry several
 * frames at once. */
static size_t random_chunks(uint64_t *rng, size_t total, size_t *pieces, size_t max_pieces)
{
    size_t scale = (size_t[]){3, 17, 300, 5000, total}[rng_next(rng) % 5];
    size_t n = 0, left = total;
    while (left > 0) {
        assert_true(n < max_pieces);
        size_t p = rng_range(rng, 1, scale < left ? scale : left);
        pieces[n++] = p;
        left -= p;
    }
    return n;
}

static void test_random_chunks(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    uint64_t rng = SEED;
    size_t *pieces = xmalloc(s.len * sizeof(*pieces));
    for (int round = 0; round < 300; round++) {
        size_t n = random_chunks(&rng, s.len, pieces, s.len);
        feed_in_pieces(&s, SMALL_MAX, pieces, n, 1);
    }
    free(pieces);
    stream_free(&s);
}

/* The read-into-the-decoder path: space, write into it, commit; sometimes less than offered,
 * sometimes nothing, with assorted `want`s. */
static void test_space_commit(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    uint64_t rng = SEED + 1;
    for (int round = 0; round < 200; round++) {
        struct keel_frame_decoder d;
        keel_frame_decoder_init(&d, SMALL_MAX);
        struct checker c;
        checker_init(&c, &s, 1);
        size_t fed = 0;
        for (size_t guard = 0; fed < s.len && guard < 4 * s.len; guard++) {
            size_t want = rng_range(&rng, 0, round % 2 ? 64 : 3 * SMALL_MAX);
            uint8_t *buf = NULL;
            size_t len = 0;
            assert_int_equal(keel_frame_decoder_space(&d, want, &buf, &len), 0);
            assert_non_null(buf);
            assert_true(len >= want && len > 0);
            size_t n = rng_range(&rng, 0, len < s.len - fed ? len : s.len - fed);
            memcpy(buf, s.bytes + fed, n);
            keel_frame_decoder_commit(&d, n);
            fed += n;
            drain(&d, &c);
            assert_int_equal(c.next, frames_within(&s, fed));
        }
        assert_int_equal(fed, s.len);
        assert_int_equal(c.next, s.n);
        assert_int_equal(keel_frame_decoder_pending(&d), 0);
        checker_close(&c);
        keel_frame_decoder_close(&d);
    }
    stream_free(&s);
}

/* A stream that stops inside a frame yields the frames before it and then nothing, however
 * often asked, with the partial bytes reported as pending. */
static void test_truncated(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    size_t cuts = 0;
    for (size_t k = 1; k < s.len; k++) {
        size_t whole = frames_within(&s, k);
        size_t done = whole ? frame_end(&s, whole - 1) : 0;
        if (done == k)
            continue; /* a frame boundary: nothing truncated */
        cuts++;
        struct keel_frame_decoder d;
        keel_frame_decoder_init(&d, SMALL_MAX);
        struct checker c;
        checker_init(&c, &s, 0);
        assert_int_equal(keel_frame_decoder_feed(&d, s.bytes, k), 0);
        assert_int_equal(drain(&d, &c), whole);
        for (int again = 0; again < 3; again++) {
            const uint8_t *p;
            size_t len;
            assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 0);
        }
        assert_true(keel_frame_decoder_pending(&d) > 0);
        assert_int_equal(keel_frame_decoder_pending(&d), k - done);
        checker_close(&c);
        keel_frame_decoder_close(&d);
    }
    assert_true(cuts > s.len / 2);
    stream_free(&s);
}

/* The same at the default limit, with 2 MiB frames: exactly the maximum, one byte under, and
 * small frames around them. Split points are sampled; every one would be quadratic in 4 MiB. */
static void test_default_max_stream(void **state)
{
    (void)state;
    struct stream s;
    memset(&s, 0, sizeof(s));
    add_small_put(&s, 1);
    add_sized_put(&s, 2, KEEL_FRAME_DEFAULT_MAX);
    add_empty_response(&s);
    add_watch_response(&s, 3, KEEL_FRAME_DEFAULT_MAX - 1);
    add_range_response(&s, 4);
    static const uint8_t want[4] = {0x00, 0x20, 0x00, 0x00}; /* 2 MiB, big-endian */
    assert_memory_equal(s.bytes + s.off[1] - KEEL_FRAME_HEADER, want, 4);

    size_t whole = s.len;
    feed_in_pieces(&s, 0, &whole, 1, 1);

    size_t *pieces = xmalloc(s.len * sizeof(*pieces));
    for (size_t i = 0; i < s.len; i++)
        pieces[i] = 1;
    feed_in_pieces(&s, 0, pieces, s.len, 0);

    uint64_t rng = SEED + 2;
    for (int round = 0; round < 6; round++) {
        size_t n = random_chunks(&rng, s.len, pieces, s.len);
        feed_in_pieces(&s, 0, pieces, n, 1);
    }

    /* Splits around every header and at random offsets. */
    for (size_t i = 0; i < s.n; i++) {
        size_t h = s.off[i] - KEEL_FRAME_HEADER;
        for (size_t delta = 0; delta <= 2 * KEEL_FRAME_HEADER; delta++) {
            size_t k = h + delta >= KEEL_FRAME_HEADER ? h + delta - KEEL_FRAME_HEADER : 0;
            size_t two[2] = {k, s.len - k};
            feed_in_pieces(&s, 0, two, 2, 0);
        }
    }
    for (int i = 0; i < 16; i++) {
        size_t k = rng_range(&rng, 0, s.len);
        size_t two[2] = {k, s.len - k};
        feed_in_pieces(&s, 0, two, 2, 0);
    }
    free(pieces);
    stream_free(&s);
}

/* ---------------------------------------------------------------------------------------
 * Oversized lengths
 */

static void assert_sticky(struct keel_frame_decoder *d, int err)
{
    const uint8_t *p = NULL;
    size_t len = 0;
    for (int again = 0; again < 3; again++)
        assert_int_equal(keel_frame_decoder_next(d, &p, &len), err);
    assert_null(p);
    assert_int_equal(keel_frame_decoder_feed(d, "x", 1), err);
    assert_int_equal(keel_frame_decoder_feed(d, "", 0), err);
    uint8_t *buf;
    size_t n;
    assert_int_equal(keel_frame_decoder_space(d, 16, &buf, &n), err);
    assert_int_equal(keel_frame_decoder_next(d, &p, &len), err);
}

/* Header bytes arrive one at a time: nothing until the fourth, then the error, without any
 * payload byte. */
static void check_too_large(size_t max_frame, uint32_t announced)
{
    struct keel_frame_decoder d;
    keel_frame_decoder_init(&d, max_frame);
    uint8_t hdr[KEEL_FRAME_HEADER];
    put_be32(hdr, announced);
    const uint8_t *p;
    size_t len;
    for (size_t i = 0; i < KEEL_FRAME_HEADER - 1; i++) {
        assert_int_equal(keel_frame_decoder_feed(&d, hdr + i, 1), 0);
        assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 0);
    }
    assert_int_equal(keel_frame_decoder_feed(&d, hdr + 3, 1), 0);
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), KEEL_EFRAMETOOLARGE);
    assert_sticky(&d, KEEL_EFRAMETOOLARGE);
    keel_frame_decoder_close(&d);
}

/* A header of exactly max_frame waits for its payload, then yields it. */
static void check_exactly_max(size_t max_frame)
{
    struct keel_frame_decoder d;
    keel_frame_decoder_init(&d, max_frame);
    size_t limit = d.max_frame;
    uint8_t hdr[KEEL_FRAME_HEADER];
    put_be32(hdr, (uint32_t)limit);
    assert_int_equal(keel_frame_decoder_feed(&d, hdr, sizeof(hdr)), 0);
    const uint8_t *p;
    size_t len;
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 0);
    uint8_t *payload = filler(limit);
    assert_int_equal(keel_frame_decoder_feed(&d, payload, limit - 1), 0);
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 0);
    assert_int_equal(keel_frame_decoder_pending(&d), KEEL_FRAME_HEADER + limit - 1);
    assert_int_equal(keel_frame_decoder_feed(&d, payload + limit - 1, 1), 0);
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 1);
    assert_int_equal(len, limit);
    assert_true(memcmp(p, payload, limit) == 0);
    assert_int_equal(keel_frame_decoder_pending(&d), 0);
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 0);
    free(payload);
    keel_frame_decoder_close(&d);
}

static void test_oversized_length(void **state)
{
    (void)state;
    static const size_t limits[] = {1, 100, 4096, SMALL_MAX, KEEL_FRAME_DEFAULT_MAX};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        check_too_large(limits[i], (uint32_t)limits[i] + 1);
        check_too_large(limits[i], (uint32_t)limits[i] + 2);
        check_too_large(limits[i], 0xFFFFFFFFu);
        check_exactly_max(limits[i]);
    }
    /* 0 means the default. */
    check_too_large(0, KEEL_FRAME_DEFAULT_MAX + 1);
    check_too_large(0, 0xFFFFFFFFu);
    check_exactly_max(0);
    struct keel_frame_decoder d;
    keel_frame_decoder_init(&d, 0);
    assert_int_equal(d.max_frame, KEEL_FRAME_DEFAULT_MAX);
    keel_frame_decoder_close(&d);

    /* A limit past what 32 bits can announce: the largest header is a frame still to come,
     * not a wrapped size. */
    keel_frame_decoder_init(&d, SIZE_MAX);
    uint8_t hdr[KEEL_FRAME_HEADER];
    put_be32(hdr, 0xFFFFFFFFu);
    assert_int_equal(keel_frame_decoder_feed(&d, hdr, sizeof(hdr)), 0);
    const uint8_t *p;
    size_t len;
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 0);
    assert_int_equal(keel_frame_decoder_pending(&d), KEEL_FRAME_HEADER);
    keel_frame_decoder_close(&d);
}

/* Good frames before an oversized header come out; the error follows them, in one feed. */
static void test_oversized_after_frames(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    stream_reserve(&s, 2 * KEEL_FRAME_HEADER);
    put_be32(s.bytes + s.len, SMALL_MAX + 1);
    memcpy(s.bytes + s.len + KEEL_FRAME_HEADER, "abcd", 4);
    struct keel_frame_decoder d;
    keel_frame_decoder_init(&d, SMALL_MAX);
    assert_int_equal(keel_frame_decoder_feed(&d, s.bytes, s.len + 8), 0);
    const uint8_t *p;
    size_t len;
    for (size_t i = 0; i < s.n; i++) {
        assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 1);
        assert_int_equal(len, s.plen[i]);
        assert_true(len == 0 || memcmp(p, s.bytes + s.off[i], len) == 0);
    }
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), KEEL_EFRAMETOOLARGE);
    assert_sticky(&d, KEEL_EFRAMETOOLARGE);
    keel_frame_decoder_close(&d);
    stream_free(&s);
}

/* ---------------------------------------------------------------------------------------
 * Decoder edge cases
 */

static void test_decoder_edges(void **state)
{
    (void)state;
    struct keel_frame_decoder d;
    /* Closing an unused decoder, and closing twice, are harmless. */
    keel_frame_decoder_init(&d, 0);
    keel_frame_decoder_close(&d);
    keel_frame_decoder_close(&d);

    keel_frame_decoder_init(&d, 64);
    const uint8_t *p;
    size_t len;
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 0);
    assert_int_equal(keel_frame_decoder_pending(&d), 0);
    /* Empty feeds, even before any buffer exists and with no data pointer. */
    assert_int_equal(keel_frame_decoder_feed(&d, NULL, 0), 0);
    assert_int_equal(keel_frame_decoder_feed(&d, "", 0), 0);
    uint8_t *buf = NULL;
    size_t n = 0;
    assert_int_equal(keel_frame_decoder_space(&d, 0, &buf, &n), 0);
    assert_non_null(buf);
    assert_true(n > 0);
    keel_frame_decoder_commit(&d, 0);
    assert_int_equal(keel_frame_decoder_pending(&d), 0);

    /* A request no buffer can meet fails instead of wrapping the capacity. */
    assert_int_equal(keel_frame_decoder_space(&d, SIZE_MAX, &buf, &n), KEEL_ENOMEM);
    assert_int_equal(keel_frame_decoder_space(&d, SIZE_MAX / 2 + 1, &buf, &n), KEEL_ENOMEM);
    /* ... and leaves the decoder usable: ENOMEM is not sticky. */
    uint8_t frame[KEEL_FRAME_HEADER + 3] = {0, 0, 0, 3, 'a', 'b', 'c'};
    assert_int_equal(keel_frame_decoder_feed(&d, frame, sizeof(frame)), 0);
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 1);
    assert_int_equal(len, 3);
    assert_memory_equal(p, "abc", 3);
    keel_frame_decoder_close(&d);

    /* A closed decoder can be initialised and used again. */
    keel_frame_decoder_init(&d, 64);
    assert_int_equal(keel_frame_decoder_feed(&d, frame, sizeof(frame)), 0);
    assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 1);
    assert_int_equal(len, 3);
    keel_frame_decoder_close(&d);

    /* A long run of small frames does not grow the buffer: consumed bytes are reclaimed. */
    keel_frame_decoder_init(&d, 64);
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(keel_frame_decoder_feed(&d, frame, sizeof(frame)), 0);
        assert_int_equal(keel_frame_decoder_next(&d, &p, &len), 1);
    }
    assert_true(d.cap <= 64 * 1024); /* 700 KB went through */
    keel_frame_decoder_close(&d);
}

/* ---------------------------------------------------------------------------------------
 * Malformed payloads
 */

struct bad_case {
    const char *what;
    uint8_t bytes[16];
    size_t len;
};

/* Each is invalid as a Request and as a Response. */
static const struct bad_case bad_cases[] = {
    {"wire type 7", {0x0f}, 1},
    {"wire type 6", {0x0e}, 1},
    {"valid field then wire type 7", {0x08, 0x01, 0x0f, 0x00}, 4},
    {"group start (unsupported wire type 3)", {0x0b, 0x0c}, 2},
    {"group end (wire type 4)", {0x0c}, 1},
    {"tag without value", {0x08}, 1},
    {"truncated varint", {0x08, 0x80}, 2},
    {"truncated varint, several bytes", {0x08, 0xff, 0xff, 0xff}, 4},
    {"11-byte varint",
     {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
     12},
    {"truncated tag varint", {0x80}, 1},
    {"tag varint over 5 bytes", {0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00}, 7},
    {"field number 0", {0x00, 0x00}, 2},
    /* protobuf-c keeps these as unknown fields, but writes them back as the one above. */
    {"field number 0 in two bytes", {0x80, 0x00, 0x01}, 3},
    {"field number 0 in two bytes inside a submessage", {0x5a, 0x03, 0x80, 0x00, 0x01}, 5},
    {"length past the payload", {0x5a, 0x64, 1, 2, 3}, 5},
    {"length of 2^32-1", {0x5a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00}, 7},
    {"length of 2^64-1",
     {0x5a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00},
     12},
    {"truncated length varint", {0x5a, 0x80}, 2},
    {"wire type 7 inside a submessage", {0x5a, 0x02, 0x0f, 0x00}, 4},
    {"nested length past its submessage", {0x5a, 0x03, 0x0a, 0x05, 'a'}, 5},
    {"known varint field sent as fixed64, truncated", {0x09, 1, 2, 3}, 4},
    {"known varint field sent as fixed64", {0x09, 1, 2, 3, 4, 5, 6, 7, 8}, 9},
    {"known varint field sent length-delimited", {0x0a, 0x01, 0x00}, 3},
    {"unknown fixed32 field, truncated", {0xfd, 0x07, 1, 2}, 4},
    {"unknown length-delimited field past the payload", {0xfa, 0x07, 0x10, 1}, 4},
};

static void test_unpack_malformed(void **state)
{
    (void)state;
    static const ProtobufCMessageDescriptor *const descs[] = {&keel__request__descriptor,
                                                              &keel__response__descriptor};
    struct keel_arena arena;
    keel_arena_init(&arena, 0);
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *bc = &bad_cases[i];
        for (size_t j = 0; j < 2; j++) {
            for (int use_arena = 0; use_arena <= 1; use_arena++) {
                ProtobufCMessage *m = NULL;
                int rv = keel_frame_unpack(descs[j], use_arena ? keel_arena_pb(&arena) : NULL,
                                           bc->bytes, bc->len, &m);
                if (rv != KEEL_EBADFRAME)
                    fail_msg("%s as %s: got %d", bc->what, descs[j]->name, rv);
                keel_arena_reset(&arena);
            }
        }
    }
    keel_arena_close(&arena);
}

/* protobuf-c unpacks, packs and frees recursively, with no limit: a Request of 44 KB with 6,000
 * nested txns overflowed an 8 MiB stack. What keel accepts (8 levels) decodes; far deeper is a
 * frame that does not decode. */
static void test_unpack_nesting(void **state)
{
    (void)state;
    static uint8_t buf[1u << 20];
    static const struct {
        size_t levels;
        int rv;
    } cases[] = {{8, 0}, {20, 0}, {40, KEEL_EBADFRAME}, {10000, KEEL_EBADFRAME}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len;
        const uint8_t *p = tu_nested_txns(buf + sizeof(buf), cases[i].levels, &len);
        ProtobufCMessage *m = NULL;
        assert_int_equal(keel_frame_unpack(&keel__request__descriptor, NULL, p, len, &m),
                         cases[i].rv);
        if (m != NULL)
            protobuf_c_message_free_unpacked(m, NULL);
    }
}

/* rv is 0 (and m a message that packs into what unpacks again) or KEEL_EBADFRAME; anything else
 * is a bug. */
static void unpack_any(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                       struct keel_arena *arena, uint64_t *rng)
{
    int use_arena = (int)(rng_next(rng) & 1);
    ProtobufCMessage *m = NULL;
    int rv = keel_frame_unpack(desc, use_arena ? keel_arena_pb(arena) : NULL, p, len, &m);
    assert_true(rv == 0 || rv == KEEL_EBADFRAME);
    if (rv == 0) {
        assert_non_null(m);
        size_t n = protobuf_c_message_get_packed_size(m);
        uint8_t *buf = xmalloc(n);
        assert_int_equal(protobuf_c_message_pack(m, buf), n);
        ProtobufCMessage *again = NULL;
        assert_int_equal(keel_frame_unpack(desc, NULL, buf, n, &again), 0);
        protobuf_c_message_free_unpacked(again, NULL);
        free(buf);
        if (!use_arena)
            protobuf_c_message_free_unpacked(m, NULL);
    }
    keel_arena_reset(arena);
}

/* Random bytes, every prefix of real payloads, and real payloads with bytes flipped. Some of
 * these are valid protobuf (unknown fields are legal), so only the outcome's shape is checked. */
static void test_unpack_garbage(void **state)
{
    (void)state;
    struct stream s;
    build_mixed(&s, SMALL_MAX);
    struct keel_arena arena;
    keel_arena_init(&arena, 0);
    uint64_t rng = SEED + 3;
    uint8_t buf[512];

    for (int i = 0; i < 20000; i++) {
        size_t len = rng_range(&rng, 0, sizeof(buf));
        for (size_t b = 0; b < len; b++)
            buf[b] = (uint8_t)rng_next(&rng);
        unpack_any(i & 1 ? &keel__request__descriptor : &keel__response__descriptor, buf, len,
                   &arena, &rng);
    }

    /* Every prefix of every small payload, as its own type and as the other. */
    int bad_prefixes = 0;
    for (size_t f = 0; f < s.n; f++) {
        if (s.plen[f] > 4096)
            continue;
        for (size_t len = 0; len < s.plen[f]; len++) {
            unpack_any(&keel__request__descriptor, s.bytes + s.off[f], len, &arena, &rng);
            unpack_any(&keel__response__descriptor, s.bytes + s.off[f], len, &arena, &rng);
            ProtobufCMessage *m = NULL;
            if (keel_frame_unpack(s.desc[f], NULL, s.bytes + s.off[f], len, &m) != 0)
                bad_prefixes++;
            else
                protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    assert_true(bad_prefixes > 0);

    /* Flipped bytes in real payloads. */
    for (int i = 0; i < 20000; i++) {
        size_t f = rng_range(&rng, 0, s.n - 1);
        if (s.plen[f] == 0 || s.plen[f] > sizeof(buf))
            continue;
        memcpy(buf, s.bytes + s.off[f], s.plen[f]);
        int flips = (int)rng_range(&rng, 1, 4);
        for (int k = 0; k < flips; k++)
            buf[rng_range(&rng, 0, s.plen[f] - 1)] ^= (uint8_t)rng_range(&rng, 1, 255);
        unpack_any(s.desc[f], buf, s.plen[f], &arena, &rng);
    }
    keel_arena_close(&arena);
    stream_free(&s);
}

/*
 * Random streams through the decoder: lengths mostly under the limit so that frames do come
 * out, sometimes over it, sometimes fully random. Nothing longer than the limit may come out,
 * the byte accounting must balance, and an error must be FRAMETOOLARGE and sticky.
 */
static void test_decoder_garbage(void **state)
{
    (void)state;
    uint64_t rng = SEED + 4;
    uint8_t *stream = xmalloc(8192);
    struct keel_arena arena;
    keel_arena_init(&arena, 0);
    size_t frames = 0, errors = 0;
    for (int round = 0; round < 2000; round++) {
        size_t max_frame = round % 10 == 0 ? 0 : rng_range(&rng, 1, 1024);
        size_t limit = max_frame ? max_frame : KEEL_FRAME_DEFAULT_MAX;
        size_t len = 0;
        while (len < 8192 - KEEL_FRAME_HEADER) {
            uint32_t n;
            switch (rng_next(&rng) % 8) {
            case 0:
                n = (uint32_t)rng_next(&rng);
                break;
            case 1:
                n = (uint32_t)limit + (uint32_t)rng_range(&rng, 0, 2);
                break;
            default:
                n = (uint32_t)rng_range(&rng, 0, limit < 300 ? limit : 300);
            }
            put_be32(stream + len, n);
            len += KEEL_FRAME_HEADER;
            size_t body = n < 8192 - len ? n : 8192 - len;
            for (size_t b = 0; b < body; b++)
                stream[len + b] = (uint8_t)rng_next(&rng);
            len += body;
        }

        struct keel_frame_decoder d;
        keel_frame_decoder_init(&d, max_frame);
        size_t fed = 0, consumed = 0;
        int err = 0;
        while (fed < len && err == 0) {
            size_t piece = rng_range(&rng, 1, len - fed < 700 ? len - fed : 700);
            int rv;
            if (rng_next(&rng) & 1) {
                rv = keel_frame_decoder_feed(&d, stream + fed, piece);
            } else {
                uint8_t *buf;
                size_t room;
                rv = keel_frame_decoder_space(&d, piece, &buf, &room);
                if (rv == 0) {
                    assert_true(room >= piece);
                    memcpy(buf, stream + fed, piece);
                    keel_frame_decoder_commit(&d, piece);
                }
            }
            assert_int_equal(rv, 0);
            fed += piece;
            for (size_t guard = 0; guard <= fed; guard++) {
                const uint8_t *p;
                size_t plen;
                rv = keel_frame_decoder_next(&d, &p, &plen);
                if (rv <= 0)
                    break;
                assert_true(plen <= limit);
                assert_true(p >= d.buf && p + plen <= d.buf + d.end);
                consumed += KEEL_FRAME_HEADER + plen;
                frames++;
                unpack_any(&keel__request__descriptor, p, plen, &arena, &rng);
            }
            if (rv < 0) {
                assert_int_equal(rv, KEEL_EFRAMETOOLARGE);
                err = rv;
                errors++;
            }
            assert_int_equal(consumed + keel_frame_decoder_pending(&d), fed);
        }
        if (err)
            assert_sticky(&d, err);
        keel_frame_decoder_close(&d);
    }
    /* The generator must have exercised both outcomes. */
    assert_true(frames > 1000);
    assert_true(errors > 100);
    keel_arena_close(&arena);
    free(stream);
}

/* ---------------------------------------------------------------------------------------
 * Error codes
 */

struct err_entry {
    int code;
    const char *name;
    const char *msg;
};

static const struct err_entry err_table[] = {
#define ERR_ENTRY_(name, n, msg) {KEEL_E##name, #name, msg},
    KEEL_ERRNO_MAP(ERR_ENTRY_)
#undef ERR_ENTRY_
};
#define N_ERRS (sizeof(err_table) / sizeof(err_table[0]))

static void test_err_strings(void **state)
{
    (void)state;
    assert_string_equal(keel_strerror(0), "success");
    assert_string_equal(keel_err_name(0), "OK");
    for (size_t i = 0; i < N_ERRS; i++) {
        const struct err_entry *e = &err_table[i];
        assert_true(e->code < 0);
        const char *msg = keel_strerror(e->code);
        const char *name = keel_err_name(e->code);
        assert_non_null(msg);
        assert_non_null(name);
        assert_string_equal(msg, e->msg);
        assert_string_equal(name, e->name);
        assert_string_not_equal(msg, "unknown error");
        assert_string_not_equal(name, "UNRECOGNIZED");
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(e->code, err_table[j].code);
            assert_string_not_equal(msg, keel_strerror(err_table[j].code));
            assert_string_not_equal(name, keel_err_name(err_table[j].code));
        }
    }
    /* Codes outside the map. */
    static const int unknown[] = {
        1, 100, KEEL_E_WIRE_LAST - 1, -99, KEEL_ETLS - 1, -1000, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_string_equal(keel_strerror(unknown[i]), "unknown error");
        assert_string_equal(keel_err_name(unknown[i]), "UNRECOGNIZED");
    }
}

static void test_err_wire(void **state)
{
    (void)state;
    const ProtobufCEnumDescriptor *ed = &keel__error_code__descriptor;
    assert_int_equal(keel_err_to_wire(0), KEEL__ERROR_CODE__OK);
    assert_int_equal(keel_err_from_wire(KEEL__ERROR_CODE__OK), 0);

    /* Every ErrorCode the schema defines maps to a keel code and back unchanged. */
    assert_true(ed->n_values > 1);
    for (unsigned i = 0; i < ed->n_values; i++) {
        int wire = ed->values[i].value;
        int code = keel_err_from_wire(wire);
        assert_int_equal(keel_err_to_wire(code), wire);
        if (wire != 0) {
            assert_true(code < 0 && code > KEEL_E_INTERNAL_BASE);
            assert_string_not_equal(keel_strerror(code), "unknown error");
        }
    }

    /* Every keel code: wire-band codes travel as themselves and are defined in the schema;
     * local ones travel as INTERNAL. */
    size_t wire_band = 0;
    for (size_t i = 0; i < N_ERRS; i++) {
        int code = err_table[i].code;
        int wire = keel_err_to_wire(code);
        if (code > KEEL_E_INTERNAL_BASE) {
            wire_band++;
            assert_int_equal(wire, -code);
            assert_non_null(protobuf_c_enum_descriptor_get_value(ed, wire));
            assert_int_equal(keel_err_from_wire(wire), code);
        } else {
            assert_int_equal(wire, KEEL__ERROR_CODE__INTERNAL);
            assert_int_equal(keel_err_from_wire(wire), KEEL_EINTERNAL);
        }
    }
    /* The map's wire band and the schema's enum have the same size (OK is not in the map). */
    assert_int_equal(wire_band + 1, ed->n_values);

    /* Codes a newer peer might send, and local codes that are not errors at all. */
    assert_int_equal(keel_err_from_wire(-KEEL_E_WIRE_LAST + 1), KEEL_EINTERNAL);
    assert_int_equal(keel_err_from_wire(1000), KEEL_EINTERNAL);
    assert_int_equal(keel_err_from_wire(-3), KEEL_EINTERNAL); /* never success */
    assert_int_equal(keel_err_to_wire(-1000), KEEL__ERROR_CODE__INTERNAL);
    assert_int_equal(keel_err_to_wire(KEEL_E_WIRE_LAST - 1), KEEL__ERROR_CODE__INTERNAL);
}

/* ---- deep copies (pbclone.h) ---- */

/* A Request with what a copy must get right: oneofs whose members are scalars and pointers
 * (Compare's target), nested messages, repeated messages, bytes, strings, unknown fields. */
static Keel__Request *clone_source(struct keel_arena *a)
{
    Keel__TxnRequest *txn = keel_arena_alloc(a, sizeof(*txn));
    keel__txn_request__init(txn);
    Keel__Compare **cmps = keel_arena_alloc(a, 2 * sizeof(*cmps));
    for (int i = 0; i < 2; i++) {
        cmps[i] = keel_arena_alloc(a, sizeof(**cmps));
        keel__compare__init(cmps[i]);
        cmps[i]->key.data = (uint8_t *)"cmp-key";
        cmps[i]->key.len = 7;
    }
    cmps[0]->target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
    cmps[0]->version = 0x1122334455667788;
    cmps[1]->target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
    cmps[1]->value.data = (uint8_t *)"compared";
    cmps[1]->value.len = 8;
    txn->compare = cmps;
    txn->n_compare = 2;
    Keel__RequestOp *op = keel_arena_alloc(a, sizeof(*op));
    keel__request_op__init(op);
    Keel__PutRequest *put = keel_arena_alloc(a, sizeof(*put));
    keel__put_request__init(put);
    put->key.data = (uint8_t *)"k";
    put->key.len = 1;
    put->value.data = (uint8_t *)"v\0v";
    put->value.len = 3;
    op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = put;
    Keel__RequestOp **ops = keel_arena_alloc(a, sizeof(*ops));
    ops[0] = op;
    txn->success = ops;
    txn->n_success = 1;
    Keel__Request *req = keel_arena_alloc(a, sizeof(*req));
    keel__request__init(req);
    req->id = 42;
    req->body_case = KEEL__REQUEST__BODY_TXN;
    req->txn = txn;
    ProtobufCMessageUnknownField *u = keel_arena_alloc(a, sizeof(*u));
    u->tag = 1000;
    u->wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
    u->len = 3;
    u->data = (uint8_t *)"unk";
    req->base.unknown_fields = u;
    req->base.n_unknown_fields = 1;
    return req;
}

static void assert_same_bytes(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t na = protobuf_c_message_get_packed_size(a), nb = protobuf_c_message_get_packed_size(b);
    assert_int_equal(na, nb);
    uint8_t *pa = malloc(na), *pb = malloc(nb);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    assert_memory_equal(pa, pb, na);
    free(pa);
    free(pb);
}

/* An allocator that fails after `left` allocations. */
struct failing {
    int left;
    int made;
};

static void *failing_alloc(void *data, size_t n)
{
    struct failing *f = data;
    if (f->left-- <= 0)
        return NULL;
    f->made++;
    return malloc(n);
}

static void failing_free(void *data, void *p)
{
    struct failing *f = data;
    if (p != NULL)
        f->made--;
    free(p);
}

static void test_clone(void **state)
{
    (void)state;
    struct keel_arena a;
    keel_arena_init(&a, 0);
    Keel__Request *src = clone_source(&a);

    ProtobufCMessage *c = keel_pb_clone(&src->base, NULL);
    assert_non_null(c);
    assert_same_bytes(&src->base, c);
    Keel__Request *copy = (Keel__Request *)c;
    /* Nothing shared with the source. */
    assert_ptr_not_equal(copy->txn, src->txn);
    assert_ptr_not_equal(copy->txn->compare[1]->value.data, src->txn->compare[1]->value.data);
    assert_ptr_not_equal(copy->base.unknown_fields[0].data, src->base.unknown_fields[0].data);
    assert_int_equal(copy->txn->compare[0]->version, 0x1122334455667788);
    protobuf_c_message_free_unpacked(c, NULL);

    /* Into an arena: the copy outlives the source's memory. */
    struct keel_arena into;
    keel_arena_init(&into, 0);
    Keel__Request held = KEEL__REQUEST__INIT;
    assert_int_equal(keel_pb_clone_into(&held.base, &src->base, keel_arena_pb(&into)), 0);
    struct keel_arena ref;
    keel_arena_init(&ref, 0);
    ProtobufCMessage *again = keel_pb_clone(&clone_source(&ref)->base, NULL);
    keel_arena_close(&a);
    keel_arena_close(&ref);
    assert_same_bytes(&held.base, again);
    protobuf_c_message_free_unpacked(again, NULL);
    keel_arena_close(&into);

    /* Out of memory at every allocation: NULL, and nothing left allocated. */
    keel_arena_init(&a, 0);
    src = clone_source(&a);
    int fails = 0;
    for (int n = 0; n < 64; n++) {
        struct failing f = {.left = n};
        ProtobufCAllocator fa = {failing_alloc, failing_free, &f};
        ProtobufCMessage *m = keel_pb_clone(&src->base, &fa);
        if (m == NULL) {
            assert_int_equal(f.made, 0);
            fails++;
            continue;
        }
        assert_same_bytes(&src->base, m);
        protobuf_c_message_free_unpacked(m, &fa);
        assert_int_equal(f.made, 0);
        break;
    }
    assert_true(fails > 10); /* every allocation of the copy failed once */
    keel_arena_close(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_header),
        cmocka_unit_test(test_whole_stream),
        cmocka_unit_test(test_unpacked_fields),
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_random_chunks),
        cmocka_unit_test(test_space_commit),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_default_max_stream),
        cmocka_unit_test(test_oversized_length),
        cmocka_unit_test(test_oversized_after_frames),
        cmocka_unit_test(test_decoder_edges),
        cmocka_unit_test(test_unpack_malformed),
        cmocka_unit_test(test_unpack_nesting),
        cmocka_unit_test(test_unpack_garbage),
        cmocka_unit_test(test_decoder_garbage),
        cmocka_unit_test(test_err_strings),
        cmocka_unit_test(test_err_wire),
        cmocka_unit_test(test_clone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
