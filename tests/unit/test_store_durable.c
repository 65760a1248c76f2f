/*
 * store_durable: commits are synced in the background and recorded in the synced note; after
 * a machine restart a commit newer than the note is dropped at open (storage/durable.c).
 *
 * A real OS crash cannot be staged here, so the test stages its traces: the note of an older
 * commit written by "another boot", as a machine that lost power between a commit's page writes
 * and its sync would leave it. The store must then open the commit before the newest one (LMDB's
 * own view of the file confirms which), say so through its notice, take the dropped entries
 * again when they are replayed, and never drop a commit the note covers or one made in this
 * boot.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

struct fx {
    char *dir;
    char *path; /* the store: dir/state */
    struct keel_store *s;
    struct keel_arena a;
    char notice[512];
    int notices;
};

static void on_notice(void *data, const char *msg)
{
    struct fx *f = data;
    snprintf(f->notice, sizeof(f->notice), "%s", msg);
    f->notices++;
}

static int open_store(struct fx *f)
{
    struct keel_store_options o = {
        .path = f->path, .notice = on_notice, .notice_data = f}; /* synced, as keeld's */
    f->notices = 0;
    f->notice[0] = '\0';
    return keel_store_open(&o, &f->s);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("durable");
    assert_true(asprintf(&f->path, "%s/state", f->dir) > 0);
    keel_arena_init(&f->a, 0);
    assert_int_equal(open_store(f), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    keel_store_close(f->s);
    keel_arena_close(&f->a);
    tu_rmdir(f->dir);
    free(f->path);
    free(f->dir);
    free(f);
    return 0;
}

static void put_at(struct fx *f, uint64_t index, const char *key)
{
    struct keel_apply_result r;
    tu_apply(f->s, index, tu_cmd_put(&f->a, key, "v"), &f->a, &r);
    assert_false(r.skipped);
}

static bool has(struct fx *f, const char *key)
{
    Keel__RangeResponse *r;
    assert_int_equal(tu_range(f->s, &f->a, key, NULL, 0, &r), 0);
    return r->n_kvs == 1;
}

static uint64_t applied(struct fx *f)
{
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    return st.applied_index;
}

/* LMDB's own newest transaction id for the file (read-only, no lock: the store is closed). */
static uint64_t lmdb_last_txnid(const char *path)
{
    MDB_env *env;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, path, MDB_RDONLY | MDB_NOLOCK, 0600), 0);
    MDB_envinfo info;
    assert_int_equal(mdb_env_info(env, &info), 0);
    mdb_env_close(env);
    return info.me_last_txnid;
}

/* Replace the store's synced note by these bytes. */
static void put_note(struct fx *f, const uint8_t b[KS_NOTE_LEN])
{
    char *np;
    assert_true(asprintf(&np, "%s/synced", f->path) > 0);
    int fd = open(np, O_WRONLY | O_TRUNC);
    free(np);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, KS_NOTE_LEN), (ssize_t)KS_NOTE_LEN);
    close(fd);
}

static void write_note(struct fx *f, uint64_t txnid, uint64_t boot)
{
    uint8_t b[KS_NOTE_LEN];
    ks_note_encode(txnid, boot, b);
    put_note(f, b);
}

/* Two commits (index 1: a, index 2: b), both synced; the store closed. ids: the meta pages'. */
static void two_commits(struct fx *f, uint64_t ids[2])
{
    put_at(f, 1, "a");
    put_at(f, 2, "b");
    assert_int_equal(keel_store_sync(f->s), 0);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.durable_index, 2);
    keel_store_close(f->s);
    f->s = NULL;
    assert_int_equal(ks_durable_metas(f->path, ids), 0);
    /* The layout this file reads agrees with LMDB: the newer meta is LMDB's last commit. */
    uint64_t newest = ids[0] > ids[1] ? ids[0] : ids[1];
    uint64_t older = ids[0] > ids[1] ? ids[1] : ids[0];
    assert_int_equal(newest, lmdb_last_txnid(f->path));
    assert_int_equal(older + 1, newest);
}

static const uint64_t OTHER_BOOT = 0x1234; /* even: never a boot hash (those are odd) */

static void recovery_drops_an_unsynced_commit_after_a_reboot(void **state)
{
    struct fx *f = *state;
    uint64_t ids[2];
    two_commits(f, ids);
    uint64_t newest = ids[0] > ids[1] ? ids[0] : ids[1];
    write_note(f, newest - 1, OTHER_BOOT); /* power lost before the last commit's sync */
    assert_int_equal(open_store(f), 0);
    assert_int_equal(f->notices, 1);
    assert_non_null(strstr(f->notice, "before it was synced"));
    assert_int_equal(applied(f), 1);
    assert_true(has(f, "a"));
    assert_false(has(f, "b"));
    /* The raft log replays index 2: it is applied again, and the store moves on. */
    put_at(f, 2, "b");
    put_at(f, 3, "c");
    assert_int_equal(keel_store_sync(f->s), 0);
    keel_store_close(f->s);
    assert_int_equal(open_store(f), 0);
    assert_int_equal(f->notices, 0);
    assert_int_equal(applied(f), 3);
    assert_true(has(f, "b") && has(f, "c"));
}

static void recovery_keeps_what_the_note_covers(void **state)
{
    struct fx *f = *state;
    uint64_t ids[2];
    two_commits(f, ids);
    uint64_t newest = ids[0] > ids[1] ? ids[0] : ids[1];
    write_note(f, newest, OTHER_BOOT); /* synced before the machine went down */
    assert_int_equal(open_store(f), 0);
    assert_int_equal(f->notices, 0);
    assert_int_equal(applied(f), 2);
    assert_true(has(f, "b"));
}

static void recovery_trusts_the_page_cache_in_the_same_boot(void **state)
{
    struct fx *f = *state;
    uint64_t ids[2];
    two_commits(f, ids);
    uint64_t newest = ids[0] > ids[1] ? ids[0] : ids[1];
    /* A killed process: the note is behind, but the machine did not restart. */
    write_note(f, newest - 1, ks_clock_boot());
    assert_int_equal(open_store(f), 0);
    assert_int_equal(f->notices, 0);
    assert_int_equal(applied(f), 2);
}

static void recovery_refuses_when_both_metas_are_newer(void **state)
{
    struct fx *f = *state;
    uint64_t ids[2];
    two_commits(f, ids);
    uint64_t newest = ids[0] > ids[1] ? ids[0] : ids[1];
    write_note(f, newest - 2, OTHER_BOOT);
    assert_int_equal(open_store(f), KEEL_ECORRUPT);
    assert_non_null(strstr(f->notice, "refusing"));
    /* Nothing was changed: LMDB still sees the newest commit. */
    assert_int_equal(lmdb_last_txnid(f->path), newest);
    write_note(f, newest, OTHER_BOOT);
    assert_int_equal(open_store(f), 0);
    assert_int_equal(applied(f), 2);
}

static void recovery_opens_the_newest_with_an_unreadable_note(void **state)
{
    struct fx *f = *state;
    uint64_t ids[2];
    two_commits(f, ids);
    uint8_t b[KS_NOTE_LEN];
    ks_note_encode(1, OTHER_BOOT, b);
    b[9] ^= 0x40; /* torn: the checksum no longer holds */
    put_note(f, b);
    assert_int_equal(open_store(f), 0);
    assert_int_equal(f->notices, 1);
    assert_non_null(strstr(f->notice, "unreadable"));
    assert_int_equal(applied(f), 2);
}

/* The durable index trails the commit until its background sync is done, never leads it. */
static void durable_index_follows_the_sync(void **state)
{
    struct fx *f = *state;
    for (uint64_t i = 1; i <= 50; i++) {
        put_at(f, i, "k");
        struct keel_store_stat st;
        keel_store_stat(f->s, &st);
        assert_true(st.durable_index <= st.applied_index);
        assert_true(st.durable_index + 1 >= i); /* the commit before this one was synced */
    }
    assert_int_equal(keel_store_sync(f->s), 0);
    struct keel_store_stat st;
    keel_store_stat(f->s, &st);
    assert_int_equal(st.durable_index, 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(recovery_drops_an_unsynced_commit_after_a_reboot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(recovery_keeps_what_the_note_covers, setup, teardown),
        cmocka_unit_test_setup_teardown(recovery_trusts_the_page_cache_in_the_same_boot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(recovery_refuses_when_both_metas_are_newer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(recovery_opens_the_newest_with_an_unreadable_note, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(durable_index_follows_the_sync, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
