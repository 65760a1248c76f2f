/*
 * The synchronous API: an asynchronous client on a private loop thread. The typed calls built on
 * keel_do (keel_put, keel_get, ...) are in calls.c.
 *
 * A call puts a descriptor on the handle's queue, wakes the loop with uv_async_send and sleeps on
 * its own condition variable. The loop thread submits everything queued, and each completion
 * copies what the caller needs out of the reply (the reply itself lives only for the callback):
 * the message on failure, a deep copy of the Response on success when the caller wants it
 * (pbclone.h: cheaper than packing it for the caller to unpack, which it was before).
 *
 * Watches go through the same queue. Their callbacks run on the loop thread; a sync_watch wraps
 * the caller's callback to learn when the watch is acknowledged (keel_watch_open returns then)
 * and when it ends. The handle is held (not freed by the core after its final callback) until
 * keel_watch_close, so the caller never holds a dangling pointer.
 *
 * Keep-alive sets (keepalive.c) too: they live on the loop thread, their callbacks run there, and
 * the handle keeps a list of them so that keel_close can close those still running before the
 * client. Called on the loop thread itself (from a callback), their calls act at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pbclone.h"

enum call_kind {
    CALL_REQUEST,
    CALL_WATCH_OPEN,
    CALL_WATCH_CLOSE,
    CALL_WATCH_PROGRESS,
    CALL_KA_START,
    CALL_KA_ADD,
    CALL_KA_REMOVE,
    CALL_KA_STATS,
    CALL_KA_STOP,
    CALL_AUTH,
};

struct sync_call {
    struct sync_call *next;
    struct keel *k;
    int kind;
    const Keel__Request *req;
    struct keel_call_opts opts;
    bool want_resp;
    bool flat; /* keel_do_flat: the copy in one arena (resp is a struct flat's) */
    bool done;
    int status;
    Keel__Response *resp; /* the caller's copy of the Response */
    char msg[KEEL_ERRMSG_MAX];
    uv_cond_t cond;
    /* watch calls */
    const void *key;
    size_t klen;
    const struct keel_watch_opts *wopts;
    keel_watch_cb wcb;
    void *wdata;
    struct keel_watch *w;
    /* keep-alive calls */
    const struct keel_keepalive_opts *kaopts;
    struct keel_keepalive *ka;
    int64_t lease;
    struct keel_keepalive_stats *kastats;
    /* CALL_AUTH */
    const char *user, *password;
};

/* A keep-alive set of the handle. Loop thread only. */
struct sync_ka {
    struct sync_ka *next;
    struct keel_keepalive *ka;
};

/* Loop thread only. */
struct sync_watch {
    struct sync_watch *prev, *next; /* k->watches */
    struct keel *k;
    struct keel_watch *w;
    keel_watch_cb cb;
    void *data;
    bool user_created_notify;
    bool created;
    bool ended;
    struct sync_call *opening; /* keel_watch_open waiting for the acknowledgement */
    struct sync_call *closing; /* keel_watch_close waiting for the final callback */
};

struct keel {
    uv_loop_t loop;
    uv_async_t async;
    uv_thread_t thread;
    uv_mutex_t mu;
    struct keel_aclient *ac;
    struct sync_call *head, *tail; /* under mu */
    bool closing;                  /* under mu */
    bool ac_closing;               /* loop thread only */
    struct sync_watch *watches;    /* loop thread only */
    struct sync_ka *keepalives;    /* loop thread only */
    /* The core's token (under mu: keel_token reads it from any thread; the core holds the
     * credentials and authenticates again when a token expires, request.c). */
    char *token;
};

static _Thread_local char tls_errmsg[KEEL_ERRMSG_MAX];

const char *keel_errmsg(void)
{
    return tls_errmsg;
}

void kc_set_errmsg(const char *msg)
{
    snprintf(tls_errmsg, sizeof(tls_errmsg), "%s", msg);
}

void keel_free(void *msg)
{
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
}

/* Runs on the loop thread. After the signal the caller may return and its stack frame (the call)
 * is gone: nothing touches call after the unlock. */
static void call_finish(struct keel *k, struct sync_call *call, int status)
{
    uv_mutex_lock(&k->mu);
    call->status = status;
    call->done = true;
    uv_cond_signal(&call->cond);
    uv_mutex_unlock(&k->mu);
}

/* A keel_do_flat reply: the Response first, so that its address is the block's. */
struct flat {
    Keel__Response resp;
    struct keel_arena arena; /* everything the Response points to */
};

static Keel__Response *flat_copy(const Keel__Response *resp)
{
    struct flat *f = malloc(sizeof(*f));
    if (f == NULL)
        return NULL;
    keel_arena_init(&f->arena, 256u << 10);
    if (keel_pb_clone_into(&f->resp.base, &resp->base, keel_arena_pb(&f->arena)) != 0) {
        keel_arena_close(&f->arena);
        free(f);
        return NULL;
    }
    return &f->resp;
}

void keel_flat_free(const Keel__Response *resp)
{
    if (resp == NULL)
        return;
    struct flat *f = (struct flat *)(uintptr_t)resp;
    keel_arena_close(&f->arena);
    free(f);
}

static void on_response(int status, const Keel__Response *resp, void *data)
{
    struct sync_call *call = data;
    if (status != 0) {
        snprintf(call->msg, sizeof(call->msg), "%s",
                 resp->error && resp->error->message && resp->error->message[0]
                     ? resp->error->message
                     : keel_strerror(status));
    } else if (call->want_resp) {
        call->resp =
            call->flat ? flat_copy(resp) : (Keel__Response *)keel_pb_clone(&resp->base, NULL);
        if (call->resp == NULL) {
            status = KEEL_ENOMEM;
            snprintf(call->msg, sizeof(call->msg), "%s", keel_strerror(status));
        }
    }
    call_finish(call->k, call, status);
}

/* The core took a new token (keel_auth, or a refresh after one expired): keel_token's. */
static void on_token(void *data, const char *token)
{
    struct keel *k = data;
    char *t = token != NULL ? strdup(token) : NULL; /* NULL when out of memory: none to give */
    uv_mutex_lock(&k->mu);
    free(k->token);
    k->token = t;
    uv_mutex_unlock(&k->mu);
}

static bool on_loop_thread(struct keel *k)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &k->thread);
}

static void sw_unlink(struct sync_watch *sw)
{
    struct keel *k = sw->k;
    if (sw->prev)
        sw->prev->next = sw->next;
    else
        k->watches = sw->next;
    if (sw->next)
        sw->next->prev = sw->prev;
    sw->prev = sw->next = NULL;
}

/* Forget sw; the core frees its watch when the callback running now returns. */
static void sw_release_in_cb(struct sync_watch *sw)
{
    sw->w->held = false;
    sw_unlink(sw);
    free(sw);
}

static void on_watch(struct keel_watch *w, int status, const Keel__Event *const *events,
                     size_t n_events, int64_t revision, void *data)
{
    struct sync_watch *sw = data;
    struct keel *k = sw->k;
    if (!sw->created) {
        struct sync_call *call = sw->opening;
        sw->opening = NULL;
        if (status == 0) {
            /* The acknowledgement (created_notify is forced on): keel_watch_open returns. */
            sw->created = true;
            call->w = w;
            call_finish(k, call, 0);
            if (sw->user_created_notify)
                sw->cb(w, status, events, n_events, revision, sw->data);
            return;
        }
        /* Never acknowledged: the caller gets the error and no handle. */
        snprintf(call->msg, sizeof(call->msg), "%s", keel_watch_error(w));
        call_finish(k, call, status);
        sw_release_in_cb(sw);
        return;
    }
    sw->cb(w, status, events, n_events, revision, sw->data);
    if (status == 0)
        return;
    sw->ended = true;
    if (sw->closing) {
        call_finish(k, sw->closing, 0);
        sw_release_in_cb(sw);
    } else if (k->ac_closing) {
        sw_release_in_cb(sw); /* keel_close: nobody will call keel_watch_close */
    }
}

static void watch_open(struct keel *k, struct sync_call *call)
{
    struct sync_watch *sw = calloc(1, sizeof(*sw));
    if (sw == NULL) {
        snprintf(call->msg, sizeof(call->msg), "%s", keel_strerror(KEEL_ENOMEM));
        call_finish(k, call, KEEL_ENOMEM);
        return;
    }
    struct keel_watch_opts o = {0};
    if (call->wopts)
        o = *call->wopts;
    sw->k = k;
    sw->cb = call->wcb;
    sw->data = call->wdata;
    sw->user_created_notify = o.created_notify;
    o.created_notify = true;
    struct keel_watch *w;
    int rv = keel_aclient_watch(k->ac, call->key, call->klen, &o, on_watch, sw, &w);
    if (rv != 0) {
        free(sw);
        snprintf(call->msg, sizeof(call->msg), "%s", keel_strerror(rv));
        call_finish(k, call, rv);
        return;
    }
    w->held = true;
    sw->w = w;
    sw->opening = call;
    sw->next = k->watches;
    if (k->watches)
        k->watches->prev = sw;
    k->watches = sw;
}

static void watch_close(struct keel *k, struct sync_call *call)
{
    struct sync_watch *sw = call->w->data;
    if (sw->ended) {
        sw_unlink(sw);
        kc_watch_close(sw->w);
        free(sw);
        call_finish(k, call, 0);
        return;
    }
    /* Finished by on_watch once the final callback has returned. */
    sw->closing = call;
    keel_watch_cancel(sw->w);
}

/* The handle's record of set ka (NULL: not a set of this handle, or already stopped). */
static struct sync_ka **ka_find(struct keel *k, const struct keel_keepalive *ka)
{
    for (struct sync_ka **p = &k->keepalives; *p; p = &(*p)->next)
        if ((*p)->ka == ka)
            return p;
    return NULL;
}

/* A keep-alive call, on the loop thread. KEEL_EINVAL for a set this handle does not know. */
static int ka_run(struct keel *k, struct sync_call *call)
{
    if (call->kind == CALL_KA_START) {
        struct sync_ka *s = malloc(sizeof(*s));
        if (s == NULL)
            return KEEL_ENOMEM;
        int rv = keel_aclient_keepalive(k->ac, call->kaopts, &s->ka);
        if (rv != 0) {
            free(s);
            return rv;
        }
        s->next = k->keepalives;
        k->keepalives = s;
        call->ka = s->ka;
        return 0;
    }
    struct sync_ka **p = ka_find(k, call->ka);
    if (p == NULL)
        return KEEL_EINVAL;
    switch (call->kind) {
    case CALL_KA_ADD:
        return keel_keepalive_add(call->ka, call->lease);
    case CALL_KA_REMOVE:
        return keel_keepalive_remove(call->ka, call->lease);
    case CALL_KA_STATS:
        keel_keepalive_stats(call->ka, call->kastats);
        return 0;
    default: {
        struct sync_ka *s = *p;
        *p = s->next;
        keel_keepalive_close(s->ka);
        free(s);
        return 0;
    }
    }
}

static void on_ac_closed(void *data)
{
    struct keel *k = data;
    uv_close((uv_handle_t *)&k->async, NULL);
}

static void on_async(uv_async_t *h)
{
    struct keel *k = h->data;
    uv_mutex_lock(&k->mu);
    struct sync_call *list = k->head;
    k->head = k->tail = NULL;
    bool closing = k->closing;
    uv_mutex_unlock(&k->mu);
    while (list) {
        struct sync_call *call = list;
        list = call->next;
        int rv = 0;
        switch (call->kind) {
        case CALL_WATCH_OPEN:
            watch_open(k, call);
            continue;
        case CALL_WATCH_CLOSE:
            watch_close(k, call);
            continue;
        case CALL_WATCH_PROGRESS:
            rv = keel_watch_progress(call->w);
            snprintf(call->msg, sizeof(call->msg), "%s", keel_strerror(rv));
            call_finish(k, call, rv);
            continue;
        case CALL_KA_START:
        case CALL_KA_ADD:
        case CALL_KA_REMOVE:
        case CALL_KA_STATS:
        case CALL_KA_STOP:
            rv = ka_run(k, call);
            snprintf(call->msg, sizeof(call->msg), "%s", keel_strerror(rv));
            call_finish(k, call, rv);
            continue;
        case CALL_AUTH:
            rv = keel_aclient_auth(k->ac, call->user, call->password, on_response, call);
            break;
        default:
            rv = keel_aclient_request_ex(k->ac, call->req, &call->opts, on_response, call);
            break;
        }
        if (rv != 0) {
            snprintf(call->msg, sizeof(call->msg), "%s", keel_strerror(rv));
            call_finish(k, call, rv);
        }
    }
    if (closing && !k->ac_closing) {
        k->ac_closing = true;
        /* Keep-alive sets first: their timers are handles of this loop. */
        while (k->keepalives) {
            struct sync_ka *s = k->keepalives;
            k->keepalives = s->next;
            keel_keepalive_close(s->ka);
            free(s);
        }
        /* Watches that ended on their own and were never closed: nobody will now. The live ones
         * end in keel_aclient_close, and on_watch lets them go. */
        struct sync_watch *sw = k->watches;
        while (sw) {
            struct sync_watch *next = sw->next;
            if (sw->ended) {
                sw_unlink(sw);
                kc_watch_close(sw->w);
                free(sw);
            }
            sw = next;
        }
        keel_aclient_close(k->ac, on_ac_closed, k);
    }
}

static void loop_thread(void *arg)
{
    struct keel *k = arg;
    uv_run(&k->loop, UV_RUN_DEFAULT);
}

int keel_open(struct keel **out, const struct keel_options *opts)
{
    if (out == NULL)
        return KEEL_EINVAL;
    struct keel *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return KEEL_ENOMEM;
    int rv = KEEL_EIO;
    if (uv_loop_init(&k->loop) != 0)
        goto fail_loop;
    /* The credentials go to the core through keel_auth below, which reports how it went. */
    struct keel_options o = opts != NULL ? *opts : (struct keel_options){0};
    o.user = o.password = NULL;
    rv = keel_aclient_init(&k->ac, &k->loop, &o);
    if (rv != 0)
        goto fail_ac;
    k->ac->on_token = on_token;
    k->ac->on_token_data = k;
    if (uv_mutex_init(&k->mu) != 0) {
        rv = KEEL_ENOMEM;
        goto fail_mutex;
    }
    uv_async_init(&k->loop, &k->async, on_async);
    k->async.data = k;
    if (uv_thread_create(&k->thread, loop_thread, k) != 0) {
        rv = KEEL_EIO;
        goto fail_thread;
    }
    if (opts != NULL && opts->user != NULL && opts->user[0] != '\0' &&
        (rv = keel_auth(k, opts->user, opts->password ? opts->password : "")) != 0) {
        char msg[KEEL_ERRMSG_MAX];
        snprintf(msg, sizeof(msg), "%s", keel_errmsg());
        keel_close(k);
        kc_set_errmsg(msg);
        return rv;
    }
    *out = k;
    return 0;

fail_thread:
    /* Unwind on this thread: the loop never ran. */
    keel_aclient_close(k->ac, NULL, NULL);
    uv_close((uv_handle_t *)&k->async, NULL);
    uv_run(&k->loop, UV_RUN_DEFAULT);
    uv_mutex_destroy(&k->mu);
    uv_loop_close(&k->loop);
    free(k);
    return rv;
fail_mutex:
    keel_aclient_close(k->ac, NULL, NULL);
    uv_run(&k->loop, UV_RUN_DEFAULT);
fail_ac:
    uv_loop_close(&k->loop);
fail_loop:
    free(k);
    return rv;
}

void keel_close(struct keel *k)
{
    if (k == NULL)
        return;
    uv_mutex_lock(&k->mu);
    k->closing = true;
    uv_mutex_unlock(&k->mu);
    uv_async_send(&k->async);
    uv_thread_join(&k->thread);
    /* Every handle is closed once the loop returns; one more pass covers a close callback the
     * loop had not yet run. */
    while (uv_loop_close(&k->loop) == UV_EBUSY)
        uv_run(&k->loop, UV_RUN_NOWAIT);
    uv_mutex_destroy(&k->mu);
    free(k->token);
    free(k);
}

/* Hand call to the loop thread and wait until it is finished. 0 or the reason it could not be
 * submitted (the message set); the call's own outcome is in call->status. */
static int submit(struct keel *k, struct sync_call *call)
{
    if (on_loop_thread(k)) {
        kc_set_errmsg("called from a callback, on the client's own loop thread: it would wait for "
                      "itself");
        return KEEL_EINVAL;
    }
    call->k = k;
    if (uv_cond_init(&call->cond) != 0) {
        kc_set_errmsg(keel_strerror(KEEL_ENOMEM));
        return KEEL_ENOMEM;
    }
    uv_mutex_lock(&k->mu);
    if (k->closing) {
        uv_mutex_unlock(&k->mu);
        uv_cond_destroy(&call->cond);
        kc_set_errmsg("client closed");
        return KEEL_ECLOSED;
    }
    if (k->tail)
        k->tail->next = call;
    else
        k->head = call;
    k->tail = call;
    uv_mutex_unlock(&k->mu);
    uv_async_send(&k->async);

    uv_mutex_lock(&k->mu);
    while (!call->done)
        uv_cond_wait(&call->cond, &k->mu);
    uv_mutex_unlock(&k->mu);
    uv_cond_destroy(&call->cond);
    return 0;
}

/* submit, then the call's own answer: 0, or its status with its message for keel_errmsg. */
static int submit_answered(struct keel *k, struct sync_call *call)
{
    int rv = submit(k, call);
    if (rv == 0 && (rv = call->status) != 0)
        kc_set_errmsg(call->msg);
    return rv;
}

/* One request through the loop; *out gets the copy (malloc'd per field, or flat). */
static int call_request(struct keel *k, const Keel__Request *req, const struct keel_call_opts *opts,
                        bool flat, Keel__Response **out)
{
    if (out)
        *out = NULL;
    if (k == NULL || req == NULL) {
        kc_set_errmsg(keel_strerror(KEEL_EINVAL));
        return KEEL_EINVAL;
    }
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_REQUEST;
    call.req = req;
    if (opts)
        call.opts = *opts;
    call.want_resp = out != NULL;
    call.flat = flat;
    int rv = submit_answered(k, &call);
    if (rv != 0)
        return rv;
    if (out)
        *out = call.resp;
    return 0;
}

int keel_auth(struct keel *k, const char *user, const char *password)
{
    if (k == NULL || user == NULL || user[0] == '\0' || password == NULL) {
        kc_set_errmsg("keel_auth: no user name or no password");
        return KEEL_EINVAL;
    }
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_AUTH;
    call.user = user;
    call.password = password; /* the core copies both before this returns */
    return submit_answered(k, &call);
}

char *keel_token(struct keel *k)
{
    uv_mutex_lock(&k->mu);
    char *t = k->token != NULL ? strdup(k->token) : NULL;
    uv_mutex_unlock(&k->mu);
    return t;
}

int keel_do_ex(struct keel *k, const Keel__Request *req, const struct keel_call_opts *opts,
               Keel__Response **out)
{
    return call_request(k, req, opts, false, out);
}

int keel_do_flat(struct keel *k, const Keel__Request *req, const struct keel_call_opts *opts,
                 const Keel__Response **out)
{
    if (out == NULL) {
        kc_set_errmsg("keel_do_flat: out is NULL");
        return KEEL_EINVAL;
    }
    Keel__Response *resp = NULL;
    int rv = call_request(k, req, opts, true, &resp);
    *out = resp;
    return rv;
}

int keel_do(struct keel *k, const Keel__Request *req, Keel__Response **out)
{
    return keel_do_ex(k, req, NULL, out);
}

int keel_watch_open(struct keel *k, const void *key, size_t klen,
                    const struct keel_watch_opts *opts, keel_watch_cb cb, void *data,
                    struct keel_watch **out)
{
    if (out)
        *out = NULL;
    if (k == NULL || cb == NULL || out == NULL) {
        kc_set_errmsg(keel_strerror(KEEL_EINVAL));
        return KEEL_EINVAL;
    }
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_WATCH_OPEN;
    call.key = key;
    call.klen = klen;
    call.wopts = opts;
    call.wcb = cb;
    call.wdata = data;
    int rv = submit_answered(k, &call);
    if (rv != 0)
        return rv;
    *out = call.w;
    return 0;
}

int keel_watch_close(struct keel *k, struct keel_watch *w)
{
    if (k == NULL || w == NULL) {
        kc_set_errmsg(keel_strerror(KEEL_EINVAL));
        return KEEL_EINVAL;
    }
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_WATCH_CLOSE;
    call.w = w;
    return submit(k, &call);
}

int keel_watch_request_progress(struct keel *k, struct keel_watch *w)
{
    if (k == NULL || w == NULL) {
        kc_set_errmsg(keel_strerror(KEEL_EINVAL));
        return KEEL_EINVAL;
    }
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_WATCH_PROGRESS;
    call.w = w;
    return submit_answered(k, &call);
}

/* A keep-alive call from any thread: marshalled to the loop thread, or run at once when called
 * there (from a callback of the handle). */
static int ka_call(struct keel *k, struct sync_call *call)
{
    if (k == NULL) {
        kc_set_errmsg(keel_strerror(KEEL_EINVAL));
        return KEEL_EINVAL;
    }
    int rv;
    if (on_loop_thread(k)) {
        rv = k->ac_closing ? KEEL_ECLOSED : ka_run(k, call);
    } else {
        rv = submit(k, call);
        if (rv != 0)
            return rv;
        rv = call->status;
    }
    if (rv != 0)
        kc_set_errmsg(keel_strerror(rv));
    return rv;
}

int keel_lease_keepalive_start(struct keel *k, const struct keel_keepalive_opts *opts,
                               struct keel_keepalive **out)
{
    if (out == NULL) {
        kc_set_errmsg(keel_strerror(KEEL_EINVAL));
        return KEEL_EINVAL;
    }
    *out = NULL;
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_KA_START;
    call.kaopts = opts;
    int rv = ka_call(k, &call);
    if (rv == 0)
        *out = call.ka;
    return rv;
}

int keel_lease_keepalive_add(struct keel *k, struct keel_keepalive *ka, int64_t id)
{
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_KA_ADD;
    call.ka = ka;
    call.lease = id;
    return ka_call(k, &call);
}

int keel_lease_keepalive_remove(struct keel *k, struct keel_keepalive *ka, int64_t id)
{
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_KA_REMOVE;
    call.ka = ka;
    call.lease = id;
    return ka_call(k, &call);
}

int keel_lease_keepalive_stats(struct keel *k, struct keel_keepalive *ka,
                               struct keel_keepalive_stats *out)
{
    if (out == NULL) {
        kc_set_errmsg(keel_strerror(KEEL_EINVAL));
        return KEEL_EINVAL;
    }
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_KA_STATS;
    call.ka = ka;
    call.kastats = out;
    return ka_call(k, &call);
}

int keel_lease_keepalive_stop(struct keel *k, struct keel_keepalive *ka)
{
    struct sync_call call;
    memset(&call, 0, sizeof(call));
    call.kind = CALL_KA_STOP;
    call.ka = ka;
    return ka_call(k, &call);
}
