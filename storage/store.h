/*
 * keel storage: the MVCC key space on LMDB.
 *
 * The store is what every replica's state machine applies committed commands to. It knows
 * nothing of raft or sockets: it is handed keel.proto Commands with the raft index they were
 * committed at, and it answers reads at the current or a past revision.
 *
 * Semantics are etcd v3's: a cluster-wide revision grows by one per write transaction (a Put,
 * a DeleteRange that deleted something, a Txn with at least one change, a lease revoke that
 * deleted keys); each key carries create_revision, mod_revision, version and lease.
 *
 * Layout (one LMDB environment, named databases):
 *   meta        "m" -> struct meta: applied index, revision, compacted revision, logical size
 *   revs        (revision, sub) big-endian -> record {PUT|DELETE, create, version, lease, key,
 *               value}: the full history, in revision order
 *   keys        user key -> sorted (revision, sub, tombstone) entries (DUPSORT|DUPFIXED): the
 *               last is the key's current state, the greatest <= R its state at revision R
 *   leases      lease id -> {granted TTL, checkpointed remaining ms}
 *   lease_keys  lease id -> attached user keys (DUPSORT)
 *   members     member id -> packed Member (name, client address, zone)
 *   auth        "u" user name -> packed AuthUser; "r" role name -> packed AuthRole; "k" -> the
 *               token-signing key. The auth flag and revision are in meta.
 *
 * Determinism: applying the same commands to the same state yields the same state and the same
 * results on every replica. Nothing in apply reads a clock, a random source or local
 * configuration: even the quota is cluster state, set through the log (QuotaRequest). It is
 * checked against a logical size kept in meta, not against LMDB's page use, which differs
 * between replicas.
 *
 * Idempotence: the applied index is written in the same LMDB transaction as the data, and a
 * command whose index is <= the applied index is skipped. Replaying a log after a crash is safe.
 *
 * Threads: one thread at a time may hold a write (keel_store_write_*); any number of threads may
 * read concurrently with it. Reads see what the write has published (keel_store_write_publish),
 * committed or not: LMDB's snapshot merged with the overlay of what the open write applied.
 * keel_store_restore excludes readers for the time of the swap. Memory returned by reads and
 * applies lives in the caller's arena.
 */
#ifndef KEEL_STORE_H
#define KEEL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "err.h"
#include "keel.pb-c.h"

#define KEEL_MAX_KEY_BYTES 511 /* LMDB's key limit: one key must fit a B-tree node */

struct keel_store;
struct keel_store_write;

struct keel_store_options {
    const char *path;     /* environment directory; created when missing */
    uint64_t quota_bytes; /* the quota this member expects, for sizing the map only; 0: 2 GiB.
                           * Writes are checked against the cluster's quota (QuotaRequest). */
    uint64_t map_size;    /* LMDB map size; 0: 4 x quota, at least 1 GiB */
    int no_sync;          /* tests only: commits are never synced (an OS crash may corrupt) */
    /* Told what the store did on its own at open that an operator should know (a commit an OS
     * crash may have torn, dropped; an unreadable synced note). NULL: nobody listens. Called on
     * the opening thread, msg valid during the call only. */
    void (*notice)(void *data, const char *msg);
    void *notice_data;
};

/* The state readers see: everything published, committed or not. */
struct keel_store_stat {
    uint64_t applied_index;   /* raft index of the last applied command readers see */
    uint64_t durable_index;   /* raft index of the last command on disk (the last synced commit) */
    int64_t revision;         /* current revision (0: nothing written yet) */
    int64_t compact_revision; /* revisions below this are compacted away (0: none) */
    uint64_t logical_size;    /* bytes the quota is checked against */
    uint64_t quota_bytes;     /* the cluster's quota: set through the log, else 2 GiB */
    bool quota_set;           /* a QuotaRequest has set it */
    uint64_t nospace_member;  /* the NOSPACE alarm: the member that raised it (0: none) */
    uint64_t db_size;         /* bytes of the LMDB data file in use (pages x page size) */
    uint64_t keys;            /* live keys at `revision` */
};

/*
 * Keep `bytes` of disk allocated just past the data file's last page in use (fallocate with
 * FALLOC_FL_KEEP_SIZE: the file's size is unchanged, LMDB sees nothing), so that commits write
 * into space the filesystem already gave the store: a disk something else fills to the last
 * byte between two checks of the disk reserve (server/diskwatch.h) does not fail a commit,
 * which stops the member. 0 (also where the filesystem cannot preallocate: nothing is done),
 * KEEL_ENOSPACE (the disk has not that much free), KEEL_EIO.
 */
int keel_store_reserve(struct keel_store *s, uint64_t bytes);

/*
 * Open (creating when missing) the store at opts->path. Completes or discards a restore that a
 * crash interrupted. 0 and *out set, or a KEEL_E* code (KEEL_EIO with errno-level causes,
 * KEEL_ECORRUPT when the files are not a keel store).
 */
int keel_store_open(const struct keel_store_options *opts, struct keel_store **out);

/* Close the store. No write or read may be in progress. */
void keel_store_close(struct keel_store *s);

/* Wait until every commit is on disk (commits are synced in the background): afterwards the
 * durable index is the last commit's. 0 or KEEL_EIO (a sync failed; every later commit fails). */
int keel_store_sync(struct keel_store *s);

/* Copy the committed state into *st. Safe from any thread. */
void keel_store_stat(struct keel_store *s, struct keel_store_stat *st);

/* Milliseconds since the last commit, on this machine's monotonic clock; -1 when unknown
 * (nothing committed yet, or the commit was made by another boot or another machine, e.g. a
 * restored checkpoint). Read once at start and after a restore (lease countdowns), not with
 * every stat: it costs a clock read. Safe from any thread. */
int64_t keel_store_commit_age_ms(struct keel_store *s);

/* ---------------------------------------------------------------------------------------
 * Applying commands
 */

/* What applying one command did. Everything it points to lives in the arena given to apply. */
struct keel_apply_result {
    int skipped;      /* the index was <= the applied index: nothing changed, nothing below set */
    int err;          /* request-level outcome: 0 or a KEEL_E* code (NOSPACE, COMPACTED, ...) */
    const char *msg;  /* when err: what was wrong, for the client (static or arena memory) */
    int64_t revision; /* the store's revision after this command */
    /* The response body for the command's op, when err == 0: response->body_case says which.
     * The caller fills in id and header. */
    Keel__Response *response;
    /* Events of this command, in (revision, sub) order, each with prev_kv when the key had a
     * previous live version. All at `revision`. */
    Keel__Event **events;
    size_t n_events;
};

/* Begin the write transaction (one at a time). 0 or KEEL_E*. */
int keel_store_write_begin(struct keel_store *s, struct keel_store_write **out);

/*
 * Apply cmd, committed at raft index `index`, inside the write transaction. The result's memory
 * comes from arena. Returns 0 when the command was applied, skipped, or failed at request level
 * (see result->err); a negative code only for a failure of the store itself (KEEL_EMAPFULL,
 * KEEL_EIO, KEEL_ENOMEM), after which the write must be aborted.
 */
int keel_store_write_apply(struct keel_store_write *w, uint64_t index, const Keel__Command *cmd,
                           struct keel_arena *arena, struct keel_apply_result *result);

/*
 * Apply the n commands of one raft entry, committed at `index`, in order: the entry is skipped
 * as a whole when index <= the applied index (results[i].skipped set). results has n elements.
 * Returns like keel_store_write_apply.
 */
int keel_store_write_apply_entry(struct keel_store_write *w, uint64_t index,
                                 const Keel__Command *const *cmds, size_t n,
                                 struct keel_arena *arena, struct keel_apply_result *results);

/* The applied index as seen inside the write (including what it applied so far). */
uint64_t keel_store_write_applied_index(const struct keel_store_write *w);

/*
 * Make everything applied since the last publish visible to every read (range, history,
 * leases, members, stat) without committing it: it is kept in memory, in the overlay, until
 * the commit. This is what lets a write be answered before LMDB reaches the disk: the raft log
 * holds it durably, and a crash replays it. 0 or KEEL_ENOMEM (the write must then be aborted).
 */
int keel_store_write_publish(struct keel_store_write *w);

/* Bytes of memory the overlay holds for this write (published or not): the commit trigger. */
size_t keel_store_write_pending_bytes(const struct keel_store_write *w);

/* Commit everything applied since begin and free w; the overlay empties. The commit waits for
 * the previous commit's sync, then writes without one: a background thread syncs it (see
 * keel_store_sync, durable_index). A killed process loses nothing committed; after an OS crash
 * the store may reopen at the commit before it, whose index the caller's log must still hold.
 * 0 or KEEL_E* (w is freed either way; on failure readers go back to the last commit). */
int keel_store_write_commit(struct keel_store_write *w);

/* Discard everything applied since begin, published or not, and free w. */
void keel_store_write_abort(struct keel_store_write *w);

/* begin + apply + commit of one command. */
int keel_store_apply(struct keel_store *s, uint64_t index, const Keel__Command *cmd,
                     struct keel_arena *arena, struct keel_apply_result *result);

/* ---------------------------------------------------------------------------------------
 * Validation shared by the server's intake and apply
 */

struct keel_limits {
    size_t max_txn_ops;       /* etcd's --max-txn-ops: compares, and operations of each branch, at
                               * every level of a txn; 0: 128 */
    size_t max_value_bytes;   /* 0: no limit beyond the request size */
    size_t max_txn_total_ops; /* compares and operations of all the levels of a txn together
                               * (a nested txn counts as one besides its own); 0: 8 x
                               * max_txn_ops. Bounds the work of one txn whatever its nesting. */
};

/*
 * Check a write against the limits before it is proposed: keys present and <= 511 bytes,
 * range ends valid, txn sizes and nesting, no key written twice in one txn branch. Takes
 * O(n log n) for n operations. 0, or a KEEL_E* code (KEEL_ENOMEM included) with *msg naming
 * what was wrong: a static string, or one in a per-thread buffer that lasts until this thread
 * validates again.
 */
int keel_store_validate(const Keel__Command *cmd, const struct keel_limits *limits,
                        const char **msg);

/* ---------------------------------------------------------------------------------------
 * Reads
 */

/*
 * Serve a RangeRequest from the committed state: at req->revision (<= 0: current). *out and its
 * key-values live in arena; *revision gets the store's current revision. 0, KEEL_ECOMPACTED,
 * KEEL_EFUTUREREV, KEEL_EINVAL, KEEL_EKEYTOOLONG, or a store failure.
 */
int keel_store_range(struct keel_store *s, const Keel__RangeRequest *req, struct keel_arena *arena,
                     Keel__RangeResponse **out, int64_t *revision);

/* Where a range read in pages stands (keel_store_range_page). Zero it before the first page. */
struct keel_range_pager {
    bool started;
    bool done;        /* the last page has been read */
    bool more;        /* a key-value passed the filters beyond the limit */
    int64_t revision; /* every page reads at this one: the request's, or the store's current
                       * revision when the first page was read */
    int64_t count;    /* keys of the range counted so far */
    int64_t total;    /* the range's count when the store knew it at the first page, else -1 */
    int64_t taken;    /* key-values returned so far */
    size_t next_len;  /* the key the next page starts at (0: the range's first) */
    uint8_t next[KEEL_MAX_KEY_BYTES];
};

/* Whether req can be read in pages: ranges in ascending key order (filters allowed). Others are
 * sorted in memory: keel_store_range, bounded by KEEL_MAX_REPLY_BYTES. */
bool keel_store_range_pageable(const Keel__RangeRequest *req);

/*
 * The next page of a range in key order, from where pager stands: the key-values that follow, in
 * at most page_bytes of reply (a page holds at least one; never more than KEEL_MAX_REPLY_BYTES),
 * after looking at most scan_keys keys (a page may hold none: the range is counted on). Every
 * page reads at pager->revision, from a fresh read snapshot, so no read transaction outlives a
 * call. *out lives in arena: its kvs are this page's, count the keys counted so far (the range's
 * count on the last page), more is set on the last page only, partial on every page but the
 * last (pager->done). *revision gets the revision for the reply header: pager->revision for a
 * read at the current revision, else the store's current one. 0, KEEL_ECOMPACTED (also when the
 * pager's revision was compacted between two pages), KEEL_EFUTUREREV, KEEL_EINVAL (not
 * pageable, already done, scan_keys 0), KEEL_EKEYTOOLONG, or a store failure.
 */
int keel_store_range_page(struct keel_store *s, const Keel__RangeRequest *req,
                          struct keel_range_pager *pager, size_t page_bytes, size_t scan_keys,
                          struct keel_arena *arena, Keel__RangeResponse **out, int64_t *revision);

/* One bounded piece of history. */
struct keel_history {
    Keel__Event **events; /* in (revision, sub) order, each with prev_kv when there was one */
    size_t n_events;
    int64_t next_revision; /* continue from here; > `revision` when done */
    int64_t revision;      /* the store's current revision when this chunk was read */
};

/*
 * Events of keys in [key, range_end) (etcd range conventions; range_end NULL or empty: key only)
 * from start_revision up to the current revision. Stops at the first revision boundary after
 * max_events events (a single revision is never split), so a chunk may hold more than
 * max_events; it also stops at a revision boundary after scanning 64 x max_events records of
 * other keys, so a chunk may hold fewer, even none: continue from next_revision. 0, KEEL_ECOMPACTED
 * when start_revision < the compacted revision, or KEEL_E*.
 */
int keel_store_history(struct keel_store *s, const uint8_t *key, size_t key_len,
                       const uint8_t *range_end, size_t range_end_len, int64_t start_revision,
                       size_t max_events, struct keel_arena *arena, struct keel_history *out);

/* The longest lease TTL in seconds (etcd's MaxLeaseTTL). */
#define KEEL_LEASE_MAX_TTL 9000000000LL

/* A lease as stored. */
struct keel_lease_info {
    int64_t id;
    int64_t ttl;           /* granted TTL in seconds */
    int64_t checkpoint_ms; /* the leader's last checkpoint of it (storage/lease.c), 0: none */
    /* Milliseconds since it was applied (by this member, or the one whose store was copied
     * here), on this machine's monotonic clock; -1 when unknown (another boot or machine, or a
     * record from before it was kept). */
    int64_t checkpoint_age_ms;
};

/* Every lease, in id order, in arena. 0 or KEEL_E*. */
int keel_store_lease_list(struct keel_store *s, struct keel_arena *arena,
                          struct keel_lease_info **leases, size_t *n);

/* One lease and its attached keys (in key order, in arena; keys may be NULL when not wanted).
 * 0, KEEL_ELEASENOTFOUND or KEEL_E*. */
int keel_store_lease_get(struct keel_store *s, int64_t id, struct keel_arena *arena,
                         struct keel_lease_info *info, ProtobufCBinaryData **keys, size_t *n_keys);

/* The member attributes applied through member_attrs commands (id order, in arena). */
int keel_store_members(struct keel_store *s, struct keel_arena *arena, Keel__Member ***members,
                       size_t *n);

/* ---------------------------------------------------------------------------------------
 * Auth state (users, roles, permissions): changed only through the log (Command auth ops),
 * so every member holds the same at the same applied index. Passwords are never stored: a
 * user carries the salted hash its intake computed.
 */

/* Bounds on the auth tables, checked at intake and at apply ("etcdserver: too many ..."): at
 * most 4096 users of 64 roles, 256 roles of 256 permissions, names of 128 bytes, hashes of
 * 127. Every member
 * keeps a copy in memory (server/auth.c): at the very worst 4096 x 8 KiB of role names plus
 * 256 x 256 x 1 KiB of permission keys, under 100 MiB; a few hundred KiB in any real use. */
#define KEEL_AUTH_MAX_USERS          4096
#define KEEL_AUTH_MAX_ROLES          256
#define KEEL_AUTH_MAX_ROLES_PER_USER 64
#define KEEL_AUTH_MAX_PERMS_PER_ROLE 256
#define KEEL_AUTH_MAX_NAME           128
#define KEEL_AUTH_MAX_HASH           127 /* bytes of a stored password hash (pbkdf2: 112) */
#define KEEL_AUTH_KEY_BYTES          32  /* the token-signing key */

struct keel_store_auth {
    bool enabled;
    uint64_t revision;       /* bumped by every auth change applied */
    ProtobufCBinaryData key; /* the token-signing key; empty until auth was first enabled */
    Keel__AuthUser **users;  /* in name order */
    size_t n_users;
    Keel__AuthRole **roles; /* in name order */
    size_t n_roles;
};

/* The whole auth state readers see, from one read, in arena. 0 or KEEL_E*. */
int keel_store_auth_read(struct keel_store *s, struct keel_arena *arena,
                         struct keel_store_auth *out);

/* The auth revision and flag readers see, without a read (cheap: a mutex). */
void keel_store_auth_revision(struct keel_store *s, uint64_t *revision, bool *enabled);

/* ---------------------------------------------------------------------------------------
 * Snapshots
 */

/*
 * Write a copy of the committed state to fd (a file, a pipe or a socket), from one read
 * transaction held until the copy is written. compact: the live pages only, renumbered (what
 * defrag wants; it walks the trees, several times slower); else LMDB's plain copy, page for page
 * with the free ones, written straight from the map. Either restores. 0 or KEEL_E*.
 */
int keel_store_snapshot(struct keel_store *s, int fd, bool compact);

/*
 * Replace the whole state with a copy written by keel_store_snapshot, read from fd to its end.
 * The copy is written beside the store ("<path>.incoming", under the data dir, never /tmp),
 * synced with its directory entry, checked, and swapped in by rename, so a crash at any point
 * leaves either the old or the new state. s stays valid and keeps its old state on any
 * failure. Waits for reads to finish; no write may be in progress. 0, KEEL_ECORRUPT when the
 * copy would not open as a keel store, KEEL_ESTALE when its applied index is below min_index
 * (a copy older than the state it replaces would move revisions backwards), or KEEL_E*.
 */
int keel_store_restore(struct keel_store *s, int fd, uint64_t min_index);

/*
 * The same in steps, for a copy that arrives in pieces (a checkpoint fetch writes each chunk
 * straight into place, with no second copy): _begin gives a descriptor to write the copy to;
 * then _finish(fd, min_index) syncs, checks and swaps as keel_store_restore does, or _abort
 * discards it. Both take fd over. 0 or KEEL_E*.
 */
int keel_store_restore_begin(struct keel_store *s, int *fd);
int keel_store_restore_finish(struct keel_store *s, int fd, uint64_t min_index);
void keel_store_restore_abort(struct keel_store *s, int fd);

/*
 * Online defragmentation, in steps the storage writer drives (fsm.c): keel_store_restore_begin
 * gives the descriptor a compacted copy is written to (keel_store_snapshot, from any thread,
 * while the store goes on); keel_store_defrag_open takes fd over and opens that copy as a store
 * of its own, *copy, into which the caller applies every entry the live store applied after
 * the copy's point (the same commands at the same indexes give the same state); once *copy
 * has caught up with the live store and neither is being written, keel_store_defrag_swap syncs
 * and closes *copy, checks it (its applied index must be at least min_index) and swaps it in as
 * keel_store_restore does (readers wait for the swap only). _abort closes and discards it.
 * 0 or KEEL_E*; on failure the store keeps its state.
 */
int keel_store_defrag_open(struct keel_store *s, int fd, struct keel_store **copy);
int keel_store_defrag_swap(struct keel_store *s, struct keel_store *copy, uint64_t min_index);
void keel_store_defrag_abort(struct keel_store *s, struct keel_store *copy);

/* What a snapshot copy holds (keel_store_inspect). */
struct keel_store_info {
    uint64_t applied_index;   /* raft index of the last command in it (its cluster's log) */
    int64_t revision;         /* its current revision */
    int64_t compact_revision; /* revisions below this were compacted away */
    uint64_t logical_size;    /* bytes the quota counts */
    uint64_t keys;            /* live keys */
    uint64_t revisions;       /* records of history (every version of every key kept) */
    uint64_t leases;          /* leases granted and not revoked */
};

/*
 * Read what the copy in file holds: a file written by keel_store_snapshot, possibly followed by
 * more bytes (keelctl's snapshot trailer), opened read-only without a lock file; nothing is
 * written. 0, KEEL_ENOTFOUND, KEEL_ECORRUPT (not a keel store) or KEEL_E*.
 */
int keel_store_inspect(const char *file, struct keel_store_info *info);

/*
 * Make the store in dir (a copy just put there, open nowhere) the first state of a new cluster,
 * as a restore from a snapshot wants: applied index 0 (every entry of the new cluster's raft log
 * applies), the old cluster's member attributes dropped, its commit clock forgotten (lease
 * countdowns start again from their checkpointed remaining TTL). Revisions, keys, history and
 * leases stay. Synced when it returns. map_size: at least the file's size (0: 1 GiB).
 * 0, KEEL_ENOTFOUND, KEEL_ECORRUPT or KEEL_E*.
 */
int keel_store_rebase(const char *dir, uint64_t map_size);

#endif
