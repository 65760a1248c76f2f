/*
 * Auto-compaction, with etcd's flags and meaning (--auto-compaction-mode,
 * --auto-compaction-retention):
 *
 *   periodic  keep the history of the last `retention` (a duration): the revision is sampled every
 *             min(retention, 1 h) / 10, and every min(retention, 1 h) the store is compacted to
 *             the revision it had `retention` ago (etcd 3.4's periodic compactor);
 *   revision  keep the last `retention` revisions: every check interval (etcd: 5 minutes), the
 *             store is compacted to current revision - retention.
 *
 * Only the leader compacts, and only through the log (Compaction commands, as a client's), so
 * every member compacts at the same revisions; every member samples, so a new leader goes on
 * with the history it saw. A target at or below the compacted revision is skipped. A target is
 * reached in steps of at most 500 revisions, each proposed 10 ms after the last one applied, so
 * no write waits behind more than one bounded step.
 *
 * A client's Compaction far above the compacted revision (more than one step) goes the same way
 * on the leader (keel_compactor_take): the compactor steps towards it, then hands the client's
 * own request on for the last step, so its answer is the one any compaction gets. A leader that
 * loses leadership meanwhile answers NOT_LEADER (the client's retry at the new leader goes on
 * from where the steps got to); a stopping member answers UNAVAILABLE.
 */
#ifndef KEEL_COMPACTOR_H
#define KEEL_COMPACTOR_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "keel.pb-c.h"
#include "store.h"

enum keel_compact_mode { KEEL_COMPACT_OFF, KEEL_COMPACT_PERIODIC, KEEL_COMPACT_REVISION };

struct keel_compactor_options {
    uv_loop_t *loop;
    struct keel_store *store; /* the revision and the compacted revision, read at each tick */
    enum keel_compact_mode mode;
    uint64_t retention_ms;  /* periodic */
    int64_t retention_revs; /* revision */
    uint64_t check_ms;      /* revision: how often to look (0: 5 minutes); periodic: ignored */
    /* Whether this member leads now, and the seam that proposes a compaction to rev. */
    bool (*is_leader)(void *data);
    int (*compact)(void *data, int64_t rev);
    /* A client's compaction within a step of its revision: its own request goes on as any
     * write (takes req). */
    void (*finish)(void *data, uint64_t session, Keel__Request *req);
    /* A client's compaction that cannot go on here: answer err with msg (takes req). */
    void (*refuse)(void *data, uint64_t session, Keel__Request *req, int err, const char *msg);
    void *data;
};

struct keel_compactor;

/* Start (mode OFF: a compactor that does nothing). 0 or KEEL_ENOMEM. */
int keel_compactor_new(const struct keel_compactor_options *o, struct keel_compactor **out);

/*
 * A client's Compaction request (body compaction): true when it is the compactor's to carry out
 * in steps (this member leads, and the revision is more than a step above the compacted one and
 * not above the current one), and then req is taken; false leaves it to the caller.
 */
bool keel_compactor_take(struct keel_compactor *c, uint64_t session, Keel__Request *req);

/* Stop its timers (compactions held for clients are refused); free it once the loop has closed
 * the timers (keel_compactor_free). */
void keel_compactor_stop(struct keel_compactor *c);
void keel_compactor_free(struct keel_compactor *c);

/*
 * Parse etcd's --auto-compaction-retention for mode: periodic takes a duration ("1h", "30m",
 * "10s", "1h30m", "500ms") or a bare number of hours ("1", "0.5"); revision a number of
 * revisions. 0 disables. 0 and the value set, or -1 with a message in err.
 */
int keel_compactor_parse_retention(enum keel_compact_mode mode, const char *s, uint64_t *ms,
                                   int64_t *revs, char *err, size_t errlen);

#endif
