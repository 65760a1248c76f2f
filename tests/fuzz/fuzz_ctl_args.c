/*
 * fuzz_ctl_args: keelctl's argument parsers (client/ctl_parse.h): flags and positional
 * arguments into get/put/del/watch requests, etcdctl's argify and Go string literals, durations,
 * and the formatting helpers.
 *
 * Input: byte 0 picks what is parsed, the rest is its text.
 *   0-3  an argument vector (one argument per line; an argument may hold NUL bytes, as a quoted
 *        key can) parsed with the flags of get, put, del or watch, then built into its request
 *   4    the same with keelctl's global flags and a flag of every type, short ones included
 *   5    one line split by ctl_argify, then parsed and built as a txn op line's get is
 *   6    one Go string literal (ctl_unquote), as a compare line's key
 *   7    a duration (ctl_parse_duration_ms), and the bytes as numbers for the formatters
 *
 * Checked, besides crashes, leaks and undefined behaviour: failures write a reason; what is
 * built packs as a protobuf message (every pointer and length in it is good); unquoting never
 * grows the text and consumes exactly the literal; formatters end their output with a NUL inside
 * the buffer.
 */
#include <string.h>

#include "arena.h"
#include "ctl_parse.h"
#include "fuzz.h"
#include "keel.pb-c.h"

static struct keel_arena arena;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_arena_init(&arena, 0);
    return 0;
}

/* A NUL-terminated copy of n bytes, in the arena. */
static char *text(const uint8_t *p, size_t n)
{
    char *s = keel_arena_alloc(&arena, n + 1);
    FZ_CHECK(s != NULL);
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* One argument per line, each with its length (NULs included) and a NUL after it, as keelctl
 * hands its parser argv. */
static struct ctl_args argv_of(const uint8_t *p, size_t n)
{
    struct ctl_args a = {0};
    size_t count = 1;
    for (size_t i = 0; i < n; i++)
        count += p[i] == '\n';
    a.argv = keel_arena_alloc(&arena, (count + 1) * sizeof(*a.argv));
    a.lens = keel_arena_alloc(&arena, (count + 1) * sizeof(*a.lens));
    FZ_CHECK(a.argv != NULL && a.lens != NULL);
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != '\n')
            continue;
        a.argv[a.argc] = text(p + start, i - start);
        a.lens[a.argc] = i - start;
        a.argc++;
        start = i + 1;
    }
    if (n == 0)
        a.argc = 0;
    a.argv[a.argc] = NULL;
    return a;
}

static void failed(int rv, const char *err)
{
    FZ_CHECK(rv == -1 && err[0] != '\0' && strlen(err) < CTL_ERR_MAX);
}

static void request(int which, const struct ctl_args *in)
{
    struct ctl_flag table[16];
    struct ctl_get_flags g = {0};
    struct ctl_put_flags p = {0};
    struct ctl_del_flags d = {0};
    struct ctl_watch_flags w = {0};
    struct ctl_args pos;
    char err[CTL_ERR_MAX] = "";
    switch (which) {
    case 0:
        ctl_get_flag_table(&g, table);
        break;
    case 1:
        ctl_put_flag_table(&p, table);
        break;
    case 2:
        ctl_del_flag_table(&d, table);
        break;
    default:
        ctl_watch_flag_table(&w, table);
        break;
    }
    int rv = ctl_flags_parse(table, in, &arena, &pos, err);
    if (rv != 0) {
        failed(rv, err);
        return;
    }
    for (int i = 0; i < pos.argc; i++)
        FZ_CHECK(pos.argv[i] != NULL && pos.argv[i][pos.lens[i]] == '\0');
    Keel__RangeRequest *rr;
    Keel__PutRequest *pr;
    Keel__DeleteRangeRequest *dr;
    Keel__WatchCreateRequest *wr;
    switch (which) {
    case 0:
        if ((rv = ctl_build_get(&g, &pos, &arena, &rr, err)) == 0)
            fz_packs(&rr->base);
        break;
    case 1:
        if ((rv = ctl_build_put(&p, &pos, &arena, &pr, err)) == 0)
            fz_packs(&pr->base);
        break;
    case 2:
        if ((rv = ctl_build_del(&d, &pos, &arena, &dr, err)) == 0)
            fz_packs(&dr->base);
        break;
    default:
        if ((rv = ctl_build_watch(&w, &pos, &arena, &wr, err)) == 0)
            fz_packs(&wr->base);
        break;
    }
    if (rv != 0)
        failed(rv, err);
}

/* keelctl's global flags (client/keelctl.c), and one of each other type. */
static void globals(const struct ctl_args *in)
{
    const char *endpoints = NULL, *write_out = NULL, *timeout = NULL;
    bool help = false;
    int64_t n = 0;
    struct ctl_strlist list = {0};
    struct ctl_flag table[] = {
        {"endpoints", 0, CTL_STR, &endpoints, false},
        {"timeout", 0, CTL_STR, &timeout, false},
        {"write-out", 'w', CTL_STR, &write_out, false},
        {"help", 'h', CTL_BOOL, &help, false},
        {"count", 'n', CTL_INT64, &n, false},
        {"peer", 'p', CTL_STRLIST, &list, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    char err[CTL_ERR_MAX] = "";
    int rv = ctl_flags_parse(table, in, &arena, &pos, err);
    if (rv != 0) {
        failed(rv, err);
        return;
    }
    for (size_t i = 0; i < list.n; i++)
        FZ_CHECK(list.items[i] != NULL && strlen(list.items[i]) <= 4096);
    uint64_t ms;
    if (timeout != NULL)
        (void)ctl_parse_duration_ms(timeout, &ms);
}

static void op_line(const char *line)
{
    struct ctl_args args;
    char err[CTL_ERR_MAX] = "";
    int rv = ctl_argify(line, &arena, &args, err);
    if (rv != 0) {
        failed(rv, err);
        return;
    }
    for (int i = 0; i < args.argc; i++)
        FZ_CHECK(args.argv[i][args.lens[i]] == '\0' && args.lens[i] <= strlen(line));
    request(0, &args);
}

static void literal(const char *s)
{
    const char *p = s;
    char *out = NULL;
    size_t len = 0;
    char err[CTL_ERR_MAX] = "";
    int rv = ctl_unquote(&p, &arena, &out, &len, err);
    if (rv != 0) {
        failed(rv, err);
        FZ_CHECK(p == s);
        return;
    }
    FZ_CHECK(p > s && p <= s + strlen(s) && len <= (size_t)(p - s) && out[len] == '\0');
}

static void numbers(const char *s, const uint8_t *raw, size_t n)
{
    uint64_t ms = 0;
    (void)ctl_parse_duration_ms(s, &ms);
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < 8; i++)
        v = v << 8 | raw[i];
    char out[64];
    ctl_format_duration(v, out, sizeof(out));
    FZ_CHECK(memchr(out, '\0', sizeof(out)) != NULL);
    ctl_format_bytes(v, out, sizeof(out));
    FZ_CHECK(memchr(out, '\0', sizeof(out)) != NULL);
    char *b64 = keel_arena_alloc(&arena, 4 * ((n + 2) / 3) + 1);
    FZ_CHECK(b64 != NULL);
    ctl_base64(raw, n, b64);
    FZ_CHECK(strlen(b64) == 4 * ((n + 2) / 3));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz in = {data, size};
    int mode = fz_u8(&in) % 8;
    if (mode <= 4) {
        struct ctl_args args = argv_of(in.p, in.n);
        if (mode == 4)
            globals(&args);
        else
            request(mode, &args);
    } else {
        char *s = text(in.p, in.n);
        if (mode == 5)
            op_line(s);
        else if (mode == 6)
            literal(s);
        else
            numbers(s, in.p, in.n);
    }
    keel_arena_reset(&arena);
    return 0;
}
