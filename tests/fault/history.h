/*
 * The fault suite's record of what the clients did and what the cluster's revision history says
 * happened, and the checks that compare them (linearizability itself is lincheck.h's).
 *
 * Clients run as separate processes (tests/fault/workload.c); each writes its operations to a
 * file in the format of fh_save, and the scenario reads them all back with fh_load. The same
 * files, kept when a check fails, replay with `test_fault replay FILE...`.
 */
#ifndef KEEL_TEST_FAULT_HISTORY_H
#define KEEL_TEST_FAULT_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lincheck.h"

/* The keys the workload touches: all under the prefix "f/". */
#define FH_KEYS 3
extern const char *const fh_key_names[FH_KEYS];

/* The key's index, or -1. */
int fh_key_index(const void *key, size_t len);

enum fh_flags {
    FH_SERIAL = 1,  /* a serializable read: checked against the revision history, not lincheck */
    FH_LEASE = 2,   /* a write of a value attached to a lease */
    FH_APPLIED = 4, /* an acknowledged change at revision rev: the history must hold it */
};

struct fh_op {
    struct lincheck_op op; /* op.key is fh_key_names[key] */
    int key;
    int client;
    unsigned flags;
    uint64_t member; /* the member that answered (its header), 0 when unknown */
    int64_t rev;     /* the answer's header revision, 0 when there was no answer */
};

struct fh_history {
    struct fh_op *v;
    size_t n, cap;
};

/* Append op (copied). Aborts on out-of-memory, as test code does. */
void fh_add(struct fh_history *h, const struct fh_op *op);
void fh_free(struct fh_history *h);

/* Write every operation as one tab-separated line to path (replacing it). 0 or -1. */
int fh_save(const struct fh_history *h, const char *path);

/* Append the operations of a file written by fh_save. 0, or -1 with a line in err. */
int fh_load(struct fh_history *h, const char *path, char *err, size_t err_len);

/* lincheck over every operation except the serializable reads. */
enum lincheck_verdict fh_lincheck(const struct fh_history *h, int64_t time_bound_ms,
                                  struct lincheck_result *res);

/* One event of the revision history (a watch from revision 1 reads it back). */
struct fh_event {
    int type; /* KEEL__EVENT__EVENT_TYPE__PUT or __DELETE */
    int key;  /* index into fh_key_names, -1 for another key */
    int64_t rev;
    int64_t value; /* LINCHECK_ABSENT for a delete */
};

/*
 * Revisions never go backwards: for any two answered operations a, b where a completed before b
 * was invoked, b's header revision is not below a's, both among the linearizable operations
 * (any member) and among all operations one member answered (its serializable reads too, across
 * its restarts). NULL, or what went backwards (in buf).
 */
const char *fh_check_revisions(const struct fh_history *h, char *buf, size_t len);

/*
 * Against the revision history ev (n events in revision order): every acknowledged change
 * (FH_APPLIED) is there at its revision with its value (durability), and every serializable
 * read returned the key's value as of its header revision (a consistent, if stale, snapshot).
 * NULL, or the first discrepancy (in buf).
 */
const char *fh_check_against(const struct fh_history *h, const struct fh_event *ev, size_t n,
                             char *buf, size_t len);

#endif
