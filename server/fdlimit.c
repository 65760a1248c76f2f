#include "fdlimit.h"

#include <stdio.h>
#include <sys/resource.h>

#include "log.h"

int keel_fdlimit_fit(size_t *max_connections, char *err, size_t errlen)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0; /* nothing known to fit to */
    rlim_t need = (rlim_t)*max_connections + KEEL_FD_RESERVE;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t was = rl.rlim_cur;
        rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        struct rlimit raised = {want, rl.rlim_max};
        if (want > was && setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            rl.rlim_cur = want;
            KLOG_INFO("descriptor limit raised from %llu to %llu for --max-connections %zu",
                      (unsigned long long)was, (unsigned long long)want, *max_connections);
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_cur <= KEEL_FD_RESERVE) {
        snprintf(err, errlen,
                 "the descriptor limit (RLIMIT_NOFILE %llu) leaves no room for client "
                 "connections: keeld keeps %d for itself",
                 (unsigned long long)rl.rlim_cur, KEEL_FD_RESERVE);
        return -1;
    }
    size_t fit = (size_t)(rl.rlim_cur - KEEL_FD_RESERVE);
    KLOG_WARN("--max-connections lowered from %zu to %zu: the descriptor limit is %llu (hard "
              "%llu) and keeld keeps %d for itself",
              *max_connections, fit, (unsigned long long)rl.rlim_cur,
              (unsigned long long)rl.rlim_max, KEEL_FD_RESERVE);
    *max_connections = fit;
    return 0;
}
