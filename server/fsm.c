/*
 * The state machine and the storage writer (see fsm.h). Two sides share a mutex:
 *  - the loop (keel_fsm_apply / _snapshot / _restore, called by node.c; on_async) queues jobs
 *    and takes finished batches;
 *  - the writer thread (writer_main) takes up to MAX_JOBS_PER_TX jobs or MAX_BYTES_PER_TX
 *    bytes at a time, applies them in the open LMDB write, publishes them to readers, delivers
 *    one batch, and commits when the write is due.
 * A FETCH or SYNC job first publishes and commits what came before it, so the order of state
 * changes is the order of the jobs. A store failure at apply aborts the member (fatal): it
 * replays its log.
 */
#include "fsm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "defrag.h"
#include "fetch.h"
#include "log.h"

#define TOKEN_MAGIC      0x4e454b4f544c454bull /* "KELTOKEN" */
#define TOKEN_FORMAT     1
#define MAX_JOBS_PER_TX  4096
#define MAX_BYTES_PER_TX (8u << 20) /* bounds a batch's memory when the writer falls behind */
#define SYNC_WAIT_MS     60000      /* a snapshot waits this long for the writer, on raft's pool */
#define FETCH_TIMEOUT    10000

enum job_kind { JOB_APPLY, JOB_FETCH, JOB_SYNC, JOB_DEFRAG };

/* A defragmentation asked for (JOB_DEFRAG's), and its outcome for the loop. */
struct defrag_req {
    struct defrag_req *next;
    keel_fsm_defrag_cb cb;
    void *data;
    int err;
    char msg[200];
    uint64_t before, after; /* the store file's bytes */
};

struct job {
    struct job *next;
    enum job_kind kind;
    uint64_t index;            /* APPLY: entry index; FETCH: token index; SYNC: sequence number */
    struct defrag_req *defrag; /* DEFRAG */
    size_t len;
    uint8_t data[];
};

struct keel_fsm {
    struct keel_fsm_options o;
    struct keel_fsm_progress progress; /* loop */
    char bind_host[64]; /* o.bind_host points here: the caller's string may not outlive new */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;                          /* jobs queued, leader known, stopping */
    pthread_cond_t sync_cond;                     /* a SYNC finished */
    struct job *head, *tail;                      /* under mu */
    struct keel_fsm_batch *done_head, *done_tail; /* under mu */
    uint64_t sync_seq;                            /* under mu: last SYNC requested */
    uint64_t sync_done;                           /* under mu: last SYNC finished */
    char leader[KEEL_ADDR_MAX];                   /* peer address; under mu */
    int stopping;                                 /* under mu */
    int thread_running;
    /* Online defragmentation (defrag.h): the one under way and who asked for it (writer). */
    struct keel_defrag *dg;
    struct defrag_req *dg_req;
    bool dg_wake;                   /* under mu: the defragmentation's state changed */
    struct defrag_req *defrag_done; /* under mu: outcomes for the loop */
    uint64_t gap_from;          /* writer: token index of a fetch abandoned at shutdown (0: none) */
    uint64_t gap_dropped;       /* writer: entries dropped above gap_from */
    uint64_t fetch_pending;     /* loop: token index of a fetch not yet reported done (0: none) */
    struct keel_store_write *w; /* writer: the open write, published but not yet committed */
    uint64_t w_began;           /* writer: when w began (monotonic ms) */
    int mark_fd;                /* the mark file (-1: none) */
    uint64_t commit_ms;         /* commit w this long after it began ... */
    size_t commit_bytes;        /* ... or once its overlay holds this much */

    uv_async_t async;
    void (*stop_cb)(void *data);
    void *stop_data;
    /* Checkpoint fetches (keel_fsm_fetches): the writer counts, the loop reads (relaxed). */
    _Atomic uint64_t fetch_ok, fetch_failed;
    struct keel_histo fetch_seconds;
};

static void enqueue(struct keel_fsm *f, struct job *j)
{
    pthread_mutex_lock(&f->mu);
    j->next = NULL;
    if (f->tail)
        f->tail->next = j;
    else
        f->head = j;
    f->tail = j;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

/* ---- writer thread ---- */

static struct keel_fsm_batch *batch_new(void)
{
    struct keel_fsm_batch *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        KLOG_ERROR("storage writer: out of memory");
        abort();
    }
    keel_arena_init(&b->arena, 0);
    return b;
}

static void batch_free(struct keel_fsm_batch *b)
{
    keel_arena_close(&b->arena);
    free(b);
}

static void fatal(const char *what, int err)
{
    /* The store could not take a committed entry: stopping is the only safe answer. The
     * node replays from its raft log on restart; carrying on would let replicas diverge. */
    KLOG_ERROR("storage writer: %s: %s; aborting", what, keel_strerror(err));
    abort();
}

static struct keel_fsm_result *batch_reserve(struct keel_fsm_batch *b, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n)
            cap *= 2;
        struct keel_fsm_result *nr = keel_arena_alloc(&b->arena, cap * sizeof(*nr));
        if (nr == NULL)
            fatal("result array", KEEL_ENOMEM);
        if (b->n)
            memcpy(nr, b->results, b->n * sizeof(*nr));
        b->results = nr;
        b->cap = cap;
    }
    return &b->results[b->n];
}

static void apply_job(struct keel_store_write *w, struct keel_fsm_batch *b, struct job *j)
{
    Keel__CommandBatch *cb = (Keel__CommandBatch *)protobuf_c_message_unpack(
        &keel__command_batch__descriptor, keel_arena_pb(&b->arena), j->len, j->data);
    if (cb == NULL)
        fatal("a committed entry does not decode", KEEL_ECORRUPT);
    struct keel_apply_result *tmp =
        keel_arena_alloc(&b->arena, (cb->n_commands + 1) * sizeof(*tmp));
    if (tmp == NULL)
        fatal("results", KEEL_ENOMEM);
    int err = keel_store_write_apply_entry(w, j->index, (const Keel__Command *const *)cb->commands,
                                           cb->n_commands, &b->arena, tmp);
    if (err != 0)
        fatal("apply", err);
    struct keel_fsm_result *res = batch_reserve(b, cb->n_commands);
    for (size_t i = 0; i < cb->n_commands; i++) {
        res[i].index = j->index;
        res[i].origin = cb->commands[i]->origin;
        res[i].request_id = cb->commands[i]->request_id;
        res[i].op = cb->commands[i]->op_case;
        res[i].cmd = cb->commands[i];
        res[i].r = tmp[i];
    }
    b->n += cb->n_commands;
    b->entry_bytes += j->len;
}

static void publish(struct keel_fsm *f, struct keel_fsm_batch *b)
{
    struct keel_store_stat st;
    keel_store_stat(f->o.store, &st);
    b->applied_index = st.applied_index;
    pthread_mutex_lock(&f->mu);
    b->next = NULL;
    if (f->done_tail)
        f->done_tail->next = b;
    else
        f->done_head = b;
    f->done_tail = b;
    pthread_mutex_unlock(&f->mu);
    uv_async_send(&f->async);
}

/* Bring the store up to token_index from the leader's checkpoints. 1: a checkpoint was
 * restored; 0: the store was there already; -1: abandoned because the fsm is stopping. */
static int do_fetch(struct keel_fsm *f, uint64_t token_index)
{
    int restored = 0;
    for (;;) {
        struct keel_store_stat st;
        keel_store_stat(f->o.store, &st);
        if (st.applied_index >= token_index)
            return restored;
        char leader[KEEL_ADDR_MAX];
        pthread_mutex_lock(&f->mu);
        while (f->leader[0] == '\0' && !f->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&f->cond, &f->mu, &ts);
        }
        int stopping = f->stopping;
        snprintf(leader, sizeof(leader), "%s", f->leader);
        pthread_mutex_unlock(&f->mu);
        if (stopping) {
            KLOG_WARN("checkpoint fetch abandoned: stopping");
            return -1;
        }
        KLOG_INFO("state at index %llu is behind the snapshot at %llu: fetching a checkpoint "
                  "from %s",
                  (unsigned long long)st.applied_index, (unsigned long long)token_index, leader);
        /* Straight into place beside the store: one copy, on the data dir's disk. The copy
         * must reach the token and never go below what this store has applied. */
        int fd = -1;
        char err[512] = "";
        uint64_t began = keel_histo_now_ns();
        int rv = keel_store_restore_begin(f->o.store, &fd);
        if (rv != 0)
            snprintf(err, sizeof(err), "staging: %s", keel_strerror(rv));
        if (rv == 0) {
            /* From the leader's peer port, as a member (fetch.h): no auth token, so a member
             * added while auth is on, whose store holds no auth state yet, is served too. */
            struct keel_handshake as =
                f->o.fetch_as != NULL
                    ? *f->o.fetch_as
                    : (struct keel_handshake){.peer = "", .client = "", .name = "", .zone = ""};
            as.cluster_id = *f->o.cluster_id;
            rv = keel_fetch_checkpoint(leader, f->o.bind_host, f->o.fetch_tls, &as, fd,
                                       FETCH_TIMEOUT, err, sizeof(err));
            if (rv != 0)
                keel_store_restore_abort(f->o.store, fd);
        }
        if (rv == 0) {
            uint64_t min = token_index > st.applied_index ? token_index : st.applied_index;
            rv = keel_store_restore_finish(f->o.store, fd, min);
            if (rv != 0)
                snprintf(err, sizeof(err), "restore: %s", keel_strerror(rv));
        }
        keel_histo_observe_ns(&f->fetch_seconds, keel_histo_now_ns() - began);
        atomic_fetch_add_explicit(rv == 0 ? &f->fetch_ok : &f->fetch_failed, 1,
                                  memory_order_relaxed);
        if (rv == 0) {
            keel_store_stat(f->o.store, &st);
            KLOG_INFO("checkpoint restored: applied index %llu, revision %lld",
                      (unsigned long long)st.applied_index, (long long)st.revision);
            restored = 1;
            continue; /* loop re-checks the index */
        }
        KLOG_WARN("checkpoint fetch from %s failed: %s; retrying", leader, err);
        struct timespec pause = {0, 200 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Note the highest index readers may see, before they see it. Not synced: it is for a process
 * that was killed (the page cache keeps the write), so that after a restart it does not answer
 * a serializable read from a state older than one it has shown. After an OS crash the note may
 * be older than what was shown, as the state may be.
 */
static void note_mark(struct keel_fsm *f, uint64_t index)
{
    uint8_t b[8];
    keel_put_le64(b, index);
    if (f->mark_fd >= 0 && pwrite(f->mark_fd, b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        KLOG_WARN("cannot note the published index in the mark file: %s", strerror(errno));
        close(f->mark_fd);
        f->mark_fd = -1;
    }
}

/* The open write's commit: sync everything applied since the last one to LMDB. */
static void commit(struct keel_fsm *f)
{
    uint64_t t0 = now_ms(), t0_ns = keel_histo_now_ns();
    size_t bytes = keel_store_write_pending_bytes(f->w);
    /* Tests that crash a member while a commit is under way wait for this line. */
    KLOG_DEBUG("store commit begins at index %llu",
               (unsigned long long)keel_store_write_applied_index(f->w));
    int err = keel_store_write_commit(f->w);
    f->w = NULL;
    if (err != 0)
        fatal("commit", err);
    if (f->o.commit_seconds != NULL)
        keel_histo_observe_ns(f->o.commit_seconds, keel_histo_now_ns() - t0_ns);
    KLOG_DEBUG("store commit: %zu bytes in the overlay, %llu ms", bytes,
               (unsigned long long)(now_ms() - t0));
}

/* The time the writer spent applying b's entries (apply_job, summed): recorded, and logged when
 * over --warn-apply-duration. */
static void apply_timed(struct keel_fsm *f, const struct keel_fsm_batch *b, uint64_t ns,
                        uint64_t first, uint64_t last)
{
    if (f->o.apply_seconds != NULL)
        keel_histo_observe_ns(f->o.apply_seconds, ns);
    if (f->o.warn_apply_us != 0 && ns >= (uint64_t)f->o.warn_apply_us * 1000u)
        KLOG_WARN("apply request took too long: %.3f ms for entries %llu..%llu (%zu commands), "
                  "over --warn-apply-duration %.3f ms",
                  (double)ns / 1e6, (unsigned long long)first, (unsigned long long)last, b->n,
                  (double)f->o.warn_apply_us / 1e3);
}

/* Publish the batch applied in the open write: readers see it, then its results go out. */
static void deliver(struct keel_fsm *f, struct keel_fsm_batch *b)
{
    note_mark(f, keel_store_write_applied_index(f->w)); /* before a reader can see it */
    int err = keel_store_write_publish(f->w);
    if (err != 0)
        fatal("publish", err);
    publish(f, b);
    if (keel_store_write_pending_bytes(f->w) >= f->commit_bytes ||
        now_ms() - f->w_began >= f->commit_ms)
        commit(f);
}

/* ---- online defragmentation (defrag.h), driven from the writer ---- */

static void defrag_wake(void *data)
{
    struct keel_fsm *f = data;
    pthread_mutex_lock(&f->mu);
    f->dg_wake = true;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

/* Hand a defragmentation's outcome to the loop. */
static void defrag_report(struct keel_fsm *f, struct defrag_req *r)
{
    pthread_mutex_lock(&f->mu);
    r->next = f->defrag_done;
    f->defrag_done = r;
    pthread_mutex_unlock(&f->mu);
    uv_async_send(&f->async);
}

static void defrag_begin(struct keel_fsm *f, struct defrag_req *r)
{
    struct keel_store_stat st;
    keel_store_stat(f->o.store, &st);
    r->before = st.db_size;
    if (f->dg != NULL) {
        r->err = KEEL_ETOOMANYREQUESTS;
        snprintf(r->msg, sizeof(r->msg), "a defragmentation is already running on this member");
        defrag_report(f, r);
        return;
    }
    /* The copy starts from the committed store: everything applied so far is in it. */
    if (f->w != NULL)
        commit(f);
    int err = keel_defrag_start(f->o.store, defrag_wake, f, &f->dg);
    if (err != 0) {
        r->err = err;
        snprintf(r->msg, sizeof(r->msg), "the defragmentation could not start");
        defrag_report(f, r);
        return;
    }
    f->dg_req = r;
    KLOG_INFO("defragmentation: copying the store (%llu bytes) while it keeps serving",
              (unsigned long long)st.db_size);
}

/* End the one under way: swapped in when done (force: given up either way). */
static void defrag_end(struct keel_fsm *f, bool force)
{
    struct defrag_req *r = f->dg_req;
    if (f->w != NULL)
        commit(f); /* the live store committed: the copy takes the last entries, then the swap */
    struct keel_store_stat st;
    keel_store_stat(f->o.store, &st);
    uint64_t t0 = now_ms();
    r->err = keel_defrag_finish(f->dg, st.applied_index, force, r->msg, sizeof(r->msg));
    if (force)
        snprintf(r->msg, sizeof(r->msg),
                 "defragmentation abandoned: the member is stopping or restoring a checkpoint");
    f->dg = NULL;
    f->dg_req = NULL;
    keel_store_stat(f->o.store, &st);
    r->after = st.db_size;
    if (r->err == 0)
        KLOG_INFO("defragmentation: the store file went from %llu to %llu bytes (writes waited "
                  "%llu ms for the last step)",
                  (unsigned long long)r->before, (unsigned long long)r->after,
                  (unsigned long long)(now_ms() - t0));
    else
        KLOG_WARN("defragmentation failed: %s", r->msg);
    defrag_report(f, r);
}

/* Between jobs: end the defragmentation once its copy caught up, or failed. */
static void defrag_poll(struct keel_fsm *f)
{
    if (f->dg != NULL && keel_defrag_state(f->dg) != KEEL_DEFRAG_COPYING)
        defrag_end(f, false);
}

static void *writer_main(void *arg)
{
    struct keel_fsm *f = arg;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        /* With a write open, wait no longer than its commit is due. */
        while (f->head == NULL && !f->stopping && f->w == NULL && !f->dg_wake)
            pthread_cond_wait(&f->cond, &f->mu);
        if (f->dg_wake) {
            f->dg_wake = false;
            pthread_mutex_unlock(&f->mu);
            defrag_poll(f);
            pthread_mutex_lock(&f->mu);
        }
        if (f->head == NULL && !f->stopping && f->w != NULL) {
            uint64_t due = f->w_began + f->commit_ms, now = now_ms();
            if (due > now) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                uint64_t ns = (uint64_t)ts.tv_nsec + (due - now) * 1000000ull;
                ts.tv_sec += (time_t)(ns / 1000000000ull);
                ts.tv_nsec = (long)(ns % 1000000000ull);
                pthread_cond_timedwait(&f->cond, &f->mu, &ts);
            }
        }
        if (f->head == NULL) {
            int stopping = f->stopping;
            pthread_mutex_unlock(&f->mu);
            if (stopping && f->dg != NULL)
                defrag_end(f, true);
            if (f->w != NULL && (stopping || now_ms() - f->w_began >= f->commit_ms))
                commit(f); /* idle, or stopping: what is applied goes to disk */
            if (stopping)
                break;
            continue;
        }
        /* Take what is queued, up to a bound: one batch of results for all of it. */
        struct job *jobs = f->head;
        struct job *last = jobs;
        size_t bytes = jobs->len;
        for (int n = 1; n < MAX_JOBS_PER_TX && last->next != NULL &&
                        bytes + last->next->len <= MAX_BYTES_PER_TX;
             n++) {
            last = last->next;
            bytes += last->len;
        }
        f->head = last->next;
        if (f->head == NULL)
            f->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&f->mu);

        struct keel_fsm_batch *b = NULL;
        uint64_t apply_ns = 0, first = 0, last_index = 0; /* b's apply time and entries */
        while (jobs != NULL) {
            struct job *j = jobs;
            jobs = j->next;
            if (j->kind == JOB_APPLY && f->gap_from != 0 && j->index > f->gap_from) {
                /* The store is behind an abandoned checkpoint: applying this would jump the
                 * gap. Only happens while stopping; the log keeps the entry for next time. */
                if (f->gap_dropped++ == 0)
                    KLOG_WARN("entries from %llu on dropped: the store waits for a checkpoint at "
                              "%llu",
                              (unsigned long long)j->index, (unsigned long long)f->gap_from);
            } else if (j->kind == JOB_APPLY) {
                if (f->w == NULL) {
                    int err = keel_store_write_begin(f->o.store, &f->w);
                    if (err != 0)
                        fatal("begin", err);
                    f->w_began = now_ms();
                }
                if (b == NULL) {
                    b = batch_new();
                    apply_ns = 0;
                    first = j->index;
                }
                uint64_t t0 = keel_histo_now_ns();
                apply_job(f->w, b, j);
                apply_ns += keel_histo_now_ns() - t0;
                last_index = j->index;
                if (f->dg != NULL)
                    keel_defrag_feed(f->dg, j->index, j->data, j->len);
            } else if (j->kind == JOB_DEFRAG) {
                if (b != NULL) {
                    apply_timed(f, b, apply_ns, first, last_index);
                    deliver(f, b);
                    b = NULL;
                }
                defrag_begin(f, j->defrag);
            } else {
                /* Fetch and sync see everything before them published and committed. */
                if (b != NULL) {
                    apply_timed(f, b, apply_ns, first, last_index);
                    deliver(f, b);
                    b = NULL;
                }
                if (f->w != NULL)
                    commit(f);
                if (j->kind == JOB_FETCH && f->dg != NULL)
                    defrag_end(f, true); /* the store is about to be replaced whole */
                if (j->kind == JOB_FETCH) {
                    int got = do_fetch(f, j->index);
                    if (got < 0 && j->index > f->gap_from)
                        f->gap_from = j->index;
                    struct keel_fsm_batch *nb = batch_new(); /* the new applied index */
                    nb->restored = got > 0;
                    publish(f, nb);
                } else {
                    int err = keel_store_sync(f->o.store);
                    if (err != 0)
                        fatal("sync", err);
                    pthread_mutex_lock(&f->mu);
                    f->sync_done = j->index;
                    pthread_cond_broadcast(&f->sync_cond);
                    pthread_mutex_unlock(&f->mu);
                }
            }
            free(j);
        }
        if (b != NULL) {
            apply_timed(f, b, apply_ns, first, last_index);
            deliver(f, b);
        }
        defrag_poll(f);
    }
    return NULL;
}

/* ---- loop side ---- */

static void on_async(uv_async_t *a)
{
    struct keel_fsm *f = a->data;
    pthread_mutex_lock(&f->mu);
    struct keel_fsm_batch *b = f->done_head;
    f->done_head = f->done_tail = NULL;
    struct defrag_req *dr = f->defrag_done;
    f->defrag_done = NULL;
    pthread_mutex_unlock(&f->mu);
    while (dr != NULL) {
        struct defrag_req *next = dr->next;
        dr->cb(dr->data, dr->err, dr->err ? dr->msg : NULL, dr->before, dr->after);
        free(dr);
        dr = next;
    }
    while (b != NULL) {
        struct keel_fsm_batch *next = b->next;
        if (b->applied_index > f->progress.committed)
            f->progress.committed = b->applied_index;
        if (f->fetch_pending != 0 && b->applied_index >= f->fetch_pending)
            f->fetch_pending = 0;
        f->progress.backlog_bytes -= b->entry_bytes;
        f->o.done(f->o.data, b);
        batch_free(b);
        b = next;
    }
}

void keel_fsm_apply(struct keel_fsm *f, uint64_t index, const void *payload, size_t len)
{
    struct job *j = malloc(sizeof(*j) + len);
    if (j == NULL)
        fatal("queue an entry", KEEL_ENOMEM);
    j->kind = JOB_APPLY;
    j->index = index;
    j->len = len;
    memcpy(j->data, payload, len);
    f->progress.queued = index;
    f->progress.backlog_bytes += len;
    enqueue(f, j);
}

int keel_fsm_sync_begin(struct keel_fsm *f, uint64_t *ticket)
{
    if (f->fetch_pending != 0) {
        /* The store waits for a checkpoint: it cannot promise any index yet. */
        KLOG_DEBUG("sync refused: a checkpoint at %llu is on its way",
                   (unsigned long long)f->fetch_pending);
        return KEEL_EUNAVAILABLE;
    }
    struct job *j = malloc(sizeof(*j));
    if (j == NULL)
        return KEEL_ENOMEM;
    /* The sync is queued behind every entry queued so far, so once it is done the store holds
     * them all on disk; nothing here waits for it. */
    pthread_mutex_lock(&f->mu);
    uint64_t seq = ++f->sync_seq;
    pthread_mutex_unlock(&f->mu);
    j->kind = JOB_SYNC;
    j->index = seq;
    j->len = 0;
    enqueue(f, j);
    *ticket = seq;
    return 0;
}

int keel_fsm_defrag(struct keel_fsm *f, keel_fsm_defrag_cb cb, void *data)
{
    struct defrag_req *r = calloc(1, sizeof(*r));
    struct job *j = malloc(sizeof(*j));
    if (r == NULL || j == NULL) {
        free(r);
        free(j);
        return KEEL_ENOMEM;
    }
    r->cb = cb;
    r->data = data;
    j->kind = JOB_DEFRAG;
    j->index = 0;
    j->len = 0;
    j->defrag = r;
    enqueue(f, j);
    return 0;
}

int keel_fsm_snapshot_begin(struct keel_fsm *f, uint8_t token[KEEL_FSM_TOKEN_LEN], uint64_t *ticket)
{
    int err = keel_fsm_sync_begin(f, ticket);
    if (err != 0)
        return err;
    uint64_t index = f->progress.queued;
    keel_put_le64(token, TOKEN_MAGIC);
    keel_put_le64(token + 8, TOKEN_FORMAT);
    keel_put_le64(token + 16, index);
    keel_put_le64(token + 24, *f->o.cluster_id);
    KLOG_DEBUG("snapshot token at index %llu", (unsigned long long)index);
    return 0;
}

int keel_fsm_snapshot_wait(struct keel_fsm *f, uint64_t ticket)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += SYNC_WAIT_MS / 1000;
    pthread_mutex_lock(&f->mu);
    int rc = 0;
    while (f->sync_done < ticket && !f->stopping && rc == 0)
        rc = pthread_cond_timedwait(&f->sync_cond, &f->mu, &deadline);
    int ok = f->sync_done >= ticket;
    pthread_mutex_unlock(&f->mu);
    if (!ok) {
        KLOG_WARN("snapshot dropped: the storage writer did not sync in time");
        return KEEL_EUNAVAILABLE;
    }
    return 0;
}

int keel_fsm_restore(struct keel_fsm *f, const void *token, size_t len)
{
    const uint8_t *t = token;
    if (len != KEEL_FSM_TOKEN_LEN || keel_get_le64(t) != TOKEN_MAGIC ||
        keel_get_le64(t + 8) != TOKEN_FORMAT || keel_get_le64(t + 24) != *f->o.cluster_id) {
        KLOG_ERROR("raft snapshot is not a keel token of this cluster");
        return KEEL_ECORRUPT;
    }
    uint64_t index = keel_get_le64(t + 16);
    struct keel_store_stat st;
    keel_store_stat(f->o.store, &st);
    if (index > f->progress.queued)
        f->progress.queued = index;
    if (index <= st.applied_index)
        return 0; /* the normal restart: the store is already there */
    struct job *j = malloc(sizeof(*j));
    if (j == NULL)
        return KEEL_ENOMEM;
    j->kind = JOB_FETCH;
    j->index = index;
    j->len = 0;
    if (index > f->fetch_pending)
        f->fetch_pending = index;
    enqueue(f, j);
    return 0;
}

int keel_fsm_new(const struct keel_fsm_options *o, struct keel_fsm **out)
{
    struct keel_fsm *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return KEEL_ENOMEM;
    f->o = *o;
    if (o->bind_host != NULL) {
        snprintf(f->bind_host, sizeof(f->bind_host), "%s", o->bind_host);
        f->o.bind_host = f->bind_host;
    }
    f->commit_ms = o->commit_interval_ms ? o->commit_interval_ms : KEEL_FSM_COMMIT_MS;
    f->commit_bytes = o->commit_bytes ? o->commit_bytes : KEEL_FSM_COMMIT_BYTES;
    struct keel_store_stat st;
    keel_store_stat(o->store, &st);
    f->progress.queued = f->progress.committed = st.applied_index;
    f->mark_fd = -1;
    if (o->mark_path != NULL) {
        f->mark_fd = open(o->mark_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        uint8_t b[8];
        if (f->mark_fd < 0) {
            KLOG_WARN("cannot open the mark file %s: %s", o->mark_path, strerror(errno));
        } else if (pread(f->mark_fd, b, sizeof(b), 0) == (ssize_t)sizeof(b) &&
                   keel_get_le64(b) > st.applied_index) {
            f->progress.shown_before = keel_get_le64(b);
            KLOG_INFO("the store restarts at index %llu; before the restart readers saw %llu: "
                      "serializable reads wait until it is back there",
                      (unsigned long long)st.applied_index,
                      (unsigned long long)f->progress.shown_before);
        }
    }
    keel_histo_init_exp(&f->fetch_seconds, 0.1, 2, 14); /* etcd's snapshot receive layout */
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cond, NULL);
    pthread_cond_init(&f->sync_cond, NULL);
    uv_async_init(o->loop, &f->async, on_async);
    f->async.data = f;
    if (pthread_create(&f->thread, NULL, writer_main, f) != 0) {
        uv_close((uv_handle_t *)&f->async, NULL);
        return KEEL_ENOMEM;
    }
    f->thread_running = 1;
    *out = f;
    return 0;
}

const struct keel_fsm_progress *keel_fsm_progress(const struct keel_fsm *f)
{
    return &f->progress;
}

void keel_fsm_fetches(const struct keel_fsm *f, uint64_t *ok, uint64_t *failed,
                      const struct keel_histo **seconds)
{
    *ok = atomic_load_explicit(&f->fetch_ok, memory_order_relaxed);
    *failed = atomic_load_explicit(&f->fetch_failed, memory_order_relaxed);
    *seconds = &f->fetch_seconds;
}

void keel_fsm_set_leader(struct keel_fsm *f, const char *peer_addr)
{
    pthread_mutex_lock(&f->mu);
    snprintf(f->leader, sizeof(f->leader), "%s", peer_addr ? peer_addr : "");
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

static void async_closed(uv_handle_t *h)
{
    struct keel_fsm *f = h->data;
    if (f->stop_cb)
        f->stop_cb(f->stop_data);
}

void keel_fsm_stop(struct keel_fsm *f, void (*cb)(void *data), void *data)
{
    pthread_mutex_lock(&f->mu);
    f->stopping = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_cond_broadcast(&f->sync_cond);
    pthread_mutex_unlock(&f->mu);
    if (f->thread_running) {
        pthread_join(f->thread, NULL);
        f->thread_running = 0;
    }
    on_async(&f->async); /* deliver what the writer finished last */
    f->stop_cb = cb;
    f->stop_data = data;
    uv_close((uv_handle_t *)&f->async, async_closed);
}

void keel_fsm_free(struct keel_fsm *f)
{
    if (f == NULL)
        return;
    keel_store_write_abort(f->w); /* only when the writer never stopped: stop commits it */
    struct job *j = f->head;
    while (j) {
        struct job *next = j->next;
        free(j->kind == JOB_DEFRAG ? (void *)j->defrag : NULL);
        free(j);
        j = next;
    }
    if (f->mark_fd >= 0)
        close(f->mark_fd);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cond);
    pthread_cond_destroy(&f->sync_cond);
    free(f);
}
