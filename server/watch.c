/*
 * The watch hub (see watch.h). A watcher lives in its session's list always, and either in the
 * interval tree (synced) or in the circular catch-up list (unsync), never both:
 *
 *   create --(start in the future or 0)--> synced --(session over the cap)--> catching up
 *   create --(start in history)----------> catching up --(history exhausted)--> synced
 *   cancel / compacted / session closed  --> freed
 *
 * next_rev only grows: live fan-out and history both resume from it, which is what makes
 * "each revision once, none skipped" hold across the transitions. That is also why catch-up,
 * fan-out and the requests stay in one file of about 600 lines: they are one job, the
 * transitions of a watcher, and split they would share every field of struct watcher.
 */
#include "watch.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "err.h"
#include "itree.h"
#include "log.h"
#include "u64map.h"

#define CATCHUP_EVENTS   512  /* events per history chunk */
#define CATCHUP_WATCHERS 16   /* watchers advanced per loop turn */
#define SHARED_MAX       1024 /* watchers one shared message names: ~10 KiB of ids at most */

/* One allocation per watcher, about 160 bytes when idle (its key inline): a control plane holds
 * tens of thousands of them, most of them idle. */
struct watcher {
    /* In the tree while synced. Its start and end are the watched range [start, end) at all
     * times (end NULL: every key >= start), pointing into range[] below. */
    struct keel_itree_node node;
    struct watcher *sess_next, *sess_prev;
    struct watcher *unsync_next, *unsync_prev;
    struct session_watches *sw;
    int64_t id;
    uint64_t create_id; /* the client's WatchCreate request id: events carry it */
    int64_t next_rev;   /* first revision not yet sent */
    Keel__Event **pend; /* this batch's events for it (fan-out) */
    uint32_t n_pend, cap_pend;
    bool synced;
    bool prev_kv, noput, nodelete, progress_notify;
    bool shared;     /* its client takes events shared with other watchers (shared_ids) */
    uint8_t range[]; /* the key, then the end */
};

struct session_watches {
    uint64_t session_id;
    struct watcher *head;
    size_t n;
    int64_t next_id;
    /* id -> watcher: a connection may hold max_watches of them, and a lookup that walked the
     * list made creating them quadratic (40,000 took seconds of the loop in one turn). */
    struct keel_u64map by_id;
};

struct keel_watch_hub {
    struct keel_watch_options o;
    struct keel_itree tree;
    struct keel_u64map by_session; /* session id -> struct session_watches */
    struct watcher *unsync;        /* circular list of watchers catching up */
    size_t n_unsync;
    size_t n_watchers;
    size_t n_streams;      /* sessions holding at least one watcher */
    int64_t delivered_rev; /* last revision fanned out */
    uv_idle_t idle;
    uv_timer_t retry; /* catch-up blocked by slow sessions: look again soon */
    uv_timer_t progress;
    int idle_on;
    struct keel_arena scratch;
    struct touched *touched; /* the watchers this batch has events for */
    size_t n_touched, cap_touched;
};

/* A watcher with events from the batch being fanned out, and a hash of what it is sent
 * (session, filters, events): watchers with equal ones are compared in full to share a message. */
struct touched {
    uint64_t group;
    struct watcher *w;
};

/* ---- helpers ---- */

static void send_watch(struct keel_watch_hub *h, uint64_t session, uint64_t req_id,
                       Keel__WatchResponse *wr, int64_t revision, enum keel_respond_kind kind)
{
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req_id;
    resp.body_case = KEEL__RESPONSE__BODY_WATCH;
    resp.watch = wr;
    keel_reply_send(h->o.reply, session, &resp, revision, kind);
}

static void reply_error(struct keel_watch_hub *h, uint64_t session, uint64_t req_id, int err,
                        const char *msg)
{
    keel_reply_error_at(h->o.reply, session, req_id, err, msg, h->delivered_rev);
}

/* Bytes the session has not read yet; false when it is gone. */
static bool backlog(struct keel_watch_hub *h, uint64_t session, size_t *bytes)
{
    const struct keel_responder *out = h->o.reply->out;
    return out->backlog(out->ctx, session, bytes) == 0;
}

static void catch_up_turn(uv_idle_t *idle);

static void unsync_add(struct keel_watch_hub *h, struct watcher *w)
{
    w->synced = false;
    if (h->unsync == NULL) {
        w->unsync_next = w->unsync_prev = w;
        h->unsync = w;
    } else {
        w->unsync_next = h->unsync;
        w->unsync_prev = h->unsync->unsync_prev;
        w->unsync_prev->unsync_next = w;
        h->unsync->unsync_prev = w;
    }
    h->n_unsync++;
    if (!h->idle_on) {
        uv_idle_start(&h->idle, catch_up_turn);
        h->idle_on = 1;
    }
}

static void unsync_remove(struct keel_watch_hub *h, struct watcher *w)
{
    if (w->unsync_next == w) {
        h->unsync = NULL;
    } else {
        w->unsync_prev->unsync_next = w->unsync_next;
        w->unsync_next->unsync_prev = w->unsync_prev;
        if (h->unsync == w)
            h->unsync = w->unsync_next;
    }
    w->unsync_next = w->unsync_prev = NULL;
    h->n_unsync--;
}

static void sync_add(struct keel_watch_hub *h, struct watcher *w)
{
    w->synced = true;
    keel_itree_insert(&h->tree, &w->node);
}

static void watcher_free(struct keel_watch_hub *h, struct watcher *w)
{
    if (w->synced)
        keel_itree_remove(&h->tree, &w->node);
    else
        unsync_remove(h, w);
    struct session_watches *sw = w->sw;
    if (w->sess_prev)
        w->sess_prev->sess_next = w->sess_next;
    else
        sw->head = w->sess_next;
    if (w->sess_next)
        w->sess_next->sess_prev = w->sess_prev;
    keel_u64map_del(&sw->by_id, (uint64_t)w->id);
    if (--sw->n == 0)
        h->n_streams--;
    h->n_watchers--;
    free(w->pend);
    free(w);
}

/* Events of list for w: filtered, prev_kv stripped when not asked, in the scratch arena. */
static Keel__Event **filter_events(struct keel_watch_hub *h, struct watcher *w, Keel__Event **evs,
                                   size_t n, size_t *out_n)
{
    Keel__Event **out = keel_arena_alloc(&h->scratch, (n + 1) * sizeof(*out));
    *out_n = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        Keel__Event *e = evs[i];
        if ((e->type == KEEL__EVENT__EVENT_TYPE__PUT && w->noput) ||
            (e->type == KEEL__EVENT__EVENT_TYPE__DELETE && w->nodelete))
            continue;
        if (!w->prev_kv && e->prev_kv != NULL) {
            Keel__Event *c = keel_arena_alloc(&h->scratch, sizeof(*c));
            if (c == NULL)
                return NULL;
            *c = *e;
            c->prev_kv = NULL;
            e = c;
        }
        out[(*out_n)++] = e;
    }
    return out;
}

static void send_events(struct keel_watch_hub *h, struct watcher *w, Keel__Event **evs, size_t n,
                        int64_t revision)
{
    Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
    wr.watch_id = w->id;
    wr.events = evs;
    wr.n_events = n;
    send_watch(h, w->sw->session_id, w->create_id, &wr, revision, KEEL_RESPOND_PUSH);
}

/* ---- catch-up ---- */

static void cancel_compacted(struct keel_watch_hub *h, struct watcher *w, int64_t compact_rev)
{
    Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
    wr.watch_id = w->id;
    wr.canceled = 1;
    wr.compact_revision = compact_rev;
    wr.cancel_reason = "required revision has been compacted";
    send_watch(h, w->sw->session_id, w->create_id, &wr, h->delivered_rev, KEEL_RESPOND_PUSH);
    watcher_free(h, w);
}

/* One history chunk for w. Returns false when w was freed. */
static bool catch_up(struct keel_watch_hub *h, struct watcher *w)
{
    size_t unread;
    if (!backlog(h, w->sw->session_id, &unread))
        return true;
    struct keel_history hist;
    keel_arena_reset(&h->scratch);
    const struct keel_itree_node *r = &w->node;
    int err = keel_store_history(h->o.store, r->start, r->start_len,
                                 r->end ? r->end : (uint8_t *)"", r->end ? r->end_len : 1,
                                 w->next_rev, CATCHUP_EVENTS, &h->scratch, &hist);
    if (err == KEEL_ECOMPACTED) {
        struct keel_store_stat st;
        keel_store_stat(h->o.store, &st);
        cancel_compacted(h, w, st.compact_revision);
        return false;
    }
    if (err != 0) {
        KLOG_WARN("watch %lld: history read failed: %s", (long long)w->id, keel_strerror(err));
        return true;
    }
    size_t n = 0;
    Keel__Event **evs = filter_events(h, w, hist.events, hist.n_events, &n);
    if (evs == NULL) {
        keel_arena_reset(&h->scratch);
        return true; /* no memory: the same chunk again on a later turn */
    }
    if (n > 0)
        send_events(h, w, evs, n, hist.revision);
    w->next_rev = hist.next_revision;
    if (hist.next_revision > hist.revision) {
        /* Caught up with what the store had committed. Batches the loop has not seen yet hold
         * only revisions <= hist.revision, and fan-out skips those for this watcher. */
        unsync_remove(h, w);
        sync_add(h, w);
    }
    keel_arena_reset(&h->scratch);
    return true;
}

static void retry_catch_up(uv_timer_t *t);

static void catch_up_turn(uv_idle_t *idle)
{
    struct keel_watch_hub *h = idle->data;
    size_t budget = CATCHUP_WATCHERS;
    size_t visited = 0, n = h->n_unsync;
    bool progressed = false;
    while (h->unsync != NULL && budget > 0 && visited < n) {
        struct watcher *w = h->unsync;
        h->unsync = w->unsync_next; /* round robin */
        visited++;
        size_t unread;
        if (!backlog(h, w->sw->session_id, &unread) || unread > h->o.session_out_cap / 2)
            continue; /* wait for the consumer to read */
        catch_up(h, w);
        budget--;
        progressed = true;
    }
    if (h->unsync == NULL || !progressed) {
        uv_idle_stop(&h->idle);
        h->idle_on = 0;
        /* Blocked watchers are looked at again shortly instead of spinning the loop. */
        if (h->unsync != NULL)
            uv_timer_start(&h->retry, retry_catch_up, 5, 0);
    }
}

static void retry_catch_up(uv_timer_t *t)
{
    struct keel_watch_hub *h = t->data;
    if (h->unsync != NULL && !h->idle_on) {
        uv_idle_start(&h->idle, catch_up_turn);
        h->idle_on = 1;
    }
}

/* ---- live fan-out ---- */

struct stab_ctx {
    struct keel_watch_hub *h;
    Keel__Event *e;
};

static void collect(struct keel_itree_node *n, void *data)
{
    struct stab_ctx *c = data;
    struct watcher *w = (struct watcher *)n; /* node is the first member */
    if (c->e->kv->mod_revision < w->next_rev)
        return; /* sent already, through catch-up */
    struct keel_watch_hub *h = c->h;
    if (w->n_pend == w->cap_pend) {
        uint32_t cap = w->cap_pend ? w->cap_pend * 2 : 8;
        Keel__Event **np = realloc(w->pend, cap * sizeof(*np));
        if (np == NULL)
            return;
        w->pend = np;
        w->cap_pend = cap;
    }
    if (w->n_pend == 0) {
        if (h->n_touched == h->cap_touched) {
            size_t cap = h->cap_touched ? h->cap_touched * 2 : 64;
            struct touched *nt = realloc(h->touched, cap * sizeof(*nt));
            if (nt == NULL)
                return;
            h->touched = nt;
            h->cap_touched = cap;
        }
        h->touched[h->n_touched++].w = w;
    }
    w->pend[w->n_pend++] = c->e;
}

/* A checkpoint replaced the store: the revisions between a synced watcher's next_rev and the
 * checkpoint's never came through a batch, so every synced watcher reads them from history
 * (or is canceled as compacted, as etcd does, when the checkpoint no longer has them). */
static void all_catch_up(struct keel_watch_hub *h)
{
    size_t moved = 0;
    while (h->tree.root != NULL) {
        struct watcher *w = (struct watcher *)h->tree.root; /* node is the first member */
        keel_itree_remove(&h->tree, &w->node);
        unsync_add(h, w);
        moved++;
    }
    struct keel_store_stat st;
    keel_store_stat(h->o.store, &st);
    if (st.revision > h->delivered_rev)
        h->delivered_rev = st.revision;
    if (moved > 0)
        KLOG_INFO("checkpoint restored: %zu watchers catch up from history", moved);
}

/* What w is sent from this batch, as a number: watchers with equal ones are compared in full. */
static uint64_t group_of(const struct watcher *w)
{
    uint64_t x = w->sw->session_id * 0x9e3779b97f4a7c15ull;
    x ^= (uint64_t)(w->prev_kv | w->noput << 1 | w->nodelete << 2 | w->shared << 3) << 56;
    for (uint32_t i = 0; i < w->n_pend; i++) {
        x ^= (uint64_t)(uintptr_t)w->pend[i];
        x *= 0xff51afd7ed558ccdull;
        x ^= x >> 33;
    }
    return x ^ w->n_pend;
}

static int by_group(const void *a, const void *b)
{
    const struct touched *x = a, *y = b;
    return x->group < y->group ? -1 : x->group > y->group;
}

/* Whether b may share a's message: both take shared events, on one session, sent the same. */
static bool same_message(const struct touched *ta, const struct touched *tb)
{
    const struct watcher *a = ta->w, *b = tb->w;
    return ta->group == tb->group && a->shared && b->shared && a->sw == b->sw &&
           a->prev_kv == b->prev_kv && a->noput == b->noput && a->nodelete == b->nodelete &&
           a->n_pend == b->n_pend && memcmp(a->pend, b->pend, a->n_pend * sizeof(*a->pend)) == 0;
}

/* Send the pending events of ts[0..n) (one session, sent alike) in one message: the first by
 * its request id, the others by shared_ids. A session over its cap gets nothing: its watchers
 * resume from history at their first pending event (so do they when the message cannot be
 * built for want of memory). */
static void send_group(struct keel_watch_hub *h, const struct touched *ts, size_t n,
                       int64_t revision)
{
    struct watcher *w = ts[0].w;
    size_t unread;
    if (!backlog(h, w->sw->session_id, &unread))
        return;
    size_t n_evs = 0;
    Keel__Event **evs = NULL;
    uint64_t *ids = NULL;
    if (unread <= h->o.session_out_cap) {
        evs = filter_events(h, w, w->pend, w->n_pend, &n_evs);
        ids = n > 1 ? keel_arena_alloc(&h->scratch, (n - 1) * sizeof(*ids)) : NULL;
    }
    if (evs == NULL || (n > 1 && ids == NULL)) {
        /* Over the cap, or no memory to build the message: history has the events. */
        for (size_t i = 0; i < n; i++) {
            struct watcher *x = ts[i].w;
            x->next_rev = x->pend[0]->kv->mod_revision;
            keel_itree_remove(&h->tree, &x->node);
            unsync_add(h, x);
        }
        return;
    }
    if (n_evs > 0) {
        for (size_t i = 1; i < n; i++)
            ids[i - 1] = ts[i].w->create_id;
        Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
        wr.watch_id = w->id;
        wr.events = evs;
        wr.n_events = n_evs;
        wr.shared_ids = ids;
        wr.n_shared_ids = n - 1;
        send_watch(h, w->sw->session_id, w->create_id, &wr, revision, KEEL_RESPOND_PUSH);
    }
    for (size_t i = 0; i < n; i++) {
        struct watcher *x = ts[i].w;
        x->next_rev = x->pend[x->n_pend - 1]->kv->mod_revision + 1;
    }
}

/* Send what the batch gave the touched watchers. Watchers of one session sent the same events
 * with the same filters (a thousand informers on one prefix) share one message, so the events
 * are encoded and written once per connection instead of once per watcher. */
static void send_touched(struct keel_watch_hub *h, int64_t revision)
{
    struct touched *ts = h->touched;
    size_t n = h->n_touched;
    if (n == 0)
        return; /* ts may be NULL, which qsort must not be given */
    for (size_t i = 0; i < n; i++)
        ts[i].group = group_of(ts[i].w);
    qsort(ts, n, sizeof(*ts), by_group);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && j - i < SHARED_MAX && same_message(&ts[i], &ts[j]))
            j++;
        send_group(h, ts + i, j - i, revision);
        i = j;
    }
    for (size_t i = 0; i < n; i++)
        ts[i].w->n_pend = 0;
    h->n_touched = 0;
}

void keel_watch_applied(struct keel_watch_hub *h, const struct keel_fsm_batch *b)
{
    if (b->restored)
        all_catch_up(h);
    int64_t last = h->delivered_rev;
    for (size_t i = 0; i < b->n; i++) {
        const struct keel_apply_result *r = &b->results[i].r;
        if (r->skipped || r->err != 0)
            continue;
        if (r->revision > last)
            last = r->revision;
        for (size_t j = 0; j < r->n_events; j++) {
            struct stab_ctx c = {h, r->events[j]};
            Keel__KeyValue *kv = r->events[j]->kv;
            keel_itree_stab(&h->tree, kv->key.data, kv->key.len, collect, &c);
        }
    }
    h->delivered_rev = last;
    keel_arena_reset(&h->scratch);
    send_touched(h, last);
    keel_arena_reset(&h->scratch);
}

/* ---- requests ---- */

static struct session_watches *session_watches(struct keel_watch_hub *h, uint64_t session_id,
                                               bool create)
{
    struct session_watches *sw = keel_u64map_get(&h->by_session, session_id);
    if (sw == NULL && create) {
        sw = calloc(1, sizeof(*sw));
        if (sw == NULL || keel_u64map_put(&h->by_session, session_id, sw) != 0) {
            free(sw);
            return NULL;
        }
        sw->session_id = session_id;
        keel_u64map_init(&sw->by_id);
    }
    return sw;
}

/* Watch ids are positive (0 and below ask for one to be picked); 0 is the map's empty key. */
static struct watcher *find(struct session_watches *sw, int64_t id)
{
    return sw != NULL && id > 0 ? keel_u64map_get(&sw->by_id, (uint64_t)id) : NULL;
}

static void session_watches_free(struct keel_watch_hub *h, struct session_watches *sw)
{
    while (sw->head != NULL)
        watcher_free(h, sw->head);
    keel_u64map_close(&sw->by_id);
    free(sw);
}

static void create(struct keel_watch_hub *h, uint64_t session, const Keel__Request *req)
{
    const Keel__WatchCreateRequest *wc = req->watch_create;
    if (wc->key.len == 0 && wc->range_end.len == 0) {
        reply_error(h, session, req->id, KEEL_EINVAL, "watch key is not provided");
        return;
    }
    if (wc->key.len > KEEL_MAX_KEY_BYTES || wc->range_end.len > KEEL_MAX_KEY_BYTES) {
        reply_error(h, session, req->id, KEEL_EKEYTOOLONG, "watch key is longer than 511 bytes");
        return;
    }
    struct session_watches *sw = session_watches(h, session, true);
    if (sw == NULL) {
        reply_error(h, session, req->id, KEEL_ENOMEM, "out of memory");
        return;
    }
    if (sw->n >= h->o.max_per_session) {
        char msg[128];
        snprintf(msg, sizeof(msg), "too many watches on this connection (limit %zu)",
                 h->o.max_per_session);
        reply_error(h, session, req->id, KEEL_ETOOMANYREQUESTS, msg);
        return;
    }
    int64_t id = wc->watch_id;
    if (id > 0 && find(sw, id) != NULL) {
        reply_error(h, session, req->id, KEEL_EINVAL,
                    "watch id is already in use on this connection");
        return;
    }
    if (id <= 0) {
        do
            id = ++sw->next_id;
        while (find(sw, id) != NULL);
    }
    struct keel_store_stat st;
    keel_store_stat(h->o.store, &st);
    int64_t start = wc->start_revision;
    if (start > 0 && start < st.compact_revision) {
        /* etcd's answer: created, then canceled with the compacted revision. */
        Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
        wr.watch_id = id;
        wr.created = 1;
        send_watch(h, session, req->id, &wr, st.revision, KEEL_RESPOND_ANSWER);
        Keel__WatchResponse cr = KEEL__WATCH_RESPONSE__INIT;
        cr.watch_id = id;
        cr.canceled = 1;
        cr.compact_revision = st.compact_revision;
        cr.cancel_reason = "required revision has been compacted";
        send_watch(h, session, req->id, &cr, st.revision, KEEL_RESPOND_PUSH);
        return;
    }
    /* The range as [key, end): a single key ends at key + "\0"; "\0" means no end. */
    bool single = wc->range_end.len == 0;
    bool open_end = wc->range_end.len == 1 && wc->range_end.data[0] == 0;
    size_t end_len = single ? wc->key.len + 1 : open_end ? 0 : wc->range_end.len;
    struct watcher *w = calloc(1, offsetof(struct watcher, range) + wc->key.len + end_len);
    if (w == NULL || keel_u64map_put(&sw->by_id, (uint64_t)id, w) != 0) {
        free(w);
        reply_error(h, session, req->id, KEEL_ENOMEM, "out of memory");
        return;
    }
    w->sw = sw;
    w->id = id;
    w->create_id = req->id;
    w->prev_kv = wc->prev_kv;
    w->progress_notify = wc->progress_notify;
    w->shared = wc->shared_events;
    for (size_t i = 0; i < wc->n_filters; i++) {
        if (wc->filters[i] == KEEL__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT)
            w->noput = true;
        else if (wc->filters[i] == KEEL__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
            w->nodelete = true;
    }
    if (wc->key.len)
        memcpy(w->range, wc->key.data, wc->key.len);
    w->node.start = w->range;
    w->node.start_len = wc->key.len;
    if (end_len > 0) {
        uint8_t *end = w->range + wc->key.len;
        if (single)
            memcpy(end, wc->key.data, wc->key.len); /* and the calloc'd 0 */
        else
            memcpy(end, wc->range_end.data, end_len);
        w->node.end = end;
        w->node.end_len = end_len;
    }
    w->sess_next = sw->head;
    if (sw->head)
        sw->head->sess_prev = w;
    sw->head = w;
    if (sw->n++ == 0)
        h->n_streams++;
    h->n_watchers++;

    Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
    wr.watch_id = id;
    wr.created = 1;
    send_watch(h, session, req->id, &wr, st.revision, KEEL_RESPOND_ANSWER);
    if (start <= 0 || start > st.revision) {
        w->next_rev = start <= 0 ? st.revision + 1 : start;
        sync_add(h, w);
    } else {
        w->next_rev = start;
        unsync_add(h, w);
    }
}

static void cancel(struct keel_watch_hub *h, uint64_t session, const Keel__Request *req)
{
    struct session_watches *sw = session_watches(h, session, false);
    struct watcher *w = find(sw, req->watch_cancel->watch_id);
    if (w == NULL) {
        reply_error(h, session, req->id, KEEL_EINVAL, "no such watch id on this connection");
        return;
    }
    Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
    wr.watch_id = w->id;
    wr.canceled = 1;
    wr.cancel_reason = "canceled by the client";
    watcher_free(h, w);
    send_watch(h, session, req->id, &wr, h->delivered_rev, KEEL_RESPOND_ANSWER);
}

void keel_watch_request(struct keel_watch_hub *h, uint64_t session, const Keel__Request *req)
{
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_WATCH_CREATE:
        create(h, session, req);
        break;
    case KEEL__REQUEST__BODY_WATCH_CANCEL:
        cancel(h, session, req);
        break;
    case KEEL__REQUEST__BODY_WATCH_PROGRESS: {
        /* A progress revision promises every event up to it was sent, to every watcher of the
         * connection: those still catching up hold it back to just below their position. */
        int64_t rev = h->delivered_rev;
        struct session_watches *sw = session_watches(h, session, false);
        for (struct watcher *w = sw ? sw->head : NULL; w != NULL; w = w->sess_next)
            if (!w->synced && w->next_rev - 1 < rev)
                rev = w->next_rev - 1;
        Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
        wr.watch_id = -1;
        send_watch(h, session, req->id, &wr, rev, KEEL_RESPOND_ANSWER);
        break;
    }
    default:
        reply_error(h, session, req->id, KEEL_EINVAL, "not a watch request");
    }
}

void keel_watch_session_closed(struct keel_watch_hub *h, uint64_t session_id)
{
    struct session_watches *sw = keel_u64map_del(&h->by_session, session_id);
    if (sw != NULL)
        session_watches_free(h, sw);
}

static void progress_tick(uv_timer_t *t)
{
    struct keel_watch_hub *h = t->data;
    for (size_t i = 0; i < h->by_session.cap; i++) {
        if (h->by_session.keys[i] == 0)
            continue;
        struct session_watches *sw = h->by_session.vals[i];
        size_t unread;
        if (!backlog(h, sw->session_id, &unread))
            continue;
        for (struct watcher *w = sw->head; w != NULL; w = w->sess_next) {
            if (!w->progress_notify || !w->synced)
                continue;
            Keel__WatchResponse wr = KEEL__WATCH_RESPONSE__INIT;
            wr.watch_id = w->id;
            send_watch(h, sw->session_id, w->create_id, &wr, h->delivered_rev, KEEL_RESPOND_PUSH);
        }
    }
}

size_t keel_watch_count(const struct keel_watch_hub *h)
{
    return h->n_watchers;
}

size_t keel_watch_streams(const struct keel_watch_hub *h)
{
    return h->n_streams;
}

size_t keel_watch_unsynced(const struct keel_watch_hub *h)
{
    return h->n_unsync;
}

int keel_watch_new(const struct keel_watch_options *o, struct keel_watch_hub **out)
{
    struct keel_watch_hub *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return KEEL_ENOMEM;
    h->o = *o;
    keel_itree_init(&h->tree);
    keel_u64map_init(&h->by_session);
    keel_arena_init(&h->scratch, 0);
    struct keel_store_stat st;
    keel_store_stat(o->store, &st);
    h->delivered_rev = st.revision;
    uv_idle_init(o->loop, &h->idle);
    uv_timer_init(o->loop, &h->retry);
    uv_timer_init(o->loop, &h->progress);
    h->idle.data = h->retry.data = h->progress.data = h;
    uv_idle_start(&h->idle, catch_up_turn);
    uv_idle_stop(&h->idle);
    if (o->progress_ms > 0)
        uv_timer_start(&h->progress, progress_tick, o->progress_ms, o->progress_ms);
    *out = h;
    return 0;
}

void keel_watch_stop(struct keel_watch_hub *h)
{
    uv_idle_stop(&h->idle);
    uv_close((uv_handle_t *)&h->idle, NULL);
    uv_close((uv_handle_t *)&h->retry, NULL);
    uv_close((uv_handle_t *)&h->progress, NULL);
}

void keel_watch_free(struct keel_watch_hub *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->by_session.cap; i++) {
        if (h->by_session.keys[i] == 0)
            continue;
        session_watches_free(h, h->by_session.vals[i]);
    }
    keel_u64map_close(&h->by_session);
    keel_arena_close(&h->scratch);
    free(h->touched);
    free(h);
}
