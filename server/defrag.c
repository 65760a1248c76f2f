/* Online defragmentation (see defrag.h). */
#include "defrag.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "err.h"
#include "log.h"

/* The copy counts as caught up with less than READY_BYTES handed over and not applied, and
 * less than SYNC_BYTES applied since its last sync: what the last step (writes wait for it)
 * still has to apply and sync. */
#define READY_BYTES (64u << 10)
#define SYNC_BYTES  (1u << 20)

struct entry {
    struct entry *next;
    uint64_t index;
    size_t len;
    uint8_t data[];
};

struct keel_defrag {
    struct keel_store *s;
    void (*wake)(void *data);
    void *wake_data;
    pthread_t thread;
    int fd;                  /* the copy's file, until the thread opens it as a store */
    struct keel_store *copy; /* thread */

    pthread_mutex_t mu;
    pthread_cond_t cond;       /* entries handed over, or finishing */
    struct entry *head, *tail; /* under mu */
    size_t backlog;            /* under mu: bytes handed over, not yet applied */
    bool opened;               /* under mu: the copy is a store, taking entries */
    size_t unsynced;           /* under mu: bytes applied to the copy since its last sync */
    bool synced;               /* under mu: the copy was synced at least once */
    bool finishing;            /* under mu: no more entries; apply the rest and end */
    bool stop;                 /* under mu: give up */
    int err;                   /* under mu */
    char msg[160];             /* under mu */
};

static void fail_locked(struct keel_defrag *d, int err, const char *msg)
{
    if (d->err == 0) {
        d->err = err;
        snprintf(d->msg, sizeof(d->msg), "%s", msg);
    }
}

/* Apply a run of entries to the copy, in one write. */
static int apply_run(struct keel_store *copy, struct entry *run)
{
    struct keel_store_write *w;
    int err = keel_store_write_begin(copy, &w);
    if (err != 0)
        return err;
    struct keel_arena a;
    keel_arena_init(&a, 0);
    for (struct entry *e = run; e != NULL && err == 0; e = e->next) {
        Keel__CommandBatch *cb = (Keel__CommandBatch *)protobuf_c_message_unpack(
            &keel__command_batch__descriptor, keel_arena_pb(&a), e->len, e->data);
        struct keel_apply_result *res =
            cb ? keel_arena_alloc(&a, (cb->n_commands + 1) * sizeof(*res)) : NULL;
        if (cb == NULL || res == NULL)
            err = cb == NULL ? KEEL_ECORRUPT : KEEL_ENOMEM;
        else
            err = keel_store_write_apply_entry(
                w, e->index, (const Keel__Command *const *)cb->commands, cb->n_commands, &a, res);
        keel_arena_reset(&a);
    }
    keel_arena_close(&a);
    if (err != 0) {
        keel_store_write_abort(w);
        return err;
    }
    return keel_store_write_commit(w);
}

/*
 * The compacted copy, written past the page cache where the filesystem allows. Buffered, the
 * whole copy sat dirty in memory until the first sync flushed it at once, and the raft log's
 * appends queued behind that flush (a put waited 1.6 s while a 2.2 GB copy was synced); direct,
 * it goes to the disk a buffer at a time as it is made, between the appends. LMDB writes its
 * compacted copy from page-aligned buffers in whole pages; should a write still be refused, the
 * copy is made again through the page cache.
 */
static int copy_store(struct keel_defrag *d)
{
    int fl = fcntl(d->fd, F_GETFL);
    bool direct = fl >= 0 && fcntl(d->fd, F_SETFL, fl | O_DIRECT) == 0;
    int err = keel_store_snapshot(d->s, d->fd, true);
    if (direct) {
        if (fcntl(d->fd, F_SETFL, fl) != 0 && err == 0)
            err = KEEL_EIO;
        if (err != 0 && ftruncate(d->fd, 0) == 0 && lseek(d->fd, 0, SEEK_SET) == 0) {
            KLOG_WARN("defragmentation: the direct copy failed (%s): copying again buffered",
                      keel_strerror(err));
            err = keel_store_snapshot(d->s, d->fd, true);
        }
    }
    return err;
}

static void *defrag_main(void *arg)
{
    struct keel_defrag *d = arg;
    int err = copy_store(d);
    if (err == 0) {
        err = keel_store_defrag_open(d->s, d->fd, &d->copy); /* takes the descriptor */
        d->fd = -1;
    }
    pthread_mutex_lock(&d->mu);
    if (err != 0)
        fail_locked(d, err, "the compacted copy could not be made");
    d->opened = err == 0;
    for (;;) {
        pthread_mutex_unlock(&d->mu);
        d->wake(d->wake_data);
        pthread_mutex_lock(&d->mu);
        if (d->head == NULL && (!d->synced || d->unsynced >= SYNC_BYTES) && !d->finishing &&
            !d->stop && d->err == 0) {
            /* Caught up: sync the copy's pages now, while writes go on, so that the last step
             * syncs only what came since. */
            size_t at = d->unsynced;
            pthread_mutex_unlock(&d->mu);
            err = keel_store_sync(d->copy);
            pthread_mutex_lock(&d->mu);
            if (err != 0)
                fail_locked(d, err, "syncing the copy failed");
            d->synced = true;
            d->unsynced -= at;
            continue;
        }
        while (d->head == NULL && !d->finishing && !d->stop && d->err == 0)
            pthread_cond_wait(&d->cond, &d->mu);
        if (d->stop || d->err != 0 || (d->head == NULL && d->finishing))
            break;
        struct entry *run = d->head;
        size_t bytes = d->backlog;
        d->head = d->tail = NULL;
        pthread_mutex_unlock(&d->mu);
        err = apply_run(d->copy, run);
        while (run != NULL) {
            struct entry *next = run->next;
            free(run);
            run = next;
        }
        pthread_mutex_lock(&d->mu);
        d->backlog -= bytes;
        d->unsynced += bytes;
        if (err != 0)
            fail_locked(d, err, "applying the writes made meanwhile to the copy failed");
    }
    pthread_mutex_unlock(&d->mu);
    d->wake(d->wake_data);
    return NULL;
}

int keel_defrag_start(struct keel_store *s, void (*wake)(void *data), void *data,
                      struct keel_defrag **out)
{
    struct keel_defrag *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return KEEL_ENOMEM;
    d->s = s;
    d->wake = wake;
    d->wake_data = data;
    int err = keel_store_restore_begin(s, &d->fd);
    if (err != 0) {
        free(d);
        return err;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cond, NULL);
    if (pthread_create(&d->thread, NULL, defrag_main, d) != 0) {
        keel_store_restore_abort(s, d->fd);
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cond);
        free(d);
        return KEEL_ENOMEM;
    }
    *out = d;
    return 0;
}

void keel_defrag_feed(struct keel_defrag *d, uint64_t index, const void *payload, size_t len)
{
    pthread_mutex_lock(&d->mu);
    if (d->err == 0 && d->backlog + len > KEEL_DEFRAG_BACKLOG_MAX)
        fail_locked(d, KEEL_ETOOMANYREQUESTS,
                    "writes came faster than the copy could take them (backlog past 256 MiB)");
    struct entry *e = d->err == 0 ? malloc(sizeof(*e) + len) : NULL;
    if (d->err == 0 && e == NULL)
        fail_locked(d, KEEL_ENOMEM, "out of memory for the writes made meanwhile");
    if (e != NULL) {
        e->next = NULL;
        e->index = index;
        e->len = len;
        memcpy(e->data, payload, len);
        if (d->tail)
            d->tail->next = e;
        else
            d->head = e;
        d->tail = e;
        d->backlog += len;
    }
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->mu);
}

enum keel_defrag_state keel_defrag_state(struct keel_defrag *d)
{
    pthread_mutex_lock(&d->mu);
    enum keel_defrag_state st = d->err != 0 ? KEEL_DEFRAG_FAILED
                                : d->synced && d->backlog < READY_BYTES && d->unsynced < SYNC_BYTES
                                    ? KEEL_DEFRAG_READY
                                    : KEEL_DEFRAG_COPYING;
    pthread_mutex_unlock(&d->mu);
    return st;
}

int keel_defrag_finish(struct keel_defrag *d, uint64_t applied, bool give_up, char *msg,
                       size_t msglen)
{
    pthread_mutex_lock(&d->mu);
    bool swap = !give_up && d->err == 0 && d->opened;
    if (swap)
        d->finishing = true; /* the thread applies what is left, then ends */
    else
        d->stop = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    int err = d->err;
    if (err == 0 && !swap)
        err = KEEL_ECANCELED;
    if (err == 0) {
        err = keel_store_defrag_swap(d->s, d->copy, applied);
        d->copy = NULL;
        if (err != 0)
            snprintf(d->msg, sizeof(d->msg), "the caught-up copy could not replace the store");
    }
    if (err != 0) {
        snprintf(msg, msglen, "%s", d->msg[0] ? d->msg : "defragmentation abandoned");
        if (d->copy != NULL || d->fd >= 0)
            keel_store_defrag_abort(d->s, d->copy);
        if (d->fd >= 0)
            close(d->fd);
    }
    while (d->head != NULL) {
        struct entry *next = d->head->next;
        free(d->head);
        d->head = next;
    }
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cond);
    free(d);
    return err;
}
