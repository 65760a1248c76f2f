/*
 * The asynchronous client itself: init, close, the work of each loop turn, and the events of its
 * connections, handed on to routing (route.c), requests (request.c) and watches (watch.c).
 *
 * This is the top of the client's files: it calls the others, and they reach it only through
 * the callbacks it sets (ac->turn and ac->timeout for wake.c, the kc_conn_events for conn.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Deliver local failures and watch endings now (never re-entered). */
static void drain(struct keel_aclient *ac)
{
    if (ac->draining)
        return;
    ac->draining = true;
    kc_requests_drain(ac);
    kc_watch_drain(ac);
    ac->draining = false;
}

/* ---------------------------------------------------------------------------------------------
 * Loop turns and timers (wake.c calls these)
 */

static void flush_all(struct keel_aclient *ac)
{
    for (int i = 0; i < ac->npeers; i++) {
        struct kc_conn *c = ac->peers[i].conn;
        if (c && c->state == KC_READY && c->pending.n > 0 && !c->writing)
            kc_conn_flush(c);
    }
}

static void turn(struct keel_aclient *ac)
{
    if (ac->need_route && !ac->closing) {
        ac->need_route = false;
        kc_requests_route(ac);
        kc_watch_route(ac);
    }
    flush_all(ac);
    drain(ac);
}

static void timeout(struct keel_aclient *ac)
{
    kc_requests_expire(ac);
    /* Backoffs of waiting requests, watches and members may have ended. */
    ac->need_route = true;
    kc_kick(ac);
    kc_schedule(ac, kc_requests_next_deadline(ac));
}

/* ---------------------------------------------------------------------------------------------
 * Connection events (conn.c calls these)
 */

static struct keel_aclient *owner_of(const struct kc_conn *c)
{
    return c->ctx->data;
}

static void on_ready(struct kc_conn *c, const Keel__HelloResponse *hr)
{
    struct keel_aclient *ac = owner_of(c);
    kc_route_learn(ac, c, hr);
    ac->need_route = true;
    kc_kick(ac);
}

static void on_lost(struct kc_conn *c, int status, const char *msg)
{
    struct keel_aclient *ac = owner_of(c);
    if (c->state == KC_CLOSED)
        return;
    kc_route_lost(ac, c, c->state == KC_READY, msg);
    kc_conn_close(c);
    kc_requests_conn_lost(ac, c, status, msg);
    kc_watch_conn_lost(ac, c);
    ac->need_route = true;
    kc_kick(ac);
}

static void on_response(struct kc_conn *c, const Keel__Response *resp)
{
    struct keel_aclient *ac = owner_of(c);
    if (!(resp->id & KC_WATCH_BIT)) {
        kc_requests_response(ac, c, resp);
        return;
    }
    kc_watch_response(ac, c, resp);
    /* keel_aclient_close from a watch callback left that watch's final call for now. */
    if (ac->closing && ac->wdone.head != NULL)
        drain(ac);
}

static void on_written(struct kc_conn *c, struct kc_op *op)
{
    kc_requests_written(owner_of(c), op);
}

static void maybe_finish(struct keel_aclient *ac);

/* A connection, or the client's own handles (kc_wake_close), are gone. */
static void on_closed(void *data)
{
    maybe_finish(data);
}

static const struct kc_conn_events conn_events = {
    .ready = on_ready,
    .response = on_response,
    .lost = on_lost,
    .written = on_written,
    .closed = on_closed,
};

/* ---------------------------------------------------------------------------------------------
 * Lifecycle
 */

static void ac_free(struct keel_aclient *ac)
{
    kc_pool_close(&ac->pool);
    kc_slots_close(&ac->wslots);
    kc_slots_close(&ac->slots);
    kc_heap_close(&ac->heap);
    keel_tls_ctx_free(ac->conns.tls);
    free(ac->conns.tls_rbuf);
    free(ac->client_name);
    free(ac->token);
    free(ac->user);
    kc_wipe_free(ac->password);
    free(ac);
}

static void maybe_finish(struct keel_aclient *ac)
{
    if (!ac->closing || ac->open_handles > 0 || ac->conns.live > 0)
        return;
    keel_close_cb cb = ac->close_cb;
    void *data = ac->close_data;
    ac_free(ac);
    if (cb)
        cb(data);
}

/* Add the comma-separated endpoints. 0 or KEEL_EINVAL (one does not parse, or none). */
static int add_endpoints(struct keel_aclient *ac, const char *eps)
{
    for (const char *s = eps; *s;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len > 0) {
            int i = kc_peer_add(ac, s, len);
            if (i < 0)
                return KEEL_EINVAL;
            ac->peers[i].from_endpoints = true;
        }
        s += len;
        if (*s == ',')
            s++;
    }
    return ac->npeers > 0 ? 0 : KEEL_EINVAL;
}

int keel_endpoints_check(const char *endpoints, char *msg, size_t len)
{
    const char *eps = endpoints && endpoints[0] ? endpoints : KEEL_DEFAULT_ENDPOINT;
    size_t count = 0;
    for (const char *s = eps; *s;) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char why[160];
        if (n > 0 && kc_parse_addr(s, n, NULL, NULL, why, sizeof(why)) != 0) {
            if (msg != NULL && len > 0)
                snprintf(msg, len,
                         "endpoint '%.*s' is not HOST:PORT (HOST an IPv4 address or a "
                         "host name): %s",
                         (int)(n > 200 ? 200 : n), s, why);
            return KEEL_EINVAL;
        }
        count += n > 0;
        s += n;
        if (*s == ',')
            s++;
    }
    if (count == 0) {
        if (msg != NULL && len > 0)
            snprintf(msg, len, "no endpoint in '%s'", eps);
        return KEEL_EINVAL;
    }
    return 0;
}

int keel_aclient_set_token(struct keel_aclient *ac, const char *token)
{
    return kc_token_set(ac, token);
}

/* Does the client speak TLS: an https:// endpoint, or any TLS option (keel.h)? */
static bool wants_tls(const struct keel_options *o, const char *eps)
{
    return strstr(eps, "https://") != NULL || o->ca_file != NULL || o->cert_file != NULL ||
           o->key_file != NULL || o->insecure_skip_verify;
}

/* The connections' TLS context, when the options ask for TLS. 0, or KEEL_EINVAL with
 * keel_errmsg set (a file that does not load), KEEL_ENOMEM. */
static int tls_setup(struct kc_conn_ctx *cc, const struct keel_options *o, const char *eps)
{
    if (!wants_tls(o, eps))
        return 0;
    struct keel_tls_options to = {.role = KEEL_TLS_CLIENT,
                                  .cert_file = o->cert_file,
                                  .key_file = o->key_file,
                                  .ca_file = o->ca_file,
                                  .verify_peer = !o->insecure_skip_verify};
    char err[KC_MSG_MAX - 8];
    int rv = keel_tls_ctx_new(&to, &cc->tls, err, sizeof(err));
    if (rv != 0) {
        char msg[KC_MSG_MAX];
        snprintf(msg, sizeof(msg), "%s", rv == KEEL_ENOMEM ? keel_strerror(rv) : err);
        kc_set_errmsg(msg);
        return rv;
    }
    cc->tls_rbuf = malloc(KC_READ_CHUNK);
    return cc->tls_rbuf != NULL ? 0 : KEEL_ENOMEM;
}

int keel_aclient_init(struct keel_aclient **out, uv_loop_t *loop, const struct keel_options *opts)
{
    static const struct keel_options defaults;
    if (out == NULL || loop == NULL)
        return KEEL_EINVAL;
    if (opts == NULL)
        opts = &defaults;
    struct keel_aclient *ac = calloc(1, sizeof(*ac));
    if (ac == NULL)
        return KEEL_ENOMEM;
    ac->loop = loop;
    ac->leader = -1;
    kc_slots_init(&ac->slots);
    kc_slots_init(&ac->wslots);
    kc_heap_init(&ac->heap);
    kc_pool_init(&ac->pool);
    ac->request_timeout_ms =
        opts->request_timeout_ms ? opts->request_timeout_ms : KEEL_DEFAULT_REQUEST_TIMEOUT_MS;
    ac->max_retries = opts->max_retries ? opts->max_retries : KEEL_DEFAULT_MAX_RETRIES;
    if (ac->max_retries > UINT16_MAX) /* op->attempts is 16 bits */
        ac->max_retries = UINT16_MAX;
    ac->max_frame = opts->max_frame ? opts->max_frame : KEEL_FRAME_DEFAULT_MAX;
    struct kc_conn_ctx *cc = &ac->conns;
    cc->loop = loop;
    cc->dial_timeout_ms =
        opts->dial_timeout_ms ? opts->dial_timeout_ms : KEEL_DEFAULT_DIAL_TIMEOUT_MS;
    cc->max_frame = ac->max_frame;
    cc->stats = &ac->stats;
    cc->ev = &conn_events;
    cc->data = ac;
    int rv = KEEL_EINVAL;
    if (opts->zone && strlen(opts->zone) >= sizeof(ac->zone))
        goto fail;
    snprintf(ac->zone, sizeof(ac->zone), "%s", opts->zone ? opts->zone : "");
    if (opts->source_address && opts->source_address[0]) {
        if (uv_ip4_addr(opts->source_address, 0, &ac->source) != 0)
            goto fail;
        cc->source = &ac->source;
    }
    rv = KEEL_ENOMEM;
    ac->client_name = strdup(opts->client_name ? opts->client_name : "libkeel");
    if (ac->client_name == NULL)
        goto fail;
    cc->client_name = ac->client_name;
    if (opts->token) {
        ac->token = strdup(opts->token);
        if (ac->token == NULL)
            goto fail;
        cc->token = ac->token;
    }
    if (opts->user != NULL && opts->user[0] != '\0') {
        ac->user = strdup(opts->user);
        ac->password = strdup(opts->password != NULL ? opts->password : "");
        if (ac->user == NULL || ac->password == NULL)
            goto fail;
    }
    const char *eps =
        opts->endpoints && opts->endpoints[0] ? opts->endpoints : KEEL_DEFAULT_ENDPOINT;
    rv = add_endpoints(ac, eps);
    if (rv != 0)
        goto fail;
    kc_set_errmsg("");
    if ((rv = tls_setup(cc, opts, eps)) != 0)
        goto fail;
    ac->turn = turn;
    ac->timeout = timeout;
    kc_wake_init(ac);
    /* With credentials and no token, authenticate first: requests wait for the token. */
    if (ac->user != NULL && ac->token == NULL)
        kc_auth_start(ac);
    *out = ac;
    return 0;

fail:
    ac_free(ac);
    return rv;
}

void keel_aclient_close(struct keel_aclient *ac, keel_close_cb cb, void *data)
{
    if (ac == NULL || ac->closing)
        return;
    ac->close_cb = cb;
    ac->close_data = data;
    ac->closing = true;
    kc_requests_cancel(ac);
    for (int i = 0; i < ac->npeers; i++) {
        struct kc_conn *c = ac->peers[i].conn;
        if (c == NULL)
            continue;
        ac->peers[i].conn = NULL;
        kc_conn_close(c);
    }
    kc_watch_close_all(ac);
    drain(ac);
    kc_wake_close(ac, on_closed);
}

void keel_aclient_stats(const struct keel_aclient *ac, struct keel_aclient_stats *out)
{
    *out = ac->stats;
    out->connections = (uint32_t)ac->conns.live;
    out->watches = (uint32_t)(ac->watches.n + ac->wsettling.n);
}
