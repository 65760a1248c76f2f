/*
 * fuzz_apply: a raft entry as a member applies it (server/node.c -> server/fsm.c -> storage), on
 * a scratch store.
 *
 * Input: a raft entry. One that keel_entry_check accepts is decoded as it is; any other is taken
 * as an entry's payload and wrapped in a well-formed entry first, so every input reaches the
 * apply. The payload is unpacked as a CommandBatch in an arena (as the storage writer does) and
 * applied with keel_store_write_apply_entry at the next index, in one write that is committed;
 * then what it wrote is read back (history from its first revision on, leases, members).
 *
 * Checked, besides crashes, leaks and undefined behaviour: whatever the entry holds, apply ends
 * in 0 or in a shortage of this member (out of memory, map full), never in another local
 * failure: the storage writer aborts the member on those, and every replica applies the same
 * entry, so a command that made one would stop the whole cluster on every restart. Results
 * carry a message with every request-level error, and responses and events pack.
 *
 * The store is state that outlives one input: it is thrown away every WIPE_EVERY inputs, and
 * sooner when its file passes WIPE_BYTES, so a long run's disk stays bounded and a finding can
 * be replayed from its input on a nearly empty store.
 */
#include <string.h>

#include "arena.h"
#include "bytes.h"
#include "entry.h"
#include "err.h"
#include "fuzz.h"
#include "keel.pb-c.h"
#include "store.h"

#define WIPE_EVERY 256
#define WIPE_BYTES (32u << 20)

static struct keel_arena arena;
static uint64_t next_index;
static unsigned inputs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_arena_init(&arena, 0);
    return 0;
}

static bool shortage(int err)
{
    return err == KEEL_ENOMEM || err == KEEL_EMAPFULL;
}

/* What the entry wrote, read back through the read paths a member serves it with. */
static void read_back(struct keel_store *s, int64_t from)
{
    struct keel_history h;
    int err = keel_store_history(s, (const uint8_t *)"", 1, (const uint8_t *)"", 1, from, 1000,
                                 &arena, &h);
    FZ_CHECK(err == 0 || err == KEEL_ECOMPACTED || shortage(err));
    for (size_t i = 0; err == 0 && i < h.n_events; i++)
        fz_packs(&h.events[i]->base);
    struct keel_lease_info *leases;
    size_t n;
    err = keel_store_lease_list(s, &arena, &leases, &n);
    FZ_CHECK(err == 0 || shortage(err));
    Keel__Member **members;
    err = keel_store_members(s, &arena, &members, &n);
    FZ_CHECK(err == 0 || shortage(err));
    for (size_t i = 0; err == 0 && i < n; i++)
        fz_packs(&members[i]->base);
}

static void apply(const Keel__CommandBatch *batch)
{
    struct keel_store *s = fz_store();
    struct keel_store_stat st;
    keel_store_stat(s, &st);
    struct keel_apply_result *res =
        keel_arena_alloc(&arena, (batch->n_commands + 1) * sizeof(*res));
    FZ_CHECK(res != NULL);
    struct keel_store_write *w = NULL;
    int err = keel_store_write_begin(s, &w);
    FZ_CHECK(err == 0 || shortage(err));
    if (err != 0)
        return;
    err =
        keel_store_write_apply_entry(w, ++next_index, (const Keel__Command *const *)batch->commands,
                                     batch->n_commands, &arena, res);
    if (err != 0) {
        if (!shortage(err))
            fprintf(stderr, "apply: %s\n", keel_strerror(err));
        FZ_CHECK(shortage(err));
        keel_store_write_abort(w);
        fz_store_wipe();
        next_index = 0;
        return;
    }
    err = keel_store_write_commit(w);
    FZ_CHECK(err == 0 || shortage(err));
    for (size_t i = 0; i < batch->n_commands; i++) {
        const struct keel_apply_result *r = &res[i];
        FZ_CHECK(!r->skipped);
        if (r->err != 0) {
            FZ_CHECK(!keel_err_is_local(r->err) && r->msg != NULL);
            continue;
        }
        if (r->response != NULL)
            fz_packs(&r->response->base);
        for (size_t e = 0; e < r->n_events; e++)
            fz_packs(&r->events[e]->base);
    }
    if (err == 0)
        read_back(s, st.revision + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (++inputs % WIPE_EVERY == 0) {
        fz_store_wipe();
        next_index = 0;
    }
    /* raft hands entries over in its own memory: an entry made of the input as it is, or of
     * the input wrapped as a payload, padded to 8 as keel_entry_encode pads. */
    size_t wrapped = (KEEL_ENTRY_HEADER + size + 7) & ~(size_t)7;
    uint8_t *buf = calloc(1, wrapped > size ? wrapped : size);
    FZ_CHECK(buf != NULL);
    struct raft_buffer entry = {buf, size};
    if (size > 0)
        memcpy(buf, data, size);
    if (keel_entry_check(&entry) != 0) {
        keel_put_le32(buf, KEEL_ENTRY_MAGIC);
        keel_put_le32(buf + 4, (uint32_t)size);
        if (size > 0)
            memcpy(buf + KEEL_ENTRY_HEADER, data, size);
        entry.len = wrapped;
        FZ_CHECK(keel_entry_check(&entry) == 0);
    }
    const uint8_t *payload;
    size_t len;
    FZ_CHECK(keel_entry_decode(&entry, &payload, &len) == 0);
    FZ_CHECK(payload + len <= buf + entry.len);

    Keel__CommandBatch *batch = (Keel__CommandBatch *)protobuf_c_message_unpack(
        &keel__command_batch__descriptor, keel_arena_pb(&arena), len, payload);
    if (batch != NULL) {
        /* What a leader would propose for it is a well-formed entry too. */
        struct raft_buffer again;
        FZ_CHECK(keel_entry_encode(batch, &again) == 0);
        FZ_CHECK(keel_entry_check(&again) == 0 && again.len % 8 == 0);
        raft_free(again.base);
        apply(batch);
        struct keel_store_stat st;
        keel_store_stat(fz_store(), &st);
        if (st.db_size > WIPE_BYTES) {
            fz_store_wipe();
            next_index = 0;
        }
    }
    keel_arena_reset(&arena);
    free(buf);
    return 0;
}
