/* Checks of protobuf input that protobuf-c does not make (see pbcheck.h). */
#include "pbcheck.h"

/* A varint at *i within end; false when it runs past end or past 10 bytes. */
static bool varint(const uint8_t *p, size_t *i, size_t end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64 && *i < end; shift += 7) {
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/*
 * The walk follows protobuf-c's reading: a field is a message to descend into when its number is
 * a message field of the enclosing type and it is length-delimited. protobuf-c scans a level
 * whole before it unpacks any member of it, so where the walk meets bytes that cannot be read it
 * can stop: protobuf-c stops there too, before any deeper level.
 */
bool keel_pb_depth_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                      unsigned max_depth)
{
    struct level {
        const ProtobufCMessageDescriptor *desc;
        size_t end;
    } stack[KEEL_PB_MAX_DEPTH];
    if (max_depth == 0)
        return false;
    if (max_depth > KEEL_PB_MAX_DEPTH)
        max_depth = KEEL_PB_MAX_DEPTH;
    unsigned depth = 0;
    stack[0] = (struct level){desc, len};
    size_t i = 0;
    for (;;) {
        while (i >= stack[depth].end) {
            if (depth == 0)
                return true;
            depth--;
        }
        size_t end = stack[depth].end;
        uint64_t tag, n;
        if (!varint(data, &i, end, &tag))
            return true;
        switch (tag & 7) {
        case 0:
            if (!varint(data, &i, end, &n))
                return true;
            break;
        case 1:
        case 5: {
            size_t w = (tag & 7) == 1 ? 8 : 4;
            if (end - i < w)
                return true;
            i += w;
            break;
        }
        case 2: {
            if (!varint(data, &i, end, &n) || n > end - i)
                return true;
            const ProtobufCFieldDescriptor *f = tag >> 3 <= UINT32_MAX
                                                    ? protobuf_c_message_descriptor_get_field(
                                                          stack[depth].desc, (unsigned)(tag >> 3))
                                                    : NULL;
            if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE) {
                i += (size_t)n;
                break;
            }
            if (depth + 1 >= max_depth)
                return false;
            depth++;
            stack[depth] = (struct level){f->descriptor, i + (size_t)n};
            break;
        }
        default:
            return true; /* groups and wire types 6, 7: protobuf-c refuses them */
        }
    }
}

bool keel_pb_repackable(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return false;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (!keel_pb_repackable(v[j]))
                    return false;
            continue;
        }
        /* The members of a oneof share their memory: only the one set is this field. */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
        if (sub != NULL && !keel_pb_repackable(sub))
            return false;
    }
    return true;
}
