/*
 * gw_call: one etcd RPC, whatever carries it.
 *
 * keel-gateway has two transports on one port -- gRPC over HTTP/2 (h2.c) and etcd's JSON gateway
 * over HTTP/1.1 (http1.c) -- and one set of handlers (kv.c, watch.c, keepalive.c, ...). This header
 * is the seam between them: a transport decodes request messages (protobuf or JSON) into the
 * method's request type and hands them to the method's handler; the handler answers through
 * gw_call_send and ends the call with gw_call_finish. Neither side knows the other's wire.
 *
 * Lifetime. The transport creates a call when a request for a known method arrives and frees it
 * only when both have happened: the handler called gw_call_finish (exactly once), and the
 * transport's stream is gone. A call whose stream goes away first (client reset, connection lost,
 * shutdown) gets on_cancel once; from then on gw_call_send refuses, and the handler releases what
 * it holds and calls gw_call_finish (at once, or when its in-flight keel request completes --
 * libkeel always completes a request). So a handler may keep a gw_call pointer until it finishes,
 * and never after.
 *
 * Everything runs on the gateway's one libuv loop.
 */
#ifndef KEEL_GW_CALL_H
#define KEEL_GW_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "etcd.pb-c.h"

struct keel_aclient;
struct gw_metrics;
struct keel_tls_ctx;

/* gRPC status codes (grpc/doc/statuscodes.md); the JSON transport maps them to HTTP statuses. */
enum gw_code {
    GW_OK = 0,
    GW_CANCELLED = 1,
    GW_UNKNOWN = 2,
    GW_INVALID_ARGUMENT = 3,
    GW_DEADLINE_EXCEEDED = 4,
    GW_NOT_FOUND = 5,
    GW_ALREADY_EXISTS = 6,
    GW_PERMISSION_DENIED = 7,
    GW_RESOURCE_EXHAUSTED = 8,
    GW_FAILED_PRECONDITION = 9,
    GW_ABORTED = 10,
    GW_OUT_OF_RANGE = 11,
    GW_UNIMPLEMENTED = 12,
    GW_INTERNAL = 13,
    GW_UNAVAILABLE = 14,
    GW_DATA_LOSS = 15,
    GW_UNAUTHENTICATED = 16,
};

/* What every call shares: the process's keel client and what the gateway says about itself.
 * Owned by main.c; lives as long as the loop runs. */
struct gw_ctx {
    uv_loop_t *loop;
    struct keel_aclient *ac; /* libkeel on the same loop: every call's requests go through it */
    /* URLs etcd clients must dial to reach this gateway ("http://127.0.0.1:2379"): MemberList
     * reports them as every member's clientURLs, never keel's native addresses (another
     * protocol). */
    char **advertise_urls;
    size_t n_advertise_urls;
    const char *zone;            /* --zone, or "" */
    const char *endpoints;       /* --endpoints: keel's members, for what the client's
                                    connections do not carry (snapshot.h) */
    uint32_t request_timeout_ms; /* keel request deadline when the client sends none */
    size_t max_request_bytes;    /* a request message above this: InvalidArgument "request is too
                                    large" */
    struct gw_metrics *metrics;  /* --listen-metrics's counters (gwmetrics.h), NULL: none */
    struct keel_tls_ctx *tls;    /* --cert-file: TLS on the listener (listen.c), NULL: none */
    /* --upstream-*: TLS to keel's members (keel_options' fields; NULL/false: as the
     * endpoints say), for the connections snapshot.c makes besides the shared client */
    const char *upstream_ca, *upstream_cert, *upstream_key;
    bool upstream_insecure;
};

enum gw_kind {
    GW_UNARY,         /* one request, one response */
    GW_SERVER_STREAM, /* one request, any number of responses (Snapshot) */
    GW_BIDI,          /* any number each way (Watch, LeaseKeepAlive) */
};

struct gw_call;

/* A method: its names on both transports, its message types and its handler. */
struct gw_method {
    const char *grpc_path; /* "/etcdserverpb.KV/Range" (case-sensitive, as gRPC) */
    const char *json_path; /* "kv/range" (after "/v3/"), or NULL when JSON does not serve it */
    const ProtobufCMessageDescriptor *req;
    const ProtobufCMessageDescriptor *resp;
    enum gw_kind kind;
    /*
     * One request message, in arrival order (unary and server-stream: exactly once, after the
     * client's end of stream). The message belongs to the handler: free it with
     * protobuf_c_message_free_unpacked(msg, NULL) when done.
     */
    void (*on_message)(struct gw_call *c, ProtobufCMessage *msg);
    /* The client will send no more messages (streams only; NULL: nothing to do). Watch streams
     * keep running after it, as etcd's do. */
    void (*on_half_close)(struct gw_call *c);
    /* The stream is gone (see the lifetime rule above); NULL only for methods that never hold a
     * call across a loop turn. */
    void (*on_cancel)(struct gw_call *c);
};

/* The transport's side of a call: it fills these, handlers only read them. */
struct gw_call_ops {
    int (*send)(struct gw_call *c, const ProtobufCMessage *msg);
    void (*finish)(struct gw_call *c, enum gw_code code, const char *message);
    size_t (*pending)(const struct gw_call *c);
};

struct gw_call {
    const struct gw_call_ops *ops;
    const struct gw_method *method;
    struct gw_ctx *ctx;
    void *state;           /* the handler's, NULL until it sets it */
    uint32_t timeout_ms;   /* the client's deadline (grpc-timeout), 0: none given */
    bool require_leader;   /* "hasleader: true" metadata: fail with Unavailable "no leader" */
    bool json;             /* carried by the JSON gateway (for handlers that must differ) */
    const char *authority; /* the :authority / Host the client dialed ("" when unknown) */
    /* The caller's auth token, from Authenticate: gRPC metadata "token", the JSON gateway's
     * "Authorization" header; "" for none. Every keel request made for this call carries it
     * (Keel__Request.token, keel_watch_opts.token), never the shared client's: one libkeel
     * client serves every caller. Lives as long as the call. */
    const char *token;
    /* gwmetrics.c's: when the call began, and its method's slot + 1 (0: not counted) */
    uint64_t metrics_began_ns;
    unsigned metrics_slot;
};

/*
 * Queue one response message. The transport encodes msg before returning (the caller keeps
 * ownership and may free it at once). 0, or -1 when the call was cancelled (msg dropped).
 * gw_call_pending tells how many encoded bytes wait for the client: a handler streaming without
 * bound (watch) checks it and slows down or gives up past its own bound.
 */
static inline int gw_call_send(struct gw_call *c, const ProtobufCMessage *msg)
{
    return c->ops->send(c, msg);
}

/* End the call: code GW_OK after the responses sent, or an error with etcd's message (NULL: none).
 * Exactly once; the call may be freed before this returns. */
static inline void gw_call_finish(struct gw_call *c, enum gw_code code, const char *message)
{
    c->ops->finish(c, code, message);
}

static inline size_t gw_call_pending(const struct gw_call *c)
{
    return c->ops->pending(c);
}

/* A unary reply: send msg, then finish OK. */
static inline void gw_call_reply(struct gw_call *c, const ProtobufCMessage *msg)
{
    if (gw_call_send(c, msg) == 0)
        gw_call_finish(c, GW_OK, NULL);
    else
        gw_call_finish(c, GW_CANCELLED, "context canceled");
}

/* The longest token passed on to keel. keel issues tokens of at most KEEL_AUTH_TOKEN_MAX (355)
 * bytes (server/authcrypto.h; auth.c checks the bound). A longer one cannot be valid: the call
 * carries GW_TOKEN_INVALID instead, which keel refuses as etcd refuses a forged token ("invalid
 * auth token"), and the gateway holds no unbounded header. */
#define GW_TOKEN_MAX     512
#define GW_TOKEN_INVALID "keel-gateway:token-too-long"

/* The method served at gRPC path (len bytes, not NUL-terminated), or NULL: Unimplemented. */
const struct gw_method *gw_method_by_grpc_path(const char *path, size_t len);

/* The method served at JSON path (the part after "/v3/", "/v3beta/" or "/v3alpha/"), or NULL. */
const struct gw_method *gw_method_by_json_path(const char *path, size_t len);

#endif
