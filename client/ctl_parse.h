/*
 * keelctl's parsing, kept apart from its I/O so it can be unit-tested: flags, etcdctl's txn
 * syntax (compare lines, put/get/del op lines, Go-quoted strings), durations, and the building
 * of put/get/del requests from command arguments.
 *
 * Everything built lives in the caller's arena. Strings are (pointer, length) pairs because a
 * quoted key may hold any byte, NUL included; each also ends with a NUL for printing. Every
 * function that can fail returns 0 or -1 and writes a one-line reason to err.
 */
#ifndef KEEL_CTL_PARSE_H
#define KEEL_CTL_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arena.h"
#include "keel.pb-c.h"

#define CTL_ERR_MAX 512

/* An argument vector whose items may contain NUL bytes. */
struct ctl_args {
    int argc;
    char **argv;
    size_t *lens;
};

enum ctl_flag_type {
    CTL_BOOL,    /* bool *: --f, --f=true|false */
    CTL_STR,     /* const char **: --f v, --f=v */
    CTL_INT64,   /* int64_t *: decimal */
    CTL_STRLIST, /* struct ctl_strlist *: repeatable */
};

struct ctl_strlist {
    const char **items;
    size_t n;
    size_t cap;
};

struct ctl_flag {
    const char *name; /* long name without "--" */
    char shorthand;   /* single-dash letter, or 0 */
    enum ctl_flag_type type;
    void *ptr;
    bool seen;
};

/*
 * Parse in: flags (from the NULL-name-terminated table, anywhere in the vector, "--" ends them)
 * and positional arguments, which are appended to *pos (allocated in a). An unknown flag is an
 * error. A name in the table twice is the first entry's: keelctl lists a command's flags before
 * the global ones (member add --zone is the new member's zone, not the client's).
 */
int ctl_flags_parse(struct ctl_flag *flags, const struct ctl_args *in, struct keel_arena *a,
                    struct ctl_args *pos, char *err);

/* Split a line the way etcdctl's argify does: "double-quoted" (Go escapes), 'single-quoted'
 * (raw) or bare words separated by white space. */
int ctl_argify(const char *line, struct keel_arena *a, struct ctl_args *out, char *err);

/* Unquote one Go string literal ("..." with escapes, or `raw`) at *p, advancing *p past it. */
int ctl_unquote(const char **p, struct keel_arena *a, char **out, size_t *len, char *err);

/* etcdctl's compare line: TARGET("key") OP "value" with TARGET one of ver/version, c/create,
 * m/mod, val/value, lease (hex) and OP one of = != < >. */
int ctl_parse_compare(const char *line, struct keel_arena *a, Keel__Compare **out, char *err);

/* An op line: put/get/del with the same arguments and flags as the top-level commands. */
int ctl_parse_op(const char *line, struct keel_arena *a, Keel__RequestOp **out, char *err);

/* Read a txn from in, etcdctl style: compare lines, a blank line, success ops, a blank line,
 * failure ops (a blank line or end of input ends each part). With interactive, print etcdctl's
 * prompts to prompt_out. */
int ctl_txn_read(FILE *in, bool interactive, FILE *prompt_out, struct keel_arena *a,
                 Keel__TxnRequest *txn, char *err);

/* Append to a txn (arrays grow in the arena). */
int ctl_txn_add_compare(struct keel_arena *a, Keel__TxnRequest *txn, Keel__Compare *cmp);
int ctl_txn_add_op(struct keel_arena *a, Keel__TxnRequest *txn, bool success, Keel__RequestOp *op);

/* Flags of get, put and del, shared by the commands and txn op lines. */
struct ctl_get_flags {
    bool prefix, from_key, keys_only, count_only, print_value_only;
    int64_t rev, limit;
    const char *consistency, *order, *sort_by;
};
struct ctl_put_flags {
    const char *lease;
    bool prev_kv, ignore_value, ignore_lease;
};
struct ctl_del_flags {
    bool prefix, from_key, prev_kv;
};

/* Flags of watch (etcdctl's, without -i; count is keelctl's: exit after that many events). */
struct ctl_watch_flags {
    bool prefix, prev_kv, progress_notify;
    int64_t rev, count;
};

/* Flag tables pointing into the structs above (NULL-name-terminated, at most 16 entries). */
void ctl_get_flag_table(struct ctl_get_flags *g, struct ctl_flag *t);
void ctl_put_flag_table(struct ctl_put_flags *p, struct ctl_flag *t);
void ctl_del_flag_table(struct ctl_del_flags *d, struct ctl_flag *t);
void ctl_watch_flag_table(struct ctl_watch_flags *w, struct ctl_flag *t);

/* Requests from positional arguments and flags, with etcdctl's rules and messages. For put,
 * pos must hold the key and (unless ignore_value) the value. */
int ctl_build_get(const struct ctl_get_flags *g, const struct ctl_args *pos, struct keel_arena *a,
                  Keel__RangeRequest **out, char *err);
int ctl_build_put(const struct ctl_put_flags *p, const struct ctl_args *pos, struct keel_arena *a,
                  Keel__PutRequest **out, char *err);
int ctl_build_del(const struct ctl_del_flags *d, const struct ctl_args *pos, struct keel_arena *a,
                  Keel__DeleteRangeRequest **out, char *err);

/* The WatchCreateRequest of `watch KEY [RANGE_END]` (key, range_end, start_revision, prev_kv,
 * progress_notify) with etcdctl's rules and messages. */
int ctl_build_watch(const struct ctl_watch_flags *w, const struct ctl_args *pos,
                    struct keel_arena *a, Keel__WatchCreateRequest **out, char *err);

/* "5", "5s", "500ms", "1m30s", "1.5s" to milliseconds (a bare number is seconds). */
int ctl_parse_duration_ms(const char *s, uint64_t *ms);

/* Go's time.Duration formatting ("1.926835ms", "2.5s", "850µs"). */
void ctl_format_duration(uint64_t ns, char *out, size_t len);

/* go-humanize's Bytes ("25 kB", "1.2 MB"). */
void ctl_format_bytes(uint64_t n, char *out, size_t len);

/* Standard base64 with padding; out needs 4 * ((n + 2) / 3) + 1 bytes. */
void ctl_base64(const uint8_t *in, size_t n, char *out);

#endif
