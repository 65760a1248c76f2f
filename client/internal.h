/*
 * libkeel internals: the asynchronous client and the files it is made of.
 *
 * Files from the bottom up; each calls only files listed before it, and reports upward only
 * through callbacks it was given. conn.c does not even see this header: what it needs comes in
 * through conn.h.
 *
 *   slots.c    the id -> object table of requests and watch streams        (slots.h)
 *   op.c       an op's memory and the lists it moves along                 (op.h)
 *   heap.c     ops by deadline                                             (op.h)
 *   conn.c     one connection: dial, handshake, writes, reads; events out  (conn.h)
 *   wake.c     when the client runs next: end of this loop turn, a timer, a backoff
 *   route.c    the members known, and which connection a request or a watch takes
 *   request.c  requests: submit, route, retry, answer, expire
 *   watch.c    watches: create, deliver, resume, cancel
 *   client.c   the client itself: init, close, each loop turn, connection events
 *   keepalive.c keep-alive sets: leases renewed in the background, as requests of the core
 *   sync.c     the synchronous API: a client on a private loop thread
 *   calls.c    keel_put, keel_get, ...: one request each, through keel_do
 *   snapshot.c keel_snapshot: a snapshot download on a blocking connection of its own
 *
 * Callbacks for server answers run at once, from the read callback (the reply lives in the
 * connection's arena only until the next frame); local failures are queued and delivered from
 * the loop turn's drain (client.c), so internal state is never changed underneath user code.
 */
#ifndef KEEL_CLIENT_INTERNAL_H
#define KEEL_CLIENT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "conn.h"
#include "keel/keel.h"
#include "op.h"
#include "slots.h"

#define KC_ZONE_MAX  64
#define KC_MAX_PEERS 64 /* endpoints plus members learned; more are ignored */
/* Set in the ids of watch streams (and their cancel/progress frames); request ids never have it,
 * so a reply is routed to the watch table or to the request slots on this bit alone. */
#define KC_WATCH_BIT (UINT64_C(1) << 63)

/*
 * A watch moves through these states; only KW_ACTIVE receives events.
 *
 *   KW_WAITING   needs a connection (none ready yet, or a backoff after a failed attempt)
 *   KW_CREATING  its WatchCreate is queued or sent on w->conn, not yet acknowledged
 *   KW_ACTIVE    acknowledged by the member on w->conn
 *   KW_DONE      ended; its final callback runs at the next safe point (on ac->wdone)
 *   KW_ENDED     final callback delivered; only a held handle (sync API) stays in this state
 */
enum kc_watch_state { KW_WAITING, KW_CREATING, KW_ACTIVE, KW_DONE, KW_ENDED };

struct kc_wlist {
    struct keel_watch *head, *tail;
    size_t n;
};

struct keel_watch {
    struct keel_watch *prev, *next; /* the list of its state: ac->wsettling, watches, wdone */
    struct keel_aclient *ac;
    struct kc_conn *conn; /* KW_CREATING, KW_ACTIVE */
    keel_watch_cb cb;
    void *data;
    uint8_t *key, *end; /* end NULL: the single key */
    size_t klen, elen;
    int64_t start_rev;   /* as asked (0: from the revision after creation) */
    int64_t next_rev;    /* first revision not delivered yet; 0 until the first creation */
    int64_t revision;    /* highest header revision handed to the callback */
    int64_t compact_rev; /* KEEL_ECOMPACTED: the member's compacted revision */
    int64_t watch_id;    /* ours, fresh for every attempt */
    int64_t server_id;   /* as the member acknowledged it */
    uint64_t stream_id;  /* id of the current WatchCreate: the stream's responses carry it */
    uint64_t deadline;   /* loop time by which the first creation must succeed; 0 afterwards */
    uint64_t retry_at;   /* KW_WAITING: not before this loop time */
    uint64_t avoid_member;
    int avoid_peer;
    uint32_t slot;
    uint32_t wait_mark; /* ac->dial_failures when the first creation began waiting */
    uint16_t fails;     /* consecutive failed attempts, for the backoff */
    uint8_t auth_fails; /* consecutive creations refused for the client's token */
    uint32_t token_gen; /* ac->token_gen when its last creation was sent */
    uint8_t state;
    bool wait_marked;
    bool prev_kv, noput, nodelete, progress_notify, created_notify;
    bool created_once;    /* a member acknowledged it at least once */
    bool progress_wanted; /* keel_watch_progress while not active: ask once created */
    bool held;            /* sync API: keep the handle after the final callback */
    bool busy;            /* its callback is running (a drain must not end it meanwhile) */
    int status;           /* KW_DONE / KW_ENDED: why it ended */
    char *msg;            /* ... and the message (malloc'd; NULL: keel_strerror) */
    char *token;          /* keel_watch_opts.token (malloc'd); NULL: the client's */
    const Keel__ResponseHeader *hdr; /* during a callback: the response's header */
};

struct kc_peer {
    char addr[KC_ADDR_MAX];
    struct sockaddr_in sa;
    char zone[KC_ZONE_MAX];
    uint64_t member_id;
    bool from_endpoints; /* listed in options.endpoints */
    bool in_cluster;     /* named by the last HelloResponse's member list */
    bool learner;
    uint32_t fails;       /* consecutive failures; 0 after a handshake */
    uint64_t next_try;    /* loop time before which it is not dialled again for routing */
    struct kc_conn *conn; /* live connection (not closed), at most one */
};

struct keel_aclient {
    uv_loop_t *loop;
    bool closing;
    bool need_route; /* waiting requests and watches should be looked at */
    bool draining;
    keel_close_cb close_cb;
    void *close_data;

    /* wake.c: the client's three handles and what they run (set by client.c) */
    uv_prepare_t prepare;
    uv_check_t check;
    uv_timer_t timer;
    int open_handles;                         /* of these three, not yet closed */
    keel_close_cb wake_closed;                /* all are closed (kc_wake_close) */
    bool kicked;                              /* work queued for the next turn */
    uint64_t timer_due;                       /* when the timer fires, UINT64_MAX when stopped */
    uint64_t rng;                             /* backoff jitter */
    void (*turn)(struct keel_aclient *ac);    /* once per kick, at the end of the turn */
    void (*timeout)(struct keel_aclient *ac); /* a scheduled time came */

    /* options */
    char zone[KC_ZONE_MAX];
    char *client_name;
    char *token;
    uint32_t token_gen; /* changes of token, so a refusal of an older one is told apart */

    /* request.c: authentication with keel_options.user (etcd clientv3's): the credentials (the
     * password wiped when freed or replaced), whether the client's own Authenticate is on its
     * way, and the requests waiting for it (held from submit, or refused for their token). */
    char *user, *password;
    bool auth_running;
    struct kc_list authwait;
    /* sync.c: told of every token the client takes (keel_token's copy). Loop thread. */
    void (*on_token)(void *data, const char *token);
    void *on_token_data;
    struct sockaddr_in source;
    uint32_t request_timeout_ms;
    int max_retries;
    uint32_t max_frame;

    /* connections: what they share (conn.h) */
    struct kc_conn_ctx conns;

    /* route.c: cluster knowledge */
    struct kc_peer peers[KC_MAX_PEERS];
    int npeers;
    int rr;     /* round-robin cursor over peers */
    int leader; /* peer index, -1 unknown */
    uint64_t cluster_id;
    uint32_t dial_failures;
    char last_dial_err[KC_MSG_MAX];

    /* request.c */
    struct kc_list waiting;
    struct kc_list done;
    struct kc_slots slots; /* request id low 32 bits -> op */
    uint32_t seq;          /* request id high bits (31) */
    struct kc_heap heap;
    struct kc_pool pool;

    struct keel_aclient_stats stats;

    /* watch.c */
    struct kc_wlist wsettling; /* KW_WAITING, KW_CREATING: what the routing pass looks at */
    struct kc_wlist watches;   /* KW_ACTIVE */
    struct kc_wlist wdone;     /* KW_DONE: final callback not yet delivered */
    struct kc_slots wslots;    /* stream id low 32 bits -> watch */
    uint32_t wgen;             /* stream id sequence (31 bits) */
    int64_t next_watch_id;     /* watch ids are ours: unique on every connection */
};

/* Free a secret (NULL is fine), its bytes wiped first where the compiler cannot drop it. */
static inline void kc_wipe_free(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* Whether a member refused a request for its token (expired, or its user's password changed or
 * user deleted since it was issued): what authenticating again can cure. etcd's message. */
static inline bool kc_token_refused(int status, const char *msg)
{
    return status == KEEL_EUNAUTHENTICATED && msg != NULL &&
           strstr(msg, "invalid auth token") != NULL;
}

/* The message of a local failure: fmt formatted (at most KC_MSG_MAX bytes) and malloc'd; NULL
 * when out of memory, which callers report as keel_strerror of the failure's code. */
static inline __attribute__((format(printf, 1, 0))) char *kc_vmsg(const char *fmt, va_list ap)
{
    char buf[KC_MSG_MAX];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    return strdup(buf);
}

/* ---- wake.c ---- */
/* Set up the prepare, check and timer handles (ac->turn and ac->timeout set first). */
void kc_wake_init(struct keel_aclient *ac);
/* Close the handles; cb(ac) runs once all are closed. */
void kc_wake_close(struct keel_aclient *ac, keel_close_cb cb);
/* Run ac->turn after this turn's I/O callbacks, or before the loop blocks next if that comes
 * first (not once closing). */
void kc_kick(struct keel_aclient *ac);
/* Run ac->timeout at loop time `when` at the latest (UINT64_MAX: never). */
void kc_schedule(struct keel_aclient *ac, uint64_t when);
/* The n-th consecutive wait (n >= 1): base doubling up to cap, with jitter. */
uint64_t kc_backoff(struct keel_aclient *ac, uint32_t n, uint64_t base, uint64_t cap);

/* ---- route.c ---- */
/* Index of the peer for addr (len bytes), added if new; -1 when addr does not parse or the table
 * is full. */
int kc_peer_add(struct keel_aclient *ac, const char *addr, size_t len);
/* The peer of a member named by client address, else by id (0: none); -1 when unknown. */
int kc_peer_named(struct keel_aclient *ac, const char *addr, uint64_t id);
/* Whether peer is the member c is connected to. */
bool kc_same_member(const struct keel_aclient *ac, int peer, const struct kc_conn *c);
/* For a request or first watch creation waiting for a connection, called each time no pick
 * succeeded: the first call (*marked false) marks the dial failures so far; true once enough
 * dials to every member worth dialling have failed since. */
bool kc_dials_exhausted(const struct keel_aclient *ac, bool *marked, uint32_t *mark);
/* Record that dialling (dial true) or talking to a peer failed: backoff, last dial error. */
void kc_peer_failed(struct keel_aclient *ac, int peer, bool dial, const char *msg);
/* c completed its handshake: learn the member, the cluster's members and who leads. */
void kc_route_learn(struct keel_aclient *ac, struct kc_conn *c, const Keel__HelloResponse *hr);
/* c failed (was_ready: after its handshake): forget it, back off from its member. */
void kc_route_lost(struct keel_aclient *ac, struct kc_conn *c, bool was_ready, const char *msg);
/* The live connection to peer, dialling when there is none; NULL when the dial failed. */
struct kc_conn *kc_dial(struct keel_aclient *ac, int peer);

/* A ready connection for a request or watch, or NULL when it has to wait: a dial was started or a
 * backoff runs (*wake: the earliest time worth looking again). The member to avoid (it just said
 * it knows no leader, or was lost) is a last resort. */
struct kc_conn *kc_pick_leader(struct keel_aclient *ac, int avoid_peer, uint64_t avoid_member,
                               uint64_t *wake);
/* Same zone first, then any member. */
struct kc_conn *kc_pick_any(struct keel_aclient *ac, int avoid_peer, uint64_t avoid_member,
                            uint64_t *wake);

/* ---- request.c ---- */
/* Queue req (its id already set) on c as a one-way frame. 0, KEEL_ETOOLARGE or KEEL_ENOMEM. */
int kc_send_oneway(struct keel_aclient *ac, struct kc_conn *c, const Keel__Request *req);
/* Route the requests left waiting whose backoff is over. */
void kc_requests_route(struct keel_aclient *ac);
/* Fail every request past its deadline. */
void kc_requests_expire(struct keel_aclient *ac);
/* The earliest deadline of a request, UINT64_MAX when none. */
uint64_t kc_requests_next_deadline(const struct keel_aclient *ac);
/* A reply to a request (its id without KC_WATCH_BIT). */
void kc_requests_response(struct keel_aclient *ac, struct kc_conn *c, const Keel__Response *resp);
/* c is gone: its requests are retried elsewhere when that is safe, else failed. */
void kc_requests_conn_lost(struct keel_aclient *ac, struct kc_conn *c, int status, const char *msg);
/* keel_aclient_close: fail every request with KEEL_ECANCELED; drop one-way frames. */
void kc_requests_cancel(struct keel_aclient *ac);
/* Deliver the callbacks of requests that failed locally. */
void kc_requests_drain(struct keel_aclient *ac);
/* Take token (NULL or "": none) as the client's for every request and Hello from now on. 0 or
 * KEEL_ENOMEM (the old one stays). */
int kc_token_set(struct keel_aclient *ac, const char *token);
/* Authenticate with the client's credentials, unless that is under way (or there are none):
 * requests and watch creations with the client's token wait for the answer, then go with the
 * new token (or fail with why the authentication did). */
void kc_auth_start(struct keel_aclient *ac);
/* A one-way frame was written: free it. */
void kc_requests_written(struct keel_aclient *ac, struct kc_op *op);

/* ---- watch.c ---- */
/* Route watches needing a connection; end first creations past their deadline. */
void kc_watch_route(struct keel_aclient *ac);
/* A response whose id has KC_WATCH_BIT. */
void kc_watch_response(struct keel_aclient *ac, struct kc_conn *c, const Keel__Response *resp);
/* c is gone: its watches are resumed elsewhere. */
void kc_watch_conn_lost(struct keel_aclient *ac, struct kc_conn *c);
/* keel_aclient_close: end every watch with KEEL_ECANCELED. */
void kc_watch_close_all(struct keel_aclient *ac);
/* Deliver the final callbacks of ended watches. */
void kc_watch_drain(struct keel_aclient *ac);
/* Free a watch's memory once its final callback was delivered (the core does it for a watch not
 * held; the sync API for its held handles). Touches nothing but w. */
void kc_watch_close(struct keel_watch *w);

/* ---- sync.c ---- */
/* The calling thread's keel_errmsg: set it (at most KEEL_ERRMSG_MAX bytes are kept). */
#define KEEL_ERRMSG_MAX 1024
void kc_set_errmsg(const char *msg);

#endif
