#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum keel_log_level threshold = KEEL_LOG_INFO;
static char member[64] = "keeld";
static char zone[64] = "";
static bool json;

void keel_log_setup(enum keel_log_level level, const char *name)
{
    threshold = level;
    if (name != NULL)
        snprintf(member, sizeof(member), "%s", name);
}

void keel_log_format(bool as_json, const char *z)
{
    json = as_json;
    snprintf(zone, sizeof(zone), "%s", z ? z : "");
}

int keel_log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* s as the inside of a JSON string into out (NUL-terminated, cut on a whole escape); its length. */
static size_t json_escape(char *out, size_t len, const char *s)
{
    size_t o = 0;
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[8];
        size_t n;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            n = 2;
        } else if (ch < 0x20) {
            n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", ch);
        } else {
            esc[0] = (char)ch;
            n = 1;
        }
        if (o + n >= len)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = '\0';
    return o;
}

size_t keel_log_line(char *out, size_t len, enum keel_log_level level, const struct timespec *ts,
                     const char *msg)
{
    static const char *tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *names[] = {"debug", "info", "warn", "error"};
    struct tm tm;
    gmtime_r(&ts->tv_sec, &tm);
    int n;
    if (!json) {
        n = snprintf(out, len, "%02d:%02d:%02d.%03ld %-5s %s %s", tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts->tv_nsec / 1000000, tags[level], member, msg);
        return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
    }
    char m[64 * 2 + 1], z[64 * 2 + 1], text[2048];
    json_escape(m, sizeof(m), member);
    json_escape(z, sizeof(z), zone);
    json_escape(text, sizeof(text), msg);
    n = snprintf(out, len,
                 "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"member\":"
                 "\"%s\",\"zone\":\"%s\",\"msg\":\"%s\"}",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts->tv_nsec / 1000000, names[level], m, z, text);
    if (n < 0)
        return 0;
    if ((size_t)n >= len && len >= 3) {
        /* Cut: still one JSON object, its message shortened. */
        memcpy(out + len - 3, "\"}", 3);
        return len - 1;
    }
    return (size_t)n;
}

void keel_log(enum keel_log_level level, const char *fmt, ...)
{
    if (level < threshold)
        return;
    char msg[1024], line[3072];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    keel_log_line(line, sizeof(line), level, &ts, msg);
    /* One write per line keeps lines whole when several threads log. */
    fprintf(stderr, "%s\n", line);
}

bool keel_log_limit_take(struct keel_log_limit *l, uint64_t *left_out)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    if (l->used == 0 || now - l->window_ns >= 1000000000ull) {
        l->window_ns = now;
        l->used = 0;
    }
    *left_out = l->left_out;
    if (l->used >= l->per_sec) {
        l->left_out++;
        return false;
    }
    l->used++;
    l->left_out = 0;
    return true;
}
