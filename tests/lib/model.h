/*
 * A reference model of keel's store for randomized tests.
 *
 * The model keeps every version of every key in plain malloc'd arrays and never forgets
 * anything (compaction only moves a watermark), so each answer is computed the slow, obvious
 * way: scan the keys, pick the greatest version <= the revision. It applies the same
 * Keel__Command values as keel_store_write_apply and answers with the same result types, so a
 * test can compare the two field by field.
 *
 * Also here: comparison and printing of results, and a random command generator shared by the
 * model and crash tests. Results the model returns live in the arena the caller passes.
 */
#ifndef KEEL_TEST_MODEL_H
#define KEEL_TEST_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arena.h"
#include "keel.pb-c.h"
#include "store.h"

struct model;

struct model *model_open(void);
void model_close(struct model *m);

uint64_t model_applied_index(const struct model *m);
int64_t model_revision(const struct model *m);
int64_t model_compact_revision(const struct model *m);

/*
 * Apply cmd at index, like keel_store_write_apply. picked_lease is the id the store chose for a
 * LeaseGrant with ID 0 (the model cannot guess it); 0 lets the model pick one itself.
 */
void model_apply(struct model *m, uint64_t index, const Keel__Command *cmd, int64_t picked_lease,
                 struct keel_arena *a, struct keel_apply_result *res);

/* Like keel_store_write_apply_entry: n commands of one raft entry; picked_lease may be NULL. */
void model_apply_entry(struct model *m, uint64_t index, const Keel__Command *const *cmds, size_t n,
                       const int64_t *picked_lease, struct keel_arena *a,
                       struct keel_apply_result *results);

/* A saved point to come back to: what an aborted write or a restored snapshot returns the store
 * to. model_rollback returns there and frees the mark. */
struct model_mark;
struct model_mark *model_mark(const struct model *m);
void model_rollback(struct model *m, struct model_mark *mk);
void model_mark_free(struct model_mark *mk);

/* Like keel_store_range. */
int model_range(const struct model *m, const Keel__RangeRequest *req, struct keel_arena *a,
                Keel__RangeResponse **out, int64_t *revision);

/* Every event from start_revision on in one piece (next_revision = revision + 1). */
int model_history(const struct model *m, const uint8_t *key, size_t key_len,
                  const uint8_t *range_end, size_t range_end_len, int64_t start_revision,
                  struct keel_arena *a, struct keel_history *out);

size_t model_lease_count(const struct model *m);
struct keel_lease_info model_lease_at(const struct model *m, size_t i);
/* Like keel_store_lease_get (keys may be NULL). */
int model_lease_get(const struct model *m, int64_t id, struct keel_arena *a,
                    struct keel_lease_info *info, ProtobufCBinaryData **keys, size_t *n_keys);

/* The current (latest) live state of one key; 0 when it has none. */
struct model_kv {
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
    const uint8_t *value;
    size_t value_len;
};
int model_get(const struct model *m, const uint8_t *key, size_t key_len, struct model_kv *out);

/* ---------------------------------------------------------------------------------------
 * Comparison: 0 when equal, else 1 with the first difference described in why.
 */

int model_cmp_kv(char *why, size_t why_len, const char *path, const Keel__KeyValue *want,
                 const Keel__KeyValue *got);
int model_cmp_result(char *why, size_t why_len, const struct keel_apply_result *want,
                     const struct keel_apply_result *got);
/*
 * Range responses to req. When req sorts by something other than the key, ties may come in any
 * order: then got must hold the same sequence of sort values as want, and each of its kvs must
 * be in all: the answer to the same range at the same revision with no sort, limit, keys_only or
 * count_only.
 */
int model_cmp_range(char *why, size_t why_len, const Keel__RangeRequest *req,
                    const Keel__RangeResponse *all, const Keel__RangeResponse *want,
                    const Keel__RangeResponse *got);
/* Events; an event at revision lenient_prev_rev may lack its prev_kv in got (its previous
 * version may have been compacted away). -1: strict. */
int model_cmp_events(char *why, size_t why_len, const char *path, Keel__Event *const *want,
                     size_t n_want, Keel__Event *const *got, size_t n_got,
                     int64_t lenient_prev_rev);

/* ---------------------------------------------------------------------------------------
 * Printing, for failure reports.
 */

void model_dump_bytes(FILE *f, const uint8_t *p, size_t n);
void model_dump_kv(FILE *f, int indent, const Keel__KeyValue *kv);
void model_dump_command(FILE *f, const Keel__Command *cmd);
void model_dump_result(FILE *f, const struct keel_apply_result *r);
void model_dump_range(FILE *f, const Keel__RangeResponse *r);
void model_dump_range_request(FILE *f, const Keel__RangeRequest *r);
void model_dump_events(FILE *f, int indent, Keel__Event *const *ev, size_t n);

/* ---------------------------------------------------------------------------------------
 * Random commands over a fixed key space of about 180 short keys (and one 511-byte key).
 *
 * With a model the generator looks at the current state to make compares that sometimes hold,
 * leases that exist, compactions that succeed. Without one (m NULL) a command depends only on
 * the random state, which the crash test needs to regenerate command i in two processes; it
 * then avoids requests whose outcome depends on state it cannot see in ambiguous ways (LeaseGrant
 * with ID 0, ranges at past revisions inside txns).
 *
 * A txn branch, nested txns included, never puts one key twice. Without overlap, every write of a
 * branch covers keys disjoint from the others and a nested txn's compares avoid keys written
 * earlier in the branch, so no result depends on ops seeing the txn's earlier writes: that is
 * what the store accepts (like etcd it refuses a put inside a range the same txn deletes, and
 * evaluates nested compares before the txn writes). With overlap, deletes may cover keys written
 * earlier in the txn; the store refuses such txns, so the tests run without it.
 */

struct model_gen {
    uint64_t *rng;
    const struct model *m; /* NULL: state-free */
    struct keel_arena *a;
    int64_t rev_hint; /* state-free: a guess of the revision, for compactions */
    int overlap;      /* txn writes may overlap, see above */
    int valid;        /* out: 0 when the command is meant to fail keel_store_validate */
};

size_t model_gen_key_count(void);
ProtobufCBinaryData model_gen_key(size_t i);

Keel__Command *model_gen_command(struct model_gen *g);

#define MODEL_GEN_ANY_SORT      1 /* sort on any target, not only the key */
#define MODEL_GEN_FUTURE_REV    2 /* sometimes a revision after the current one */
#define MODEL_GEN_COMPACTED_REV 4 /* sometimes a compacted revision */
Keel__RangeRequest *model_gen_range(struct model_gen *g, int flags);

/* A span of keys by the etcd conventions (end empty: key only; "\0": every key >= key). */
void model_gen_span(struct model_gen *g, ProtobufCBinaryData *key, ProtobufCBinaryData *end);

#endif
