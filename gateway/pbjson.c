/*
 * pbjson (see pbjson.h): one walk over a message descriptor's fields each way.
 *
 * protobuf-c lays a message out as its descriptor says: every field at fields[i].offset; a
 * repeated field's count (size_t) and a oneof's case (uint32_t) at quantifier_offset. Descriptors
 * list fields by number, which for etcd.proto is also declaration order, the order Go's jsonpb
 * writes them in. Decoded messages are built with malloc exactly as protobuf-c's unpacker builds
 * them (strings, byte buffers, arrays, sub-messages each their own allocation), so that
 * protobuf_c_message_free_unpacked(msg, NULL) releases them, also half-built ones after an error.
 */
#include "pbjson.h"

#include "pbclone.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Output buffer */

void gw_jbuf_put(struct gw_jbuf *b, const void *s, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void gw_jbuf_puts(struct gw_jbuf *b, const char *s)
{
    gw_jbuf_put(b, s, strlen(s));
}

void gw_jbuf_free(struct gw_jbuf *b)
{
    free(b->p);
    *b = (struct gw_jbuf){0};
}

static void putf(struct gw_jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct gw_jbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        gw_jbuf_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 when it is not one
 * (overlong forms, surrogates and code points above U+10FFFF included, as Go rejects them). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

void gw_jbuf_put_jstring(struct gw_jbuf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    gw_jbuf_put(b, "\"", 1);
    size_t start = 0, i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&') {
            i++;
            continue;
        }
        if (c < 0x80) {
            gw_jbuf_put(b, s + start, i - start);
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (c == '"' || c == '\\')
                gw_jbuf_put(b, (char[]){'\\', (char)c}, 2);
            else if (c == '\n')
                gw_jbuf_put(b, "\\n", 2);
            else if (c == '\r')
                gw_jbuf_put(b, "\\r", 2);
            else if (c == '\t')
                gw_jbuf_put(b, "\\t", 2);
            else
                gw_jbuf_put(b, esc, 6);
            start = ++i;
            continue;
        }
        size_t len = utf8_len(s + i, n - i);
        if (len == 0) {
            gw_jbuf_put(b, s + start, i - start);
            gw_jbuf_put(b, "\\ufffd", 6);
            start = ++i;
            continue;
        }
        /* U+2028, U+2029: E2 80 A8/A9 */
        if (len == 3 && c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] & 0xFE) == 0xA8) {
            gw_jbuf_put(b, s + start, i - start);
            gw_jbuf_puts(b, s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029");
            i += 3;
            start = i;
            continue;
        }
        i += len;
    }
    gw_jbuf_put(b, s + start, n - start);
    gw_jbuf_put(b, "\"", 1);
}

static void put_base64(struct gw_jbuf *b, const uint8_t *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[4];
    gw_jbuf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        out[0] = tab[(v >> 18) & 63];
        out[1] = tab[(v >> 12) & 63];
        out[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[3] = i + 2 < n ? tab[v & 63] : '=';
        gw_jbuf_put(b, out, 4);
    }
    gw_jbuf_put(b, "\"", 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding */

/* Whether the value at v is its type's zero (proto3 leaves those out). */
static bool is_zero(const ProtobufCFieldDescriptor *f, const void *v)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)v)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)v == NULL;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)v == 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)v == 0;
    default: {
        size_t sz = keel_pb_value_size(f->type);
        static const char zeros[8];
        return memcmp(v, zeros, sz) == 0;
    }
    }
}

static int write_message(struct gw_jbuf *b, const ProtobufCMessage *m, int depth);

static int write_value(struct gw_jbuf *b, const ProtobufCFieldDescriptor *f, const void *v,
                       int depth)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        putf(b, "%" PRId32, *(const int32_t *)v);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        putf(b, "%" PRIu32, *(const uint32_t *)v);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        putf(b, "\"%" PRId64 "\"", *(const int64_t *)v);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        putf(b, "\"%" PRIu64 "\"", *(const uint64_t *)v);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        putf(b, "%.9g", (double)*(const float *)v);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        putf(b, "%.17g", *(const double *)v);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        gw_jbuf_puts(b, *(const protobuf_c_boolean *)v ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t e = *(const int32_t *)v;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, e);
        if (ev)
            gw_jbuf_put_jstring(b, ev->name, strlen(ev->name));
        else
            putf(b, "%" PRId32, e);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        gw_jbuf_put_jstring(b, s ? s : "", s ? strlen(s) : 0);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *d = v;
        put_base64(b, d->data, d->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)v;
        if (!m)
            gw_jbuf_puts(b, "null");
        else if (write_message(b, m, depth + 1) != 0)
            return -1;
        break;
    }
    }
    return b->failed ? -1 : 0;
}

/* Messages nest (a Txn holds Txns): a bound on depth keeps a hostile message from the stack. */
#define MAX_DEPTH 64

static int write_message(struct gw_jbuf *b, const ProtobufCMessage *m, int depth)
{
    if (depth > MAX_DEPTH)
        return -1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    bool first = true;
    gw_jbuf_put(b, "{", 1);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *v = base + f->offset;
        size_t n = 1;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            if (n == 0)
                continue;
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset) {
            if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
                continue;
        } else if (f->label != PROTOBUF_C_LABEL_REQUIRED && is_zero(f, v)) {
            continue;
        }
        if (!first)
            gw_jbuf_put(b, ",", 1);
        first = false;
        gw_jbuf_put_jstring(b, f->name, strlen(f->name));
        gw_jbuf_put(b, ":", 1);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            const char *arr = *(char *const *)v;
            size_t sz = keel_pb_value_size(f->type);
            gw_jbuf_put(b, "[", 1);
            for (size_t k = 0; k < n; k++) {
                if (k)
                    gw_jbuf_put(b, ",", 1);
                if (write_value(b, f, arr + k * sz, depth) != 0)
                    return -1;
            }
            gw_jbuf_put(b, "]", 1);
        } else if (write_value(b, f, v, depth) != 0) {
            return -1;
        }
    }
    gw_jbuf_put(b, "}", 1);
    return b->failed ? -1 : 0;
}

int gw_pbjson_write(struct gw_jbuf *b, const ProtobufCMessage *msg)
{
    return write_message(b, msg, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding */

struct dec {
    char *err;
    size_t errlen;
    char path[256]; /* "compare[0].mod_revision", truncated when deeper */
    size_t plen;
};

static void fail(struct dec *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct dec *x, const char *fmt, ...)
{
    if (!x->errlen)
        return;
    char why[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (x->plen)
        snprintf(x->err, x->errlen, "%s: %s", x->path, why);
    else
        snprintf(x->err, x->errlen, "%s", why);
}

/* Append ".name" or "[i]" to the path; returns the old length, for pop. */
static size_t push(struct dec *x, const char *name, long idx)
{
    size_t old = x->plen;
    int n;
    if (name)
        n = snprintf(x->path + x->plen, sizeof(x->path) - x->plen, "%s%s", x->plen ? "." : "",
                     name);
    else
        n = snprintf(x->path + x->plen, sizeof(x->path) - x->plen, "[%ld]", idx);
    if (n > 0)
        x->plen +=
            (size_t)n < sizeof(x->path) - x->plen ? (size_t)n : sizeof(x->path) - x->plen - 1;
    return old;
}

static void pop(struct dec *x, size_t old)
{
    x->plen = old;
    x->path[old] = '\0';
}

static const char *type_name(json_object *o)
{
    return json_type_to_name(json_object_get_type(o));
}

/* An integer from a JSON number or decimal string, within [min, max] (signed) or [0, umax]. */
static int get_int(struct dec *x, json_object *o, bool is_signed, int64_t min, int64_t max,
                   uint64_t umax, int64_t *sv, uint64_t *uv)
{
    json_type t = json_object_get_type(o);
    if (t == json_type_int) {
        int64_t i = json_object_get_int64(o);
        if (is_signed) {
            if (i == INT64_MAX && json_object_get_uint64(o) > (uint64_t)INT64_MAX)
                goto range;
            if (i < min || i > max)
                goto range;
            *sv = i;
        } else {
            if (i < 0)
                goto range;
            uint64_t u = json_object_get_uint64(o);
            if (u > umax)
                goto range;
            *uv = u;
        }
        return 0;
    }
    if (t == json_type_string) {
        const char *s = json_object_get_string(o);
        const char *p = s + (*s == '-');
        if (!*p || strspn(p, "0123456789") != strlen(p) || (!is_signed && *s == '-'))
            goto bad;
        char *end;
        errno = 0;
        if (is_signed) {
            long long v = strtoll(s, &end, 10);
            if (errno || v < min || v > max)
                goto range;
            *sv = v;
        } else {
            unsigned long long v = strtoull(s, &end, 10);
            if (errno || v > umax)
                goto range;
            *uv = v;
        }
        return 0;
    }
bad:
    fail(x, "expected an integer (a number or a decimal string), got %s", type_name(o));
    return -1;
range:
    fail(x, "integer %s out of range", json_object_get_string(o));
    return -1;
}

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Decode base64 (either alphabet, padding optional) into a malloc'd buffer. */
static int get_bytes(struct dec *x, json_object *o, ProtobufCBinaryData *out)
{
    if (json_object_get_type(o) != json_type_string) {
        fail(x, "expected a base64 string, got %s", type_name(o));
        return -1;
    }
    const unsigned char *s = (const unsigned char *)json_object_get_string(o);
    size_t n = (size_t)json_object_get_string_len(o);
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1 || (size_t)json_object_get_string_len(o) - n > 2)
        goto bad;
    uint8_t *d = malloc(n / 4 * 3 + 3);
    if (!d) {
        fail(x, "out of memory");
        return -1;
    }
    size_t len = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val(s[i]);
        if (v < 0) {
            free(d);
            goto bad;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[len++] = (uint8_t)(acc >> bits);
        }
    }
    if (len == 0) {
        free(d);
        d = NULL;
    }
    out->data = d;
    out->len = len;
    return 0;
bad:
    fail(x, "illegal base64 data");
    return -1;
}

static ProtobufCMessage *decode_message(struct dec *x, const ProtobufCMessageDescriptor *d,
                                        json_object *o, int depth);

/* Decode one value of f's type from o into v (zeroed memory of value_size bytes). */
static int decode_value(struct dec *x, const ProtobufCFieldDescriptor *f, json_object *o, void *v,
                        int depth)
{
    int64_t s = 0;
    uint64_t u = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (get_int(x, o, true, INT32_MIN, INT32_MAX, 0, &s, &u) != 0)
            return -1;
        *(int32_t *)v = (int32_t)s;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (get_int(x, o, false, 0, 0, UINT32_MAX, &s, &u) != 0)
            return -1;
        *(uint32_t *)v = (uint32_t)u;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (get_int(x, o, true, INT64_MIN, INT64_MAX, 0, &s, &u) != 0)
            return -1;
        *(int64_t *)v = s;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (get_int(x, o, false, 0, 0, UINT64_MAX, &s, &u) != 0)
            return -1;
        *(uint64_t *)v = u;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        json_type t = json_object_get_type(o);
        double dv;
        if (t == json_type_double || t == json_type_int) {
            dv = json_object_get_double(o);
        } else if (t == json_type_string) {
            char *end;
            dv = strtod(json_object_get_string(o), &end);
            if (*end || end == json_object_get_string(o))
                goto bad_number;
        } else {
        bad_number:
            fail(x, "expected a number, got %s", type_name(o));
            return -1;
        }
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)v = (float)dv;
        else
            *(double *)v = dv;
        return 0;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (json_object_get_type(o) != json_type_boolean) {
            fail(x, "expected true or false, got %s", type_name(o));
            return -1;
        }
        *(protobuf_c_boolean *)v = json_object_get_boolean(o) ? 1 : 0;
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        if (json_object_get_type(o) == json_type_string) {
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value_by_name(ed, json_object_get_string(o));
            if (!ev) {
                fail(x, "unknown value \"%s\" for enum %s", json_object_get_string(o), ed->name);
                return -1;
            }
            *(int32_t *)v = ev->value;
            return 0;
        }
        if (json_object_get_type(o) != json_type_int) {
            fail(x, "expected an enum name or number, got %s", type_name(o));
            return -1;
        }
        if (get_int(x, o, true, INT32_MIN, INT32_MAX, 0, &s, &u) != 0)
            return -1;
        *(int32_t *)v = (int32_t)s;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (json_object_get_type(o) != json_type_string) {
            fail(x, "expected a string, got %s", type_name(o));
            return -1;
        }
        char *str = strndup(json_object_get_string(o), (size_t)json_object_get_string_len(o));
        if (!str) {
            fail(x, "out of memory");
            return -1;
        }
        *(char **)v = str;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return get_bytes(x, o, v);
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *m = decode_message(x, f->descriptor, o, depth + 1);
        if (!m)
            return -1;
        *(ProtobufCMessage **)v = m;
        return 0;
    }
    }
    fail(x, "unsupported field type");
    return -1;
}

/* Release the value a singular pointer-typed field holds at v and zero it (a oneof member about
 * to be replaced by another). */
static void clear_value(const ProtobufCFieldDescriptor *f, void *v)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (*(char **)v != f->default_value)
            free(*(char **)v);
        *(char **)v = NULL;
        break;
    case PROTOBUF_C_TYPE_BYTES:
        free(((ProtobufCBinaryData *)v)->data);
        *(ProtobufCBinaryData *)v = (ProtobufCBinaryData){0};
        break;
    case PROTOBUF_C_TYPE_MESSAGE:
        protobuf_c_message_free_unpacked(*(ProtobufCMessage **)v, NULL);
        *(ProtobufCMessage **)v = NULL;
        break;
    default:
        memset(v, 0, keel_pb_value_size(f->type));
        break;
    }
}

/* The JSON member for f: its proto name, else its lowerCamelCase name (protoc's json_name). */
static json_object *member(json_object *o, const char *name)
{
    json_object *v;
    if (json_object_object_get_ex(o, name, &v))
        return v;
    char camel[128];
    size_t k = 0;
    bool up = false, differs = false;
    for (const char *p = name; *p && k + 1 < sizeof(camel); p++) {
        if (*p == '_') {
            up = differs = true;
            continue;
        }
        camel[k++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        up = false;
    }
    camel[k] = '\0';
    if (differs && json_object_object_get_ex(o, camel, &v))
        return v;
    return NULL;
}

static int decode_field(struct dec *x, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                        json_object *v, int depth)
{
    char *base = (char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        if (json_object_get_type(v) != json_type_array) {
            fail(x, "expected an array, got %s", type_name(v));
            return -1;
        }
        size_t n = json_object_array_length(v), sz = keel_pb_value_size(f->type);
        if (n == 0)
            return 0;
        char *arr = calloc(n, sz);
        if (!arr) {
            fail(x, "out of memory");
            return -1;
        }
        /* Published before filling, with the count of filled elements, so that a failure half
         * way leaves a message free_unpacked can release. */
        *(char **)(base + f->offset) = arr;
        size_t *count = (size_t *)(base + f->quantifier_offset);
        for (size_t i = 0; i < n; i++) {
            json_object *e = json_object_array_get_idx(v, i);
            size_t old = push(x, NULL, (long)i);
            if (!e) {
                fail(x, "null element");
                return -1;
            }
            if (decode_value(x, f, e, arr + i * sz, depth) != 0)
                return -1;
            pop(x, old);
            *count = i + 1;
        }
        return 0;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
        if (*which) {
            const ProtobufCFieldDescriptor *prev =
                protobuf_c_message_descriptor_get_field(m->descriptor, *which);
            if (prev)
                clear_value(prev, base + prev->offset);
            *which = 0;
        }
        if (decode_value(x, f, v, base + f->offset, depth) != 0)
            return -1;
        *which = f->id;
        return 0;
    }
    if (decode_value(x, f, v, base + f->offset, depth) != 0)
        return -1;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset)
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    return 0;
}

static ProtobufCMessage *decode_message(struct dec *x, const ProtobufCMessageDescriptor *d,
                                        json_object *o, int depth)
{
    if (depth > MAX_DEPTH) {
        fail(x, "messages nested too deeply");
        return NULL;
    }
    if (o && json_object_get_type(o) != json_type_object) {
        fail(x, "expected an object, got %s", type_name(o));
        return NULL;
    }
    ProtobufCMessage *m = malloc(d->sizeof_message);
    if (!m) {
        fail(x, "out of memory");
        return NULL;
    }
    protobuf_c_message_init(d, m);
    for (unsigned i = 0; o && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        json_object *v = member(o, f->name);
        if (!v) /* absent or null: the default */
            continue;
        size_t old = push(x, f->name, 0);
        if (decode_field(x, m, f, v, depth) != 0) {
            protobuf_c_message_free_unpacked(m, NULL);
            return NULL;
        }
        pop(x, old);
    }
    return m;
}

ProtobufCMessage *gw_pbjson_decode(const ProtobufCMessageDescriptor *d, json_object *o, char *err,
                                   size_t errlen)
{
    struct dec x = {.err = err, .errlen = errlen};
    if (errlen)
        err[0] = '\0';
    return decode_message(&x, d, o, 0);
}

size_t gw_jscan_feed(struct gw_jscan *sc, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && !sc->ended) {
        char ch = p[i++];
        if (sc->in_str) {
            if (sc->esc)
                sc->esc = false;
            else if (ch == '\\')
                sc->esc = true;
            else if (ch == '"')
                sc->in_str = false;
        } else if (ch == '"') {
            sc->in_str = true;
        } else if (ch == '{' || ch == '[') {
            sc->containers++;
            sc->depth++;
        } else if ((ch == '}' || ch == ']') && sc->depth > 0 && --sc->depth == 0) {
            sc->ended = true;
        }
    }
    return i;
}

ProtobufCMessage *gw_pbjson_decode_text(const ProtobufCMessageDescriptor *d, const char *s,
                                        size_t len, char *err, size_t errlen)
{
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (i == len)
        return gw_pbjson_decode(d, NULL, err, errlen);
    if (len - i > INT_MAX) {
        snprintf(err, errlen, "request body too large");
        return NULL;
    }
    struct gw_jscan sc = {0};
    gw_jscan_feed(&sc, s + i, len - i);
    if (gw_jscan_over(&sc)) {
        snprintf(err, errlen, "more than %d JSON objects and arrays in one request",
                 GW_PBJSON_MAX_CONTAINERS);
        return NULL;
    }
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    json_object *o = json_tokener_parse_ex(tok, s + i, (int)(len - i));
    enum json_tokener_error je = json_tokener_get_error(tok);
    if (!o && je == json_tokener_continue) {
        /* A complete number at the very end is only known complete at EOF. */
        o = json_tokener_parse_ex(tok, "", 1);
        je = json_tokener_get_error(tok);
        if (!o && (je == json_tokener_continue || je == json_tokener_error_parse_eof)) {
            snprintf(err, errlen, "unexpected EOF"); /* Go's words */
            json_tokener_free(tok);
            return NULL;
        }
    }
    json_tokener_free(tok);
    if (je != json_tokener_success) {
        snprintf(err, errlen, "%s", json_tokener_error_desc(je));
        json_object_put(o);
        return NULL;
    }
    ProtobufCMessage *m = gw_pbjson_decode(d, o, err, errlen);
    json_object_put(o);
    return m;
}
