/*
 * fuzz_seeds DIR: writes the seed corpus of every fuzz target into DIR/<target>/ (what
 * tests/fuzz/corpus/ holds; `tests/fuzz/run.sh --seeds` regenerates it). A few small inputs per
 * target that get far: well-formed frames, requests, raft entries, handshakes, keelctl
 * arguments and txn scripts, each in the input layout its target's opening comment describes.
 * Built with keel's own encoders, so they follow the formats as the code has them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "entry.h"
#include "frame.h"
#include "fuzz.h"
#include "handshake.h"
#include "keel.pb-c.h"
#include "methods.h"

static const char *out_dir;

static void write_file(const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", out_dir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* A mode byte followed by text (the ctl targets' layout). */
static void write_text(const char *target, const char *name, uint8_t mode, const char *text)
{
    size_t n = strlen(text);
    uint8_t *buf = malloc(n + 1);
    buf[0] = mode;
    memcpy(buf + 1, text, n);
    write_file(target, name, buf, n + 1);
    free(buf);
}

static ProtobufCBinaryData str(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* ---- requests ---- */

static Keel__PutRequest put_a = KEEL__PUT_REQUEST__INIT;
static Keel__PutRequest put_b = KEEL__PUT_REQUEST__INIT;
static Keel__RangeRequest range = KEEL__RANGE_REQUEST__INIT;
static Keel__DeleteRangeRequest del = KEEL__DELETE_RANGE_REQUEST__INIT;
static Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
static Keel__TxnRequest inner = KEEL__TXN_REQUEST__INIT;
static Keel__Compare cmp_mod = KEEL__COMPARE__INIT;
static Keel__Compare cmp_val = KEEL__COMPARE__INIT;
static Keel__RequestOp op_put = KEEL__REQUEST_OP__INIT;
static Keel__RequestOp op_range = KEEL__REQUEST_OP__INIT;
static Keel__RequestOp op_del = KEEL__REQUEST_OP__INIT;
static Keel__RequestOp op_txn = KEEL__REQUEST_OP__INIT;
static Keel__RequestOp op_put_b = KEEL__REQUEST_OP__INIT;
static Keel__CompactionRequest compaction = KEEL__COMPACTION_REQUEST__INIT;
static Keel__LeaseGrantRequest grant = KEEL__LEASE_GRANT_REQUEST__INIT;
static Keel__LeaseRevokeRequest revoke_req = KEEL__LEASE_REVOKE_REQUEST__INIT;
static Keel__WatchCreateRequest watch = KEEL__WATCH_CREATE_REQUEST__INIT;
static Keel__StatusRequest status = KEEL__STATUS_REQUEST__INIT;

static void build_requests(void)
{
    put_a.key = str("foo");
    put_a.value = str("bar");
    put_a.prev_kv = 1;
    put_b.key = str("a/2");
    put_b.value = str("");
    put_b.lease = 7;
    range.key = str("a");
    range.range_end = str("b");
    range.limit = 2;
    range.sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
    range.sort_target = KEEL__RANGE_REQUEST__SORT_TARGET__MOD;
    range.serializable = 1;
    del.key = str("b");
    del.range_end = str("c");
    del.prev_kv = 1;
    cmp_mod.key = str("foo");
    cmp_mod.target = KEEL__COMPARE__COMPARE_TARGET__MOD;
    cmp_mod.result = KEEL__COMPARE__COMPARE_RESULT__GREATER;
    cmp_mod.target_union_case = KEEL__COMPARE__TARGET_UNION_MOD_REVISION;
    cmp_mod.mod_revision = 3;
    cmp_val.key = str("a");
    cmp_val.range_end = str("a0");
    cmp_val.target = KEEL__COMPARE__COMPARE_TARGET__VALUE;
    cmp_val.result = KEEL__COMPARE__COMPARE_RESULT__EQUAL;
    cmp_val.target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
    cmp_val.value = str("1");
    op_put.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op_put.request_put = &put_a;
    op_put_b.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op_put_b.request_put = &put_b;
    op_range.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op_range.request_range = &range;
    op_del.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op_del.request_delete_range = &del;
    static Keel__Compare *inner_cmp[] = {&cmp_val};
    static Keel__RequestOp *inner_ok[] = {&op_put_b};
    static Keel__RequestOp *inner_else[] = {&op_range};
    inner.n_compare = 1;
    inner.compare = inner_cmp;
    inner.n_success = 1;
    inner.success = inner_ok;
    inner.n_failure = 1;
    inner.failure = inner_else;
    op_txn.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
    op_txn.request_txn = &inner;
    static Keel__Compare *cmps[] = {&cmp_mod, &cmp_val};
    static Keel__RequestOp *ok[] = {&op_put, &op_del, &op_txn};
    static Keel__RequestOp *otherwise[] = {&op_range};
    txn.n_compare = 2;
    txn.compare = cmps;
    txn.n_success = 3;
    txn.success = ok;
    txn.n_failure = 1;
    txn.failure = otherwise;
    compaction.revision = 4;
    grant.id = 7;
    grant.ttl = 60;
    revoke_req.id = 7;
    watch.key = str("a");
    watch.range_end = str("b");
    watch.start_revision = 2;
    watch.prev_kv = 1;
}

/* Request {id, body} for each body above, in a fixed order. */
static size_t requests(Keel__Request *v)
{
    size_t n = 0;
    for (int i = 0; i < 9; i++) {
        Keel__Request *r = &v[n++];
        keel__request__init(r);
        r->id = (uint64_t)i + 1;
        switch (i) {
        case 0:
            r->body_case = KEEL__REQUEST__BODY_PUT;
            r->put = &put_a;
            break;
        case 1:
            r->body_case = KEEL__REQUEST__BODY_RANGE;
            r->range = &range;
            break;
        case 2:
            r->body_case = KEEL__REQUEST__BODY_DELETE_RANGE;
            r->delete_range = &del;
            break;
        case 3:
            r->body_case = KEEL__REQUEST__BODY_TXN;
            r->txn = &txn;
            break;
        case 4:
            r->body_case = KEEL__REQUEST__BODY_COMPACTION;
            r->compaction = &compaction;
            break;
        case 5:
            r->body_case = KEEL__REQUEST__BODY_LEASE_GRANT;
            r->lease_grant = &grant;
            break;
        case 6:
            r->body_case = KEEL__REQUEST__BODY_LEASE_REVOKE;
            r->lease_revoke = &revoke_req;
            break;
        case 7:
            r->body_case = KEEL__REQUEST__BODY_WATCH_CREATE;
            r->watch_create = &watch;
            break;
        default:
            r->body_case = KEEL__REQUEST__BODY_STATUS;
            r->status = &status;
            break;
        }
    }
    return n;
}

static const char *const request_names[] = {"put",          "range",        "delete_range",
                                            "txn",          "compaction",   "lease_grant",
                                            "lease_revoke", "watch_create", "status"};

static uint8_t *packed(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

static void request_seeds(void)
{
    Keel__Request reqs[9];
    size_t n = requests(reqs);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *buf = packed(&reqs[i].base, &len);
        write_file("request", request_names[i], buf, len);
        free(buf);
    }
    Keel__Hello h = KEEL__HELLO__INIT;
    h.protocol_version = 1;
    h.client_name = "keelctl";
    size_t len;
    uint8_t *buf = packed(&h.base, &len);
    write_file("request", "hello", buf, len);
    free(buf);

    /* Regressions. A txn that puts nothing (validate.c took an offset from a NULL array). */
    Keel__TxnRequest t = KEEL__TXN_REQUEST__INIT;
    Keel__RequestOp *dels[] = {&op_del};
    t.n_success = 1;
    t.success = dels;
    Keel__Request r = KEEL__REQUEST__INIT;
    r.body_case = KEEL__REQUEST__BODY_TXN;
    r.txn = &t;
    buf = packed(&r.base, &len);
    write_file("request", "regress_txn_no_put", buf, len);
    free(buf);
    /* A put carrying field number 0 spelled in two bytes (it reached the log unreadable). */
    static const uint8_t tag0[] = {0x08, 0x01, 0x5a, 0x09, 0x0a, 0x01, 0x6b,
                                   0x12, 0x01, 0x76, 0x80, 0x00, 0x01};
    write_file("request", "regress_tag0", tag0, sizeof(tag0));
    /* Nesting past the limit (protobuf-c's recursion has none). */
    static Keel__TxnRequest txns[40];
    static Keel__RequestOp ops[40], *opp[40];
    for (int i = 0; i < 40; i++) {
        keel__txn_request__init(&txns[i]);
        keel__request_op__init(&ops[i]);
        ops[i].request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
        ops[i].request_txn = &txns[i];
        opp[i] = &ops[i];
        if (i > 0) {
            txns[i - 1].n_success = 1;
            txns[i - 1].success = &opp[i];
        }
    }
    r.txn = &txns[0];
    buf = packed(&r.base, &len);
    write_file("request", "regress_deep", buf, len);
    free(buf);
}

/* ---- frames: [limit byte][cut byte] then a stream of frames ---- */

static size_t append_frame(uint8_t *out, const ProtobufCMessage *m)
{
    return keel_frame_pack(m, out);
}

static void frame_seeds(void)
{
    static uint8_t buf[8192];
    Keel__Request reqs[9];
    requests(reqs);
    Keel__Hello h = KEEL__HELLO__INIT;
    h.protocol_version = 1;

    /* A session's opening: Hello, a put, a range, a txn; default limit, tiny pieces. */
    size_t n = 0;
    buf[n++] = 0;
    buf[n++] = 0x03;
    n += append_frame(buf + n, &h.base);
    n += append_frame(buf + n, &reqs[0].base);
    n += append_frame(buf + n, &reqs[1].base);
    n += append_frame(buf + n, &reqs[3].base);
    write_file("frame", "session", buf, n);

    /* Through _space/_commit; a 64-byte limit the txn is over. */
    n = 0;
    buf[n++] = 1;
    buf[n++] = 0x47;
    n += append_frame(buf + n, &reqs[2].base);
    n += append_frame(buf + n, &reqs[3].base);
    write_file("frame", "over_limit", buf, n);

    /* Replies a client reads: a range with key-values, a watch event, an error. */
    Keel__KeyValue kv = KEEL__KEY_VALUE__INIT, *kvs[] = {&kv, &kv};
    kv.key = str("foo");
    kv.value = str("bar");
    kv.create_revision = 2;
    kv.mod_revision = 3;
    kv.version = 2;
    Keel__RangeResponse rr = KEEL__RANGE_RESPONSE__INIT;
    rr.n_kvs = 2;
    rr.kvs = kvs;
    rr.count = 2;
    Keel__ResponseHeader hdr = KEEL__RESPONSE_HEADER__INIT;
    hdr.cluster_id = 0x1234;
    hdr.revision = 3;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = 2;
    resp.header = &hdr;
    resp.body_case = KEEL__RESPONSE__BODY_RANGE;
    resp.range = &rr;
    Keel__Event ev = KEEL__EVENT__INIT, *evs[] = {&ev};
    ev.type = KEEL__EVENT__EVENT_TYPE__DELETE;
    ev.kv = &kv;
    ev.prev_kv = &kv;
    Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
    wr.n_events = 1;
    wr.events = evs;
    Keel__Response wresp = KEEL__RESPONSE__INIT;
    wresp.id = 8;
    wresp.header = &hdr;
    wresp.body_case = KEEL__RESPONSE__BODY_WATCH;
    wresp.watch = &wr;
    Keel__Error err = KEEL__ERROR__INIT;
    err.code = KEEL__ERROR_CODE__NOT_LEADER;
    err.message = "not the leader";
    err.leader_address = "127.0.2.1:2379";
    Keel__Response eresp = KEEL__RESPONSE__INIT;
    eresp.id = 9;
    eresp.error = &err;
    n = 0;
    buf[n++] = 0;
    buf[n++] = 0x80;
    n += append_frame(buf + n, &resp.base);
    n += append_frame(buf + n, &wresp.base);
    n += append_frame(buf + n, &eresp.base);
    write_file("frame", "replies", buf, n);

    /* An empty frame, then one cut short. */
    n = 0;
    buf[n++] = 1;
    buf[n++] = 0x01;
    memset(buf + n, 0, 4);
    n += 4;
    n += append_frame(buf + n, &reqs[5].base) - 2;
    write_file("frame", "empty_and_truncated", buf, n);
}

/* ---- raft entries ---- */

static void entry_file(const char *name, Keel__Command **cmds, size_t n)
{
    Keel__CommandBatch b = KEEL__COMMAND_BATCH__INIT;
    b.n_commands = n;
    b.commands = cmds;
    struct raft_buffer e;
    if (keel_entry_encode(&b, &e) != 0)
        exit(1);
    write_file("apply", name, e.base, e.len);
    raft_free(e.base);
}

static void apply_seeds(void)
{
    Keel__Command c[12];
    Keel__Command *p[12];
    for (int i = 0; i < 12; i++) {
        keel__command__init(&c[i]);
        c[i].request_id = (uint64_t)i + 1;
        c[i].origin = 0xabcdef;
        p[i] = &c[i];
    }
    c[0].op_case = KEEL__COMMAND__OP_LEASE_GRANT;
    c[0].lease_grant = &grant;
    c[1].op_case = KEEL__COMMAND__OP_PUT;
    c[1].put = &put_a;
    c[2].op_case = KEEL__COMMAND__OP_PUT;
    c[2].put = &put_b;
    c[3].op_case = KEEL__COMMAND__OP_TXN;
    c[3].txn = &txn;
    c[4].op_case = KEEL__COMMAND__OP_DELETE_RANGE;
    c[4].delete_range = &del;
    c[5].op_case = KEEL__COMMAND__OP_COMPACTION;
    c[5].compaction = &compaction;
    static Keel__LeaseCheckpoint cp = KEEL__LEASE_CHECKPOINT__INIT, *cps[] = {&cp};
    cp.id = 7;
    cp.remaining_ms = 1500;
    static Keel__LeaseCheckpointRequest lcr = KEEL__LEASE_CHECKPOINT_REQUEST__INIT;
    lcr.n_checkpoints = 1;
    lcr.checkpoints = cps;
    c[6].op_case = KEEL__COMMAND__OP_LEASE_CHECKPOINT;
    c[6].lease_checkpoint = &lcr;
    static Keel__Member m = KEEL__MEMBER__INIT;
    static char *client[] = {"127.0.2.1:2379"};
    m.id = 0x42;
    m.name = "b";
    m.zone = "z2";
    m.n_clienturls = 1;
    m.clienturls = client;
    c[7].op_case = KEEL__COMMAND__OP_MEMBER_ATTRS;
    c[7].member_attrs = &m;
    static Keel__QuotaRequest q = KEEL__QUOTA_REQUEST__INIT;
    q.bytes = 1u << 20;
    q.if_unset = 1;
    c[8].op_case = KEEL__COMMAND__OP_QUOTA;
    c[8].quota = &q;
    c[9].op_case = KEEL__COMMAND__OP_LEASE_REVOKE;
    c[9].lease_revoke = &revoke_req;

    entry_file("writes", p, 3);      /* grant, put, put with the lease */
    entry_file("txn", p, 4);         /* the same, then the nested txn */
    entry_file("everything", p, 10); /* every kind of command, in one entry */
    entry_file("compact_revoke", p + 4, 6);
    /* A bare payload, which the target wraps in an entry. */
    Keel__CommandBatch b = KEEL__COMMAND_BATCH__INIT;
    b.n_commands = 2;
    b.commands = p + 1;
    size_t len;
    uint8_t *buf = packed(&b.base, &len);
    write_file("apply", "payload", buf, len);
    free(buf);
}

/* ---- peer handshakes: the handshake, then the source address ---- */

static void handshake_file(const char *name, const struct keel_handshake *h, const char *from,
                           int version)
{
    uint8_t buf[KEEL_HANDSHAKE_LEN + 4];
    keel_handshake_encode(h, buf);
    buf[8] = (uint8_t)version;
    inet_pton(AF_INET, from, buf + KEEL_HANDSHAKE_LEN);
    write_file("handshake", name, buf, sizeof(buf));
}

static void handshake_seeds(void)
{
    struct keel_config cfg;
    char *args[] = FZ_MEMBER_ARGS;
    char err[256];
    if (keel_config_parse(&cfg, (int)(sizeof(args) / sizeof(args[0])) - 1, args, err,
                          sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_seeds: %s\n", err);
        exit(1);
    }
    for (size_t i = 0; i < cfg.n_members; i++) {
        const struct keel_member_conf *m = &cfg.members[i];
        char client[KEEL_ADDR_MAX], host[KEEL_ADDR_MAX], name[64];
        int port;
        keel_addr_split(m->peer, host, sizeof(host), &port);
        snprintf(client, sizeof(client), "%s:2379", host);
        struct keel_handshake h = {.cluster_id = cfg.cluster_id,
                                   .id = m->id,
                                   .peer = m->peer,
                                   .client = client,
                                   .name = m->name,
                                   .zone = m->zone};
        snprintf(name, sizeof(name), "from_%s", m->name);
        handshake_file(name, &h, host, 2);
        if (i == 1) {
            handshake_file("version_1", &h, host, 1);
            handshake_file("wrong_host", &h, "127.0.3.1", 2);
            h.kind = KEEL_HANDSHAKE_FETCH;
            handshake_file("fetch_from_b", &h, host, 2);
            h.kind = KEEL_HANDSHAKE_RAFT;
            h.cluster_id ^= 1;
            handshake_file("other_cluster", &h, host, 2);
        }
    }
    keel_config_close(&cfg);
}

/* ---- keelctl ---- */

static void ctl_seeds(void)
{
    write_text("ctl_args", "get", 0,
               "foo\n--prefix\n--limit=10\n--rev\n5\n--order=DESCEND\n--sort-by=MODIFY\n"
               "--consistency=s");
    write_text("ctl_args", "get_range", 0, "a\nb\n--keys-only\n--\n-x");
    write_text("ctl_args", "put", 1, "key\nvalue\n--lease=0x1f\n--prev-kv=true");
    write_text("ctl_args", "put_ignore", 1, "key\n--ignore-value\n--ignore-lease");
    write_text("ctl_args", "del", 2, "k\n--from-key\n--prev-kv");
    write_text("ctl_args", "watch", 3,
               "k\n--prefix\n--rev=3\n--prev-kv\n--progress-notify\n--count=2");
    write_text("ctl_args", "globals", 4,
               "--endpoints=127.0.0.1:2379\n-w\njson\n--timeout\n1m30.5s\n-n5\n-p=x\n--peer\ny\n"
               "-h=false\nget\n-5");
    write_text("ctl_args", "op_line", 5, "get \"a\\x00b\" --prefix --limit 3 'raw str'");
    write_text("ctl_args", "literal", 6, "\"\\x41\\u00e9\\U0001F600\\101\\n\\t\\\\\\\"\" rest");
    write_text("ctl_args", "raw_literal", 6, "`raw \\n`");
    write_text("ctl_args", "duration", 7, "1h2m3.5s250ms1.5\xc2\xb5s7ns");
    write_text("ctl_args", "regress_duration_nan", 7, "1snanms"); /* strtod reads "nan" */

    write_text("ctl_txn", "txn", 0,
               "mod(\"key1\") > \"0\"\nval(\"key2\") = \"hi\"\nver(\"k3\") != \"2\"\n"
               "c(`k4`) < \"10\"\nlease(\"k5\") = \"1f\"\n\n"
               "put key1 \"v 1\" --prev-kv\nget key2 --prefix\ndel k3 --from-key\n\n"
               "put k4 x\nget k \"k\\x00z\" --rev=2\n");
    write_text("ctl_txn", "interactive", 1,
               "value(\"a\") == \"b\"\n\nput a \"\\u00e9\"\n\ndelete a --prefix\n");
    write_text("ctl_txn", "no_compares", 0, "\nput a b --lease=1\n");
}

/* The index gw_method_at gives the method at gRPC path, as the gw targets' first byte. */
static uint8_t gw_index(const char *path)
{
    for (size_t i = 0; gw_method_at(i); i++)
        if (gw_method_at(i)->grpc_path && strcmp(gw_method_at(i)->grpc_path, path) == 0)
            return (uint8_t)i;
    fprintf(stderr, "fuzz_seeds: no gateway method %s\n", path);
    exit(1);
}

/* keel-gateway's inputs: JSON bodies (gw_json) and gRPC request streams (gw_grpc). */
static void gw_seeds(void)
{
    static const struct {
        const char *name, *path, *json;
    } bodies[] = {
        {"range", "/etcdserverpb.KV/Range",
         "{\"key\":\"YQ==\",\"range_end\":\"Yg==\",\"limit\":\"10\",\"revision\":5,"
         "\"sort_order\":\"DESCEND\",\"sortTarget\":2,\"keys_only\":true}"},
        {"put", "/etcdserverpb.KV/Put",
         "{\"key\":\"Zm9v\",\"value\":\"YmFy\",\"lease\":\"7587866723421569029\",\"prev_kv\":"
         "true}"},
        {"txn", "/etcdserverpb.KV/Txn",
         "{\"compare\":[{\"target\":\"MOD\",\"key\":\"Zm9v\",\"mod_revision\":\"0\"},"
         "{\"result\":\"GREATER\",\"target\":\"VALUE\",\"key\":\"YQ\",\"value\":\"eA==\"}],"
         "\"success\":[{\"request_put\":{\"key\":\"Zm9v\",\"value\":\"YmFy\"}},"
         "{\"request_txn\":{\"success\":[{\"request_range\":{\"key\":\"YQ==\"}}]}}],"
         "\"failure\":[{\"request_delete_range\":{\"key\":\"Zm9v\",\"prev_kv\":true}}]}"},
        {"watch", "/etcdserverpb.Watch/Watch",
         "{\"create_request\":{\"key\":\"L3JlZ2lzdHJ5Lw==\",\"range_end\":\"L3JlZ2lzdHJ5MA==\","
         "\"start_revision\":\"12\",\"filters\":[\"NOPUT\",1],\"prev_kv\":true,"
         "\"progress_notify\":true}}"},
        {"grant", "/etcdserverpb.Lease/LeaseGrant", "{\"TTL\":60,\"ID\":\"0\"}"},
        {"keepalive", "/etcdserverpb.Lease/LeaseKeepAlive", "{\"ID\":\"7587866723421569029\"}"},
        {"status", "/etcdserverpb.Maintenance/Status", "{}"},
        {"empty", "/etcdserverpb.Cluster/MemberList", ""},
        {"bad", "/etcdserverpb.KV/Compact", "{\"revision\":\"x\",\"physical\":3}"},
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        write_text("gw_json", bodies[i].name, gw_index(bodies[i].path), bodies[i].json);

    /* method, limit (0: 1.5 MiB), cut, then prefixed messages. */
    static const uint8_t put[] = {0,   0,    0, 0,   0,   0,   0, 10, 0x0a, 3, 'f', 'o',
                                  'o', 0x12, 3, 'b', 'a', 'r', 0, 0,  0,    0, 0};
    uint8_t buf[sizeof(put)];
    memcpy(buf, put, sizeof(put));
    buf[0] = gw_index("/etcdserverpb.KV/Put");
    write_file("gw_grpc", "put_then_empty", buf, sizeof(buf));
    buf[2] = 0x85; /* big chunks */
    write_file("gw_grpc", "put_big_chunks", buf, sizeof(buf));
    buf[1] = 1; /* bodies of at most 16 bytes: too large */
    write_file("gw_grpc", "put_too_large", buf, sizeof(buf));
    /* Two watch creates on one stream, the second split by the cut. */
    static const uint8_t watch[] = {0, 0, 3, 0, 0, 0,    0, 7,    0x0a, 5,   0x0a, 1, 'a', 0x30, 1,
                                    0, 0, 0, 0, 9, 0x0a, 7, 0x0a, 1,    'b', 0x12, 2, 'c', 0};
    uint8_t wbuf[sizeof(watch)];
    memcpy(wbuf, watch, sizeof(watch));
    wbuf[0] = gw_index("/etcdserverpb.Watch/Watch");
    write_file("gw_grpc", "watch_two_creates", wbuf, sizeof(wbuf));
    /* A Txn nested 30 deep (under the depth limit; every length fits one varint byte). */
    uint8_t deep[8 + 30 * 2 * 2 + 8];
    size_t at = sizeof(deep);
    uint8_t len = 0;
    for (int i = 0; i < 30; i++) {
        deep[--at] = len, deep[--at] = 0x22, len = (uint8_t)(len + 2);
        deep[--at] = len, deep[--at] = 0x12, len = (uint8_t)(len + 2);
    }
    at -= 5;
    deep[at] = 0, deep[at + 1] = 0, deep[at + 2] = 0, deep[at + 3] = 0, deep[at + 4] = len;
    deep[--at] = 0;
    deep[--at] = 0;
    deep[--at] = gw_index("/etcdserverpb.KV/Txn");
    write_file("gw_grpc", "txn_nested_30", deep + at, sizeof(deep) - at);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR\n");
        return 2;
    }
    out_dir = argv[1];
    build_requests();
    request_seeds();
    frame_seeds();
    apply_seeds();
    handshake_seeds();
    ctl_seeds();
    gw_seeds();
    return 0;
}
