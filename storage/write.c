/*
 * The write path: one write transaction at a time, commands applied into it in log order, and
 * the commit that stores the working meta with the data and publishes it.
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
    if (err == 0)
        err = ks_tctx_cursors(&w->t);
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

int keel_store_write_commit(struct keel_store_write *w)
{
    struct keel_store *s = w->t.s;
    w->m.clock_boot = ks_clock_boot();
    w->m.clock_ms = ks_clock_ms();
    int err = ks_meta_store(w->t.txn, s->dbi_meta, &w->m);
    ks_tctx_close_cursors(&w->t);
    if (err == 0) {
        err = ks_mdb_err(mdb_txn_commit(w->t.txn));
        w->t.txn = NULL;
    }
    if (err == 0)
        ks_meta_publish(s, &w->m);
    keel_store_write_abort(w);
    return err;
}

void keel_store_write_abort(struct keel_store_write *w)
{
    if (w == NULL)
        return;
    if (w->t.txn != NULL) {
        ks_tctx_close_cursors(&w->t);
        mdb_txn_abort(w->t.txn);
    }
    free(w);
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
