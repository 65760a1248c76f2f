/*
 * etcd's Maintenance/Snapshot served from keel's snapshot stream (see snapshot.h).
 *
 * One call's life:
 *   gw_snapshot_on_message -> a thread runs keel_snapshot (a blocking download on a connection
 *     of its own, from the first of --endpoints that answers); its sink queues each piece
 *   the loop (async) -> each queued piece goes out as a SnapshotResponse, into the SHA-256 too
 *   the thread ends -> the digest goes out as the last response (remaining_bytes 0), the call
 *     ends OK; or it ends with the download's error
 *
 * Memory is bounded twice: the sink waits while SNAP_QUEUE_BYTES are queued, and the loop stops
 * taking pieces while the client has SNAP_QUEUE_BYTES unread (looking again every
 * SNAP_POLL_MS), so a slow client slows keel's stream instead of growing the gateway.
 */
#include "snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "convert.h"
#include "err.h"
#include "keel/keel.h"

#define SNAP_QUEUE_BYTES (8u << 20)
#define SNAP_POLL_MS     10

struct piece {
    struct piece *next;
    size_t n;
    uint8_t data[];
};

struct snap {
    struct gw_call *call; /* until the call is finished */
    bool gone;            /* the client went away (on_cancel, or a send refused) */
    char *endpoints;      /* --endpoints, for the thread */
    struct keel_options opts;
    uv_thread_t thread;
    uv_async_t async; /* the thread queued a piece, or ended */
    uv_timer_t poll;  /* the client's backlog is looked at again */
    EVP_MD_CTX *md;   /* the digest etcd appends: SHA-256 of everything sent */
    uv_mutex_t mu;
    uv_cond_t cond;      /* room in the queue, or cancelled */
    struct piece *head;  /* under mu */
    struct piece **tail; /* under mu */
    size_t queued;       /* under mu */
    bool cancelled;      /* under mu */
    bool given;          /* under mu: the sink queued a piece (the download is not retried) */
    bool ended;          /* under mu: the thread returned */
    int rc;              /* under mu, once ended */
    char msg[512];       /* under mu, once ended with rc != 0 */
    int handles;         /* open handles: freed when the last closes */
};

/* ---- the download thread ---- */

static int sink(void *data, const void *bytes, size_t n)
{
    struct snap *s = data;
    struct piece *p = malloc(sizeof(*p) + n);
    if (p == NULL)
        return KEEL_ENOMEM;
    p->next = NULL;
    p->n = n;
    memcpy(p->data, bytes, n);
    uv_mutex_lock(&s->mu);
    while (s->queued >= SNAP_QUEUE_BYTES && !s->cancelled)
        uv_cond_wait(&s->cond, &s->mu);
    bool cancelled = s->cancelled;
    if (!cancelled) {
        *s->tail = p;
        s->tail = &p->next;
        s->queued += n;
        s->given = true;
    }
    uv_mutex_unlock(&s->mu);
    if (cancelled) {
        free(p);
        return KEEL_ECANCELED;
    }
    uv_async_send(&s->async);
    return 0;
}

static void download(void *arg)
{
    struct snap *s = arg;
    int rc = KEEL_EUNAVAILABLE;
    char msg[sizeof(s->msg)] = "no keel member to take a snapshot from";
    /* etcd snapshots the member the client reached; behind the gateway, the first keel member
     * that answers and is not busy with another snapshot (a member serves one at a time, and
     * one a client just left may still be winding down). A member that fails after sending
     * something is not retried. */
    char *save = NULL;
    for (char *ep = strtok_r(s->endpoints, ",", &save); ep != NULL;
         ep = strtok_r(NULL, ",", &save)) {
        rc = keel_snapshot(&s->opts, ep, sink, s, NULL);
        if (rc != 0)
            snprintf(msg, sizeof(msg), "keel-gateway: %s", keel_errmsg());
        uv_mutex_lock(&s->mu);
        bool retry = rc != 0 && !s->given && !s->cancelled &&
                     (rc == KEEL_EIO || rc == KEEL_EUNAVAILABLE || rc == KEEL_ETOOMANYREQUESTS);
        uv_mutex_unlock(&s->mu);
        if (!retry)
            break;
    }
    uv_mutex_lock(&s->mu);
    s->ended = true;
    s->rc = rc;
    snprintf(s->msg, sizeof(s->msg), "%s", msg);
    uv_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

/* ---- the loop ---- */

static void on_closed(uv_handle_t *h)
{
    struct snap *s = h->data;
    if (--s->handles > 0)
        return;
    struct piece *p = s->head;
    while (p != NULL) {
        struct piece *next = p->next;
        free(p);
        p = next;
    }
    EVP_MD_CTX_free(s->md);
    uv_cond_destroy(&s->cond);
    uv_mutex_destroy(&s->mu);
    free(s->endpoints);
    free(s);
}

/* The thread returned: end the call (exactly once) and let go of everything. */
static void end(struct snap *s, enum gw_code code, const char *message)
{
    uv_thread_join(&s->thread);
    s->call->state = NULL;
    gw_call_finish(s->call, s->gone ? GW_CANCELLED : code, s->gone ? NULL : message);
    s->call = NULL;
    uv_timer_stop(&s->poll);
    uv_close((uv_handle_t *)&s->async, on_closed);
    uv_close((uv_handle_t *)&s->poll, on_closed);
}

/* Stop the thread at its next piece (or its wait for room). */
static void stop_thread(struct snap *s)
{
    s->gone = true;
    uv_mutex_lock(&s->mu);
    s->cancelled = true;
    uv_cond_signal(&s->cond);
    uv_mutex_unlock(&s->mu);
}

static void pump(struct snap *s);

static void on_poll(uv_timer_t *t)
{
    pump(t->data);
}

static void on_async(uv_async_t *a)
{
    pump(a->data);
}

/* Send what the thread queued while the client keeps up; end the call once the thread ended. */
static void pump(struct snap *s)
{
    if (s->call == NULL)
        return; /* ended: a wakeup still on its way */
    for (;;) {
        if (!s->gone && gw_call_pending(s->call) >= SNAP_QUEUE_BYTES) {
            uv_timer_start(&s->poll, on_poll, SNAP_POLL_MS, 0);
            return;
        }
        uv_mutex_lock(&s->mu);
        struct piece *p = s->head;
        if (p != NULL) {
            s->head = p->next;
            if (s->head == NULL)
                s->tail = &s->head;
            s->queued -= p->n;
            uv_cond_signal(&s->cond);
        }
        bool ended = s->ended;
        int rc = s->rc;
        uv_mutex_unlock(&s->mu);
        if (p != NULL) {
            if (!s->gone) {
                EVP_DigestUpdate(s->md, p->data, p->n);
                Etcdserverpb__SnapshotResponse r = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
                /* keel's stream does not tell the gateway its size ahead: what is known to
                 * remain is the digest (etcdctl reads neither). */
                r.remaining_bytes = 32;
                r.blob.data = p->data;
                r.blob.len = p->n;
                if (gw_call_send(s->call, &r.base) != 0)
                    stop_thread(s);
            }
            free(p);
            continue;
        }
        if (!ended)
            return;
        if (rc != 0 || s->gone) {
            const char *etcd_msg = NULL;
            end(s, gw_error(rc, NULL, &etcd_msg), s->msg);
            return;
        }
        /* etcd's trailer: the SHA-256 of the copy (etcdctl checks that the size has room for
         * one), as the last response. */
        uint8_t digest[32];
        unsigned len = 0;
        if (EVP_DigestFinal_ex(s->md, digest, &len) != 1 || len != 32) {
            end(s, GW_INTERNAL, "keel-gateway: SHA-256 is not available");
            return;
        }
        Etcdserverpb__SnapshotResponse r = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
        r.blob.data = digest;
        r.blob.len = sizeof(digest);
        gw_call_send(s->call, &r.base);
        end(s, GW_OK, NULL);
        return;
    }
}

void gw_snapshot_on_message(struct gw_call *c, ProtobufCMessage *msg)
{
    protobuf_c_message_free_unpacked(msg, NULL);
    if (c->ctx->endpoints == NULL || c->ctx->endpoints[0] == '\0') {
        gw_call_finish(c, GW_UNAVAILABLE, "keel-gateway: no keel member to take a snapshot from");
        return;
    }
    struct snap *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->endpoints = strdup(c->ctx->endpoints)) == NULL ||
        (s->md = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1) {
        if (s != NULL) {
            EVP_MD_CTX_free(s->md);
            free(s->endpoints);
            free(s);
        }
        gw_call_finish(c, GW_INTERNAL, "keel-gateway: out of memory");
        return;
    }
    s->call = c;
    s->tail = &s->head;
    /* Each wait of the download (for a piece, for room to send) is bounded by this; a
     * snapshot of any size may take longer in all. */
    s->opts.client_name = "keel-gateway";
    s->opts.request_timeout_ms = c->ctx->request_timeout_ms;
    s->opts.ca_file = c->ctx->upstream_ca;
    s->opts.cert_file = c->ctx->upstream_cert;
    s->opts.key_file = c->ctx->upstream_key;
    s->opts.insecure_skip_verify = c->ctx->upstream_insecure;
    uv_mutex_init(&s->mu);
    uv_cond_init(&s->cond);
    uv_async_init(c->ctx->loop, &s->async, on_async);
    uv_timer_init(c->ctx->loop, &s->poll);
    s->async.data = s->poll.data = s;
    s->handles = 2;
    c->state = s;
    if (uv_thread_create(&s->thread, download, s) != 0) {
        s->call->state = NULL;
        gw_call_finish(c, GW_INTERNAL, "keel-gateway: cannot start a thread for the snapshot");
        s->call = NULL;
        uv_close((uv_handle_t *)&s->async, on_closed);
        uv_close((uv_handle_t *)&s->poll, on_closed);
    }
}

void gw_snapshot_on_cancel(struct gw_call *c)
{
    struct snap *s = c->state;
    if (s == NULL)
        return;
    stop_thread(s);
    pump(s); /* ends the call now when the thread already returned */
}
