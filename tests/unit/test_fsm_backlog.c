/*
 * The storage writer's backlog (server/fsm.h, issue 9 hole 8): the bytes of committed entries
 * handed to the writer and not yet delivered back to the loop. Sessions yield to it, so it must
 * rise by an entry's bytes the moment the entry is queued and fall back to zero once every batch
 * holding it has been delivered. A real writer thread on a scratch store, driven on a real loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "testutil.h"

#define ENTRIES   3
#define VAL_BYTES (100 * 1024)

struct fx {
    uv_loop_t loop;
    char *dir;
    struct keel_store *store;
    struct keel_fsm *fsm;
    size_t delivered_bytes; /* entry_bytes of the batches delivered */
    size_t results;
};

static void on_done(void *data, struct keel_fsm_batch *b)
{
    struct fx *f = data;
    f->delivered_bytes += b->entry_bytes;
    f->results += b->n;
}

static void stopped(void *data)
{
    (void)data;
}

/* A packed CommandBatch of one put of VAL_BYTES (malloc'd). */
static uint8_t *entry(int i, size_t *len)
{
    static uint8_t val[VAL_BYTES];
    memset(val, 'v', sizeof(val));
    char key[16];
    snprintf(key, sizeof(key), "k%d", i);
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)key;
    put.key.len = strlen(key);
    put.value.data = val;
    put.value.len = sizeof(val);
    Keel__Command c = KEEL__COMMAND__INIT;
    c.request_id = (uint64_t)i + 1;
    c.origin = 1;
    c.op_case = KEEL__COMMAND__OP_PUT;
    c.put = &put;
    Keel__Command *cp = &c;
    Keel__CommandBatch b = KEEL__COMMAND_BATCH__INIT;
    b.n_commands = 1;
    b.commands = &cp;
    *len = keel__command_batch__get_packed_size(&b);
    uint8_t *out = malloc(*len);
    assert_non_null(out);
    keel__command_batch__pack(&b, out);
    return out;
}

static void backlog_counts_entries_until_delivered(void **state)
{
    (void)state;
    struct fx f;
    memset(&f, 0, sizeof(f));
    assert_int_equal(uv_loop_init(&f.loop), 0);
    f.dir = tu_mkdtemp("fsm-backlog");
    f.store = tu_store_open(f.dir, 0);
    static const uint64_t one = 1;
    struct keel_fsm_options o = {
        .loop = &f.loop, .store = f.store, .cluster_id = &one, .done = on_done, .data = &f};
    assert_int_equal(keel_fsm_new(&o, &f.fsm), 0);
    const struct keel_fsm_progress *pg = keel_fsm_progress(f.fsm);
    assert_int_equal(pg->backlog_bytes, 0);

    /* Queued: counted at once, before the loop has run (the writer may be done already, but
     * nothing comes back to the loop without it). */
    size_t total = 0;
    for (int i = 0; i < ENTRIES; i++) {
        size_t len;
        uint8_t *e = entry(i, &len);
        keel_fsm_apply(f.fsm, (uint64_t)i + 1, e, len);
        free(e);
        total += len;
        assert_int_equal(pg->backlog_bytes, total);
    }
    assert_true(total > ENTRIES * VAL_BYTES);

    /* Delivered: back to zero, batch by batch. */
    long long waited_ms = 0;
    for (int turns = 0; turns < 100000 && pg->committed < ENTRIES; turns++) {
        uv_run(&f.loop, UV_RUN_NOWAIT);
        assert_int_equal(pg->backlog_bytes + f.delivered_bytes, total);
        if (pg->committed < ENTRIES) {
            tu_sleep_ms(1);
            if (++waited_ms > 10000)
                fail_msg("the writer did not deliver %d entries within 10 s", ENTRIES);
        }
    }
    assert_int_equal(pg->committed, ENTRIES);
    assert_int_equal(f.results, ENTRIES);
    assert_int_equal(pg->backlog_bytes, 0);
    assert_int_equal(f.delivered_bytes, total);

    keel_fsm_stop(f.fsm, stopped, NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f.loop), 0);
    keel_fsm_free(f.fsm);
    keel_store_close(f.store);
    tu_rmdir(f.dir);
    free(f.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backlog_counts_entries_until_delivered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
