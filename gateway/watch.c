/*
 * Watch/Watch: etcd's bidirectional watch stream on libkeel watches.
 *
 * One stream carries many watchers. Each etcd watcher is one keel watch (keel_aclient_watch),
 * which resumes by itself across member failures without gap or duplicate; this module adds what
 * etcd's stream promises on top (etcd 3.4 etcdserver/api/v3rpc/watch.go, mvcc/watcher.go):
 *
 * - Requests are handled in arrival order through a queue that stops at a create until its keel
 *   watch is acknowledged (created_notify): creates are answered in order, and a watcher's
 *   `created` {header(rev = the member's revision), watch_id, created} goes out before any of its
 *   events. watch_id 0 takes the stream's next free id from 0 upward (etcd's nextID, skipping ids
 *   in use); a client's id already in use, or an empty range (key >= range_end), is etcd's
 *   refusal {created, canceled, watch_id -1, cancel_reason "mvcc: ..."}.
 * - A start revision below keel's compacted one: keel answers `created` then a cancel with the
 *   compacted revision, passed on as etcd's {header(rev 0), watch_id, canceled, compact_revision}.
 * - progress_request: answered {header.revision = R, watch_id -1} only once every watcher on the
 *   stream has delivered everything up to R. Each watcher's `delivered` moves with its events and
 *   with keel's progress answers, which keeld holds back to what that connection was sent
 *   (server/watch.c); a progress request asks every watcher's keel watch, then answers with the
 *   minimum. Requests arriving while one is pending are answered by one more round after it.
 * - Slow consumer: past GW_WATCH_PAUSE_BYTES queued for the client, every keel watch of the
 *   stream is cancelled, remembering keel_watch_next_revision, and re-created from there once the
 *   queue is below GW_WATCH_RESUME_BYTES (polled with a timer): nothing lost or duplicated, and
 *   the stream's queue stays below GW_WATCH_PAUSE_BYTES plus one batch per watcher (a keel frame).
 * - hasleader (call->require_leader): checked (leader.h) before the first request is served and
 *   every GW_WATCH_LEADER_MS after; no leader -> the stream ends Unavailable "etcdserver: no
 *   leader" (etcd checks at stream start and its monitorLeader cancels such streams later; we
 *   want two answers in a row before cancelling a running stream, so one election does not).
 * - The client's half-close does not end the stream (etcd keeps streaming; the JSON gateway
 *   relies on it). It ends on on_cancel, or on an error: every keel watch is cancelled, their
 *   final callbacks are awaited, then gw_call_finish; the call is never touched after that.
 *
 * fragment: a response whose encoding reaches etcd's limit (max request bytes + 512 KiB of gRPC
 * overhead) and has two events or more is split as etcd's sendFragments does, when the watcher
 * asked for it; otherwise sent whole, as etcd does.
 *
 * Memory per stream: the watchers (at most GW_WATCH_MAX_WATCHERS, each its key and range end),
 * at most GW_WATCH_MAX_QUEUED requests waiting, and the client queue bound above.
 */
#include <stdlib.h>
#include <string.h>

#include <keel/keel.h>

#include "convert.h"
#include "leader.h"
#include "log.h"
#include "methods.h"

#define GW_WATCH_PAUSE_BYTES  (8u << 20) /* bytes queued for the client: pause the keel watches */
#define GW_WATCH_RESUME_BYTES (1u << 20) /* ... and re-create them once below this */
#define GW_WATCH_POLL_MS      50         /* how often a paused stream looks at its queue */
#define GW_WATCH_PROGRESS_MS  1000       /* ask again watchers whose progress answer is late */
#define GW_WATCH_LEADER_MS    3000       /* hasleader streams: how often the leader is checked */
#define GW_WATCH_MAX_WATCHERS 10000      /* per stream; more: refused "too many requests" */
#define GW_WATCH_MAX_QUEUED   128        /* requests waiting behind a create; more: stream ends */
#define GW_GRPC_OVERHEAD      (512u * 1024) /* etcd's grpcOverheadBytes */

struct ws_stream;

struct ws_watcher {
    struct ws_stream *s;
    struct ws_watcher *prev, *next;
    int64_t id;
    struct keel_watch *kw; /* NULL while paused or after its final callback */
    uint8_t *key, *end;
    size_t klen, elen;
    int64_t start_rev;
    bool prev_kv, noput, nodelete, progress_notify, fragment;
    bool created_sent; /* the client has its `created` */
    bool kw_acked;     /* kw's created notice has come */
    bool gone;         /* out of the id space (cancelled, compacted, ended): freed at kw's end */
    bool paused;       /* slow consumer: kw cancelled, re-created from resume_rev */
    bool prog_wait;    /* the progress round waits for this watcher's answer */
    int64_t resume_rev;
    int64_t delivered; /* every event at or below it has been sent to the client */
};

struct ws_req {
    struct ws_req *next;
    Etcdserverpb__WatchRequest *msg;
};

struct ws_stream {
    struct gw_call *call; /* NULL once finished */
    struct gw_ctx *ctx;
    char *token; /* the caller's (call.h), copied: every keel watch and read of the stream's */
    struct keel_arena arena; /* the response being built; reset after each send */
    struct ws_watcher *head, *tail;
    size_t n_watchers; /* in the id space (not gone) */
    size_t n_kw;       /* keel watches not yet at their final callback */
    int64_t next_auto_id;
    struct ws_req *q_head, *q_tail;
    size_t q_n;
    struct ws_watcher *creating; /* the create at the queue's head, awaiting keel's ack */
    Keel__ResponseHeader last;   /* the newest keel header seen (cluster, member, term, rev) */
    bool have_last;
    /* progress */
    bool prog_active, prog_again;
    uint64_t prog_asked_at;
    int status_in_flight; /* revision reads (progress with no watcher) not yet answered */
    /* hasleader */
    bool leader_known;   /* the first check passed: requests may be served */
    bool leader_missing; /* the last periodic check saw no leader */
    uint64_t leader_next;
    struct gw_leader_ask ask;
    /* the timer (slow consumer, late progress, leader) */
    uv_timer_t timer;
    bool timer_open;
    /* ending */
    bool ending;
    enum gw_code end_code;
    const char *end_msg; /* static */
};

static void process_queue(struct ws_stream *s);
static void stream_end(struct ws_stream *s, enum gw_code code, const char *msg);
static void prog_check(struct ws_stream *s);
static void arm_timer(struct ws_stream *s);

/* ---------------------------------------------------------------------------------------------
 * Sending
 */

static void note_header(struct ws_stream *s, const Keel__ResponseHeader *h)
{
    if (!h)
        return;
    int64_t rev = s->have_last && s->last.revision > h->revision ? s->last.revision : h->revision;
    s->last.cluster_id = h->cluster_id;
    s->last.member_id = h->member_id;
    s->last.raft_term = h->raft_term;
    s->last.revision = rev;
    s->have_last = true;
}

/* A header from the stream's newest keel header, with revision rev. */
static Etcdserverpb__ResponseHeader *last_header(struct ws_stream *s, int64_t rev)
{
    Etcdserverpb__ResponseHeader *h = gw_header(&s->arena, s->have_last ? &s->last : NULL);
    if (h)
        h->revision = rev;
    return h;
}

/* Pause every running keel watch of the stream (slow consumer). */
static void pause_all(struct ws_stream *s)
{
    size_t n = 0;
    for (struct ws_watcher *w = s->head; w; w = w->next) {
        if (w->gone || w->paused || !w->kw || !w->kw_acked || !w->created_sent)
            continue;
        w->resume_rev = keel_watch_next_revision(w->kw);
        w->paused = true;
        (void)keel_watch_cancel(w->kw);
        n++;
    }
    if (n > 0)
        KLOG_DEBUG("watch stream %p: %zu bytes queued for the client: %zu keel watches paused",
                   (void *)s, gw_call_pending(s->call), n);
    arm_timer(s);
}

/* Send one response; false when the call is gone (the stream is then ending). */
static bool send_resp(struct ws_stream *s, Etcdserverpb__WatchResponse *r)
{
    if (!s->call || s->ending) {
        keel_arena_reset(&s->arena);
        return false;
    }
    int rv = gw_call_send(s->call, &r->base);
    keel_arena_reset(&s->arena);
    if (rv != 0) {
        stream_end(s, GW_CANCELLED, "context canceled");
        return false;
    }
    if (gw_call_pending(s->call) > GW_WATCH_PAUSE_BYTES)
        pause_all(s);
    return true;
}

static size_t varint_len(size_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Send r, split into fragments as etcd's sendFragments does when the watcher asked for them. */
static bool send_events(struct ws_stream *s, struct ws_watcher *w, Etcdserverpb__WatchResponse *r)
{
    size_t max = s->ctx->max_request_bytes + GW_GRPC_OVERHEAD;
    if (!w->fragment || r->n_events < 2 || protobuf_c_message_get_packed_size(&r->base) < max)
        return send_resp(s, r);
    Etcdserverpb__Event **all = r->events;
    size_t n = r->n_events, idx = 0;
    r->events = NULL;
    r->n_events = 0;
    r->fragment = 1;
    size_t base = protobuf_c_message_get_packed_size(&r->base);
    /* The arena holds the events: keep it until the last fragment (send_resp resets it). */
    while (idx < n) {
        size_t size = base, j = idx;
        while (j < n) {
            size_t ev = protobuf_c_message_get_packed_size(&all[j]->base);
            size_t add = 1 + varint_len(ev) + ev;
            if (j > idx && size + add >= max)
                break;
            size += add;
            j++;
        }
        r->events = all + idx;
        r->n_events = j - idx;
        r->fragment = j < n;
        if (!s->call || s->ending)
            break;
        if (gw_call_send(s->call, &r->base) != 0) {
            keel_arena_reset(&s->arena);
            stream_end(s, GW_CANCELLED, "context canceled");
            return false;
        }
        idx = j;
    }
    keel_arena_reset(&s->arena);
    if (s->call && !s->ending && gw_call_pending(s->call) > GW_WATCH_PAUSE_BYTES)
        pause_all(s);
    return s->call && !s->ending;
}

/* etcd's refusal of a create: {header, watch_id -1, created, canceled, cancel_reason}. */
static void send_refusal(struct ws_stream *s, const char *reason)
{
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = last_header(s, s->have_last ? s->last.revision : 0);
    r.watch_id = -1;
    r.created = 1;
    r.canceled = 1;
    r.cancel_reason = (char *)reason;
    send_resp(s, &r);
}

/* ---------------------------------------------------------------------------------------------
 * Watchers
 */

static struct ws_watcher *find_live(struct ws_stream *s, int64_t id)
{
    for (struct ws_watcher *w = s->head; w; w = w->next)
        if (!w->gone && w->id == id)
            return w;
    return NULL;
}

static void watcher_free(struct ws_watcher *w)
{
    struct ws_stream *s = w->s;
    if (w->prev)
        w->prev->next = w->next;
    else
        s->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        s->tail = w->prev;
    free(w->key);
    free(w->end);
    free(w);
}

/* w leaves the id space; freed now, or at its keel watch's final callback. */
static void watcher_gone(struct ws_watcher *w)
{
    struct ws_stream *s = w->s;
    if (!w->gone) {
        w->gone = true;
        s->n_watchers--;
    }
    if (w->kw)
        (void)keel_watch_cancel(w->kw);
    else
        watcher_free(w);
}

static void on_keel_watch(struct keel_watch *kw, int status, const Keel__Event *const *events,
                          size_t n_events, int64_t revision, void *data);

/* Start (or re-start, from rev) w's keel watch. 0 or a KEEL_E* code. */
static int watcher_start(struct ws_watcher *w, int64_t rev)
{
    struct keel_watch_opts o = {
        .range_end = w->elen ? w->end : NULL,
        .range_end_len = w->elen,
        .start_revision = rev,
        .prev_kv = w->prev_kv,
        .noput = w->noput,
        .nodelete = w->nodelete,
        .progress_notify = w->progress_notify,
        .created_notify = true,
        .token = w->s->token,
    };
    int rv = keel_aclient_watch(w->s->ctx->ac, w->key, w->klen, &o, on_keel_watch, w, &w->kw);
    if (rv == 0) {
        w->kw_acked = false;
        w->s->n_kw++;
    }
    return rv;
}

/* The stream is finished once nothing of keel's still refers to it. */
static void maybe_free(struct ws_stream *s)
{
    if (!s->ending || s->n_kw > 0 || s->status_in_flight > 0 || s->timer_open)
        return;
    while (s->head)
        watcher_free(s->head);
    if (s->call) {
        struct gw_call *c = s->call;
        s->call = NULL;
        c->state = NULL;
        gw_call_finish(c, s->end_code, s->end_msg);
    }
    keel_arena_close(&s->arena);
    free(s->token);
    free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct ws_stream *s = h->data;
    s->timer_open = false;
    maybe_free(s);
}

/* End the stream: cancel every keel watch, wait for their final callbacks, then finish. */
static void stream_end(struct ws_stream *s, enum gw_code code, const char *msg)
{
    if (s->ending)
        return;
    s->ending = true;
    s->end_code = code;
    s->end_msg = msg;
    gw_leader_forget(&s->ask);
    while (s->q_head) {
        struct ws_req *q = s->q_head;
        s->q_head = q->next;
        protobuf_c_message_free_unpacked(&q->msg->base, NULL);
        free(q);
    }
    s->q_tail = NULL;
    s->q_n = 0;
    s->creating = NULL;
    struct ws_watcher *next;
    for (struct ws_watcher *w = s->head; w; w = next) {
        next = w->next;
        watcher_gone(w);
    }
    if (s->timer_open && !uv_is_closing((uv_handle_t *)&s->timer))
        uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    maybe_free(s);
}

/* ---------------------------------------------------------------------------------------------
 * keel watch callbacks
 */

/* kw's created notice. */
static void on_acked(struct ws_watcher *w, const Keel__ResponseHeader *h)
{
    struct ws_stream *s = w->s;
    int64_t hrev = h ? h->revision : 0;
    w->kw_acked = true;
    if (w->created_sent) {
        /* A resume after a pause: internal. A progress round may be waiting for it. */
        if (w->prog_wait)
            (void)keel_watch_progress(w->kw);
        return;
    }
    /* Nothing at or below delivered is owed: before the start, or before "now". */
    w->delivered = w->start_rev > 0 && w->start_rev - 1 < hrev ? w->start_rev - 1 : hrev;
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = gw_header(&s->arena, h);
    r.watch_id = w->id;
    r.created = 1;
    w->created_sent = true;
    if (s->creating == w)
        s->creating = NULL;
    if (!send_resp(s, &r))
        return;
    process_queue(s);
}

/* kw ended (status != 0): its handle is freed when this returns. */
static void on_end(struct ws_watcher *w, int status, struct keel_watch *kw)
{
    struct ws_stream *s = w->s;
    w->kw = NULL;
    s->n_kw--;
    if (s->ending || w->gone) {
        if (w->gone)
            watcher_free(w);
        maybe_free(s);
        return;
    }
    if (status == KEEL_ECANCELED && w->paused) {
        arm_timer(s); /* re-created by the timer once the client drains */
        return;
    }
    bool was_creating = s->creating == w;
    if (was_creating)
        s->creating = NULL;
    if (status == KEEL_ECOMPACTED) {
        if (!w->created_sent) {
            /* keel refused the create outright: etcd still says `created` first. */
            Etcdserverpb__WatchResponse c = ETCDSERVERPB__WATCH_RESPONSE__INIT;
            c.header = last_header(s, s->have_last ? s->last.revision : 0);
            c.watch_id = w->id;
            c.created = 1;
            w->created_sent = true;
            if (!send_resp(s, &c))
                return;
        }
        /* etcd's shape (mvcc's compacted watcher response): header revision 0. */
        Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
        r.header = last_header(s, 0);
        r.watch_id = w->id;
        r.canceled = 1;
        r.compact_revision = keel_watch_compact_revision(kw);
        if (r.compact_revision == 0)
            r.cancel_reason = "etcdserver: mvcc: required revision has been compacted";
        watcher_gone(w);
        if (!send_resp(s, &r))
            return;
    } else if (!w->created_sent && (status == KEEL_ETIMEOUT || status == KEEL_EUNAVAILABLE ||
                                    status == KEEL_ECLOSED || status == KEEL_ECANCELED)) {
        /* No member acknowledged a first creation: the cluster is unreachable. clientv3
         * retries a stream that ends Unavailable, re-creating its watches. */
        const char *msg;
        enum gw_code code = gw_error(status, NULL, &msg);
        if (status == KEEL_ECANCELED) {
            code = GW_UNAVAILABLE;
            msg = "etcdserver: server stopped";
        }
        watcher_gone(w);
        stream_end(s, code, msg);
        return;
    } else {
        /* Any other end: the member refused it (key too long, too many watches, ...). */
        const char *msg;
        (void)gw_error(status, NULL, &msg);
        const char *why = keel_watch_error(kw);
        Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
        r.header = last_header(s, s->have_last ? s->last.revision : 0);
        r.canceled = 1;
        r.cancel_reason = (char *)(why && why[0] ? why : msg);
        /* A watch keel's auth refused (outside the caller's permissions, or its token not
         * valid): etcd's isWatchPermitted answer, the text of its gRPC error. */
        if (status == KEEL_EPERMDENIED || status == KEEL_EUNAUTHENTICATED)
            r.cancel_reason = "rpc error: code = PermissionDenied desc = etcdserver: permission "
                              "denied";
        if (!w->created_sent) {
            r.watch_id = -1; /* etcd's refused create */
            r.created = 1;
        } else {
            r.watch_id = w->id;
        }
        watcher_gone(w);
        if (!send_resp(s, &r))
            return;
    }
    prog_check(s);
    if (was_creating)
        process_queue(s);
}

static void on_keel_watch(struct keel_watch *kw, int status, const Keel__Event *const *events,
                          size_t n_events, int64_t revision, void *data)
{
    struct ws_watcher *w = data;
    struct ws_stream *s = w->s;
    (void)revision; /* libkeel's running maximum: the header says what this response means */
    if (status != 0) {
        on_end(w, status, kw);
        return;
    }
    if (s->ending || w->gone)
        return;
    const Keel__ResponseHeader *h = keel_watch_header(kw);
    note_header(s, h);
    if (!w->kw_acked) {
        on_acked(w, h);
        return;
    }
    if (n_events == 0) {
        /* A progress answer or notification: every event up to its revision was sent. */
        int64_t hrev = h ? h->revision : 0;
        if (hrev > w->delivered)
            w->delivered = hrev;
        if (w->prog_wait) {
            w->prog_wait = false;
            prog_check(s);
        } else if (w->progress_notify) {
            Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
            r.header = gw_header(&s->arena, h);
            r.watch_id = w->id;
            send_resp(s, &r);
        }
        return;
    }
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = gw_header(&s->arena, h);
    r.watch_id = w->id;
    r.events = keel_arena_alloc(&s->arena, n_events * sizeof(*r.events));
    if (!r.header || !r.events) {
        keel_arena_reset(&s->arena);
        stream_end(s, GW_RESOURCE_EXHAUSTED, "etcdserver: out of memory");
        return;
    }
    for (size_t i = 0; i < n_events; i++) {
        if (!(r.events[i] = gw_event(&s->arena, events[i]))) {
            keel_arena_reset(&s->arena);
            stream_end(s, GW_RESOURCE_EXHAUSTED, "etcdserver: out of memory");
            return;
        }
    }
    r.n_events = n_events;
    const Keel__Event *last = events[n_events - 1];
    if (last->kv && last->kv->mod_revision > w->delivered)
        w->delivered = last->kv->mod_revision;
    send_events(s, w, &r);
}

/* ---------------------------------------------------------------------------------------------
 * Progress
 */

static void on_current_rev(int status, const Keel__Response *resp, void *data)
{
    struct ws_stream *s = data;
    s->status_in_flight--;
    if (s->ending) {
        maybe_free(s);
        return;
    }
    if (status != 0) {
        const char *msg;
        enum gw_code code = gw_error(status, resp, &msg);
        stream_end(s, code, msg);
        return;
    }
    note_header(s, resp->header);
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = gw_header(&s->arena, resp->header);
    r.watch_id = -1;
    s->prog_active = false;
    if (!send_resp(s, &r))
        return;
    if (s->prog_again) {
        s->prog_again = false;
        prog_check(s);
    }
}

static void prog_start(struct ws_stream *s)
{
    if (s->prog_active) {
        s->prog_again = true;
        return;
    }
    s->prog_active = true;
    s->prog_asked_at = uv_now(s->ctx->loop);
    size_t n = 0;
    for (struct ws_watcher *w = s->head; w; w = w->next) {
        if (w->gone || !w->created_sent)
            continue;
        n++;
        w->prog_wait = true;
        if (w->kw && w->kw_acked && !w->paused)
            (void)keel_watch_progress(w->kw);
    }
    if (n == 0) {
        /* No watcher to hold it back: the current revision, from a linearizable read (the
         * leader's, never below a revision the client has seen; a member's Status may lag). */
        static uint8_t zero = 0;
        Keel__RangeRequest rr = KEEL__RANGE_REQUEST__INIT;
        rr.key.data = &zero;
        rr.key.len = 1;
        rr.count_only = 1;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_RANGE;
        req.range = &rr;
        req.token = s->token;
        struct keel_call_opts o = {.timeout_ms = s->ctx->request_timeout_ms};
        int rv = keel_aclient_request_ex(s->ctx->ac, &req, &o, on_current_rev, s);
        if (rv != 0) {
            const char *msg;
            stream_end(s, gw_error(rv, NULL, &msg), msg);
            return;
        }
        s->status_in_flight++;
        return;
    }
    arm_timer(s);
}

/* Answer the progress round once no watcher is still owed an answer. */
static void prog_check(struct ws_stream *s)
{
    if (s->ending)
        return;
    if (!s->prog_active) {
        if (s->prog_again) {
            s->prog_again = false;
            prog_start(s);
        }
        return;
    }
    if (s->status_in_flight > 0)
        return;
    int64_t min = INT64_MAX;
    for (struct ws_watcher *w = s->head; w; w = w->next) {
        if (w->gone || !w->created_sent)
            continue;
        if (w->prog_wait)
            return;
        if (w->delivered < min)
            min = w->delivered;
    }
    s->prog_active = false;
    if (min == INT64_MAX) {
        /* Every watcher left meanwhile: ask again with none. */
        prog_start(s);
        return;
    }
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = last_header(s, min);
    r.watch_id = -1;
    if (!send_resp(s, &r))
        return;
    if (s->prog_again) {
        s->prog_again = false;
        prog_start(s);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Timer: resume paused watchers, re-ask late progress answers, watch the leader
 */

static void on_leader(bool has_leader, void *data);

static void on_tick(uv_timer_t *t)
{
    struct ws_stream *s = t->data;
    if (s->ending)
        return;
    uint64_t now = uv_now(s->ctx->loop);
    bool paused = false;
    for (struct ws_watcher *w = s->head; w; w = w->next)
        paused |= !w->gone && w->paused;
    if (paused && s->call && gw_call_pending(s->call) < GW_WATCH_RESUME_BYTES) {
        KLOG_DEBUG("watch stream %p: client drained: resuming its keel watches", (void *)s);
        for (struct ws_watcher *w = s->head; w; w = w->next) {
            if (w->gone || !w->paused || w->kw)
                continue; /* the cancelled keel watch has not ended yet: next tick */
            int rv = watcher_start(w, w->resume_rev);
            if (rv != 0) {
                const char *msg;
                stream_end(s, gw_error(rv, NULL, &msg), msg);
                return;
            }
            w->paused = false;
        }
    }
    if (s->prog_active && now - s->prog_asked_at >= GW_WATCH_PROGRESS_MS) {
        /* An answer lost with a connection: ask again (libkeel sends it once re-created). */
        s->prog_asked_at = now;
        for (struct ws_watcher *w = s->head; w; w = w->next)
            if (!w->gone && w->prog_wait && w->kw && w->kw_acked && !w->paused)
                (void)keel_watch_progress(w->kw);
    }
    if (s->call && s->call->require_leader && s->leader_known && now >= s->leader_next) {
        s->leader_next = now + GW_WATCH_LEADER_MS;
        int rv = gw_leader_check(s->ctx, &s->ask, on_leader, s);
        if (rv >= 0)
            on_leader(rv == 1, s);
        if (s->ending)
            return;
    }
    arm_timer(s);
}

static void arm_timer(struct ws_stream *s)
{
    if (s->ending || !s->timer_open)
        return;
    uint64_t ms = 0;
    for (struct ws_watcher *w = s->head; w && ms == 0; w = w->next)
        if (!w->gone && w->paused)
            ms = GW_WATCH_POLL_MS;
    if (ms == 0 && s->prog_active)
        ms = GW_WATCH_PROGRESS_MS;
    if (ms == 0 && s->call && s->call->require_leader && s->leader_known)
        ms = GW_WATCH_LEADER_MS;
    if (ms == 0)
        uv_timer_stop(&s->timer);
    else
        uv_timer_start(&s->timer, on_tick, ms, 0);
}

static void on_leader(bool has_leader, void *data)
{
    struct ws_stream *s = data;
    if (s->ending)
        return;
    if (!s->leader_known) {
        /* The check before the first request: etcd refuses the stream at once. */
        if (!has_leader) {
            stream_end(s, GW_UNAVAILABLE, "etcdserver: no leader");
            return;
        }
        s->leader_known = true;
        s->leader_next = uv_now(s->ctx->loop) + GW_WATCH_LEADER_MS;
        arm_timer(s);
        process_queue(s);
        return;
    }
    if (has_leader) {
        s->leader_missing = false;
    } else if (s->leader_missing) {
        stream_end(s, GW_UNAVAILABLE, "etcdserver: no leader");
    } else {
        s->leader_missing = true;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

static void do_create(struct ws_stream *s, const Etcdserverpb__WatchCreateRequest *cr)
{
    if (s->n_watchers >= GW_WATCH_MAX_WATCHERS) {
        send_refusal(s, "etcdserver: too many requests");
        return;
    }
    /* etcd: an empty key is "\0", the smallest; range_end "\0" alone means every key >= key. */
    static const uint8_t zero = 0;
    const uint8_t *key = cr->key.len ? cr->key.data : &zero;
    size_t klen = cr->key.len ? cr->key.len : 1;
    const uint8_t *end = cr->range_end.data;
    size_t elen = cr->range_end.len;
    bool from_key = elen == 1 && end[0] == 0;
    if (elen > 0 && !from_key) {
        size_t n = klen < elen ? klen : elen;
        int c = memcmp(key, end, n);
        if (c > 0 || (c == 0 && klen >= elen)) {
            send_refusal(s, "mvcc: watcher range is empty");
            return;
        }
    }
    int64_t id = cr->watch_id;
    if (id != 0 && find_live(s, id)) {
        send_refusal(s, "mvcc: duplicate watch ID provided on the WatchStream");
        return;
    }
    if (id == 0) {
        while (find_live(s, s->next_auto_id))
            s->next_auto_id++;
        id = s->next_auto_id++;
    }
    struct ws_watcher *w = calloc(1, sizeof(*w));
    if (!w || !(w->key = malloc(klen)) || (elen && !(w->end = malloc(elen)))) {
        if (w)
            free(w->key);
        free(w);
        stream_end(s, GW_RESOURCE_EXHAUSTED, "etcdserver: out of memory");
        return;
    }
    memcpy(w->key, key, klen);
    w->klen = klen;
    if (elen) {
        memcpy(w->end, end, elen);
        w->elen = elen;
    }
    w->s = s;
    w->id = id;
    /* etcd replays a negative start like an early one (compacted, or all of history). */
    w->start_rev = cr->start_revision < 0 ? 1 : cr->start_revision;
    w->prev_kv = cr->prev_kv;
    w->progress_notify = cr->progress_notify;
    w->fragment = cr->fragment;
    for (size_t i = 0; i < cr->n_filters; i++) {
        if (cr->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT)
            w->noput = true;
        else if (cr->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
            w->nodelete = true;
    }
    w->prev = s->tail;
    if (s->tail)
        s->tail->next = w;
    else
        s->head = w;
    s->tail = w;
    s->n_watchers++;
    int rv = watcher_start(w, w->start_rev);
    if (rv != 0) {
        const char *msg;
        enum gw_code code = gw_error(rv, NULL, &msg);
        watcher_gone(w);
        if (rv == KEEL_ECLOSED || rv == KEEL_ENOMEM)
            stream_end(s, code, msg);
        else
            send_refusal(s, msg);
        return;
    }
    s->creating = w; /* the queue waits for its acknowledgement */
}

static void do_cancel(struct ws_stream *s, int64_t id)
{
    struct ws_watcher *w = find_live(s, id);
    if (!w)
        return; /* etcd answers nothing for an unknown id */
    watcher_gone(w);
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = last_header(s, s->have_last ? s->last.revision : 0);
    r.watch_id = id;
    r.canceled = 1;
    if (!send_resp(s, &r))
        return;
    prog_check(s);
}

/* Serve queued requests until one waits (a create awaiting keel's acknowledgement). */
static void process_queue(struct ws_stream *s)
{
    while (!s->ending && s->leader_known && !s->creating && s->q_head) {
        struct ws_req *q = s->q_head;
        s->q_head = q->next;
        if (!s->q_head)
            s->q_tail = NULL;
        s->q_n--;
        Etcdserverpb__WatchRequest *m = q->msg;
        free(q);
        switch (m->request_union_case) {
        case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST:
            if (m->create_request)
                do_create(s, m->create_request);
            break;
        case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST:
            if (m->cancel_request)
                do_cancel(s, m->cancel_request->watch_id);
            break;
        case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST:
            prog_start(s);
            break;
        default:
            break; /* etcd ignores an empty request */
        }
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The method
 */

static struct ws_stream *stream_of(struct gw_call *c)
{
    if (c->state)
        return c->state;
    struct ws_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->call = c;
    s->ctx = c->ctx;
    keel_arena_init(&s->arena, 0);
    if (!(s->token = strdup(c->token ? c->token : "")) ||
        uv_timer_init(c->ctx->loop, &s->timer) != 0) {
        keel_arena_close(&s->arena);
        free(s->token);
        free(s);
        return NULL;
    }
    s->timer.data = s;
    s->timer_open = true;
    c->state = s;
    if (!c->require_leader) {
        s->leader_known = true;
    } else {
        int rv = gw_leader_check(c->ctx, &s->ask, on_leader, s);
        if (rv >= 0)
            on_leader(rv == 1, s); /* may end the stream: the caller looks at s->ending */
    }
    return s;
}

static void watch_on_message(struct gw_call *c, ProtobufCMessage *msg)
{
    struct ws_stream *s = stream_of(c);
    if (!s) {
        protobuf_c_message_free_unpacked(msg, NULL);
        gw_call_finish(c, GW_RESOURCE_EXHAUSTED, "etcdserver: out of memory");
        return;
    }
    if (s->ending) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    if (s->q_n >= GW_WATCH_MAX_QUEUED) {
        protobuf_c_message_free_unpacked(msg, NULL);
        stream_end(s, GW_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
        return;
    }
    struct ws_req *q = malloc(sizeof(*q));
    if (!q) {
        protobuf_c_message_free_unpacked(msg, NULL);
        stream_end(s, GW_RESOURCE_EXHAUSTED, "etcdserver: out of memory");
        return;
    }
    q->next = NULL;
    q->msg = (Etcdserverpb__WatchRequest *)msg;
    if (s->q_tail)
        s->q_tail->next = q;
    else
        s->q_head = q;
    s->q_tail = q;
    s->q_n++;
    process_queue(s);
}

static void watch_on_cancel(struct gw_call *c)
{
    struct ws_stream *s = c->state;
    if (!s) {
        gw_call_finish(c, GW_CANCELLED, "context canceled");
        return;
    }
    if (s->ending)
        return; /* already winding down: it finishes once keel's callbacks are in */
    stream_end(s, GW_CANCELLED, "context canceled");
}

static const struct gw_method methods[] = {
    {
        .grpc_path = "/etcdserverpb.Watch/Watch",
        .json_path = "watch",
        .req = &etcdserverpb__watch_request__descriptor,
        .resp = &etcdserverpb__watch_response__descriptor,
        .kind = GW_BIDI,
        .on_message = watch_on_message,
        .on_half_close = NULL, /* etcd keeps streaming after the client's half-close */
        .on_cancel = watch_on_cancel,
    },
};

const struct gw_method_table gw_watch_table = {methods, sizeof(methods) / sizeof(methods[0])};
