/*
 * fuzz_request: a client's frame payload as keeld takes it in, short of the event loop.
 *
 * session.c unpacks the first frame as a Hello and every later one as a Request, with
 * keel_frame_unpack (malloc'd, freed with keel__request__free_unpacked); dispatch sorts the
 * Request by its kind (proto/reqkind.h); a write becomes a Command (keel_reqkind_to_command) that
 * propose checks with keel_store_validate, then packs with the turn's other writes into one raft
 * entry (server/entry.h) that every member's storage writer unpacks; a serializable range is
 * served from the store at once (a linearizable one after a barrier: the same call). This target
 * does exactly those steps on the whole input: Hello, then Request, then the Command through the
 * validation with keeld's default limits and with tiny ones, into an entry and out of it as the
 * storage writer reads it, then a range on a scratch store holding a few keys over a compacted
 * history. Watches, leases and the rest are the loop's business and are not reached here.
 *
 * Checked, besides crashes, leaks and undefined behaviour: the kind predicates agree with each
 * other; validation answers 0 or a request-level code with a message (never a local failure but
 * out of memory); a write that passes becomes an entry every member can read back (one that
 * could not would stop every member, on every restart); a range either fails with a
 * request-level code or returns what packs.
 */
#include <string.h>

#include "arena.h"
#include "entry.h"
#include "err.h"
#include "frame.h"
#include "fuzz.h"
#include "keel.pb-c.h"
#include "reqkind.h"
#include "store.h"

static struct keel_arena arena;

/* A few keys, a lease, a deletion and a compaction: every kind of record a range can meet. */
static void fill(struct keel_store *s)
{
    static const char *const keys[] = {"a", "a/1", "a/2", "b", "b\xff", "c", "foo", "zz"};
    uint64_t index = 0;
    struct keel_apply_result r;
    Keel__Command c = KEEL__COMMAND__INIT;
    Keel__LeaseGrantRequest lg = KEEL__LEASE_GRANT_REQUEST__INIT;
    lg.id = 7;
    lg.ttl = 3600;
    c.op_case = KEEL__COMMAND__OP_LEASE_GRANT;
    c.lease_grant = &lg;
    FZ_CHECK(keel_store_apply(s, ++index, &c, &arena, &r) == 0 && r.err == 0);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            Keel__PutRequest p = KEEL__PUT_REQUEST__INIT;
            p.key = (ProtobufCBinaryData){strlen(keys[i]), (uint8_t *)keys[i]};
            p.value = (ProtobufCBinaryData){1 + i + (size_t)round, (uint8_t *)"0123456789abcdef"};
            p.lease = (i % 3 == 0) ? 7 : 0;
            c.op_case = KEEL__COMMAND__OP_PUT;
            c.put = &p;
            FZ_CHECK(keel_store_apply(s, ++index, &c, &arena, &r) == 0 && r.err == 0);
        }
    }
    Keel__DeleteRangeRequest d = KEEL__DELETE_RANGE_REQUEST__INIT;
    d.key = (ProtobufCBinaryData){1, (uint8_t *)"b"};
    d.range_end = (ProtobufCBinaryData){1, (uint8_t *)"c"};
    c.op_case = KEEL__COMMAND__OP_DELETE_RANGE;
    c.delete_range = &d;
    FZ_CHECK(keel_store_apply(s, ++index, &c, &arena, &r) == 0 && r.err == 0);
    Keel__CompactionRequest cr = KEEL__COMPACTION_REQUEST__INIT;
    cr.revision = 5;
    c.op_case = KEEL__COMMAND__OP_COMPACTION;
    c.compaction = &cr;
    FZ_CHECK(keel_store_apply(s, ++index, &c, &arena, &r) == 0 && r.err == 0);
    keel_arena_reset(&arena);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_arena_init(&arena, 0);
    fill(fz_store());
    return 0;
}

/* 0 when c passes, else its request-level code. */
static int validate(const Keel__Command *c, const struct keel_limits *limits)
{
    const char *msg = NULL;
    int err = keel_store_validate(c, limits, &msg);
    if (err == 0)
        return 0;
    FZ_CHECK(!keel_err_is_local(err) || err == KEEL_ENOMEM);
    FZ_CHECK(msg != NULL);
    FZ_CHECK(strlen(msg) < 4096);
    return err;
}

/* The entry propose makes of c (with another write beside it, as in a busy turn), read back as
 * the storage writer reads it. */
static void through_the_log(const Keel__Command *c)
{
    Keel__Command other = KEEL__COMMAND__INIT;
    Keel__CompactionRequest cr = KEEL__COMPACTION_REQUEST__INIT;
    cr.revision = 1;
    other.op_case = KEEL__COMMAND__OP_COMPACTION;
    other.compaction = &cr;
    Keel__Command *cmds[] = {(Keel__Command *)c, &other};
    Keel__CommandBatch batch = KEEL__COMMAND_BATCH__INIT;
    batch.n_commands = 2;
    batch.commands = cmds;
    struct raft_buffer entry;
    FZ_CHECK(keel_entry_encode(&batch, &entry) == 0);
    const uint8_t *payload;
    size_t len;
    FZ_CHECK(keel_entry_check(&entry) == 0 && keel_entry_decode(&entry, &payload, &len) == 0);
    Keel__CommandBatch *back = (Keel__CommandBatch *)protobuf_c_message_unpack(
        &keel__command_batch__descriptor, keel_arena_pb(&arena), len, payload);
    FZ_CHECK(back != NULL && back->n_commands == 2 && back->commands[0]->op_case == c->op_case);
    raft_free(entry.base);
    keel_arena_reset(&arena);
}

static void serve_range(const Keel__RangeRequest *rr)
{
    Keel__RangeResponse *out = NULL;
    int64_t rev = 0;
    int err = keel_store_range(fz_store(), rr, &arena, &out, &rev);
    if (err == 0) {
        FZ_CHECK(out != NULL);
        Keel__Response resp = KEEL__RESPONSE__INIT;
        resp.body_case = KEEL__RESPONSE__BODY_RANGE;
        resp.range = out;
        fz_packs(&resp.base);
    } else {
        FZ_CHECK(!keel_err_is_local(err) || err == KEEL_ENOMEM);
    }
    keel_arena_reset(&arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ProtobufCMessage *m;
    if (keel_frame_unpack(&keel__hello__descriptor, NULL, data, size, &m) == 0)
        protobuf_c_message_free_unpacked(m, NULL);
    if (keel_frame_unpack(&keel__request__descriptor, NULL, data, size, &m) != 0)
        return 0;
    Keel__Request *req = (Keel__Request *)m;
    const struct keel_reqkind *kind = keel_reqkind_of(req->body_case);
    bool write = keel_reqkind_is_write(req);
    bool idem = keel_reqkind_is_idempotent(req);
    bool leader = keel_reqkind_is_leader_only(req);
    FZ_CHECK(kind != NULL || (!write && !idem && !leader));

    Keel__Command c = KEEL__COMMAND__INIT;
    if (keel_reqkind_to_command(req, &c) == 0) {
        FZ_CHECK(write && kind->command == c.op_case);
        /* keeld's defaults (server/config.c, server/main.c), then the tightest ones. */
        struct keel_limits keeld = {.max_txn_ops = 128, .max_value_bytes = 1536 * 1024};
        struct keel_limits tiny = {.max_txn_ops = 1, .max_value_bytes = 1, .max_txn_total_ops = 2};
        int err = validate(&c, &keeld);
        validate(&c, &tiny);
        validate(&c, NULL);
        if (err == 0)
            through_the_log(&c);
    } else {
        /* No command: not a kind of write, or a read of a write's kind (alarm GET). */
        FZ_CHECK(kind == NULL || kind->command == KEEL__COMMAND__OP__NOT_SET || !write);
    }
    if (req->body_case == KEEL__REQUEST__BODY_RANGE)
        serve_range(req->range);
    keel__request__free_unpacked(req, NULL);
    return 0;
}
