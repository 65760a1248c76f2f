/*
 * gw_server / gw_conn: the gateway's listener and its client connections.
 *
 * listen.c accepts TCP connections and reads until it can tell the protocol from the first bytes
 * (cmux's trick, as etcd serves both on one port): the HTTP/2 client preface
 * "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" means gRPC (h2.c), anything else HTTP/1.1 (http1.c). It then
 * attaches the protocol, hands it the bytes read so far, and from there on passes every read to
 * the protocol's vtab. Writing is the protocol's: gw_conn_write queues bytes.
 *
 * Output is batched: what gw_conn_write queues during one loop turn leaves in one write at the
 * end of the turn (a uv_check), so a turn's many replies cost one syscall per connection: a
 * uv_try_write, and a uv_write request only for what the socket did not take.
 *
 * Bounds (listen.c): at most GW_MAX_CONNS connections (more are accepted and closed at once, with
 * a log line); a connection that has not shown its protocol within 10 s is closed; a closing
 * connection whose peer does not take its last bytes within 5 s is cut off; after gw_server_stop
 * connections still open after 20 s are cut off.
 *
 * A protocol ends a connection with gw_conn_close; listen.c closes the socket, then calls the
 * vtab's destroy, after which the protocol's state must be gone (its calls cancelled and
 * released per call.h's lifetime rule).
 */
#ifndef KEEL_GW_CONN_H
#define KEEL_GW_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "call.h"

#define GW_MAX_CONNS 10000

struct gw_conn;
struct gw_server;

struct gw_conn_vtab {
    /* n bytes arrived (the buffer is only valid during the call). */
    void (*on_read)(struct gw_conn *c, const char *buf, size_t n);
    /* The peer closed its side or the read failed (status: 0 EOF, else a uv error). The
     * protocol finishes what it must and calls gw_conn_close. */
    void (*on_eof)(struct gw_conn *c, int status);
    /* The gateway is stopping: stop taking new requests (HTTP/2 GOAWAY), finish or cancel the
     * rest, then gw_conn_close. */
    void (*on_shutdown)(struct gw_conn *c);
    /* The socket is closed: free the protocol's state. Last call for this connection. */
    void (*destroy)(struct gw_conn *c);
    /* Optional (NULL: not told): a write completed, so c->write_pending went down. A protocol
     * that stopped producing past its bound resumes here. Not called once closing, nor from
     * within gw_conn_write. */
    void (*on_drain)(struct gw_conn *c);
};

struct gw_conn {
    uv_tcp_t tcp; /* owned by listen.c */
    struct gw_server *srv;
    struct gw_ctx *ctx;
    const struct gw_conn_vtab *vt; /* set by the protocol's attach */
    void *proto;                   /* the protocol's state */
    size_t write_pending;          /* bytes queued (staged or in uv_write), not yet written */
    bool closing;
    char peer[64];               /* "127.0.0.1:54321", for logs */
    struct gw_conn *prev, *next; /* the server's list */
};

/* Start listening on host:port (IPv4 literal). 0 or a negative uv error. */
int gw_server_start(struct gw_server **out, struct gw_ctx *ctx, const char *host, int port);

/* Stop accepting; ask every connection to shut down (on_shutdown); once every connection and
 * the listener are closed, cb(data) is called and the server freed. */
void gw_server_stop(struct gw_server *s, void (*cb)(void *data), void *data);

/* Client connections open now (for metrics). */
size_t gw_server_connections(const struct gw_server *s);

/* Queue n bytes (copied) for the peer. 0, or a negative uv error (then the connection is being
 * closed). c->write_pending counts what is not yet written: a protocol stops reading or
 * producing past its bound (nghttp2 waits; a watch gives up). */
int gw_conn_write(struct gw_conn *c, const void *buf, size_t n);

/* Stop (paused) or resume reading the socket: a protocol whose peer sends requests faster than
 * it reads the answers pauses until its output drains (on_drain). Idempotent. */
void gw_conn_read_pause(struct gw_conn *c, bool paused);

/* Begin closing the connection (idempotent): pending writes are flushed first when possible,
 * then the socket closes and vt->destroy runs from the loop. */
void gw_conn_close(struct gw_conn *c);

/* Attach a protocol to a sniffed connection and feed it the first n bytes. 0, or -1 when the
 * protocol could not start (listen.c then closes the connection; vt->destroy runs only if the
 * protocol had set c->vt). */
int gw_h2_attach(struct gw_conn *c, const char *first, size_t n);
int gw_http1_attach(struct gw_conn *c, const char *first, size_t n);

#endif
