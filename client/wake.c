/*
 * When the client runs next: at the end of this loop turn, at a time, or after a backoff.
 *
 * Work queued during a loop turn (frames to write, requests to route, failures to deliver) runs
 * once, from whichever comes first of a uv_check (right after the I/O callbacks of this turn)
 * and a uv_prepare (just before the loop blocks), so a burst of requests costs one write per
 * connection. The check matters for work queued from an I/O callback, the usual case (a request
 * made while answering a read, as keel-gateway does): it goes out in the same turn rather than
 * after the turn's other check callbacks and the next turn's timers, idle and prepare handles.
 * A check started later runs earlier (libuv runs the most recently started first), so the
 * owner's own end-of-turn writes, from a check started before, follow this one. The prepare
 * covers work queued from timers and idle callbacks, before the poll. Deadlines and backoffs
 * share one uv_timer, armed for the earliest. What runs is the owner's (ac->turn, ac->timeout):
 * this file only decides when.
 */
#include "internal.h"

static void run_turn(struct keel_aclient *ac)
{
    /* Bounded: callbacks that keep submitting get the next loop turn. */
    for (int round = 0; round < 8 && ac->kicked; round++) {
        ac->kicked = false;
        ac->turn(ac);
    }
    if (!ac->kicked) {
        if (!uv_is_closing((uv_handle_t *)&ac->prepare))
            uv_prepare_stop(&ac->prepare);
        if (!uv_is_closing((uv_handle_t *)&ac->check))
            uv_check_stop(&ac->check);
    }
}

static void on_prepare(uv_prepare_t *h)
{
    run_turn(h->data);
}

static void on_check(uv_check_t *h)
{
    run_turn(h->data);
}

static void on_timer(uv_timer_t *t)
{
    struct keel_aclient *ac = t->data;
    ac->timer_due = UINT64_MAX;
    ac->timeout(ac);
}

static void handle_closed(uv_handle_t *h)
{
    struct keel_aclient *ac = h->data;
    if (--ac->open_handles == 0)
        ac->wake_closed(ac);
}

void kc_wake_init(struct keel_aclient *ac)
{
    uv_timer_init(ac->loop, &ac->timer);
    uv_prepare_init(ac->loop, &ac->prepare);
    uv_check_init(ac->loop, &ac->check);
    ac->timer.data = ac;
    ac->prepare.data = ac;
    ac->check.data = ac;
    ac->open_handles = 3;
    ac->timer_due = UINT64_MAX;
    ac->rng = (uint64_t)(uintptr_t)ac ^ uv_hrtime() ^ 0x9e3779b97f4a7c15ull;
    if (ac->rng == 0)
        ac->rng = 1;
}

void kc_wake_close(struct keel_aclient *ac, keel_close_cb cb)
{
    ac->wake_closed = cb;
    uv_timer_stop(&ac->timer);
    uv_close((uv_handle_t *)&ac->timer, handle_closed);
    uv_close((uv_handle_t *)&ac->prepare, handle_closed);
    uv_close((uv_handle_t *)&ac->check, handle_closed);
}

void kc_kick(struct keel_aclient *ac)
{
    ac->kicked = true;
    /* Once closing, keel_aclient_close drains by itself and the handle is on its way out. */
    if (!ac->closing) {
        uv_prepare_start(&ac->prepare, on_prepare);
        uv_check_start(&ac->check, on_check);
    }
}

void kc_schedule(struct keel_aclient *ac, uint64_t when)
{
    if (when == UINT64_MAX || when >= ac->timer_due || ac->closing)
        return;
    uint64_t now = uv_now(ac->loop);
    ac->timer_due = when;
    uv_timer_start(&ac->timer, on_timer, when > now ? when - now : 0, 0);
}

uint64_t kc_backoff(struct keel_aclient *ac, uint32_t n, uint64_t base, uint64_t cap)
{
    uint64_t d = base << (n > 0 ? (n - 1 < 16 ? n - 1 : 16) : 0);
    if (d > cap)
        d = cap;
    /* xorshift64: jitter keeps many clients from retrying in lockstep after a failover. */
    ac->rng ^= ac->rng << 13;
    ac->rng ^= ac->rng >> 7;
    ac->rng ^= ac->rng << 17;
    return d * 3 / 4 + ac->rng % (d / 2 + 1);
}
