/*
 * keel-zping: TCP ping-pong between two loopback addresses, for the zones tests. A server thread
 * listens on --to, the client socket is bound to --from (so the packets carry both zones), and
 * each round trip is a small request and its echo. Prints the RTT distribution in microseconds.
 *
 * --realtime runs both threads SCHED_FIFO (root): the probe then measures the simulated network,
 * not how long the scheduler keeps it waiting behind other work on a busy machine.
 *
 * Exit: 0 ok, 3 connect failed or timed out, 4 a round trip timed out, 1 anything else.
 * Everything is bounded by --count and --timeout-ms, so a blackholed path ends quickly.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ZP_MSG      32
#define ZP_MAXCOUNT 100000

struct server {
    int lfd;
    int timeout_ms;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int n;
    do {
        n = poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    return n;
}

/* Reads exactly len bytes or fails; the deadline is per call, not per byte. */
static int read_full(int fd, char *buf, size_t len, int timeout_ms)
{
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
    size_t got = 0;
    while (got < len) {
        uint64_t t = now_ns();
        if (t >= deadline)
            return -2;
        int left = (int)((deadline - t) / 1000000ULL) + 1;
        if (wait_fd(fd, POLLIN, left) <= 0)
            return -2;
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

static void *serve(void *arg)
{
    struct server *s = arg;
    if (wait_fd(s->lfd, POLLIN, s->timeout_ms) <= 0)
        return NULL;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[ZP_MSG];
    while (read_full(fd, buf, sizeof(buf), s->timeout_ms) == 0) {
        if (send(fd, buf, sizeof(buf), MSG_NOSIGNAL) != (ssize_t)sizeof(buf))
            break;
    }
    close(fd);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    if (inet_pton(AF_INET, s, &sa->sin_addr) != 1)
        return -1;
    /* Tests only ever talk to this machine. */
    return (ntohl(sa->sin_addr.s_addr) >> 24) == 127 ? 0 : -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: keel-zping --from 127.A.B.C --to 127.D.E.F [--port P] [--count N]\n"
                    "                  [--timeout-ms T] [--warmup W] [--realtime]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'f'},       {"to", required_argument, NULL, 't'},
        {"port", required_argument, NULL, 'p'},       {"count", required_argument, NULL, 'n'},
        {"timeout-ms", required_argument, NULL, 'T'}, {"warmup", required_argument, NULL, 'w'},
        {"realtime", no_argument, NULL, 'r'},         {NULL, 0, NULL, 0},
    };
    const char *from = NULL, *to = NULL;
    long port = 0, count = 200, timeout_ms = 1000, warmup = 5;
    int realtime = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            from = optarg;
            break;
        case 't':
            to = optarg;
            break;
        case 'p':
            port = strtol(optarg, NULL, 10);
            break;
        case 'n':
            count = strtol(optarg, NULL, 10);
            break;
        case 'T':
            timeout_ms = strtol(optarg, NULL, 10);
            break;
        case 'w':
            warmup = strtol(optarg, NULL, 10);
            break;
        case 'r':
            realtime = 1;
            break;
        default:
            usage();
            return 1;
        }
    }
    struct sockaddr_in src, dst;
    if (!from || !to || parse_addr(from, &src) || parse_addr(to, &dst) || port < 0 ||
        port > 65535 || count < 1 || count > ZP_MAXCOUNT || timeout_ms < 1 || timeout_ms > 60000 ||
        warmup < 0 || warmup > 1000) {
        usage();
        return 1;
    }

    if (realtime) {
        /* Before the server thread exists: it inherits the policy. Priority 1, below
         * keel-netsim's, so the simulated network is never kept waiting by its probe. */
        struct sched_param sp = {.sched_priority = 1};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0) {
            fprintf(stderr, "keel-zping: --realtime: SCHED_FIFO unavailable: %s\n",
                    strerror(errno));
            return 1;
        }
    }

    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    dst.sin_port = htons((uint16_t)port);
    socklen_t alen = sizeof(dst);
    if (bind(lfd, (struct sockaddr *)&dst, sizeof(dst)) < 0 || listen(lfd, 4) < 0 ||
        getsockname(lfd, (struct sockaddr *)&dst, &alen) < 0) {
        fprintf(stderr, "keel-zping: listen on %s:%ld: %s\n", to, port, strerror(errno));
        return 1;
    }
    /* The server may wait through the client's whole connect timeout before its first read. */
    struct server srv = {.lfd = lfd, .timeout_ms = (int)timeout_ms * 2};
    pthread_t th;
    if (pthread_create(&th, NULL, serve, &srv) != 0) {
        fprintf(stderr, "keel-zping: pthread_create failed\n");
        return 1;
    }

    int rc = 1;
    uint64_t *rtt = calloc((size_t)count, sizeof(*rtt));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (!rtt || fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
        fprintf(stderr, "keel-zping: bind %s: %s\n", from, strerror(errno));
        goto out;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uint64_t t0 = now_ns();
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "keel-zping: connect %s -> %s: %s\n", from, to, strerror(errno));
        rc = 3;
        goto out;
    }
    int err = 0;
    socklen_t elen = sizeof(err);
    if (wait_fd(fd, POLLOUT, (int)timeout_ms) <= 0) {
        fprintf(stderr, "keel-zping: connect %s -> %s: timed out after %ldms\n", from, to,
                timeout_ms);
        rc = 3;
        goto out;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
        fprintf(stderr, "keel-zping: connect %s -> %s: %s\n", from, to, strerror(err));
        rc = 3;
        goto out;
    }
    uint64_t connect_ns = now_ns() - t0;

    char msg[ZP_MSG], back[ZP_MSG];
    memset(msg, 'z', sizeof(msg));
    for (long i = -warmup; i < count; i++) {
        uint64_t t = now_ns();
        if (send(fd, msg, sizeof(msg), MSG_NOSIGNAL) != (ssize_t)sizeof(msg)) {
            fprintf(stderr, "keel-zping: send: %s\n", strerror(errno));
            goto out;
        }
        int r = read_full(fd, back, sizeof(back), (int)timeout_ms);
        if (r != 0) {
            fprintf(stderr, "keel-zping: round trip %ld %s\n", i, r == -2 ? "timed out" : "failed");
            rc = r == -2 ? 4 : 1;
            goto out;
        }
        if (i >= 0)
            rtt[i] = now_ns() - t;
    }
    qsort(rtt, (size_t)count, sizeof(*rtt), cmp_u64);
    size_t n = (size_t)count;
    printf("n=%zu connect_us=%.1f min_us=%.1f p10_us=%.1f median_us=%.1f p90_us=%.1f "
           "max_us=%.1f\n",
           n, (double)connect_ns / 1e3, (double)rtt[0] / 1e3, (double)rtt[n / 10] / 1e3,
           (double)rtt[n / 2] / 1e3, (double)rtt[(n * 9) / 10] / 1e3, (double)rtt[n - 1] / 1e3);
    rc = 0;
out:
    if (fd >= 0)
        close(fd); /* EOF ends the server's loop */
    shutdown(lfd, SHUT_RDWR);
    pthread_join(th, NULL);
    close(lfd);
    free(rtt);
    return rc;
}
