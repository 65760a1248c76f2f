/*
 * Watches: creation, delivery, resumption, cancellation.
 *
 * A watch is a stream of responses that carry the id of the WatchCreate that started it. Every
 * attempt gets a fresh stream id and a fresh watch id, so nothing a member sends for an earlier
 * attempt can reach the watch (and the member never sees an id twice on one connection); the
 * stream id's low 32 bits index a slot table (slots.h), as request ids do.
 *
 * No gap, no duplicate: w->next_rev is the first revision not yet delivered. A re-creation asks
 * for history from there, and events below it are dropped (a member replaying a little too much,
 * or a batch that raced a resume). A member never splits one revision across responses, so
 * next_rev only ever moves past whole revisions.
 *
 * Frames to members (create, cancel, progress) are one-way ops queued on the watch's connection,
 * so they ride the same batched writes as requests. User callbacks run from the read path
 * (events, notices) or from the loop turn's drain (final calls), never from an API call; a watch
 * whose callback is running is marked busy so that a nested drain (keel_aclient_close from a
 * callback) never ends it under that callback's feet.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define KW_RETRY_BASE_MS 25
#define KW_RETRY_CAP_MS  1000
#define KW_FAILS_MAX     1000 /* the backoff is capped long before; keeps the counter bounded */

/* ---------------------------------------------------------------------------------------------
 * Lists, states
 */

static void wl_push(struct kc_wlist *l, struct keel_watch *w)
{
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->n++;
}

static void wl_remove(struct kc_wlist *l, struct keel_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->prev = w->next = NULL;
    l->n--;
}

static uint64_t next_gen(struct keel_aclient *ac)
{
    ac->wgen = (ac->wgen + 1) & 0x7fffffffu;
    if (ac->wgen == 0)
        ac->wgen = 1;
    return (uint64_t)ac->wgen << 32;
}

/* Each state but KW_ENDED has a list, so the routing pass sees only the watches that need it
 * however many are active. */
static struct kc_wlist *list_of(struct keel_aclient *ac, uint8_t state)
{
    switch (state) {
    case KW_WAITING:
    case KW_CREATING:
        return &ac->wsettling;
    case KW_ACTIVE:
        return &ac->watches;
    case KW_DONE:
        return &ac->wdone;
    default:
        return NULL;
    }
}

static void set_state(struct keel_watch *w, uint8_t state)
{
    struct kc_wlist *from = list_of(w->ac, w->state), *to = list_of(w->ac, state);
    if (from != to) {
        if (from)
            wl_remove(from, w);
        if (to)
            wl_push(to, w);
    }
    w->state = state;
}

static bool ended(const struct keel_watch *w)
{
    return w->state == KW_DONE || w->state == KW_ENDED;
}

void kc_watch_close(struct keel_watch *w)
{
    free(w->key);
    free(w->end);
    free(w->msg);
    free(w->token);
    free(w);
}

/* End w: nothing more is delivered but its final callback, from the next drain. */
static void watch_end(struct keel_watch *w, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void watch_end(struct keel_watch *w, int status, const char *fmt, ...)
{
    if (ended(w))
        return;
    struct keel_aclient *ac = w->ac;
    set_state(w, KW_DONE);
    kc_slots_give(&ac->wslots, w->slot, w);
    w->conn = NULL;
    w->status = status;
    va_list ap;
    va_start(ap, fmt);
    w->msg = kc_vmsg(fmt, ap);
    va_end(ap);
    kc_kick(ac);
}

void kc_watch_drain(struct keel_aclient *ac)
{
    struct keel_watch *w = ac->wdone.head;
    while (w != NULL) {
        if (w->busy) {
            /* Its callback is below us on the stack: its final call comes once that returns. */
            w = w->next;
            continue;
        }
        set_state(w, KW_ENDED);
        w->busy = true;
        w->cb(w, w->status, NULL, 0, w->revision, w->data);
        w->busy = false;
        if (!w->held)
            kc_watch_close(w);
        /* The callback may have ended (or closed) anything: look again from the start. */
        w = ac->wdone.head;
    }
}

/* Hand a batch (or a notice, n 0) to the callback. False when w stopped being active meanwhile. */
static bool deliver(struct keel_watch *w, const Keel__ResponseHeader *hdr, Keel__Event **events,
                    size_t n, int64_t revision)
{
    if (revision > w->revision)
        w->revision = revision;
    w->busy = true;
    w->hdr = hdr;
    w->cb(w, 0, (const Keel__Event *const *)events, n, w->revision, w->data);
    w->hdr = NULL;
    w->busy = false;
    return w->state == KW_ACTIVE;
}

/* ---------------------------------------------------------------------------------------------
 * Frames
 */

static int send_create(struct keel_aclient *ac, struct keel_watch *w, struct kc_conn *c)
{
    Keel__WatchCreateRequest wc = KEEL__WATCH_CREATE_REQUEST__INIT;
    wc.key.data = w->key;
    wc.key.len = w->klen;
    if (w->end) {
        wc.range_end.data = w->end;
        wc.range_end.len = w->elen;
    }
    /* A resume starts at the first revision not delivered: history replays the rest. */
    wc.start_revision = w->created_once ? w->next_rev : w->start_rev;
    wc.progress_notify = w->progress_notify;
    wc.prev_kv = w->prev_kv;
    wc.shared_events = 1; /* kc_watch_response hands shared events to each watch named */
    Keel__WatchCreateRequest__FilterType filters[2];
    if (w->noput)
        filters[wc.n_filters++] = KEEL__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT;
    if (w->nodelete)
        filters[wc.n_filters++] = KEEL__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
    wc.filters = filters;
    wc.watch_id = ac->next_watch_id + 1;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = KC_WATCH_BIT | next_gen(ac) | w->slot;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &wc;
    req.token = w->token; /* NULL: the client's (kc_send_oneway) */
    int rv = kc_send_oneway(ac, c, &req);
    if (rv != 0)
        return rv;
    ac->next_watch_id++;
    w->token_gen = ac->token_gen;
    w->watch_id = wc.watch_id;
    w->server_id = 0;
    w->stream_id = req.id;
    w->conn = c;
    w->wait_marked = false;
    set_state(w, KW_CREATING);
    ac->stats.watch_creates++;
    if (w->created_once)
        ac->stats.watch_resumes++;
    return 0;
}

/* Tell the member to drop a watch. Best effort: its reply matches nothing and is dropped. */
static void send_cancel(struct keel_aclient *ac, struct kc_conn *c, int64_t watch_id, char *token)
{
    if (c->state != KC_READY)
        return;
    Keel__WatchCancelRequest wc = KEEL__WATCH_CANCEL_REQUEST__INIT;
    wc.watch_id = watch_id;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = KC_WATCH_BIT | next_gen(ac) | KC_NO_SLOT;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CANCEL;
    req.watch_cancel = &wc;
    req.token = token;
    (void)kc_send_oneway(ac, c, &req);
}

/* The reply carries the stream's id, which routes it to w as a progress notice. */
static int send_progress(struct keel_watch *w)
{
    Keel__WatchProgressRequest wp = KEEL__WATCH_PROGRESS_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = w->stream_id;
    req.body_case = KEEL__REQUEST__BODY_WATCH_PROGRESS;
    req.watch_progress = &wp;
    req.token = w->token;
    return kc_send_oneway(w->ac, w->conn, &req);
}

/* ---------------------------------------------------------------------------------------------
 * Routing and failures
 */

/* The attempt on c is over (connection lost, or refused): try again elsewhere after a backoff. */
static void watch_retry(struct keel_watch *w, struct kc_conn *c)
{
    struct keel_aclient *ac = w->ac;
    w->avoid_peer = c->peer;
    w->avoid_member = c->member_id;
    w->conn = NULL;
    if (w->fails < KW_FAILS_MAX)
        w->fails++;
    w->retry_at = uv_now(ac->loop) + kc_backoff(ac, w->fails, KW_RETRY_BASE_MS, KW_RETRY_CAP_MS);
    w->wait_marked = false;
    set_state(w, KW_WAITING);
    ac->need_route = true;
    kc_kick(ac);
}

/* Whether a member's refusal ends the watch rather than sending it elsewhere. A watch that ran
 * once is kept alive through anything another member (or the same one later) may answer
 * differently; a first creation reports what the caller has to know about. */
static bool refusal_is_final(const struct keel_watch *w, int status)
{
    switch (status) {
    case KEEL_EINVAL:
    case KEEL_EKEYTOOLONG:
    case KEEL_EPERMDENIED:
    case KEEL_EUNAUTHENTICATED:
    case KEEL_ECOMPACTED:
        return true;
    case KEEL_EUNAVAILABLE:
    case KEEL_ENOTLEADER:
    case KEEL_ETIMEOUT:
        return false;
    default:
        return !w->created_once;
    }
}

static void refused(struct keel_watch *w, struct kc_conn *c, int status, const char *msg)
{
    struct keel_aclient *ac = w->ac;
    if (w->state == KW_ACTIVE)
        send_cancel(ac, c, w->server_id, w->token); /* in case the member still holds it */
    /* The client's token expired: created again once the client has a new one (request.c),
     * twice at most in a row. */
    if (w->token == NULL && ac->user != NULL && kc_token_refused(status, msg) &&
        w->auth_fails < 2) {
        w->auth_fails++;
        if (w->token_gen == ac->token_gen)
            kc_auth_start(ac);
        watch_retry(w, c);
        return;
    }
    if (refusal_is_final(w, status))
        watch_end(w, status, "%s", msg);
    else
        watch_retry(w, c);
}

void kc_watch_route(struct keel_aclient *ac)
{
    if (ac->wsettling.n == 0 || ac->closing)
        return;
    uint64_t now = uv_now(ac->loop);
    uint64_t wake = UINT64_MAX;
    struct keel_watch *next;
    for (struct keel_watch *w = ac->wsettling.head; w != NULL; w = next) {
        /* Only w may leave the list below (ending); creating keeps it there. */
        next = w->next;
        if (w->deadline) {
            if (now >= w->deadline) {
                if (w->state == KW_CREATING)
                    send_cancel(ac, w->conn, w->watch_id, w->token);
                if (ac->last_dial_err[0])
                    watch_end(w, KEEL_ETIMEOUT, "watch not acknowledged within %u ms (%s)",
                              ac->request_timeout_ms, ac->last_dial_err);
                else
                    watch_end(w, KEEL_ETIMEOUT, "watch not acknowledged within %u ms",
                              ac->request_timeout_ms);
                continue;
            }
            if (w->deadline < wake)
                wake = w->deadline;
        }
        if (w->state != KW_WAITING)
            continue;
        if (w->token == NULL && ac->auth_running)
            continue; /* its creation waits for the client's new token */
        if (w->retry_at > now) {
            if (w->retry_at < wake)
                wake = w->retry_at;
            continue;
        }
        struct kc_conn *c = kc_pick_any(ac, w->avoid_peer, w->avoid_member, &wake);
        if (c != NULL) {
            int rv = send_create(ac, w, c);
            if (rv == KEEL_ETOOLARGE) {
                watch_end(w, rv, "watch request exceeds the %u-byte frame limit", ac->max_frame);
            } else if (rv != 0) {
                /* Out of memory: look again shortly rather than spin. */
                w->retry_at = now + KW_RETRY_CAP_MS;
                if (w->retry_at < wake)
                    wake = w->retry_at;
            }
            continue;
        }
        if (w->created_once)
            continue; /* never give up on a watch that ran */
        if (kc_dials_exhausted(ac, &w->wait_marked, &w->wait_mark))
            watch_end(w, KEEL_EUNAVAILABLE, "no member reachable: %s", ac->last_dial_err);
    }
    kc_schedule(ac, wake);
}

void kc_watch_conn_lost(struct keel_aclient *ac, struct kc_conn *c)
{
    /* Active watches move to wsettling (appended: seen again below, with conn NULL by then). */
    struct kc_wlist *lists[] = {&ac->watches, &ac->wsettling};
    for (int i = 0; i < 2; i++) {
        struct keel_watch *next;
        for (struct keel_watch *w = lists[i]->head; w != NULL; w = next) {
            next = w->next;
            if (w->conn == c)
                watch_retry(w, c);
        }
    }
}

void kc_watch_close_all(struct keel_aclient *ac)
{
    while (ac->watches.head != NULL)
        watch_end(ac->watches.head, KEEL_ECANCELED, "client closed");
    while (ac->wsettling.head != NULL)
        watch_end(ac->wsettling.head, KEEL_ECANCELED, "client closed");
}

/* ---------------------------------------------------------------------------------------------
 * Responses
 */

static int64_t event_rev(const Keel__Event *e)
{
    return e->kv ? e->kv->mod_revision : 0;
}

static void on_response(struct keel_watch *w, struct kc_conn *c, const Keel__Response *resp)
{
    struct keel_aclient *ac = w->ac;
    char msg[KC_MSG_MAX];
    int64_t hrev = resp->header ? resp->header->revision : 0;
    if (resp->error && resp->error->code != 0) {
        int status = keel_err_from_wire(resp->error->code);
        const char *m = resp->error->message;
        snprintf(msg, sizeof(msg), "%s", m && m[0] ? m : keel_strerror(status));
        refused(w, c, status, msg);
        return;
    }
    if (resp->body_case != KEEL__RESPONSE__BODY_WATCH || resp->watch == NULL) {
        snprintf(msg, sizeof(msg), "%s answered a watch with body %d", c->addr,
                 (int)resp->body_case);
        refused(w, c, KEEL_EINTERNAL, msg);
        return;
    }
    const Keel__WatchResponse *wr = resp->watch;
    if (w->state == KW_CREATING) {
        if (!wr->created)
            return; /* nothing else comes before the acknowledgement */
        w->server_id = wr->watch_id;
        w->fails = 0;
        w->auth_fails = 0;
        set_state(w, KW_ACTIVE);
        if (!w->created_once) {
            w->created_once = true;
            w->deadline = 0;
            /* From now on the watch promises every revision from here. */
            w->next_rev = w->start_rev > 0 ? w->start_rev : hrev + 1;
            if (w->created_notify && !deliver(w, resp->header, NULL, 0, hrev))
                return;
        }
        if (w->progress_wanted) {
            w->progress_wanted = false;
            (void)send_progress(w);
        }
        if (!wr->canceled && wr->n_events == 0)
            return;
    }
    if (w->state != KW_ACTIVE)
        return;
    if (wr->canceled) {
        const char *reason = wr->cancel_reason && wr->cancel_reason[0] ? wr->cancel_reason : NULL;
        if (wr->compact_revision > 0) {
            w->compact_rev = wr->compact_revision;
            watch_end(w, KEEL_ECOMPACTED, "%s",
                      reason ? reason : "required revision has been compacted");
        } else {
            watch_end(w, KEEL_ECANCELED, "watch canceled by %s: %s", c->addr,
                      reason ? reason : "no reason given");
        }
        return;
    }
    if (wr->n_events == 0) {
        /* watch_id -1 answers keel_watch_progress for the whole connection; the member's own
         * notifications are sent only to watches that have caught up, so they also move the
         * resume point (a resume then needs less history, which may have been compacted). */
        bool requested = wr->watch_id == -1;
        if (!requested && hrev >= w->next_rev)
            w->next_rev = hrev + 1;
        if (requested || w->progress_notify)
            deliver(w, resp->header, NULL, 0, hrev);
        return;
    }
    size_t skip = 0;
    while (skip < wr->n_events && event_rev(wr->events[skip]) < w->next_rev)
        skip++;
    ac->stats.watch_dups += skip;
    if (skip == wr->n_events)
        return;
    w->next_rev = event_rev(wr->events[wr->n_events - 1]) + 1;
    deliver(w, resp->header, wr->events + skip, wr->n_events - skip, hrev);
}

/* The watch request id names on c, or NULL: a reply to an earlier attempt, or to a watch that
 * ended, is dropped. */
static struct keel_watch *watch_of(struct keel_aclient *ac, struct kc_conn *c, uint64_t id)
{
    struct keel_watch *w = kc_slots_get(&ac->wslots, (uint32_t)id);
    return w != NULL && w->stream_id == id && w->conn == c ? w : NULL;
}

void kc_watch_response(struct keel_aclient *ac, struct kc_conn *c, const Keel__Response *resp)
{
    struct keel_watch *w = watch_of(ac, c, resp->id);
    if (w != NULL)
        on_response(w, c, resp);
    /* Events shared by several watches: each named one gets them as if sent to it alone. A
     * callback may end or move any watch, so each is looked up when its turn comes. */
    if (resp->body_case != KEEL__RESPONSE__BODY_WATCH || resp->watch == NULL)
        return;
    const Keel__WatchResponse *wr = resp->watch;
    for (size_t i = 0; i < wr->n_shared_ids && !ac->closing; i++) {
        if ((w = watch_of(ac, c, wr->shared_ids[i])) != NULL)
            on_response(w, c, resp);
    }
}

/* ---------------------------------------------------------------------------------------------
 * API
 */

int keel_aclient_watch(struct keel_aclient *ac, const void *key, size_t klen,
                       const struct keel_watch_opts *opts, keel_watch_cb cb, void *data,
                       struct keel_watch **out)
{
    static const struct keel_watch_opts defaults;
    if (out)
        *out = NULL;
    if (ac == NULL || cb == NULL || out == NULL || (klen > 0 && key == NULL))
        return KEEL_EINVAL;
    if (opts == NULL)
        opts = &defaults;
    if (ac->closing)
        return KEEL_ECLOSED;
    size_t elen = opts->range_end ? opts->range_end_len : 0;
    /* The member's rules, checked here so the caller hears at once. */
    if ((klen == 0 && elen == 0) || opts->start_revision < 0)
        return KEEL_EINVAL;
    /* The create frame's size, generously: key, range end and a few varint fields. */
    if (klen + elen + 64 > ac->max_frame)
        return KEEL_ETOOLARGE;
    struct keel_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return KEEL_ENOMEM;
    w->key = malloc(klen ? klen : 1);
    if (w->key == NULL)
        goto nomem;
    if (klen)
        memcpy(w->key, key, klen);
    w->klen = klen;
    if (elen) {
        w->end = malloc(elen);
        if (w->end == NULL)
            goto nomem;
        memcpy(w->end, opts->range_end, elen);
        w->elen = elen;
    }
    if (opts->token != NULL && opts->token[0] != '\0' && (w->token = strdup(opts->token)) == NULL)
        goto nomem;
    if (kc_slots_take(&ac->wslots, &w->slot) != 0)
        goto nomem;
    kc_slots_set(&ac->wslots, w->slot, w);
    w->ac = ac;
    w->cb = cb;
    w->data = data;
    w->start_rev = opts->start_revision;
    w->prev_kv = opts->prev_kv;
    w->noput = opts->noput;
    w->nodelete = opts->nodelete;
    w->progress_notify = opts->progress_notify;
    w->created_notify = opts->created_notify;
    w->avoid_peer = -1;
    w->deadline = uv_now(ac->loop) + ac->request_timeout_ms;
    w->state = KW_ENDED; /* on no list yet */
    set_state(w, KW_WAITING);
    ac->need_route = true;
    kc_kick(ac);
    kc_schedule(ac, w->deadline);
    *out = w;
    return 0;

nomem:
    kc_watch_close(w);
    return KEEL_ENOMEM;
}

int keel_watch_cancel(struct keel_watch *w)
{
    if (w == NULL)
        return KEEL_EINVAL;
    if (ended(w))
        return 0;
    if (w->conn != NULL) {
        /* Our id while the acknowledgement is still on its way: the member reads the create
         * first, both being on one connection. */
        send_cancel(w->ac, w->conn, w->state == KW_ACTIVE ? w->server_id : w->watch_id, w->token);
    }
    watch_end(w, KEEL_ECANCELED, "watch canceled");
    return 0;
}

int keel_watch_progress(struct keel_watch *w)
{
    if (w == NULL)
        return KEEL_EINVAL;
    if (ended(w))
        return KEEL_ECANCELED;
    if (w->state != KW_ACTIVE) {
        w->progress_wanted = true;
        return 0;
    }
    return send_progress(w);
}

int64_t keel_watch_compact_revision(const struct keel_watch *w)
{
    return w ? w->compact_rev : 0;
}

const char *keel_watch_error(const struct keel_watch *w)
{
    if (w == NULL || !ended(w))
        return "";
    return w->msg ? w->msg : keel_strerror(w->status);
}

const Keel__ResponseHeader *keel_watch_header(const struct keel_watch *w)
{
    return w ? w->hdr : NULL;
}

int64_t keel_watch_next_revision(const struct keel_watch *w)
{
    return w ? w->next_rev : 0;
}
