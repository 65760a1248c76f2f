/*
 * Checkpoint streaming (server/snapstream.h) over a real store, with a recording responder in
 * place of the session (issue 9, hole 7). The first chunks must leave while the copy is still
 * being made: a follower's fetch times out when a large store's first chunk waits for the
 * whole copy (it used to), and then it retries and the member copies everything again.
 *
 * Observed as a comparison within the run: the responder drains at once, so the stream goes as
 * fast as the copy, and the first chunk must arrive within the first quarter of the time the
 * whole stream takes (streamed: a few ms of ~3 s; copied first: all of it). The store is a few
 * hundred MB so the copy takes long enough to tell the two apart on any machine, however busy.
 * (remaining_bytes cannot tell: the estimate, the committed size when asked, is what LMDB's
 * plain copy writes to the byte, so only a chunk sent between the copy's end and the copier's
 * news of it says "1 more byte".)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fakes.h"
#include "snapstream.h"
#include "testutil.h"

#define NKEYS     160
#define VAL_BYTES (1u << 20)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void fill(struct tf_env *e)
{
    char *val = malloc(VAL_BYTES + 1);
    assert_non_null(val);
    struct keel_arena a;
    keel_arena_init(&a, 0);
    struct keel_apply_result r;
    uint64_t index = 0;
    char key[16];
    /* Every key twice, then the first versions compacted away: free pages the copy leaves out. */
    for (int round = 0; round < 2; round++) {
        memset(val, round ? 'b' : 'a', VAL_BYTES);
        val[VAL_BYTES] = '\0';
        for (int i = 0; i < NKEYS; i++) {
            snprintf(key, sizeof(key), "k%03d", i);
            tu_apply(e->store, ++index, tu_cmd_put(&a, key, val), &a, &r);
            assert_int_equal(r.err, 0);
            keel_arena_reset(&a);
        }
    }
    tu_apply(e->store, ++index, tu_cmd_compact(&a, r.revision), &a, &r);
    assert_int_equal(r.err, 0);
    keel_arena_close(&a);
    free(val);
}

static void chunks_leave_while_the_copy_is_written(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct tf_env e;
    tf_env_init(&e, "snapstream");
    fill(&e);
    struct keel_snapstream ss = {.loop = &loop, .store = e.store, .reply = &e.reply, .active = 0};
    keel_snapstream_start(&ss, 7, 1);
    assert_non_null(e.out.drain_cb);

    FILE *copy = tmpfile();
    assert_non_null(copy);
    uint64_t got = 0, chunks = 0;
    long long started = now_ms(), first_ms = -1;
    uint64_t remaining[4096];
    bool last = false;
    size_t seen = 0;
    long long deadline = now_ms() + 120000;
    while (!last && now_ms() < deadline) {
        if (e.out.drain_cb != NULL && seen == e.out.n)
            e.out.drain_cb(e.out.drain_data, 0); /* all written: the session drained */
        if (uv_run(&loop, UV_RUN_NOWAIT) == 0 || seen == e.out.n)
            usleep(200);
        for (; seen < e.out.n; seen++) {
            Keel__Response *r = tf_response(&e.out, seen);
            assert_null(r->error);
            assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_SNAPSHOT);
            assert_true(chunks < 4096);
            if (first_ms < 0)
                first_ms = now_ms() - started;
            remaining[chunks] = r->snapshot->remaining_bytes;
            chunks++;
            /* The last may be empty: the pipe ended before the copier said how it went. */
            if (r->snapshot->blob.len > 0)
                assert_int_equal(fwrite(r->snapshot->blob.data, 1, r->snapshot->blob.len, copy),
                                 r->snapshot->blob.len);
            got += r->snapshot->blob.len;
            last = r->snapshot->remaining_bytes == 0;
            keel__response__free_unpacked(r, NULL);
        }
    }
    assert_true(last);
    long long total_ms = now_ms() - started;
    /* Only the last chunk says 0: before the end, none may say it is all. */
    for (uint64_t i = 0; i + 1 < chunks; i++)
        assert_true(remaining[i] > 0);
    assert_int_equal(remaining[chunks - 1], 0);
    printf("snapstream: %llu bytes in %llu chunks; the first after %lld ms of %lld\n",
           (unsigned long long)got, (unsigned long long)chunks, first_ms, total_ms);
    assert_true(got > 64 * (uint64_t)VAL_BYTES);
    assert_true(first_ms >= 0 && first_ms * 4 < total_ms);

    /* What arrived is the store: it restores, with every key at its second value. */
    fflush(copy);
    rewind(copy);
    char *dir = tu_mkdtemp("snapstream_copy");
    struct keel_store *s2 = tu_store_open(dir, 0);
    assert_int_equal(keel_store_restore(s2, fileno(copy), 0), 0);
    struct keel_arena a;
    keel_arena_init(&a, 0);
    Keel__RangeResponse *rr = NULL;
    const char *probe[] = {"k000", "k080", "k159"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tu_range(s2, &a, probe[i], NULL, 0, &rr), 0);
        assert_int_equal(rr->count, 1);
        assert_int_equal(rr->kvs[0]->value.data[0], 'b');
    }
    struct keel_store_stat src, dst;
    keel_store_stat(e.store, &src);
    keel_store_stat(s2, &dst);
    assert_int_equal(dst.applied_index, src.applied_index);
    assert_int_equal(dst.revision, src.revision);
    keel_arena_close(&a);
    keel_store_close(s2);
    tu_rmdir(dir);
    free(dir);
    fclose(copy);

    uv_run(&loop, UV_RUN_DEFAULT); /* the stream's handles close */
    assert_int_equal(ss.active, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    tf_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(chunks_leave_while_the_copy_is_written)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
