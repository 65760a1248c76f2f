/*
 * The write path: one write transaction at a time, commands applied into it in log order,
 * published to readers through the overlay, and the commit that stores the working meta with
 * the data, hands the sync to the background (durable.c), and empties the overlay.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int keel_store_write_begin(struct keel_store *s, struct keel_store_write **out)
{
    struct keel_store_write *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return KEEL_ENOMEM;
    int err = ks_tctx_begin(s, NULL, 0, &w->t);
    if (err == 0)
        err = ks_meta_load(w->t.txn, s->dbi_meta, &w->m);
    /* The overlay must build on exactly this state (an invalidated one is replaced now). */
    if (err == 0 && (s->ov == NULL || ks_overlay_base(s->ov) != w->m.applied_index))
        err = ks_overlay_reset(s, &w->m);
    if (err == 0) {
        w->t.note = s->ov;
        err = ks_tctx_cursors(&w->t);
    }
    if (err != 0) {
        keel_store_write_abort(w);
        return err;
    }
    *out = w;
    return 0;
}

int keel_store_write_apply(struct keel_store_write *w, uint64_t index, const Keel__Command *cmd,
                           struct keel_arena *arena, struct keel_apply_result *result)
{
    return keel_store_write_apply_entry(w, index, &cmd, 1, arena, result);
}

int keel_store_write_apply_entry(struct keel_store_write *w, uint64_t index,
                                 const Keel__Command *const *cmds, size_t n,
                                 struct keel_arena *arena, struct keel_apply_result *results)
{
    bool skip = index <= w->m.applied_index;
    for (size_t i = 0; i < n; i++) {
        struct keel_apply_result *r = &results[i];
        memset(r, 0, sizeof(*r));
        if (skip) {
            r->skipped = 1;
        } else {
            int err = ks_mvcc_apply(w, cmds[i], arena, r);
            if (err != 0)
                return err;
        }
        r->revision = w->m.revision;
    }
    if (!skip)
        w->m.applied_index = index;
    return 0;
}

uint64_t keel_store_write_applied_index(const struct keel_store_write *w)
{
    return w->m.applied_index;
}

int keel_store_write_publish(struct keel_store_write *w)
{
    struct keel_store *s = w->t.s;
    pthread_rwlock_wrlock(&s->ov_lock);
    int err = ks_overlay_publish(w->t.note, &w->m);
    pthread_rwlock_unlock(&s->ov_lock);
    if (err == 0)
        ks_meta_publish_visible(s, &w->m);
    return err;
}

size_t keel_store_write_pending_bytes(const struct keel_store_write *w)
{
    return ks_overlay_bytes(w->t.note);
}

/* Free w and its transaction (committed or not). */
static void finish(struct keel_store_write *w)
{
    if (w->t.txn != NULL) {
        ks_tctx_close_cursors(&w->t);
        mdb_txn_abort(w->t.txn);
    }
    free(w);
}

/* After a failed commit or an abort: readers go back to what LMDB holds. */
static void discard(struct keel_store_write *w)
{
    struct keel_store *s = w->t.s;
    pthread_mutex_lock(&s->stat_lock);
    struct meta committed = s->committed;
    pthread_mutex_unlock(&s->stat_lock);
    /* On ENOMEM the overlay is invalidated: readers ignore it, the next begin replaces it. */
    (void)ks_overlay_reset(s, &committed);
    ks_meta_publish(s, &committed);
}

int keel_store_write_commit(struct keel_store_write *w)
{
    struct keel_store *s = w->t.s;
    w->m.clock_boot = ks_clock_boot();
    w->m.clock_ms = ks_clock_ms();
    /* The previous commit on disk before this one writes a page: then at most the newest meta
     * page is ever unsynced (durable.c). Under load its sync ran while this write applied. */
    int err = ks_durable_wait(s);
    if (err == 0)
        err = ks_meta_store(w->t.txn, s->dbi_meta, &w->m);
    ks_tctx_close_cursors(&w->t);
    uint64_t txnid = mdb_txn_id(w->t.txn);
    if (err == 0) {
        err = ks_mdb_err(mdb_txn_commit(w->t.txn));
        w->t.txn = NULL;
    }
    if (err == 0) {
        ks_durable_request(s, txnid, w->m.applied_index);
        ks_meta_publish(s, &w->m);
        /* LMDB now holds everything the overlay has; readers that took the new snapshot
         * already ignore the overlay (its base is behind), and a failed replacement leaves it
         * invalidated, which they ignore too. */
        (void)ks_overlay_reset(s, &w->m);
    } else {
        discard(w);
    }
    finish(w);
    return err;
}

void keel_store_write_abort(struct keel_store_write *w)
{
    if (w == NULL)
        return;
    if (w->t.txn != NULL)
        discard(w);
    finish(w);
}

int keel_store_apply(struct keel_store *s, uint64_t index, const Keel__Command *cmd,
                     struct keel_arena *arena, struct keel_apply_result *result)
{
    struct keel_store_write *w;
    int err = keel_store_write_begin(s, &w);
    if (err != 0)
        return err;
    err = keel_store_write_apply(w, index, cmd, arena, result);
    if (err != 0) {
        keel_store_write_abort(w);
        return err;
    }
    return keel_store_write_commit(w);
}
