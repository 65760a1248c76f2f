/*
 * A frame on its way to a member, and what holds it: the lists it moves along (op.c), its memory
 * (a pool by size class, op.c) and the heap of deadlines (heap.c).
 *
 * Every request is a kc_op holding its packed frame, so it can be resent unchanged to another
 * member: the id inside the frame is unique for the whole client, hence for every connection.
 * An op is always on exactly one list, which says where it stands:
 *
 *   waiting        no connection can take it yet (none ready, or a retry backoff runs)
 *   conn->pending  assigned to a connection, not yet handed to uv_write (never sent)
 *   conn->inflight written (or being written): the server may have seen it
 *   done           finished with a local failure; its callback runs at the next safe point
 *   authwait       waits for the client's Authenticate (request.c): sent with a new token then
 *
 * One-way ops (watch create/cancel/progress frames, see watch.c) use the same queues but expect
 * no answer of their own: they are freed once handed to uv_write, or dropped with their
 * connection.
 */
#ifndef KEEL_CLIENT_OP_H
#define KEEL_CLIENT_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

#define KC_NCLASS    7    /* pool classes: frames up to 256 << 6 = 16 KiB are recycled */
#define KC_POOL_KEEP 1024 /* ops kept per pool class */

enum kc_route {
    KC_ROUTE_LEADER, /* writes, linearizable reads */
    KC_ROUTE_ANY,    /* serializable reads, status, member list: same zone first */
    KC_ROUTE_PINNED, /* keel_call_opts.endpoint */
};

enum kc_where { KC_NOWHERE, KC_WAITING, KC_PENDING, KC_INFLIGHT, KC_DONE, KC_AUTHWAIT };

struct kc_conn;
struct kc_pieces;

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
    bool oneway;        /* a watch frame: no answer expected, freed once written */
    bool sent;          /* handed to uv_write at least once */
    bool too_large;     /* was in flight when a reply over the frame limit cut a connection */
    bool client_token;  /* carries the client's token (none of its own): re-authentication helps */
    bool reauthed;      /* already sent again after a refused token: not twice */
    uint16_t attempts;  /* retries so far */
    uint32_t token_gen; /* ac->token_gen when its frame was packed */
    int last_err;       /* why the last attempt failed, for the timeout message */
    int status;         /* KC_DONE: the failure */
    char *msg;          /* KC_DONE: its message (malloc'd), or NULL for keel_strerror */
    uint32_t timeout_ms;
    struct kc_pieces *pieces; /* a range answered in pieces: those so far (pieces.h) */
    size_t frame_len;
    uint8_t frame[];
};

struct kc_list {
    struct kc_op *head, *tail;
    size_t n;
};

void kc_list_push(struct kc_list *l, struct kc_op *op);
void kc_list_remove(struct kc_list *l, struct kc_op *op);

/* Ops of the small size classes, kept for reuse: a request costs no malloc in steady state. */
struct kc_pool {
    struct kc_op *free[KC_NCLASS];
    uint32_t n[KC_NCLASS];
};

void kc_pool_init(struct kc_pool *p);
/* Free every op kept. */
void kc_pool_close(struct kc_pool *p);

/* A zeroed op with room for a frame of frame_len bytes (heap_idx SIZE_MAX, no peers), or NULL. */
struct kc_op *kc_op_init(struct kc_pool *p, size_t frame_len);
/* Give op's memory back (to the pool, or to malloc), its message too. */
void kc_op_close(struct kc_pool *p, struct kc_op *op);

/* Ops by deadline: a min-heap (heap.c). An op not in it has heap_idx SIZE_MAX. */
struct kc_heap {
    struct kc_op **v;
    size_t n, cap;
};

void kc_heap_init(struct kc_heap *h);
void kc_heap_close(struct kc_heap *h);
/* 0 or KEEL_ENOMEM. */
int kc_heap_push(struct kc_heap *h, struct kc_op *op);
/* Remove op (nothing when it is not in the heap). */
void kc_heap_remove(struct kc_heap *h, struct kc_op *op);
/* The op due first, NULL when empty. */
struct kc_op *kc_heap_min(const struct kc_heap *h);

#endif
