/*
 * Internals of the store, shared by its files. Not part of the public interface.
 *
 * File map, from the bottom up: each file calls only files listed above it.
 *   codec.c     on-disk encodings; LMDB codes to KEEL_E*
 *   overlay.c   what the open write applied since the last commit, published to readers
 *   durable.c   commits reach the disk in the background: the syncer, the synced note, and the
 *               recovery at open of a commit an OS crash may have torn
 *   env.c       the environment: open, close, the meta record, the crash-safe swap of a restore
 *               (finished at open when a crash interrupted it)
 *   txn.c       read and write transactions and their cursors
 *   read.c      a key's state at a revision; Range
 *   history.c   event scans, for watch catch-up
 *   lease.c     leases and their attached keys
 *   compact.c   compaction
 *   auth.c      users, roles and the auth flags: applying auth changes, reading the tables
 *   validate.c  checks of a command, at intake and again at apply
 *   mvcc.c      applying one command: put, delete, txn, lease grant and revoke, compaction
 *   write.c     the write path: begin, apply in log order, commit
 *   snapshot.c  a copy of the environment out; restore: receive and check a copy, then swap
 *
 * Names: the public interface is keel_store_*; every other name a file of the store shares
 * carries ks_ (keel store), as libkeel's internals carry kc_, so none can collide with LMDB's
 * (mdb_*), libkeel's public keel_* or anything else a program links. Output parameters come
 * last, encoders' buffers included, as in LMDB's own calls.
 */
#ifndef KEEL_STORE_INTERNAL_H
#define KEEL_STORE_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <lmdb.h>

#include "bytes.h"
#include "frame.h"
#include "store.h"

#define STORE_FORMAT 1

/* The meta record, written once per write transaction. Native byte order: an LMDB file is not
 * portable between architectures anyway. */
struct meta {
    uint64_t format;
    uint64_t applied_index;
    int64_t revision;
    int64_t compact_revision;
    uint64_t logical_size;
    int64_t next_lease_id;
    uint64_t quota; /* the cluster's quota, set through the log; 0: not set (KS_DEFAULT_QUOTA) */
    /* When this commit was made, on the committing machine's monotonic clock (ms) and the boot
     * it belongs to: local facts, not replicated state. A restarted member learns how long it
     * has been since it last applied anything (lease countdowns, server/lessor.h). */
    uint64_t clock_boot;
    uint64_t clock_ms;
    /* The NOSPACE alarm: the member that raised it (0: none). Cluster state, through the log. */
    uint64_t nospace_member;
    /* Keys alive at `revision` (KS_LIVE_UNKNOWN in a store made before it was kept, until it is
     * opened: then counted once). A range over every key at the current revision takes its
     * count from here instead of walking all the keys (read.c). */
    uint64_t live_keys;
    /* Auth (storage/auth.c), cluster state through the log: bumped by every auth change, and
     * whether auth is enabled (0/1). */
    uint64_t auth_revision;
    uint64_t auth_enabled;
};

/* A store made before the quota was cluster state: meta without its last fields. */
#define KS_META_V1_SIZE offsetof(struct meta, quota)
/* ... and before commits carried their clock. */
#define KS_META_V2_SIZE offsetof(struct meta, clock_boot)
/* ... and before the NOSPACE alarm. */
#define KS_META_V3_SIZE offsetof(struct meta, nospace_member)
/* ... and before live_keys. */
#define KS_META_V4_SIZE offsetof(struct meta, live_keys)
/* ... and before auth: such a store opens with auth disabled at auth revision 0, and its auth
 * table is created empty at open. (A keeld from before auth refuses a store written by this
 * one, as any older keeld refuses a longer meta: ECORRUPT, nothing changed.) */
#define KS_META_V5_SIZE offsetof(struct meta, auth_revision)
#define KS_LIVE_UNKNOWN UINT64_MAX

/* A key came to life (+1) or died (-1) in the working meta m. */
static inline void ks_live_add(struct meta *m, int d)
{
    if (m->live_keys != KS_LIVE_UNKNOWN)
        m->live_keys += (uint64_t)(int64_t)d;
}

/* This boot's identity (a hash of the kernel's boot id; 0 when unknown) and the monotonic
 * clock in ms, as meta's clock fields hold them. */
uint64_t ks_clock_boot(void);
uint64_t ks_clock_ms(void);
/* Milliseconds since the moment (boot, at) those two read, or -1 when it is not of this boot
 * (or unknown: boot 0) and so cannot be compared with this clock. */
int64_t ks_clock_age_ms(uint64_t boot, uint64_t at);
#define KS_DEFAULT_QUOTA (2ull << 30)

/* The quota writes are checked against: cluster state, the same on every replica. */
static inline uint64_t ks_quota(const struct meta *m)
{
    return m->quota ? m->quota : KS_DEFAULT_QUOTA;
}

/* The background sync of commits (durable.c). */
struct ks_durable {
    pthread_t thread;
    bool running, inited;
    pthread_mutex_t mu;
    pthread_cond_t cond;    /* a sync requested, done, or stop */
    bool pending, busy;     /* under mu: a commit waits for its sync; the syncer is at work */
    bool stop;              /* under mu */
    uint64_t want_txnid;    /* under mu: the pending commit's LMDB transaction id ... */
    uint64_t want_index;    /* ... and applied index */
    uint64_t durable_index; /* under mu: the applied index of the last synced commit */
    int err;                /* under mu: a failed sync or note; sticky, every later commit fails */
    int note_fd;            /* the synced note of the current environment (-1: none) */
};

struct keel_store {
    char *path;
    MDB_env *env;
    MDB_dbi dbi_meta, dbi_revs, dbi_keys, dbi_leases, dbi_lease_keys, dbi_members, dbi_auth;
    uint64_t quota;
    uint64_t map_size;
    int no_sync;
    /* Readers hold it shared for the life of a read transaction; restore holds it exclusive
     * while it swaps the environment. */
    pthread_rwlock_t swap_lock;
    /* Readers hold it shared for the life of a read; the writer holds it exclusive to publish
     * into the overlay and to replace it after a commit. Taken after swap_lock. */
    pthread_rwlock_t ov_lock;
    struct ks_overlay *ov; /* under ov_lock; changed by the writer only */
    pthread_mutex_t stat_lock;
    struct meta committed; /* under stat_lock: what LMDB holds on disk */
    struct meta visible;   /* under stat_lock: what readers see (committed + overlay) */
    struct ks_durable dur;
    void (*notice)(void *data, const char *msg); /* keel_store_options.notice */
    void *notice_data;
};

/* One LMDB transaction (read or write) with its cursors, opened lazily. */
struct tctx {
    struct keel_store *s;
    MDB_txn *txn;
    MDB_cursor *keys;
    MDB_cursor *revs;
    MDB_cursor *aux; /* a second keys cursor for lookups during a keys scan */
    /* A revs cursor for the records a scan's keys point to, opened on first use: a lookup
     * near the previous one (keys written in order) stays in its leaf, where mdb_get would
     * search from the root every time (most of a big range's time). */
    MDB_cursor *recs;
    /* A read: the overlay merged with this snapshot (NULL: LMDB alone). A write: the overlay
     * its changes are noted in for readers (NULL: none). */
    const struct ks_overlay *ov;
    struct ks_overlay *note;
};

struct keel_store_write {
    struct tctx t;
    struct meta m; /* working copy, stored at commit */
};

/* ---- codec.c: on-disk encodings ---- */

/* revs key: revision and sub, big-endian, so LMDB's byte order is revision order. */
#define REVKEY_LEN 12
/* keys dup entry: revkey then a tombstone flag byte. */
#define KEYREV_LEN 13

enum rec_type { REC_PUT = 0, REC_DELETE = 1 };

struct revkey {
    int64_t rev;
    uint32_t sub;
};

struct keyrev {
    int64_t rev;
    uint32_t sub;
    bool tombstone;
};

/* A record of revs, decoded in place (key and value point into LMDB memory). */
struct record {
    enum rec_type type;
    int64_t create_revision;
    int64_t version;
    int64_t lease;
    MDB_val key;
    MDB_val value;
};

#define RECORD_HEADER 32

void ks_revkey_encode(int64_t rev, uint32_t sub, uint8_t out[REVKEY_LEN]);
struct revkey ks_revkey_decode(const MDB_val *v);
void ks_keyrev_encode(int64_t rev, uint32_t sub, bool tombstone, uint8_t out[KEYREV_LEN]);
struct keyrev ks_keyrev_decode(const MDB_val *v);
/* Bytes of the encoded record. */
size_t ks_record_size(size_t key_len, size_t value_len);
void ks_record_encode(const struct record *r, uint8_t *out);
/* 0 or KEEL_ECORRUPT. */
int ks_record_decode(const MDB_val *v, struct record *r);

/* LMDB code to KEEL_E*. */
int ks_mdb_err(int rc);
/* Byte order of LMDB's default comparison: memcmp, then the shorter first. */
int ks_val_cmp(const MDB_val *a, const MDB_val *b);

/* ---- overlay.c (see there) ---- */
struct ks_overlay;
struct ov_key;

/* A history record applied since the last commit. */
struct ov_rec {
    struct revkey rk;
    bool tombstone;
    struct record rec;    /* key and value in the overlay's memory */
    struct ov_rec *older; /* the key's previous record in the overlay (NULL: none) */
};

/* A change to a small table, as the LMDB call that made it. */
enum ov_table { OV_LEASES, OV_LEASE_KEYS, OV_MEMBERS, OV_AUTH };
enum ov_kind {
    OV_PUT,    /* put key -> data (a duplicate for lease_keys) */
    OV_DEL,    /* delete key, every duplicate of it */
    OV_DEL_DUP /* delete the duplicate data of key */
};
struct ov_op {
    enum ov_table table;
    enum ov_kind kind;
    MDB_val key, data;
};

/* An empty overlay on top of the committed state m. 0 or KEEL_ENOMEM. */
int ks_overlay_new(const struct meta *m, struct ks_overlay **out);
void ks_overlay_free(struct ks_overlay *ov);
uint64_t ks_overlay_base(const struct ks_overlay *ov);
const struct meta *ks_overlay_meta(const struct ks_overlay *ov);
/* Make readers ignore ov (its base matches no snapshot): when its replacement failed. */
void ks_overlay_invalidate(struct ks_overlay *ov);
/* Memory held, and records noted (published or not): the writer's commit bounds. */
size_t ks_overlay_bytes(const struct ks_overlay *ov);
size_t ks_overlay_records(const struct ks_overlay *ov);
/* Writer: note a change (copied), invisible until published. 0 or KEEL_ENOMEM. */
int ks_overlay_note_record(struct ks_overlay *ov, int64_t rev, uint32_t sub, bool tombstone,
                           const struct record *r);
int ks_overlay_note_op(struct ks_overlay *ov, enum ov_table table, enum ov_kind kind,
                       const MDB_val *key, const MDB_val *data);
/* Writer, ov_lock exclusive: make the notes visible, with meta m. 0 or KEEL_ENOMEM. */
int ks_overlay_publish(struct ks_overlay *ov, const struct meta *m);
/* Readers, ov_lock shared. The node of key (NULL: none); the first node >= key (key NULL or
 * empty: the first); the next node; a node's key; its newest record at or below rev (rev <= 0:
 * its newest; NULL: every record of it is newer). */
const struct ov_key *ks_overlay_find(const struct ks_overlay *ov, const MDB_val *key);
const struct ov_key *ks_overlay_seek(const struct ks_overlay *ov, const MDB_val *key);
const struct ov_key *ks_overlay_next(const struct ov_key *k);
const MDB_val *ks_overlay_key(const struct ov_key *k);
const struct ov_rec *ks_overlay_at(const struct ov_key *k, int64_t rev);
/* Records by position in (revision, sub) order: the first at or above rev; the i-th (NULL past
 * the end). */
size_t ks_overlay_first_rec(const struct ks_overlay *ov, int64_t rev);
const struct ov_rec *ks_overlay_rec(const struct ks_overlay *ov, size_t i);
/* Small-table changes in apply order. */
size_t ks_overlay_n_ops(const struct ks_overlay *ov);
const struct ov_op *ks_overlay_op(const struct ks_overlay *ov, size_t i);

/* ---- durable.c ---- */
#define KS_NOTE_LEN 32
/* The synced note's bytes for LMDB transaction txnid synced in boot (tests write notes). */
void ks_note_encode(uint64_t txnid, uint64_t boot, uint8_t out[KS_NOTE_LEN]);
/* The transaction ids of the two meta pages of dir/data.mdb: 0, KEEL_ENOTFOUND (no file),
 * KEEL_EIO, or KEEL_ECORRUPT (not LMDB's data format 1). */
int ks_durable_metas(const char *dir, uint64_t txnid[2]);
/* Before LMDB opens dir: when the note was written in another boot than `boot` and the newest
 * meta page is newer than the note, clear that meta's transaction id so that LMDB opens the one
 * before it, and set *dropped to the dropped id (else 0). 0, KEEL_EIO, KEEL_ENOMEM, or
 * KEEL_ECORRUPT (both metas newer than the note; nothing changed). Tells s->notice. */
int ks_durable_recover(struct keel_store *s, const char *dir, uint64_t boot, uint64_t *dropped);
/* Start the syncer (at open, before the environment). 0 or KEEL_ENOMEM. */
int ks_durable_init(struct keel_store *s);
/* A new environment is the store's (open, swap): sync it, note its newest commit in
 * s->path's note, and make applied_index the durable index. 0 or KEEL_EIO. */
int ks_durable_adopt(struct keel_store *s, uint64_t applied_index);
/* Wait until every requested sync is done: 0, or the sticky error of a failed one. */
int ks_durable_wait(struct keel_store *s);
/* Sync the commit of LMDB transaction txnid (applied index applied_index) in the background. */
void ks_durable_request(struct keel_store *s, uint64_t txnid, uint64_t applied_index);
uint64_t ks_durable_index(struct keel_store *s);
/* Finish the pending sync, stop the syncer, close the note. */
void ks_durable_close(struct keel_store *s);

/* ---- env.c ---- */
int ks_env_open(struct keel_store *s);
void ks_env_close(struct keel_store *s);
/* Finish or discard a swap interrupted by a crash (before the environment is opened). */
int ks_env_recover(const char *path);
/* Open the copy at dir read-only, every database as the store opens it: 0 with its applied
 * index, or KEEL_ECORRUPT when it would not open as a store. */
int ks_env_check(const char *dir, uint64_t *applied_index);
/* Swap in the ready copy ("<path>.ready"): opened first, then moved into place with readers
 * excluded. On failure the old environment stays the store's. 0 or KEEL_E*. */
int ks_env_swap(struct keel_store *s);

int ks_meta_load(MDB_txn *txn, MDB_dbi dbi, struct meta *m);
int ks_meta_store(MDB_txn *txn, MDB_dbi dbi, const struct meta *m);
/* Make m the committed state (on disk, and visible to readers). */
void ks_meta_publish(struct keel_store *s, const struct meta *m);
/* Make m the state readers see, ahead of the committed one (the overlay's). */
void ks_meta_publish_visible(struct keel_store *s, const struct meta *m);
/* Replace the overlay by an empty one on top of the committed state m (after a commit, an
 * abort, a swap): takes ov_lock exclusive. 0 or KEEL_ENOMEM (the old overlay then stays, and
 * readers ignore it once LMDB has moved past its base). */
int ks_overlay_reset(struct keel_store *s, const struct meta *m);

/* The files a restore moves through, beside the store's directory. */
struct ks_swap_paths {
    char *incoming; /* being received */
    char *ready;    /* complete and synced: the swap may begin */
    char *old;      /* the replaced state, removed once the swap is done */
};
/* 0 or KEEL_ENOMEM. */
int ks_swap_paths_init(struct ks_swap_paths *p, const char *path);
void ks_swap_paths_close(struct ks_swap_paths *p);
/* Remove a file or a directory tree; a missing one is fine. 0 or KEEL_EIO. */
int ks_rm_tree(const char *path);
/* fsync the directory holding path, so renames in it are durable. 0 or KEEL_E*. */
int ks_sync_parent(const char *path);

/* ---- txn.c ---- */
int ks_tctx_begin(struct keel_store *s, MDB_txn *parent, unsigned flags, struct tctx *t);
/* Open the cursors of t (idempotent). */
int ks_tctx_cursors(struct tctx *t);
void ks_tctx_close_cursors(struct tctx *t);

/* Begin a read: takes the swap lock shared and a read transaction; *m gets its meta. */
int ks_read_begin(struct keel_store *s, struct tctx *t, struct meta *m);
void ks_read_end(struct tctx *t);

/* ---- read.c ---- */

/* A key's state at a revision. */
struct kstate {
    bool exists;       /* a live version at that revision */
    struct keyrev at;  /* the entry found (valid when found) */
    bool found;        /* any entry <= revision, tombstone or not */
    struct record rec; /* when exists */
};

/* State of key at revision rev (0: latest) in t. 0 or KEEL_E*. */
int ks_key_state(struct tctx *t, MDB_cursor *keys, const MDB_val *key, int64_t rev,
                 struct kstate *out);

/* Fill a KeyValue in arena from a live record. keys_only leaves the value empty. */
Keel__KeyValue *ks_kv_from_record(struct keel_arena *a, const struct record *r, int64_t mod_rev,
                                  bool keys_only);

/* What the key-values of a reply cost: key and value bytes plus protobuf's field framing (a
 * KeyValue's tags, lengths and four varints take at most 48 bytes). */
#define KS_KV_OVERHEAD 48
static inline size_t ks_kv_bytes(size_t key_len, size_t value_len)
{
    return key_len + value_len + KS_KV_OVERHEAD;
}

/* Bytes of key-values a read may still build. With measure set the read builds nothing and
 * only charges what it would build: a txn's reads are priced before the txn writes. */
struct ks_budget {
    size_t left;
    bool measure;
};

/*
 * Range inside t: the shared implementation of keel_store_range and txn range ops. Every
 * key-value materialised (sorted and filtered ranges materialise all they match, before the
 * limit cuts them) is charged to budget; KEEL_EREPLYTOOLARGE as soon as it would go below 0,
 * having built at most budget->left bytes. budget NULL: no bound (a txn priced beforehand).
 * *out is set unless budget->measure.
 */
int ks_range_in(struct tctx *t, const struct meta *m, const Keel__RangeRequest *req,
                struct keel_arena *a, struct ks_budget *budget, Keel__RangeResponse **out);

/* Range membership with etcd's conventions. */
enum range_kind { RANGE_ONE, RANGE_FROM, RANGE_SPAN };
struct krange {
    enum range_kind kind;
    MDB_val key;
    MDB_val end;
};
/* 0 or KEEL_EINVAL / KEEL_EKEYTOOLONG (with *msg). */
int ks_krange_make(const ProtobufCBinaryData *key, const ProtobufCBinaryData *end, struct krange *r,
                   const char **msg);
bool ks_krange_contains(const struct krange *r, const MDB_val *k);
/* k is past every key of the range (in key order). */
bool ks_krange_past(const struct krange *r, const MDB_val *k);

/* A growable array of pointers in an arena. */
struct pvec {
    void **v;
    size_t n;
    size_t cap;
};
int ks_pvec_push(struct keel_arena *a, struct pvec *pv, void *p);

/* ---- history.c ---- */
/* The event for the revs entry at rk (record r), with prev_kv; in arena. */
int ks_event_build(struct tctx *t, struct keel_arena *a, const struct revkey *rk,
                   const struct record *r, Keel__Event **out);

/* ---- mvcc.c ---- */

/* The state of one command being applied. */
struct wctx {
    struct tctx *t;       /* the transaction written: the batch's, or a nested one for a Txn */
    struct meta *m;       /* working meta of the batch */
    struct keel_arena *a; /* the caller's arena: results and events */
    bool changed;         /* the command has taken a new revision (m->revision) */
    bool planned;         /* a txn whose request-level checks all passed before it wrote */
    bool *plan;           /* its compare outcomes, in the order its txns are reached */
    size_t plan_n, plan_pos;
    uint32_t sub; /* next sub-revision */
    struct pvec events;
    bool quota_passed; /* a write was refused for passing the quota: the NOSPACE alarm rises */
    const char *msg;   /* a request-level error's own words (static), else keel_strerror's */
};

/* Would adding add bytes pass the quota (noted in c->quota_passed), or is the NOSPACE alarm
 * raised? Either way the write adding them fails with KEEL_ENOSPACE. */
bool ks_over_quota(struct wctx *c, uint64_t add);

int ks_mvcc_apply(struct keel_store_write *w, const Keel__Command *cmd, struct keel_arena *a,
                  struct keel_apply_result *res);

/* ---- lease.c ---- */
void ks_lease_key(int64_t id, uint8_t out[8]);
int ks_lease_exists(struct tctx *t, int64_t id, bool *exists);
int ks_lease_attach(struct wctx *c, int64_t id, const MDB_val *key);
int ks_lease_detach(struct wctx *c, int64_t id, const MDB_val *key);
int ks_lease_grant(struct wctx *c, const Keel__LeaseGrantRequest *req,
                   Keel__LeaseGrantResponse **out);
/* Record the leader's remaining TTLs; leases no longer there are skipped. No revision. */
int ks_lease_checkpoint(struct wctx *c, const Keel__LeaseCheckpointRequest *req);
/* Remove the lease record and its attachment list (keys must be deleted by the caller). */
int ks_lease_drop(struct wctx *c, int64_t id);
/* Attached keys of a lease, in key order, copied into arena. */
int ks_lease_keys(struct tctx *t, int64_t id, struct keel_arena *a, ProtobufCBinaryData **keys,
                  size_t *n);

/*
 * Read every record of a small table into an arena array: each(k, v, slot) fills one element of
 * `size` bytes. LMDB's records merged with the overlay's changes to the table, from one read;
 * m (may be NULL) gets the meta of that read. (lease.c)
 */
int ks_scan_table(struct keel_store *s, MDB_dbi dbi, enum ov_table table, struct keel_arena *arena,
                  size_t size,
                  int (*each)(const MDB_val *k, const MDB_val *v, void *slot, struct keel_arena *a),
                  void **out, size_t *n, struct meta *m);

/* ---- auth.c ---- */
/* Whether cmd is an auth change (applied by ks_auth_apply). */
bool ks_auth_is_change(const Keel__Command *cmd);
/* Apply an auth change: no revision, no event; the auth revision grows by one when it changed
 * anything. Request-level errors come with *msg (etcd's words). */
int ks_auth_apply(struct wctx *c, const Keel__Command *cmd, Keel__Response *resp, const char **msg);

/* ---- compact.c ---- */
/* Compact history below rev; request-level errors as KEEL_ECOMPACTED / KEEL_EFUTUREREV. */
int ks_compact_apply(struct wctx *c, int64_t rev);

/* ---- validate.c ---- */
int ks_validate_command(const Keel__Command *cmd, const struct keel_limits *limits,
                        const char **msg);

#endif
