/*
 * Linearizable reads (server/readindex.h) with a fake node that holds barriers until the test
 * completes them and a writer position the test moves by hand. What must hold:
 *
 *   - a read is released only after a barrier appended after it completed AND the writer
 *     committed everything handed to the fsm before that barrier completed;
 *   - a barrier covers the reads that arrived before it was appended; reads arriving while it
 *     is in flight share the next one, appended as soon as it completes;
 *   - reads are released in arrival order, each exactly once;
 *   - lost leadership fails them NOT_LEADER, stopping fails them UNAVAILABLE, and a read that
 *     cannot even be queued is refused by the call itself, never called back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fakes.h"
#include "readindex.h"

struct fx {
    struct tf_node node;
    struct keel_fsm_progress progress;
    struct keel_readindex *ri;
    /* what each read heard, in callback order */
    int order[32];
    int errs[32];
    size_t n;
    int calls[32]; /* callbacks per read id */
};

struct read {
    struct fx *f;
    int id;
};

static struct read reads[32];

static void on_ready(void *data, int err)
{
    struct read *r = data;
    struct fx *f = r->f;
    f->order[f->n] = r->id;
    f->errs[f->n] = err;
    f->n++;
    f->calls[r->id]++;
}

static int wait_read(struct fx *f, int id)
{
    reads[id].f = f;
    reads[id].id = id;
    return keel_readindex_wait(f->ri, on_ready, &reads[id]);
}

/* The last barrier held by the fake node. */
static size_t last_barrier(struct fx *f)
{
    for (size_t i = f->node.n_calls; i-- > 0;)
        if (f->node.calls[i].barrier)
            return i;
    fail_msg("no barrier held");
    return 0;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    tf_node_init(&f->node);
    tf_node_set_leader(&f->node, true, 1);
    f->progress.queued = f->progress.committed = 5;
    struct keel_readindex_options o = {.raft = &f->node.seam, .progress = &f->progress};
    assert_int_equal(keel_readindex_new(&o, &f->ri), 0);
    keel_readindex_leader_changed(f->ri, true);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    keel_readindex_stop(f->ri);
    /* raft's close calls back whatever it still holds */
    for (size_t i = 0; i < f->node.n_calls; i++)
        if (!f->node.calls[i].completed)
            tf_node_complete(&f->node, i, KEEL_ENOTLEADER);
    for (int id = 0; id < 32; id++)
        assert_true(f->calls[id] <= 1); /* never twice */
    keel_readindex_free(f->ri);
    tf_node_close(&f->node);
    free(f);
    return 0;
}

static void released_after_barrier_and_writer(void **state)
{
    struct fx *f = *state;
    assert_int_equal(wait_read(f, 1), 0);
    assert_int_equal(tf_node_count(&f->node, true), 1);
    assert_int_equal(f->n, 0);

    /* Meanwhile entries up to 9 reached the fsm; the writer has committed 5. */
    f->progress.queued = 9;
    tf_node_complete(&f->node, last_barrier(f), 0);
    assert_int_equal(f->n, 0); /* the store is behind what the barrier covered */
    f->progress.committed = 8;
    keel_readindex_applied(f->ri);
    assert_int_equal(f->n, 0);
    f->progress.committed = 9;
    keel_readindex_applied(f->ri);
    assert_int_equal(f->n, 1);
    assert_int_equal(f->order[0], 1);
    assert_int_equal(f->errs[0], 0);
    keel_readindex_applied(f->ri);
    assert_int_equal(f->n, 1);
    assert_int_equal(tf_node_count(&f->node, true), 1); /* nothing left to cover */
}

static void store_already_there_releases_at_once(void **state)
{
    struct fx *f = *state;
    assert_int_equal(wait_read(f, 1), 0);
    tf_node_complete(&f->node, last_barrier(f), 0); /* queued 5 == committed 5 */
    assert_int_equal(f->n, 1);
    assert_int_equal(f->errs[0], 0);
}

static void later_reads_wait_for_the_next_barrier(void **state)
{
    struct fx *f = *state;
    assert_int_equal(wait_read(f, 1), 0);
    size_t b1 = last_barrier(f);
    assert_int_equal(wait_read(f, 2), 0); /* arrives while b1 is in flight */
    assert_int_equal(wait_read(f, 3), 0);
    assert_int_equal(tf_node_count(&f->node, true), 1); /* one of ours in raft at a time */

    f->progress.queued = 6;
    tf_node_complete(&f->node, b1, 0);
    assert_int_equal(f->n, 0);                          /* committed is 5 */
    assert_int_equal(tf_node_count(&f->node, true), 2); /* the next one went at once */
    f->progress.committed = 6;
    keel_readindex_applied(f->ri);
    /* b1 covered read 1 only: 2 and 3 may have arrived after writes b1 does not cover. */
    assert_int_equal(f->n, 1);
    assert_int_equal(f->order[0], 1);

    f->progress.queued = 7;
    tf_node_complete(&f->node, last_barrier(f), 0);
    assert_int_equal(f->n, 1);
    f->progress.committed = 7;
    keel_readindex_applied(f->ri);
    assert_int_equal(f->n, 3);
    assert_int_equal(f->order[1], 2);
    assert_int_equal(f->order[2], 3);
}

static void refused_reads_are_not_called_back(void **state)
{
    struct fx *f = *state;
    tf_node_set_leader(&f->node, false, 2);
    assert_int_equal(wait_read(f, 1), KEEL_ENOTLEADER);
    tf_node_set_leader(&f->node, true, 1);
    f->node.refuse = KEEL_ENOMEM; /* raft cannot take a barrier */
    assert_int_equal(wait_read(f, 2), KEEL_EUNAVAILABLE);
    f->node.refuse = KEEL_ENOTLEADER;
    assert_int_equal(wait_read(f, 3), KEEL_ENOTLEADER);
    assert_int_equal(f->n, 0);
    /* And the queue is clean afterwards. */
    f->node.refuse = 0;
    assert_int_equal(wait_read(f, 4), 0);
    tf_node_complete(&f->node, last_barrier(f), 0);
    assert_int_equal(f->n, 1);
    assert_int_equal(f->order[0], 4);
}

static void failed_barrier_fails_its_reads(void **state)
{
    struct fx *f = *state;
    assert_int_equal(wait_read(f, 1), 0);
    assert_int_equal(wait_read(f, 2), 0); /* waiting for the next barrier */
    tf_node_complete(&f->node, last_barrier(f), KEEL_ENOTLEADER);
    assert_int_equal(f->n, 1);
    assert_int_equal(f->order[0], 1);
    assert_int_equal(f->errs[0], KEEL_ENOTLEADER);
    /* Still the leader as far as raft says: read 2 got a barrier of its own. */
    assert_int_equal(tf_node_count(&f->node, true), 2);
    tf_node_complete(&f->node, last_barrier(f), 0);
    assert_int_equal(f->n, 2);
    assert_int_equal(f->errs[1], 0);
}

static void next_barrier_refused_fails_the_waiting(void **state)
{
    struct fx *f = *state;
    assert_int_equal(wait_read(f, 1), 0);
    assert_int_equal(wait_read(f, 2), 0);
    tf_node_set_leader(&f->node, false, 2); /* raft stepped down; the poll has not seen it */
    tf_node_complete(&f->node, last_barrier(f), 0);
    assert_int_equal(f->n, 2);
    assert_int_equal(f->order[0], 1);
    assert_int_equal(f->errs[0], 0);
    assert_int_equal(f->order[1], 2);
    assert_int_equal(f->errs[1], KEEL_ENOTLEADER);
}

static void lost_leadership_fails_everything_held(void **state)
{
    struct fx *f = *state;
    assert_int_equal(wait_read(f, 1), 0); /* in barrier A */
    assert_int_equal(wait_read(f, 2), 0); /* waiting */
    f->progress.queued = 9;
    tf_node_complete(&f->node, last_barrier(f), 0); /* 1 ready for the writer; 2 in barrier B */
    assert_int_equal(wait_read(f, 3), 0);           /* waiting */
    assert_int_equal(wait_read(f, 4), 0);           /* waiting */
    assert_int_equal(f->n, 0);
    tf_node_set_leader(&f->node, false, 2);
    keel_readindex_leader_changed(f->ri, false);
    /* The ready and the waiting fail now; the barrier's own when raft calls it back. */
    assert_int_equal(f->n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(f->errs[i], KEEL_ENOTLEADER);
    assert_int_equal(f->calls[1] + f->calls[3] + f->calls[4], 3);
    assert_int_equal(f->calls[2], 0);
    tf_node_complete(&f->node, last_barrier(f), KEEL_ENOTLEADER);
    assert_int_equal(f->n, 4);
    assert_int_equal(f->order[3], 2);
    assert_int_equal(f->errs[3], KEEL_ENOTLEADER);
    assert_int_equal(tf_node_count(&f->node, true), 2); /* nothing left to cover */
    /* The writer catching up later releases nothing more. */
    f->progress.committed = 9;
    keel_readindex_applied(f->ri);
    assert_int_equal(f->n, 4);
}

static void stop_fails_with_unavailable(void **state)
{
    struct fx *f = *state;
    assert_int_equal(wait_read(f, 1), 0);
    assert_int_equal(wait_read(f, 2), 0);
    keel_readindex_stop(f->ri);
    assert_int_equal(f->n, 1); /* the waiting one */
    assert_int_equal(f->order[0], 2);
    assert_int_equal(f->errs[0], KEEL_EUNAVAILABLE);
    /* raft's close calls the barrier back: even a success is no answer any more. */
    tf_node_complete(&f->node, last_barrier(f), 0);
    assert_int_equal(f->n, 2);
    assert_int_equal(f->errs[1], KEEL_EUNAVAILABLE);
    assert_int_equal(wait_read(f, 3), KEEL_EUNAVAILABLE);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(released_after_barrier_and_writer),     T(store_already_there_releases_at_once),
        T(later_reads_wait_for_the_next_barrier), T(refused_reads_are_not_called_back),
        T(failed_barrier_fails_its_reads),        T(next_barrier_refused_fails_the_waiting),
        T(lost_leadership_fails_everything_held), T(stop_fails_with_unavailable),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
