/*
 * libkeel internals shared by client.c (requests, routing, retries, timers) and conn.c (sockets).
 *
 * Every request is a keel_op holding its packed frame, so it can be resent unchanged to another
 * member: the id inside the frame is unique for the whole client, hence for every connection.
 * An op is always on exactly one list, which says where it stands:
 *
 *   waiting        no connection can take it yet (none ready, or a retry backoff runs)
 *   conn->pending  assigned to a connection, not yet handed to uv_write (never sent)
 *   conn->inflight written (or being written): the server may have seen it
 *   done           finished with a local failure; its callback runs at the next safe point
 *
 * One-way ops (watch create/cancel/progress frames, see watch.c) use the same queues but expect
 * no answer of their own: they are freed once handed to uv_write, or dropped with their
 * connection. Watch streams answer with ids that have KC_WATCH_BIT set, which no request id has.
 *
 * Callbacks for server answers run at once, from the read callback (the reply lives in the
 * connection's arena only until the next frame); local failures are queued on `done` and
 * delivered from kc_drain, so internal state is never changed underneath user code.
 */
#ifndef KEEL_CLIENT_INTERNAL_H
#define KEEL_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "arena.h"
#include "frame.h"
#include "keel/keel.h"
#include "slots.h"

#define KC_ADDR_MAX  64 /* "255.255.255.255:65535" fits many times over */
#define KC_ZONE_MAX  64
#define KC_MSG_MAX   512
#define KC_MAX_PEERS 64   /* endpoints plus members learned; more are ignored */
#define KC_NCLASS    7    /* op pool classes: frames up to 256 << 6 = 16 KiB are recycled */
#define KC_POOL_KEEP 1024 /* ops kept per pool class */
/* Set in the ids of watch streams (and their cancel/progress frames); request ids never have it,
 * so a reply is routed to the watch table or to the op slots on this bit alone. */
#define KC_WATCH_BIT (UINT64_C(1) << 63)

enum kc_route {
    KC_ROUTE_LEADER, /* writes, linearizable reads */
    KC_ROUTE_ANY,    /* serializable reads, status, member list: same zone first */
    KC_ROUTE_PINNED, /* keel_call_opts.endpoint */
};

enum kc_where { KC_NOWHERE, KC_WAITING, KC_PENDING, KC_INFLIGHT, KC_DONE };

struct kc_conn;

struct kc_op {
    struct kc_op *prev, *next;
    struct kc_conn *conn; /* KC_PENDING / KC_INFLIGHT */
    uint64_t id;
    uint64_t deadline;  /* loop time, ms */
    uint64_t retry_at;  /* not before this loop time (retry backoff) */
    uint32_t wait_mark; /* ac->dial_failures when it began waiting for a connection */
    bool wait_marked;
    size_t heap_idx;
    keel_response_cb cb;
    void *data;
    int peer;              /* KC_ROUTE_PINNED: its peer */
    int avoid_peer;        /* retry elsewhere than this peer (-1: none) ... */
    uint64_t avoid_member; /* ... or this member: it answered without knowing a leader */
    uint8_t where;
    uint8_t route;
    uint8_t cls; /* pool class, or KC_NCLASS when malloc'd to size */
    bool idempotent;
    bool oneway;       /* a watch frame: no answer expected, freed once written */
    bool sent;         /* handed to uv_write at least once */
    uint16_t attempts; /* retries so far */
    int last_err;      /* why the last attempt failed, for the timeout message */
    int status;        /* KC_DONE: the failure */
    char *msg;         /* KC_DONE: its message (malloc'd), or NULL for keel_strerror */
    uint32_t timeout_ms;
    size_t frame_len;
    uint8_t frame[];
};

struct kc_list {
    struct kc_op *head, *tail;
    size_t n;
};

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
    uint8_t state;
    bool wait_marked;
    bool prev_kv, noput, nodelete, progress_notify, created_notify;
    bool created_once;    /* a member acknowledged it at least once */
    bool progress_wanted; /* keel_watch_progress while not active: ask once created */
    bool held;            /* sync API: keep the handle after the final callback */
    bool busy;            /* its callback is running (a drain must not end it meanwhile) */
    int status;           /* KW_DONE / KW_ENDED: why it ended */
    char *msg;            /* ... and the message (malloc'd; NULL: keel_strerror) */
    const Keel__ResponseHeader *hdr; /* during a callback: the response's header */
};

enum kc_conn_state { KC_CONNECTING, KC_HELLO, KC_READY, KC_CLOSED };

struct kc_conn {
    struct keel_aclient *ac;
    uv_tcp_t tcp;
    uv_timer_t timer; /* dial + handshake deadline */
    uv_connect_t connect_req;
    uv_write_t write_req;
    int state;
    int peer;
    int open_handles;
    bool writing;
    uint64_t member_id;
    struct kc_list pending;
    struct kc_list inflight;
    struct keel_frame_decoder dec;
    struct keel_arena arena;
    uint8_t *wbuf;
    size_t wcap;
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
    uv_timer_t timer;
    uv_prepare_t prepare;
    int open_handles; /* ac's own handles not yet closed */
    int nconns;       /* kc_conn allocated and not yet freed */
    bool closing;
    bool kicked;     /* work queued for the prepare callback */
    bool need_route; /* waiting ops should be looked at */
    bool draining;
    keel_close_cb close_cb;
    void *close_data;

    /* options */
    char zone[KC_ZONE_MAX];
    char *client_name;
    char *token;
    bool have_source;
    struct sockaddr_in source;
    uint32_t dial_timeout_ms;
    uint32_t request_timeout_ms;
    int max_retries;
    uint32_t max_frame;

    /* cluster knowledge */
    struct kc_peer peers[KC_MAX_PEERS];
    int npeers;
    int rr;     /* round-robin cursor over peers */
    int leader; /* peer index, -1 unknown */
    uint64_t cluster_id;
    uint32_t dial_failures;
    char last_dial_err[KC_MSG_MAX];

    /* requests */
    struct kc_list waiting;
    struct kc_list done;
    struct kc_slots slots; /* request id low 32 bits -> op */
    uint32_t seq;
    struct kc_op **heap; /* min-heap on deadline */
    size_t nheap, heapcap;
    uint64_t timer_due; /* when the timer fires, UINT64_MAX when stopped */
    struct kc_op *pool[KC_NCLASS];
    uint32_t pool_n[KC_NCLASS];
    uint64_t rng;

    struct keel_aclient_stats stats;

    /* watches (watch.c) */
    struct kc_wlist wsettling; /* KW_WAITING, KW_CREATING: what the routing pass looks at */
    struct kc_wlist watches;   /* KW_ACTIVE */
    struct kc_wlist wdone;     /* KW_DONE: final callback not yet delivered */
    struct kc_slots wslots;    /* stream id low 32 bits -> watch */
    uint32_t wgen;             /* stream id sequence (31 bits) */
    int64_t next_watch_id;     /* watch ids are ours: unique on every connection */

    /* the Response handed to callbacks for local failures */
    Keel__Response synth;
    Keel__Error synth_err;
};

/* lists (client.c) */
void kc_list_push(struct kc_list *l, struct kc_op *op);
void kc_list_remove(struct kc_list *l, struct kc_op *op);

/* client.c, for conn.c */
void kc_kick(struct keel_aclient *ac);
void kc_conn_ready(struct kc_conn *c, const Keel__HelloResponse *hr);
void kc_conn_lost(struct kc_conn *c, int status, const char *msg);
void kc_handle_response(struct kc_conn *c, const Keel__Response *resp);
void kc_conn_freed(struct keel_aclient *ac);
/* Record that dialling (dial true) or talking to a peer failed: backoff, last dial error. */
void kc_peer_failed(struct keel_aclient *ac, int peer, bool dial, const char *msg);
uint64_t kc_backoff(struct keel_aclient *ac, uint32_t n, uint64_t base, uint64_t cap);

/* client.c, for conn.c: a one-way op was handed to uv_write (its frame copied): free it. */
void kc_op_written(struct keel_aclient *ac, struct kc_op *op);

/* client.c, for watch.c */
/* Queue req (its id already set) on c as a one-way frame. 0, KEEL_ETOOLARGE or KEEL_ENOMEM. */
int kc_send_oneway(struct keel_aclient *ac, struct kc_conn *c, const Keel__Request *req);
/* A ready connection to a member of the client's zone when one is known, else to any member
 * (the one to avoid only as a last resort); NULL when a dial or a backoff has to pass first
 * (*wake: the earliest time worth looking again). */
struct kc_conn *kc_pick_any(struct keel_aclient *ac, int avoid_peer, uint64_t avoid_member,
                            uint64_t *wake);
void kc_schedule(struct keel_aclient *ac, uint64_t when);
int kc_eligible_count(const struct keel_aclient *ac);
/* Deliver local failures and watch endings now (never re-entered). */
void kc_drain(struct keel_aclient *ac);

/* watch.c */
/* Route watches needing a connection; end first creations past their deadline. */
void kc_watch_route(struct keel_aclient *ac);
/* A response whose id has KC_WATCH_BIT. */
void kc_watch_response(struct kc_conn *c, const Keel__Response *resp);
/* c is gone: its watches are resumed elsewhere. */
void kc_watch_conn_lost(struct kc_conn *c);
/* keel_aclient_close: end every watch with KEEL_ECANCELED. */
void kc_watch_close_all(struct keel_aclient *ac);
/* Deliver the final callbacks of ended watches (from kc_drain). */
void kc_watch_drain(struct keel_aclient *ac);
/* Free a watch's memory (its final callback delivered; touches nothing but w). */
void kc_watch_free(struct keel_watch *w);

/* sync.c, for calls.c: set the calling thread's keel_errmsg. */
void kc_set_errmsg(const char *msg);

/* conn.c */
struct kc_conn *kc_conn_start(struct keel_aclient *ac, int peer);
void kc_conn_flush(struct kc_conn *c);
void kc_conn_close(struct kc_conn *c);

/* "host:port" (optionally "http://host:port/") to a canonical form and a sockaddr. 0 or
 * KEEL_EINVAL. */
int kc_parse_addr(const char *in, size_t len, char *out, struct sockaddr_in *sa);

#endif
