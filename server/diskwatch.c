/* The disk reserve (see diskwatch.h). */
#include "diskwatch.h"

#include <stdlib.h>
#include <sys/statvfs.h>

#include "err.h"
#include "log.h"

struct keel_diskwatch {
    struct keel_diskwatch_options o;
    uv_timer_t timer;
    bool running;
    bool short_logged;   /* the shortage was logged: once per episode */
    bool reserve_logged; /* a failure to set space aside was logged: once */
};

static void check(uv_timer_t *t)
{
    struct keel_diskwatch *w = t->data;
    struct statvfs sv;
    if (statvfs(w->o.path, &sv) != 0) {
        KLOG_WARN("disk reserve: statvfs of %s failed: its free space is not watched", w->o.path);
        return;
    }
    uint64_t unit = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
    uint64_t free_bytes = (uint64_t)sv.f_bavail * unit;
    uint64_t reserve = w->o.reserve;
    uint64_t cap = (uint64_t)sv.f_blocks * unit / 16;
    if (!w->o.reserve_set && reserve > cap)
        reserve = cap; /* a small disk: the default would hold most of it back */
    /* A quarter of the reserve held by the store ahead of its commits (keel_store_reserve):
     * what it may write between two checks after something else took the rest. */
    int rerr = keel_store_reserve(w->o.store, reserve / 4);
    if (rerr != 0 && rerr != KEEL_ENOSPACE && !w->reserve_logged) {
        KLOG_WARN("disk reserve: space for the store's next commits could not be set aside: %s",
                  keel_strerror(rerr));
        w->reserve_logged = true;
    }
    if (free_bytes >= reserve && rerr != KEEL_ENOSPACE) {
        if (w->short_logged)
            KLOG_INFO("disk reserve: %llu bytes free on %s again (reserve %llu)",
                      (unsigned long long)free_bytes, w->o.path, (unsigned long long)reserve);
        w->short_logged = false;
        return;
    }
    struct keel_store_stat st;
    keel_store_stat(w->o.store, &st);
    if (!w->short_logged)
        KLOG_WARN("disk reserve: %llu bytes free on %s, under the reserve of %llu: raising the "
                  "NOSPACE alarm (writes that add data stop until `keelctl alarm disarm`)",
                  (unsigned long long)free_bytes, w->o.path, (unsigned long long)reserve);
    w->short_logged = true;
    if (st.nospace_member != 0)
        return; /* raised already (by this member or another) */
    int err = w->o.raise(w->o.data, free_bytes, reserve);
    if (err != 0)
        KLOG_WARN("disk reserve: the NOSPACE alarm could not be asked for yet (%s): trying again "
                  "in %u ms",
                  keel_strerror(err), w->o.check_ms);
}

int keel_diskwatch_new(const struct keel_diskwatch_options *o, struct keel_diskwatch **out)
{
    struct keel_diskwatch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return KEEL_ENOMEM;
    w->o = *o;
    if (o->reserve > 0) {
        uv_timer_init(o->loop, &w->timer);
        w->timer.data = w;
        uv_timer_start(&w->timer, check, o->check_ms, o->check_ms);
        w->running = true;
    }
    *out = w;
    return 0;
}

void keel_diskwatch_stop(struct keel_diskwatch *w)
{
    if (w == NULL || !w->running)
        return;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, NULL);
    w->running = false;
}

void keel_diskwatch_free(struct keel_diskwatch *w)
{
    free(w);
}
