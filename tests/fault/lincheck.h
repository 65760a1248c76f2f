/*
 * A linearizability checker for histories of registers (the fault suite, issue 11).
 *
 * A history is a set of operations on independent keys; each key is a register holding an
 * int64 or "absent" (LINCHECK_ABSENT), read, written (a delete is a write of LINCHECK_ABSENT)
 * and compare-and-set. Strings can be checked by interning them to small integers first.
 *
 * The check is Wing & Gong's search with Lowe's just-in-time linearization, as in Porcupine:
 * the call and return events sorted by time, a depth-first search that linearizes a pending
 * call before the first return still ahead of it, a cache of (set of linearized operations,
 * register value) that cuts off states seen before, and backtracking. Keys are checked one at a
 * time (linearizability is compositional per object), so the cost is that of the worst key.
 *
 * Real time: operation a precedes b only if a.ret < b.call; equal times count as overlapping.
 * Unknown outcome (ret == LINCHECK_NEVER): the operation may take effect at any point after
 * its call, or never. A read with an unknown outcome constrains nothing and is ignored.
 *
 * The checker copies what it needs; callers own the operations (and their keys) they pass in.
 */
#ifndef KEEL_TEST_LINCHECK_H
#define KEEL_TEST_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The register's value when the key does not exist. */
#define LINCHECK_ABSENT INT64_MIN
/* The completion time of an operation whose outcome is unknown. */
#define LINCHECK_NEVER INT64_MAX

enum lincheck_kind {
    LINCHECK_READ,  /* value = what the read returned */
    LINCHECK_WRITE, /* value = what was written */
    LINCHECK_CAS,   /* value = expected, value2 = new; ok = whether it swapped */
    /* value = expected, value2 = new; whether it swapped was not observed, so it is possible in
     * every state (a lease revoke or expiry: it deletes the key only if the key still holds what
     * was put with the lease). */
    LINCHECK_CAS_BLIND,
};

struct lincheck_op {
    const char *key; /* NUL-terminated; compared with strcmp */
    enum lincheck_kind kind;
    int64_t value;
    int64_t value2;
    /* CAS with a known outcome: true = swapped, false = saw a value other than the expected
     * one and changed nothing (a read that the value differs). Ignored otherwise. */
    bool ok;
    int64_t call; /* invocation time */
    int64_t ret;  /* completion time, >= call; LINCHECK_NEVER = unknown outcome */
};

enum lincheck_verdict {
    LINCHECK_OK,        /* linearizable */
    LINCHECK_VIOLATION, /* not linearizable; see the result's key, op and detail */
    LINCHECK_UNKNOWN,   /* the time bound ran out before a verdict (and no key was violated) */
    LINCHECK_INVALID,   /* malformed input: ret < call, or an unknown kind; see detail */
};

struct lincheck_result {
    enum lincheck_verdict verdict;
    /* On a violation: the first violated key (in strcmp order; points into the caller's ops),
     * the number of operations on it, the longest sequence of them the search could linearize,
     * and the index (into the caller's array) of the operation whose completion it could not
     * get past at that point: no order of the pending operations lets this one take effect. */
    const char *key;
    size_t key_ops;
    size_t linearized;
    size_t op;
    char detail[256]; /* one line for a human; empty when the verdict is LINCHECK_OK */
};

/*
 * Check n operations. time_bound_ms > 0 bounds the wall-clock time of the whole check (the
 * verdict is then LINCHECK_UNKNOWN if it ran out); 0 means no bound. Fills *res (never NULL)
 * and returns its verdict. Aborts on out-of-memory, as test code does.
 */
enum lincheck_verdict lincheck_check(const struct lincheck_op *ops, size_t n, int64_t time_bound_ms,
                                     struct lincheck_result *res);

/* A printable name for a verdict. */
const char *lincheck_verdict_name(enum lincheck_verdict v);

/*
 * Parse a Jepsen etcd log (tests/fault/testdata/jepsen-etcd/README.md gives the format) into a
 * malloc'd array of operations on the key "x", each line's number as its time, which the caller
 * frees. As Jepsen and Porcupine do, a :fail operation (a failed cas) is dropped as never having
 * happened, and an :info one, like an operation still pending at the end of the log, gets
 * ret = LINCHECK_NEVER (an unknown outcome). Returns 0, or -1 (with a line in err) if the
 * file cannot be read or a line does not parse.
 */
int lincheck_jepsen_load(const char *path, struct lincheck_op **ops, size_t *n, char *err,
                         size_t err_len);

#endif
