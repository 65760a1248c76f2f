/*
 * One TCP connection to one member: dial, handshake, batched writes of queued ops, framed reads;
 * optionally TLS (tls/tls.h) between the socket and the frames, on the loop like the rest.
 *
 * A connection knows nothing of the client that owns it: what it needs (the loop, the handshake's
 * fields, limits, counters) comes in a kc_conn_ctx shared by every connection of one owner, and
 * what happens to it is reported through the owner's kc_conn_events. Calls go one way: the owner
 * calls kc_conn_*, the connection calls back only through those function pointers.
 */
#ifndef KEEL_CLIENT_CONN_H
#define KEEL_CLIENT_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include <netinet/in.h>
#include <uv.h>

#include "arena.h"
#include "frame.h"
#include "keel/keel.h"
#include "op.h"
#include "tls.h"

#define KC_READ_CHUNK (64u * 1024)
#define KC_ADDR_MAX   64 /* "host:port": a name of up to 57 bytes, or an IPv4 literal */
#define KC_MSG_MAX    512

struct kc_conn;

/*
 * What a connection reports: from its libuv callbacks, and from kc_conn_flush (a write that
 * cannot start is `lost`, one-way ops handed to uv_write are `written`); never from kc_conn_init
 * or kc_conn_close. Once closed, c reports nothing more but `closed`.
 */
struct kc_conn_events {
    /* The handshake succeeded (refusals and newer protocols are reported as lost): c is
     * KC_READY. hr is valid during the call. */
    void (*ready)(struct kc_conn *c, const Keel__HelloResponse *hr);
    /* One reply, valid during the call only (it lives in c's arena). */
    void (*response)(struct kc_conn *c, const Keel__Response *resp);
    /* c failed: dial, handshake, read, write, a frame over the limit or one that does not
     * decode. status is a KEEL_E* code, msg says what happened. The owner decides what becomes
     * of c's ops, and closes c. */
    void (*lost)(struct kc_conn *c, int status, const char *msg);
    /* A one-way op was handed to uv_write (its frame copied) and taken off c: free it. */
    void (*written)(struct kc_conn *c, struct kc_op *op);
    /* A connection's memory is gone (ctx->live is already one less). */
    void (*closed)(void *data);
};

/* What every connection of one owner shares. The owner fills it in and keeps it alive until the
 * last `closed`. */
struct kc_conn_ctx {
    uv_loop_t *loop;
    const char *client_name;          /* sent in Hello */
    const char *token;                /* sent in Hello; NULL: none */
    const struct sockaddr_in *source; /* bind outgoing connections here; NULL: the kernel's */
    uint32_t dial_timeout_ms;         /* TCP connect plus handshake */
    uint32_t max_frame;               /* largest frame accepted */
    struct keel_aclient_stats *stats; /* dials, writes, frames_out, retries are counted here */
    const struct kc_conn_events *ev;
    void *data; /* the owner: handed to `closed`, and reachable from c->ctx in the others */
    int live;   /* connections allocated and not yet freed */
    /* TLS on every connection (a client context), NULL: plaintext. tls_rbuf (KC_READ_CHUNK
     * bytes) takes every TLS read first: libuv calls alloc and read back to back. Both the
     * owner's; connections made from tls may outlive it. */
    struct keel_tls_ctx *tls;
    uint8_t *tls_rbuf;
};

enum kc_conn_state { KC_CONNECTING, KC_HELLO, KC_READY, KC_CLOSED };

struct kc_conn {
    struct kc_conn_ctx *ctx;
    int peer; /* the owner's tag for the member (its peer index); not used here */
    char addr[KC_ADDR_MAX];
    uv_tcp_t tcp;
    uv_timer_t timer; /* dial + handshake deadline */
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai; /* addr's name, being resolved (resolving) */
    bool resolving;       /* ... it holds c's memory (open_handles) until it calls back */
    int port;             /* addr's port, for what the name resolves to */
    uv_write_t write_req;
    int state;
    int open_handles;
    bool writing;
    uint64_t member_id; /* from the HelloResponse */
    struct kc_list pending;
    struct kc_list inflight;
    struct keel_frame_decoder dec;
    struct keel_arena arena;
    uint8_t *wbuf;
    size_t wcap;
    struct keel_tls_conn *tls; /* ctx->tls's, from the TCP connect on; NULL: plaintext */
    uint8_t *tbuf;             /* TLS: the ciphertext being written */
    size_t tlen, tcap;
    bool heard; /* a first byte came from the server */
};

/*
 * Dial addr (sa) for the owner's peer `peer`. When sa is no IPv4 address (sin_family AF_UNSPEC:
 * addr's host is a name, as kc_parse_addr gives it), the name is resolved first, off the loop
 * (uv_getaddrinfo), within the dial timeout; a name that does not resolve is reported as lost. The
 * connection reports through ctx->ev from the loop; it is freed (`closed`) some time after
 * kc_conn_close. NULL when the dial failed at once, with msg (KC_MSG_MAX bytes) saying why; a
 * connection allocated by then is closed and still reported as `closed`.
 */
struct kc_conn *kc_conn_init(struct kc_conn_ctx *ctx, int peer, const char *addr,
                             const struct sockaddr_in *sa, char *msg);
/* Close c (once; later calls do nothing). Its ops stay on its lists: the owner moves them. */
void kc_conn_close(struct kc_conn *c);
/* Write what is pending, as one batch, unless a write is out (its callback continues). */
void kc_conn_flush(struct kc_conn *c);

/* "host:port" (optionally "http://host:port/"), host an IPv4 literal or a DNS name
 * (proto/hostport.h), to a canonical form (out, KC_ADDR_MAX bytes; a name in lower case) and a
 * sockaddr (AF_UNSPEC for a name: resolved at each dial). out and sa may be NULL. 0, or
 * KEEL_EINVAL with what is wrong in why (whylen bytes; may be NULL). */
int kc_parse_addr(const char *in, size_t len, char *out, struct sockaddr_in *sa, char *why,
                  size_t whylen);

#endif
