/*
 * The relay of tls_relay.h: one thread, blocking I/O on two sockets it polls, so that a download on
 * a thread of its own already (keelctl's, keel-gateway's, keeld's storage writer's) needs no
 * loop.
 */
#include "tls_relay.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pthread.h>

#include "err.h"

#define RELAY_CHUNK (64 * 1024)

struct keel_tls_relay {
    int net, peer; /* the member's socket; the relay's end of the pair */
    int wait_ms;
    char host[64];
    struct keel_tls_conn *t;
    pthread_t thread;
    char why[256]; /* what failed, "" when nothing did */
};

/* Send all of data on fd; 0 or -1. */
static int send_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* What the codec has for the member goes out. 0 or -1. */
static int flush(struct keel_tls_relay *r, uint8_t *buf)
{
    size_t n;
    while ((n = keel_tls_conn_take(r->t, buf, RELAY_CHUNK)) > 0)
        if (send_all(r->net, buf, n) != 0) {
            snprintf(r->why, sizeof(r->why), "write to %s: %s", r->host, strerror(errno));
            return -1;
        }
    return 0;
}

static void failed(struct keel_tls_relay *r, int rv)
{
    if (rv == KEEL_ECLOSED)
        return; /* the member's goodbye: the stream's own end says whether it was complete */
    snprintf(r->why, sizeof(r->why), "TLS handshake with %s failed: %s", r->host,
             rv == KEEL_ENOMEM ? "out of memory" : keel_tls_conn_error(r->t));
}

/* Member -> codec -> caller. 0 to go on, -1 at the end. */
static int from_net(struct keel_tls_relay *r, uint8_t *buf, uint8_t *plain)
{
    ssize_t n = recv(r->net, buf, RELAY_CHUNK, 0);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n <= 0)
        return -1; /* closed, or a receive timeout: the caller sees its stream end */
    int rv = keel_tls_conn_feed(r->t, buf, (size_t)n);
    while (rv == 0) {
        size_t m = 0;
        rv = keel_tls_conn_read(r->t, plain, RELAY_CHUNK, &m);
        if (rv != 0 || m == 0)
            break;
        if (send_all(r->peer, plain, m) != 0)
            return -1; /* the caller is gone */
    }
    if (rv != 0) {
        failed(r, rv);
        (void)flush(r, buf); /* the alert that tells the member why */
        return -1;
    }
    return 0;
}

/* Caller -> codec (sent by the next flush). 0 to go on, -1 at the end. */
static int from_peer(struct keel_tls_relay *r, uint8_t *buf)
{
    ssize_t n = recv(r->peer, buf, RELAY_CHUNK, 0);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n <= 0)
        return -1; /* the caller closed its end: done */
    int rv = keel_tls_conn_write(r->t, buf, (size_t)n);
    if (rv != 0) {
        failed(r, rv);
        return -1;
    }
    return 0;
}

static void *relay(void *arg)
{
    struct keel_tls_relay *r = arg;
    uint8_t *buf = malloc(RELAY_CHUNK), *plain = malloc(RELAY_CHUNK);
    while (buf != NULL && plain != NULL && flush(r, buf) == 0) {
        struct pollfd p[2] = {{.fd = r->net, .events = POLLIN}, {.fd = r->peer, .events = POLLIN}};
        int n = poll(p, 2, r->wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 && !keel_tls_conn_established(r->t))
            snprintf(r->why, sizeof(r->why), "TLS handshake with %s: timed out after %d ms",
                     r->host, r->wait_ms);
        if (n <= 0)
            break;
        if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && from_net(r, buf, plain) != 0)
            break;
        if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) && from_peer(r, buf) != 0)
            break;
    }
    free(buf);
    free(plain);
    /* The caller's reads end here (its stream ends early unless it had the last piece). */
    shutdown(r->peer, SHUT_RDWR);
    return NULL;
}

int keel_tls_relay_start(struct keel_tls_ctx *ctx, const char *host, int net, int wait_ms,
                         struct keel_tls_relay **out, int *local, char *msg, size_t len)
{
    struct keel_tls_relay *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(msg, len, "out of memory");
        return KEEL_ENOMEM;
    }
    r->net = net;
    r->wait_ms = wait_ms;
    snprintf(r->host, sizeof(r->host), "%s", host);
    int pair[2];
    int rv = keel_tls_conn_new(ctx, host, &r->t);
    if (rv != 0) {
        snprintf(msg, len, "TLS with %s: %s", host, keel_strerror(rv));
        free(r);
        return rv == KEEL_ENOMEM ? KEEL_ENOMEM : KEEL_EIO;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) {
        snprintf(msg, len, "socketpair: %s", strerror(errno));
        keel_tls_conn_free(r->t);
        free(r);
        return KEEL_EIO;
    }
    r->peer = pair[1];
    if (pthread_create(&r->thread, NULL, relay, r) != 0) {
        snprintf(msg, len, "cannot start the TLS relay thread");
        close(pair[0]);
        close(pair[1]);
        keel_tls_conn_free(r->t);
        free(r);
        return KEEL_EIO;
    }
    *local = pair[0];
    *out = r;
    return 0;
}

void keel_tls_relay_finish(struct keel_tls_relay *r, char *why, size_t len)
{
    pthread_join(r->thread, NULL);
    snprintf(why, len, "%s", r->why);
    close(r->peer);
    keel_tls_conn_free(r->t);
    free(r);
}
