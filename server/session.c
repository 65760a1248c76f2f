/*
 * Client sessions (see session.h). The life of one session:
 *
 *   on_connection -> reading <-> blocked (pump: a limit holds the next request; woken when it
 *                       |                 lifts: an answer, its output written, the gate opening)
 *                       |  refuse_frame: close_after_flush, stop reading
 *                       v
 *                 session_close (EOF, write error, cut off, flushed after a refusal,
 *                       |        keel_sessions_stop): out of the id map, output released
 *                       v
 *                 session_freed (uv close callback): handler->closed, drain hook told
 *                                closed, memory released
 *
 * The handler and the drain hook hear of a close only from the close callback, never from inside
 * a call of theirs: a session is cut off from inside a send (its output over a bound), and the
 * module sending may be walking its own lists of that session's state.
 *
 * Input: bytes are read into the frame decoder, and pump hands whole frames up one at a time for
 * as long as limit() lets the session take a request. At a limit it stops reading; the frames
 * already read wait in the decoder, and the socket is read again only once no whole frame is
 * left there. The limits are hard: one read holding many requests hands up only as many as the
 * limits allow. A session whose limit lifts is woken from an idle handle, not from inside the
 * answer that lifted it (answers come from inside the handler).
 *
 * Output: answers are framed into `out` as they come; a uv_check_t at the end of the loop turn
 * swaps `out` with `writing` and writes it in one uv_write (start_write), so one turn's replies
 * leave in one syscall however many there are. Once a session's output has all been written its
 * buffers are freed unless they are small (OUT_KEEP_CAP each, reused), so an idle session holds
 * at most 32 KiB, counted in max_output_bytes like any other output buffer; a session with a
 * drain hook (a stream sending its next piece when this drains) keeps them for that piece.
 *
 * What a member holds for its clients, and the bound on each (defaults in brackets):
 *   - output queued, all sessions together: at most max_output_bytes [512 MiB] of allocated
 *     buffers. Past half of it a session whose own output is not yet written takes no request
 *     (answers to requests already in flight may still come); a send that would pass it first
 *     cuts off the sessions with the most unread output. A cut-off session's buffers count as
 *     released at once: libuv lets go of the last one when the handle closes, that loop turn.
 *     One session alone is cut off past MAX_OUT_BYTES of output unread [256 MiB].
 *   - read buffers: a session reads only while its decoder holds less than one whole frame, so
 *     the decoder's buffer stays under 2 x (max_request_bytes + 128 KiB + 4) [2 MiB: it grows
 *     in powers of two], times max_connections [4096]: 8 GiB, every client holding a maximal
 *     frame half-sent.
 *   - requests handed up and not yet answered: at most max_inflight per session [1024] and
 *     max_inflight_total in all [8192], each holding one decoded request of at most
 *     max_request_bytes until its module is done with it (a write: at the latest the end of its
 *     loop turn, when it is encoded into a raft entry; a linearizable read: its barrier).
 *   - writes taken and not yet applied (the pressure hook main wires: this turn's batch, the
 *     entries raft holds, the storage writer's queue): once they reach max_apply_backlog_bytes
 *     [64 MiB] no session takes a request until they are down to half, so on a leader they stay
 *     under that plus one request. A follower's writer queue fills from the leader's log, which
 *     its own clients pausing cannot slow.
 *
 * TLS adds, per session (tls/tls.h keeps OpenSSL's two memory BIOs, which keep their largest
 * size): what one read fed it and it has not decrypted yet, at most READ_CHUNK plus a record
 * [80 KiB], since a TLS session reads its socket only once OpenSSL has no whole record left; the
 * ciphertext of at most TLS_CHUNK of plaintext at a time [16 KiB] on its way to the buffer
 * written; and OpenSSL's own record buffers, given back while idle (SSL_MODE_RELEASE_BUFFERS).
 * The ciphertext written is the session's `writing` buffer, counted in max_output_bytes and in
 * the session's unread output as plaintext is: a client reading nothing is cut off as before.
 * One shared READ_CHUNK buffer takes every TLS read (libuv calls alloc and read back to back).
 */
/*
 * Why one file of ~1250 lines: reading, the limits and the output accounting are one state
 * machine per session (reading <-> blocked <-> closing); every limit is decided from the
 * output and in-flight counts and acts on reading, and split apart the pieces would share every
 * field of struct keel_session and call each other both ways. TLS sits inside the same
 * machine: it decides when the socket is read and what the output buffers hold.
 */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "frame.h"
#include "log.h"
#include "reqkind.h"
#include "tls.h"
#include "u64map.h"

#define READ_CHUNK     (64 * 1024)
#define MAX_OUT_BYTES  (256u << 20) /* a client that reads nothing is cut off past this */
#define FRAME_OVERHEAD (64 * 1024)  /* envelope bytes allowed on top of the request limit */
#define OUT_MIN_CAP    4096
#define OUT_KEEP_CAP   (16 * 1024) /* what an idle session keeps of each output buffer */
#define TLS_CHUNK      (16 * 1024) /* plaintext encrypted at a time: one record's worth */

struct outbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Why a session takes no request now, and what wakes it. */
enum limit {
    FREE,
    OWN,  /* its own in-flight or output limit: its answer or its write wakes it */
    GATED /* a limit of all sessions: the gate opening wakes it */
};

/* Where a session waits: nowhere, to be pumped by the idle handle, or behind the gate. */
enum waiting { NOWHERE, WAKE, GATE };

/* One on_drain hook. A hook removed while hooks are being called is marked (cb NULL) and
 * unlinked once the calls are over. */
struct drain_hook {
    keel_drain_cb cb;
    void *data;
    struct drain_hook *next;
};

struct keel_session {
    struct keel_sessions *ss;
    const struct keel_session_handler *h; /* &ss->h, or an adopted session's own */
    uint64_t id;
    uv_tcp_t tcp;
    struct keel_frame_decoder dec;
    int accepted; /* in the id map once: the handler hears of its close */
    int hello_done;
    int reading;
    int closing;
    int close_after_flush;
    int in_pump;
    int blocked; /* a limit held its next request: not reading until woken */
    enum waiting waiting;
    struct keel_session *wait_next, *wait_prev;
    size_t inflight;
    struct outbuf out;     /* being filled */
    struct outbuf writing; /* being written */
    uv_write_t wreq;
    int write_busy;
    struct keel_session *dirty_next;
    int dirty;
    struct drain_hook *hooks; /* the responder's drain hooks, newest first */
    int in_drain;             /* hooks being called: removals only mark them */
    /* Requests handed up and not yet answered, by request id: when and what (started_pack),
     * for the request duration histograms. At most max_inflight entries; the table is given
     * back when it empties after growing past its first size. */
    struct keel_u64map started;
    struct keel_tls_conn *tls; /* NULL: plaintext */
    int tls_up;                /* its handshake completed (logged once) */
};

/* When a request was handed up (us) and its body case (< KEEL_SESSIONS_BODY_CASES = 2^7),
 * packed into the map's value itself: no allocation per request. Never NULL: a body is >= 1. */
#define STARTED_BODY_BITS 7
_Static_assert(KEEL_SESSIONS_BODY_CASES <= 1 << STARTED_BODY_BITS, "body cases fit the packing");
static void *started_pack(uint64_t at_us, int body)
{
    return (void *)(uintptr_t)((at_us << STARTED_BODY_BITS) | (uint64_t)body);
}

struct wait_list {
    struct keel_session *head, *tail;
    size_t n;
};

struct keel_sessions {
    uv_loop_t *loop;
    const struct keel_config *cfg;
    struct keel_session_handler h;
    uv_tcp_t listener;
    uv_check_t flush;
    uv_idle_t wake_idle;
    int wake_on;
    /* Active while sessions are dirty: output queued outside the check phase (a write callback
     * that runs in libuv's pending phase, a timer) must not wait for the loop's next wake-up
     * (an active idle handle makes the poll return at once; flush_dirty stops it). */
    uv_idle_t flush_idle;
    int flush_on;
    struct keel_u64map live;
    uint64_t next_id;
    struct keel_session *dirty;
    struct wait_list wake; /* blocked sessions whose limit lifted: pumped next turn */
    struct wait_list gate; /* blocked behind a limit of all sessions */
    size_t inflight;       /* all sessions */
    size_t out_bytes;      /* output buffer bytes allocated, all sessions */
    size_t n_blocked;
    uint64_t refused;  /* connections refused at max_connections */
    int inflight_gate; /* max_inflight_total reached; open again at inflight_low */
    int held;          /* the pressure hook reached its high mark; open again at its low */
    struct keel_sessions_pressure pressure;
    int closing;
    int open_handles;
    void (*close_cb)(void *data);
    void *close_data;
    /* Request durations by body case, each made at its first answer
     * (keel_sessions_request_seconds). */
    struct keel_histo *req_seconds[KEEL_SESSIONS_BODY_CASES];
    struct keel_tls_ctx *tls; /* NULL: plaintext (keel_sessions_set_tls) */
    uint8_t *tls_rbuf;        /* READ_CHUNK: every TLS read lands here first */
    struct keel_log_limit tls_log;
};

static void start_write(struct keel_session *s);
static void session_close(struct keel_session *s);
static void pump(struct keel_session *s);

static void keep_awake(uv_idle_t *h)
{
    (void)h; /* its being active is the point: the loop's poll does not sleep */
}

static void mark_dirty(struct keel_session *s)
{
    struct keel_sessions *ss = s->ss;
    if (!s->dirty) {
        s->dirty = 1;
        s->dirty_next = ss->dirty;
        ss->dirty = s;
    }
    if (!ss->flush_on && !ss->closing) {
        uv_idle_start(&ss->flush_idle, keep_awake);
        ss->flush_on = 1;
    }
}

/* ---- waiting lists ---- */

static void wait_del(struct keel_session *s)
{
    if (s->waiting == NOWHERE)
        return;
    struct wait_list *l = s->waiting == WAKE ? &s->ss->wake : &s->ss->gate;
    if (s->wait_prev)
        s->wait_prev->wait_next = s->wait_next;
    else
        l->head = s->wait_next;
    if (s->wait_next)
        s->wait_next->wait_prev = s->wait_prev;
    else
        l->tail = s->wait_prev;
    l->n--;
    s->wait_next = s->wait_prev = NULL;
    s->waiting = NOWHERE;
}

static void on_wake(uv_idle_t *h);

/* Append s to a list (at the tail: the first to block is the first woken). */
static void wait_add(struct keel_session *s, enum waiting where)
{
    struct keel_sessions *ss = s->ss;
    wait_del(s);
    struct wait_list *l = where == WAKE ? &ss->wake : &ss->gate;
    s->wait_prev = l->tail;
    s->wait_next = NULL;
    if (l->tail)
        l->tail->wait_next = s;
    else
        l->head = s;
    l->tail = s;
    l->n++;
    s->waiting = where;
    if (where == WAKE && !ss->wake_on && !ss->closing) {
        uv_idle_start(&ss->wake_idle, on_wake);
        ss->wake_on = 1;
    }
}

/* Pump the sessions woken before this turn; those woken meanwhile wait for the next. */
static void on_wake(uv_idle_t *h)
{
    struct keel_sessions *ss = h->data;
    for (size_t n = ss->wake.n; n > 0 && ss->wake.head != NULL; n--) {
        struct keel_session *s = ss->wake.head;
        wait_del(s);
        pump(s);
    }
    if (ss->wake.head == NULL) {
        uv_idle_stop(&ss->wake_idle);
        ss->wake_on = 0;
    }
}

/* ---- limits ---- */

/* Reopening the in-flight gate only well below the limit wakes the gated sessions in one go,
 * not all of them for every answer. */
static size_t inflight_low(const struct keel_sessions *ss)
{
    size_t max = ss->cfg->max_inflight_total;
    return max - 1 - max / 8;
}

static size_t unread(const struct keel_session *s)
{
    return s->out.len + s->writing.len;
}

/* Bytes TLS made for the network (handshake messages, alerts) and not yet taken. */
static size_t tls_pending(const struct keel_session *s)
{
    return s->tls != NULL ? keel_tls_conn_pending(s->tls) : 0;
}

/* Is there anything to write: answers, or TLS's own messages? */
static int has_output(const struct keel_session *s)
{
    return s->out.len > 0 || tls_pending(s) > 0;
}

static int gate_closed(const struct keel_sessions *ss)
{
    return ss->inflight_gate || ss->held;
}

static void gate_maybe_open(struct keel_sessions *ss)
{
    if (gate_closed(ss))
        return;
    while (ss->gate.head != NULL)
        wait_add(ss->gate.head, WAKE);
}

/* May s hand up a request now? Closes the gate when a limit of all sessions is reached. */
static enum limit limit(struct keel_session *s)
{
    struct keel_sessions *ss = s->ss;
    if (s->inflight >= ss->cfg->max_inflight)
        return OWN;
    if (ss->inflight >= ss->cfg->max_inflight_total)
        ss->inflight_gate = 1;
    if (!ss->held && ss->pressure.bytes != NULL &&
        ss->pressure.bytes(ss->pressure.data) >= ss->pressure.high) {
        ss->held = 1;
        KLOG_INFO("writes not yet applied reached %llu bytes: clients are not read until they "
                  "are down to %llu",
                  (unsigned long long)ss->pressure.high, (unsigned long long)ss->pressure.low);
    }
    if (gate_closed(ss))
        return GATED;
    if (ss->out_bytes >= ss->cfg->max_output_bytes / 2 && unread(s) > 0)
        return OWN;
    return FREE;
}

static void start_reading(struct keel_session *s);
static void stop_reading(struct keel_session *s);

static void set_blocked(struct keel_session *s, int blocked)
{
    if (s->blocked != blocked) {
        s->blocked = blocked;
        if (blocked)
            s->ss->n_blocked++;
        else
            s->ss->n_blocked--;
    }
}

/* Something s was waiting for may have changed: wake it, or move it where it now waits. */
static void recheck(struct keel_session *s)
{
    if (!s->blocked || s->closing || s->in_pump || s->waiting == WAKE)
        return;
    enum limit l = limit(s);
    if (l == FREE)
        wait_add(s, WAKE);
    else if (l == GATED && s->waiting != GATE)
        wait_add(s, GATE);
    else if (l == OWN)
        wait_del(s);
}

/* ---- output ---- */

static void out_release(struct keel_sessions *ss, struct outbuf *b)
{
    ss->out_bytes -= b->cap;
    free(b->data);
    *b = (struct outbuf){0};
}

/* Bytes b must grow by to take n more. */
static size_t out_growth(const struct outbuf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap ? b->cap : OUT_MIN_CAP;
    while (cap - b->len < n)
        cap *= 2;
    return cap - b->cap;
}

static int out_reserve(struct keel_sessions *ss, struct outbuf *b, size_t n)
{
    size_t grow = out_growth(b, n);
    if (grow == 0)
        return 0;
    uint8_t *nd = realloc(b->data, b->cap + grow);
    if (nd == NULL)
        return -1;
    b->data = nd;
    b->cap += grow;
    ss->out_bytes += grow;
    return 0;
}

/* Cut s off: what it has not read is dropped and the connection closes. */
static void cut_off(struct keel_session *s, const char *why)
{
    KLOG_WARN("session %llu: %zu bytes of output unread, %s: cut off", (unsigned long long)s->id,
              unread(s), why);
    session_close(s);
}

/* Make room for grow more bytes of output under max_output_bytes: cut off the sessions with the
 * most unread output, largest first. Clients that read keep their output small; the ones cut
 * off are those that stopped reading while their requests were still being answered. */
static void shed(struct keel_sessions *ss, size_t grow)
{
    while (ss->out_bytes + grow > ss->cfg->max_output_bytes) {
        struct keel_session *victim = NULL;
        for (size_t i = 0; i < ss->live.cap; i++) {
            struct keel_session *c = ss->live.keys[i] != 0 ? ss->live.vals[i] : NULL;
            if (c != NULL && unread(c) > 0 && (victim == NULL || unread(c) > unread(victim)))
                victim = c;
        }
        if (victim == NULL)
            return; /* nothing is queued: one message alone is over the bound */
        cut_off(victim, "the output of all sessions reached --max-output-bytes");
    }
}

/* Queue msg, whose framed size is n. */
static void session_send(struct keel_session *s, const ProtobufCMessage *msg, size_t n)
{
    struct keel_sessions *ss = s->ss;
    if (s->closing)
        return;
    if (unread(s) + n > MAX_OUT_BYTES) {
        cut_off(s, "over the bound of one session");
        return;
    }
    size_t grow = out_growth(&s->out, n);
    if (grow > 0 && ss->out_bytes + grow > ss->cfg->max_output_bytes) {
        shed(ss, grow);
        if (s->closing)
            return;
    }
    if (out_reserve(ss, &s->out, n) != 0) {
        cut_off(s, "out of memory");
        return;
    }
    s->out.len += keel_frame_pack(msg, s->out.data + s->out.len);
    mark_dirty(s);
}

static void session_done(struct keel_session *s)
{
    struct keel_sessions *ss = s->ss;
    if (s->closing)
        return;
    if (s->inflight > 0) {
        s->inflight--;
        ss->inflight--;
    }
    if (ss->inflight_gate && ss->inflight <= inflight_low(ss)) {
        ss->inflight_gate = 0;
        gate_maybe_open(ss);
    }
    recheck(s);
}

/* ---- request durations ----
 *
 * From the moment a request is handed up (decoded, past the back-pressure limits) to the moment
 * its answer is queued for the write: everything keeld does for it (propose, raft, apply, a
 * read's wait for its index), but not the time it waited in the socket or the session's buffer,
 * nor the write itself. Only requests answered once (not streams: watches, snapshots) are timed;
 * one answered by the end of a stream (respond_done) is dropped with its session.
 */

static void timing_start(struct keel_session *s, const Keel__Request *req)
{
    const struct keel_reqkind *kind = keel_reqkind_of(req->body_case);
    if (kind == NULL || (kind->flags & KEEL_REQKIND_STREAM) || req->id == 0 ||
        (int)req->body_case >= KEEL_SESSIONS_BODY_CASES || s->started.n >= s->ss->cfg->max_inflight)
        return;
    /* A client reusing an id in flight keeps one entry: the later request's. */
    void *v = started_pack(keel_histo_now_ns() / 1000, (int)req->body_case);
    (void)keel_u64map_del(&s->started, req->id);
    (void)keel_u64map_put(&s->started, req->id, v); /* out of memory: not timed */
}

static void timing_end(struct keel_session *s, const ProtobufCMessage *msg)
{
    if (msg->descriptor != &keel__response__descriptor)
        return;
    uint64_t id = ((const Keel__Response *)msg)->id;
    void *v = id != 0 ? keel_u64map_del(&s->started, id) : NULL;
    if (v == NULL)
        return;
    uint64_t packed = (uint64_t)(uintptr_t)v;
    int body = (int)(packed & ((1u << STARTED_BODY_BITS) - 1));
    uint64_t at_us = packed >> STARTED_BODY_BITS;
    if (s->started.n == 0 && s->started.cap > 64) {
        /* A burst grew the table: an idle session does not keep it. */
        keel_u64map_close(&s->started);
        keel_u64map_init(&s->started);
    }
    struct keel_sessions *ss = s->ss;
    struct keel_histo *h = ss->req_seconds[body];
    if (h == NULL && (h = malloc(sizeof(*h))) != NULL) {
        keel_histo_init_exp(h, 0.0001, 2, 20); /* 0.1 ms .. 52 s, as etcd's apply histogram */
        ss->req_seconds[body] = h;
    }
    if (h != NULL)
        keel_histo_observe_ns(h, keel_histo_now_ns() - at_us * 1000);
}

static void timing_close(struct keel_session *s)
{
    keel_u64map_close(&s->started); /* its values are packed, nothing to free */
}

const struct keel_histo *keel_sessions_request_seconds(const struct keel_sessions *ss, int body)
{
    return body >= 0 && body < KEEL_SESSIONS_BODY_CASES ? ss->req_seconds[body] : NULL;
}

/* ---- the responder seam ---- */

/* The session with id, NULL once it is closing. */
static struct keel_session *find(void *ctx, uint64_t id)
{
    return keel_u64map_get(&((struct keel_sessions *)ctx)->live, id);
}

static int respond_send(void *ctx, uint64_t id, const ProtobufCMessage *msg,
                        enum keel_respond_kind kind)
{
    struct keel_session *s = find(ctx, id);
    if (s == NULL)
        return KEEL_ECLOSED;
    size_t n = keel_frame_size(msg);
    /* An answer the client would refuse on its header alone: it would drop the connection and
     * retry in vain. The caller answers an error instead. */
    if (kind == KEEL_RESPOND_ANSWER && n - KEEL_FRAME_HEADER > KEEL_FRAME_DEFAULT_MAX)
        return KEEL_EREPLYTOOLARGE;
    session_send(s, msg, n);
    if (kind == KEEL_RESPOND_ANSWER) {
        timing_end(s, msg);
        session_done(s);
    }
    return 0;
}

static void respond_done(void *ctx, uint64_t id)
{
    struct keel_session *s = find(ctx, id);
    if (s != NULL)
        session_done(s);
}

static int respond_backlog(void *ctx, uint64_t id, size_t *bytes)
{
    struct keel_session *s = find(ctx, id);
    if (s == NULL)
        return KEEL_ECLOSED;
    *bytes = unread(s);
    return 0;
}

/* Unlink the hooks marked removed, unless they are being called. */
static void hooks_sweep(struct keel_session *s)
{
    if (s->in_drain)
        return;
    for (struct drain_hook **pp = &s->hooks; *pp != NULL;) {
        struct drain_hook *h = *pp;
        if (h->cb == NULL) {
            *pp = h->next;
            free(h);
        } else {
            pp = &h->next;
        }
    }
}

/* Tell every hook that the output drained (closed 0), or that the session is gone (closed 1:
 * every hook is removed). A hook may add or remove hooks meanwhile: one added is not called
 * this time, one removed is not called any more. */
static void hooks_call(struct keel_session *s, int closed)
{
    s->in_drain++;
    for (struct drain_hook *h = s->hooks; h != NULL; h = h->next) {
        keel_drain_cb cb = h->cb;
        if (cb == NULL)
            continue;
        if (closed)
            h->cb = NULL;
        cb(h->data, closed);
    }
    s->in_drain--;
    hooks_sweep(s);
}

static int respond_on_drain(void *ctx, uint64_t id, keel_drain_cb cb, void *data)
{
    struct keel_session *s = find(ctx, id);
    if (s == NULL)
        return KEEL_ECLOSED;
    struct drain_hook *h = s->hooks;
    while (h != NULL && (h->data != data || h->cb == NULL))
        h = h->next;
    if (cb == NULL) {
        if (h != NULL)
            h->cb = NULL;
        hooks_sweep(s);
        return 0;
    }
    if (h == NULL) {
        if ((h = malloc(sizeof(*h))) == NULL)
            return KEEL_ENOMEM;
        h->data = data;
        h->next = s->hooks;
        s->hooks = h;
    }
    h->cb = cb;
    if (!s->write_busy && s->out.len == 0)
        mark_dirty(s); /* already drained: say so at the end of this turn */
    return 0;
}

void keel_sessions_responder(struct keel_sessions *ss, struct keel_responder *out)
{
    out->ctx = ss;
    out->send = respond_send;
    out->done = respond_done;
    out->backlog = respond_backlog;
    out->on_drain = respond_on_drain;
}

/* ---- closing ---- */

static void sessions_maybe_closed(struct keel_sessions *ss)
{
    if (ss->closing && ss->open_handles == 0 && ss->close_cb != NULL) {
        void (*cb)(void *) = ss->close_cb;
        ss->close_cb = NULL;
        cb(ss->close_data);
    }
}

static void session_freed(uv_handle_t *h)
{
    struct keel_session *s = h->data;
    struct keel_sessions *ss = s->ss;
    if (s->dirty) {
        for (struct keel_session **pp = &ss->dirty; *pp != NULL; pp = &(*pp)->dirty_next) {
            if (*pp == s) {
                *pp = s->dirty_next;
                break;
            }
        }
    }
    if (s->accepted && s->h->closed != NULL)
        s->h->closed(s->h->data, s->id);
    hooks_call(s, 1);
    timing_close(s);
    keel_frame_decoder_close(&s->dec);
    keel_tls_conn_free(s->tls);
    free(s->out.data);
    free(s->writing.data);
    free(s);
    ss->open_handles--;
    sessions_maybe_closed(ss);
}

static void session_close(struct keel_session *s)
{
    struct keel_sessions *ss = s->ss;
    if (s->closing)
        return;
    s->closing = 1;
    keel_u64map_del(&ss->live, s->id);
    wait_del(s);
    set_blocked(s, 0);
    ss->inflight -= s->inflight;
    s->inflight = 0;
    if (ss->inflight_gate && ss->inflight <= inflight_low(ss)) {
        ss->inflight_gate = 0;
        gate_maybe_open(ss);
    }
    /* Its output is released now: nothing more is written. A write in flight keeps its buffer
     * until the close callback, this loop turn; it counts as released already, so cutting off
     * one session never makes room by cutting off another. */
    out_release(ss, &s->out);
    ss->out_bytes -= s->writing.cap;
    if (!s->write_busy) {
        free(s->writing.data);
        s->writing = (struct outbuf){0};
    }
    s->writing.cap = 0;
    /* A write in flight completes (with an error) before the close callback runs. */
    uv_close((uv_handle_t *)&s->tcp, session_freed);
}

/* ---- writing ---- */

/* Everything in `writing` went out (at once, or by a write request's callback). */
static void wrote(struct keel_session *s)
{
    if (has_output(s)) {
        start_write(s);
        return;
    }
    /* All written: an idle session keeps only small buffers (reused by the next turn's answers:
     * a malloc and free per write otherwise) and gives back big ones, unless a stream waits
     * for this drain to send its next piece into them. */
    if (s->hooks == NULL) {
        if (s->writing.cap > OUT_KEEP_CAP)
            out_release(s->ss, &s->writing);
        if (s->out.cap > OUT_KEEP_CAP)
            out_release(s->ss, &s->out);
    }
    if (s->close_after_flush) {
        session_close(s);
        return;
    }
    recheck(s);
    hooks_call(s, 0);
}

static void write_cb(uv_write_t *req, int status)
{
    struct keel_session *s = req->data;
    s->write_busy = 0;
    s->writing.len = 0;
    if (s->closing)
        return;
    if (status != 0) {
        session_close(s);
        return;
    }
    wrote(s);
}

/* Move what TLS has for the network into `writing`, under the output bounds. 0, or -1 when s
 * was cut off for it. */
static int tls_take(struct keel_session *s)
{
    struct keel_sessions *ss = s->ss;
    size_t n = keel_tls_conn_pending(s->tls);
    if (n == 0)
        return 0;
    size_t grow = out_growth(&s->writing, n);
    if (grow > 0 && ss->out_bytes + grow > ss->cfg->max_output_bytes) {
        shed(ss, grow);
        if (s->closing)
            return -1;
    }
    if (out_reserve(ss, &s->writing, n) != 0) {
        cut_off(s, "out of memory");
        return -1;
    }
    s->writing.len += keel_tls_conn_take(s->tls, s->writing.data + s->writing.len, n);
    return 0;
}

/* Encrypt the turn's output (`out`, emptied) into `writing`, a record's worth at a time so that
 * the ciphertext TLS holds stays small. 0, or -1 when s was closed. */
static int tls_seal(struct keel_session *s)
{
    size_t off = 0;
    for (;;) {
        if (tls_take(s) != 0)
            return -1;
        if (off == s->out.len)
            break;
        size_t n = s->out.len - off < TLS_CHUNK ? s->out.len - off : TLS_CHUNK;
        int rv = keel_tls_conn_write(s->tls, s->out.data + off, n);
        if (rv != 0) {
            KLOG_DEBUG("session %llu: TLS write: %s", (unsigned long long)s->id,
                       rv == KEEL_ENOMEM ? "out of memory" : keel_tls_conn_error(s->tls));
            session_close(s);
            return -1;
        }
        off += n;
    }
    s->out.len = 0;
    return 0;
}

static void start_write(struct keel_session *s)
{
    if (s->write_busy || s->closing || !has_output(s))
        return;
    if (s->tls != NULL) {
        /* `writing` is empty (no write is out): the ciphertext goes there. */
        if (tls_seal(s) != 0 || s->writing.len == 0)
            return;
    } else {
        /* Swap: what this turn produced goes out in one write; new replies fill the other
         * buffer. */
        struct outbuf tmp = s->writing;
        s->writing = s->out;
        s->out = tmp;
        s->out.len = 0;
    }
    uv_buf_t buf = uv_buf_init((char *)s->writing.data, (unsigned)s->writing.len);
    /* Written at once when the socket's buffer takes it all, as it mostly does: a write request
     * costs libuv an epoll_ctl to watch for writability, another to stop, and a pass of the
     * loop for its callback, about as many system calls as the write itself. Only what does not
     * fit waits for a write request. (No request is out, so nothing can be overtaken.) */
    int n = uv_try_write((uv_stream_t *)&s->tcp, &buf, 1);
    if (n == (int)buf.len) {
        s->writing.len = 0;
        wrote(s);
        return;
    }
    if (n > 0) {
        buf.base += n;
        buf.len -= (unsigned)n;
    } else if (n != UV_EAGAIN) {
        session_close(s); /* the connection failed: write_cb would have closed it */
        return;
    }
    s->wreq.data = s;
    s->write_busy = 1;
    if (uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &buf, 1, write_cb) != 0) {
        s->write_busy = 0;
        session_close(s);
    }
}

static void flush_dirty(uv_check_t *h)
{
    struct keel_sessions *ss = h->data;
    struct keel_session *s = ss->dirty;
    ss->dirty = NULL;
    if (ss->flush_on) {
        uv_idle_stop(&ss->flush_idle); /* mark_dirty starts it again for what comes below */
        ss->flush_on = 0;
    }
    while (s != NULL) {
        struct keel_session *next = s->dirty_next;
        s->dirty = 0;
        if (!s->closing) {
            if (has_output(s))
                start_write(s);
            else if (!s->write_busy && s->close_after_flush)
                session_close(s);
            else if (!s->write_busy && s->hooks != NULL)
                hooks_call(s, 0);
        }
        s = next;
    }
    /* Once a turn: has the work the sessions yield to drained enough? */
    if (ss->held &&
        (ss->pressure.bytes == NULL || ss->pressure.bytes(ss->pressure.data) <= ss->pressure.low)) {
        ss->held = 0;
        KLOG_INFO("writes not yet applied are down to %llu bytes or less: reading clients again",
                  (unsigned long long)ss->pressure.low);
        gate_maybe_open(ss);
    }
}

/* ---- reading ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void start_reading(struct keel_session *s)
{
    if (!s->reading && !s->closing) {
        uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
        s->reading = 1;
    }
}

static void stop_reading(struct keel_session *s)
{
    if (s->reading && !s->closing) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = 0;
    }
}

/* The handler tells the client why; the session closes once that is written. */
static void refuse_frame(struct keel_session *s, int err, const char *msg)
{
    /* reply.c logs the refusal, rate-limited */
    KLOG_DEBUG("session %llu: %s; closing", (unsigned long long)s->id, msg);
    s->h->refuse(s->h->data, s->id, err, msg);
    s->close_after_flush = 1;
    stop_reading(s);
    wait_del(s);
    set_blocked(s, 0);
    mark_dirty(s);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct keel_session *s = h->data;
    uint8_t *p;
    size_t len;
    (void)suggested;
    if (s->tls != NULL) {
        *buf = uv_buf_init((char *)s->ss->tls_rbuf, READ_CHUNK);
        return;
    }
    if (keel_frame_decoder_space(&s->dec, READ_CHUNK, &p, &len) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)p, (unsigned)(len > READ_CHUNK * 4 ? READ_CHUNK * 4 : len));
}

static int handle_frame(struct keel_session *s, const uint8_t *payload, size_t len)
{
    struct keel_sessions *ss = s->ss;
    ProtobufCMessage *m = NULL;
    if (!s->hello_done) {
        if (keel_frame_unpack(&keel__hello__descriptor, NULL, payload, len, &m) != 0) {
            refuse_frame(s, KEEL_EBADFRAME, "the first frame must be a Hello");
            return -1;
        }
        s->hello_done = 1;
        s->h->hello(s->h->data, s->id, (Keel__Hello *)m);
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    /* Checked beyond protobuf-c's own checks: a write is packed again into the raft log. */
    if (keel_frame_unpack(&keel__request__descriptor, NULL, payload, len, &m) != 0) {
        refuse_frame(s, KEEL_EBADFRAME, "frame does not decode as a Request");
        return -1;
    }
    s->inflight++;
    ss->inflight++;
    timing_start(s, (Keel__Request *)m);
    s->h->request(s->h->data, s->id, (Keel__Request *)m);
    return 0;
}

/* ---- TLS ---- */

/* The client's address, for messages. */
static void peer_name(struct keel_session *s, char *out, size_t len)
{
    struct sockaddr_storage sa;
    int n = sizeof(sa);
    char ip[64] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&sa, &n) == 0 && sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
        uv_ip4_name(in, ip, sizeof(ip));
        port = ntohs(in->sin_port);
    }
    snprintf(out, len, "%s:%d", ip, port);
}

/* The TLS connection failed (rv: keel_tls_conn_feed's or _read's error). A client's goodbye
 * (close_notify) is an end of stream; anything else is logged and closes the session once the
 * alert TLS queued for the client is written. */
static void tls_fail(struct keel_session *s, int rv)
{
    struct keel_sessions *ss = s->ss;
    if (rv != KEEL_ETLS) {
        KLOG_DEBUG("session %llu: TLS: %s", (unsigned long long)s->id,
                   rv == KEEL_ECLOSED ? "the client said goodbye" : keel_strerror(rv));
        session_close(s);
        return;
    }
    uint64_t left = 0;
    if (keel_log_limit_take(&ss->tls_log, &left)) {
        char peer[80];
        peer_name(s, peer, sizeof(peer));
        if (left > 0)
            KLOG_WARN("(%llu more client TLS failures not logged)", (unsigned long long)left);
        KLOG_WARN("client %s: TLS %s: %s; closing the connection", peer,
                  s->tls_up ? "record" : "handshake failed", keel_tls_conn_error(s->tls));
    }
    s->close_after_flush = 1;
    stop_reading(s);
    wait_del(s);
    set_blocked(s, 0);
    mark_dirty(s); /* the alert goes out, then the session closes (flush_dirty, write_cb) */
}

/* After TLS was fed or read: send what it made, note a handshake that completed. */
static void tls_after(struct keel_session *s)
{
    if (tls_pending(s) > 0)
        mark_dirty(s);
    if (!s->tls_up && keel_tls_conn_established(s->tls)) {
        s->tls_up = 1;
        char cn[256];
        int rv = keel_tls_conn_peer_cn(s->tls, cn, sizeof(cn));
        KLOG_DEBUG("session %llu: %s established, client certificate CN %s",
                   (unsigned long long)s->id, keel_tls_conn_version(s->tls), rv == 0 ? cn : "none");
    }
}

/* Move the plaintext TLS has decrypted into the frame decoder: 1 when some came, 0 when it needs
 * more from the network, -1 when the session failed (handled). */
static int tls_fill(struct keel_session *s)
{
    uint8_t *p;
    size_t len, n = 0;
    if (keel_frame_decoder_space(&s->dec, READ_CHUNK, &p, &len) != 0) {
        session_close(s);
        return -1;
    }
    int rv = keel_tls_conn_read(s->tls, p, len > READ_CHUNK * 4 ? READ_CHUNK * 4 : len, &n);
    tls_after(s);
    if (rv != 0) {
        tls_fail(s, rv);
        return -1;
    }
    keel_frame_decoder_commit(&s->dec, n);
    return n > 0;
}

/* Hand up the whole frames read while the limits allow; read more once none is left. */
static void pump(struct keel_session *s)
{
    enum limit l = FREE;
    s->in_pump = 1;
    while (!s->closing && !s->close_after_flush) {
        /* The handshake is no request: a client held back still learns whom it talks to. */
        if (s->hello_done && (l = limit(s)) != FREE)
            break;
        const uint8_t *payload;
        size_t len;
        int rv = keel_frame_decoder_next(&s->dec, &payload, &len);
        if (rv == 0 && s->tls != NULL) {
            /* What TLS decrypted already comes before the socket. */
            int got = tls_fill(s);
            if (got > 0)
                continue;
            if (got < 0)
                break;
        }
        if (rv == 0) {
            set_blocked(s, 0);
            start_reading(s);
            break;
        }
        if (rv < 0) {
            refuse_frame(s, rv == KEEL_EFRAMETOOLARGE ? KEEL_EFRAMETOOLARGE : rv,
                         rv == KEEL_EFRAMETOOLARGE ? "frame exceeds the maximum request size"
                                                   : keel_strerror(rv));
            break;
        }
        if (handle_frame(s, payload, len) != 0)
            break;
    }
    s->in_pump = 0;
    if (l == FREE || s->closing || s->close_after_flush)
        return;
    stop_reading(s);
    set_blocked(s, 1);
    if (l == GATED)
        wait_add(s, GATE);
    else
        wait_del(s);
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct keel_session *s = st->data;
    if (n < 0) {
        /* Read only while no whole frame waits: what is left is part of one. */
        if (n == UV_EOF && keel_frame_decoder_pending(&s->dec) > 0) {
            /* A half-closed client can still read why its last frame was dropped. */
            refuse_frame(s, KEEL_EBADFRAME, "connection ended inside a frame");
            return;
        }
        if (n != UV_EOF)
            KLOG_DEBUG("session %llu: read: %s", (unsigned long long)s->id, uv_strerror((int)n));
        session_close(s);
        return;
    }
    if (n == 0)
        return;
    if (s->tls != NULL) {
        int rv = keel_tls_conn_feed(s->tls, buf->base, (size_t)n);
        tls_after(s);
        if (rv != 0) {
            tls_fail(s, rv);
            return;
        }
    } else {
        keel_frame_decoder_commit(&s->dec, (size_t)n);
    }
    pump(s);
}

/*
 * A connection past max_connections is told why in place of the handshake's answer and closed.
 * The answer goes out in one non-blocking write (a fresh socket's send buffer takes it whole), so
 * a flood of connections costs an accept, a write and a close each and holds nothing open.
 */
static void refuse_connection(struct keel_sessions *ss, uv_tcp_t *tcp)
{
    /* A TLS client would take a plaintext answer for a broken handshake: it is closed unanswered
     * (its handshake fails on the close). */
    if (ss->tls == NULL) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "too many client connections: this member serves at most %zu "
                 "(--max-connections)",
                 ss->cfg->max_connections);
        Keel__Error e = KEEL__ERROR__INIT;
        e.code = KEEL__ERROR_CODE__TOO_MANY_REQUESTS;
        e.message = msg;
        Keel__HelloResponse hr = KEEL__HELLO_RESPONSE__INIT;
        hr.error = &e;
        uint8_t frame[256];
        if (keel_frame_size(&hr.base) <= sizeof(frame)) {
            uv_buf_t b = uv_buf_init((char *)frame, (unsigned)keel_frame_pack(&hr.base, frame));
            uv_try_write((uv_stream_t *)tcp, &b, 1);
        }
    }
    /* Logged at the 1st, 2nd, 4th, 8th... refusal: a flood must not flood the log too. */
    uint64_t n = ++ss->refused;
    if ((n & (n - 1)) == 0)
        KLOG_WARN("client connection refused: %zu open, the --max-connections limit (%llu "
                  "refused so far)",
                  ss->live.n, (unsigned long long)n);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct keel_sessions *ss = server->data;
    if (status != 0 || ss->closing)
        return;
    struct keel_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return;
    s->ss = ss;
    s->h = &ss->h;
    keel_u64map_init(&s->started);
    s->id = ++ss->next_id;
    uv_tcp_init(ss->loop, &s->tcp);
    s->tcp.data = s;
    ss->open_handles++;
    keel_frame_decoder_init(&s->dec, ss->cfg->max_request_bytes + FRAME_OVERHEAD);
    int rv = uv_accept(server, (uv_stream_t *)&s->tcp);
    if (rv == 0 && ss->live.n >= ss->cfg->max_connections) {
        refuse_connection(ss, &s->tcp);
        rv = -1;
    }
    if (rv == 0 && ss->tls != NULL && keel_tls_conn_new(ss->tls, NULL, &s->tls) != 0)
        rv = -1;
    if (rv != 0 || keel_u64map_get(&ss->live, s->id) != NULL ||
        keel_u64map_put(&ss->live, s->id, s) != 0) {
        s->closing = 1;
        uv_close((uv_handle_t *)&s->tcp, session_freed);
        return;
    }
    s->accepted = 1;
    uv_tcp_nodelay(&s->tcp, 1);
    pump(s);
}

int keel_sessions_adopt(struct keel_sessions *ss, int fd, const struct keel_session_handler *h,
                        uint64_t *id)
{
    struct keel_session *s = ss->closing ? NULL : calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        return ss->closing ? KEEL_ECLOSED : KEEL_ENOMEM;
    }
    s->ss = ss;
    s->h = h;
    keel_u64map_init(&s->started);
    s->id = ++ss->next_id;
    uv_tcp_init(ss->loop, &s->tcp);
    s->tcp.data = s;
    ss->open_handles++;
    keel_frame_decoder_init(&s->dec, ss->cfg->max_request_bytes + FRAME_OVERHEAD);
    /* uv_tcp_open takes any stream socket: the peer link's socketpair end as well. */
    int rv = uv_tcp_open(&s->tcp, fd);
    if (rv != 0)
        close(fd);
    if (rv != 0 || keel_u64map_put(&ss->live, s->id, s) != 0) {
        s->closing = 1;
        uv_close((uv_handle_t *)&s->tcp, session_freed);
        return rv != 0 ? KEEL_EIO : KEEL_ENOMEM;
    }
    s->accepted = 1;
    *id = s->id;
    pump(s);
    return 0;
}

int keel_sessions_new(uv_loop_t *loop, const struct keel_config *cfg, struct keel_sessions **out)
{
    struct keel_sessions *ss = calloc(1, sizeof(*ss));
    if (ss == NULL)
        return KEEL_ENOMEM;
    ss->loop = loop;
    ss->cfg = cfg;
    keel_u64map_init(&ss->live);
    uv_tcp_init(loop, &ss->listener);
    ss->listener.data = ss;
    uv_check_init(loop, &ss->flush);
    ss->flush.data = ss;
    uv_check_start(&ss->flush, flush_dirty);
    uv_idle_init(loop, &ss->wake_idle);
    ss->wake_idle.data = ss;
    uv_idle_init(loop, &ss->flush_idle);
    ss->flush_idle.data = ss;
    ss->open_handles = 4;
    ss->tls_log = (struct keel_log_limit){.per_sec = 10};
    *out = ss;
    return 0;
}

int keel_sessions_set_tls(struct keel_sessions *ss, struct keel_tls_ctx *tls)
{
    if (tls != NULL && ss->tls_rbuf == NULL && (ss->tls_rbuf = malloc(READ_CHUNK)) == NULL)
        return KEEL_ENOMEM;
    ss->tls = tls;
    return 0;
}

int keel_sessions_peer_cn(const struct keel_sessions *ss, uint64_t session, char *buf, size_t cap)
{
    const struct keel_session *s = keel_u64map_get(&ss->live, session);
    if (s == NULL || s->tls == NULL)
        return KEEL_ENOTFOUND;
    return keel_tls_conn_peer_cn(s->tls, buf, cap);
}

void keel_sessions_set_pressure(struct keel_sessions *ss, const struct keel_sessions_pressure *p)
{
    if (p != NULL)
        ss->pressure = *p;
    else
        ss->pressure = (struct keel_sessions_pressure){0};
}

void keel_sessions_stat(const struct keel_sessions *ss, struct keel_sessions_stat *out)
{
    out->sessions = ss->live.n;
    out->inflight = ss->inflight;
    out->output_bytes = ss->out_bytes;
    out->blocked = ss->n_blocked;
    out->held = ss->held;
}

int keel_sessions_listen(struct keel_sessions *ss, const struct keel_session_handler *h)
{
    ss->h = *h;
    char host[KEEL_ADDR_MAX];
    int port;
    struct sockaddr_in addr;
    keel_addr_split(ss->cfg->listen_client, host, sizeof(host), &port);
    uv_ip4_addr(host, port, &addr);
    int rv = uv_tcp_bind(&ss->listener, (const struct sockaddr *)&addr, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&ss->listener, 511, on_connection);
    if (rv != 0) {
        KLOG_ERROR("listen on %s: %s", ss->cfg->listen_client, uv_strerror(rv));
        return KEEL_EIO;
    }
    return 0;
}

static void handle_closed(uv_handle_t *h)
{
    struct keel_sessions *ss = h->data;
    ss->open_handles--;
    sessions_maybe_closed(ss);
}

void keel_sessions_stop(struct keel_sessions *ss, void (*cb)(void *data), void *data)
{
    ss->closing = 1;
    ss->close_cb = cb;
    ss->close_data = data;
    uv_close((uv_handle_t *)&ss->listener, handle_closed);
    uv_check_stop(&ss->flush);
    uv_close((uv_handle_t *)&ss->flush, handle_closed);
    uv_idle_stop(&ss->wake_idle);
    ss->wake_on = 0;
    uv_close((uv_handle_t *)&ss->wake_idle, handle_closed);
    uv_idle_stop(&ss->flush_idle);
    ss->flush_on = 0;
    uv_close((uv_handle_t *)&ss->flush_idle, handle_closed);
    /* Collect first: closing removes sessions from the map. */
    size_t n = 0;
    struct keel_session **all = calloc(ss->live.n + 1, sizeof(*all));
    for (size_t i = 0; all != NULL && i < ss->live.cap; i++)
        if (ss->live.keys[i] != 0)
            all[n++] = ss->live.vals[i];
    for (size_t i = 0; i < n; i++)
        session_close(all[i]);
    free(all);
}

void keel_sessions_free(struct keel_sessions *ss)
{
    if (ss == NULL)
        return;
    keel_u64map_close(&ss->live);
    for (int i = 0; i < KEEL_SESSIONS_BODY_CASES; i++)
        free(ss->req_seconds[i]);
    free(ss->tls_rbuf);
    free(ss);
}
