/*
 * Leveled one-line logging to stderr: "<time> <level> <member> <message>", or with
 * --log-format json one JSON object per line: {"ts","level","member","zone","msg"} (ts in
 * RFC 3339, UTC). The level, member name, zone and format are process-wide, set once at
 * start-up.
 */
#ifndef KEEL_LOG_H
#define KEEL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum keel_log_level { KEEL_LOG_DEBUG, KEEL_LOG_INFO, KEEL_LOG_WARN, KEEL_LOG_ERROR };

/* Set the threshold and the name printed on each line (copied). */
void keel_log_setup(enum keel_log_level level, const char *name);

/* JSON lines (or text), and the zone they name (copied). */
void keel_log_format(bool json, const char *zone);

/* The line keel_log writes for msg at ts (without the newline) into out, NUL-terminated and cut
 * to len (a JSON line stays one object); its length. */
size_t keel_log_line(char *out, size_t len, enum keel_log_level level, const struct timespec *ts,
                     const char *msg);

/* Parse "debug|info|warn|error"; -1 when unknown. */
int keel_log_parse_level(const char *s);

void keel_log(enum keel_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * A bound on one kind of line, so that a flood of what it reports cannot flood the log: at most
 * per_sec lines in each one-second window (from the first line of the window); the lines past
 * that are counted instead, and the next line allowed after the window reports how many were
 * left out. Set per_sec, zero the rest. Not thread-safe: one thread per limit.
 */
struct keel_log_limit {
    unsigned per_sec;
    uint64_t window_ns; /* when the current window began (monotonic) */
    unsigned used;      /* lines logged in it */
    uint64_t left_out;  /* lines left out since the last one logged */
};

/* May a line be logged now? true: log it, and if *left_out (set either way) is not 0, say
 * first that that many were left out. false: leave it out (it is counted). */
bool keel_log_limit_take(struct keel_log_limit *l, uint64_t *left_out);

#define KLOG_DEBUG(...) keel_log(KEEL_LOG_DEBUG, __VA_ARGS__)
#define KLOG_INFO(...)  keel_log(KEEL_LOG_INFO, __VA_ARGS__)
#define KLOG_WARN(...)  keel_log(KEEL_LOG_WARN, __VA_ARGS__)
#define KLOG_ERROR(...) keel_log(KEEL_LOG_ERROR, __VA_ARGS__)

#endif
