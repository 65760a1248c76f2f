/*
 * pbjson: etcd's messages <-> etcd 3.4's gateway JSON.
 *
 * - Exact output: messages built with the values a real etcd 3.4.23 answered with, encoded, and
 *   compared byte for byte with what that etcd printed (captured with curl against
 *   `etcd --data-dir ...` of Debian's etcd-server 3.4.23; the curl commands are above each).
 * - Round trips: every message type the gateway serves, filled generically from its descriptor
 *   with non-zero extremes in every field (each oneof member in turn), encoded and decoded again
 *   must pack to the same protobuf bytes.
 * - Input variants (lowerCamelCase names, integers as numbers or strings, enums by number, both
 *   base64 alphabets, unknown fields, null) and bad inputs, whose error names the field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.pb-c.h"
#include "pbjson.h"
#include "pbclone.h"

/* The JSON of msg, as a malloc'd string. */
static char *to_json(const ProtobufCMessage *msg)
{
    struct gw_jbuf b = {0};
    assert_int_equal(gw_pbjson_write(&b, msg), 0);
    return b.p ? b.p : strdup("");
}

static void assert_json(const ProtobufCMessage *msg, const char *want)
{
    char *got = to_json(msg);
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "got:  %s\nwant: %s\n", got, want);
        fail();
    }
    free(got);
}

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){.len = strlen(s), .data = (uint8_t *)s};
}

/* etcd's header in the captures: cluster 1818065874623970200, member 11210582148502013276. */
static Etcdserverpb__ResponseHeader header(int64_t rev)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    h.cluster_id = 1818065874623970200ull;
    h.member_id = 11210582148502013276ull;
    h.revision = rev;
    h.raft_term = 2;
    return h;
}

#define HDR(rev)                                                                                   \
    "{\"cluster_id\":\"1818065874623970200\",\"member_id\":\"11210582148502013276\",\"revision\":" \
    "\"" #rev "\",\"raft_term\":\"2\"}"

/* ---------------------------------------------------------------------------------------------
 * Exact output, captured from etcd 3.4.23
 */

static void test_range_response(void **state)
{
    (void)state;
    /* curl -s -X POST $E/v3/kv/range -d '{"key":"Zm9v","range_end":"Zm9w"}' after putting
     * foo=bar and foo2="" */
    Etcdserverpb__ResponseHeader h = header(3);
    Etcdserverpb__KeyValue kv1 = ETCDSERVERPB__KEY_VALUE__INIT, kv2 = ETCDSERVERPB__KEY_VALUE__INIT;
    kv1.key = bin("foo");
    kv1.value = bin("bar");
    kv1.create_revision = kv1.mod_revision = 2;
    kv1.version = 1;
    kv2.key = bin("foo2");
    kv2.create_revision = kv2.mod_revision = 3;
    kv2.version = 1;
    Etcdserverpb__KeyValue *kvs[] = {&kv1, &kv2};
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.header = &h;
    r.kvs = kvs;
    r.n_kvs = 2;
    r.count = 2;
    assert_json(&r.base,
                "{\"header\":" HDR(
                    3) ",\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":\"2\","
                       "\"mod_revision\":\"2\",\"version\":\"1\",\"value\":\"YmFy\"},{\"key\":"
                       "\"Zm9vMg==\",\"create_revision\":\"3\",\"mod_revision\":\"3\",\"version\":"
                       "\"1\"}],\"count\":\"2\"}");
}

static void test_txn_response(void **state)
{
    (void)state;
    /* curl -s -X POST $E/v3/kv/txn -d '{"compare":[{"target":"CREATE","key":"eA==",
     * "create_revision":0}],"success":[{"request_put":{"key":"eA==","value":"MQ=="}}]}' */
    Etcdserverpb__ResponseHeader h = header(4), inner = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    inner.revision = 4;
    Etcdserverpb__PutResponse put = ETCDSERVERPB__PUT_RESPONSE__INIT;
    put.header = &inner;
    Etcdserverpb__ResponseOp op = ETCDSERVERPB__RESPONSE_OP__INIT;
    op.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
    op.response_put = &put;
    Etcdserverpb__ResponseOp *ops[] = {&op};
    Etcdserverpb__TxnResponse t = ETCDSERVERPB__TXN_RESPONSE__INIT;
    t.header = &h;
    t.succeeded = 1;
    t.responses = ops;
    t.n_responses = 1;
    assert_json(&t.base,
                "{\"header\":" HDR(4) ",\"succeeded\":true,\"responses\":[{\"response_put\":"
                                      "{\"header\":{\"revision\":\"4\"}}}]}");
    /* The failed branch of the same txn shape: succeeded false is left out. */
    t.succeeded = 0;
    assert_json(&t.base, "{\"header\":" HDR(4) ",\"responses\":[{\"response_put\":"
                                               "{\"header\":{\"revision\":\"4\"}}}]}");
}

static void test_watch_delete_event(void **state)
{
    (void)state;
    /* curl -s -N --raw -X POST $E/v3/watch -d '{"create_request":{"key":"Zm9v","prev_kv":true}}'
     * then curl -s -X POST $E/v3/kv/deleterange -d '{"key":"Zm9v"}': the second chunk's result */
    Etcdserverpb__ResponseHeader h = header(5);
    Etcdserverpb__KeyValue kv = ETCDSERVERPB__KEY_VALUE__INIT, prev = ETCDSERVERPB__KEY_VALUE__INIT;
    kv.key = bin("foo");
    kv.mod_revision = 5;
    prev.key = bin("foo");
    prev.value = bin("bar");
    prev.create_revision = prev.mod_revision = 2;
    prev.version = 1;
    Etcdserverpb__Event ev = ETCDSERVERPB__EVENT__INIT;
    ev.type = ETCDSERVERPB__EVENT__EVENT_TYPE__DELETE;
    ev.kv = &kv;
    ev.prev_kv = &prev;
    Etcdserverpb__Event *evs[] = {&ev};
    Etcdserverpb__WatchResponse w = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    w.header = &h;
    w.events = evs;
    w.n_events = 1;
    assert_json(
        &w.base,
        "{\"header\":" HDR(5) ",\"events\":[{\"type\":\"DELETE\",\"kv\":{\"key\":"
                              "\"Zm9v\",\"mod_revision\":\"5\"},\"prev_kv\":{\"key\":\"Zm9v\","
                              "\"create_revision\":\"2\",\"mod_revision\":\"2\",\"version\":\"1\","
                              "\"value\":\"YmFy\"}}]}");
    /* The created response (watch_id 0 left out) and a compaction cancel (revision 0 left out). */
    Etcdserverpb__WatchResponse c = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h4 = header(4);
    c.header = &h4;
    c.created = 1;
    assert_json(&c.base, "{\"header\":" HDR(4) ",\"created\":true}");
    Etcdserverpb__ResponseHeader h0 = header(0);
    c.header = &h0;
    c.created = 0;
    c.canceled = 1;
    c.compact_revision = 3;
    assert_json(&c.base, "{\"header\":{\"cluster_id\":\"1818065874623970200\",\"member_id\":"
                         "\"11210582148502013276\",\"raft_term\":\"2\"},\"canceled\":true,"
                         "\"compact_revision\":\"3\"}");
}

static void test_lease_responses(void **state)
{
    (void)state;
    /* curl -s -X POST $E/v3/lease/grant -d '{"TTL":60}' */
    Etcdserverpb__ResponseHeader h = header(4);
    Etcdserverpb__LeaseGrantResponse g = ETCDSERVERPB__LEASE_GRANT_RESPONSE__INIT;
    g.header = &h;
    g.id = 4998048136837602060;
    g.ttl = 60;
    assert_json(&g.base, "{\"header\":" HDR(4) ",\"ID\":\"4998048136837602060\",\"TTL\":\"60\"}");
    /* curl -s -X POST $E/v3/kv/lease/timetolive -d '{"ID":7,"keys":true}' */
    Etcdserverpb__LeaseTimeToLiveResponse t = ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    t.header = &h;
    t.id = 7;
    t.ttl = 59;
    t.grantedttl = 60;
    assert_json(&t.base,
                "{\"header\":" HDR(4) ",\"ID\":\"7\",\"TTL\":\"59\",\"grantedTTL\":\"60\"}");
    /* curl -s -X POST $E/v3/lease/leases */
    Etcdserverpb__LeaseStatus s1 = ETCDSERVERPB__LEASE_STATUS__INIT, s2 = s1;
    s1.id = 4998048136837602060;
    s2.id = 7;
    Etcdserverpb__LeaseStatus *ss[] = {&s1, &s2};
    Etcdserverpb__LeaseLeasesResponse l = ETCDSERVERPB__LEASE_LEASES_RESPONSE__INIT;
    l.header = &h;
    l.leases = ss;
    l.n_leases = 2;
    assert_json(&l.base, "{\"header\":" HDR(
                             4) ",\"leases\":[{\"ID\":\"4998048136837602060\"},{\"ID\":\"7\"}]}");
}

static void test_cluster_and_status(void **state)
{
    (void)state;
    /* curl -s -X POST $E/v3/cluster/member/list */
    Etcdserverpb__ResponseHeader h = header(0);
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
    m.id = 11210582148502013276ull;
    m.name = "default";
    char *peer[] = {"http://127.0.0.1:34011"}, *client[] = {"http://127.0.0.1:34010"};
    m.peerurls = peer;
    m.n_peerurls = 1;
    m.clienturls = client;
    m.n_clienturls = 1;
    Etcdserverpb__Member *ms[] = {&m};
    Etcdserverpb__MemberListResponse ml = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    ml.header = &h;
    ml.members = ms;
    ml.n_members = 1;
    assert_json(&ml.base, "{\"header\":{\"cluster_id\":\"1818065874623970200\",\"member_id\":"
                          "\"11210582148502013276\",\"raft_term\":\"2\"},\"members\":[{\"ID\":"
                          "\"11210582148502013276\",\"name\":\"default\",\"peerURLs\":[\"http://"
                          "127.0.0.1:34011\"],\"clientURLs\":[\"http://127.0.0.1:34010\"]}]}");
    /* curl -s -X POST $E/v3/maintenance/status */
    Etcdserverpb__ResponseHeader h4 = header(4);
    Etcdserverpb__StatusResponse st = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    st.header = &h4;
    st.version = "3.4.23";
    st.dbsize = 20480;
    st.leader = 11210582148502013276ull;
    st.raftindex = 11;
    st.raftterm = 2;
    st.raftappliedindex = 11;
    st.dbsizeinuse = 16384;
    assert_json(&st.base,
                "{\"header\":" HDR(
                    4) ",\"version\":\"3.4.23\",\"dbSize\":\"20480\","
                       "\"leader\":\"11210582148502013276\",\"raftIndex\":\"11\",\"raftTerm\":"
                       "\"2\",\"raftAppliedIndex\":\"11\",\"dbSizeInUse\":\"16384\"}");
}

static void test_string_escapes(void **state)
{
    (void)state;
    /* As Go's encoding/json: HTML characters, control characters, U+2028, invalid UTF-8. */
    Etcdserverpb__StatusResponse st = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    st.version = "a\"b\\c<d>&\n\t\x01\xc3\xa9\xe2\x80\xa8\xff";
    assert_json(&st.base, "{\"version\":\"a\\\"b\\\\c\\u003cd\\u003e\\u0026\\n\\t\\u0001\xc3\xa9"
                          "\\u2028\\ufffd\"}");
    /* A uint32 is a number; an oneof member set to zero is still written. */
    Etcdserverpb__HashResponse hr = ETCDSERVERPB__HASH_RESPONSE__INIT;
    hr.hash = 4294967295u;
    assert_json(&hr.base, "{\"hash\":4294967295}");
    Etcdserverpb__Compare c = ETCDSERVERPB__COMPARE__INIT;
    c.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    assert_json(&c.base, "{\"target\":\"MOD\",\"mod_revision\":\"0\"}");
    /* Repeated enums by name; bytes padded. */
    Etcdserverpb__WatchCreateRequest wc = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    Etcdserverpb__WatchCreateRequest__FilterType f[] = {
        ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE,
        ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT};
    wc.filters = f;
    wc.n_filters = 2;
    wc.key = bin("ab");
    wc.start_revision = -1;
    assert_json(&wc.base, "{\"key\":\"YWI=\",\"start_revision\":\"-1\",\"filters\":[\"NODELETE\","
                          "\"NOPUT\"]}");
}

/* ---------------------------------------------------------------------------------------------
 * Round trips through generically filled messages
 */

#define FILL_DEPTH 3

static void fill(ProtobufCMessage *m, int depth, unsigned variant);

static void fill_value(const ProtobufCFieldDescriptor *f, void *v, int depth, unsigned k)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *(int32_t *)v = k ? INT32_MIN : -7;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)v = k ? UINT32_MAX : 7;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)v = k ? INT64_MIN : INT64_MAX;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)v = k ? 1 : UINT64_MAX;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)v = 1;
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)v = 1.5f;
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)v = 2.25;
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        *(int32_t *)v = ed->values[ed->n_values - 1 - (k % ed->n_values)].value;
        break;
    }
    case PROTOBUF_C_TYPE_STRING:
        *(char **)v = strdup(k ? "\"quoted\" <&> \\ \xe2\x80\xa9 \xc3\xa9\x01" : "plain");
        break;
    case PROTOBUF_C_TYPE_BYTES: {
        size_t n = k ? 256 : 1 + (size_t)depth; /* every byte value; and short odd lengths */
        uint8_t *d = malloc(n);
        for (size_t i = 0; i < n; i++)
            d[i] = (uint8_t)(i * 7 + k);
        *(ProtobufCBinaryData *)v = (ProtobufCBinaryData){.len = n, .data = d};
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessageDescriptor *md = f->descriptor;
        ProtobufCMessage *sub = malloc(md->sizeof_message);
        protobuf_c_message_init(md, sub);
        if (depth < FILL_DEPTH)
            fill(sub, depth + 1, k);
        *(ProtobufCMessage **)v = sub;
        break;
    }
    }
}

/* Every field non-zero; of each oneof, the member at position `variant` (mod its size). */
static void fill(ProtobufCMessage *m, int depth, unsigned variant)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    char *base = (char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            /* members of one oneof share quantifier_offset */
            unsigned idx = 0, n = 0;
            for (unsigned j = 0; j < d->n_fields; j++)
                if ((d->fields[j].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                    d->fields[j].quantifier_offset == f->quantifier_offset) {
                    if (j < i)
                        idx++;
                    n++;
                }
            if (idx != variant % n)
                continue;
            fill_value(f, base + f->offset, depth, variant);
            *(uint32_t *)(base + f->quantifier_offset) = f->id;
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t sz = keel_pb_value_size(f->type);
            char *arr = calloc(2, sz);
            fill_value(f, arr, depth, 0);
            fill_value(f, arr + sz, depth, 1);
            *(char **)(base + f->offset) = arr;
            *(size_t *)(base + f->quantifier_offset) = 2;
        } else {
            fill_value(f, base + f->offset, depth, variant);
        }
    }
}

static const ProtobufCMessageDescriptor *const all_types[] = {
    &etcdserverpb__key_value__descriptor,
    &etcdserverpb__event__descriptor,
    &etcdserverpb__response_header__descriptor,
    &etcdserverpb__range_request__descriptor,
    &etcdserverpb__range_response__descriptor,
    &etcdserverpb__put_request__descriptor,
    &etcdserverpb__put_response__descriptor,
    &etcdserverpb__delete_range_request__descriptor,
    &etcdserverpb__delete_range_response__descriptor,
    &etcdserverpb__request_op__descriptor,
    &etcdserverpb__response_op__descriptor,
    &etcdserverpb__compare__descriptor,
    &etcdserverpb__txn_request__descriptor,
    &etcdserverpb__txn_response__descriptor,
    &etcdserverpb__compaction_request__descriptor,
    &etcdserverpb__compaction_response__descriptor,
    &etcdserverpb__hash_request__descriptor,
    &etcdserverpb__hash_kvrequest__descriptor,
    &etcdserverpb__hash_kvresponse__descriptor,
    &etcdserverpb__hash_response__descriptor,
    &etcdserverpb__snapshot_request__descriptor,
    &etcdserverpb__snapshot_response__descriptor,
    &etcdserverpb__watch_request__descriptor,
    &etcdserverpb__watch_create_request__descriptor,
    &etcdserverpb__watch_cancel_request__descriptor,
    &etcdserverpb__watch_progress_request__descriptor,
    &etcdserverpb__watch_response__descriptor,
    &etcdserverpb__lease_grant_request__descriptor,
    &etcdserverpb__lease_grant_response__descriptor,
    &etcdserverpb__lease_revoke_request__descriptor,
    &etcdserverpb__lease_revoke_response__descriptor,
    &etcdserverpb__lease_keep_alive_request__descriptor,
    &etcdserverpb__lease_keep_alive_response__descriptor,
    &etcdserverpb__lease_time_to_live_request__descriptor,
    &etcdserverpb__lease_time_to_live_response__descriptor,
    &etcdserverpb__lease_leases_request__descriptor,
    &etcdserverpb__lease_status__descriptor,
    &etcdserverpb__lease_leases_response__descriptor,
    &etcdserverpb__member__descriptor,
    &etcdserverpb__member_add_request__descriptor,
    &etcdserverpb__member_add_response__descriptor,
    &etcdserverpb__member_remove_request__descriptor,
    &etcdserverpb__member_remove_response__descriptor,
    &etcdserverpb__member_update_request__descriptor,
    &etcdserverpb__member_update_response__descriptor,
    &etcdserverpb__member_list_request__descriptor,
    &etcdserverpb__member_list_response__descriptor,
    &etcdserverpb__member_promote_request__descriptor,
    &etcdserverpb__member_promote_response__descriptor,
    &etcdserverpb__defragment_request__descriptor,
    &etcdserverpb__defragment_response__descriptor,
    &etcdserverpb__move_leader_request__descriptor,
    &etcdserverpb__move_leader_response__descriptor,
    &etcdserverpb__alarm_request__descriptor,
    &etcdserverpb__alarm_member__descriptor,
    &etcdserverpb__alarm_response__descriptor,
    &etcdserverpb__status_request__descriptor,
    &etcdserverpb__status_response__descriptor,
};

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len + 1);
    protobuf_c_message_pack(m, b);
    return b;
}

static void test_round_trips(void **state)
{
    (void)state;
    size_t n_types = sizeof(all_types) / sizeof(all_types[0]);
    for (size_t t = 0; t < n_types; t++) {
        const ProtobufCMessageDescriptor *d = all_types[t];
        for (unsigned variant = 0; variant < 5; variant++) {
            ProtobufCMessage *m = malloc(d->sizeof_message);
            protobuf_c_message_init(d, m);
            fill(m, 0, variant);
            char *json = to_json(m);
            char err[256];
            ProtobufCMessage *back = gw_pbjson_decode_text(d, json, strlen(json), err, sizeof(err));
            if (!back) {
                fprintf(stderr, "%s: %s\n  json: %s\n", d->name, err, json);
                fail();
            }
            size_t la, lb;
            uint8_t *a = pack(m, &la), *b = pack(back, &lb);
            if (la != lb || memcmp(a, b, la) != 0) {
                char *json2 = to_json(back);
                fprintf(stderr, "%s variant %u differs\n  %s\n  %s\n", d->name, variant, json,
                        json2);
                free(json2);
                fail();
            }
            /* Re-encoding the decoded message gives the same text. */
            char *json2 = to_json(back);
            assert_string_equal(json, json2);
            free(json2);
            free(a);
            free(b);
            free(json);
            protobuf_c_message_free_unpacked(m, NULL);
            protobuf_c_message_free_unpacked(back, NULL);
        }
    }
    /* An empty message is "{}" and an empty text, "{}" and null decode to it. */
    Etcdserverpb__RangeRequest empty = ETCDSERVERPB__RANGE_REQUEST__INIT;
    assert_json(&empty.base, "{}");
    const char *empties[] = {"", "  \n", "{}", "null"};
    for (size_t i = 0; i < 4; i++) {
        char err[128];
        ProtobufCMessage *m =
            gw_pbjson_decode_text(&etcdserverpb__range_request__descriptor, empties[i],
                                  strlen(empties[i]), err, sizeof(err));
        assert_non_null(m);
        assert_int_equal(protobuf_c_message_get_packed_size(m), 0);
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Input variants
 */

static ProtobufCMessage *decode_ok(const ProtobufCMessageDescriptor *d, const char *json)
{
    char err[256];
    ProtobufCMessage *m = gw_pbjson_decode_text(d, json, strlen(json), err, sizeof(err));
    if (!m) {
        fprintf(stderr, "decoding %s: %s\n", json, err);
        fail();
    }
    return m;
}

static void test_input_variants(void **state)
{
    (void)state;
    /* camelCase names, int64 as number and as string, enums by number and name, bool. */
    const char *forms[] = {
        "{\"key\":\"Zm9v\",\"range_end\":\"Zm9w\",\"limit\":10,\"sort_order\":2,"
        "\"sort_target\":\"MOD\",\"count_only\":true,\"max_create_revision\":\"-5\"}",
        "{\"key\":\"Zm9v\",\"rangeEnd\":\"Zm9w\",\"limit\":\"10\",\"sortOrder\":\"DESCEND\","
        "\"sortTarget\":3,\"countOnly\":true,\"maxCreateRevision\":-5,\"unknown\":[1,{}]}",
    };
    for (size_t i = 0; i < 2; i++) {
        Etcdserverpb__RangeRequest *r = (Etcdserverpb__RangeRequest *)decode_ok(
            &etcdserverpb__range_request__descriptor, forms[i]);
        assert_int_equal(r->key.len, 3);
        assert_memory_equal(r->key.data, "foo", 3);
        assert_memory_equal(r->range_end.data, "fop", 3);
        assert_int_equal(r->limit, 10);
        assert_int_equal(r->sort_order, ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND);
        assert_int_equal(r->sort_target, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD);
        assert_true(r->count_only);
        assert_int_equal(r->max_create_revision, -5);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    /* Patroni's txn: a oneof member by name, zero value kept; URL-safe unpadded base64. */
    Etcdserverpb__TxnRequest *t = (Etcdserverpb__TxnRequest *)decode_ok(
        &etcdserverpb__txn_request__descriptor,
        "{\"compare\":[{\"target\":\"CREATE\",\"key\":\"-_8\",\"create_revision\":0}],"
        "\"success\":[{\"request_put\":{\"key\":\"eA\",\"value\":\"MQ==\",\"lease\":\"77\"}}],"
        "\"failure\":[{\"requestDeleteRange\":{\"key\":\"eA==\",\"prevKv\":true}}]}");
    assert_int_equal(t->n_compare, 1);
    assert_int_equal(t->compare[0]->target, ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE);
    assert_int_equal(t->compare[0]->target_union_case,
                     ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION);
    assert_int_equal(t->compare[0]->key.len, 2);
    assert_memory_equal(t->compare[0]->key.data, "\xfb\xff", 2);
    assert_int_equal(t->success[0]->request_case, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT);
    assert_int_equal(t->success[0]->request_put->lease, 77);
    assert_memory_equal(t->success[0]->request_put->key.data, "x", 1);
    assert_int_equal(t->failure[0]->request_case,
                     ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE);
    assert_true(t->failure[0]->request_delete_range->prev_kv);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    /* Two members of one oneof: the later one wins, the earlier is freed (ASan checks). */
    Etcdserverpb__WatchRequest *w = (Etcdserverpb__WatchRequest *)decode_ok(
        &etcdserverpb__watch_request__descriptor,
        "{\"create_request\":{\"key\":\"YQ==\",\"filters\":[\"NODELETE\",0]},"
        "\"cancel_request\":{\"watch_id\":\"3\"}}");
    assert_int_equal(w->request_union_case,
                     ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST);
    assert_int_equal(w->cancel_request->watch_id, 3);
    protobuf_c_message_free_unpacked(&w->base, NULL);
    /* Proto-named uppercase fields and nulls. */
    Etcdserverpb__LeaseGrantRequest *g = (Etcdserverpb__LeaseGrantRequest *)decode_ok(
        &etcdserverpb__lease_grant_request__descriptor, "{\"TTL\":\"60\",\"ID\":null}");
    assert_int_equal(g->ttl, 60);
    assert_int_equal(g->id, 0);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    /* uint64 above INT64_MAX, as a string and as a number. */
    const char *big[] = {"{\"ID\":\"18446744073709551615\"}", "{\"ID\":18446744073709551615}"};
    for (size_t i = 0; i < 2; i++) {
        Etcdserverpb__MemberRemoveRequest *mr = (Etcdserverpb__MemberRemoveRequest *)decode_ok(
            &etcdserverpb__member_remove_request__descriptor, big[i]);
        assert_true(mr->id == UINT64_MAX);
        protobuf_c_message_free_unpacked(&mr->base, NULL);
    }
    /* Text after the first value is ignored, as Go's json.Decoder does. */
    ProtobufCMessage *m =
        decode_ok(&etcdserverpb__range_request__descriptor, "{\"key\":\"Zm9v\"} garbage");
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---------------------------------------------------------------------------------------------
 * Bad inputs: NULL, and an error that names the field
 */

static void expect_error(const ProtobufCMessageDescriptor *d, const char *json, const char *want)
{
    char err[256] = "";
    ProtobufCMessage *m = gw_pbjson_decode_text(d, json, strlen(json), err, sizeof(err));
    if (m || !strstr(err, want)) {
        fprintf(stderr, "decoding %s: got %s, error \"%s\", want one containing \"%s\"\n", json,
                m ? "a message" : "NULL", err, want);
        fail();
    }
}

static void test_bad_inputs(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *rr = &etcdserverpb__range_request__descriptor;
    const ProtobufCMessageDescriptor *tx = &etcdserverpb__txn_request__descriptor;
    expect_error(rr, "{\"key\":5}", "key: expected a base64 string");
    expect_error(rr, "{\"key\":\"Zm9v!\"}", "key: illegal base64");
    expect_error(rr, "{\"key\":\"Z\"}", "key: illegal base64");
    expect_error(rr, "{\"limit\":\"x\"}", "limit: expected an integer");
    expect_error(rr, "{\"limit\":1.5}", "limit: expected an integer");
    expect_error(rr, "{\"limit\":\"99999999999999999999\"}", "limit: integer");
    expect_error(rr, "{\"serializable\":\"true\"}", "serializable: expected true or false");
    expect_error(rr, "{\"sort_order\":\"BAD\"}", "sort_order: unknown value \"BAD\"");
    expect_error(rr, "{\"key\":\"Zm9v\",", "unexpected EOF");
    expect_error(rr, "{\"key\" \"Zm9v\"}", "");
    expect_error(rr, "[1,2]", "expected an object");
    expect_error(tx, "{\"compare\":{}}", "compare: expected an array");
    expect_error(tx, "{\"compare\":[{},{\"mod_revision\":\"x1\"}]}",
                 "compare[1].mod_revision: expected an integer");
    expect_error(tx, "{\"success\":[{\"request_put\":{\"lease\":true}}]}",
                 "success[0].request_put.lease: expected an integer");
    expect_error(tx, "{\"failure\":[null]}", "failure[0]: null element");
    expect_error(&etcdserverpb__hash_response__descriptor, "{\"hash\":-1}", "hash: integer -1");
    expect_error(&etcdserverpb__member_remove_request__descriptor, "{\"ID\":\"-1\"}",
                 "ID: expected an integer");
    /* Nesting past the bound is refused, not recursed into. */
    char deep[4096] = "";
    for (int i = 0; i < 80; i++)
        strcat(deep, "{\"success\":[{\"request_txn\":");
    strcat(deep, "{}");
    for (int i = 0; i < 80; i++)
        strcat(deep, "}]}");
    char err[256];
    assert_null(gw_pbjson_decode_text(tx, deep, strlen(deep), err, sizeof(err)));
}

/* json-c's tree costs far more than the text of "{}": a body is refused by its container count
 * before json-c builds it, and a stream's pieces are counted up to the end of each object. */
static void test_container_budget(void **state)
{
    (void)state;
    size_t n = GW_PBJSON_MAX_CONTAINERS + 1;
    char *body = malloc(16 + 3 * n);
    assert_non_null(body);
    size_t len = (size_t)sprintf(body, "{\"compare\":[");
    for (size_t i = 0; i < n - 2; i++) /* with the outer object and the array: n containers */
        len += (size_t)sprintf(body + len, i ? ",{}" : "{}");
    len += (size_t)sprintf(body + len, "]}");
    char err[256];
    ProtobufCMessage *m =
        gw_pbjson_decode_text(&etcdserverpb__txn_request__descriptor, body, len, err, sizeof(err));
    assert_null(m);
    assert_non_null(strstr(err, "JSON objects and arrays"));
    /* One fewer container decodes. */
    const char *ok = strstr(body, ",{}");
    size_t cut = (size_t)(ok - body);
    char *fewer = malloc(len);
    assert_non_null(fewer);
    memcpy(fewer, body, cut);
    memcpy(fewer + cut, ok + 3, len - cut - 3);
    m = gw_pbjson_decode_text(&etcdserverpb__txn_request__descriptor, fewer, len - 3, err,
                              sizeof(err));
    assert_non_null(m);
    assert_int_equal(((Etcdserverpb__TxnRequest *)m)->n_compare, n - 3);
    protobuf_c_message_free_unpacked(m, NULL);
    free(fewer);
    free(body);

    /* Pieces: strings are skipped (brackets and escaped quotes in them), and the scan stops just
     * after the object ends, leaving the next object's bytes alone. */
    static const char text[] = "{\"key\":\"[{\\\"[\",\"a\":[{}]} {\"b\":1}";
    struct gw_jscan sc = {0};
    size_t used = 0;
    for (size_t i = 0; i < sizeof(text) - 1 && !sc.ended; i += 3) {
        size_t piece = sizeof(text) - 1 - i < 3 ? sizeof(text) - 1 - i : 3;
        used += gw_jscan_feed(&sc, text + i, piece);
    }
    assert_true(sc.ended);
    assert_int_equal(sc.containers, 3);
    assert_int_equal(used, strchr(text, ' ') - text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_response),     cmocka_unit_test(test_txn_response),
        cmocka_unit_test(test_watch_delete_event), cmocka_unit_test(test_lease_responses),
        cmocka_unit_test(test_cluster_and_status), cmocka_unit_test(test_string_escapes),
        cmocka_unit_test(test_round_trips),        cmocka_unit_test(test_input_variants),
        cmocka_unit_test(test_bad_inputs),         cmocka_unit_test(test_container_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
