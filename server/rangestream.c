/*
 * Large ranges in pieces (see rangestream.h). One stream's life:
 *
 *   keel_rangestream_serve -> first page: the whole answer (done), or a partial one and the
 *     stream joins its session's ring
 *   the session's output drained -> pump: while the session's queue is short, the ring's next
 *     stream sends one page; its last page is the answer and ends it
 *   the session closing -> every stream of it dropped
 *
 * A session with streams has one drain hook (its struct sess); the hook goes when its last
 * stream ends.
 */
#include "rangestream.h"

#include <stdio.h>
#include <stdlib.h>

#include "arena.h"
#include "err.h"
#include "u64map.h"

#define PAGE_BYTES  (1u << 20) /* key-values per page: big enough that framing costs nothing */
#define PAGE_KEYS   65536u     /* keys looked at per page: bounds the loop's time in one page */
#define QUEUE_BYTES (1u << 20) /* make pages while the session has less than this queued */
/* A page's messages: 1 MiB of the smallest key-values takes about 2 MiB of structs, so one
 * chunk, kept across resets, holds a page without a malloc. */
#define ARENA_CHUNK (4u << 20)

struct stream {
    Keel__Request *req;
    struct keel_range_pager pager;
    struct stream *next;
};

/* A session's streams, taking turns. */
struct sess {
    struct keel_rangestream *rs;
    uint64_t id;
    struct stream *head, *tail;
};

struct keel_rangestream {
    const struct keel_reply *reply;
    struct keel_store *store;
    struct keel_u64map sessions; /* id -> struct sess, while it has streams */
    struct keel_arena arena;     /* one page, reset after each */
};

int keel_rangestream_new(const struct keel_reply *reply, struct keel_store *store,
                         struct keel_rangestream **out)
{
    struct keel_rangestream *rs = calloc(1, sizeof(*rs));
    if (rs == NULL)
        return KEEL_ENOMEM;
    rs->reply = reply;
    rs->store = store;
    keel_u64map_init(&rs->sessions);
    keel_arena_init(&rs->arena, ARENA_CHUNK);
    *out = rs;
    return 0;
}

static void stream_free(struct stream *st)
{
    keel__request__free_unpacked(st->req, NULL);
    free(st);
}

/*
 * Read st's next page and send it. 1 when that was its last (answered, or failed and answered
 * with the error), 0 when more follow.
 */
static int send_page(struct keel_rangestream *rs, uint64_t session, struct stream *st)
{
    const Keel__Request *req = st->req;
    Keel__RangeResponse *rr = NULL;
    int64_t rev = 0;
    bool first = !st->pager.started;
    keel_arena_reset(&rs->arena);
    int err = keel_store_range_page(rs->store, req->range, &st->pager, PAGE_BYTES, PAGE_KEYS,
                                    &rs->arena, &rr, &rev);
    if (err != 0) {
        char msg[160];
        const char *why = NULL;
        if (err == KEEL_ECOMPACTED && !first && req->range->revision <= 0) {
            /* Nothing the client was given counts: its retry reads at a newer revision. */
            snprintf(msg, sizeof(msg),
                     "revision %lld, which this range was being read at, was compacted before "
                     "its last piece was sent: ask again",
                     (long long)st->pager.revision);
            err = KEEL_EUNAVAILABLE;
            why = msg;
        }
        keel_reply_error(rs->reply, session, req->id, err, why);
        keel_arena_reset(&rs->arena);
        return 1;
    }
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_RANGE;
    resp.range = rr;
    keel_reply_send(rs->reply, session, &resp, rev,
                    st->pager.done ? KEEL_RESPOND_ANSWER : KEEL_RESPOND_PUSH);
    keel_arena_reset(&rs->arena);
    return st->pager.done;
}

static void sess_end(struct sess *ss)
{
    struct keel_rangestream *rs = ss->rs;
    const struct keel_responder *out = rs->reply->out;
    out->on_drain(out->ctx, ss->id, NULL, ss);
    keel_u64map_del(&rs->sessions, ss->id);
    free(ss);
}

static void drop_all(struct sess *ss)
{
    struct stream *st;
    while ((st = ss->head) != NULL) {
        ss->head = st->next;
        stream_free(st);
    }
    ss->tail = NULL;
}

/* The session's output drained (or it closed): the next pages, a page per stream in turn. */
static void drained(void *data, int closed)
{
    struct sess *ss = data;
    struct keel_rangestream *rs = ss->rs;
    const struct keel_responder *out = rs->reply->out;
    if (closed) {
        drop_all(ss);
        keel_u64map_del(&rs->sessions, ss->id);
        free(ss); /* the session dropped the hook itself */
        return;
    }
    size_t queued = 0;
    while (ss->head != NULL) {
        if (out->backlog(out->ctx, ss->id, &queued) != 0) {
            drop_all(ss); /* gone: its close comes back here with closed = 1 */
            return;
        }
        if (queued >= QUEUE_BYTES)
            return;
        struct stream *st = ss->head;
        ss->head = st->next;
        if (ss->head == NULL)
            ss->tail = NULL;
        st->next = NULL;
        if (send_page(rs, ss->id, st)) {
            stream_free(st);
        } else if (ss->tail != NULL) {
            ss->tail->next = st;
            ss->tail = st;
        } else {
            ss->head = ss->tail = st;
        }
    }
    sess_end(ss);
}

void keel_rangestream_serve(struct keel_rangestream *rs, uint64_t session, Keel__Request *req)
{
    /* The first page from the stack: most ranges end with it, at no allocation of their own. */
    struct stream first = {.req = req};
    if (send_page(rs, session, &first)) {
        keel__request__free_unpacked(req, NULL);
        return;
    }
    struct stream *st = malloc(sizeof(*st));
    if (st == NULL) {
        keel_reply_error(rs->reply, session, req->id, KEEL_ENOMEM, NULL);
        keel__request__free_unpacked(req, NULL);
        return;
    }
    *st = first;
    /* More to send: join (or open) the session's ring, and hear when its output drains. */
    struct sess *ss = keel_u64map_get(&rs->sessions, session);
    int err = 0;
    if (ss == NULL) {
        const struct keel_responder *out = rs->reply->out;
        if ((ss = calloc(1, sizeof(*ss))) == NULL) {
            err = KEEL_ENOMEM;
        } else {
            ss->rs = rs;
            ss->id = session;
            if (keel_u64map_put(&rs->sessions, session, ss) != 0)
                err = KEEL_ENOMEM;
            else if ((err = out->on_drain(out->ctx, session, drained, ss)) != 0)
                keel_u64map_del(&rs->sessions, session);
            if (err != 0) {
                free(ss);
                ss = NULL;
            }
        }
    }
    if (ss == NULL) {
        /* The session is gone (nothing to answer), or memory ran out. */
        if (err != KEEL_ECLOSED)
            keel_reply_error(rs->reply, session, req->id, err, NULL);
        stream_free(st);
        return;
    }
    if (ss->tail != NULL)
        ss->tail->next = st;
    else
        ss->head = st;
    ss->tail = st;
}

void keel_rangestream_free(struct keel_rangestream *rs)
{
    if (rs == NULL)
        return;
    const struct keel_responder *out = rs->reply->out;
    for (size_t i = 0; i < rs->sessions.cap; i++) {
        struct sess *ss = rs->sessions.keys[i] != 0 ? rs->sessions.vals[i] : NULL;
        if (ss == NULL)
            continue;
        out->on_drain(out->ctx, ss->id, NULL, ss);
        drop_all(ss);
        free(ss);
    }
    keel_u64map_close(&rs->sessions);
    keel_arena_close(&rs->arena);
    free(rs);
}
