#include "ctl_parse.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, CTL_ERR_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

static char *adup(struct keel_arena *a, const char *s, size_t n)
{
    char *d = keel_arena_alloc(a, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int args_push(struct keel_arena *a, struct ctl_args *v, int *cap, char *s, size_t len)
{
    if (v->argc == *cap) {
        int ncap = *cap ? *cap * 2 : 8;
        char **nv = keel_arena_alloc(a, (size_t)ncap * sizeof(*nv));
        size_t *nl = keel_arena_alloc(a, (size_t)ncap * sizeof(*nl));
        if (nv == NULL || nl == NULL)
            return -1;
        if (v->argc) {
            memcpy(nv, v->argv, (size_t)v->argc * sizeof(*nv));
            memcpy(nl, v->lens, (size_t)v->argc * sizeof(*nl));
        }
        v->argv = nv;
        v->lens = nl;
        *cap = ncap;
    }
    v->argv[v->argc] = s;
    v->lens[v->argc] = len;
    v->argc++;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Flags
 */

static int parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "t") || !strcmp(v, "TRUE"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "f") || !strcmp(v, "FALSE"))
        *out = false;
    else
        return -1;
    return 0;
}

static int parse_i64(const char *v, int base, int64_t *out)
{
    if (*v == '\0')
        return -1;
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, base);
    if (errno || *end != '\0')
        return -1;
    *out = x;
    return 0;
}

static int set_flag(struct ctl_flag *f, const char *value, const char *shown, struct keel_arena *a,
                    char *err)
{
    f->seen = true;
    switch (f->type) {
    case CTL_BOOL:
        if (value == NULL) {
            *(bool *)f->ptr = true;
        } else if (parse_bool(value, f->ptr) != 0) {
            return fail(err, "invalid argument \"%s\" for \"%s\" flag: expected true or false",
                        value, shown);
        }
        return 0;
    case CTL_STR:
        *(const char **)f->ptr = value;
        return 0;
    case CTL_INT64:
        if (parse_i64(value, 10, f->ptr) != 0)
            return fail(err, "invalid argument \"%s\" for \"%s\" flag: not an integer", value,
                        shown);
        return 0;
    case CTL_STRLIST: {
        struct ctl_strlist *l = f->ptr;
        if (l->n == l->cap) {
            size_t ncap = l->cap ? l->cap * 2 : 4;
            const char **ni = keel_arena_alloc(a, ncap * sizeof(*ni));
            if (ni == NULL)
                return fail(err, "out of memory");
            if (l->n)
                memcpy(ni, l->items, l->n * sizeof(*ni));
            l->items = ni;
            l->cap = ncap;
        }
        l->items[l->n++] = value;
        return 0;
    }
    }
    return 0;
}

int ctl_flags_parse(struct ctl_flag *flags, const struct ctl_args *in, struct keel_arena *a,
                    struct ctl_args *pos, char *err)
{
    int cap = 0;
    memset(pos, 0, sizeof(*pos));
    bool only_pos = false;
    for (int i = 0; i < in->argc; i++) {
        char *arg = in->argv[i];
        size_t alen = in->lens[i];
        if (only_pos || arg[0] != '-' || alen < 2 || strlen(arg) != alen) {
            if (args_push(a, pos, &cap, arg, alen) != 0)
                return fail(err, "out of memory");
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        struct ctl_flag *f = NULL;
        const char *value = NULL;
        char shown[64];
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            for (struct ctl_flag *t = flags; t->name && f == NULL; t++)
                if (strlen(t->name) == nlen && strncmp(t->name, name, nlen) == 0)
                    f = t;
            snprintf(shown, sizeof(shown), "--%.*s", (int)nlen, name);
            if (f == NULL)
                return fail(err, "unknown flag: %s", shown);
            if (eq)
                value = eq + 1;
        } else {
            for (struct ctl_flag *t = flags; t->name && f == NULL; t++)
                if (t->shorthand && t->shorthand == arg[1])
                    f = t;
            snprintf(shown, sizeof(shown), "-%c", arg[1]);
            if (f == NULL) {
                /* "-5" and the like are values, not flags. */
                if (isdigit((unsigned char)arg[1])) {
                    if (args_push(a, pos, &cap, arg, alen) != 0)
                        return fail(err, "out of memory");
                    continue;
                }
                return fail(err, "unknown shorthand flag: '%c' in %s", arg[1], arg);
            }
            if (arg[2] == '=')
                value = arg + 3;
            else if (arg[2] != '\0')
                value = arg + 2;
        }
        if (value == NULL && f->type != CTL_BOOL) {
            if (i + 1 >= in->argc)
                return fail(err, "flag needs an argument: %s", shown);
            value = in->argv[++i];
        }
        if (set_flag(f, value, shown, a, err) != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Go string literals
 */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

int ctl_unquote(const char **pp, struct keel_arena *a, char **out, size_t *len, char *err)
{
    const char *p = *pp;
    char q = *p;
    if (q != '"' && q != '`')
        return fail(err, "expected a quoted string at: %s", p);
    const char *s = p + 1;
    if (q == '`') {
        const char *e = strchr(s, '`');
        if (e == NULL)
            return fail(err, "unterminated raw string: %s", p);
        *out = adup(a, s, (size_t)(e - s));
        *len = (size_t)(e - s);
        *pp = e + 1;
        return *out ? 0 : fail(err, "out of memory");
    }
    /* Unescaping only shrinks: the source length bounds the result. */
    char *buf = keel_arena_alloc(a, strlen(s) + 1);
    if (buf == NULL)
        return fail(err, "out of memory");
    size_t n = 0;
    for (;;) {
        char c = *s++;
        if (c == '\0' || c == '\n')
            return fail(err, "unterminated string: %s", p);
        if (c == '"')
            break;
        if (c != '\\') {
            buf[n++] = c;
            continue;
        }
        c = *s++;
        switch (c) {
        case 'a':
            buf[n++] = '\a';
            break;
        case 'b':
            buf[n++] = '\b';
            break;
        case 'f':
            buf[n++] = '\f';
            break;
        case 'n':
            buf[n++] = '\n';
            break;
        case 'r':
            buf[n++] = '\r';
            break;
        case 't':
            buf[n++] = '\t';
            break;
        case 'v':
            buf[n++] = '\v';
            break;
        case '\\':
            buf[n++] = '\\';
            break;
        case '"':
            buf[n++] = '"';
            break;
        case 'x': {
            int h = hexval(s[0]), l = h < 0 ? -1 : hexval(s[1]);
            if (h < 0 || l < 0)
                return fail(err, "invalid \\x escape in %s", p);
            buf[n++] = (char)(h << 4 | l);
            s += 2;
            break;
        }
        case 'u':
        case 'U': {
            int digits = c == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int i = 0; i < digits; i++) {
                int v = hexval(s[i]);
                if (v < 0)
                    return fail(err, "invalid \\%c escape in %s", c, p);
                cp = cp << 4 | (uint32_t)v;
            }
            if (cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
                return fail(err, "invalid code point in %s", p);
            s += digits;
            n += utf8_put(cp, buf + n);
            break;
        }
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7': {
            if (s[0] < '0' || s[0] > '7' || s[1] < '0' || s[1] > '7')
                return fail(err, "invalid octal escape in %s", p);
            int v = (c - '0') << 6 | (s[0] - '0') << 3 | (s[1] - '0');
            if (v > 255)
                return fail(err, "octal escape out of range in %s", p);
            buf[n++] = (char)v;
            s += 2;
            break;
        }
        default:
            return fail(err, "invalid escape \\%c in %s", c ? c : '0', p);
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    *pp = s;
    return 0;
}

int ctl_argify(const char *line, struct keel_arena *a, struct ctl_args *out, char *err)
{
    int cap = 0;
    memset(out, 0, sizeof(*out));
    const char *p = line;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            return 0;
        char *tok;
        size_t len;
        if (*p == '"') {
            if (ctl_unquote(&p, a, &tok, &len, err) != 0)
                return -1;
        } else if (*p == '\'') {
            const char *e = strchr(p + 1, '\'');
            if (e == NULL)
                return fail(err, "unterminated quote: %s", p);
            len = (size_t)(e - p - 1);
            tok = adup(a, p + 1, len);
            p = e + 1;
        } else {
            const char *s = p;
            while (*p && !isspace((unsigned char)*p))
                p++;
            len = (size_t)(p - s);
            tok = adup(a, s, len);
        }
        if (tok == NULL || args_push(a, out, &cap, tok, len) != 0)
            return fail(err, "out of memory");
    }
}

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

static ProtobufCBinaryData bin(char *s, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)s};
    return b;
}

static ProtobufCBinaryData bin_lit(struct keel_arena *a, const char *s, size_t n)
{
    return bin(adup(a, s, n), n);
}

void ctl_get_flag_table(struct ctl_get_flags *g, struct ctl_flag *t)
{
    struct ctl_flag f[] = {
        {"prefix", 0, CTL_BOOL, &g->prefix, false},
        {"from-key", 0, CTL_BOOL, &g->from_key, false},
        {"keys-only", 0, CTL_BOOL, &g->keys_only, false},
        {"count-only", 0, CTL_BOOL, &g->count_only, false},
        {"print-value-only", 0, CTL_BOOL, &g->print_value_only, false},
        {"rev", 0, CTL_INT64, &g->rev, false},
        {"limit", 0, CTL_INT64, &g->limit, false},
        {"consistency", 0, CTL_STR, &g->consistency, false},
        {"order", 0, CTL_STR, &g->order, false},
        {"sort-by", 0, CTL_STR, &g->sort_by, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    memcpy(t, f, sizeof(f));
}

void ctl_put_flag_table(struct ctl_put_flags *p, struct ctl_flag *t)
{
    struct ctl_flag f[] = {
        {"lease", 0, CTL_STR, &p->lease, false},
        {"prev-kv", 0, CTL_BOOL, &p->prev_kv, false},
        {"ignore-value", 0, CTL_BOOL, &p->ignore_value, false},
        {"ignore-lease", 0, CTL_BOOL, &p->ignore_lease, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    memcpy(t, f, sizeof(f));
}

void ctl_del_flag_table(struct ctl_del_flags *d, struct ctl_flag *t)
{
    struct ctl_flag f[] = {
        {"prefix", 0, CTL_BOOL, &d->prefix, false},
        {"from-key", 0, CTL_BOOL, &d->from_key, false},
        {"prev-kv", 0, CTL_BOOL, &d->prev_kv, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    memcpy(t, f, sizeof(f));
}

void ctl_watch_flag_table(struct ctl_watch_flags *w, struct ctl_flag *t)
{
    struct ctl_flag f[] = {
        {"prefix", 0, CTL_BOOL, &w->prefix, false},
        {"rev", 0, CTL_INT64, &w->rev, false},
        {"prev-kv", 0, CTL_BOOL, &w->prev_kv, false},
        {"progress-notify", 0, CTL_BOOL, &w->progress_notify, false},
        {"count", 0, CTL_INT64, &w->count, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    memcpy(t, f, sizeof(f));
}

static bool ieq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

/* key and range_end for [pos0, pos1), --prefix or --from-key, as clientv3 sets them. */
static int key_range(const struct ctl_args *pos, bool prefix, bool from_key, struct keel_arena *a,
                     ProtobufCBinaryData *key, ProtobufCBinaryData *end, char *err)
{
    if (prefix && from_key)
        return fail(err, "`--prefix` and `--from-key` cannot be set at the same time, choose one");
    *key = bin(pos->argv[0], pos->lens[0]);
    end->len = 0;
    end->data = NULL;
    if (pos->argc > 1) {
        if (prefix || from_key)
            return fail(err, "too many arguments, only accept one argument when `--prefix` or "
                             "`--from-key` is set");
        *end = bin(pos->argv[1], pos->lens[1]);
    }
    if (prefix || from_key) {
        if (key->len == 0) {
            *key = bin_lit(a, "", 1);
            *end = bin_lit(a, "", 1);
        } else if (prefix) {
            uint8_t *e = keel_arena_alloc(a, key->len + 1);
            if (e == NULL)
                return fail(err, "out of memory");
            end->len = keel_prefix_end(key->data, key->len, e);
            end->data = e;
        } else {
            *end = bin_lit(a, "", 1);
        }
    }
    return 0;
}

int ctl_build_get(const struct ctl_get_flags *g, const struct ctl_args *pos, struct keel_arena *a,
                  Keel__RangeRequest **out, char *err)
{
    if (pos->argc < 1 || pos->argc > 2)
        return fail(err, "get command needs one argument as key and an optional argument as "
                         "range_end");
    if (g->keys_only && g->count_only)
        return fail(err,
                    "`--keys-only` and `--count-only` cannot be set at the same time, choose one");
    Keel__RangeRequest *r = keel_arena_alloc(a, sizeof(*r));
    if (r == NULL)
        return fail(err, "out of memory");
    keel__range_request__init(r);
    if (key_range(pos, g->prefix, g->from_key, a, &r->key, &r->range_end, err) != 0)
        return -1;
    const char *cons = g->consistency ? g->consistency : "l";
    if (strcmp(cons, "s") == 0)
        r->serializable = true;
    else if (strcmp(cons, "l") != 0)
        return fail(err, "unknown consistency flag \"%s\"", cons);
    if (g->limit < 0)
        return fail(err, "--limit must not be negative");
    r->limit = g->limit;
    if (g->rev > 0)
        r->revision = g->rev;
    r->keys_only = g->keys_only;
    r->count_only = g->count_only;

    Keel__RangeRequest__SortOrder order = KEEL__RANGE_REQUEST__SORT_ORDER__NONE;
    if (g->order && g->order[0]) {
        if (ieq(g->order, "ASCEND"))
            order = KEEL__RANGE_REQUEST__SORT_ORDER__ASCEND;
        else if (ieq(g->order, "DESCEND"))
            order = KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
        else
            return fail(err, "bad sort order %s", g->order);
    }
    Keel__RangeRequest__SortTarget target = KEEL__RANGE_REQUEST__SORT_TARGET__KEY;
    if (g->sort_by && g->sort_by[0]) {
        if (ieq(g->sort_by, "CREATE"))
            target = KEEL__RANGE_REQUEST__SORT_TARGET__CREATE;
        else if (ieq(g->sort_by, "KEY"))
            target = KEEL__RANGE_REQUEST__SORT_TARGET__KEY;
        else if (ieq(g->sort_by, "MODIFY"))
            target = KEEL__RANGE_REQUEST__SORT_TARGET__MOD;
        else if (ieq(g->sort_by, "VALUE"))
            target = KEEL__RANGE_REQUEST__SORT_TARGET__VALUE;
        else if (ieq(g->sort_by, "VERSION"))
            target = KEEL__RANGE_REQUEST__SORT_TARGET__VERSION;
        else
            return fail(err, "bad sort target %s", g->sort_by);
    }
    /* As clientv3: keys come back in ascending key order anyway, so that sort is dropped (it
     * would make the server read the whole range before applying the limit); any other target
     * without an order sorts ascending. */
    if (target == KEEL__RANGE_REQUEST__SORT_TARGET__KEY &&
        order == KEEL__RANGE_REQUEST__SORT_ORDER__ASCEND)
        order = KEEL__RANGE_REQUEST__SORT_ORDER__NONE;
    if (target != KEEL__RANGE_REQUEST__SORT_TARGET__KEY &&
        order == KEEL__RANGE_REQUEST__SORT_ORDER__NONE)
        order = KEEL__RANGE_REQUEST__SORT_ORDER__ASCEND;
    r->sort_order = order;
    r->sort_target = target;
    *out = r;
    return 0;
}

int ctl_build_watch(const struct ctl_watch_flags *w, const struct ctl_args *pos,
                    struct keel_arena *a, Keel__WatchCreateRequest **out, char *err)
{
    if (pos->argc < 1 || pos->argc > 2)
        return fail(err, "bad number of arguments");
    if (pos->argc == 2 && w->prefix)
        return fail(err, "`range_end` and `--prefix` are mutually exclusive");
    if (w->rev < 0)
        return fail(err, "--rev must not be negative");
    if (w->count < 0)
        return fail(err, "--count must not be negative");
    Keel__WatchCreateRequest *r = keel_arena_alloc(a, sizeof(*r));
    if (r == NULL)
        return fail(err, "out of memory");
    keel__watch_create_request__init(r);
    if (key_range(pos, w->prefix, false, a, &r->key, &r->range_end, err) != 0)
        return -1;
    if (r->key.len == 0 && r->range_end.len == 0)
        return fail(err, "key is not provided");
    r->start_revision = w->rev;
    r->prev_kv = w->prev_kv;
    r->progress_notify = w->progress_notify;
    *out = r;
    return 0;
}

int ctl_build_put(const struct ctl_put_flags *p, const struct ctl_args *pos, struct keel_arena *a,
                  Keel__PutRequest **out, char *err)
{
    if (pos->argc < 1)
        return fail(err, "put command needs 1 argument and input from stdin or 2 arguments");
    if (p->ignore_value && pos->argc > 1)
        return fail(err, "put command needs only 1 argument when 'ignore-value' is set");
    if (!p->ignore_value && pos->argc != 2)
        return fail(err, "put command needs 1 argument and input from stdin or 2 arguments");
    Keel__PutRequest *r = keel_arena_alloc(a, sizeof(*r));
    if (r == NULL)
        return fail(err, "out of memory");
    keel__put_request__init(r);
    r->key = bin(pos->argv[0], pos->lens[0]);
    if (!p->ignore_value)
        r->value = bin(pos->argv[1], pos->lens[1]);
    if (p->lease && p->lease[0]) {
        int64_t id;
        const char *s = p->lease;
        if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
            s += 2;
        if (parse_i64(s, 16, &id) != 0)
            return fail(err, "bad lease ID (%s), expecting ID in Hex", p->lease);
        r->lease = id;
    }
    r->prev_kv = p->prev_kv;
    r->ignore_value = p->ignore_value;
    r->ignore_lease = p->ignore_lease;
    *out = r;
    return 0;
}

int ctl_build_del(const struct ctl_del_flags *d, const struct ctl_args *pos, struct keel_arena *a,
                  Keel__DeleteRangeRequest **out, char *err)
{
    if (pos->argc < 1 || pos->argc > 2)
        return fail(err, "del command needs one argument as key and an optional argument as "
                         "range_end");
    Keel__DeleteRangeRequest *r = keel_arena_alloc(a, sizeof(*r));
    if (r == NULL)
        return fail(err, "out of memory");
    keel__delete_range_request__init(r);
    if (key_range(pos, d->prefix, d->from_key, a, &r->key, &r->range_end, err) != 0)
        return -1;
    r->prev_kv = d->prev_kv;
    *out = r;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Txn
 */

int ctl_parse_op(const char *line, struct keel_arena *a, Keel__RequestOp **out, char *err)
{
    struct ctl_args args;
    if (ctl_argify(line, a, &args, err) != 0)
        return -1;
    if (args.argc < 2)
        return fail(err, "invalid txn request: %s", line);
    struct ctl_args rest = {args.argc - 1, args.argv + 1, args.lens + 1};
    struct ctl_args pos;
    struct ctl_flag table[16];
    char why[CTL_ERR_MAX];
    Keel__RequestOp *op = keel_arena_alloc(a, sizeof(*op));
    if (op == NULL)
        return fail(err, "out of memory");
    keel__request_op__init(op);
    const char *cmd = args.argv[0];
    if (strcmp(cmd, "put") == 0) {
        struct ctl_put_flags f = {0};
        ctl_put_flag_table(&f, table);
        if (ctl_flags_parse(table, &rest, a, &pos, why) != 0 ||
            ctl_build_put(&f, &pos, a, &op->request_put, why) != 0)
            return fail(err, "invalid txn request: %s (%s)", line, why);
        op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    } else if (strcmp(cmd, "get") == 0) {
        struct ctl_get_flags f = {0};
        ctl_get_flag_table(&f, table);
        if (ctl_flags_parse(table, &rest, a, &pos, why) != 0 ||
            ctl_build_get(&f, &pos, a, &op->request_range, why) != 0)
            return fail(err, "invalid txn request: %s (%s)", line, why);
        op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
    } else if (strcmp(cmd, "del") == 0 || strcmp(cmd, "delete") == 0) {
        struct ctl_del_flags f = {0};
        ctl_del_flag_table(&f, table);
        if (ctl_flags_parse(table, &rest, a, &pos, why) != 0 ||
            ctl_build_del(&f, &pos, a, &op->request_delete_range, why) != 0)
            return fail(err, "invalid txn request: %s (%s)", line, why);
        op->request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    } else {
        return fail(err, "invalid txn request: %s (unknown operation %s: use get, put or del)",
                    line, cmd);
    }
    *out = op;
    return 0;
}

int ctl_parse_compare(const char *line, struct keel_arena *a, Keel__Compare **out, char *err)
{
    const char *lp = strchr(line, '(');
    if (lp == NULL)
        return fail(err, "malformed comparison: %s", line);
    size_t tlen = (size_t)(lp - line);
    const char *p = lp + 1;
    while (*p == ' ' || *p == '\t')
        p++;
    char *key, *val;
    size_t klen, vlen;
    char why[CTL_ERR_MAX];
    if (ctl_unquote(&p, a, &key, &klen, why) != 0)
        return fail(err, "malformed comparison: %s (%s)", line, why);
    if (*p != ')')
        return fail(err, "malformed comparison: %s (expected ')' after the key)", line);
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    Keel__Compare__CompareResult result;
    if (p[0] == '!' && p[1] == '=') {
        result = KEEL__COMPARE__COMPARE_RESULT__NOT_EQUAL;
        p += 2;
    } else if (p[0] == '=') {
        result = KEEL__COMPARE__COMPARE_RESULT__EQUAL;
        p += p[1] == '=' ? 2 : 1;
    } else if (p[0] == '<') {
        result = KEEL__COMPARE__COMPARE_RESULT__LESS;
        p++;
    } else if (p[0] == '>') {
        result = KEEL__COMPARE__COMPARE_RESULT__GREATER;
        p++;
    } else {
        return fail(err, "malformed comparison: %s (expected one of = != < >)", line);
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '"' || *p == '`') {
        if (ctl_unquote(&p, a, &val, &vlen, why) != 0)
            return fail(err, "malformed comparison: %s (%s)", line, why);
    } else {
        /* etcdctl wants the value quoted; a bare word is accepted too. */
        const char *s = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        vlen = (size_t)(p - s);
        val = adup(a, s, vlen);
        if (vlen == 0)
            return fail(err, "malformed comparison: %s (missing value)", line);
    }
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '\0')
        return fail(err, "malformed comparison: %s (unexpected \"%s\")", line, p);

    Keel__Compare *c = keel_arena_alloc(a, sizeof(*c));
    if (c == NULL || val == NULL)
        return fail(err, "out of memory");
    keel__compare__init(c);
    c->key = bin(key, klen);
    c->result = result;
    char target[16];
    if (tlen >= sizeof(target))
        return fail(err, "malformed comparison: %s (unknown target %.*s)", line, (int)tlen, line);
    memcpy(target, line, tlen);
    target[tlen] = '\0';
    int64_t v = 0;
    int base = strcmp(target, "lease") == 0 ? 16 : 10;
    bool numeric = strcmp(target, "val") != 0 && strcmp(target, "value") != 0;
    if (numeric && parse_i64(val, base, &v) != 0)
        return fail(err, "invalid txn compare request: %s (\"%s\" is not a%s integer)", line, val,
                    base == 16 ? " hexadecimal" : "n");
    if (!strcmp(target, "ver") || !strcmp(target, "version")) {
        c->target = KEEL__COMPARE__COMPARE_TARGET__VERSION;
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
        c->version = v;
    } else if (!strcmp(target, "c") || !strcmp(target, "create")) {
        c->target = KEEL__COMPARE__COMPARE_TARGET__CREATE;
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_CREATE_REVISION;
        c->create_revision = v;
    } else if (!strcmp(target, "m") || !strcmp(target, "mod")) {
        c->target = KEEL__COMPARE__COMPARE_TARGET__MOD;
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_MOD_REVISION;
        c->mod_revision = v;
    } else if (!strcmp(target, "val") || !strcmp(target, "value")) {
        c->target = KEEL__COMPARE__COMPARE_TARGET__VALUE;
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_VALUE;
        c->value = bin(val, vlen);
    } else if (!strcmp(target, "lease")) {
        c->target = KEEL__COMPARE__COMPARE_TARGET__LEASE;
        c->target_union_case = KEEL__COMPARE__TARGET_UNION_LEASE;
        c->lease = v;
    } else {
        return fail(err, "malformed comparison: %s (unknown target %s)", line, target);
    }
    *out = c;
    return 0;
}

static int ptr_append(struct keel_arena *a, void ***arr, size_t *n, void *item)
{
    /* Arrays double inside the arena: old copies are simply left behind. Only powers of two
     * reallocate, so the waste stays below the final size. */
    if (*n == 0 || (*n >= 4 && (*n & (*n - 1)) == 0)) {
        size_t cap = *n ? *n * 2 : 4;
        void **na = keel_arena_alloc(a, cap * sizeof(*na));
        if (na == NULL)
            return -1;
        if (*n)
            memcpy(na, *arr, *n * sizeof(*na));
        *arr = na;
    }
    (*arr)[(*n)++] = item;
    return 0;
}

int ctl_txn_add_compare(struct keel_arena *a, Keel__TxnRequest *txn, Keel__Compare *cmp)
{
    return ptr_append(a, (void ***)&txn->compare, &txn->n_compare, cmp);
}

int ctl_txn_add_op(struct keel_arena *a, Keel__TxnRequest *txn, bool success, Keel__RequestOp *op)
{
    if (success)
        return ptr_append(a, (void ***)&txn->success, &txn->n_success, op);
    return ptr_append(a, (void ***)&txn->failure, &txn->n_failure, op);
}

/* One line of in without its newline and surrounding white space; NULL at end of input. */
static char *read_line(FILE *in, struct keel_arena *a)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, in);
    if (n < 0) {
        free(line);
        return NULL;
    }
    char *s = line;
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    char *out = adup(a, s, len);
    free(line);
    return out;
}

int ctl_txn_read(FILE *in, bool interactive, FILE *prompt_out, struct keel_arena *a,
                 Keel__TxnRequest *txn, char *err)
{
    static const char *const prompts[] = {
        "compares:", "success requests (get, put, del):", "failure requests (get, put, del):"};
    bool eof = false;
    for (int part = 0; part < 3 && !eof; part++) {
        if (interactive && prompt_out) {
            fprintf(prompt_out, "%s\n", prompts[part]);
            fflush(prompt_out);
        }
        for (;;) {
            char *line = read_line(in, a);
            if (line == NULL) {
                eof = true;
                break;
            }
            if (line[0] == '\0')
                break;
            if (part == 0) {
                Keel__Compare *c;
                if (ctl_parse_compare(line, a, &c, err) != 0)
                    return -1;
                if (ctl_txn_add_compare(a, txn, c) != 0)
                    return fail(err, "out of memory");
            } else {
                Keel__RequestOp *op;
                if (ctl_parse_op(line, a, &op, err) != 0)
                    return -1;
                if (ctl_txn_add_op(a, txn, part == 1, op) != 0)
                    return fail(err, "out of memory");
            }
        }
    }
    if (ferror(in))
        return fail(err, "reading the transaction: %s", strerror(errno));
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Formatting
 */

int ctl_parse_duration_ms(const char *s, uint64_t *ms)
{
    if (s == NULL || *s == '\0')
        return -1;
    double total = 0;
    const char *p = s;
    bool any = false;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        /* Written so that NaN ("nan" is a number to strtod) fails too. */
        if (end == p || errno || !(v >= 0))
            return -1;
        p = end;
        double unit;
        if (*p == '\0' && !any) {
            unit = 1000; /* bare number: seconds */
        } else if (strncmp(p, "ms", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (strncmp(p, "us", 2) == 0 || strncmp(p, "µs", 3) == 0) {
            unit = 0.001;
            p += p[0] == 'u' ? 2 : 3;
        } else if (strncmp(p, "ns", 2) == 0) {
            unit = 0.000001;
            p += 2;
        } else if (*p == 's') {
            unit = 1000;
            p++;
        } else if (*p == 'm') {
            unit = 60000;
            p++;
        } else if (*p == 'h') {
            unit = 3600000;
            p++;
        } else {
            return -1;
        }
        total += v * unit;
        any = true;
    }
    if (total > 1e12)
        return -1;
    *ms = (uint64_t)(total + 0.5);
    return 0;
}

void ctl_format_duration(uint64_t ns, char *out, size_t len)
{
    static const struct {
        uint64_t unit;
        int digits;
        const char *suffix;
    } units[] = {{1000000000ull, 9, "s"}, {1000000ull, 6, "ms"}, {1000ull, 3, "µs"}};
    if (ns < 1000) {
        snprintf(out, len, "%" PRIu64 "ns", ns);
        return;
    }
    for (size_t i = 0; i < 3; i++) {
        if (ns < units[i].unit)
            continue;
        uint64_t whole = ns / units[i].unit, frac = ns % units[i].unit;
        if (frac == 0) {
            snprintf(out, len, "%" PRIu64 "%s", whole, units[i].suffix);
            return;
        }
        char f[16];
        snprintf(f, sizeof(f), "%0*" PRIu64, units[i].digits, frac);
        size_t n = strlen(f);
        while (n > 0 && f[n - 1] == '0')
            f[--n] = '\0';
        snprintf(out, len, "%" PRIu64 ".%s%s", whole, f, units[i].suffix);
        return;
    }
}

void ctl_format_bytes(uint64_t n, char *out, size_t len)
{
    static const char *const sizes[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    if (n < 10) {
        snprintf(out, len, "%" PRIu64 " B", n);
        return;
    }
    int e = (int)floor(log((double)n) / log(1000.0));
    if (e > 6)
        e = 6;
    double val = floor((double)n / pow(1000.0, e) * 10 + 0.5) / 10;
    snprintf(out, len, val < 10 ? "%.1f %s" : "%.0f %s", val, sizes[e]);
}

void ctl_base64(const uint8_t *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
}
