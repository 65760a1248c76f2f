/*
 * The disk reserve. A member whose data dir's filesystem runs short of space raises the NOSPACE
 * alarm before the disk is full: writes that add data then stop on every member, while reads,
 * deletes, compaction, lease revokes and defrag (what frees space) go on, and an operator clears
 * it with `keelctl alarm disarm` once there is room again, as for the quota. Without it a full
 * disk would surface inside an LMDB commit or a raft append, where the only safe answer is to
 * stop the member.
 *
 * Every check_ms: the store is given a quarter of the reserve ahead of its last page
 * (keel_store_reserve), so that its commits land in space already allocated even when
 * something else fills the disk to the last byte between two checks (raft's log segments are
 * allocated ahead by raft itself, two at a time; past those, raft 0.15 stops writing and the
 * member stops, node.c); then statvfs of the data dir. Free space (for unprivileged users,
 * f_bavail) below the reserve, or no room for the store's quarter, and no NOSPACE alarm in the
 * store, calls raise(): the seam that gets an
 * AlarmRequest {ACTIVATE, NOSPACE, this member} into the log (main.c: proposed by the leader,
 * sent to the leader by a follower). While the space stays short and the alarm is not in the
 * store, it asks again at each check (a lost request, a disarm while still short).
 */
#ifndef KEEL_DISKWATCH_H
#define KEEL_DISKWATCH_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "store.h"

struct keel_diskwatch_options {
    uv_loop_t *loop;
    const char *path;         /* a directory on the filesystem to watch (the data dir) */
    uint64_t reserve;         /* bytes; 0: watch nothing */
    bool reserve_set;         /* reserve as the operator gave it; else capped at 1/16 of the disk */
    unsigned check_ms;        /* between two looks */
    struct keel_store *store; /* is the alarm raised already? */
    /* Ask for the alarm: free and reserve are what the check saw. 0 or KEEL_E* (logged; the
     * next check asks again). */
    int (*raise)(void *data, uint64_t free, uint64_t reserve);
    void *data;
};

struct keel_diskwatch;

/* Start watching (reserve 0: a watcher that does nothing). 0 or KEEL_ENOMEM. */
int keel_diskwatch_new(const struct keel_diskwatch_options *o, struct keel_diskwatch **out);

/* Stop its timer; free it once the loop has closed the timer (keel_diskwatch_free). */
void keel_diskwatch_stop(struct keel_diskwatch *w);
void keel_diskwatch_free(struct keel_diskwatch *w);

#endif
