/*
 * store_model: random operations applied to the store and to the reference model (model.h),
 * every answer compared field by field.
 *
 * Writes go through keel_store_write_begin/apply/publish in batches of 1..64 at raft indexes with
 * random gaps (sometimes several commands in one entry), now and then re-applying an old index
 * that must be skipped; the write stays open across batches, so most reads merge LMDB with the
 * overlay of published, uncommitted entries (past revisions, ranges across the boundary,
 * compactions and lease revokes not yet committed), until a commit or, now and then, an abort
 * that throws the published entries away as a crash would. Between batches come reads: ranges at
 * past revisions with limits and sorts, history scans chained through next_revision with small
 * max_events, lease lookups; and rarely a reopen, a snapshot, or a restore of the last snapshot
 * (the model goes back to the same point).
 *
 * The seed is printed; KEEL_SEED=<seed> replays a run, KEEL_MODEL_OPS=<n> changes its length.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "testutil.h"

#define DEFAULT_OPS 200000L
#define MAX_BATCH   64
#define MAX_READS   30
#define MAX_ENTRY   4 /* commands in one raft entry */

struct run {
    uint64_t seed;
    uint64_t rng;
    long op;
    long n_ops;
    struct keel_store *s;
    struct keel_store_write *w;     /* the open write, if any */
    struct model_mark *commit_mark; /* the model at the open write's begin: the last commit */
    struct model *m;
    char *dir;
    struct keel_arena sa; /* the store's answers */
    struct keel_arena ma; /* requests and the model's answers */
    uint64_t next_index;
    struct model_mark *snap_mark; /* the state the snapshot in snap_fd holds */
    int snap_fd;
    long n_aborts, n_commits, n_publishes, n_reopens, n_snapshots, n_restores;
    long err_counts[128]; /* request-level errors by -code */
    long n_writes, n_skips, n_req_errs, n_ranges, n_paged, n_histories, n_chunks, n_leases;
};

static uint64_t rnd(struct run *r, uint64_t n)
{
    return n ? tu_rand(&r->rng) % n : 0;
}

static void cleanup(struct run *r)
{
    if (r->w != NULL)
        keel_store_write_abort(r->w);
    r->w = NULL;
    if (r->s != NULL)
        keel_store_close(r->s);
    r->s = NULL;
    model_mark_free(r->commit_mark);
    r->commit_mark = NULL;
    model_mark_free(r->snap_mark);
    r->snap_mark = NULL;
    if (r->snap_fd >= 0)
        close(r->snap_fd);
    r->snap_fd = -1;
    model_close(r->m);
    r->m = NULL;
    keel_arena_close(&r->sa);
    keel_arena_close(&r->ma);
    if (r->dir != NULL) {
        tu_rmdir(r->dir);
        free(r->dir);
        r->dir = NULL;
    }
}

static void header(struct run *r, const char *what, const char *why)
{
    fflush(stdout);
    fprintf(stderr,
            "\nstore_model: MISMATCH at op %ld (%s), seed %" PRIu64
            " (replay with KEEL_SEED=%" PRIu64 ")\n  %s\n  model: revision %" PRId64
            " compact %" PRId64 " applied %" PRIu64 "\n",
            r->op, what, r->seed, r->seed, why, model_revision(r->m), model_compact_revision(r->m),
            model_applied_index(r->m));
}

#define FAIL(r)                                                                                    \
    do {                                                                                           \
        uint64_t seed_ = (r)->seed;                                                                \
        long op_ = (r)->op;                                                                        \
        cleanup(r);                                                                                \
        fail_msg("store and model differ at op %ld, seed %" PRIu64, op_, seed_);                   \
    } while (0)

static void check_stat(struct run *r)
{
    struct keel_store_stat st;
    keel_store_stat(r->s, &st);
    if (st.applied_index != model_applied_index(r->m) || st.revision != model_revision(r->m) ||
        st.compact_revision != model_compact_revision(r->m)) {
        char why[256];
        snprintf(why, sizeof(why),
                 "stat: applied %" PRIu64 " revision %" PRId64 " compact %" PRId64
                 " (model: %" PRIu64 " %" PRId64 " %" PRId64 ")",
                 st.applied_index, st.revision, st.compact_revision, model_applied_index(r->m),
                 model_revision(r->m), model_compact_revision(r->m));
        header(r, "stat", why);
        FAIL(r);
    }
}

static void validate(struct run *r, const Keel__Command *cmd)
{
    struct keel_limits limits = {0, 0};
    const char *msg = NULL;
    int v = keel_store_validate(cmd, &limits, &msg);
    if (v != 0) {
        char why[256];
        snprintf(why, sizeof(why), "keel_store_validate rejected a valid command: %s (%s)",
                 keel_err_name(v), msg ? msg : "");
        header(r, "validate", why);
        model_dump_command(stderr, cmd);
        FAIL(r);
    }
}

/* One raft entry: usually one command, sometimes several applied at one index. */
static void write_one(struct run *r, int reapply)
{
    keel_arena_reset(&r->sa);
    keel_arena_reset(&r->ma);
    size_t n = rnd(r, 10) == 0 ? 2 + rnd(r, MAX_ENTRY - 1) : 1;
    const Keel__Command *cmds[MAX_ENTRY];
    for (size_t i = 0; i < n; i++) {
        struct model_gen g = {.rng = &r->rng, .m = r->m, .a = &r->ma};
        g.overlap = 0; /* the store refuses overlapping txn writes, as etcd does */
        cmds[i] = model_gen_command(&g);
        if (g.valid)
            validate(r, cmds[i]);
    }
    uint64_t index;
    if (reapply) {
        index = 1 + rnd(r, model_applied_index(r->m));
    } else {
        index = r->next_index;
        r->next_index += 1 + (rnd(r, 10) == 0 ? rnd(r, 5) : 0);
    }
    struct keel_apply_result got[MAX_ENTRY], want[MAX_ENTRY];
    memset(got, 0, sizeof(got));
    int rv = n == 1 ? keel_store_write_apply(r->w, index, cmds[0], &r->sa, &got[0])
                    : keel_store_write_apply_entry(r->w, index, cmds, n, &r->sa, got);
    if (rv != 0) {
        char why[128];
        snprintf(why, sizeof(why), "keel_store_write_apply(%" PRIu64 ") failed: %s", index,
                 keel_strerror(rv));
        header(r, "apply", why);
        for (size_t i = 0; i < n; i++)
            model_dump_command(stderr, cmds[i]);
        FAIL(r);
    }
    int64_t picked[MAX_ENTRY];
    for (size_t i = 0; i < n; i++) {
        const struct keel_apply_result *g = &got[i];
        picked[i] = 0;
        if (!g->skipped && g->err == 0 && cmds[i]->op_case == KEEL__COMMAND__OP_LEASE_GRANT &&
            cmds[i]->lease_grant->id == 0 && g->response != NULL &&
            g->response->body_case == KEEL__RESPONSE__BODY_LEASE_GRANT &&
            g->response->lease_grant != NULL)
            picked[i] = g->response->lease_grant->id;
    }
    model_apply_entry(r->m, index, cmds, n, picked, &r->ma, want);
    char why[512];
    for (size_t i = 0; i < n; i++) {
        if (model_cmp_result(why, sizeof(why), &want[i], &got[i])) {
            char what[96];
            snprintf(what, sizeof(what), "apply at index %" PRIu64 ", command %zu of %zu%s", index,
                     i + 1, n, reapply ? ", a re-applied index" : "");
            header(r, what, why);
            fprintf(stderr, "command:\n");
            model_dump_command(stderr, cmds[i]);
            fprintf(stderr, "model (want):\n");
            model_dump_result(stderr, &want[i]);
            fprintf(stderr, "store (got):\n");
            model_dump_result(stderr, &got[i]);
            FAIL(r);
        }
        if (want[i].skipped)
            r->n_skips++;
        else if (want[i].err != 0) {
            r->n_req_errs++;
            if (want[i].err > -128)
                r->err_counts[-want[i].err]++;
        }
        r->n_writes++;
    }
    if (keel_store_write_applied_index(r->w) != model_applied_index(r->m)) {
        char why2[128];
        snprintf(why2, sizeof(why2),
                 "keel_store_write_applied_index: want %" PRIu64 ", got %" PRIu64,
                 model_applied_index(r->m), keel_store_write_applied_index(r->w));
        header(r, "applied index inside the write", why2);
        FAIL(r);
    }
}

/* The open write goes: committed (its changes reach LMDB), or thrown away, as a crash before
 * the commit would (the model goes back to the last commit). */
static void write_end(struct run *r, bool commit)
{
    if (commit) {
        int rv = keel_store_write_commit(r->w);
        r->w = NULL;
        if (rv != 0) {
            header(r, "write_commit", keel_strerror(rv));
            FAIL(r);
        }
        r->n_commits++;
    } else {
        keel_store_write_abort(r->w);
        r->w = NULL;
        model_rollback(r->m, r->commit_mark); /* frees the mark */
        r->commit_mark = NULL;
        r->n_aborts++;
    }
    model_mark_free(r->commit_mark);
    r->commit_mark = NULL;
    check_stat(r);
    /* Commits reach the disk in the background: the durable index trails, never leads, and
     * is the applied one once the sync is waited for. */
    struct keel_store_stat st;
    keel_store_stat(r->s, &st);
    if (st.durable_index > st.applied_index) {
        header(r, "stat after the write ended", "durable index ahead of the applied one");
        FAIL(r);
    }
    if (keel_store_sync(r->s) != 0) {
        header(r, "sync after the write ended", "keel_store_sync failed");
        FAIL(r);
    }
    keel_store_stat(r->s, &st);
    if (st.durable_index != st.applied_index) {
        header(r, "stat after the sync", "durable index differs from the applied one");
        FAIL(r);
    }
}

/*
 * A batch of raft entries applied in the open write, then published: the reads that follow
 * see it through the overlay while LMDB does not have it yet. The write stays open across
 * several batches (as the storage writer keeps it for its commit interval) and then commits,
 * or now and then is thrown away instead.
 */
static void write_batch(struct run *r)
{
    if (r->w == NULL) {
        int rv = keel_store_write_begin(r->s, &r->w);
        if (rv != 0) {
            header(r, "write_begin", keel_strerror(rv));
            FAIL(r);
        }
        r->commit_mark = model_mark(r->m);
    }
    uint64_t n = 1 + rnd(r, MAX_BATCH);
    for (uint64_t i = 0; i < n && r->op < r->n_ops; i++, r->op++)
        write_one(r, model_applied_index(r->m) > 0 && rnd(r, 40) == 0);
    int rv = keel_store_write_publish(r->w);
    if (rv != 0) {
        header(r, "write_publish", keel_strerror(rv));
        FAIL(r);
    }
    r->n_publishes++;
    check_stat(r);
    uint64_t u = rnd(r, 100);
    if (u < 4)
        write_end(r, false);
    else if (u < 40)
        write_end(r, true);
}

/* A range in key order read in pages of random, mostly tiny, sizes: joined, it is the answer
 * read whole; every page but the last is partial, and each reads at the first page's revision. */
static void read_range_pages(struct run *r, const Keel__RangeRequest *req, int64_t wrev,
                             const Keel__RangeResponse *want)
{
    struct keel_range_pager pager;
    memset(&pager, 0, sizeof(pager));
    Keel__RangeResponse joined = KEEL__RANGE_RESPONSE__INIT;
    size_t cap = 0;
    char why[512];
    for (int pages = 0; !pager.done; pages++) {
        Keel__RangeResponse *pg = NULL;
        int64_t rev = -1;
        size_t page_bytes = rnd(r, 3) == 0 ? 1 + rnd(r, 4096) : 1 + rnd(r, 400);
        size_t scan_keys = 1 + rnd(r, 6);
        int err =
            keel_store_range_page(r->s, req, &pager, page_bytes, scan_keys, &r->sa, &pg, &rev);
        why[0] = 0;
        if (err != 0)
            snprintf(why, sizeof(why), "page %d failed: %s", pages, keel_err_name(err));
        else if (rev != wrev)
            snprintf(why, sizeof(why), "page %d at revision %" PRId64 ", want %" PRId64, pages, rev,
                     wrev);
        else if (pg->partial == pager.done)
            snprintf(why, sizeof(why), "page %d: partial %d but done %d", pages, pg->partial,
                     pager.done);
        if (why[0]) {
            header(r, "range in pages", why);
            model_dump_range_request(stderr, req);
            FAIL(r);
        }
        if (joined.n_kvs + pg->n_kvs > cap) {
            size_t ncap = (joined.n_kvs + pg->n_kvs) * 2;
            Keel__KeyValue **v = keel_arena_alloc(&r->sa, ncap * sizeof(*v));
            assert_non_null(v);
            if (joined.n_kvs)
                memcpy(v, joined.kvs, joined.n_kvs * sizeof(*v));
            joined.kvs = v;
            cap = ncap;
        }
        for (size_t i = 0; i < pg->n_kvs; i++)
            joined.kvs[joined.n_kvs++] = pg->kvs[i];
        joined.count = pg->count;
        joined.more = pg->more;
    }
    r->n_paged++;
    if (model_cmp_range(why, sizeof(why), req, NULL, want, &joined)) {
        header(r, "range in pages", why);
        model_dump_range_request(stderr, req);
        fprintf(stderr, "model (want):\n");
        model_dump_range(stderr, want);
        fprintf(stderr, "store in pages (got):\n");
        model_dump_range(stderr, &joined);
        FAIL(r);
    }
}

static void read_range(struct run *r)
{
    struct model_gen g = {.rng = &r->rng, .m = r->m, .a = &r->ma};
    Keel__RangeRequest *req =
        model_gen_range(&g, MODEL_GEN_ANY_SORT | MODEL_GEN_FUTURE_REV | MODEL_GEN_COMPACTED_REV);
    Keel__RangeResponse *got = NULL, *want = NULL, *all = NULL;
    int64_t grev = -1, wrev = -1;
    int gerr = keel_store_range(r->s, req, &r->sa, &got, &grev);
    int werr = model_range(r->m, req, &r->ma, &want, &wrev);
    char why[512];
    if (gerr != werr) {
        snprintf(why, sizeof(why), "range err: want %s, got %s", keel_err_name(werr),
                 keel_err_name(gerr));
        header(r, "range", why);
        model_dump_range_request(stderr, req);
        FAIL(r);
    }
    r->n_ranges++;
    if (werr != 0)
        return;
    if (keel_store_range_pageable(req))
        read_range_pages(r, req, wrev, want);
    if (req->sort_order != KEEL__RANGE_REQUEST__SORT_ORDER__NONE &&
        req->sort_target != KEEL__RANGE_REQUEST__SORT_TARGET__KEY) {
        Keel__RangeRequest plain = *req;
        plain.limit = 0;
        plain.count_only = 0;
        plain.keys_only = 0;
        plain.sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__NONE;
        plain.sort_target = KEEL__RANGE_REQUEST__SORT_TARGET__KEY;
        int64_t rev;
        model_range(r->m, &plain, &r->ma, &all, &rev);
    }
    int d = grev != wrev;
    if (d)
        snprintf(why, sizeof(why), "range revision: want %" PRId64 ", got %" PRId64, wrev, grev);
    else
        d = model_cmp_range(why, sizeof(why), req, all, want, got);
    if (d) {
        header(r, "range", why);
        model_dump_range_request(stderr, req);
        fprintf(stderr, "model (want):\n");
        model_dump_range(stderr, want);
        fprintf(stderr, "store (got):\n");
        model_dump_range(stderr, got);
        FAIL(r);
    }
}

static void history_fail(struct run *r, const char *why, ProtobufCBinaryData key,
                         ProtobufCBinaryData end, int64_t start, uint64_t max,
                         const struct keel_history *chunk)
{
    header(r, "history", why);
    fprintf(stderr, "  span ");
    model_dump_bytes(stderr, key.data, key.len);
    fprintf(stderr, " .. ");
    model_dump_bytes(stderr, end.data, end.len);
    fprintf(stderr, " start %" PRId64 " max_events %" PRIu64 "\n", start, max);
    if (chunk != NULL) {
        fprintf(stderr, "  chunk: %zu events, next_revision %" PRId64 ", revision %" PRId64 "\n",
                chunk->n_events, chunk->next_revision, chunk->revision);
        model_dump_events(stderr, 4, chunk->events, chunk->n_events);
    }
    FAIL(r);
}

/*
 * One chunk must be whole revisions and stop at the first revision boundary after reaching
 * max_events. It may stop sooner (the store bounds how many records one call scans, so a narrow
 * span far behind comes back in short or empty chunks) but must move next_revision forward.
 */
static const char *chunk_error(const struct keel_history *h, int64_t start, uint64_t max,
                               int64_t revision)
{
    if (h->revision != revision)
        return "chunk revision is not the store's revision";
    if (h->next_revision <= h->revision && h->next_revision <= start)
        return "next_revision does not advance";
    if (h->n_events == 0)
        return NULL;
    int64_t prev = start;
    for (size_t i = 0; i < h->n_events; i++) {
        if (h->events[i] == NULL || h->events[i]->kv == NULL)
            return "event without kv";
        int64_t rev = h->events[i]->kv->mod_revision;
        if (rev < prev)
            return "event before start_revision or out of revision order";
        prev = rev;
    }
    size_t last_group = 0;
    for (size_t i = h->n_events; i > 0 && h->events[i - 1]->kv->mod_revision == prev; i--)
        last_group++;
    if (h->n_events - last_group >= max)
        return "chunk went past the first revision boundary after max_events";
    if (h->next_revision <= prev)
        return "next_revision does not move past the chunk";
    return NULL;
}

static void read_history(struct run *r)
{
    struct model_gen g = {.rng = &r->rng, .m = r->m, .a = &r->ma};
    ProtobufCBinaryData key, end;
    model_gen_span(&g, &key, &end);
    int64_t rev = model_revision(r->m), comp = model_compact_revision(r->m);
    int64_t lo = comp > 1 ? comp : 1;
    int64_t start = lo + (int64_t)rnd(r, (uint64_t)(rev - lo + 2));
    if (comp > 1 && rnd(r, 20) == 0)
        start = 1 + (int64_t)rnd(r, (uint64_t)(comp - 1));
    else if (rnd(r, 10) == 0)
        start = lo;
    uint64_t max = 1 + rnd(r, 16);

    struct keel_history want, h;
    int werr = model_history(r->m, key.data, key.len, end.data, end.len, start, &r->ma, &want);
    memset(&h, 0, sizeof(h));
    int gerr =
        keel_store_history(r->s, key.data, key.len, end.data, end.len, start, max, &r->sa, &h);
    char why[512];
    if (gerr != werr) {
        snprintf(why, sizeof(why), "history err: want %s, got %s", keel_err_name(werr),
                 keel_err_name(gerr));
        history_fail(r, why, key, end, start, max, NULL);
    }
    r->n_histories++;
    if (werr != 0)
        return;
    size_t n = 0, cap = want.n_events + 16;
    Keel__Event **all = malloc(cap * sizeof(*all));
    if (all == NULL)
        abort();
    int64_t from = start;
    size_t calls = 0;
    for (;;) {
        r->n_chunks++;
        const char *e = chunk_error(&h, from, max, rev);
        if (e != NULL) {
            free(all);
            history_fail(r, e, key, end, from, max, &h);
        }
        for (size_t i = 0; i < h.n_events; i++) {
            if (n == cap) {
                cap *= 2;
                all = realloc(all, cap * sizeof(*all));
                if (all == NULL)
                    abort();
            }
            all[n++] = h.events[i];
        }
        if (h.next_revision > h.revision)
            break;
        /* Each call moves next_revision forward: at most one call per revision. */
        if (++calls > want.n_events + (size_t)(rev >= start ? rev - start : 0) + 2 ||
            n > want.n_events) {
            free(all);
            history_fail(r, "chained history does not finish", key, end, from, max, &h);
        }
        from = h.next_revision;
        memset(&h, 0, sizeof(h));
        gerr =
            keel_store_history(r->s, key.data, key.len, end.data, end.len, from, max, &r->sa, &h);
        if (gerr != 0) {
            free(all);
            snprintf(why, sizeof(why), "history from next_revision %" PRId64 ": %s", from,
                     keel_err_name(gerr));
            history_fail(r, why, key, end, from, max, NULL);
        }
    }
    /* The previous version of an event at the compacted revision itself is older than the
     * compaction: the store may have dropped it. */
    if (model_cmp_events(why, sizeof(why), "history", want.events, want.n_events, all, n,
                         comp > 0 ? comp : -1)) {
        header(r, "history (chained)", why);
        fprintf(stderr, "  start %" PRId64 " max_events %" PRIu64 "\nmodel (want):\n", start, max);
        model_dump_events(stderr, 4, want.events, want.n_events);
        fprintf(stderr, "store (got):\n");
        model_dump_events(stderr, 4, all, n);
        free(all);
        FAIL(r);
    }
    free(all);
}

static void read_leases(struct run *r)
{
    struct keel_lease_info *gl = NULL;
    size_t gn = 0;
    char why[256];
    int rv = keel_store_lease_list(r->s, &r->sa, &gl, &gn);
    if (rv != 0) {
        header(r, "lease_list", keel_strerror(rv));
        FAIL(r);
    }
    size_t wn = model_lease_count(r->m);
    for (size_t i = 0; i < wn || i < gn; i++) {
        struct keel_lease_info w = {0, 0}, g = {0, 0};
        if (i < wn)
            w = model_lease_at(r->m, i);
        if (i < gn)
            g = gl[i];
        if (i >= wn || i >= gn || w.id != g.id || w.ttl != g.ttl) {
            snprintf(why, sizeof(why),
                     "lease_list[%zu]: want id %" PRId64 " ttl %" PRId64 ", got id %" PRId64
                     " ttl %" PRId64 " (%zu vs %zu leases)",
                     i, w.id, w.ttl, g.id, g.ttl, wn, gn);
            header(r, "lease_list", why);
            FAIL(r);
        }
    }
    int64_t id =
        wn > 0 && rnd(r, 4) != 0 ? model_lease_at(r->m, rnd(r, wn)).id : 1 + (int64_t)rnd(r, 20);
    struct keel_lease_info wi = {0, 0}, gi = {0, 0};
    ProtobufCBinaryData *wk = NULL, *gk = NULL;
    size_t wkn = 0, gkn = 0;
    int werr = model_lease_get(r->m, id, &r->ma, &wi, &wk, &wkn);
    int gerr = keel_store_lease_get(r->s, id, &r->sa, &gi, &gk, &gkn);
    int d = 0;
    if (werr != gerr)
        d = snprintf(why, sizeof(why), "lease_get(%" PRId64 ") err: want %s, got %s", id,
                     keel_err_name(werr), keel_err_name(gerr));
    else if (werr == 0 && (wi.id != gi.id || wi.ttl != gi.ttl || wkn != gkn))
        d = snprintf(why, sizeof(why),
                     "lease_get(%" PRId64 "): want ttl %" PRId64 " with %zu keys, got id %" PRId64
                     " ttl %" PRId64 " with %zu keys",
                     id, wi.ttl, wkn, gi.id, gi.ttl, gkn);
    for (size_t i = 0; werr == 0 && !d && i < wkn; i++)
        if (wk[i].len != gk[i].len || (wk[i].len && memcmp(wk[i].data, gk[i].data, wk[i].len)))
            d = snprintf(why, sizeof(why), "lease_get(%" PRId64 ") keys[%zu] differ", id, i);
    if (d) {
        header(r, "lease_get", why);
        fprintf(stderr, "  model keys:\n");
        for (size_t i = 0; i < wkn; i++) {
            fprintf(stderr, "    ");
            model_dump_bytes(stderr, wk[i].data, wk[i].len);
            fprintf(stderr, "\n");
        }
        fprintf(stderr, "  store keys:\n");
        for (size_t i = 0; i < gkn; i++) {
            fprintf(stderr, "    ");
            model_dump_bytes(stderr, gk[i].data, gk[i].len);
            fprintf(stderr, "\n");
        }
        FAIL(r);
    }
    r->n_leases++;
}

/* Reopen the store, take a snapshot, or go back to the snapshot taken earlier. */
static void maintenance(struct run *r)
{
    char why[256];
    int rv = 0;
    if (r->w != NULL)
        write_end(r, rnd(r, 2) == 0); /* no write may be open across these */
    uint64_t u = rnd(r, 3);
    if (u == 0) {
        keel_store_close(r->s);
        r->s = tu_store_open(r->dir, 0);
        r->n_reopens++;
    } else if (u == 1 || r->snap_mark == NULL) {
        if (r->snap_fd >= 0)
            close(r->snap_fd);
        model_mark_free(r->snap_mark);
        r->snap_mark = NULL;
        char *path = NULL;
        if (asprintf(&path, "%s/snapshot", r->dir) < 0)
            abort();
        r->snap_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        free(path);
        assert_true(r->snap_fd >= 0);
        rv = keel_store_snapshot(r->s, r->snap_fd, r->n_snapshots % 2 == 0);
        if (rv != 0) {
            snprintf(why, sizeof(why), "keel_store_snapshot: %s", keel_strerror(rv));
            header(r, "snapshot", why);
            FAIL(r);
        }
        r->snap_mark = model_mark(r->m);
        r->n_snapshots++;
    } else {
        assert_true(lseek(r->snap_fd, 0, SEEK_SET) == 0);
        rv = keel_store_restore(r->s, r->snap_fd, 0);
        if (rv != 0) {
            snprintf(why, sizeof(why), "keel_store_restore: %s", keel_strerror(rv));
            header(r, "restore", why);
            FAIL(r);
        }
        model_rollback(r->m, r->snap_mark);
        r->snap_mark = NULL;
        close(r->snap_fd);
        r->snap_fd = -1;
        r->n_restores++;
    }
    check_stat(r);
}

static void reads(struct run *r)
{
    uint64_t n = 1 + rnd(r, MAX_READS);
    for (uint64_t i = 0; i < n && r->op < r->n_ops; i++, r->op++) {
        keel_arena_reset(&r->sa);
        keel_arena_reset(&r->ma);
        uint64_t u = rnd(r, 100);
        if (u < 75)
            read_range(r);
        else if (u < 92)
            read_history(r);
        else
            read_leases(r);
    }
}

static void test_model(void **state)
{
    (void)state;
    struct run r;
    memset(&r, 0, sizeof(r));
    r.snap_fd = -1;
    r.seed = tu_seed("store_model");
    r.rng = r.seed;
    const char *env = getenv("KEEL_MODEL_OPS");
    r.n_ops = env != NULL && atol(env) > 0 ? atol(env) : DEFAULT_OPS;
    r.dir = tu_mkdtemp("store-model");
    r.s = tu_store_open(r.dir, 0);
    r.m = model_open();
    keel_arena_init(&r.sa, 0);
    keel_arena_init(&r.ma, 0);
    r.next_index = 1 + rnd(&r, 3);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (r.op < r.n_ops) {
        uint64_t u = rnd(&r, 1000);
        if (u < 550)
            write_batch(&r);
        else if (u < 992)
            reads(&r);
        else
            maintenance(&r);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("store_model: %ld ops in %.1fs: %ld writes (%ld skipped, %ld request errors) in %ld "
           "publishes, %ld commits, %ld aborted writes; %ld ranges (%ld also in pages), %ld "
           "history scans in %ld "
           "chunks, %ld lease checks; %ld reopens, %ld snapshots, %ld restores; revision %" PRId64
           " compact %" PRId64 " applied %" PRIu64 "\n",
           r.op, secs, r.n_writes, r.n_skips, r.n_req_errs, r.n_publishes, r.n_commits, r.n_aborts,
           r.n_ranges, r.n_paged, r.n_histories, r.n_chunks, r.n_leases, r.n_reopens, r.n_snapshots,
           r.n_restores, model_revision(r.m), model_compact_revision(r.m),
           model_applied_index(r.m));
    printf("store_model: request errors:");
    for (int e = 1; e < 128; e++)
        if (r.err_counts[e] > 0)
            printf(" %s %ld", keel_err_name(-e), r.err_counts[e]);
    printf("\n");
    cleanup(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
