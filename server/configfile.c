#include "configfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

struct reader {
    yaml_parser_t parser;
    yaml_event_t ev; /* the event last read; deleted before the next one */
    bool have;
    const char *path;
    char *err;
    size_t errlen;
};

static int fail_at(struct reader *r, const yaml_mark_t *mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_at(struct reader *r, const yaml_mark_t *mark, const char *fmt, ...)
{
    int n = snprintf(r->err, r->errlen, "config file %s: line %zu column %zu: ", r->path,
                     mark->line + 1, mark->column + 1);
    if (n >= 0 && (size_t)n < r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The next event into r->ev: 0, or -1 with libyaml's own account of malformed YAML. */
static int next(struct reader *r)
{
    if (r->have)
        yaml_event_delete(&r->ev);
    r->have = false;
    if (!yaml_parser_parse(&r->parser, &r->ev)) {
        const char *problem = r->parser.problem ? r->parser.problem : "malformed YAML";
        if (r->parser.context != NULL)
            return fail_at(r, &r->parser.problem_mark, "%s (%s)", problem, r->parser.context);
        return fail_at(r, &r->parser.problem_mark, "%s", problem);
    }
    r->have = true;
    if (r->ev.type == YAML_ALIAS_EVENT)
        return fail_at(r, &r->ev.start_mark, "aliases (*%s) are not supported",
                       (const char *)r->ev.data.alias.anchor);
    return 0;
}

static char *scalar_dup(const yaml_event_t *ev)
{
    char *s = malloc(ev->data.scalar.length + 1);
    if (s != NULL) {
        memcpy(s, ev->data.scalar.value, ev->data.scalar.length);
        s[ev->data.scalar.length] = '\0';
    }
    return s;
}

/* A sequence of scalars (its start event read) into one ','-joined string. */
static int read_sequence(struct reader *r, const char *key, char **out)
{
    size_t len = 0;
    char *joined = calloc(1, 1);
    if (joined == NULL)
        return fail_at(r, &r->ev.start_mark, "out of memory");
    for (;;) {
        if (next(r) != 0)
            break;
        if (r->ev.type == YAML_SEQUENCE_END_EVENT) {
            *out = joined;
            return 0;
        }
        if (r->ev.type != YAML_SCALAR_EVENT) {
            fail_at(r, &r->ev.start_mark, "the list of '%s' holds something other than values",
                    key);
            break;
        }
        size_t add = r->ev.data.scalar.length;
        char *grown = realloc(joined, len + (len ? 1 : 0) + add + 1);
        if (grown == NULL) {
            fail_at(r, &r->ev.start_mark, "out of memory");
            break;
        }
        joined = grown;
        if (len)
            joined[len++] = ',';
        memcpy(joined + len, r->ev.data.scalar.value, add);
        len += add;
        joined[len] = '\0';
    }
    free(joined);
    return -1;
}

/* One key and its value (the key's event read) appended to f. */
static int read_entry(struct reader *r, struct keel_configfile *f, size_t *cap)
{
    if (r->ev.type != YAML_SCALAR_EVENT)
        return fail_at(r, &r->ev.start_mark, "a key must be a setting's name");
    struct keel_configfile_entry e = {.line = (unsigned)r->ev.start_mark.line + 1};
    if ((e.key = scalar_dup(&r->ev)) == NULL)
        return fail_at(r, &r->ev.start_mark, "out of memory");
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->entries[i].key, e.key) == 0) {
            fail_at(r, &r->ev.start_mark, "'%s' is given twice (first on line %u)", e.key,
                    f->entries[i].line);
            free(e.key);
            return -1;
        }
    int rv = next(r);
    if (rv == 0 && r->ev.type == YAML_SCALAR_EVENT) {
        if ((e.value = scalar_dup(&r->ev)) == NULL)
            rv = fail_at(r, &r->ev.start_mark, "out of memory");
    } else if (rv == 0 && r->ev.type == YAML_SEQUENCE_START_EVENT) {
        e.sequence = true;
        rv = read_sequence(r, e.key, &e.value);
    } else if (rv == 0) {
        rv = fail_at(r, &r->ev.start_mark, "'%s' must be a value or a list of values", e.key);
    }
    if (rv == 0 && f->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct keel_configfile_entry *ne = realloc(f->entries, ncap * sizeof(*ne));
        if (ne == NULL)
            rv = fail_at(r, &r->ev.start_mark, "out of memory");
        else {
            f->entries = ne;
            *cap = ncap;
        }
    }
    if (rv != 0) {
        free(e.key);
        free(e.value);
        return -1;
    }
    f->entries[f->n++] = e;
    return 0;
}

/* The one document: a mapping of settings, or nothing (an empty or null document). */
static int read_document(struct reader *r, struct keel_configfile *f)
{
    if (next(r) != 0)
        return -1;
    if (r->ev.type == YAML_SCALAR_EVENT && r->ev.data.scalar.length == 0 &&
        r->ev.data.scalar.plain_implicit)
        return 0; /* "---" and nothing else */
    if (r->ev.type != YAML_MAPPING_START_EVENT)
        return fail_at(r, &r->ev.start_mark, "the file must be a mapping of settings (name: m1)");
    size_t cap = 0;
    for (;;) {
        if (next(r) != 0)
            return -1;
        if (r->ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (read_entry(r, f, &cap) != 0)
            return -1;
    }
}

static int read_stream(struct reader *r, struct keel_configfile *f)
{
    if (next(r) != 0) /* STREAM-START */
        return -1;
    if (next(r) != 0)
        return -1;
    if (r->ev.type == YAML_STREAM_END_EVENT)
        return 0;                                 /* an empty file, or only comments */
    if (read_document(r, f) != 0 || next(r) != 0) /* DOCUMENT-END */
        return -1;
    if (next(r) != 0)
        return -1;
    if (r->ev.type != YAML_STREAM_END_EVENT)
        return fail_at(r, &r->ev.start_mark, "the file holds more than one document");
    return 0;
}

int keel_configfile_read(struct keel_configfile *f, const char *path, char *err, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    FILE *in = fopen(path, "rb");
    if (in == NULL) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(in), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(in);
        snprintf(err, errlen, "config file %s: %s", path, strerror(EISDIR));
        return -1;
    }
    struct reader r = {.path = path, .err = err, .errlen = errlen};
    if (!yaml_parser_initialize(&r.parser)) {
        fclose(in);
        snprintf(err, errlen, "config file %s: out of memory", path);
        return -1;
    }
    yaml_parser_set_input_file(&r.parser, in);
    int rv = read_stream(&r, f);
    if (r.have)
        yaml_event_delete(&r.ev);
    yaml_parser_delete(&r.parser);
    if (rv == 0 && ferror(in)) {
        snprintf(err, errlen, "config file %s: read error", path);
        rv = -1;
    }
    fclose(in);
    return rv;
}

void keel_configfile_close(struct keel_configfile *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->entries[i].key);
        free(f->entries[i].value);
    }
    free(f->entries);
    f->entries = NULL;
    f->n = 0;
}
