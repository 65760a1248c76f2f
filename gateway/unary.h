/*
 * The shared machinery of a unary etcd RPC answered by one keel request.
 *
 * A handler (kv.c, lease.c, cluster.c, maint.c) checks the etcd request as etcd's API layer does,
 * builds the keel Request and calls gw_unary_send with the translator that turns keel's answer
 * into etcd's response. gw_unary_send submits the request on the process's libkeel client with
 * the client's deadline (grpc-timeout, else --request-timeout-ms) and, when keel answers, runs
 * the translator in a fresh arena and replies; keel's failures end the call with gw_error()'s
 * code and etcd's message.
 *
 * Cancellation. A call whose stream goes away while its keel request is in flight is not ended at
 * once: libkeel always completes a request, so the call waits for that callback, skips the
 * translation and finishes CANCELLED then (call.h's lifetime rule). Every unary method therefore
 * uses gw_unary_on_cancel as its on_cancel.
 *
 * Memory per call: one struct gw_unary (a few dozen bytes) while the keel request is in flight,
 * and one arena during the translation (pointers and headers only: keys and values point into
 * libkeel's reply buffer, which lives until the callback returns).
 */
#ifndef KEEL_GW_UNARY_H
#define KEEL_GW_UNARY_H

#include "arena.h"
#include "call.h"
#include "convert.h"
#include "keel.pb-c.h"

/* How one method turns keel's answer into etcd's. */
struct gw_unary_ops {
    /*
     * keel answered with status 0: build the etcd response for resp in a (everything it returns
     * may live in a and point into resp). arg is gw_unary_send's. NULL: out of memory (the call
     * fails Internal).
     */
    ProtobufCMessage *(*reply)(const struct gw_call *c, const Keel__Response *resp, int64_t arg,
                               struct keel_arena *a);
    /*
     * keel failed with status (NULL: every failure ends the call with gw_error's code). Return a
     * response to send instead, when etcd answers that case with a success (e.g. Alarm GET when
     * keel has no alarms); NULL: fail with *code and *message, which come in as gw_error's and may
     * be replaced (static strings, or strings in a).
     */
    ProtobufCMessage *(*fail)(const struct gw_call *c, int status, const Keel__Response *resp,
                              int64_t arg, struct keel_arena *a, enum gw_code *code,
                              const char **message);
};

/*
 * Submit req for call c and answer c when keel does: ops->reply's message and OK, or an error.
 * req is packed before this returns (the caller keeps and frees it, and what it points into).
 * arg is handed to the translator (a lease id, ...). Always ends the call exactly once, possibly
 * before returning (a request libkeel refuses: too large, client closing).
 */
void gw_unary_send(struct gw_call *c, const Keel__Request *req, const struct gw_unary_ops *ops,
                   int64_t arg);

/* The on_cancel of every unary method: marks the call's keel request, if any, as abandoned. */
void gw_unary_on_cancel(struct gw_call *c);

/* End c with an error and free the request message msg (may be NULL): for the checks a handler
 * makes before anything is sent. */
void gw_unary_fail(struct gw_call *c, ProtobufCMessage *msg, enum gw_code code,
                   const char *message);

/* etcd's own check messages (api/v3rpc/rpctypes/error.go), shared by the handlers. */
#define GW_MSG_EMPTY_KEY      "etcdserver: key is not provided"
#define GW_MSG_VALUE_PROVIDED "etcdserver: value is provided"
#define GW_MSG_LEASE_PROVIDED "etcdserver: lease is provided"
#define GW_MSG_KEY_NOT_FOUND  "etcdserver: key not found"
#define GW_MSG_TTL_TOO_LARGE  "etcdserver: too large lease TTL"
#define GW_MSG_NO_MEMORY      "keel-gateway: out of memory"

/* etcd's response header copied from keel's response (an all-zero one when keel sent none). */
static inline Etcdserverpb__ResponseHeader *gw_unary_header(struct keel_arena *a,
                                                            const Keel__Response *resp)
{
    return gw_header(a, resp ? resp->header : NULL);
}

#endif
