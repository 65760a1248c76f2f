/*
 * store_crash: SIGKILL a process in the middle of applying commands, reopen, and check that the
 * store holds exactly the commands up to its applied index.
 *
 * Command i is a function of the seed and i alone (model_gen_command without a model), applied at
 * raft index idx[i] (increasing, with gaps). Each round a child opens the store, re-applies a
 * few indexes it already has (they must be skipped), then applies the following commands in
 * random batches, each published, one write committed every few batches (as the storage writer
 * keeps its write open between commits), until the parent kills it a few to a few hundred
 * milliseconds in. The parent
 * reopens the store, reads the applied index k, brings the model to exactly the commands with
 * idx <= k, and compares revision, contents (now and at past revisions), leases and history.
 * Every third round the child first restores a snapshot of the state it starts from, so some
 * kills land in the middle of a restore, which reopening must finish or discard.
 * The seed is printed; KEEL_SEED=<seed> replays the command stream (kill timing still varies).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "testutil.h"

#define ROUNDS        60
#define MAX_COMMANDS  400000 /* a child that gets this far waits to be killed */
#define TIME_BUDGET_S 90.0   /* stop early (after MIN_ROUNDS) when the machine is slow */
#define MIN_ROUNDS    20
/* Rounds whose child applied something before it was killed: the run goes on past ROUNDS (up to
 * MAX_ROUNDS, within the time budget) until it has this many, or until the command stream is
 * used up (a fast machine gets through it in fewer rounds, each applying more). A fixed share
 * of ROUNDS failed both ways: on a busy machine many children die before they open the store,
 * on an idle one the stream ran out after 14 rounds of progress. */
#define MIN_PROGRESSED 12
#define MAX_ROUNDS     400
#define MAX_BATCH      64

/* Child exit codes: why it stopped by itself. */
#define CHILD_BAD_START   10 /* the store's applied index is not the one the parent saw */
#define CHILD_NOT_SKIPPED 11 /* an already-applied index was applied again */
#define CHILD_APPLY       12
#define CHILD_COMMIT      13
#define CHILD_BEGIN       14
#define CHILD_PAST_CAP    15
#define CHILD_ORPHAN      16
#define CHILD_RESTORE     17 /* keel_store_restore failed or changed the state */

struct crash {
    uint64_t seed;
    char *dir;
    uint64_t *idx; /* idx[i]: the raft index of command i */
    size_t n;
    struct model *m;
    size_t applied; /* commands 0..applied-1 are in the model */
    struct keel_arena a, b;
};

static uint64_t mix(uint64_t seed, uint64_t i)
{
    uint64_t s = seed ^ (i * 0xd1342543de82ef95ull);
    return tu_rand(&s);
}

static Keel__Command *command_at(const struct crash *c, size_t i, struct keel_arena *a)
{
    uint64_t rng = mix(c->seed, i);
    /* About 0.7 revisions per command: a compaction target that is sometimes ahead. */
    struct model_gen g = {.rng = &rng, .m = NULL, .a = a, .rev_hint = (int64_t)(i * 2 / 3)};
    g.overlap = 0; /* the store refuses overlapping txn writes, as etcd does */
    return model_gen_command(&g);
}

/* First command whose index is > k. */
static size_t first_after(const struct crash *c, uint64_t k)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->idx[mid] <= k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void child_apply(struct keel_store_write *w, uint64_t index, const Keel__Command *cmd,
                        struct keel_arena *a, int must_skip)
{
    struct keel_apply_result res;
    memset(&res, 0, sizeof(res));
    if (keel_store_write_apply(w, index, cmd, a, &res) != 0)
        _exit(CHILD_APPLY);
    if (must_skip && !res.skipped)
        _exit(CHILD_NOT_SKIPPED);
}

/* The snapshot the parent took of the state at k, for a child to restore before it goes on:
 * the state does not change, but a kill can land in the middle of the restore's swap. */
static char *snapshot_path(const struct crash *c)
{
    char *p = NULL;
    if (asprintf(&p, "%s/snapshot", c->dir) < 0)
        abort();
    return p;
}

/* Whether a restore's working copies are lying around: the kill interrupted it. */
static int restore_leftovers(const struct crash *c)
{
    static const char *const suffixes[] = {".incoming", ".ready", ".old"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char *p = NULL;
        if (asprintf(&p, "%s/state%s", c->dir, suffixes[i]) < 0)
            abort();
        int there = access(p, F_OK) == 0;
        free(p);
        if (there)
            return 1;
    }
    return 0;
}

static void child_restore(const struct crash *c, struct keel_store *s, uint64_t expect_k)
{
    char *path = snapshot_path(c);
    int fd = open(path, O_RDONLY);
    free(path);
    if (fd < 0 || keel_store_restore(s, fd, 0) != 0)
        _exit(CHILD_RESTORE);
    close(fd);
    struct keel_store_stat st;
    keel_store_stat(s, &st);
    if (st.applied_index != expect_k)
        _exit(CHILD_RESTORE);
}

static void child(const struct crash *c, int round, uint64_t expect_k, pid_t parent, int restore)
{
    /* Never outlive a parent that died before it could kill us. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(CHILD_ORPHAN);
    struct keel_arena a;
    keel_arena_init(&a, 0);
    struct keel_store *s = tu_store_open(c->dir, 0);
    struct keel_store_stat st;
    keel_store_stat(s, &st);
    if (st.applied_index != expect_k)
        _exit(CHILD_BAD_START);
    if (restore)
        child_restore(c, s, expect_k);
    size_t i = first_after(c, expect_k);
    uint64_t rng = c->seed ^ (0x5bd1e995ull * (uint64_t)(round + 1));
    struct keel_store_write *w;
    if (i > 0) {
        if (keel_store_write_begin(s, &w) != 0)
            _exit(CHILD_BEGIN);
        size_t from = i > 3 ? i - 3 : 0;
        for (size_t j = from; j < i; j++)
            child_apply(w, c->idx[j], command_at(c, j, &a), &a, 1);
        size_t j = tu_rand(&rng) % i;
        child_apply(w, c->idx[j], command_at(c, j, &a), &a, 1);
        if (keel_store_write_commit(w) != 0)
            _exit(CHILD_COMMIT);
        keel_arena_reset(&a);
    }
    w = NULL;
    while (i < c->n) {
        /* As the storage writer does: one write open across batches, each published (readers
         * see it, LMDB does not have it yet), committed every few batches. A kill loses what
         * was published since the last commit; the applied index says where the store is. */
        if (w == NULL && keel_store_write_begin(s, &w) != 0)
            _exit(CHILD_BEGIN);
        size_t batch = 1 + tu_rand(&rng) % MAX_BATCH;
        for (size_t j = 0; j < batch && i < c->n; j++, i++) {
            child_apply(w, c->idx[i], command_at(c, i, &a), &a, 0);
            /* Now and then the index just applied again, inside the same write. */
            if (tu_rand(&rng) % 50 == 0)
                child_apply(w, c->idx[i], command_at(c, i, &a), &a, 1);
        }
        if (keel_store_write_publish(w) != 0)
            _exit(CHILD_COMMIT);
        if (tu_rand(&rng) % 4 == 0 || i == c->n) {
            if (keel_store_write_commit(w) != 0)
                _exit(CHILD_COMMIT);
            w = NULL;
        }
        keel_arena_reset(&a);
    }
    /* Out of commands: wait for the parent's kill rather than race it with an exit. */
    for (int t = 0; t < 600; t++)
        sleep(1);
    _exit(CHILD_PAST_CAP);
}

static const char *child_exit_name(int code)
{
    switch (code) {
    case CHILD_BAD_START:
        return "the store's applied index is not the one the parent saw";
    case CHILD_NOT_SKIPPED:
        return "an already-applied index was not skipped";
    case CHILD_APPLY:
        return "keel_store_write_apply failed";
    case CHILD_COMMIT:
        return "keel_store_write_commit failed";
    case CHILD_BEGIN:
        return "keel_store_write_begin failed";
    case CHILD_PAST_CAP:
        return "ran out of commands and was not killed";
    case CHILD_ORPHAN:
        return "the parent was gone";
    case CHILD_RESTORE:
        return "restoring the snapshot failed or changed the applied index";
    default:
        return "crashed? see its output above";
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void verify_fail(struct crash *c, int round, const char *what, const char *why)
{
    fflush(stdout);
    fprintf(stderr,
            "\nstore_crash: MISMATCH after round %d (%s), seed %" PRIu64
            " (replay with KEEL_SEED=%" PRIu64 ")\n  %s\n  model: applied %" PRIu64
            " (%zu commands) revision %" PRId64 " compact %" PRId64 "\n",
            round, what, c->seed, c->seed, why, model_applied_index(c->m), c->applied,
            model_revision(c->m), model_compact_revision(c->m));
}

static int check_range(struct crash *c, int round, struct keel_store *s, int64_t revision)
{
    keel_arena_reset(&c->a);
    keel_arena_reset(&c->b);
    Keel__RangeRequest *req = tu_range_req(&c->a, "", NULL);
    uint8_t *z = keel_arena_alloc(&c->a, 1);
    z[0] = 0;
    req->range_end.data = z;
    req->range_end.len = 1;
    req->revision = revision;
    Keel__RangeResponse *got = NULL, *want = NULL;
    int64_t grev = -1, wrev = -1;
    int gerr = keel_store_range(s, req, &c->a, &got, &grev);
    int werr = model_range(c->m, req, &c->b, &want, &wrev);
    char why[512];
    int d = 0;
    if (gerr != werr)
        d = snprintf(why, sizeof(why), "range at %" PRId64 ": want %s, got %s", revision,
                     keel_err_name(werr), keel_err_name(gerr));
    else if (werr == 0 && grev != wrev)
        d = snprintf(why, sizeof(why), "range revision: want %" PRId64 ", got %" PRId64, wrev,
                     grev);
    else if (werr == 0)
        d = model_cmp_range(why, sizeof(why), req, NULL, want, got);
    if (d) {
        char what[64];
        snprintf(what, sizeof(what), "every key at revision %" PRId64, revision);
        verify_fail(c, round, what, why);
        fprintf(stderr, "model (want):\n");
        model_dump_range(stderr, want);
        fprintf(stderr, "store (got):\n");
        model_dump_range(stderr, got);
        return 1;
    }
    return 0;
}

static int check_leases(struct crash *c, int round, struct keel_store *s)
{
    keel_arena_reset(&c->a);
    struct keel_lease_info *gl = NULL;
    size_t gn = 0;
    char why[256];
    int rv = keel_store_lease_list(s, &c->a, &gl, &gn);
    if (rv != 0) {
        verify_fail(c, round, "lease list", keel_strerror(rv));
        return 1;
    }
    size_t wn = model_lease_count(c->m);
    for (size_t i = 0; i < wn || i < gn; i++) {
        struct keel_lease_info w = {0, 0}, g = {0, 0};
        if (i < wn)
            w = model_lease_at(c->m, i);
        if (i < gn)
            g = gl[i];
        if (i >= wn || i >= gn || w.id != g.id || w.ttl != g.ttl) {
            snprintf(why, sizeof(why),
                     "lease_list[%zu]: want id %" PRId64 " ttl %" PRId64 ", got id %" PRId64
                     " ttl %" PRId64 " (%zu vs %zu leases)",
                     i, w.id, w.ttl, g.id, g.ttl, wn, gn);
            verify_fail(c, round, "lease list", why);
            return 1;
        }
    }
    return 0;
}

/* Every event of every key since start, chained in chunks of 64. */
static int check_history(struct crash *c, int round, struct keel_store *s, int64_t start)
{
    keel_arena_reset(&c->a);
    keel_arena_reset(&c->b);
    const uint8_t z = 0;
    struct keel_history want, h;
    int werr = model_history(c->m, NULL, 0, &z, 1, start, &c->b, &want);
    char why[512];
    size_t n = 0, cap = want.n_events + 1;
    Keel__Event **all = malloc(cap * sizeof(*all));
    if (all == NULL)
        abort();
    int64_t from = start;
    for (size_t calls = 0;; calls++) {
        memset(&h, 0, sizeof(h));
        int gerr = keel_store_history(s, NULL, 0, &z, 1, from, 64, &c->a, &h);
        if (gerr != werr || calls > want.n_events + 2) {
            snprintf(why, sizeof(why), "history from %" PRId64 ": want %s, got %s%s", from,
                     keel_err_name(werr), keel_err_name(gerr),
                     gerr == werr ? " (does not finish)" : "");
            verify_fail(c, round, "history", why);
            free(all);
            return 1;
        }
        if (werr != 0)
            break;
        for (size_t i = 0; i < h.n_events && n < cap; i++)
            all[n++] = h.events[i];
        if (h.next_revision > h.revision || h.n_events == 0)
            break;
        from = h.next_revision;
    }
    int64_t comp = model_compact_revision(c->m);
    if (werr == 0 && model_cmp_events(why, sizeof(why), "history", want.events, want.n_events, all,
                                      n, comp > 0 ? comp : -1)) {
        verify_fail(c, round, "history", why);
        fprintf(stderr, "  start %" PRId64 "\nmodel (want):\n", start);
        model_dump_events(stderr, 4, want.events, want.n_events);
        fprintf(stderr, "store (got):\n");
        model_dump_events(stderr, 4, all, n);
        free(all);
        return 1;
    }
    free(all);
    return 0;
}

static int verify(struct crash *c, int round, struct keel_store *s, uint64_t *rng)
{
    struct keel_store_stat st;
    keel_store_stat(s, &st);
    if (st.applied_index != model_applied_index(c->m) || st.revision != model_revision(c->m) ||
        st.compact_revision != model_compact_revision(c->m)) {
        char why[256];
        snprintf(why, sizeof(why),
                 "stat: applied %" PRIu64 " revision %" PRId64 " compact %" PRId64
                 " (model: %" PRIu64 " %" PRId64 " %" PRId64 ")",
                 st.applied_index, st.revision, st.compact_revision, model_applied_index(c->m),
                 model_revision(c->m), model_compact_revision(c->m));
        verify_fail(c, round, "stat after reopen", why);
        return 1;
    }
    int64_t rev = st.revision, comp = st.compact_revision;
    if (check_range(c, round, s, 0))
        return 1;
    int64_t lo = comp > 1 ? comp : 1;
    for (int i = 0; i < 2 && rev >= lo; i++) {
        int64_t at = i == 0 ? lo : lo + (int64_t)(tu_rand(rng) % (uint64_t)(rev - lo + 1));
        if (check_range(c, round, s, at))
            return 1;
    }
    if (check_leases(c, round, s))
        return 1;
    int64_t start = rev - 40 > lo ? rev - 40 : lo;
    return check_history(c, round, s, start);
}

static void test_crash(void **state)
{
    (void)state;
    struct crash c;
    memset(&c, 0, sizeof(c));
    c.seed = tu_seed("store_crash");
    c.dir = tu_mkdtemp("store-crash");
    c.n = MAX_COMMANDS;
    c.idx = malloc(c.n * sizeof(*c.idx));
    assert_non_null(c.idx);
    uint64_t rng = c.seed ^ 0x243f6a8885a308d3ull;
    for (size_t i = 0; i < c.n; i++) {
        uint64_t r = tu_rand(&rng);
        uint64_t gap = r % 8 == 0 ? (r >> 8) % 4 : 0;
        c.idx[i] = (i == 0 ? 1 + (r >> 16) % 3 : c.idx[i - 1] + 1) + gap;
    }
    c.m = model_open();
    keel_arena_init(&c.a, 0);
    keel_arena_init(&c.b, 0);

    double t0 = now_s();
    uint64_t k = 0;
    int rounds = 0, progressed = 0, failed = 0, restore = 0, restores_cut = 0;
    for (int round = 0; round < MAX_ROUNDS && !failed; round++) {
        if (round >= ROUNDS && (progressed >= MIN_PROGRESSED || c.applied == c.n))
            break;
        if (round >= MIN_ROUNDS && now_s() - t0 > TIME_BUDGET_S)
            break;
        /* Some rounds die young, some of them before the child has even opened the store. A
         * round that starts with a restore is often killed while it is at it. */
        uint64_t r = tu_rand(&rng);
        uint64_t delay = r % 5 == 0 ? 2 + (r >> 8) % 10 : 10 + (r >> 8) % 290;
        if (restore && r % 2 == 0)
            delay = 1 + (r >> 8) % 8;
        fflush(NULL);
        pid_t parent = getpid();
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            child(&c, round, k, parent, restore);
        int was_restore = restore;
        sleep_ms(delay);
        kill(pid, SIGKILL);
        int status = 0;
        pid_t w;
        do
            w = waitpid(pid, &status, 0);
        while (w < 0 && errno == EINTR);
        assert_int_equal(w, pid);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
            char why[128];
            if (WIFEXITED(status))
                snprintf(why, sizeof(why), "the child exited by itself with status %d (%s)",
                         WEXITSTATUS(status), child_exit_name(WEXITSTATUS(status)));
            else
                snprintf(why, sizeof(why), "the child died of signal %d",
                         WIFSIGNALED(status) ? WTERMSIG(status) : -1);
            verify_fail(&c, round, "child", why);
            failed = 1;
            break;
        }

        int mid_restore = was_restore && restore_leftovers(&c);
        restores_cut += mid_restore;
        struct keel_store *s = tu_store_open(c.dir, 0);
        struct keel_store_stat st;
        keel_store_stat(s, &st);
        size_t pos = first_after(&c, st.applied_index);
        if (st.applied_index < k || (st.applied_index != 0 && c.idx[pos - 1] != st.applied_index)) {
            char why[128];
            snprintf(why, sizeof(why),
                     "applied index %" PRIu64 " after %" PRIu64 " is not one that was applied",
                     st.applied_index, k);
            verify_fail(&c, round, "applied index", why);
            keel_store_close(s);
            failed = 1;
            break;
        }
        for (; c.applied < pos; c.applied++) {
            keel_arena_reset(&c.a);
            struct keel_apply_result res;
            Keel__Command *cmd = command_at(&c, c.applied, &c.a);
            model_apply(c.m, c.idx[c.applied], cmd, 0, &c.a, &res);
        }
        failed = verify(&c, round, s, &rng);
        /* Every third round the next child starts by restoring a snapshot of this state. */
        restore = !failed && round % 3 == 0;
        if (restore) {
            char *path = snapshot_path(&c);
            int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
            free(path);
            assert_true(fd >= 0);
            int rv = keel_store_snapshot(s, fd, true);
            close(fd);
            if (rv != 0) {
                verify_fail(&c, round, "snapshot", keel_strerror(rv));
                failed = 1;
            }
        }
        keel_store_close(s);
        if (st.applied_index > k)
            progressed++;
        printf("store_crash: round %d: killed after %" PRIu64 " ms%s at index %" PRIu64
               " (%zu commands), revision %" PRId64 " compact %" PRId64 "\n",
               round, delay,
               mid_restore   ? " in the middle of a restore"
               : was_restore ? " (started with a restore)"
                             : "",
               st.applied_index, c.applied, st.revision, st.compact_revision);
        k = st.applied_index;
        rounds++;
    }
    double secs = now_s() - t0;
    printf("store_crash: %d rounds in %.1fs, %d with progress, %d cut a restore short, %zu "
           "commands applied\n",
           rounds, secs, progressed, restores_cut, c.applied);
    uint64_t seed = c.seed;
    keel_arena_close(&c.a);
    keel_arena_close(&c.b);
    model_close(c.m);
    free(c.idx);
    tu_rmdir(c.dir);
    free(c.dir);
    if (failed)
        fail_msg("store_crash failed, seed %" PRIu64, seed);
    assert_true(rounds >= MIN_ROUNDS);
    assert_true(k > 0);
    if (progressed < MIN_PROGRESSED && c.applied < c.n)
        fail_msg("only %d of %d rounds applied anything before the kill", progressed, rounds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
