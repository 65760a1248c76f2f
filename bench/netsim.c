/*
 * keel-netsim: holds the packets of one netfilter queue for a configured delay (± jitter, optional
 * loss) and then lets them go, so that traffic between simulated zones on loopback behaves like a
 * slower network. It exists because our kernels have no netem; scripts/zones.sh starts it and
 * points an NFQUEUE rule on cross-zone packets at it.
 *
 * One thread: packets come in on the nfqueue netlink socket, wait in a min-heap keyed by release
 * time, and get their ACCEPT verdict when ppoll's timeout says they are due. The kernel keeps the
 * packet itself; we only hold its id, so memory is bounded by --max-queued entries.
 *
 * Accuracy: the delay an application sees is the configured one. Our own overhead is the
 * scheduler's: we learn of a packet only once it has woken us, and we release it only once a
 * timed sleep has ended, each late by about one wake-up (50-300us on a virtual machine, more
 * under load). The wake-up lateness of our timed sleeps is measured all the time (struct
 * ns_wake); arrivals are stamped that much earlier and releases happen that much earlier, so the
 * median packet is released on time. Jitter, loss and per-flow order are unaffected.
 *
 * Safety: the queue is configured fail-open (kernel accepts what it cannot queue or deliver to us)
 * and zones.sh uses --queue-bypass, so a dead or overloaded keel-netsim never blackholes loopback.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Flow slots for per-flow ordering; collisions only make ordering stricter, never looser. */
#define NS_FLOW_SLOTS 4096u

struct ns_entry {
    uint64_t release_ns;
    uint64_t scheduled_ns; /* release time without the per-flow FIFO push-back, for stats */
    uint64_t seq;          /* tie-break so equal release times keep arrival order */
    uint32_t id;
};

struct ns_sched {
    struct ns_entry *heap;
    size_t len;
    size_t cap;
    uint64_t delay_ns;
    uint64_t jitter_ns;
    double loss; /* probability in [0, 1] */
    uint64_t rng;
    uint64_t seq;
    uint64_t flow_last[NS_FLOW_SLOTS];
    /* stats */
    uint64_t received;
    uint64_t delayed;
    uint64_t lost;
    uint64_t overflow;
    size_t max_held;
};

enum ns_admit {
    NS_QUEUED,   /* hold until ns_sched_pop_due says so */
    NS_LOSE,     /* simulated loss: drop it */
    NS_OVERFLOW, /* over --max-queued: accept at once rather than grow */
};

static uint64_t ns_rand(struct ns_sched *s)
{
    /* xorshift64*: deterministic for a given --seed, which makes loss patterns reproducible. */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int ns_sched_init(struct ns_sched *s, size_t cap, uint64_t delay_ns, uint64_t jitter_ns,
                         double loss, uint64_t seed)
{
    memset(s, 0, sizeof(*s));
    if (cap == 0 || !(loss >= 0.0 && loss <= 1.0))
        return -1;
    s->heap = calloc(cap, sizeof(*s->heap));
    if (!s->heap)
        return -1;
    s->cap = cap;
    s->delay_ns = delay_ns;
    s->jitter_ns = jitter_ns;
    s->loss = loss;
    s->rng = seed ? seed : 0x6b65656c6e6574ULL; /* xorshift must not start at 0 */
    return 0;
}

static void ns_sched_free(struct ns_sched *s)
{
    free(s->heap);
    s->heap = NULL;
    s->len = s->cap = 0;
}

static bool ns_entry_before(const struct ns_entry *a, const struct ns_entry *b)
{
    if (a->release_ns != b->release_ns)
        return a->release_ns < b->release_ns;
    return a->seq < b->seq;
}

static void ns_heap_swap(struct ns_entry *a, struct ns_entry *b)
{
    struct ns_entry t = *a;
    *a = *b;
    *b = t;
}

/*
 * Flow key of an IPv4/IPv6 packet starting at the network header: addresses, protocol and, for
 * TCP/UDP, ports. Anything we cannot parse lands in slot 0, which only serialises it more.
 */
static uint32_t ns_flow_slot(const uint8_t *pkt, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    size_t l4 = 0, addr_off = 0, addr_len = 0;
    uint8_t proto = 0;

    if (len < 1)
        return 0;
    if ((pkt[0] >> 4) == 4 && len >= 20) {
        size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
        bool first_frag = ((pkt[6] & 0x1f) | pkt[7]) == 0;
        proto = pkt[9];
        addr_off = 12;
        addr_len = 8;
        if (ihl >= 20 && first_frag)
            l4 = ihl;
    } else if ((pkt[0] >> 4) == 6 && len >= 40) {
        proto = pkt[6]; /* extension headers are not followed; their flows share a slot */
        addr_off = 8;
        addr_len = 32;
        l4 = 40;
    } else {
        return 0;
    }
    for (size_t i = 0; i < addr_len; i++)
        h = (h ^ pkt[addr_off + i]) * 1099511628211ULL;
    h = (h ^ proto) * 1099511628211ULL;
    if (l4 && (proto == 6 || proto == 17) && len >= l4 + 4) {
        for (size_t i = 0; i < 4; i++)
            h = (h ^ pkt[l4 + i]) * 1099511628211ULL;
    }
    return (uint32_t)((h ^ (h >> 32)) % NS_FLOW_SLOTS);
}

/*
 * Decides the fate of a packet that arrived at now_ns. With jitter, a packet's own draw may be
 * earlier than its predecessor's in the same flow; it then waits for that predecessor, because
 * reordering inside a TCP flow would turn jitter into spurious retransmits, which a real link
 * with variable queueing delay does not do.
 */
static enum ns_admit ns_sched_admit(struct ns_sched *s, uint64_t now_ns, uint32_t id, uint32_t slot)
{
    s->received++;
    if (s->loss > 0.0 && (double)(ns_rand(s) >> 11) * 0x1.0p-53 < s->loss) {
        s->lost++;
        return NS_LOSE;
    }
    if (s->len == s->cap) {
        s->overflow++;
        return NS_OVERFLOW;
    }
    uint64_t d = s->delay_ns;
    if (s->jitter_ns) {
        uint64_t span = 2 * s->jitter_ns + 1;
        uint64_t r = ns_rand(s) % span;
        d = d + r >= s->jitter_ns ? d + r - s->jitter_ns : 0;
    }
    uint64_t sched = now_ns + d;
    uint64_t *last = &s->flow_last[slot % NS_FLOW_SLOTS];
    uint64_t rel = sched > *last ? sched : *last;
    *last = rel;

    size_t i = s->len++;
    s->heap[i] =
        (struct ns_entry){.release_ns = rel, .scheduled_ns = sched, .seq = s->seq++, .id = id};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ns_entry_before(&s->heap[i], &s->heap[p]))
            break;
        ns_heap_swap(&s->heap[i], &s->heap[p]);
        i = p;
    }
    if (s->len > s->max_held)
        s->max_held = s->len;
    return NS_QUEUED;
}

/* Release time of the next held packet, or UINT64_MAX when none is held. */
static uint64_t ns_sched_next(const struct ns_sched *s)
{
    return s->len ? s->heap[0].release_ns : UINT64_MAX;
}

/* Pops the earliest held packet if it is due at now_ns (pass UINT64_MAX to pop regardless). */
static bool ns_sched_pop_due(struct ns_sched *s, uint64_t now_ns, struct ns_entry *out)
{
    if (s->len == 0 || s->heap[0].release_ns > now_ns)
        return false;
    *out = s->heap[0];
    s->heap[0] = s->heap[--s->len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->len && ns_entry_before(&s->heap[l], &s->heap[m]))
            m = l;
        if (r < s->len && ns_entry_before(&s->heap[r], &s->heap[m]))
            m = r;
        if (m == i)
            break;
        ns_heap_swap(&s->heap[i], &s->heap[m]);
        i = m;
    }
    s->delayed++;
    return true;
}

/*
 * Wake-up lateness: how long after a timed sleep should have ended the thread actually runs
 * again. On a virtual machine that is 50-300us after a 1ms sleep (the host has to reschedule
 * the vCPU), which alone made a 1ms delay 15-20% long. The loop releases each packet that much
 * early, so the median release lands on the deadline. The estimate is the median of the last
 * NS_WAKE_SAMPLES samples: one long stall (another process, a page fault) cannot move it, and a
 * machine that gets busier moves it within a few dozen wake-ups.
 */
#define NS_WAKE_SAMPLES 31
/* No single sample counts for more than this: a stall of seconds is not a wake-up. */
#define NS_WAKE_MAX_NS 2000000ULL

struct ns_wake {
    uint64_t ring[NS_WAKE_SAMPLES];
    unsigned n;   /* samples held, up to NS_WAKE_SAMPLES */
    unsigned pos; /* next slot to overwrite */
    uint64_t estimate_ns;
};

static void ns_wake_add(struct ns_wake *w, uint64_t late_ns)
{
    if (late_ns > NS_WAKE_MAX_NS)
        late_ns = NS_WAKE_MAX_NS;
    w->ring[w->pos] = late_ns;
    w->pos = (w->pos + 1) % NS_WAKE_SAMPLES;
    if (w->n < NS_WAKE_SAMPLES)
        w->n++;
    /* Insertion sort of a copy: 31 elements per wake-up is cheaper than the syscall around it. */
    uint64_t v[NS_WAKE_SAMPLES];
    for (unsigned i = 0; i < w->n; i++) {
        uint64_t x = w->ring[i];
        unsigned j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
    w->estimate_ns = v[w->n / 2];
}

/* Parses a non-negative decimal number (fractions allowed); returns -1 on junk. */
static int ns_parse_num(const char *str, double max, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(str, &end);
    if (errno || end == str || *end != '\0' || !(v >= 0.0 && v <= max))
        return -1;
    *out = v;
    return 0;
}

#ifndef NETSIM_NO_MAIN

#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define NS_DEFAULT_CAP 100000u
/* Enough for the IP header with options plus the ports, which is all the flow key needs. */
#define NS_COPY_RANGE 64u
/* Messages read per wakeup before releasing due packets, so a flood cannot starve the timer. */
#define NS_READ_BATCH 256
/* Upper bound of messages drained at shutdown, in case traffic is still being queued to us. */
#define NS_DRAIN_MAX 200000

struct ns_run {
    struct ns_sched sched;
    struct nfq_q_handle *qh;
    uint64_t now_ns;   /* arrival time of the message being handled (see read_batch) */
    uint64_t empty_ns; /* when a read last found the socket empty */
    struct ns_wake wake;
    int64_t err_sum_ns; /* release time minus due time, summed: ~0 when compensation works */
    uint64_t late_max_ns;
    uint64_t verdict_errors;
    bool draining; /* shutting down: accept whatever still arrives */
};

static volatile sig_atomic_t g_stop;
static volatile sig_atomic_t g_report;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_report = 1;
    else
        g_stop = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void verdict(struct ns_run *r, uint32_t id, uint32_t v)
{
    if (nfq_set_verdict(r->qh, id, v, 0, NULL) < 0)
        r->verdict_errors++;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *arg)
{
    (void)qh;
    (void)msg;
    struct ns_run *r = arg;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph)
        return 0;
    uint32_t id = ntohl(ph->packet_id);
    if (r->draining) {
        r->sched.received++;
        verdict(r, id, NF_ACCEPT);
        return 0;
    }
    unsigned char *payload = NULL;
    int plen = nfq_get_payload(nfa, &payload);
    uint32_t slot = plen > 0 ? ns_flow_slot(payload, (size_t)plen) : 0;
    switch (ns_sched_admit(&r->sched, r->now_ns, id, slot)) {
    case NS_QUEUED:
        break;
    case NS_LOSE:
        verdict(r, id, NF_DROP);
        break;
    case NS_OVERFLOW:
        verdict(r, id, NF_ACCEPT);
        break;
    }
    return 0;
}

static void release_due(struct ns_run *r, uint64_t t)
{
    struct ns_entry e;
    while (ns_sched_pop_due(&r->sched, t, &e)) {
        verdict(r, e.id, NF_ACCEPT);
        if (t != UINT64_MAX) {
            /* Timer error plus any wait behind an earlier packet of the same flow. */
            int64_t err = (int64_t)(now_ns() - e.scheduled_ns);
            r->err_sum_ns += err;
            if (err > 0 && (uint64_t)err > r->late_max_ns)
                r->late_max_ns = (uint64_t)err;
        }
    }
}

/* Reads up to max queued-packet messages; returns -1 on a fatal socket error. */
static int read_batch(struct nfq_handle *h, struct ns_run *r, int max)
{
    static char buf[65536] __attribute__((aligned(8)));
    int fd = nfq_fd(h);
    for (int i = 0; i < max; i++) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                r->empty_ns = now_ns();
                return 0;
            }
            /* Lost messages: fail-open made the kernel accept those packets already. */
            if (errno == ENOBUFS || errno == EINTR)
                continue;
            fprintf(stderr, "keel-netsim: recv: %s\n", strerror(errno));
            return -1;
        }
        /* The kernel does not time-stamp queued packets, and we learn of one only after the
         * scheduler has woken us: as late as a timed sleep ends late, measured in r->wake.
         * So the packet arrived that long ago, but not before the socket was last seen empty. */
        uint64_t t = now_ns();
        uint64_t wake = r->wake.estimate_ns;
        r->now_ns = t - wake > r->empty_ns ? t - wake : r->empty_ns;
        nfq_handle_packet(h, buf, (int)n);
    }
    return 0;
}

/*
 * A first wake-up estimate before any packet is held: a few sleeps as long as the configured
 * delay (at most 2ms; the lateness of longer sleeps is no different), about 30ms at most.
 */
static void calibrate(struct ns_wake *w, uint64_t delay_ns)
{
    if (delay_ns == 0)
        return;
    uint64_t sleep_ns = delay_ns < NS_WAKE_MAX_NS ? delay_ns : NS_WAKE_MAX_NS;
    for (int i = 0; i < 15; i++) {
        uint64_t due = now_ns() + sleep_ns;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)sleep_ns};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        uint64_t woke = now_ns();
        ns_wake_add(w, woke > due ? woke - due : 0);
    }
}

static void print_stats(const struct ns_run *r, unsigned queue)
{
    const struct ns_sched *s = &r->sched;
    double err_avg = s->delayed ? (double)r->err_sum_ns / (double)s->delayed / 1e3 : 0.0;
    fprintf(stderr,
            "keel-netsim: queue=%u received=%" PRIu64 " delayed=%" PRIu64 " lost=%" PRIu64
            " overflow=%" PRIu64 " held=%zu max_held=%zu err_us_avg=%.1f late_us_max=%.1f"
            " wake_us=%.1f verdict_errors=%" PRIu64 "\n",
            queue, s->received, s->delayed, s->lost, s->overflow, s->len, s->max_held, err_avg,
            (double)r->late_max_ns / 1e3, (double)r->wake.estimate_ns / 1e3, r->verdict_errors);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keel-netsim --queue N --delay-us D [--jitter-us J] [--loss PCT] [--seed S]\n"
            "                   [--max-queued N] [--realtime]\n"
            "Holds every packet of netfilter queue N for D microseconds (uniform ± J, per-flow\n"
            "order kept), drops PCT percent of them, and accepts the rest. Over N held packets\n"
            "(default %u) packets pass at once. SIGTERM/SIGINT: release everything and exit;\n"
            "SIGUSR1: print the stats line. --realtime: SCHED_FIFO so host load does not add\n"
            "to the delay.\n",
            NS_DEFAULT_CAP);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"queue", required_argument, NULL, 'q'},
        {"delay-us", required_argument, NULL, 'd'},
        {"jitter-us", required_argument, NULL, 'j'},
        {"loss", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},
        {"max-queued", required_argument, NULL, 'm'},
        {"realtime", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    double queue = -1, delay_us = -1, jitter_us = 0, loss_pct = 0, seed = 0, cap = NS_DEFAULT_CAP;
    bool realtime = false;
    int c, li = 0;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        int bad = 0;
        switch (c) {
        case 'q':
            bad = ns_parse_num(optarg, 65535, &queue) || queue != floor(queue);
            break;
        case 'd':
            bad = ns_parse_num(optarg, 10e6, &delay_us);
            break;
        case 'j':
            bad = ns_parse_num(optarg, 10e6, &jitter_us);
            break;
        case 'l': {
            size_t n = strlen(optarg);
            if (n && optarg[n - 1] == '%')
                optarg[n - 1] = '\0';
            bad = ns_parse_num(optarg, 100, &loss_pct);
            break;
        }
        case 's':
            bad = ns_parse_num(optarg, 1e18, &seed);
            break;
        case 'm':
            bad = ns_parse_num(optarg, 10e6, &cap) || cap < 1;
            break;
        case 'r':
            realtime = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "keel-netsim: bad value for --%s: %s\n", opts[li].name, optarg);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || queue < 0 || delay_us < 0) {
        usage(stderr);
        return 2;
    }

    struct ns_run run;
    memset(&run, 0, sizeof(run));
    if (ns_sched_init(&run.sched, (size_t)cap, (uint64_t)(delay_us * 1e3),
                      (uint64_t)(jitter_us * 1e3), loss_pct / 100.0, (uint64_t)seed) < 0) {
        fprintf(stderr, "keel-netsim: out of memory\n");
        return 1;
    }

    /* The default 50us timer slack would be most of the error budget at 1ms delays. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    if (realtime) {
        /* Priority 2: above the zones tests' probe (keel-zping --realtime, priority 1). */
        struct sched_param sp = {.sched_priority = 2};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
            fprintf(stderr, "keel-netsim: SCHED_FIFO unavailable (%s); continuing\n",
                    strerror(errno));
    }

    /* Signals stay blocked except inside ppoll, so a stop request cannot slip between the check
     * and the wait. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGHUP);
    sigdelset(&waitmask, SIGUSR1);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    int rc = 1;
    struct nfq_handle *h = nfq_open();
    if (!h) {
        fprintf(stderr, "keel-netsim: nfq_open: %s (root? nfnetlink_queue?)\n", strerror(errno));
        ns_sched_free(&run.sched);
        return 1;
    }
    run.qh = nfq_create_queue(h, (uint16_t)queue, on_packet, &run);
    if (!run.qh) {
        fprintf(stderr, "keel-netsim: cannot bind queue %u: %s (already taken?)\n", (unsigned)queue,
                strerror(errno));
        goto out_close;
    }
    if (nfq_set_mode(run.qh, NFQNL_COPY_PACKET, NS_COPY_RANGE) < 0) {
        fprintf(stderr, "keel-netsim: nfq_set_mode: %s\n", strerror(errno));
        goto out_destroy;
    }
    /* Kernel-side room for everything we may hold plus a read batch in flight; past that the
     * fail-open flag makes the kernel accept instead of drop. */
    nfq_set_queue_maxlen(run.qh, (uint32_t)cap + 4096);
    /* GSO: take loopback's 64k super-packets whole instead of having the kernel segment them. */
    uint32_t flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
    if (nfq_set_queue_flags(run.qh, flags, flags) < 0)
        fprintf(stderr, "keel-netsim: warning: fail-open/GSO flags rejected: %s\n",
                strerror(errno));
    nfnl_rcvbufsiz(nfq_nfnlh(h), 8u << 20);
    int one = 1;
    setsockopt(nfq_fd(h), SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one));

    calibrate(&run.wake, (uint64_t)(delay_us * 1e3));
    fprintf(stderr,
            "keel-netsim: queue %u ready (delay %.0fus jitter %.0fus loss %g%%, wake-up %.0fus)\n",
            (unsigned)queue, delay_us, jitter_us, loss_pct, (double)run.wake.estimate_ns / 1e3);

    struct pollfd pfd = {.fd = nfq_fd(h), .events = POLLIN};
    rc = 0;
    while (!g_stop) {
        if (g_report) {
            g_report = 0;
            print_stats(&run, (unsigned)queue);
        }
        /* Everything due within one expected wake-up lateness goes now: waiting for it would
         * release it that much late. */
        release_due(&run, now_ns() + run.wake.estimate_ns);
        uint64_t next = ns_sched_next(&run.sched);
        struct timespec ts, *tsp = NULL;
        uint64_t t = now_ns(), wake_at = 0, wait = 0;
        if (next != UINT64_MAX) {
            wake_at = next - run.wake.estimate_ns;
            wait = wake_at > t ? wake_at - t : 0;
            ts.tv_sec = (time_t)(wait / 1000000000ULL);
            ts.tv_nsec = (long)(wait % 1000000000ULL);
            tsp = &ts;
        }
        int n = ppoll(&pfd, 1, tsp, &waitmask);
        if (n == 0 && wait > 0) {
            uint64_t woke = now_ns();
            ns_wake_add(&run.wake, woke > wake_at ? woke - wake_at : 0);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "keel-netsim: ppoll: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        if (n > 0 && read_batch(h, &run, NS_READ_BATCH) < 0) {
            rc = 1;
            break;
        }
    }

    /* Whatever is in the socket or held must be accepted before the queue goes away: the kernel
     * drops a destroyed queue's pending packets. */
    run.draining = true;
    read_batch(h, &run, NS_DRAIN_MAX);
    release_due(&run, UINT64_MAX);
    print_stats(&run, (unsigned)queue);
out_destroy:
    nfq_destroy_queue(run.qh);
out_close:
    nfq_close(h);
    ns_sched_free(&run.sched);
    return rc;
}

#endif /* NETSIM_NO_MAIN */
