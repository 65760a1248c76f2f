/*
 * A checkpoint restore that must not happen leaves the store as it was, serving:
 *
 *   - a copy older than the state it would replace is refused (KEEL_ESTALE): swapping it in
 *     would move the applied index and the revisions backwards;
 *   - a copy that passes the check but fails to open where it lies is refused before anything
 *     moves (the swap used to close the old environment first, fail to open the new one, and
 *     leave no environment for the next read);
 *   - a copy that arrives in pieces (restore_begin / _finish) lands as a whole one does, and
 *     an aborted one leaves nothing behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "testutil.h"

struct fx {
    char *dir;
    struct keel_store *s;
    struct keel_arena a;
    uint64_t index;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("restore");
    f->s = tu_store_open(f->dir, 0);
    keel_arena_init(&f->a, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    keel_arena_close(&f->a);
    keel_store_close(f->s);
    tu_rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void put(struct fx *f, const char *key, const char *value)
{
    struct keel_apply_result r;
    tu_apply(f->s, ++f->index, tu_cmd_put(&f->a, key, value), &f->a, &r);
    assert_int_equal(r.err, 0);
}

static int64_t count(struct fx *f, const char *key, const char *end)
{
    Keel__RangeResponse *rr = NULL;
    assert_int_equal(tu_range(f->s, &f->a, key, end, 0, &rr), 0);
    return rr->count;
}

/* A copy of the store as it is now, in an anonymous file at offset 0. */
static FILE *copy_now(struct fx *f)
{
    FILE *fp = tmpfile();
    assert_non_null(fp);
    assert_int_equal(keel_store_snapshot(f->s, fileno(fp)), 0);
    rewind(fp);
    return fp;
}

/* The same, as bytes in memory (the caller frees them), for a copy written in pieces. */
static char *copy_bytes_now(struct fx *f, size_t *len)
{
    FILE *fp = copy_now(f);
    struct stat sb;
    assert_int_equal(fstat(fileno(fp), &sb), 0);
    *len = (size_t)sb.st_size;
    char *buf = malloc(*len);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, *len, fp), *len);
    fclose(fp);
    return buf;
}

static void older_copy_is_refused(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    put(f, "b", "2");
    FILE *old = copy_now(f); /* applied index 2 */
    put(f, "c", "3");
    put(f, "d", "4");
    struct keel_store_stat before;
    keel_store_stat(f->s, &before);
    assert_int_equal(before.applied_index, 4);

    assert_int_equal(keel_store_restore(f->s, fileno(old), before.applied_index), KEEL_ESTALE);
    struct keel_store_stat after;
    keel_store_stat(f->s, &after);
    assert_int_equal(after.applied_index, 4);
    assert_int_equal(after.revision, before.revision);
    assert_int_equal(count(f, "c", "e"), 2);

    /* The same copy where it is not older than asked for goes in. */
    rewind(old);
    assert_int_equal(keel_store_restore(f->s, fileno(old), 2), 0);
    keel_store_stat(f->s, &after);
    assert_int_equal(after.applied_index, 2);
    assert_int_equal(count(f, "c", "e"), 0);
    fclose(old);
}

/* A complete, valid copy that still cannot be opened where it lies: its directory holds a
 * directory named lock.mdb, so opening the environment (which creates its lock file) fails,
 * while a read-only look without a lock succeeds. Any open failure after the check will do:
 * the point is what the store is left with. */
static void copy_that_will_not_open_keeps_the_store(void **state)
{
    struct fx *f = *state;
    put(f, "kept", "1");
    size_t len;
    char *buf = copy_bytes_now(f, &len);
    put(f, "more", "2");

    int fd = -1;
    assert_int_equal(keel_store_restore_begin(f->s, &fd), 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    free(buf);
    char *lock = NULL;
    assert_true(asprintf(&lock, "%s/state.incoming/lock.mdb", f->dir) > 0);
    assert_int_equal(mkdir(lock, 0700), 0);
    free(lock);
    assert_int_not_equal(keel_store_restore_finish(f->s, fd, 0), 0);

    /* Still the store it was: reads, writes, and nothing left beside it. */
    struct stat sb;
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.applied_index, 2);
    assert_int_equal(count(f, "kept", NULL), 1);
    assert_int_equal(count(f, "more", NULL), 1);
    put(f, "after", "3");
    assert_int_equal(count(f, "after", NULL), 1);
    char *incoming = NULL, *ready = NULL;
    assert_true(asprintf(&incoming, "%s/state.incoming", f->dir) > 0);
    assert_true(asprintf(&ready, "%s/state.ready", f->dir) > 0);
    assert_int_not_equal(stat(incoming, &sb), 0);
    assert_int_not_equal(stat(ready, &sb), 0);
    free(incoming);
    free(ready);
}

static void copy_in_pieces(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    size_t len;
    char *buf = copy_bytes_now(f, &len);
    put(f, "b", "2");

    /* Aborted halfway: nothing changes, nothing stays behind. */
    size_t half = len / 2;
    int fd = -1;
    assert_int_equal(keel_store_restore_begin(f->s, &fd), 0);
    assert_int_equal(write(fd, buf, half), (ssize_t)half);
    keel_store_restore_abort(f->s, fd);
    char *incoming = NULL;
    assert_true(asprintf(&incoming, "%s/state.incoming", f->dir) > 0);
    struct stat in;
    assert_int_not_equal(stat(incoming, &in), 0);
    free(incoming);
    assert_int_equal(count(f, "b", NULL), 1);

    /* Whole, in two writes. */
    assert_int_equal(keel_store_restore_begin(f->s, &fd), 0);
    assert_int_equal(write(fd, buf, half), (ssize_t)half);
    assert_int_equal(write(fd, buf + half, len - half), (ssize_t)(len - half));
    assert_int_equal(keel_store_restore_finish(f->s, fd, 1), 0);
    assert_int_equal(count(f, "a", NULL), 1);
    assert_int_equal(count(f, "b", NULL), 0);
    free(buf);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(older_copy_is_refused),
        T(copy_that_will_not_open_keeps_the_store),
        T(copy_in_pieces),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
