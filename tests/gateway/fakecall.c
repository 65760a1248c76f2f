#include "fakecall.h"

#include <stdlib.h>
#include <string.h>

static int fake_send(struct gw_call *c, const ProtobufCMessage *msg)
{
    struct fake_call *f = (struct fake_call *)c;
    if (f->cancelled || f->finished)
        return -1;
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        abort();
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(msg->descriptor, NULL, len, buf);
    free(buf);
    if (!copy)
        abort(); /* what a handler sends must decode */
    if (f->n_sent < FAKE_CALL_MAX_SENT)
        f->sent[f->n_sent++] = copy;
    else {
        f->dropped++;
        protobuf_c_message_free_unpacked(copy, NULL);
    }
    return 0;
}

static void fake_finish(struct gw_call *c, enum gw_code code, const char *message)
{
    struct fake_call *f = (struct fake_call *)c;
    if (f->finished)
        abort(); /* exactly once: call.h */
    f->finished = true;
    f->code = code;
    snprintf(f->message, sizeof(f->message), "%s", message ? message : "");
}

static size_t fake_pending(const struct gw_call *c)
{
    return ((const struct fake_call *)c)->pending_bytes;
}

static const struct gw_call_ops fake_ops = {fake_send, fake_finish, fake_pending};

void fake_call_init(struct fake_call *f, struct gw_ctx *ctx, const struct gw_method *m)
{
    memset(f, 0, sizeof(*f));
    f->call.ops = &fake_ops;
    f->call.method = m;
    f->call.ctx = ctx;
    f->call.authority = "";
}

void fake_call_deliver(struct fake_call *f, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        abort();
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(f->call.method->req, NULL, len, buf);
    free(buf);
    if (!copy)
        abort();
    f->call.method->on_message(&f->call, copy);
}

void fake_call_cancel(struct fake_call *f)
{
    f->cancelled = true;
    if (f->call.method->on_cancel)
        f->call.method->on_cancel(&f->call);
}

bool fake_call_wait(struct fake_call *f, uv_loop_t *loop, size_t want_sent, uint32_t timeout_ms)
{
    uint64_t deadline = uv_now(loop) + timeout_ms;
    while (!(f->finished || (want_sent && f->n_sent >= want_sent))) {
        if (uv_now(loop) >= deadline)
            return false;
        uv_run(loop, UV_RUN_ONCE);
        uv_update_time(loop);
    }
    return true;
}

void fake_call_clear(struct fake_call *f)
{
    for (size_t i = 0; i < f->n_sent; i++)
        protobuf_c_message_free_unpacked(f->sent[i], NULL);
    f->n_sent = 0;
}
