/*
 * pbjson: protobuf-c messages <-> JSON the way etcd 3.4's JSON gateway writes and reads them
 * (grpc-gateway v1 with JSONPb{OrigName: true}), driven only by message descriptors, so every
 * message in etcd.proto works without per-type code. No I/O.
 *
 * Output: proto field names ("ID", "grantedTTL", "range_end"), fields in field-number order;
 * zero, false, empty and absent fields omitted (a oneof member is written whenever it is the set
 * one, even with a zero value); int64/uint64 as JSON strings, 32-bit integers as numbers, bytes
 * as padded standard base64, enums by name, nested messages as objects, repeated fields as
 * arrays. Strings are escaped as Go's encoding/json does (<, >, & as \u003c..., invalid UTF-8 as
 * U+FFFD), so the bytes match etcd's.
 *
 * Input: a JSON object; each field by its proto name or its lowerCamelCase JSON name; integers as
 * numbers or decimal strings; enums by name or number; bytes as base64 (standard or URL-safe
 * alphabet, padding optional); null as absent; unknown fields ignored. A wrong type or value is
 * an error naming the field ("compare[0].mod_revision: expected an integer").
 */
#ifndef KEEL_GW_PBJSON_H
#define KEEL_GW_PBJSON_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>
#include <protobuf-c/protobuf-c.h>

/* A growable output buffer. Zero-initialise; release with gw_jbuf_free. After an allocation
 * failure `failed` is set and further appends do nothing. */
struct gw_jbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

/* Append n bytes (or a NUL-terminated string). */
void gw_jbuf_put(struct gw_jbuf *b, const void *s, size_t n);
void gw_jbuf_puts(struct gw_jbuf *b, const char *s);
/* Append s as a JSON string literal (quotes included), escaped as Go's encoding/json does. */
void gw_jbuf_put_jstring(struct gw_jbuf *b, const char *s, size_t n);
void gw_jbuf_free(struct gw_jbuf *b);

/* Append msg's JSON (one object, no trailing newline). 0, or -1 when out of memory. */
int gw_pbjson_write(struct gw_jbuf *b, const ProtobufCMessage *msg);

/*
 * Decode the JSON value o (an object, or NULL / JSON null for an empty message) into a new message
 * of type d. The result is malloc'd field by field as protobuf-c's unpacker would, so the caller
 * frees it with protobuf_c_message_free_unpacked(msg, NULL). On a bad value: NULL, and err (errlen
 * bytes) holds "<field path>: <reason>"; also NULL ("out of memory") when allocation fails.
 */
ProtobufCMessage *gw_pbjson_decode(const ProtobufCMessageDescriptor *d, struct json_object *o,
                                   char *err, size_t errlen);

/* gw_pbjson_decode of the JSON text s (len bytes): an empty or all-whitespace text is an empty
 * message; text after the first value is ignored (as Go's json.Decoder does); bad JSON is an
 * error. */
ProtobufCMessage *gw_pbjson_decode_text(const ProtobufCMessageDescriptor *d, const char *s,
                                        size_t len, char *err, size_t errlen);

/*
 * json-c builds a whole tree before a message is decoded, and an object or array costs it far more
 * memory than its two bytes of text (about 0.8 KiB for "{}"): a 3 MiB body of "{},{},..." would
 * take a gigabyte. So the containers of one JSON value are counted in its text first, strings
 * skipped, and a value with more than GW_PBJSON_MAX_CONTAINERS is refused. The deepest etcd
 * request (a txn of 128 ops with their compares) needs a few hundred.
 */
#define GW_PBJSON_MAX_CONTAINERS 4096

struct gw_jscan {
    size_t containers; /* '{' and '[' seen outside strings */
    unsigned depth;    /* containers open */
    bool in_str, esc;
    bool ended; /* the value's outermost container has closed */
};

/* Scan the next n bytes of a value's text (state carried in sc across pieces; zero it for a new
 * value), stopping just after the value's outermost container closes (sc->ended). Returns the
 * bytes scanned. Past GW_PBJSON_MAX_CONTAINERS the value is to be refused
 * (gw_jscan_over). */
size_t gw_jscan_feed(struct gw_jscan *sc, const char *p, size_t n);

static inline bool gw_jscan_over(const struct gw_jscan *sc)
{
    return sc->containers > GW_PBJSON_MAX_CONTAINERS;
}

#endif
