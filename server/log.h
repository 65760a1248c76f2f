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

#define KLOG_DEBUG(...) keel_log(KEEL_LOG_DEBUG, __VA_ARGS__)
#define KLOG_INFO(...)  keel_log(KEEL_LOG_INFO, __VA_ARGS__)
#define KLOG_WARN(...)  keel_log(KEEL_LOG_WARN, __VA_ARGS__)
#define KLOG_ERROR(...) keel_log(KEEL_LOG_ERROR, __VA_ARGS__)

#endif
