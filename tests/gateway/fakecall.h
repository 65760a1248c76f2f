/*
 * A gw_call without a transport, for handler tests: what the handler sends is encoded and decoded
 * again (so it must serialize), kept in order, and the finish is recorded. The handlers under
 * test talk to a real keel cluster through a real libkeel client on the test's loop.
 */
#ifndef KEEL_TEST_FAKECALL_H
#define KEEL_TEST_FAKECALL_H

#include "call.h"

#define FAKE_CALL_MAX_SENT 1024

struct fake_call {
    struct gw_call call;
    ProtobufCMessage *sent[FAKE_CALL_MAX_SENT]; /* decoded copies, in order */
    size_t n_sent;
    size_t dropped; /* sends past FAKE_CALL_MAX_SENT (counted, not kept) */
    bool cancelled; /* fake_call_cancel was called: sends are refused */
    bool finished;
    enum gw_code code;
    char message[512];
    size_t pending_bytes; /* what gw_call_pending reports: a test sets it to play a slow client */
};

/* Prepare f as a call of method m; nothing is allocated until a send. */
void fake_call_init(struct fake_call *f, struct gw_ctx *ctx, const struct gw_method *m);

/* Deliver a request message as the transport would: m->on_message gets a decoded copy of msg
 * (the caller keeps msg). */
void fake_call_deliver(struct fake_call *f, const ProtobufCMessage *msg);

/* The transport's stream went away: sends are refused from now on and on_cancel runs. */
void fake_call_cancel(struct fake_call *f);

/* Run the loop until the call is finished or n_sent reaches want_sent (0: only finish), at most
 * timeout_ms. true when reached. */
bool fake_call_wait(struct fake_call *f, uv_loop_t *loop, size_t want_sent, uint32_t timeout_ms);

/* Free the kept messages (the call itself is the caller's). */
void fake_call_clear(struct fake_call *f);

#endif
