/*
 * The sizes of the raft log's entries, by index: what node.c needs to bound the log in bytes
 * when raft 0.15 only counts entries (node.c says how the counts are derived). Entries are
 * added in index order as they are applied; indexes may have gaps (barriers and configuration
 * changes never reach the fsm, and weigh nothing here). Each entry costs 16 bytes; node.c
 * forgets those raft has dropped, so this holds no more entries than raft's own log.
 */
#ifndef KEEL_LOGBYTES_H
#define KEEL_LOGBYTES_H

#include <stddef.h>
#include <stdint.h>

struct keel_logbytes_entry {
    uint64_t index;
    uint64_t end; /* bytes of every entry added so far, this one included */
};

struct keel_logbytes {
    struct keel_logbytes_entry *ring; /* oldest first from head; cap is a power of two or 0 */
    size_t cap, head, n;
    uint64_t base;  /* `end` just before the oldest entry held */
    uint64_t total; /* `end` of the newest */
};

void keel_logbytes_init(struct keel_logbytes *lb);
void keel_logbytes_close(struct keel_logbytes *lb);

/* Entry index weighs len bytes. An index at or below the newest held starts afresh (nothing of
 * what was held can be trusted to line up any more). 0, or -1 when out of memory (nothing
 * added). */
int keel_logbytes_add(struct keel_logbytes *lb, uint64_t index, size_t len);

/* Bytes of the entries held whose index is above `index`. */
uint64_t keel_logbytes_since(const struct keel_logbytes *lb, uint64_t index);

/*
 * How many indexes to keep behind `last` (raft's "trailing": it keeps (last - t, last]) so that
 * the entries held in that span weigh at most budget, taking as many as fit, newest first. The
 * span reaches back to just after the newest entry that does not fit, or to the oldest entry
 * held when all fit. 0 when even the entry at `last` does not fit, or none is held at or below
 * it: the caller decides the minimum.
 */
uint64_t keel_logbytes_keep(const struct keel_logbytes *lb, uint64_t last, uint64_t budget);

/* Drop the entries whose index is at or below upto. */
void keel_logbytes_forget(struct keel_logbytes *lb, uint64_t upto);

#endif
