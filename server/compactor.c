/* Auto-compaction (see compactor.h). */
#include "compactor.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

#define HOUR_MS          3600000ull
#define SAMPLES_PER      10              /* samples per compaction period (etcd's retryDivisor) */
#define REVISION_EVERY   (5 * 60 * 1000) /* etcd's revision compactor looks every 5 minutes */
#define MAX_RETENTION_MS (10ull * 366 * 24 * HOUR_MS)
/* A compaction goes through the log in steps of at most STEP_REVS revisions, the next proposed
 * STEP_PAUSE_MS after the last one applied: each step's apply is bounded (measured: about 8 us
 * per history record here; 100k revisions in one apply held the writer 0.78 s), and writes
 * proposed meanwhile apply between the steps (etcd compacts in batches of 1000 keys with a 10 ms
 * pause between them for the same reason). */
#define STEP_REVS     500
#define STEP_PAUSE_MS 10
#define STEP_RETRY_MS 2000 /* a step not applied by then is proposed again (a lost proposal) */
#define MAX_HELD      64   /* clients' compactions under way at once; more: TOO_MANY_REQUESTS */

/* A client's compaction the steps work towards. */
struct held {
    uint64_t session;
    Keel__Request *req;
    uint64_t since; /* uv_now when taken */
    unsigned steps; /* proposed for it */
    struct held *next;
};

struct sample {
    uint64_t at; /* uv_now */
    int64_t rev;
};

struct keel_compactor {
    struct keel_compactor_options o;
    uv_timer_t timer;
    bool running;
    uint64_t tick_ms;
    unsigned ticks; /* since the last compaction time (periodic) */
    /* periodic: the samples of the last retention and one before it, oldest first */
    struct sample *s;
    size_t n, cap;
    int64_t goal;      /* the auto-compaction under way, reached in steps (0: none) */
    struct held *held; /* clients' compactions under way */
    unsigned n_held;
    bool on;            /* auto-compaction is configured (timer runs) */
    int64_t step;       /* the step proposed last, not yet seen applied (0: none) */
    uint64_t step_at;   /* uv_now when it was proposed */
    uv_timer_t stepper; /* the pause between steps */
};

static void step(struct keel_compactor *c);

static void on_step(uv_timer_t *t)
{
    step(t->data);
}

/* Hand on each held compaction that is within a step of its revision (or past it: its own
 * proposal then answers COMPACTED); refuse them all when this member no longer leads. */
static void release_held(struct keel_compactor *c, const struct keel_store_stat *st, bool leader)
{
    for (struct held **pp = &c->held; *pp != NULL;) {
        struct held *h = *pp;
        int64_t rev = h->req->compaction->revision;
        if (leader && st->compact_revision < rev - STEP_REVS) {
            pp = &h->next;
            continue;
        }
        *pp = h->next;
        c->n_held--;
        if (leader) {
            KLOG_INFO("compaction to revision %lld for a client: the last of %u steps (%llu ms)",
                      (long long)rev, h->steps + 1,
                      (unsigned long long)(uv_now(c->o.loop) - h->since));
            c->o.finish(c->o.data, h->session, h->req);
        } else {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "leadership moved while compacting to revision %lld (compacted to %lld so "
                     "far): ask the leader",
                     (long long)rev, (long long)st->compact_revision);
            c->o.refuse(c->o.data, h->session, h->req, KEEL_ENOTLEADER, msg);
        }
        free(h);
    }
}

/* Propose the next step towards the furthest target (the auto goal, the clients' revisions less
 * one step: their own requests make the last), once the last step applied; arm the pause. */
static void step(struct keel_compactor *c)
{
    struct keel_store_stat st;
    keel_store_stat(c->o.store, &st);
    uint64_t now = uv_now(c->o.loop);
    bool leader = c->o.is_leader(c->o.data);
    release_held(c, &st, leader);
    if (c->goal != 0 && (!leader || st.compact_revision >= c->goal)) {
        if (st.compact_revision >= c->goal)
            KLOG_INFO("auto-compaction: compacted to revision %lld", (long long)c->goal);
        c->goal = 0; /* done, or a new leader decides from its own samples */
    }
    int64_t target = c->goal;
    for (const struct held *h = c->held; h != NULL; h = h->next)
        if (h->req->compaction->revision - STEP_REVS > target)
            target = h->req->compaction->revision - STEP_REVS;
    if (target == 0) {
        c->step = 0;
        return;
    }
    if (c->step == 0 || st.compact_revision >= c->step || now - c->step_at >= STEP_RETRY_MS) {
        int64_t next = st.compact_revision + STEP_REVS;
        if (next > target)
            next = target;
        int err = c->o.compact(c->o.data, next);
        if (err != 0)
            KLOG_WARN("compaction step to revision %lld not proposed: %s", (long long)next,
                      keel_strerror(err));
        c->step = err == 0 ? next : 0;
        c->step_at = now;
        for (struct held *h = c->held; h != NULL; h = h->next)
            h->steps++;
    }
    uv_timer_start(&c->stepper, on_step, STEP_PAUSE_MS, 0);
}

bool keel_compactor_take(struct keel_compactor *c, uint64_t session, Keel__Request *req)
{
    if (c == NULL || !c->running || req->body_case != KEEL__REQUEST__BODY_COMPACTION ||
        req->compaction == NULL || !c->o.is_leader(c->o.data))
        return false;
    struct keel_store_stat st;
    keel_store_stat(c->o.store, &st);
    int64_t rev = req->compaction->revision;
    if (rev > st.revision || rev - STEP_REVS <= st.compact_revision)
        return false; /* an error, or one step: the log answers it at once */
    if (c->n_held == MAX_HELD) {
        c->o.refuse(c->o.data, session, req, KEEL_ETOOMANYREQUESTS,
                    "too many compactions under way on this member: retry when they are done");
        return true;
    }
    struct held *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return false; /* the log takes it in one step */
    h->session = session;
    h->req = req;
    h->since = uv_now(c->o.loop);
    h->next = c->held;
    c->held = h;
    c->n_held++;
    KLOG_INFO("compaction to revision %lld for a client: in steps of %d revisions from %lld",
              (long long)rev, STEP_REVS, (long long)st.compact_revision);
    if (!uv_is_active((uv_handle_t *)&c->stepper))
        step(c);
    return true;
}

static void compact_to(struct keel_compactor *c, int64_t rev, const char *why)
{
    struct keel_store_stat st;
    keel_store_stat(c->o.store, &st);
    if (rev <= 0 || rev <= st.compact_revision || rev <= c->goal || rev > st.revision)
        return;
    KLOG_INFO("auto-compaction: compacting to revision %lld (%s)", (long long)rev, why);
    c->goal = rev;
    if (!uv_is_active((uv_handle_t *)&c->stepper))
        step(c);
}

static void periodic_tick(struct keel_compactor *c, uint64_t now)
{
    struct keel_store_stat st;
    keel_store_stat(c->o.store, &st);
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        struct sample *s = realloc(c->s, cap * sizeof(*s));
        if (s == NULL)
            return; /* no sample this tick; the next one tries again */
        c->s = s;
        c->cap = cap;
    }
    c->s[c->n++] = (struct sample){now, st.revision};
    /* Keep one sample at least a retention old (the target) and everything newer. */
    size_t drop = 0;
    while (drop + 1 < c->n && now - c->s[drop + 1].at >= c->o.retention_ms)
        drop++;
    if (drop > 0) {
        memmove(c->s, c->s + drop, (c->n - drop) * sizeof(*c->s));
        c->n -= drop;
    }
    if (++c->ticks < SAMPLES_PER)
        return;
    c->ticks = 0;
    if (c->o.is_leader(c->o.data) && now - c->s[0].at >= c->o.retention_ms) {
        char why[96];
        snprintf(why, sizeof(why), "periodic: the revision %llu ms ago",
                 (unsigned long long)(now - c->s[0].at));
        compact_to(c, c->s[0].rev, why);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct keel_compactor *c = t->data;
    uint64_t now = uv_now(c->o.loop);
    if (c->o.mode == KEEL_COMPACT_PERIODIC) {
        periodic_tick(c, now);
    } else if (c->o.is_leader(c->o.data)) {
        struct keel_store_stat st;
        keel_store_stat(c->o.store, &st);
        char why[64];
        snprintf(why, sizeof(why), "revision: keep the last %lld", (long long)c->o.retention_revs);
        compact_to(c, st.revision - c->o.retention_revs, why);
    }
}

int keel_compactor_new(const struct keel_compactor_options *o, struct keel_compactor **out)
{
    struct keel_compactor *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return KEEL_ENOMEM;
    c->o = *o;
    bool on = (o->mode == KEEL_COMPACT_PERIODIC && o->retention_ms > 0) ||
              (o->mode == KEEL_COMPACT_REVISION && o->retention_revs > 0);
    /* The stepper also carries clients' compactions: it runs whatever the mode. */
    uv_timer_init(o->loop, &c->stepper);
    c->stepper.data = c;
    c->running = true;
    c->on = on;
    if (on) {
        if (o->mode == KEEL_COMPACT_PERIODIC) {
            uint64_t period = o->retention_ms < HOUR_MS ? o->retention_ms : HOUR_MS;
            c->tick_ms = period / SAMPLES_PER ? period / SAMPLES_PER : 1;
        } else {
            c->tick_ms = o->check_ms ? o->check_ms : REVISION_EVERY;
        }
        uv_timer_init(o->loop, &c->timer);
        c->timer.data = c;
        uv_timer_start(&c->timer, on_tick, c->tick_ms, c->tick_ms);
        KLOG_INFO("auto-compaction: %s, looking every %llu ms",
                  o->mode == KEEL_COMPACT_PERIODIC ? "periodic" : "revision",
                  (unsigned long long)c->tick_ms);
    }
    *out = c;
    return 0;
}

void keel_compactor_stop(struct keel_compactor *c)
{
    if (c == NULL || !c->running)
        return;
    struct held *h;
    while ((h = c->held) != NULL) {
        c->held = h->next;
        c->o.refuse(c->o.data, h->session, h->req, KEEL_EUNAVAILABLE,
                    "member is stopping: the compaction stopped part way; ask again");
        free(h);
    }
    c->n_held = 0;
    if (c->on) {
        uv_timer_stop(&c->timer);
        uv_close((uv_handle_t *)&c->timer, NULL);
    }
    uv_timer_stop(&c->stepper);
    uv_close((uv_handle_t *)&c->stepper, NULL);
    c->running = false;
}

void keel_compactor_free(struct keel_compactor *c)
{
    if (c == NULL)
        return;
    free(c->s);
    free(c);
}

/* A Go duration as etcd takes it: one or more <number><unit>, unit h, m, s, ms. */
static int parse_duration_ms(const char *s, uint64_t *ms)
{
    double total = 0;
    const char *p = s;
    if (*p == '\0')
        return -1;
    while (*p != '\0') {
        char *end;
        if (!isdigit((unsigned char)*p) && *p != '.')
            return -1;
        double v = strtod(p, &end);
        if (end == p)
            return -1;
        p = end;
        if (strncmp(p, "ms", 2) == 0) {
            total += v;
            p += 2;
        } else if (*p == 'h') {
            total += v * 3600000.0;
            p++;
        } else if (*p == 'm') {
            total += v * 60000.0;
            p++;
        } else if (*p == 's') {
            total += v * 1000.0;
            p++;
        } else {
            return -1;
        }
    }
    if (!(total >= 0) || total > (double)MAX_RETENTION_MS)
        return -1;
    *ms = (uint64_t)llround(total);
    return 0;
}

int keel_compactor_parse_retention(enum keel_compact_mode mode, const char *s, uint64_t *ms,
                                   int64_t *revs, char *err, size_t errlen)
{
    *ms = 0;
    *revs = 0;
    char *end;
    if (mode == KEEL_COMPACT_REVISION) {
        long long v = strtoll(s, &end, 10);
        if (end == s || *end != '\0' || v < 0) {
            snprintf(err, errlen,
                     "--auto-compaction-retention '%s': revision mode keeps a number of "
                     "revisions (e.g. 1000)",
                     s);
            return -1;
        }
        *revs = v;
        return 0;
    }
    /* A bare number is hours, as etcd reads it. */
    double hours = strtod(s, &end);
    if (end != s && *end == '\0' && hours >= 0 && hours * 3600000.0 <= (double)MAX_RETENTION_MS) {
        *ms = (uint64_t)llround(hours * 3600000.0);
        return 0;
    }
    if (parse_duration_ms(s, ms) != 0) {
        snprintf(err, errlen,
                 "--auto-compaction-retention '%s': periodic mode keeps a duration (e.g. 1h, "
                 "30m, 10s, or a number of hours), at most 10 years",
                 s);
        return -1;
    }
    return 0;
}
