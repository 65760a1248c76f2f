/*
 * A checkpoint restore that must not happen leaves the store as it was, serving:
 *
 *   - a copy older than the state it would replace is refused (KEEL_ESTALE): swapping it in
 *     would move the applied index and the revisions backwards;
 *   - a copy that passes the check but fails to open where it lies is refused before anything
 *     moves (the swap used to close the old environment first, fail to open the new one, and
 *     leave no environment for the next read);
 *   - a copy that arrives in pieces (restore_begin / _finish) lands as a whole one does, and
 *     an aborted one leaves nothing behind;
 *   - a copy read in place (keel_store_inspect: keelctl snapshot status) tells what it holds,
 *     bytes after it (keelctl's trailer) or not, and refuses what is not a store; rebased
 *     (keel_store_rebase: keelctl snapshot restore) it starts a new cluster's state: applied
 *     index 0, the old member attributes gone, keys, revisions and leases kept.
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
    assert_int_equal(keel_store_snapshot(f->s, fileno(fp), false), 0);
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

/* Write the copy to dir/name, followed by extra bytes when extra > 0. */
static char *copy_to_file(struct fx *f, const char *name, size_t extra)
{
    size_t len;
    char *buf = copy_bytes_now(f, &len);
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", f->dir, name) > 0);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    for (size_t i = 0; i < extra; i++)
        fputc('T', fp);
    fclose(fp);
    free(buf);
    return path;
}

static void inspect_and_rebase(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    put(f, "b", "2");
    put(f, "a", "3");
    struct keel_apply_result r;
    tu_apply(f->s, ++f->index, tu_cmd_lease_grant(&f->a, 7, 600), &f->a, &r);
    assert_int_equal(r.err, 0);
    tu_apply(f->s, ++f->index, tu_cmd_put_lease(&f->a, "c", "4", 7), &f->a, &r);
    assert_int_equal(r.err, 0);
    tu_apply(f->s, ++f->index, tu_cmd_del(&f->a, "b", NULL), &f->a, &r);
    assert_int_equal(r.err, 0);
    Keel__Member m = KEEL__MEMBER__INIT;
    m.id = 42;
    m.name = "old-member";
    Keel__Command attrs = KEEL__COMMAND__INIT;
    attrs.op_case = KEEL__COMMAND__OP_MEMBER_ATTRS;
    attrs.member_attrs = &m;
    tu_apply(f->s, ++f->index, &attrs, &f->a, &r);
    assert_int_equal(r.err, 0);
    Keel__Member **members;
    size_t n_members = 0;
    assert_int_equal(keel_store_members(f->s, &f->a, &members, &n_members), 0);
    assert_int_equal(n_members, 1);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);

    /* In place, with a trailer after it: what it holds. */
    char *file = copy_to_file(f, "copy.snap", 48);
    struct keel_store_info info;
    assert_int_equal(keel_store_inspect(file, &info), 0);
    assert_int_equal(info.applied_index, st.applied_index);
    assert_int_equal(info.revision, st.revision);
    assert_int_equal(info.keys, 2);      /* a and c; b deleted */
    assert_int_equal(info.revisions, 5); /* a, b, a, c, b's delete */
    assert_int_equal(info.leases, 1);
    /* Not a store: refused, nothing created beside it. */
    char *junk = NULL;
    assert_true(asprintf(&junk, "%s/junk", f->dir) > 0);
    FILE *fp = fopen(junk, "wb");
    for (int i = 0; i < 20000; i++)
        fputc(i & 0xff, fp);
    fclose(fp);
    assert_int_not_equal(keel_store_inspect(junk, &info), 0);
    char *missing = NULL;
    assert_true(asprintf(&missing, "%s/none", f->dir) > 0);
    assert_int_equal(keel_store_inspect(missing, &info), KEEL_ENOTFOUND);

    /* Rebased where a new member's store lives: a new cluster's first state. */
    char *member = NULL, *dir = NULL, *data = NULL;
    assert_true(asprintf(&member, "%s/newmember", f->dir) > 0);
    assert_true(asprintf(&dir, "%s/state", member) > 0);
    assert_true(asprintf(&data, "%s/data.mdb", dir) > 0);
    assert_int_equal(mkdir(member, 0700), 0);
    assert_int_equal(mkdir(dir, 0700), 0);
    char *plain = copy_to_file(f, "plain", 0);
    assert_int_equal(rename(plain, data), 0);
    free(plain);
    assert_int_equal(keel_store_rebase(dir, 0), 0);
    struct keel_store *s2 = tu_store_open(member, 0);
    struct keel_store_stat st2;
    keel_store_stat(s2, &st2);
    assert_int_equal(st2.applied_index, 0);
    assert_int_equal(st2.revision, st.revision);
    n_members = 99;
    assert_int_equal(keel_store_members(s2, &f->a, &members, &n_members), 0);
    assert_int_equal(n_members, 0);
    Keel__RangeResponse *rr = NULL;
    assert_int_equal(tu_range(s2, &f->a, "c", NULL, 0, &rr), 0);
    assert_int_equal(rr->count, 1);
    assert_int_equal(rr->kvs[0]->lease, 7);
    /* The new cluster's first entry applies (index 1 is above 0), at the next revision. */
    tu_apply(s2, 1, tu_cmd_put(&f->a, "d", "5"), &f->a, &r);
    assert_int_equal(r.err, 0);
    assert_false(r.skipped);
    assert_int_equal(r.revision, st.revision + 1);
    keel_store_close(s2);
    assert_int_equal(keel_store_rebase(missing, 0), KEEL_ENOTFOUND);
    free(file);
    free(junk);
    free(missing);
    free(member);
    free(dir);
    free(data);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(older_copy_is_refused),
        T(copy_that_will_not_open_keeps_the_store),
        T(copy_in_pieces),
        T(inspect_and_rebase),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
