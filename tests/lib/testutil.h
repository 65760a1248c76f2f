/*
 * Helpers shared by keel's tests: scratch directories and Command builders.
 *
 * Builders allocate everything from the arena they are given, so a test frees a whole batch of
 * commands with one keel_arena_reset. Keys and values are C strings for brevity; use the _n
 * forms for arbitrary bytes.
 */
#ifndef KEEL_TESTUTIL_H
#define KEEL_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "keel.pb-c.h"
#include "store.h"

/* A fresh directory under $TMPDIR (or /tmp) named after tag; aborts on failure. Caller frees
 * the string and removes the directory with tu_rmdir. */
char *tu_mkdtemp(const char *tag);

/* rm -rf path (no symlinks followed). */
void tu_rmdir(const char *path);

/* Open a store at dir/state with no per-commit sync (tests only); aborts on failure. */
struct keel_store *tu_store_open(const char *dir, uint64_t quota_bytes);

/* The seed from $KEEL_SEED, or one from the clock; printed either way so a run can be replayed. */
uint64_t tu_seed(const char *test_name);

/* splitmix64: a small, fast, seedable generator. */
uint64_t tu_rand(uint64_t *state);

ProtobufCBinaryData tu_bytes(struct keel_arena *a, const void *p, size_t n);
ProtobufCBinaryData tu_str(struct keel_arena *a, const char *s);

Keel__PutRequest *tu_put_req(struct keel_arena *a, const char *key, const char *value);
Keel__DeleteRangeRequest *tu_del_req(struct keel_arena *a, const char *key, const char *end);
Keel__RangeRequest *tu_range_req(struct keel_arena *a, const char *key, const char *end);

Keel__Command *tu_cmd_put(struct keel_arena *a, const char *key, const char *value);
Keel__Command *tu_cmd_put_lease(struct keel_arena *a, const char *key, const char *value,
                                int64_t lease);
Keel__Command *tu_cmd_del(struct keel_arena *a, const char *key, const char *end);
Keel__Command *tu_cmd_txn(struct keel_arena *a, Keel__TxnRequest *txn);
Keel__Command *tu_cmd_compact(struct keel_arena *a, int64_t revision);
Keel__Command *tu_cmd_lease_grant(struct keel_arena *a, int64_t id, int64_t ttl);
Keel__Command *tu_cmd_lease_revoke(struct keel_arena *a, int64_t id);

Keel__TxnRequest *tu_txn(struct keel_arena *a);
/* Append to a txn; each returns the appended element for further settings. */
Keel__Compare *tu_txn_compare(struct keel_arena *a, Keel__TxnRequest *t, const char *key,
                              Keel__Compare__CompareTarget target,
                              Keel__Compare__CompareResult result);
Keel__RequestOp *tu_txn_op(struct keel_arena *a, Keel__TxnRequest *t, int success);
void tu_op_put(Keel__RequestOp *op, Keel__PutRequest *put);
void tu_op_del(Keel__RequestOp *op, Keel__DeleteRangeRequest *del);
void tu_op_range(Keel__RequestOp *op, Keel__RangeRequest *range);

/* Apply one command at index with a fresh write; aborts on a store failure. */
void tu_apply(struct keel_store *s, uint64_t index, const Keel__Command *cmd, struct keel_arena *a,
              struct keel_apply_result *res);

/* The bytes of a Request whose txn nests `levels` txns below it, each the only success op of the
 * one above, written to end just below end (protobuf writes a message's length before it: built
 * from the inside out); *len gets their size. */
const uint8_t *tu_nested_txns(uint8_t *end, size_t levels, size_t *len);

/* Range over [key, end) at revision (0: current); aborts on store failure, returns the code. */
int tu_range(struct keel_store *s, struct keel_arena *a, const char *key, const char *end,
             int64_t revision, Keel__RangeResponse **out);

/* A named cmocka group, for binaries that register one ctest entry per group. */
struct CMUnitTest;
struct tu_group {
    const char *name;
    const struct CMUnitTest *tests;
    size_t n;
};
#define TU_GROUP(name)                                                                             \
    {                                                                                              \
#name, name, sizeof(name) / sizeof(name[0])                                                \
    }

/* Run the group named by argv[1], or every group without an argument. The exit status: 0, 1 when
 * a test failed, 2 for an unknown group name. */
int tu_run_groups(const char *prog, int argc, char **argv, const struct tu_group *groups, size_t n);

/* Sleep for ms milliseconds. */
void tu_sleep_ms(int ms);

/*
 * Append opts (e.g. "quarantine_size_mb=8") to ASAN_OPTIONS for the processes started from now
 * on: ASan's quarantine of freed memory (256 MiB by default) counts as RSS, so a test that
 * measures a member's memory bounds it. Returns the previous value (malloc'd; NULL when it was
 * unset), which tu_asan_options_restore puts back and frees.
 */
char *tu_asan_options_add(const char *opts);
void tu_asan_options_restore(char *saved);

#endif
